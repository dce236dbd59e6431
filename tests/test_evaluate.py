"""Protocols (TOML validation, schedules) and the lockstep student trainer (losses, seeding, failures, learning)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ddbench.models
from ddbench.config import ConfigError, config_hash, load_toml
from ddbench.data.source import TensorSource
from ddbench.distilled import DistilledSet, SoftLabelSpec
from ddbench.evaluate import evaluate, resolve_for_artifact
from ddbench.labels import Batch, StoredLabels, build_label_mode, kl_loss, mixed_ce
from ddbench.pixels import UInt8Space
from ddbench.protocol import LATER_FIELDS, SHRINK_KEYS, TEACHER_RECIPE_DIR, Protocol, apply_hints, load_protocol
from ddbench.protocols import PROTOCOLS
from ddbench.teachers import recipe_path
from ddbench.train import Trainer, TrainingDiverged, augment_batch, evaluate_models

MEAN, STD = (0.5,), (0.25,)
SPACE = UInt8Space(MEAN, STD)


def all_protocol_files() -> list[Path]:
    return [PROTOCOLS.get(n) for n in PROTOCOLS.names()] + sorted(TEACHER_RECIPE_DIR.glob("*.toml"))


def profiles_of(path: Path) -> list[str]:
    return ["paper", *load_toml(path).get("profile", {})]


def tiny_protocol(**kw) -> Protocol:
    base = dict(name="t", epochs=3, batch_size=8, optimizer="sgd", lr=0.05, aug=("crop_pad", "flip"), eval_seeds=1)
    return Protocol(**{**base, **kw})


def tiny_data(n: int = 20, classes: int = 4, side: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, side, side), generator=g, dtype=torch.uint8)
    return x, torch.arange(n) % classes


class Tiny(nn.Module):
    """A small CNN with BN and dropout (dropout exercises the per-model RNG streams)."""

    def __init__(self, classes: int = 4, chans: int = 1, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(chans, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.fc(self.drop(h))


def seeded(seed: int, **kw) -> Tiny:
    torch.manual_seed(seed)
    return Tiny(**kw)


def train(models, protocol, x, y, seed=0, soft_targets=None, stored_soft=None, model_seeds=None, **kw):
    """The Trainer with the label mode the protocol names (an online teacher module or stored rows)."""
    teachers = [soft_targets] if soft_targets is not None else []
    labels = build_label_mode(protocol.label_mode, teachers, stored_soft)
    trainer = Trainer(protocol, space=SPACE, labels=labels, device="cpu", **kw)
    return trainer.fit(models, x, y, generator=torch.Generator().manual_seed(seed), model_seeds=model_seeds)


# -- protocol files -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", all_protocol_files(), ids=lambda p: p.stem)
def test_every_shipped_protocol_loads_under_every_profile(path):
    profiles = profiles_of(path)
    assert "cpu" in profiles, f"{path.name} has no [profile.cpu]"
    data = load_toml(path)
    assert data["version"] >= 1 and len(data["description"]) > 20
    assert "Source" in path.read_text() and "Changelog" in path.read_text()
    paper = load_protocol(path)
    for profile in profiles:
        p = load_protocol(path, profile)
        assert p.profile == profile and p.name == path.stem
        changed = {f.name for f in dataclasses.fields(Protocol) if getattr(p, f.name) != getattr(paper, f.name)}
        assert changed <= SHRINK_KEYS | {"profile"}, f"{path.name} [{profile}] changes the mechanism: {changed}"
        if profile == "cpu":
            assert p.epochs <= paper.epochs and p.eval_seeds <= paper.eval_seeds and p.batch_size <= paper.batch_size
            assert p.hash != paper.hash


def test_registry_holds_evaluation_protocols_only():
    names = set(PROTOCOLS.names())
    expected = {"hard", "kd", "dwa-cifar", "dwa-tiny", "dwa-imagenet", "sre2l-cifar", "sre2l-tiny", "sre2l-imagenet"}
    assert expected <= names
    assert not names & {p.stem for p in TEACHER_RECIPE_DIR.glob("*.toml")} - {"default"}


def test_paper_values_of_dwa_and_sre2l_protocols():
    cifar = load_protocol("dwa-cifar")
    assert (cifar.epochs, cifar.batch_size, cifar.optimizer, cifar.lr, cifar.weight_decay) == (
        400,
        128,
        "adamw",
        1e-3,
        0.01,
    )
    assert (cifar.mix, cifar.mix_alpha, cifar.temperature, cifar.kl_t2, cifar.aug) == (
        "mixup",
        0.8,
        30.0,
        False,
        ("crop_pad", "flip"),
    )
    tiny = load_protocol("dwa-tiny")
    assert (tiny.epochs, tiny.batch_size, tiny.lr, tiny.warmup_epochs, tiny.cutmix_pairing, tiny.kl_t2) == (
        200,
        64,
        0.2,
        5,
        "roll",
        True,
    )
    imnet = load_protocol("dwa-imagenet")
    assert imnet.no_weight_decay_1d and imnet.mix == "cutmix" and imnet.cutmix_pairing == "perm"
    s_tiny = load_protocol("sre2l-tiny")
    assert (s_tiny.epochs, s_tiny.batch_size, s_tiny.mix, s_tiny.temperature, s_tiny.kl_t2) == (
        100,
        256,
        "none",
        20,
        True,
    )
    assert load_protocol("sre2l-imagenet").batch_size == 1024
    assert "future work" in load_protocol("sre2l-imagenet").description


def write(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, "version = 1\nepochz = 3\n")
    with pytest.raises(ConfigError, match=r"mine\.toml.*'epochz'"):
        load_protocol(path)
    path = write(tmp_path, "version = 1\n[profile.cpu]\nepochz = 3\n")
    with pytest.raises(ConfigError, match=r"mine\.toml \[profile\.cpu\].*'epochz'"):
        load_protocol(path)


def test_wrong_type_and_bad_values_fail(tmp_path):
    with pytest.raises(ConfigError, match=r"mine\.toml.*epochs.*integer"):
        load_protocol(write(tmp_path, 'version = 1\nepochs = "many"\n'))
    with pytest.raises(ConfigError, match=r"optimizer"):
        load_protocol(write(tmp_path, 'version = 1\noptimizer = "lion"\n'))
    with pytest.raises(ConfigError, match=r"hard.*use loss 'ce'"):
        load_protocol(write(tmp_path, 'version = 1\nlabel_mode = "hard"\nloss = "kl"\n'))
    with pytest.raises(ConfigError, match=r"label_mode 'telepathy' is not one of ensemble, hard"):
        load_protocol(write(tmp_path, 'version = 1\nlabel_mode = "telepathy"\nloss = "kl"\n'))
    with pytest.raises(ConfigError, match=r"loss 'hinge' is not one of"):
        load_protocol(write(tmp_path, 'version = 1\nloss = "hinge"\n'))
    with pytest.raises(ConfigError, match=r"aug"):
        load_protocol(write(tmp_path, 'version = 1\naug = ["crop_pad", "blur"]\n'))
    with pytest.raises(ConfigError, match=r"version"):
        load_protocol(write(tmp_path, "epochs = 3\n"))


def test_cpu_profile_may_only_shrink(tmp_path):
    path = write(tmp_path, 'version = 1\n[profile.cpu]\nepochs = 2\noptimizer = "adamw"\n')
    with pytest.raises(ConfigError, match=r"\[profile\.cpu\].*'optimizer' would change the mechanism"):
        load_protocol(path)
    other = write(tmp_path, 'version = 1\n[profile.code]\noptimizer = "adamw"\n', "other.toml")
    assert load_protocol(other, "code").optimizer == "adamw"  # other profiles may change the mechanism
    with pytest.raises(ConfigError, match="no profile 'cpu'"):
        load_protocol(other, "cpu")


def test_load_by_path_and_overrides(tmp_path):
    path = write(tmp_path, "version = 2\nepochs = 7\n[profile.cpu]\nepochs = 3\n")
    assert load_protocol(path, "cpu").epochs == 3
    p = load_protocol(path, overrides={"lr": 0.5, "aug": "rrc,flip"})
    assert (p.version, p.epochs, p.lr, p.aug, p.name) == (2, 7, 0.5, ("rrc", "flip"), "mine")
    with pytest.raises(ConfigError, match=r"overrides.*'lrr'"):
        load_protocol(path, overrides={"lrr": 0.5})


# -- schedules ------------------------------------------------------------------------------------------------------
def test_lr_schedules_match_reference_values():
    smooth = Protocol(epochs=300, schedule="smooth", smooth_zeta=2.0)
    assert smooth.lr_factor(0) == 1.0
    assert smooth.lr_factor(150) == pytest.approx(0.8536, abs=1e-4)  # EDC §10.4
    assert smooth.lr_factor(299) == pytest.approx(0.5026, abs=1e-4)
    lin = Protocol(epochs=300, schedule="smooth_linear", smooth_zeta=2.0)
    assert lin.lr_factor(150) == pytest.approx(0.75) and lin.lr_factor(299) == pytest.approx(0.5017, abs=1e-4)
    cos = Protocol(epochs=300, schedule="cosine")
    assert [round(cos.lr_factor(e), 3) for e in (0, 75, 150, 225, 299)] == [1.0, 0.854, 0.5, 0.146, 0.0]
    tiny = load_protocol("dwa-tiny")  # 5-epoch linear warmup from 0.01x, then cosine over 195 epochs
    assert [round(tiny.lr_factor(e), 3) for e in range(6)] == [0.01, 0.208, 0.406, 0.604, 0.802, 1.0]
    assert tiny.lr_factor(5 + 195 // 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 97 / 195)))
    mtt = load_protocol("mtt")
    assert mtt.lr_factor(501) == 1.0 and mtt.lr_factor(502) == pytest.approx(0.1) and mtt.lr_factor(1000) == 0.1


def test_hash_tracks_every_field_but_the_description():
    p = tiny_protocol()
    assert p.hash == dataclasses.replace(p, description="reworded").hash
    assert p.hash != dataclasses.replace(p, lr=0.051).hash != dataclasses.replace(p, aug=("flip",)).hash
    assert load_protocol("dwa-cifar").hash == load_protocol("dwa-cifar").hash


def test_width_mult_enters_the_hash_only_when_set():
    p = tiny_protocol()
    values = dataclasses.asdict(p)
    values.pop("description")
    for later in LATER_FIELDS:  # width_mult, then IDC's epochs_by_ipc / milestone_fractions
        values.pop(later)
    assert p.hash == config_hash(values)  # adding the fields kept every existing cache key
    assert dataclasses.replace(p, width_mult=0.25).hash != p.hash
    for dataset in ("cifar10", "tiny-imagenet"):  # spec sre2l-dwa §10: the cpu teachers are ResNet-18 ×0.25
        assert load_protocol(recipe_path(dataset), profile="cpu").width_mult == 0.25
        assert load_protocol(recipe_path(dataset)).width_mult == 1.0


def test_hints_apply_only_when_allowed():
    mtt = load_protocol("mtt")
    assert apply_hints(mtt, {"syn_lr": 0.037, "other": 1.0}).lr == 0.037
    hard = load_protocol("hard")
    assert apply_hints(hard, {"syn_lr": 0.037}).lr == hard.lr


# -- losses ---------------------------------------------------------------------------------------------------------
def test_kl_loss_hand_computed_and_t2():
    zs = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])
    zt = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]])
    temperature = 4.0
    expected = 0.0
    for s_row, t_row in zip(zs.tolist(), zt.tolist()):
        q = [math.exp(v / temperature) for v in s_row]
        p = [math.exp(v / temperature) for v in t_row]
        q = [v / sum(q) for v in q]
        p = [v / sum(p) for v in p]
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    expected /= 2  # batchmean
    target = F.softmax(zt / temperature, dim=1)
    assert kl_loss(zs, target, temperature, t2=False).item() == pytest.approx(expected, rel=1e-5)
    assert kl_loss(zs, target, temperature, t2=True).item() == pytest.approx(expected * 16, rel=1e-5)
    assert kl_loss(zt, target, temperature, t2=False).item() == pytest.approx(0.0, abs=1e-6)


def test_mixed_ce_hand_computed():
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    perm = torch.tensor([1, 0])
    rows = z.tolist()
    ce = lambda r, k: -math.log(math.exp(rows[r][k]) / sum(math.exp(v) for v in rows[r]))  # noqa: E731
    expected = 0.3 * (ce(0, 0) + ce(1, 1)) / 2 + 0.7 * (ce(0, 1) + ce(1, 0)) / 2
    assert mixed_ce(z, y, perm, 0.3).item() == pytest.approx(expected, rel=1e-6)
    assert mixed_ce(z, y, None, 1.0).item() == pytest.approx((ce(0, 0) + ce(1, 1)) / 2, rel=1e-6)


# -- the trainer ----------------------------------------------------------------------------------------------------
def test_lockstep_equals_one_by_one():
    x, y = tiny_data()
    p = tiny_protocol(mix="mixup", mix_alpha=0.8)
    lock = [seeded(1), seeded(2, dropout=0.3)]
    train(lock, p, x, y, model_seeds=[11, 22])
    alone_a, alone_b = seeded(1), seeded(2, dropout=0.3)
    train([alone_a], p, x, y, model_seeds=[11])
    train([alone_b], p, x, y, model_seeds=[22])
    for locked, alone in zip(lock, (alone_a, alone_b)):
        for (name, a), b in zip(locked.state_dict().items(), alone.state_dict().values()):
            assert torch.equal(a, b), name
    assert not torch.equal(lock[0].fc.weight, seeded(1).fc.weight)  # it did train


def test_same_seed_same_weights_different_seed_differs():
    x, y = tiny_data()
    p = tiny_protocol(mix="cutmix", aug=("rrc", "flip"))
    a, b, c = seeded(0), seeded(0), seeded(0)
    train([a], p, x, y, seed=5)
    train([b], p, x, y, seed=5)
    train([c], p, x, y, seed=6)
    assert torch.equal(a.fc.weight, b.fc.weight) and not torch.equal(a.fc.weight, c.fc.weight)


def test_channels_last_is_numerically_equivalent_and_progress_reports_epochs():
    x, y = tiny_data()
    a, b = seeded(0), seeded(0)
    calls = []
    train([a], tiny_protocol(), x, y)
    train([b], tiny_protocol(), x, y, channels_last=True, progress=lambda *c: calls.append(c))
    assert b.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(a.fc.weight, seeded(0).fc.weight)  # it trained
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(wa, wb, atol=1e-5, rtol=1e-4), name
    assert calls == [("train", 1, 3), ("train", 2, 3), ("train", 3, 3)]


def test_amp_runs_forwards_in_bf16_and_keeps_fp32_weights():
    x, y = tiny_data()
    a, b = seeded(0), seeded(0)
    dtypes = []
    b.conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    teacher = seeded(7).eval()
    teacher_dtypes = []
    teacher.conv.register_forward_hook(lambda m, i, o: teacher_dtypes.append(o.dtype))
    p = tiny_protocol(label_mode="teacher", loss="kl", temperature=4.0)
    train([a], p, x, y, soft_targets=teacher)
    assert set(teacher_dtypes) == {torch.float32}
    teacher_dtypes.clear()
    train([b], p, x, y, soft_targets=teacher, amp=True)
    assert set(dtypes) == {torch.bfloat16} and set(teacher_dtypes) == {torch.bfloat16}
    assert all(w.dtype == torch.float32 for w in b.state_dict().values() if w.is_floating_point())
    delta = (b.fc.weight - a.fc.weight).abs().max().item()
    moved = (a.fc.weight - seeded(0).fc.weight).abs().max().item()
    assert 0 < delta < 0.1 * moved  # bf16 rounding changes the numbers, a little, not the training


class Recorder(nn.Module):
    """Wraps a model and keeps every input it is called with."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.inner(x)


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_teacher_sees_exactly_the_students_mixed_batch(mix):
    x, y = tiny_data()
    teacher = Recorder(seeded(9).eval())
    students = [Recorder(seeded(1)), Recorder(seeded(2))]
    p = tiny_protocol(mix=mix, label_mode="teacher", loss="kl", temperature=4.0)
    train(students, p, x, y, soft_targets=teacher)
    assert len(teacher.seen) == 3 * 3  # 3 epochs x ceil(20/8) steps: one teacher call per batch
    for student in students:
        assert len(student.seen) == len(teacher.seen)
        assert all(torch.equal(a, b) for a, b in zip(student.seen, teacher.seen))
    # the batch really is mixed: not equal to any augmentation-free normalised image set
    plain = (x.float() / 255 - 0.5) / 0.25
    assert not any(torch.equal(teacher.seen[0][0], img) for img in plain)


def test_stored_soft_targets_are_mixed_with_the_batch_pairing():
    stored = torch.randn(6, 3)
    batch = Batch(
        torch.zeros(3, 1, 2, 2),
        torch.zeros(3, dtype=torch.long),
        torch.tensor([4, 0, 2]),
        torch.tensor([2, 0, 1]),
        0.25,
    )
    target = StoredLabels(stored=stored).targets(batch)
    probs = F.softmax(stored[[4, 0, 2]] / 2.0, dim=1)
    torch.testing.assert_close(target.probs(2.0), 0.25 * probs + 0.75 * probs[[2, 0, 1]])  # KL mixes probabilities
    torch.testing.assert_close(target.mixed_logits(), 0.25 * stored[[4, 0, 2]] + 0.75 * stored[[2, 4, 0]])  # MSE logits


def test_stored_mode_trains_and_matches_artifact_resolution():
    x, y = tiny_data()
    soft = torch.randn(20, 4)
    d = DistilledSet(x, y, soft_label=SoftLabelSpec(mode="stored", temperature=3.0), soft_labels=soft)
    resolved = resolve_for_artifact(tiny_protocol(label_mode="artifact"), d)
    assert (resolved.label_mode, resolved.loss, resolved.temperature) == ("stored", "kl", 3.0)
    stats = train([seeded(0)], resolved, x, y, stored_soft=soft)
    assert stats[0].steps == 9 and all(math.isfinite(v) for v in stats[0].loss_curve)


def test_nan_loss_raises_training_diverged():
    x, y = tiny_data()

    class NaNAt(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = seeded(0)
            self.calls = 0

        def forward(self, t):
            self.calls += 1
            out = self.inner(t)
            return out * float("nan") if self.calls == 5 else out

    with pytest.raises(TrainingDiverged, match=r"NaNAt.*epoch 2, step 2"):
        train([NaNAt()], tiny_protocol(), x, y)


def test_ema_weights_are_returned_and_tested():
    x, y = tiny_data()
    p = tiny_protocol(epochs=1, batch_size=20, aug=(), ema=0.9)
    model = seeded(0, dropout=0.0)
    init = [q.detach().clone() for q in model.parameters()]
    live_after: list[torch.Tensor] = []

    def test_fn(models):
        live_after.extend(q.detach().clone() for q in models[0].parameters())
        return [(0.0, 0.0)]

    # one step: EMA = 0.9·init + 0.1·(weights after the step); the test pass and the returned model use it
    ref = seeded(0, dropout=0.0)
    train([ref], dataclasses.replace(p, ema=None), x, y)
    train([model], p, x, y, test_fn=test_fn)
    for got, tested, a, b in zip(model.parameters(), live_after, init, ref.parameters()):
        torch.testing.assert_close(got, 0.9 * a + 0.1 * b)
        torch.testing.assert_close(tested, got)


def test_image_source_input_equals_tensor_input():
    x, y = tiny_data()
    a, b = seeded(0), seeded(0)
    p = tiny_protocol()
    train([a], p, x, y)
    train([b], p, TensorSource(x, y).subset(torch.arange(20)), y)
    assert torch.equal(a.fc.weight, b.fc.weight)


def test_augment_batch_order_normalises_after_geometry():
    # zero padding happens in [0, 1] space: the padded border is black, i.e. -mean/std after normalisation
    x = torch.full((4, 1, 8, 8), 255, dtype=torch.uint8)
    p = tiny_protocol(aug=("crop_pad",), crop_padding=0.375)  # 3 px
    out, mixed = augment_batch(x, p, UInt8Space((0.5,), (0.25,)), torch.Generator().manual_seed(1))
    assert mixed is None and set(out.unique().tolist()) <= {2.0, -2.0} and (out == -2.0).any()


def test_evaluate_models_counts_top1_and_top5():
    class Fixed(nn.Module):
        def forward(self, x):
            logits = torch.arange(6.0).repeat(x.shape[0], 1)  # ranking: 5 > 4 > 3 > 2 > 1 > 0
            return logits + 0 * x.sum()

    images = torch.zeros(6, 1, 2, 2, dtype=torch.uint8)
    labels = torch.tensor([5, 4, 1, 0, 5, 2])
    ((top1, top5),) = evaluate_models([Fixed()], (images, labels), SPACE, "cpu", batch_size=4)
    assert top1 == pytest.approx(200 / 6) and top5 == pytest.approx(500 / 6)


# -- evaluate() -----------------------------------------------------------------------------------------------------
class FakeDataset:
    """The parts of a Dataset that evaluate() reads."""

    def __init__(self, n_test: int = 24) -> None:
        x, y = tiny_data(n_test, seed=3)
        self.classes = ("a", "b", "c", "d")
        self.spec = type("S", (), {"mean": MEAN, "std": STD})()
        self.test = TensorSource(x, y)


@pytest.fixture
def fake_models(monkeypatch):
    def create(arch, num_classes, img_size=32, in_chans=3, **kw):
        if arch == "boom":
            raise RuntimeError("cannot build boom")
        model = Tiny(num_classes, in_chans)
        if arch == "nan":
            model.fc.bias.data.fill_(float("nan"))
        model.ddbench_arch = arch
        return model

    monkeypatch.setattr(ddbench.models, "create_model", create)


def test_evaluate_is_deterministic_and_isolates_failures(fake_models):
    x, y = tiny_data()
    d = DistilledSet(x, y)
    p = tiny_protocol(test_every=1)
    first = evaluate(d, FakeDataset(), ["tiny", "boom", "nan", "tiny"], p, seed=0)
    again = evaluate(d, FakeDataset(), ["tiny"], p, seed=0)
    assert [r.arch for r in first] == ["tiny", "boom", "nan", "tiny"]
    ok, boom, nan, ok2 = first
    assert ok.error is None and math.isfinite(ok.top1) and ok.curve[-1] == (3, ok.top1, ok.top5) and len(ok.curve) == 3
    assert ok.best_top1 == max(c[1] for c in ok.curve)
    assert "cannot build boom" in boom.error and math.isnan(boom.top1)
    assert "TrainingDiverged" in nan.error and "epoch 1, step 1" in nan.error and math.isnan(nan.top1)
    assert ok.lockstep == 3 and ok.wall_time_s > 0 and ok.peak_mem_mb > 0
    assert (again[0].top1, again[0].top5, again[0].curve) == (ok.top1, ok.top5, ok.curve)  # bit-for-bit, alone
    assert ok2.error is None  # a second copy of an arch gets its own init (occurrence 1)


def test_evaluate_stream_depends_on_seed_and_protocol_not_on_the_set(fake_models, monkeypatch):
    import ddbench.evaluate as ev

    seen = []
    original = ev.Trainer.fit

    def spy(self, *a, **kw):
        seen.append(kw["generator"].initial_seed())
        return original(self, *a, **kw)

    monkeypatch.setattr(ev.Trainer, "fit", spy)
    x, y = tiny_data()
    hard = DistilledSet(x, y)
    stored = DistilledSet(x.flip(0), y, soft_label=SoftLabelSpec(mode="stored"), soft_labels=torch.randn(20, 4))
    p = tiny_protocol(label_mode="artifact", epochs=1)
    for d, seed in ((hard, 0), (stored, 0), (hard, 1)):
        ev.evaluate(d, FakeDataset(), ["tiny"], p, seed)
    assert seen[0] == seen[1] != seen[2]


def test_evaluate_needs_a_teacher_for_online_modes(fake_models):
    x, y = tiny_data()
    with pytest.raises(ConfigError, match="no teacher"):
        evaluate(DistilledSet(x, y), FakeDataset(), ["tiny"], tiny_protocol(label_mode="teacher", loss="kl"), 0)


def test_teacher_quirk_uses_train_mode_on_a_copy(fake_models):
    x, y = tiny_data()
    teacher = seeded(7).eval()
    before = teacher.bn.running_mean.clone()
    p = tiny_protocol(label_mode="teacher", loss="kl", temperature=4.0, teacher_bn_train_mode_quirk=True, epochs=1)
    (r,) = evaluate(DistilledSet(x, y), FakeDataset(), ["tiny"], p, 0, teachers=[teacher])
    assert r.error is None
    assert torch.equal(teacher.bn.running_mean, before) and not teacher.training  # the cached teacher is untouched


# -- it learns ------------------------------------------------------------------------------------------------------
def test_hard_protocol_learns_real_digits():
    """20 real digits per class, a small CNN, the `hard` protocol's mechanism with fewer epochs.

    Measured (data and eval seeds 0-2, batch 16, 40 epochs = 560 steps): 67.7 / 68.6 / 72.2% test top-1 on the
    540 test digits; chance is 10%. The 45% threshold leaves a wide margin for BLAS and seed differences while
    still failing on a broken loss, label, normalisation or augmentation path.
    """
    from ddbench.data import load_dataset

    ds = load_dataset("digits")
    g = torch.Generator().manual_seed(0)
    idx = torch.cat(
        [ds.class_indices(c)[torch.randperm(len(ds.class_indices(c)), generator=g)[:20]] for c in range(10)]
    )
    d = DistilledSet(ds.train.load(idx), ds.train.labels[idx])
    p = load_protocol("hard", "cpu", overrides={"epochs": 40, "batch_size": 16})

    def create(arch, num_classes, img_size=32, in_chans=3, **kw):
        return nn.Sequential(
            nn.Conv2d(in_chans, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, num_classes),
        )

    mp = pytest.MonkeyPatch()
    mp.setattr(ddbench.models, "create_model", create)
    try:
        (r,) = evaluate(d, ds, ["cnn"], p, seed=0)
    finally:
        mp.undo()
    assert r.error is None and r.top1 > 45.0, r
