"""Real-data references: the full-train-set accuracy of a student architecture, the number HLR subtracts from.

A reference is "this arch trained on every real training image with hard labels", which is exactly what a teacher
is: a model trained by the student loop (:class:`ddbench.train.Trainer`) under a teacher recipe on the full real
train split. So a reference *is* the teacher artifact of that (dataset, arch, recipe, seed), fetched with
:func:`ddbench.teachers.get_teacher`: it is cached and sha256-verified like every artifact, keyed by the data
identity, arch, recipe hash (and profile) and seed, and it records its recipe, width and test accuracy. When the
soft-label teacher of a run has the student's arch, its reference costs nothing extra.

The recipe is the dataset's teacher recipe (``default``: CIFAR's 200-epoch SGD, Tiny-ImageNet's, digits'...), under
the run's profile; the ``cpu`` profile of the CIFAR/Tiny recipes trains at width ×0.25 (spec sre2l-dwa §10), which
the reference records and the score listing prints, because a narrow net's full-data accuracy is a lower bound of
the full-width student's. DD-Ranking caches two pairs (ImageNet-1K and Tiny-ImageNet ResNet-18-BN) and otherwise
retrains inside every evaluation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ddbench.method import TeacherSpec
from ddbench.teachers import ProgressFn, get_teacher

if TYPE_CHECKING:
    from ddbench.data import Dataset

logger = logging.getLogger(__name__)


@dataclass
class Reference:
    """Full-train-set test top-1 (%) of ``arch`` on a dataset under a recipe, per training seed."""

    dataset: str
    arch: str
    recipe: str
    recipe_hash: str
    profile: str
    width_mult: float
    top1: dict[int, float] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return sum(self.top1.values()) / len(self.top1) if self.top1 else math.nan

    def record(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "arch": self.arch, "recipe": self.recipe, "recipe_hash": self.recipe_hash,
                "profile": self.profile, "width_mult": self.width_mult, "top1": {str(k): v for k, v in
                self.top1.items()}, "mean": self.mean, "ids": self.ids}  # fmt: skip

    def describe(self) -> str:
        width = "" if self.width_mult == 1.0 else f" at width ×{self.width_mult:g}"
        seeds = ", ".join(map(str, self.top1))
        return (f"real {self.arch}{width}, recipe {self.recipe}@{self.profile} (seed {seeds}): "
                f"{self.mean:.2f}%")  # fmt: skip


def real_reference(
    dataset: Dataset,
    arch: str,
    *,
    recipe: str = "default",
    profile: str = "paper",
    seeds: Sequence[int] = (0,),
    device: torch.device | str = "cpu",
    progress: ProgressFn | None = None,
) -> Reference:
    """The cached full-data reference of ``arch`` (trained now for the seeds that are missing)."""
    ref: Reference | None = None
    for seed in seeds:
        teacher = get_teacher(dataset, TeacherSpec(arch=arch, recipe=recipe, seed=int(seed)), profile=profile,
                              device=device, progress=progress)  # fmt: skip
        if ref is None:
            ref = Reference(dataset.id, teacher.arch, str(teacher.recipe.get("name", recipe)),
                            str(teacher.recipe.get("hash", "")), str(teacher.recipe.get("profile", profile)),
                            float(teacher.width_mult))  # fmt: skip
        ref.top1[int(seed)] = float(teacher.accuracy["test_top1"])
        ref.ids.append(teacher.id)
    if ref is None:
        raise ValueError("real_reference needs at least one seed")
    logger.info("reference %s", ref.describe())
    return ref


__all__ = ["Reference", "real_reference"]
