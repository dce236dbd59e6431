"""SRe2L and DWA recover (spec sre2l-dwa §3, §6, §7, §11), recover building blocks and the diversity metric.

Most tests distil digits (8×8) with a tiny BN conv net trained for a few epochs in a session fixture and a handful
of iterations, so the file runs in seconds on two busy cores. The real-CIFAR comparison is `data` + `slow`.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from pathlib import Path

import ddbench_methods.dwa as dwa_module
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import cifar10_root
from ddbench_methods.dwa import DWA, DWAConfig, global_norm
from ddbench_methods.sre2l import SRe2L, SRe2LConfig
from torch import nn

from ddbench.config import load_toml, profiles_in, resolve
from ddbench.data import DATASETS, load_dataset
from ddbench.distilled import DistilledSet
from ddbench.method import DistillContext
from ddbench.ops.bn_stats import StatsRecorder, bn_matching_loss
from ddbench.ops.diversity import diversity_metrics, mean_pairwise_sq_dist, pairwise_sq_dist_sum, real_reference
from ddbench.ops.recover import clip_to_valid_, cosine_lr, quantize, to_artifact, valid_range
from ddbench.teachers import Teacher, TeacherSpec


class TinyBNNet(nn.Module):
    """conv-BN-ReLU ×2 + linear head, with the model zoo's feature contract (for the diversity metric)."""

    def __init__(self, in_chans: int = 1, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))

    def forward_head(self, f: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        f = f.mean((2, 3))
        return f if pre_logits else self.fc(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These nets are tiny: a second thread only adds contention on the shared 2-core machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def teacher(digits) -> Teacher:
    """A tiny BN net trained 6 epochs on digits (~95% test accuracy), frozen and in eval mode like the harness's."""
    torch.manual_seed(0)
    model = TinyBNNet(width=16)
    x, y = digits.normalize(digits.train.all()), digits.train.labels
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        perm = torch.randperm(len(y), generator=g)
        for s in range(0, len(y), 64):
            idx = perm[s : s + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    with torch.no_grad():
        acc = (model(digits.normalize(digits.test.all())).argmax(1) == digits.test.labels).float().mean().item()
    assert acc > 0.85
    return Teacher(TeacherSpec(), "tinybn", "digits", digits.class_hash, model, "tinybn-test", "0" * 64)


FAST = {"iterations": 6, "jitter": 1, "save_format": "uint8"}


def make_ctx(dataset, teacher: Teacher, workdir: Path, ipc: int = 2, seed: int = 0) -> DistillContext:
    return DistillContext(dataset, [teacher], ipc, torch.device("cpu"), seed, workdir)


def sre2l(**kw) -> SRe2L:
    return SRe2L(SRe2LConfig(**{**FAST, **kw}))


def dwa(**kw) -> DWA:
    return DWA(DWAConfig(**{**FAST, **kw}))


def params_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# -- building blocks ----------------------------------------------------------------------------------------------
def test_cosine_lr_schedule_values() -> None:
    assert cosine_lr(0.25, 0, 1000) == 0.25
    assert cosine_lr(0.25, 500, 1000) == pytest.approx(0.125)
    last = cosine_lr(0.25, 999, 1000)
    assert last == pytest.approx(0.25 * 0.5 * (1 + math.cos(math.pi * 999 / 1000))) and last > 0


def test_clipping_and_truncating_quantization() -> None:
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 10
    clip_to_valid_(x, mean, std)
    for c in range(3):
        assert x[:, c].min() >= -mean[c] / std[c] - 1e-6 and x[:, c].max() <= (1 - mean[c]) / std[c] + 1e-6
    lo, hi = valid_range(mean, std, x)
    assert torch.equal(quantize(lo.expand(1, 3, 1, 1), mean, std), torch.zeros(1, 3, 1, 1, dtype=torch.uint8))
    assert torch.equal(quantize(hi.expand(1, 3, 1, 1), mean, std), torch.full((1, 3, 1, 1), 255, dtype=torch.uint8))
    # 100.7/255 and 100.2/255 both truncate to 100 (rounding would give 101 for the first)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    for value in (100.7, 100.2):
        pixel = torch.full((1, 3, 1, 1), value / 255.0)
        assert quantize((pixel - m) / s, mean, std).flatten().tolist() == [100, 100, 100]


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_artifact_equals_pil_default_save(channels: int) -> None:
    from PIL import Image

    mean, std = (0.5,) * channels, (0.25,) * channels
    x = torch.randn(2, channels, 16, 16, generator=torch.Generator().manual_seed(1))
    pixels = quantize(x, mean, std)
    assert torch.equal(to_artifact(x, mean, std, "png"), pixels)
    jpeg = to_artifact(x, mean, std, "jpeg_q75")
    for i in range(2):
        arr = pixels[i].permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr[..., 0] if channels == 1 else arr).save(buf, "JPEG")
        ref = np.asarray(Image.open(io.BytesIO(buf.getvalue()))).reshape(16, 16, channels)
        assert torch.equal(jpeg[i], torch.from_numpy(ref.copy()).permute(2, 0, 1))
    assert not torch.equal(jpeg, pixels)  # lossy, as upstream's artifact is


# -- config and presets -------------------------------------------------------------------------------------------
def test_r_bn_r_var_compatibility_and_validation() -> None:
    assert DWAConfig().bn_weights == (0.01, 0.11)
    assert SRe2LConfig().bn_weights == (0.01, 0.01)
    assert DWAConfig(r_bn=0.11).bn_weights == (0.11, 0.11)  # coupled (Fig. 3)
    assert DWAConfig(r_var=11.0).bn_weights == pytest.approx((0.01, 0.11))
    assert DWAConfig(r_bn=1.0, r_var=2.0).bn_weights == (1.0, 2.0)
    with pytest.raises(ValueError):
        SRe2LConfig(iterations=0)
    with pytest.raises(ValueError):
        DWAConfig(rho=-1.0)


@pytest.mark.parametrize("cls", [SRe2L, DWA])
def test_every_preset_resolves_for_every_dataset_and_profile(cls) -> None:
    path = cls.preset_path()
    assert path is not None and path.name == f"{cls.name}.toml"
    preset = load_toml(path)
    assert {"paper", "cpu"} <= profiles_in(preset)
    for ds in DATASETS.list():
        for profile in sorted(profiles_in(preset)):
            for ipc in (1, 10, 50):
                cfg = resolve(cls.Config, preset=preset, preset_source=str(path), dataset=ds, ipc=ipc, profile=profile)
                assert isinstance(cfg.config, cls.Config)
    paper = resolve(cls.Config, preset=preset, dataset="cifar100", profile="paper").config
    cpu = resolve(cls.Config, preset=preset, dataset="cifar100", profile="cpu").config
    assert (paper.iterations, paper.lr, paper.first_bn_multiplier) == (1000, 0.25, 10.0)
    assert cpu.iterations < paper.iterations
    # cpu shrinks iterations; DWA's cpu profile also scales rho to its narrow teacher (spec §10) and keeps the D7
    # fix, while the paper profile reproduces the official code's iteration-0 gradient sum (issue: harness fixes)
    scale = {"rho_norm_scaling": False, "faithful_iter0_grad_sum": True} if cls is DWA else {}
    assert dataclasses.replace(cpu, iterations=paper.iterations, **scale) == paper
    if cls is DWA:
        assert paper.faithful_iter0_grad_sum and not cpu.faithful_iter0_grad_sum and cpu.rho_norm_scaling
    imagenet = resolve(cls.Config, preset=preset, dataset="imagenet-1k").config
    assert imagenet.jitter == 32 and imagenet.crop_flip == "on"
    if cls is DWA:
        assert imagenet.lambda_var == 0.02 and paper.lambda_var == 0.11 and paper.ascent_steps == 12
    else:
        tiny = resolve(cls.Config, preset=preset, dataset="tiny-imagenet").config
        assert tiny.bn_weights == (1.0, 1.0) and tiny.jitter_symmetric and tiny.lr == 0.1


# -- SRe2L --------------------------------------------------------------------------------------------------------
def test_sre2l_noise_init_is_standard_normal(digits, teacher, tmp_path) -> None:
    method = sre2l()
    ctx = make_ctx(digits, teacher, tmp_path)
    x, _ = method.init_images(ctx, None, 0, list(range(10)) * 50, ctx.generator("t"))
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def test_sre2l_only_images_get_gradients_and_loss_decreases(digits, teacher, tmp_path) -> None:
    before = params_of(teacher.model)
    buffers = [b.clone() for b in teacher.model.buffers()]
    method = sre2l(iterations=30)
    bounds = valid_range(digits.spec.mean, digits.spec.std, torch.zeros(1))
    seen = []

    def probe(t, x, a, run) -> None:
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert all(p.grad is None for p in run.model.parameters())
        if t > 0:  # x was clipped at the end of the previous iteration
            assert x.min() >= bounds[0].min() - 1e-6 and x.max() <= bounds[1].max() + 1e-6
        seen.append(t)

    method.step_probe = probe
    out = method.distill(make_ctx(digits, teacher, tmp_path, ipc=1))
    assert seen == list(range(30))
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(teacher.model)))
    assert all(torch.equal(a, b) for a, b in zip(buffers, teacher.model.buffers()))
    assert all(not p.requires_grad and p.grad is None for p in teacher.model.parameters())
    assert not any(m._forward_hooks for m in teacher.model.modules())
    ce, bn = out.meta["recover_ce_first_last"], out.meta["recover_bn_first_last"]
    assert ce[1] < ce[0] and bn[1] < bn[0]
    assert out.meta["teacher_acc_on_distilled"] >= 0.9


def test_sre2l_distilled_set_is_valid_and_class_major(digits, teacher, tmp_path) -> None:
    method = sre2l(class_batch=4)  # 3 class-batches: [0,4), [4,8), [8,10)
    out = method.distill(make_ctx(digits, teacher, tmp_path, ipc=2))
    assert out.images.dtype == torch.uint8 and out.images.shape == (20, 1, 8, 8)
    assert out.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert out.soft_label.mode == "teacher" and out.soft_label.teachers == ("tinybn-test",)  # the id, not the arch
    assert out.meta["shards"] == [f"ipc{i:04d}-cb{k:03d}" for i in range(2) for k in range(3)]
    shard_dirs = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "shards").iterdir() if p.is_dir())
    assert shard_dirs == sorted(out.meta["shards"])  # one verified artifact folder per shard
    back = DistilledSet.load(out.save(tmp_path / "artifact"))
    assert torch.equal(back.images, out.images) and back.meta["save_format"] == "uint8"


def test_seeded_runs_repeat_bit_for_bit_and_resume_from_shards(digits, teacher, tmp_path, monkeypatch) -> None:
    method = dwa()
    a = method.distill(make_ctx(digits, teacher, tmp_path / "a"))
    b = method.distill(make_ctx(digits, teacher, tmp_path / "b"))
    assert torch.equal(a.images, b.images)
    c = method.distill(make_ctx(digits, teacher, tmp_path / "c", seed=1))
    assert not torch.equal(a.images, c.images)
    # a finished run recomputes nothing: every unit comes from its shard
    monkeypatch.setattr(DWA, "recover_unit", lambda *args: pytest.fail("recomputed a cached shard"))
    assert torch.equal(method.distill(make_ctx(digits, teacher, tmp_path / "a")).images, a.images)


@pytest.mark.parametrize("make", [sre2l, dwa])
def test_ipc_ranges_are_independent(make, digits, teacher, tmp_path) -> None:
    method = make()
    ctx = make_ctx(digits, teacher, tmp_path / "all", ipc=4)
    whole = method.distill_range(ctx, 0, 4)
    first = method.distill_range(make_ctx(digits, teacher, tmp_path / "p1"), 0, 2)
    second = method.distill_range(make_ctx(digits, teacher, tmp_path / "p2"), 2, 4)
    for c in range(10):
        joined = torch.cat([first.images[first.labels == c], second.images[second.labels == c]])
        assert torch.equal(joined, whole.images[whole.labels == c])


def test_stored_relabel_is_mean_teacher_logits_over_views(digits, teacher, tmp_path) -> None:
    one = sre2l(relabel="stored", relabel_views=1)
    out = one.distill(make_ctx(digits, teacher, tmp_path / "one", ipc=1))
    assert out.soft_label.mode == "stored" and out.soft_labels.shape == (10, 10)
    with torch.no_grad():
        ref = teacher.model(digits.normalize(out.images))
    assert torch.allclose(out.soft_labels, ref, atol=1e-5)
    many = sre2l(relabel="stored", relabel_views=4)
    out4 = many.distill(make_ctx(digits, teacher, tmp_path / "one", ipc=1))  # same shards, new labels
    assert torch.equal(out4.images, out.images) and not torch.allclose(out4.soft_labels, ref)


def test_crop_flip_is_shared_by_the_batch_and_differentiable(digits, teacher) -> None:
    method = sre2l(crop_flip="on", jitter=2)
    x = torch.randn(1, 1, 8, 8).repeat(5, 1, 1, 1).requires_grad_(True)
    for seed in range(5):
        a = method.augment(x, 8, torch.Generator().manual_seed(seed))
        assert all(torch.equal(a[i], a[0]) for i in range(5))
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# -- DWA ----------------------------------------------------------------------------------------------------------
def test_dwa_real_init_one_distinct_real_image_per_class(digits, teacher, tmp_path) -> None:
    method = dwa(iterations=1)
    out = method.distill(make_ctx(digits, teacher, tmp_path, ipc=3))
    idx = torch.tensor(out.meta["init_train_indices"])
    assert torch.equal(digits.train.labels[idx], out.labels)  # slot of class c starts from a class-c image
    for c in range(10):
        assert idx[out.labels == c].unique().numel() == 3  # without replacement across ipc indices
    shard = make_ctx(digits, teacher, tmp_path).load_shard("ipc0001-cb000")
    ctx = make_ctx(digits, teacher, tmp_path)
    x0, _ = method.init_images(ctx, method.prepare(ctx), 1, list(range(10)), None)
    assert torch.equal(x0, digits.normalize(digits.train.load(shard["init_index"])))


def directed_run(method: DWA, digits, teacher, tmp_path):
    """Prepared DWA state plus the augmented real init batch of ipc 0, class-batch 0."""
    ctx = make_ctx(digits, teacher, tmp_path)
    run = method.prepare(ctx)
    method.start_unit(run)
    method.start_batch(run)
    x, _ = method.init_images(ctx, run, 0, list(range(10)), ctx.generator("recover", 0, 0))
    return ctx, run, x, torch.arange(10)


@pytest.mark.parametrize("steps", [1, 12])
def test_dwa_ascent_norm_bound_raises_ce_and_keeps_buffers(steps, digits, teacher, tmp_path) -> None:
    method = dwa(ascent_steps=steps, rho=0.05)
    ctx, run, x, y = directed_run(method, digits, teacher, tmp_path)
    buffers = [b.clone() for b in run.model.buffers()]
    with torch.no_grad():
        ce_before = F.cross_entropy(run.model(x), y).item()
    extras = method.before_synthesis(ctx, run, x, x, y, ctx.generator("p"))
    delta = global_norm([p - p0 for p, p0 in zip(run.model.parameters(), run.teacher.parameters())]).item()
    assert extras["dtheta_norm"].item() == pytest.approx(delta, rel=1e-5)
    if steps == 1:
        assert delta == pytest.approx(0.05, rel=1e-4)  # one normalized step has norm exactly ρ
    else:
        assert 0.9 * 0.05 < delta <= 0.05 * (1 + 1e-5)  # triangle inequality; nearly aligned steps
    with torch.no_grad():
        assert F.cross_entropy(run.model(x), y).item() > ce_before
    assert all(torch.equal(a, b) for a, b in zip(buffers, run.model.buffers()))
    assert all(p.grad is None for p in run.model.parameters())
    method.release(run)


def test_dwa_working_copy_carries_no_foreign_hooks(digits, teacher, tmp_path) -> None:
    """An SRe2L session holding hooks on θ_T (as in the recover benchmark) must not see DWA's forwards."""
    other = sre2l()
    other_run = other.prepare(make_ctx(digits, teacher, tmp_path / "s"))
    method = dwa()
    _, run, x, _ = directed_run(method, digits, teacher, tmp_path / "d")
    try:
        with torch.no_grad():
            run.model(x)
        assert other_run.recorder.stats() == []
        assert len(run.recorder.stats()) == len(other_run.recorder.layers) > 0
    finally:
        method.release(run)
        other.release(other_run)


def test_dwa_random_perturbation_has_norm_rho(digits, teacher, tmp_path) -> None:
    method = dwa(perturb="random", rho=0.05)
    ctx, run, x, y = directed_run(method, digits, teacher, tmp_path)
    extras = method.before_synthesis(ctx, run, x, x, y, ctx.generator("p"))
    assert extras["dtheta_norm"].item() == pytest.approx(0.05, rel=1e-5)
    method.release(run)


def test_dwa_teacher_reset_per_class_batch_and_accumulate_flag(digits, teacher, tmp_path) -> None:
    before = params_of(teacher.model)
    distances: list[float] = []

    def probe(t, x, a, run) -> None:
        if t == 0:
            theta = zip(run.model.parameters(), run.teacher.parameters())
            distances.append(global_norm([p - p0 for p, p0 in theta]).item())

    method = dwa(class_batch=5, ascent_steps=1, rho=0.05)  # K = 1: every fresh perturbation has norm exactly ρ
    method.step_probe = probe
    out = method.distill(make_ctx(digits, teacher, tmp_path / "reset", ipc=2))
    assert distances == pytest.approx([0.05] * 4, rel=1e-4)  # each class-batch starts again from θ_T
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(teacher.model)))  # θ_T itself never moves
    assert out.meta["shards"] == ["ipc0000-cb000", "ipc0000-cb001", "ipc0001-cb000", "ipc0001-cb001"]

    distances.clear()
    acc = dwa(class_batch=5, ascent_steps=1, rho=0.05, dwa_accumulate_across_class_batches=True)
    acc.step_probe = probe
    out = acc.distill(make_ctx(digits, teacher, tmp_path / "acc", ipc=2))
    assert out.meta["shards"] == ["ipc0000-acc", "ipc0001-acc"]
    # batch 0 of each ipc starts from θ_T; batch 1 carries batch 0's perturbation on top of its own
    assert distances[0] == pytest.approx(0.05, rel=1e-4) and distances[2] == pytest.approx(0.05, rel=1e-4)
    assert distances[1] > 0.05 * 1.01 and distances[3] > 0.05 * 1.01
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(teacher.model)))


def test_perturb_none_with_noise_init_is_exactly_sre2l(digits, teacher, tmp_path) -> None:
    base = sre2l().distill(make_ctx(digits, teacher, tmp_path / "s"))
    method = dwa(init="noise", perturb="none", lambda_var=0.01)
    out = method.distill(make_ctx(digits, teacher, tmp_path / "d"))
    assert torch.equal(out.images, base.images)
    assert out.meta["dtheta_norm_max"] == 0.0
    k0 = dwa(init="noise", ascent_steps=0, lambda_var=0.01)  # K = 0 is the same as perturb=none
    assert torch.equal(k0.distill(make_ctx(digits, teacher, tmp_path / "k")).images, base.images)


def synthesis_grad(model: nn.Module, a: torch.Tensor, y: torch.Tensor, cfg: DWAConfig) -> torch.Tensor:
    """∇_a of CE + BN term through ``model`` alone, computed independently of the method."""
    a = a.detach().clone().requires_grad_(True)
    with StatsRecorder().attach(model) as rec:
        logits = model(a)
        bn = bn_matching_loss(rec.stats(), lambda_mean=cfg.lambda_mean, lambda_var=cfg.lambda_var)
        (F.cross_entropy(logits, y) + bn).backward()
    return a.grad


@pytest.mark.parametrize("faithful", [False, True])
def test_iteration0_input_gradient_is_the_synthesis_loss_alone(faithful, digits, teacher, tmp_path) -> None:
    captured = {}

    def probe(t, x, a, run) -> None:
        if t == 0:
            captured["grad"] = x.grad.clone()
            captured["a"] = a.detach().clone()
            work = TinyBNNet(width=16)
            work.load_state_dict(run.model.state_dict())
            captured["model"] = work.eval()

    method = dwa(jitter=0, iterations=1, faithful_iter0_grad_sum=faithful)  # no augmentation: a = x
    method.step_probe = probe
    method.distill(make_ctx(digits, teacher, tmp_path, ipc=1))
    expected = synthesis_grad(captured["model"], captured["a"], torch.arange(10), method.config)
    if faithful:  # the code's (K+1)-sum: the ascent passes' CE gradients are in x.grad too
        assert not torch.allclose(captured["grad"], expected, atol=1e-6)
    else:
        assert torch.allclose(captured["grad"], expected, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize(("source", "per_iteration"), [("perturbed", 1), ("original", 2)])
def test_forwards_per_iteration(source, per_iteration, digits, teacher, tmp_path, monkeypatch) -> None:
    calls = []

    def count(model: nn.Module) -> torch.utils.hooks.RemovableHandle:
        return model.register_forward_hook(lambda m, i, o: calls.append(torch.is_grad_enabled()))

    plain_copy = dwa_module.hookless_copy

    def counted_copy(model: nn.Module) -> nn.Module:  # DWA's working copy starts hook-free: count it as well
        clone = plain_copy(model)
        count(clone)
        return clone

    monkeypatch.setattr(dwa_module, "hookless_copy", counted_copy)
    handle = count(teacher.model)
    try:
        method = dwa(iterations=3, ascent_steps=2, bn_stats_from=source)
        method.distill(make_ctx(digits, teacher, tmp_path, ipc=1))
    finally:
        handle.remove()
    assert sum(calls) == 2 + 3 * per_iteration  # K ascent passes + T synthesis iterations (no-grad checks excluded)


# -- diversity ----------------------------------------------------------------------------------------------------
def test_pairwise_distance_on_three_vectors_by_hand() -> None:
    f = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    # ordered pairs: 2·(9 + 16 + 25) = 100
    assert pairwise_sq_dist_sum(f) == pytest.approx(100.0)
    assert mean_pairwise_sq_dist(f) == pytest.approx(100.0 / 6)
    assert pairwise_sq_dist_sum(f[[1, 1, 1]]) == 0.0
    assert math.isnan(mean_pairwise_sq_dist(f[:1]))


def test_diversity_metrics_identical_images_zero_and_real_reference_one(digits, teacher) -> None:
    model = teacher.model
    same = digits.train.load(digits.class_indices(0)[:1]).repeat(4, 1, 1, 1)
    zero = diversity_metrics(model, DistilledSet(same, torch.zeros(4, dtype=torch.long)), digits)
    assert zero["feat_dist_raw"] == 0 and zero["feat_dist_mean"] == 0 and zero["feat_dist_rel"] == 0
    real = torch.cat([real_reference(digits, c, 5, seed=3) for c in range(10)])
    labels = torch.arange(10).repeat_interleave(5)
    out = diversity_metrics(model, DistilledSet(real, labels), digits, seed=3)
    assert out["feat_dist_rel"] == pytest.approx(1.0) and out["feat_dist_classes"] == 10
    assert out["feat_dist_mean"] > 0 and out["feat_dist_raw"] > 0
    subset = diversity_metrics(model, DistilledSet(real, labels), digits, seed=3, num_classes=4)
    assert subset["feat_dist_classes"] == 4


# -- cpu presets end to end and real data ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SRe2L, DWA])
def test_cpu_preset_distils_digits_end_to_end(cls, digits, teacher, tmp_path) -> None:
    cfg = resolve(cls.Config, preset=load_toml(cls.preset_path()), dataset="digits", ipc=2, profile="cpu").config
    cfg = dataclasses.replace(cfg, iterations=20)  # the preset's mechanism, fewer iterations for the test
    out = cls(cfg).distill(make_ctx(digits, teacher, tmp_path, ipc=2))
    assert out.images.dtype == torch.uint8 and out.images.shape == (20, 1, 8, 8)
    assert out.ipc_counts().tolist() == [2] * 10 and out.meta["save_format"] == "jpeg_q75"
    assert out.meta["teacher_acc_on_distilled"] >= 0.5  # after JPEG at 8×8 and only 20 iterations; chance is 0.1
    DistilledSet.load(out.save(tmp_path / "artifact"))


@pytest.mark.data
@pytest.mark.slow
def test_cifar10_dwa_vs_sre2l_cpu_preset(tmp_path, monkeypatch) -> None:
    """CIFAR-10, ipc 10, cpu presets, one shared harness teacher, DWA's CIFAR protocol (cpu profile): both methods.

    The spec's CPU-scale acceptance check (§10.1): DWA's mean top-1 over the protocol's two evaluation seeds is at
    least SRe2L's. The diversity ordering (§10.3) is an [inferred] expectation, so it is reported, not asserted.
    Cost on 2 cores: the cpu teacher (ResNet-18 ×0.25, 15 epochs on 50k images) ~26 min, then per method ~1 min
    of recover and ~11 min of evaluation (full-width ResNet-18 students, 2 seeds); about 50 min in all. Set
    ``DDBENCH_TEST_HOME`` to keep the teacher between invocations; it is the same artifact ``test_scores_data.py``
    uses, so the two data tests train it once.
    """

    from ddbench.evaluate import evaluate
    from ddbench.protocol import load_protocol
    from ddbench.teachers import get_teacher

    if os.environ.get("DDBENCH_TEST_HOME"):
        monkeypatch.setenv("DDBENCH_HOME", os.environ["DDBENCH_TEST_HOME"])
    root = cifar10_root(Path(os.environ.get("DDBENCH_TEST_HOME") or tmp_path))
    ds = load_dataset("cifar10", data_root=root)
    t = get_teacher(ds, TeacherSpec(), profile="cpu")
    protocol = load_protocol("dwa-cifar", profile="cpu")
    theta_norm = torch.cat([p.detach().flatten() for p in t.model.parameters()]).norm().item()
    report = {}
    # "dwa-iter0sum": the paper preset's official-code iteration-0 gradient sum (D7/D13), measured beside the fix
    for name, cls, extra in (
        ("sre2l", SRe2L, {}),
        ("dwa", DWA, {}),
        ("dwa-iter0sum", DWA, {"faithful_iter0_grad_sum": True}),
    ):
        preset = load_toml(cls.preset_path())
        cfg = resolve(cls.Config, preset=preset, dataset="cifar10", ipc=10, profile="cpu", overrides=extra).config
        out = cls(cfg).distill(DistillContext(ds, [t], 10, torch.device("cpu"), 0, tmp_path / name))
        rows = [
            evaluate(out, ds, ["resnet18"], protocol, seed=seed, teachers=[t.model])[0]
            for seed in range(protocol.eval_seeds)
        ]
        div = diversity_metrics(t.model, out, ds, seed=0)
        report[name] = {"top1": [r.top1 for r in rows], **div}
        assert all(r.error is None and r.top1 > 10.0 for r in rows)
        assert math.isfinite(div["feat_dist_mean"]) and div["feat_dist_mean"] > 0
        if cls is DWA:
            assert out.meta["dtheta_norm_max"] <= out.meta["rho_effective"] * (1 + 1e-5)
            report[name]["dtheta_rel"] = out.meta["dtheta_norm_max"] / theta_norm
            report[name]["rho_effective"] = out.meta["rho_effective"]
    print(f"CIFAR-10 ipc10 cpu presets (teacher {t.id}: {t.accuracy}): {report}")
    mean = {name: sum(r["top1"]) / len(r["top1"]) for name, r in report.items()}
    assert mean["dwa"] >= mean["sre2l"], f"DWA {mean['dwa']:.2f} < SRe2L {mean['sre2l']:.2f}: {report}"


def test_rho_norm_scaling_uses_the_init_norm_ratio_of_the_narrow_teacher(digits, tmp_path) -> None:
    """Spec §10: a ×0.25 teacher gets ρ·‖θ_init(×0.25)‖/‖θ_init(×1)‖, and ‖Δθ‖ stays within that effective ρ."""
    from ddbench.models import create_model

    def norm(width: float) -> float:
        torch.manual_seed(0)
        model = create_model("convnet_bn", 10, 8, 1, width_mult=width)
        return math.sqrt(sum(float(p.detach().double().square().sum()) for p in model.parameters()))

    torch.manual_seed(3)
    model = create_model("convnet_bn", 10, 8, 1, width_mult=0.25).eval().requires_grad_(False)
    spec = TeacherSpec(arch="convnet_bn")
    narrow = Teacher(spec, "convnet_bn", "digits", digits.class_hash, model, "narrow", "0" * 64, width_mult=0.25)
    method = dwa(rho_norm_scaling=True, iterations=2)
    ctx = make_ctx(digits, narrow, tmp_path, ipc=1)
    expected = 0.015 * norm(0.25) / norm(1.0)
    assert method.effective_rho(ctx) == pytest.approx(expected, rel=1e-9) and 0.3 < expected / 0.015 < 0.7
    out = method.distill(ctx)
    assert out.meta["rho_effective"] == pytest.approx(expected, rel=1e-6)
    assert out.meta["dtheta_norm_max"] <= expected * (1 + 1e-5)
    assert dwa(iterations=2).effective_rho(ctx) == 0.015  # off by default (the paper profile)
