"""EDC's real-statistics pass (stage S1, spec ``edc.md`` §1 S1, §2.3–2.4) as a cached artifact per observer.

:func:`observer_targets` runs one frozen observer over (a class-balanced subset of) the real train split with the
train-time augmentation, through :func:`ddbench.ops.edc_targets.real_targets`, which records the global ("Form 1")
and per-class ("Form 2") targets at every BatchNorm2d input and every Conv2d input: channel moments everywhere and
patch moments (patch grid of §2.3) at Conv hooks. The result is an artifact of the cross-run cache
(``$DDBENCH_HOME/edc-stats/<dataset>/<observer id>-p<patch>-<key hash>/``) keyed by the observer's id and weights
hash, the data identity, the patch side, the subset, the augmentation, the batch size and the pass's seed, so
every EDC run (any ipc, seed or synthesis setting) that uses the same observer reuses it, as [C] reloads its
statistics cache.

The augmented inputs come from the harness's one student-input path (:func:`ddbench.train.augment_batch` under a
``hard``-label protocol holding only the augmentation): CIFAR/Tiny RandomCrop(pad 1/8) + flip, ImageNet
RRC(0.08–1) + flip (§1 S1), batch 64 (CIFAR/Tiny) or 256 (ImageNet). The targets are therefore collected under the
observers' strong training augmentation even though synthesis later uses the weak crop, as upstream does.

Deviation (spec §10.3, a cpu-profile knob): ``per_class`` images per class instead of the whole train split.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ddbench.data.identity import dataset_key
from ddbench.ops.edc_targets import ObserverTargets, real_targets
from ddbench.pixels import UInt8Space
from ddbench.protocol import Protocol
from ddbench.train import augment_batch

if TYPE_CHECKING:
    from ddbench.artifacts import ArtifactCache
    from ddbench.data import Dataset
    from ddbench.teachers import Teacher

logger = logging.getLogger(__name__)

#: Bump when the pass's computation changes (part of every statistics artifact's key).
STATS_FORMAT = 1


def stats_indices(dataset: Dataset, per_class: int | None, seed: int) -> torch.Tensor:
    """Train indices of the pass: everything (``None``) or the first ``per_class`` of a seeded per-class shuffle."""
    if per_class is None:
        return torch.arange(len(dataset.train))
    g = torch.Generator().manual_seed(seed)
    parts = []
    for c in range(dataset.num_classes):
        pool = dataset.class_indices(c)
        parts.append(pool[torch.randperm(pool.numel(), generator=g)][:per_class])
    return torch.cat(parts).sort().values


def stats_batches(
    dataset: Dataset,
    indices: torch.Tensor,
    *,
    aug: Sequence[str],
    batch_size: int,
    seed: int,
    device: torch.device | str,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled, augmented, normalised ``(images, labels)`` batches of the chosen train images (one pass)."""
    protocol = Protocol(name="edc-stats", aug=tuple(aug), mix="none", label_mode="hard", loss="ce")
    space = UInt8Space(dataset.spec.mean, dataset.spec.std)
    g = torch.Generator().manual_seed(seed)
    order = indices[torch.randperm(indices.numel(), generator=g)]
    labels = dataset.train.labels
    for start in range(0, order.numel(), batch_size):
        idx = order[start : start + batch_size]
        x, _ = augment_batch(dataset.train.load(idx), protocol, space, g)
        yield x.to(device), labels[idx].to(device)


def stats_key(
    teacher: Teacher, dataset: Dataset, *, patch: int, per_class: int | None, aug: Sequence[str], batch_size: int,
    seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Everything that determines one observer's targets."""
    return {
        "format": STATS_FORMAT,
        "observer": teacher.id,
        "observer_sha256": teacher.sha256,
        "data": dataset_key(dataset),
        "patch": patch,
        "per_class": per_class,
        "aug": list(aug),
        "batch_size": batch_size,
        "seed": seed,
    }


def observer_targets(
    cache: ArtifactCache,
    teacher: Teacher,
    dataset: Dataset,
    *,
    patch: int,
    per_class: int | None = None,
    aug: Sequence[str] = ("crop_pad", "flip"),
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> ObserverTargets:
    """The observer's real-data targets, from the artifact cache or computed now (one pass, eval mode, no grad).

    Args:
        cache: the cross-run cache (``ctx.cache``).
        teacher: the prepared observer.
        dataset: the real data (its train split).
        patch: patch side p of the Conv-hook patch moments (4 at 32/64 px, 16 at 224 px).
        per_class: train images per class (None: the whole split).
        aug: augmentation names of :data:`ddbench.augmentations.BATCH_AUGS`, applied per sample.
        batch_size: images per forward (the conv targets average per-batch pooled moments, so it matters).
        seed: the subset and augmentation stream.
        device: where to run the observer.
    """
    key = stats_key(teacher, dataset, patch=patch, per_class=per_class, aug=aug, batch_size=batch_size, seed=seed)

    def compute() -> dict[str, Any]:
        indices = stats_indices(dataset, per_class, seed)
        model = teacher.model.to(device)
        batches = stats_batches(dataset, indices, aug=aug, batch_size=batch_size, seed=seed, device=device)
        targets = real_targets(model, batches, dataset.num_classes, patch=patch)
        logger.info("statistics pass of %s: %d images, %d hooked layers", teacher.id, targets.num_images,
                    len(targets.layers))  # fmt: skip
        return {"targets": targets.state_dict()}

    tensors, _ = cache.get_or_build_tensors(
        f"edc-stats/{dataset.id}", key, compute, name=f"{teacher.id}-p{patch}", meta={"observer": teacher.id}
    )
    return ObserverTargets.from_state_dict(tensors["targets"], device)


__all__ = ["STATS_FORMAT", "observer_targets", "stats_batches", "stats_indices", "stats_key"]
