"""Minimax diffusion as a method: cached generators, variants, IPC subsets, labels, the IDC protocols, the latent path.

The building blocks' conformance tests (spec ``minimax.md`` §10.1–§10.5, §10.7, §10.10–§10.13) are in
``tests/test_minimax_ops.py``; this module covers what the method adds on top: §10.6 and §10.12 through the dataset
spec, §10.8 at the method level, §10.9 (the evaluator contract of ``idc`` / ``idc-32``), the artifact keys of the
three generator stages, the baseline variants, and the latent path end to end on a tiny random VAE + DiT (plumbing
only: random weights say nothing about quality). Every generator here is a few steps of a tiny model, so the module
runs in seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ddbench_methods.minimax import DiT, DiTFinetune, Minimax, MinimaxConfig

from ddbench.artifacts import ArtifactCache
from ddbench.config import load_toml, resolve
from ddbench.data import Dataset, load_dataset
from ddbench.data.catalog import IMAGEIDC_WNIDS, IMAGENETTE_WNIDS, IMAGEWOOF_WNIDS
from ddbench.data.source import TensorSource
from ddbench.distilled import DistilledSet
from ddbench.errors import UserError
from ddbench.evaluate import evaluate, resolve_for_artifact
from ddbench.method import DistillContext
from ddbench.ops.diffusion import generators as G
from ddbench.ops.diffusion import require_diffusers
from ddbench.plugins import get_method
from ddbench.protocol import Protocol, load_protocol

pytestmark = pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="needs ddbench[diffusion]")

#: A generator small enough for a unit test: 3 pretraining and 3 fine-tuning steps, 2 sampling steps.
TINY = dict(patch=2, pretrain_steps=3, pretrain_batch=16, finetune_steps=3, sampling_steps=2, max_ipc=4, flip=False)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def ctx_for(dataset, tmp_path: Path, ipc: int = 2, seed: int = 0) -> DistillContext:
    return DistillContext(dataset, [], ipc, torch.device("cpu"), seed, tmp_path / "run", cache=ArtifactCache(tmp_path))


def make(cls=Minimax, **kw) -> Minimax:
    return cls(MinimaxConfig(**{**TINY, **kw}))


def count_training(monkeypatch) -> list[str]:
    """Record the stage of every training loop that runs (the loop itself still runs)."""
    calls: list[str] = []
    real = G.train_diffusion

    def counting(*args, **kwargs):
        calls.append(kwargs["stage"])
        return real(*args, **kwargs)

    monkeypatch.setattr(G, "train_diffusion", counting)
    return calls


# -- §10.8 nested seeded IPC subsets, at the method level ---------------------------------------------------------
def test_ipc_sets_are_nested_subsets_of_one_recorded_generation(digits, tmp_path, monkeypatch):
    calls = count_training(monkeypatch)
    method = make()
    small = method.distill(ctx_for(digits, tmp_path, ipc=2))
    large = method.distill(ctx_for(digits, tmp_path, ipc=4))
    assert calls == ["minimax: pretrain base DiT", "minimax: fine-tune"]  # the second IPC trained nothing
    assert small.meta["generation"] == large.meta["generation"]
    folder = tmp_path / G.KIND_GENERATION / small.meta["generation"]
    images = torch.load(folder / "tensors.pt", weights_only=True)["images"]
    for c in range(10):
        idx_small, idx_large = small.meta["ipc_indices"][str(c)], large.meta["ipc_indices"][str(c)]
        assert idx_large[:2] == idx_small and len(set(idx_large)) == 4 and set(idx_large) <= set(range(4))
        assert torch.equal(small.images[small.labels == c], images[[c * 4 + j for j in idx_small]])
        assert torch.equal(large.images[large.labels == c][:2], small.images[small.labels == c])
    assert small.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert small.images.dtype == torch.uint8 and small.images.shape == (20, 1, 8, 8)


def test_another_seed_draws_other_subsets_and_another_generation(digits, tmp_path):
    a = make().distill(ctx_for(digits, tmp_path, seed=0))
    b = make().distill(ctx_for(digits, tmp_path, seed=1))
    again = make().distill(ctx_for(digits, tmp_path / "elsewhere", seed=0))
    assert a.meta["generation"] != b.meta["generation"]
    assert a.meta["ipc_indices"] != b.meta["ipc_indices"]
    assert torch.equal(a.images, again.images) and a.meta["ipc_indices"] == again.meta["ipc_indices"]


def test_ipc_above_max_ipc_is_a_user_error(digits, tmp_path):
    with pytest.raises(UserError, match="max_ipc 4"):
        make().distill(ctx_for(digits, tmp_path, ipc=5))


def test_ipc_above_max_ipc_is_refused_by_prepare_before_any_stage(monkeypatch):
    """The check runs with the run's other checks: no teacher, pretraining or generation happens first."""
    from ddbench.pipeline import RunRequest, prepare

    for stage in ("pixel_base", "latent_base", "finetuned", "generation"):
        monkeypatch.setattr(G, stage, lambda *a, **k: pytest.fail("a stage ran before the ipc check"))
    request = RunRequest(method="minimax", dataset="digits", ipc=3, profile="cpu", overrides={"max_ipc": 2})
    with pytest.raises(UserError, match=r"--ipc 3 exceeds max_ipc 2 .*--set max_ipc=3"):
        prepare(request)
    assert prepare(dataclasses.replace(request, ipc=2)).method.config.max_ipc == 2  # the limit itself is served


# -- generators as artifacts, and the variants ---------------------------------------------------------------------
def test_each_stage_is_keyed_by_what_determines_it(digits, tmp_path, monkeypatch):
    calls = count_training(monkeypatch)
    ctx = ctx_for(digits, tmp_path)
    minimax = make().distill(ctx)
    ablation = make(DiTFinetune).distill(ctx)
    base_only = make(DiT).distill(ctx)
    other_cfg = make(cfg_scale=2.0).distill(ctx)
    # one base for all; a fine-tune for minimax and one for the λ = 0 ablation; cfg only re-samples
    assert calls == ["minimax: pretrain base DiT", "minimax: fine-tune", "minimax: fine-tune"]
    gens = {minimax.meta["generation"], ablation.meta["generation"], base_only.meta["generation"],
            other_cfg.meta["generation"]}  # fmt: skip
    assert len(gens) == 4
    assert base_only.meta["generator"].startswith("digits-dit-smoke-")
    assert minimax.meta["generator"] == other_cfg.meta["generator"] != ablation.meta["generator"]
    # fine-tuned rows record the second-half means of the terms they optimised; the base-only row has none
    assert "finetune_losses_2nd_half" not in base_only.meta
    mm, ab = minimax.meta["finetune_losses_2nd_half"], ablation.meta["finetune_losses_2nd_half"]
    assert set(mm) == set(ab) == set(G.LOGGED_LOSSES)
    assert ab["total"] == pytest.approx(ab["diffusion"]) and mm["total"] > mm["diffusion"]  # λ·L only in minimax
    assert 0.0 < ab["diversity"] <= 1.0  # the λ = 0 ablation keeps memories too, so its terms are measured
    keys = {p.name: p for p in (tmp_path / G.KIND_FINETUNED).iterdir() if p.is_dir()}
    recipes = [ArtifactCache(tmp_path).verify(G.KIND_FINETUNED, p).key["recipe"] for p in keys.values()]
    assert sorted((r["lambda_r"], r["lambda_d"]) for r in recipes) == [(0.0, 0.0), (0.002, 0.008)]
    # more base pretraining steps is another base, hence another fine-tune too
    make(pretrain_steps=4).distill(ctx)
    assert calls[3:] == ["minimax: pretrain base DiT", "minimax: fine-tune"]


def test_variants_share_the_preset_and_differ_only_in_stage():
    assert (
        get_method("dit") is DiT and get_method("minimax-finetune") is DiTFinetune and get_method("minimax") is Minimax
    )
    assert Minimax.preset_path() == DiT.preset_path() == DiTFinetune.preset_path()
    assert Minimax.baselines == ("dit", "minimax-finetune") and DiT.baselines == DiTFinetune.baselines == ()
    ft = make(DiTFinetune).recipes()[1]
    assert (ft.lambda_r, ft.lambda_d) == (0.0, 0.0)
    mm = make().recipes()[1]
    assert (mm.lambda_r, mm.lambda_d, mm.memory) == (0.002, 0.008, 64)
    assert dataclasses.replace(mm, lambda_r=0.0, lambda_d=0.0) == ft  # nothing else differs


def test_finetuned_artifact_stores_only_the_trainable_ema_and_reloads_it(digits, tmp_path):
    method = make()
    ctx = ctx_for(digits, tmp_path)
    cond = method.condition_ids(ctx)
    base = method.base(ctx)
    tuned = G.finetuned(base, digits, cond, method.recipes()[1], seed=0, device=torch.device("cpu"),
                        cache=ctx.cache)  # fmt: skip
    stored = tuned.artifact.tensors()
    trace = stored.pop(G.TRACE_KEY)
    recipe = method.recipes()[1]
    assert trace.shape == (recipe.steps, len(G.LOGGED_LOSSES)) and torch.equal(tuned.losses, trace)
    total, diffusion, r, d = trace.T  # the total is the weighted sum the optimiser saw (§3.1 step 7)
    torch.testing.assert_close(total, diffusion + recipe.lambda_r * r + recipe.lambda_d * d)
    assert tuned.mean_losses(1)["diversity"] == pytest.approx(float(d[1:].mean()))
    assert stored and all(("bias" in n) or ("class_embedder" in n) or ("difffit_gamma" in n) for n in stored)
    assert any("difffit_gamma" in n for n in stored) and any("class_embedder" in n for n in stored)
    base_params = dict(base.model.named_parameters())
    for n, p in tuned.model.named_parameters():
        if n in stored:
            assert torch.equal(p, stored[n])
        else:  # frozen: the EMA of a frozen parameter is the parameter
            assert torch.equal(p, base_params[n]), n
    assert any(not torch.equal(stored[n], base_params[n]) for n in stored if n in base_params)
    again = G.finetuned(base, digits, cond, recipe, seed=0, device=torch.device("cpu"), cache=ctx.cache)
    assert again.artifact.id == tuned.artifact.id and torch.equal(again.losses, trace)


def test_ema_decay_follows_the_step_rule_unless_set():
    assert G.FinetuneRecipe(steps=12000).ema_decay == pytest.approx(0.9999)
    assert G.FinetuneRecipe(steps=100).ema_decay == pytest.approx(1 - 1.2 / 100)
    assert G.FinetuneRecipe(steps=100, ema=0.5).ema_decay == 0.5


# -- §10.6 / §10.12 labels from the dataset spec ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("wnids", "expected"),
    [
        (IMAGEWOOF_WNIDS, [193, 182, 258, 162, 155, 167, 159, 273, 207, 229]),
        (IMAGENETTE_WNIDS, [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]),
        (IMAGEIDC_WNIDS, [452, 64, 374, 236, 993, 176, 882, 904, 503, 74]),
    ],
)
def test_conditions_come_from_the_dataset_spec_class_list(wnids, expected):
    ctx = SimpleNamespace(dataset=SimpleNamespace(id="subset", classes=tuple(wnids)))
    assert make(label_space="imagenet-1k").condition_ids(ctx).tolist() == expected
    # directory order (sorted wnids) would give other local labels: the spec's order is what counts
    shuffled = SimpleNamespace(dataset=SimpleNamespace(id="subset", classes=tuple(sorted(wnids))))
    assert make(label_space="imagenet-1k").condition_ids(shuffled).tolist() == sorted(expected)
    assert make(label_space="own").condition_ids(ctx).tolist() == list(range(10))


def test_non_imagenet_classes_in_the_imagenet_label_space_are_a_user_error(digits, tmp_path):
    with pytest.raises(UserError, match="no ImageNet-1K index"):
        make(label_space="imagenet-1k").condition_ids(ctx_for(digits, tmp_path))


def preset(dataset: str, profile: str) -> MinimaxConfig:
    return resolve(MinimaxConfig, preset=load_toml(Minimax.preset_path()), dataset=dataset, ipc=10,
                   profile=profile).config  # fmt: skip


def test_presets_latent_paper_values_and_pixel_cpu_profiles():
    for ds in ("imagewoof", "imagenette", "imageidc", "imagenet-1k"):
        cfg = preset(ds, "paper")
        assert (cfg.space, cfg.label_space, cfg.base_checkpoint) == ("latent", "imagenet-1k", "facebook/DiT-XL-2-256")
        assert (cfg.finetune_steps, cfg.finetune_batch, cfg.finetune_lr, cfg.finetune_mode) == (
            12000,
            8,
            1e-3,
            "difffit",
        )
        assert (cfg.lambda_r, cfg.lambda_d, cfg.memory_size, cfg.ema_decay) == (0.002, 0.008, 64, 0.9999)
        assert (cfg.sampler, cfg.sampling_steps, cfg.cfg_scale, cfg.cfg_all_channels, cfg.max_ipc) == (
            "ddpm", 50, 4.0, False, 100)  # fmt: skip
        assert (cfg.vae_encoder, cfg.vae_decoder) == ("stabilityai/sd-vae-ft-ema", "stabilityai/sd-vae-ft-mse")
        cpu = preset(ds, "cpu")
        assert (cpu.space, cpu.label_space, cpu.image_size, cpu.dit_size) == ("pixel", "own", 32, "smoke")
        # the cpu profile shrinks steps and sizes only: every mechanism's value is the paper's
        same = ("lambda_r", "lambda_d", "memory_size", "finetune_batch", "finetune_lr", "finetune_mode", "sampler",
                "sampling_steps", "cfg_scale", "cfg_all_channels", "label_drop")  # fmt: skip
        assert {k: getattr(cpu, k) for k in same} == {k: getattr(cfg, k) for k in same}
    smoke = preset("cifar10", "cpu")
    assert (smoke.pretrain_steps, smoke.pretrain_batch, smoke.pretrain_lr, smoke.finetune_steps) == (200, 32, 1e-4, 100)
    assert G._dit_size(Minimax(smoke).recipes()[0]) == G.M.DiTSize(4, 32, 4, 4)  # spec §9.2: 1.44M at 32 px
    assert preset("digits", "cpu").patch == 2


def test_paper_protocols_and_students():
    m = make()
    assert [m.paper_protocol(d) for d in ("imagewoof", "imagenette", "imageidc", "cifar10", "digits")] == [
        "idc", "idc", "idc", "idc-32", None]  # fmt: skip
    assert tuple(m.paper_students("imagewoof")) == ("resnet_ap10", "convnet_d6", "resnet18_in")
    assert m.cpu_protocol("digits") == "idc-32" and m.cpu_protocol("imagewoof") == "idc"


# -- §10.9 the evaluator contract ----------------------------------------------------------------------------------
def set_with_ipc(ipc: int, classes: int = 2) -> DistilledSet:
    labels = torch.arange(classes).repeat_interleave(ipc)
    return DistilledSet(torch.zeros(labels.numel(), 3, 4, 4, dtype=torch.uint8), labels)


def test_idc_protocols_are_hard_label_cutmix_sgd_with_step_decay():
    idc, idc32 = load_protocol("idc"), load_protocol("idc-32")
    for p in (idc, idc32):
        assert (p.label_mode, p.loss, p.mix, p.mix_alpha, p.cutmix_pairing) == ("hard", "ce", "cutmix", 1.0, "perm")
        assert (p.optimizer, p.lr, p.momentum, p.weight_decay, p.batch_size) == ("sgd", 0.01, 0.9, 5e-4, 64)
        assert (p.schedule, p.gamma, p.eval_seeds) == ("step", 0.2, 3)
    assert idc.mix_prob == 1.0 and idc32.mix_prob == 0.5
    assert idc.aug == ("rrc", "flip", "color_jitter", "pca_lighting") and idc.rrc_scale == (0.5, 1.0)
    assert idc32.aug == ("dsa",) and idc32.dsa_strategy == "color_crop_flip_scale_rotate" and idc32.epochs == 1000


@pytest.mark.parametrize(
    ("ipc", "epochs", "milestones"),
    # IDC: MultiStepLR(milestones=[2E//3, 5E//6]) with E from the §5 table
    [(1, 3000, (2000, 2500)), (10, 2000, (1333, 1666)), (11, 1500, (1000, 1250)), (50, 1500, (1000, 1250)),
     (100, 1000, (666, 833)), (200, 1000, (666, 833)), (500, 500, (333, 416)), (501, 300, (200, 250))],
)  # fmt: skip
def test_epochs_and_milestones_follow_the_ipc_table(ipc, epochs, milestones):
    resolved = resolve_for_artifact(load_protocol("idc"), set_with_ipc(ipc))
    assert resolved.epochs == epochs and resolved.step_milestones == milestones
    assert resolved.lr_factor(milestones[0] - 1) == 1.0
    assert resolved.lr_factor(milestones[0]) == pytest.approx(0.2)
    assert resolved.lr_factor(milestones[1]) == pytest.approx(0.04)


def test_epochs_by_ipc_validation_and_hash_compatibility():
    with pytest.raises(ValueError, match="ascending"):
        Protocol(epochs_by_ipc=((10, 5), (1, 7)))
    with pytest.raises(ValueError, match="milestone_fractions"):
        Protocol(milestone_fractions=(1.5,))
    plain = Protocol(name="x")
    assert Protocol(name="x", epochs_by_ipc=(), milestone_fractions=()).hash == plain.hash
    assert Protocol(name="x", epochs_by_ipc=((10, 5),)).hash != plain.hash
    assert plain.for_ipc(3) is plain
    cpu = load_protocol("idc", profile="cpu")
    assert [cpu.for_ipc(i).epochs for i in (1, 10, 50)] == [60, 50, 40]  # the cpu profile shrinks the table


def test_last_and_best_are_both_reported_and_best_is_the_max_of_the_curve(digits):
    protocol = dataclasses.replace(load_protocol("idc-32", profile="cpu"), epochs=6, test_every=2, eval_seeds=1)
    real = DistilledSet(digits.train.load(torch.arange(40)), digits.train.labels[:40])
    (r,) = evaluate(real, digits, ["convnet"], protocol, seed=0)
    assert [c[0] for c in r.curve] == [2, 4, 6]
    assert r.top1 == r.curve[-1][1] and r.best_top1 == max(c[1] for c in r.curve)


# -- the latent path, end to end on a tiny random VAE + DiT --------------------------------------------------------
def rgb_toy(n_per_class: int = 6, size: int = 16, classes: int = 3) -> Dataset:
    from ddbench.data.spec import DatasetSpec

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    images = (torch.rand(labels.numel(), 3, size, size, generator=g) * 255).to(torch.uint8)
    spec = DatasetSpec("toy-rgb", tuple(f"c{i}" for i in range(classes)), size, 3, (0.5,) * 3, (0.25,) * 3,
                       "convnet", "hard", "none")  # fmt: skip
    return Dataset(spec, TensorSource(images, labels), TensorSource(images, labels))


def save_untied_dit(folder: Path, classes: int, seed: int = 0) -> None:
    """A tiny random DiT saved like a converted checkpoint: every block holds a copy of block 0's embedder."""
    torch.manual_seed(seed)
    model = require_diffusers().DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2, sample_size=16,
        patch_size=2, num_embeds_ada_norm=classes, norm_type="ada_norm_zero",
    )  # fmt: skip
    first = model.transformer_blocks[0].norm1.emb.state_dict()
    for block in model.transformer_blocks[1:]:
        block.norm1.emb.load_state_dict(first)
    model.save_pretrained(folder)


def save_tiny_latent(folder: Path, classes: int) -> tuple[Path, Path]:
    save_untied_dit(folder / "ckpt" / "transformer", classes)
    torch.manual_seed(0)
    G.M.tiny_vae(32).save_pretrained(folder / "vae")
    return folder / "ckpt", folder / "vae"


def test_latent_path_plumbing_with_a_tiny_random_vae_and_dit(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = rgb_toy()
    ckpt, vae = save_tiny_latent(tmp_path, data.num_classes)
    cfg = dict(space="latent", base_checkpoint=str(ckpt), vae_encoder=str(vae), vae_decoder=str(vae),
               finetune_steps=2, finetune_batch=4, sampling_steps=2, max_ipc=2)  # fmt: skip
    method = Minimax(MinimaxConfig(**cfg))
    ctx = ctx_for(data, tmp_path, ipc=2)
    out = method.distill(ctx)
    assert out.images.shape == (6, 3, 16, 16) and out.images.dtype == torch.uint8
    assert out.labels.tolist() == [0, 0, 1, 1, 2, 2]
    base = method.base(ctx)
    assert base.space.latent and base.space.image_size == 32  # 16×16×4 latents of 32-px images
    assert base.num_classes == 3 and base.model.config.in_channels == 4
    z = base.space.to_model(data.train.load(torch.arange(2)), torch.device("cpu"), torch.Generator().manual_seed(0))
    assert z.shape == (2, 4, 16, 16)
    tuned = next(p for p in (tmp_path / G.KIND_FINETUNED).iterdir() if p.is_dir())
    key = ArtifactCache(tmp_path).verify(G.KIND_FINETUNED, tuned).key
    digests = dict(key["base"]["dit"])
    assert list(digests) == ["diffusion_pytorch_model.safetensors"] and len(digests.popitem()[1]) == 64
    # other checkpoint bytes, another base identity, hence another fine-tune
    save_untied_dit(ckpt / "transformer", 3, seed=1)
    assert method.base(ctx).key != base.key
    # the dit baseline samples the checkpoint as is
    assert make(DiT, **cfg).distill(ctx).meta["generator"]["path"] == "latent"


def test_missing_checkpoint_is_a_user_error_without_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="nothing is downloaded"):
        G.resolve_checkpoint("no-such-user/no-such-dit", "transformer")


def test_distill_without_diffusers_names_the_extra(digits, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` raise ImportError
    with pytest.raises(UserError, match=r"ddbench\[diffusion\]") as info:
        make().distill(ctx_for(digits, tmp_path))
    assert "\n" not in str(info.value)


# -- the baselines beside the method ---------------------------------------------------------------------------------
def test_paper_baselines_get_the_runs_settings_and_random_does_not():
    from ddbench.pipeline import RunRequest, baseline_state, default_eval_archs, default_protocols, prepare

    state = prepare(RunRequest(method="minimax", dataset="digits", profile="cpu", overrides={"finetune_steps": 7}))
    dit, ft, rnd = (baseline_state(state, m) for m in ("dit", "minimax-finetune", "random"))
    assert dit.method.config.finetune_steps == ft.method.config.finetune_steps == 7
    assert rnd.request.overrides == {} and rnd.method.name == "random"
    assert len({state.run_id, dit.run_id, ft.run_id, rnd.run_id}) == 4
    # the cpu profile scores every row under the method's protocol and students, so the table compares one recipe
    assert default_protocols(state) == ["idc-32"]
    assert default_eval_archs("cpu", state.method, "digits") == ("convnet",)
    assert default_eval_archs("cpu", rnd.method, "digits") != ("convnet",)  # hence _finish passes the archs on


@pytest.mark.slow
def test_run_prints_minimax_dit_dit_ft_and_random_rows(capsys):
    from ddbench.cli import main

    tiny = [f"--set={k}={v}" for k, v in TINY.items()]
    assert main(["-q", "run", "--method", "minimax", "--dataset", "digits", "--ipc", "2", "--preset", "cpu",
                 "--device", "cpu", "--seeds", "0", *tiny]) == 0  # fmt: skip
    out = capsys.readouterr().out
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ") and "ipc" not in line]
    assert {"minimax", "dit", "minimax-finetune", "random"} <= set(rows), out


def test_superset_base_pretrains_on_all_its_classes_and_conditions_by_class_name(digits, tmp_path, monkeypatch):
    """``base_dataset``: the base learns every class of the superset; target class "7" is conditioned on id 7."""
    src = digits.train
    keep = (src.labels == 7) | (src.labels == 3)
    labels = torch.where(src.labels[keep] == 7, 0, 1)  # local order ("7", "3"): not the base's order
    spec = dataclasses.replace(digits.spec, id="digits-73", classes=("7", "3"))
    target = Dataset(spec, TensorSource(src.images[keep], labels), TensorSource(src.images[keep], labels))
    pretrained_on: list[Dataset] = []
    real = G.pixel_base
    monkeypatch.setattr(G, "pixel_base", lambda ds, *a, **k: pretrained_on.append(ds) or real(ds, *a, **k))
    out = make(base_dataset="digits").distill(ctx_for(target, tmp_path / "superset", ipc=1))
    assert out.meta["condition_ids"] == [7, 3]
    assert [(d.id, d.num_classes) for d in pretrained_on] == [("digits", 10)]
    assert make().condition_ids(ctx_for(target, tmp_path / "own")).tolist() == [0, 1]  # own: local indices
    stranger = Dataset(dataclasses.replace(spec, id="digits-7x", classes=("7", "x")), target.train, target.test)
    with pytest.raises(UserError, match="lacks class"):
        make(base_dataset="digits").condition_ids(ctx_for(stranger, tmp_path / "x"))
    with pytest.raises(ValueError, match="pixel path"):
        MinimaxConfig(base_dataset="digits", space="latent")


# -- §7.2 phases: many classes fine-tuned and sampled a few at a time, each phase from the base ---------------------
def test_phases_fine_tune_each_class_range_from_the_base_and_assemble_class_major(digits, tmp_path, monkeypatch):
    tuned: list[tuple[object, tuple[str, ...], list[int], list[int]]] = []
    sampled: list[dict[str, torch.Tensor]] = []
    real_ft, real_gen = G.finetuned, G.generation

    def finetuned(base, dataset, cond, *a, **k):
        tuned.append((base, dataset.classes, cond.tolist(), sorted(set(dataset.train.labels.tolist()))))
        return real_ft(base, dataset, cond, *a, **k)

    def generation(*a, **k):
        out, art = real_gen(*a, **k)
        sampled.append(dict(out))
        return out, art

    monkeypatch.setattr(G, "finetuned", finetuned)
    monkeypatch.setattr(G, "generation", generation)
    out = make(phase_classes=4).distill(ctx_for(digits, tmp_path, ipc=2))
    assert out.meta["phases"] == [[0, 4], [4, 8], [8, 10]]
    assert [t[1] for t in tuned] == [("0", "1", "2", "3"), ("4", "5", "6", "7"), ("8", "9")]
    assert [t[2] for t in tuned] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # each phase's own conditions
    assert [t[3] for t in tuned] == [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1]]  # relabelled to the phase's classes
    assert all(t[0] is tuned[0][0] for t in tuned)  # every phase starts from the one base model
    assert len(set(out.meta["generator"])) == 3 and len(set(out.meta["generation"])) == 3
    assert out.labels.tolist() == [c for c in range(10) for _ in range(2)]
    for c in range(10):  # class c is the (c - lo)-th local class of its phase's generation, at the recorded picks
        phase, lo = (0, 0) if c < 4 else (1, 4) if c < 8 else (2, 8)
        picks = [(c - lo) * 4 + j for j in out.meta["ipc_indices"][str(c)]]
        assert torch.equal(out.images[out.labels == c], sampled[phase]["images"][picks])
    assert not torch.equal(sampled[0]["images"][:4], sampled[1]["images"][:4])  # phases draw their own noise


def test_one_phase_is_the_unphased_run_bit_for_bit_and_dit_is_never_phased(digits, tmp_path):
    plain = make().distill(ctx_for(digits, tmp_path))
    whole = make(phase_classes=10).distill(ctx_for(digits, tmp_path))
    assert whole.meta["generation"] == plain.meta["generation"] and "phases" not in whole.meta
    assert torch.equal(whole.images, plain.images)
    assert make(DiT, phase_classes=4).phases(10) == [(0, 10)]
    assert make(phase_classes=3).phases(7) == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(ValueError, match="phase_classes"):
        MinimaxConfig(phase_classes=-1)


def test_trace_records_every_step_and_a_traced_zero_lambda_fine_tune_changes_nothing(digits):
    from ddbench.ops.diffusion.minimax import MinimaxMemory
    from ddbench.ops.diffusion.models import DIT_SIZES, build_dit

    size = dataclasses.replace(DIT_SIZES["smoke"], patch=2)
    torch.manual_seed(0)
    base = build_dit(digits.num_classes, digits.img_size, digits.channels, size)

    def train(memory, trace):
        model = copy.deepcopy(base)
        ema, last = G.train_diffusion(
            model, digits, G.DiffusionSpace(digits.img_size), torch.arange(10), num_classes=10, steps=4, batch=20,
            params=list(model.parameters()), lr=1e-3, ema_decay=0.0, generator=torch.Generator().manual_seed(3),
            device=torch.device("cpu"), flip=False, memory=memory, trace=trace,
        )  # fmt: skip
        return ema, last

    trace: list[dict[str, float]] = []
    traced, last = train(MinimaxMemory(), trace)
    plain, _ = train(None, None)
    assert len(trace) == 4 and trace[-1] == last and set(last) == set(G.LOGGED_LOSSES)
    # step 1 sees empty memories (terms 0); later steps compare against earlier predictions (a cosine in (-1, 1])
    assert trace[0]["diversity"] == 0.0 and trace[0]["representativeness"] == 0.0
    assert all(-1.0 < t["diversity"] <= 1.0 and 0.0 <= t["representativeness"] <= 2.0 for t in trace[1:])
    assert all(t["diversity"] != 0.0 for t in trace[1:])
    # λ = 0 (the default) with memories and a trace: the weights are the untraced plain run's, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(traced.parameters(), plain.parameters(), strict=True))
