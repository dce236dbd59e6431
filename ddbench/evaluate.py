"""Scoring a distilled set: set + dataset + archs + protocol + seed → one :class:`EvalResult` per arch.

:func:`evaluate` resolves the protocol for the set (``artifact`` label mode, temperature, hints), builds one
seeded student per arch, trains them in lockstep with :class:`ddbench.train.Trainer` in the set's pixel space with
the protocol's label mode (an online teacher, an ensemble of teachers, the set's stored labels or hard labels) and
reports final-epoch top-1/top-5 on the test split, whose images go through the same pixel space (a ZCA set's test
images are whitened by the set's own fitted transform). Best-of-run is logged as auxiliary only, never used for
selection. A failing arch records its error and the others finish.

Seeding (spec sre2l-dwa §4.2): the batch order, crops, flips and mixes come from one CPU generator seeded by
(seed, protocol hash) (:func:`augment_seed`), so two methods evaluated with the same seed see identical
augmentation streams. Student initialisation is seeded by (seed, arch, occurrence) (:func:`student_seed`), and
every student keeps its own global-RNG state, so training archs together or one by one gives bit-identical
weights on CPU.

The protocol schema (:mod:`ddbench.protocol`) and the training loop (:mod:`ddbench.train`) live one layer down,
so that teachers are trained by the same loop without importing this module, which sits above them; import their
names from there.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ddbench.config import ConfigError, derive_seed
from ddbench.distilled import DistilledSet
from ddbench.distributed import DistInfo
from ddbench.labels import LABEL_MODES, build_label_mode
from ddbench.protocol import ARTIFACT_LABEL_MODE, Protocol, apply_hints
from ddbench.train import Callback, ProgressFn, Trainer, evaluate_models

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """One (arch, seed) evaluation of a distilled set.

    Attributes:
        arch: student architecture.
        seed: evaluation seed.
        top1, top5: final-epoch test accuracy (%), the reported number (NaN if the arch failed).
        best_top1: best top-1 over the logged test points (auxiliary; selected on test, never reported alone).
        wall_time_s: wall time of the lockstep training it was part of (shared by ``lockstep`` archs).
        peak_mem_mb: CUDA peak allocated memory of the run, or the process's peak RSS on CPU.
        curve: (epoch, top1, top5) test points.
        error: ``Type: message`` when this arch failed, else None.
        lockstep: how many archs trained together (the wall time and memory are theirs together).
        protocol_hash: hash of the protocol as resolved for this set (label mode, temperature, hints).
        teacher_forwards_per_epoch: online-teacher forward passes one student epoch cost (0 for hard/stored labels).
        world_size: DDP processes the student was trained across (1: a single process).
    """

    arch: str
    seed: int
    top1: float
    top5: float
    best_top1: float
    wall_time_s: float
    peak_mem_mb: float
    curve: list[tuple[int, float, float]]
    error: str | None = None
    lockstep: int = 1
    protocol_hash: str = ""
    teacher_forwards_per_epoch: int = 0
    world_size: int = 1


def resolve_for_artifact(protocol: Protocol, distilled: DistilledSet) -> Protocol:
    """Turn ``label_mode = "artifact"``, an unset temperature, hints and epochs by IPC into concrete protocol values.

    The IPC of ``epochs_by_ipc`` is the set's largest class count.
    """
    if protocol.epochs_by_ipc and len(distilled):
        protocol = protocol.for_ipc(int(distilled.ipc_counts().max()))
    updates: dict[str, Any] = {}
    if protocol.label_mode == ARTIFACT_LABEL_MODE:
        mode = distilled.soft_label.mode
        updates["label_mode"] = "hard" if mode == "none" else mode
        if mode == "none":
            updates["loss"] = "ce"
        elif protocol.loss == "ce":
            updates["loss"] = "kl"
    if protocol.temperature is None and distilled.soft_label.temperature is not None:
        updates["temperature"] = float(distilled.soft_label.temperature)
    resolved = dataclasses.replace(protocol, **updates) if updates else protocol
    return apply_hints(resolved, distilled.hints)


def student_seed(seed: int, arch: str, occurrence: int = 0) -> int:
    """Seed of a student's initialisation and private RNG: depends on (seed, arch, occurrence) only."""
    return derive_seed(seed, "student", arch, occurrence)


def augment_seed(seed: int, protocol: Protocol) -> int:
    """Seed of the batch-order/augmentation stream: (seed, protocol), independent of method and archs."""
    return derive_seed(seed, "augment", protocol.hash)


def prepare_teachers(
    teachers: Sequence[nn.Module], protocol: Protocol, device: torch.device, channels_last: bool
) -> list[nn.Module]:
    """Online teachers on the device in the protocol's BN mode (a copy under the train-mode quirk)."""
    teachers = list(teachers)
    if protocol.teacher_bn_train_mode_quirk:
        teachers = [copy.deepcopy(t) for t in teachers]  # the quirk drifts BN running stats: never touch the cache
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for t in teachers:
        t.to(device=device, memory_format=fmt)
        t.train(protocol.teacher_bn_train_mode_quirk)
    return teachers


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def evaluate(
    distilled: DistilledSet,
    dataset: Any,
    archs: Sequence[str],
    protocol: Protocol,
    seed: int,
    device: torch.device | str = "cpu",
    teachers: Sequence[nn.Module] = (),
    amp: bool = False,
    channels_last: bool = False,
    progress: ProgressFn | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    dist: DistInfo | None = None,
) -> list[EvalResult]:
    """Train one fresh student per arch on ``distilled`` (in lockstep) and score it on the test split.

    Args:
        distilled: the set; its pixel space (and its state), soft-label spec and hints are honoured.
        dataset: the :class:`~ddbench.data.Dataset` it was distilled from (mean/std, classes, test split).
        archs: student architectures for :func:`ddbench.models.create_model`.
        protocol: the evaluation protocol (``artifact`` label mode and hints are resolved per set).
        seed: evaluation seed; with the protocol it fixes every random draw.
        device: where to train.
        teachers: online teacher models for label modes that use them (one for ``teacher``, several for
            ``ensemble``); ignored by the others.
        amp, channels_last: speed options (bf16 autocast, channels-last), as in :class:`~ddbench.train.Trainer`.
        progress: ``progress(stage, done, total)``.
        callbacks: :class:`~ddbench.train.Callback` objects for the training loop.
        dist: data-parallel place of this process under torchrun (:mod:`ddbench.distributed`); None: one process.

    Returns:
        One result per arch, in order; a failing arch has ``error`` set and NaN accuracies.
    """
    from ddbench.models import create_model

    device = torch.device(device)
    stream_seed = augment_seed(seed, protocol)  # before resolution: same stream for every method under it
    resolved = resolve_for_artifact(protocol, distilled)
    space = distilled.space(dataset.spec.mean, dataset.spec.std)
    mode_cls = LABEL_MODES.get(resolved.label_mode)
    if mode_cls.uses_teachers and not teachers:
        raise ConfigError(
            f"protocol {resolved.name!r} uses label mode {resolved.label_mode!r} but no teacher was given"
        )
    online = prepare_teachers(teachers, resolved, device, channels_last) if mode_cls.uses_teachers else []
    stored = distilled.soft_labels if mode_cls.uses_stored else None
    labels = build_label_mode(resolved.label_mode, online, stored)
    num_classes = len(dataset.classes)
    in_chans, img_size = int(distilled.images.shape[1]), int(distilled.images.shape[-1])

    results: dict[int, EvalResult] = {}
    models, positions, seeds = [], [], []
    occurrences: dict[str, int] = {}
    for i, arch in enumerate(archs):
        k = occurrences.get(arch, 0)
        occurrences[arch] = k + 1
        s = student_seed(seed, arch, k)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)
                model = create_model(arch, num_classes, img_size, in_chans, width_mult=resolved.width_mult)
        except Exception as exc:  # an arch that cannot be built fails alone
            logger.warning("student %s could not be built: %s", arch, exc)
            results[i] = EvalResult(
                arch, seed, math.nan, math.nan, math.nan, 0.0, 0.0, [], f"{type(exc).__name__}: {exc}"
            )
            continue
        models.append(model)
        positions.append(i)
        seeds.append(s)

    if models:

        def test_fn(group: Sequence[nn.Module]) -> list[tuple[float, float]]:
            return evaluate_models(
                group,
                dataset.test,
                space,
                device,
                resolved.test_batch_size,
                amp=amp,
                channels_last=channels_last,
                dist=dist,
            )

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer = Trainer(
            resolved,
            space=space,
            labels=labels,
            device=device,
            amp=amp,
            channels_last=channels_last,
            callbacks=callbacks,
            progress=progress,
            test_fn=test_fn,
            catch_errors=True,
            dist=dist,
        )
        stats = trainer.fit(
            models,
            distilled.images,
            distilled.labels,
            generator=torch.Generator().manual_seed(stream_seed),
            model_seeds=seeds,
        )
        peak = _peak_mem_mb(device)
        forwards = trainer.teacher_forwards_per_epoch(len(distilled))
        for pos, st in zip(positions, stats, strict=True):
            curve = list(st.test_curve)
            ok = st.error is None and curve and curve[-1][0] == resolved.epochs
            top1, top5 = (curve[-1][1], curve[-1][2]) if ok else (math.nan, math.nan)
            best = max((c[1] for c in curve), default=math.nan)
            results[pos] = EvalResult(
                archs[pos],
                seed,
                top1,
                top5,
                best,
                st.wall_time_s,
                peak,
                curve,
                st.error,
                len(models),
                resolved.hash,
                forwards,
                dist.world_size if dist is not None else 1,
            )
            if ok:
                logger.info("%s seed %d: final top1 %.2f (best-of-run %.2f, auxiliary)", archs[pos], seed, top1, best)
    return [results[i] for i in range(len(archs))]


__all__ = ["EvalResult", "augment_seed", "evaluate", "prepare_teachers", "resolve_for_artifact", "student_seed"]
