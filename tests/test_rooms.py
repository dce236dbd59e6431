"""The rooms the second-wave methods build on: label modes and losses, Trainer callbacks, teacher model kwargs, and a
test plugin that needs a cross-run artifact, ZCA images and an ensemble label mode without touching harness files."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddbench.labels import (
    LABEL_MODES,
    LOSSES,
    Batch,
    EnsembleLabels,
    LabelMode,
    StoredLabels,
    Target,
    TeacherLabels,
    register_label_mode,
)
from ddbench.pixels import UInt8Space
from ddbench.protocol import Protocol
from ddbench.train import Callback, Trainer


class Fixed(nn.Module):
    """Returns the same logits row for every input (a teacher with a known output)."""

    def __init__(self, row: list[float]) -> None:
        super().__init__()
        self.row = torch.tensor(row)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.row.expand(x.shape[0], -1)


def kl_by_hand(student: list[float], target: list[float], t: float) -> float:
    q = [math.exp(v / t) for v in student]
    p = [math.exp(v / t) for v in target]
    q, p = [v / sum(q) for v in q], [v / sum(p) for v in p]
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def protocol(**kw) -> Protocol:
    return Protocol(**{"name": "t", "epochs": 2, "batch_size": 4, "aug": (), "eval_seeds": 1, **kw})


BATCH = Batch(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), torch.tensor([1, 0]))
STUDENT = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])


def test_teacher_mode_kl_equals_hand_computation() -> None:
    target = TeacherLabels([Fixed([0.0, 3.0, 1.0])]).targets(BATCH)
    p = protocol(label_mode="teacher", loss="kl", temperature=2.0)
    expected = sum(kl_by_hand(row, [0.0, 3.0, 1.0], 2.0) for row in STUDENT.tolist()) / 2
    assert LOSSES.get("kl")(STUDENT, BATCH, target, p).item() == pytest.approx(expected, rel=1e-5)


def test_ensemble_mode_is_the_mean_of_logits_not_of_probabilities() -> None:
    a, b = [4.0, 0.0, 0.0], [0.0, 0.0, 4.0]
    target = EnsembleLabels([Fixed(a), Fixed(b)]).targets(BATCH)
    torch.testing.assert_close(target.logits[0], torch.tensor([2.0, 0.0, 2.0]))
    probs = (F.softmax(torch.tensor(a), 0) + F.softmax(torch.tensor(b), 0)) / 2
    assert not torch.allclose(F.softmax(target.logits[0], 0), probs, atol=1e-3)
    # MSE + 0.025·CE (EDC) against the mean logits, by hand
    p = protocol(label_mode="ensemble", loss="mse_ce", ce_weight=0.025)
    mse = sum((s - t) ** 2 for row in STUDENT.tolist() for s, t in zip(row, [2.0, 0.0, 2.0])) / 6
    ce = (F.cross_entropy(STUDENT, torch.tensor([0, 1]))).item()
    assert LOSSES.get("mse_ce")(STUDENT, BATCH, target, p).item() == pytest.approx(mse + 0.025 * ce, rel=1e-5)


def test_stored_mode_reads_rows_by_image_index_and_kl_t2() -> None:
    stored = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    target = StoredLabels(stored=stored).targets(BATCH)  # batch.index = [1, 0]
    p = protocol(label_mode="stored", loss="kl", temperature=3.0, kl_t2=True)
    rows = [stored[1].tolist(), stored[0].tolist()]
    expected = 9 * sum(kl_by_hand(s, t, 3.0) for s, t in zip(STUDENT.tolist(), rows)) / 2
    assert LOSSES.get("kl")(STUDENT, BATCH, target, p).item() == pytest.approx(expected, rel=1e-5)


def test_soft_ce_equals_hand_computation() -> None:
    target = Target(torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]))
    p = protocol(label_mode="teacher", loss="soft_ce")
    expected = 0.0
    for s, t in zip(STUDENT.tolist(), target.logits.tolist()):
        pt = [math.exp(v) / sum(math.exp(u) for u in t) for v in t]
        ls = [v - math.log(sum(math.exp(u) for u in s)) for v in s]
        expected -= sum(a * b for a, b in zip(pt, ls))
    assert LOSSES.get("soft_ce")(STUDENT, BATCH, target, p).item() == pytest.approx(expected / 2, rel=1e-5)


def test_modes_refuse_what_they_cannot_use() -> None:
    with pytest.raises(ValueError, match="needs at least one teacher"):
        TeacherLabels([])
    with pytest.raises(ValueError, match="takes one teacher"):
        TeacherLabels([Fixed([0.0]), Fixed([1.0])])
    with pytest.raises(ValueError, match="stored soft labels"):
        StoredLabels()
    assert EnsembleLabels([Fixed([0.0]), Fixed([1.0])]).forwards_per_batch() == 2


@register_label_mode
class UniformLabels(LabelMode):
    """A plugin label mode defined in a test file: the uniform distribution (label smoothing to the limit)."""

    name = "uniform-test"

    def targets(self, batch: Batch) -> Target | None:
        return Target(torch.zeros(batch.x.shape[0], 3))


def test_a_new_label_mode_plugs_into_protocols_and_the_trainer() -> None:
    assert "uniform-test" in LABEL_MODES
    p = protocol(
        label_mode="uniform-test", loss="soft_ce", epochs=1, batch_size=2, lr=0.5, momentum=0.0, weight_decay=0
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.randint(0, 256, (2, 1, 2, 2), dtype=torch.uint8)
    Trainer(p, space=UInt8Space((0.5,), (0.25,)), labels=UniformLabels()).fit(
        [model], x, torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0)
    )
    # soft CE to a uniform target has gradient (softmax − 1/3) on the logits: one SGD step moves the bias by −lr·mean
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    z = ref(UInt8Space((0.5,), (0.25,)).finish(x.float() / 255))
    grad_b = (F.softmax(z, 1) - 1 / 3).mean(0)
    torch.testing.assert_close(model[1].bias, ref[1].bias - 0.5 * grad_b, atol=1e-6, rtol=0)


class Snapshots(Callback):
    """MTT-style: one flat parameter vector before training and after every epoch."""

    def __init__(self) -> None:
        self.flat: list[torch.Tensor] = []
        self.steps = 0

    def _take(self, students) -> None:
        self.flat.append(torch.cat([p.detach().flatten().clone() for p in students[0].model.parameters()]))

    def on_train_begin(self, trainer, students) -> None:
        self._take(students)

    def on_step_end(self, trainer, epoch, step, students, batch) -> None:
        self.steps += 1

    def on_epoch_end(self, trainer, epoch, students) -> None:
        assert epoch == len(self.flat)  # 1-based count of finished epochs
        self._take(students)


def test_callbacks_see_every_epochs_parameters() -> None:
    x = torch.randint(0, 256, (12, 1, 4, 4), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    y = torch.arange(12) % 3

    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

    space = UInt8Space((0.5,), (0.25,))
    cb = Snapshots()
    full = model()
    Trainer(protocol(epochs=4, lr=0.1), space=space, callbacks=[cb]).fit(
        [full], x, y, generator=torch.Generator().manual_seed(3)
    )
    assert len(cb.flat) == 5 and cb.steps == 4 * 3
    assert torch.equal(cb.flat[0], torch.cat([p.flatten() for p in model().parameters()]))  # snapshot 0 = init
    assert torch.equal(cb.flat[-1], torch.cat([p.flatten() for p in full.parameters()]))
    assert all(not torch.equal(a, b) for a, b in zip(cb.flat, cb.flat[1:]))
    # snapshot k is what k epochs of the same run give: the callback sees the live parameters, not copies of others
    cb2, short = Snapshots(), model()
    p2 = protocol(epochs=2, lr=0.1, schedule="constant")
    Trainer(p2, space=space, callbacks=[cb2]).fit([short], x, y, generator=torch.Generator().manual_seed(3))
    cb4 = Snapshots()
    Trainer(protocol(epochs=4, lr=0.1, schedule="constant"), space=space, callbacks=[cb4]).fit(
        [model()], x, y, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(cb2.flat[2], cb4.flat[2])


def test_teacher_spec_model_kwargs_are_part_of_the_teacher(tmp_path: Path) -> None:
    from ddbench.data import load_dataset
    from ddbench.method import TeacherSpec
    from ddbench.teachers import get_teacher, load_teacher

    recipe = tmp_path / "one.toml"
    recipe.write_text('version = 1\ndescription = "one epoch"\nepochs = 1\nbatch_size = 256\naug = []\n')
    ds = load_dataset("digits")
    d1 = get_teacher(ds, TeacherSpec(arch="convnet", recipe=str(recipe), model_kwargs={"depth": 1, "width": 8}))
    d2 = get_teacher(ds, TeacherSpec(arch="convnet", recipe=str(recipe), model_kwargs={"width": 8, "depth": 2}))
    assert d1.id != d2.id and (d1.model.depth, d1.model.width) == (1, 8) and d2.model.depth == 2
    assert TeacherSpec(model_kwargs={"b": 1, "a": 2}) == TeacherSpec(model_kwargs=(("a", 2), ("b", 1)))
    again = load_teacher(d1.id, ds)  # rebuilt with the recorded kwargs, or the state dict would not fit
    assert again.model.depth == 1 and again.sha256 == d1.sha256


# -- a plugin that needs all three rooms ------------------------------------------------------------------------------
PLUGIN_COMPUTED: list[str] = []


def make_plugin():
    from ddbench.distilled import SoftLabelSpec
    from ddbench.method import DistillContext, DistilledSet, Method, TeacherSpec
    from ddbench.pixels import fit_zca

    @dataclass(frozen=True)
    class RoomsConfig:
        recipe: str = ""

    class Rooms(Method):
        """Real images in ZCA space, a cross-run class-mean artifact, relabelled online by a two-seed ensemble."""

        name = "rooms-test"
        version = 1
        Config = RoomsConfig
        soft_labels = True

        def teachers(self, dataset):
            return [TeacherSpec(arch="convnet_bn", recipe=self.config.recipe, seed=s) for s in (0, 1)]

        def distill(self, ctx: DistillContext) -> DistilledSet:
            def compute():
                PLUGIN_COMPUTED.append(ctx.dataset.id)
                x = ctx.dataset.train.all().float()
                return {"class_means": torch.stack([x[ctx.dataset.train.labels == c].mean(0) for c in range(10)])}

            key = {"dataset": ctx.dataset.id, "class_hash": ctx.dataset.class_hash, "what": "class means"}
            stats, _ = ctx.cache.get_or_build_tensors("rooms-test-stats", key, compute)
            assert stats["class_means"].shape == (10, 1, 8, 8)
            zca = fit_zca(ctx.dataset, eps=0.1)
            chosen = ctx.pick_real(ctx.ipc, "rooms")
            idx = torch.cat([chosen[c] for c in range(10)])
            images = zca.from_unit(ctx.dataset.train.load(idx).float() / 255)
            labels = ctx.dataset.train.labels[idx]
            spec = SoftLabelSpec(mode="ensemble", teachers=tuple(t.id for t in ctx.teachers), temperature=4.0)
            return DistilledSet.in_space(images, labels, zca, soft_label=spec)

    return Rooms


def test_a_plugin_needing_artifacts_zca_and_an_ensemble_runs_without_harness_edits(tmp_path: Path) -> None:
    from ddbench.pipeline import EvalRequest, RunRequest, distill, evaluate_run, prepare
    from ddbench.plugins import METHODS
    from ddbench.store import Store

    if "rooms-test" not in METHODS:
        METHODS.register("rooms-test", make_plugin(), origin="tests")
    recipe = tmp_path / "one.toml"
    recipe.write_text('version = 1\ndescription = "one epoch"\nepochs = 2\nbatch_size = 128\naug = []\nlr = 0.05\n')
    proto = tmp_path / "ens.toml"
    proto.write_text(
        'version = 1\ndescription = "artifact labels"\nepochs = 3\nbatch_size = 10\noptimizer = "adam"\nlr = 0.01\n'
        'aug = ["flip"]\nlabel_mode = "artifact"\nloss = "kl"\neval_seeds = 1\n'
    )
    store = Store()
    rows = []
    for ipc in (1, 2):
        state = prepare(RunRequest(method="rooms-test", dataset="digits", ipc=ipc, profile="cpu",
                                   overrides={"recipe": str(recipe)}))  # fmt: skip
        distilled = distill(state)
        assert distilled.pixel_space == "zca" and "W" in distilled.pixel_state
        rows += evaluate_run(state, distilled, EvalRequest(archs=["convnet"], protocols=[str(proto)]), store)
    assert PLUGIN_COMPUTED == ["digits"]  # the cross-run artifact was built once, the second run reused it
    ids = sorted(t.id for t in state.teachers)
    assert len(set(ids)) == 2 and all(r["label_teachers"].split(",") == [t.id for t in state.teachers] for r in rows)
    assert all(r["error"] is None and r["top1"] > 10.0 for r in rows)  # above chance on a whitened test set
    extra = [__import__("json").loads(r["extra_json"]) for r in rows]
    assert all(e["teacher_forwards_per_epoch"] == 2 * math.ceil(10 * ipc_ / 10) for e, ipc_ in zip(extra, (1, 2)))
