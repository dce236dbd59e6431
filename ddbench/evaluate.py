"""Scoring a distilled set: set + dataset + archs + protocol + seed → one :class:`EvalResult` per arch.

:func:`evaluate` resolves the protocol for the set (``artifact`` label mode, temperature, hints), builds one
seeded student per arch, trains them in lockstep with :func:`ddbench.train.train_students` (an online teacher's
soft labels come from :func:`_make_teacher_fn`) and reports final-epoch top-1/top-5 on the test split (best-of-run
is logged as auxiliary only, never used for selection), wall time and peak memory. A failing arch records its
error and the others finish.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ddbench.config import ConfigError, derive_seed
from ddbench.distilled import DistilledSet
from ddbench.protocol import Protocol, apply_hints
from ddbench.train import ProgressFn, evaluate_models, train_students

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


def resolve_for_artifact(protocol: Protocol, distilled: DistilledSet) -> Protocol:
    """Turn ``label_mode = "artifact"``, an unset temperature and hints into concrete protocol values."""
    updates: dict[str, Any] = {}
    if protocol.label_mode == "artifact":
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


def _make_teacher_fn(
    teacher: nn.Module | Sequence[nn.Module], protocol: Protocol, device: torch.device, channels_last: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    if protocol.label_mode == "teacher" and len(teachers) > 1:
        logger.info("label_mode 'teacher' with %d teachers: using their mean logits", len(teachers))
    if protocol.teacher_bn_train_mode_quirk:
        teachers = [copy.deepcopy(t) for t in teachers]  # the quirk drifts BN running stats: never touch the cache
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for t in teachers:
        t.to(device=device, memory_format=fmt)
        t.train(protocol.teacher_bn_train_mode_quirk)

    def soft_targets(x: torch.Tensor) -> torch.Tensor:
        logits = [t(x).float() for t in teachers]
        return logits[0] if len(logits) == 1 else torch.stack(logits).mean(0)

    return soft_targets


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
    teacher: nn.Module | Sequence[nn.Module] | None = None,
    amp: bool = False,
    channels_last: bool = False,
    progress: ProgressFn | None = None,
    *,
    test_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[EvalResult]:
    """Train one fresh student per arch on ``distilled`` (in lockstep) and score it on the test split.

    Args:
        distilled: the set; its pixel space, soft-label spec and hints are honoured.
        dataset: the :class:`~ddbench.data.Dataset` it was distilled from (mean/std, classes, test split).
        archs: student architectures for :func:`ddbench.models.create_model`.
        protocol: the evaluation protocol (``artifact`` label mode and hints are resolved per set).
        seed: evaluation seed; with the protocol it fixes every random draw.
        device: where to train.
        teacher: online teacher(s) for ``teacher``/``ensemble`` label modes (ignored otherwise).
        amp, channels_last: speed options (bf16 autocast, channels-last), as in :func:`train_students`.
        progress: ``progress(stage, done, total)``.
        test_transform: maps [0, 1] test images to model input; required for ``zca`` sets (the method's ZCA).

    Returns:
        One result per arch, in order; a failing arch has ``error`` set and NaN accuracies.
    """
    from ddbench.models import create_model

    device = torch.device(device)
    stream_seed = augment_seed(seed, protocol)  # before resolution: same stream for every method under it
    resolved = resolve_for_artifact(protocol, distilled)
    if distilled.pixel_space == "zca" and test_transform is None:
        raise ConfigError("a ZCA-space set needs the method's ZCA transform for the test images (test_transform=)")
    needs_teacher = resolved.label_mode in ("teacher", "ensemble")
    if needs_teacher and teacher is None:
        raise ConfigError(
            f"protocol {resolved.name!r} uses label mode {resolved.label_mode!r} but no teacher was given"
        )
    soft_fn = _make_teacher_fn(teacher, resolved, device, channels_last) if needs_teacher else None
    stored = distilled.soft_labels if resolved.label_mode == "stored" else None
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
        mean, std = dataset.spec.mean, dataset.spec.std

        def test_fn(group: Sequence[nn.Module]) -> list[tuple[float, float]]:
            return evaluate_models(
                group,
                dataset.test,
                mean,
                std,
                device,
                resolved.test_batch_size,
                transform=test_transform,
                amp=amp,
                channels_last=channels_last,
            )

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        stats = train_students(
            models,
            distilled.images,
            distilled.labels,
            protocol=resolved,
            mean=mean,
            std=std,
            pixel_space=distilled.pixel_space,
            generator=torch.Generator().manual_seed(stream_seed),
            device=device,
            soft_targets=soft_fn,
            stored_soft=stored,
            amp=amp,
            channels_last=channels_last,
            progress=progress,
            test_fn=test_fn,
            model_seeds=seeds,
            catch_errors=True,
        )
        peak = _peak_mem_mb(device)
        for pos, st in zip(positions, stats, strict=True):
            curve = list(st.test_curve)
            ok = st.error is None and curve and curve[-1][0] == resolved.epochs
            top1, top5 = (curve[-1][1], curve[-1][2]) if ok else (math.nan, math.nan)
            best = max((c[1] for c in curve), default=math.nan)
            results[pos] = EvalResult(
                archs[pos], seed, top1, top5, best, st.wall_time_s, peak, curve, st.error, len(models), resolved.hash
            )
            if ok:
                logger.info("%s seed %d: final top1 %.2f (best-of-run %.2f, auxiliary)", archs[pos], seed, top1, best)
    return [results[i] for i in range(len(archs))]


__all__ = ["EvalResult", "augment_seed", "evaluate", "resolve_for_artifact", "student_seed"]
