"""Label modes and student losses as objects: what a student learns from on each batch.

A **label mode** turns one augmented, mixed batch into the target the loss compares with the student's logits:

* ``hard``: no target; the loss uses the batch's (mixed) hard labels.
* ``stored``: the artifact's per-image soft labels (logits), rows of the unmixed images mixed with the batch's
  pairing and λ (DD-Ranking's "S" mode, FKD-like stores).
* ``teacher``: one online teacher relabels every augmented, mixed batch (DD-Ranking's "M" mode, SRe2L/DWA).
* ``ensemble``: several teachers, the **mean of their logits** (EDC; not the mean of probabilities).

A **loss** maps (logits, batch, target) to a scalar: ``ce`` (hard labels, mixed CE), ``kl`` (KL(batchmean) of
softmax(z_t/T) against log_softmax(z_s/T), optional ×T²), ``mse_ce`` (EDC: MSE to the target logits +
``ce_weight``·CE on the unmixed hard label) and ``soft_ce`` (cross-entropy with the soft target distribution
softmax(z_t/T), TESLA/DATM's learnable soft labels).

Both are registries: a new mode or loss is one class or function registered from any module (a test file or a
plugin) — the protocol names it and the student loop calls it; no harness file switches on names. Modes that need
teachers say so (:attr:`LabelMode.uses_teachers`), and the pipeline resolves the artifact's ``SoftLabelSpec``
entries, teacher ids or architectures, into models.

This module holds no training loop; :mod:`ddbench.train` and :mod:`ddbench.protocol` import it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ddbench.ops.augment import mix_targets
from ddbench.registry import Registry

if TYPE_CHECKING:
    from ddbench.protocol import Protocol


@dataclass
class Batch:
    """One augmented, mixed, model-space batch, shared by the teacher(s) and every student.

    Attributes:
        x: model inputs ``[B, C, H, W]``.
        y: hard labels of the (unmixed) images.
        index: positions of the images in the training set (rows of stored soft labels).
        perm: the mixing partner of each row (None when the batch is not mixed).
        lam: mixing weight of the row's own image.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    perm: torch.Tensor | None = None
    lam: float = 1.0


@dataclass
class Target:
    """Soft-label target of one batch: per-row logits, and the mixing still to apply to them.

    An online teacher saw the mixed batch, so its logits need no mixing (``perm`` None). Stored labels belong to
    the unmixed images; they are mixed with the batch's pairing and λ in the space the loss compares in
    (probabilities for KL/soft CE, logits for MSE), as FKD-style stores are replayed.
    """

    logits: torch.Tensor
    perm: torch.Tensor | None = None
    lam: float = 1.0

    def _mix(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.perm is None or self.lam >= 1.0 else mix_targets(t, self.perm, self.lam)

    def probs(self, temperature: float) -> torch.Tensor:
        """softmax(logits / T), then mixed."""
        return self._mix(F.softmax(self.logits.float() / temperature, dim=1))

    def mixed_logits(self) -> torch.Tensor:
        """The logits, mixed."""
        return self._mix(self.logits.float())


def ensemble_logits(models: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Mean of the models' logits (float32); the ensemble target of EDC and of the ``ensemble`` label mode."""
    if not models:
        raise ValueError("ensemble_logits needs at least one model")
    logits = [m(x).float() for m in models]
    return logits[0] if len(logits) == 1 else torch.stack(logits).mean(0)


# ====================================================================================================================
# Losses
# ====================================================================================================================
LossFn = Callable[[torch.Tensor, Batch, "Target | None", "Protocol"], torch.Tensor]
LOSSES: Registry[LossFn] = Registry("loss")


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    """Decorator registering ``fn(logits, batch, target, protocol) -> scalar`` under ``name``."""

    def deco(fn: LossFn) -> LossFn:
        LOSSES.register(name, fn, origin=fn.__module__)
        return fn

    return deco


def mixed_ce(logits: torch.Tensor, y: torch.Tensor, perm: torch.Tensor | None, lam: float) -> torch.Tensor:
    """λ·CE(z, y) + (1−λ)·CE(z, y[perm]): hard-label loss on a mixed batch (plain CE when unmixed)."""
    loss = F.cross_entropy(logits.float(), y)
    if perm is None or lam >= 1.0:
        return loss
    return lam * loss + (1 - lam) * F.cross_entropy(logits.float(), y[perm])


def kl_loss(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float, t2: bool) -> torch.Tensor:
    """KL(p_t ‖ softmax(z_s/T)) with batchmean reduction (sum over classes, mean over the batch), ×T² if ``t2``."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    loss = F.kl_div(log_q, target_probs.float(), reduction="batchmean")
    return loss * temperature**2 if t2 else loss


def _temperature(protocol: Protocol) -> float:
    return protocol.temperature or 1.0


@register_loss("ce")
def ce(logits: torch.Tensor, batch: Batch, target: Target | None, protocol: Protocol) -> torch.Tensor:
    """Hard-label cross-entropy on the (mixed) batch; a soft target is a configuration error."""
    if target is not None:
        raise ValueError(f"protocol {protocol.name!r}: loss 'ce' takes hard labels, but a soft target was made")
    return mixed_ce(logits, batch.y, batch.perm, batch.lam)


def _needs_target(target: Target | None, name: str, protocol: Protocol) -> Target:
    if target is None:
        raise ValueError(f"protocol {protocol.name!r}: loss {name!r} needs soft targets (label mode gave none)")
    return target


@register_loss("kl")
def kl(logits: torch.Tensor, batch: Batch, target: Target | None, protocol: Protocol) -> torch.Tensor:
    """KL to softmax(target logits / T), batchmean, optionally ×T² (``kl_t2``)."""
    t = _temperature(protocol)
    return kl_loss(logits, _needs_target(target, "kl", protocol).probs(t), t, protocol.kl_t2)


@register_loss("soft_ce")
def soft_ce(logits: torch.Tensor, batch: Batch, target: Target | None, protocol: Protocol) -> torch.Tensor:
    """−Σ_k p_k log q_k with p = softmax(target/T), q = softmax(z/T), mean over the batch."""
    t = _temperature(protocol)
    probs = _needs_target(target, "soft_ce", protocol).probs(t)
    return -(probs * F.log_softmax(logits.float() / t, dim=1)).sum(1).mean()


@register_loss("mse_ce")
def mse_ce(logits: torch.Tensor, batch: Batch, target: Target | None, protocol: Protocol) -> torch.Tensor:
    """EDC: MSE to the target logits plus ``ce_weight``·CE on the base image's (unmixed) hard label."""
    z = logits.float()
    target_logits = _needs_target(target, "mse_ce", protocol).mixed_logits()
    return F.mse_loss(z, target_logits) + protocol.ce_weight * F.cross_entropy(z, batch.y)


# ====================================================================================================================
# Label modes
# ====================================================================================================================
class LabelMode(abc.ABC):
    """How targets are made for one training run; one instance per run.

    Args:
        teachers: models for modes that use them (eval mode set by the caller), else empty.
        stored: ``[N, K]`` per-image logits for modes that use the artifact's stored labels.
    """

    name: ClassVar[str]
    #: the mode makes soft targets (so the protocol's loss must be a soft one)
    soft: ClassVar[bool] = True
    uses_teachers: ClassVar[bool] = False
    uses_stored: ClassVar[bool] = False
    #: how many teacher forwards one batch costs (storage/cost tables)
    teacher_calls: ClassVar[int] = 0

    def __init__(self, teachers: Sequence[nn.Module] = (), stored: torch.Tensor | None = None) -> None:
        if self.uses_teachers and not teachers:
            raise ValueError(f"label mode {self.name!r} needs at least one teacher")
        if not self.uses_teachers and teachers:
            raise ValueError(f"label mode {self.name!r} uses no teacher, but {len(teachers)} were given")
        if self.uses_stored and stored is None:
            raise ValueError(f"label mode {self.name!r} needs the artifact's stored soft labels")
        self.teachers = list(teachers)
        self.stored = stored

    def to(self, device: torch.device) -> LabelMode:
        if self.stored is not None:
            self.stored = self.stored.to(device)
        return self

    @abc.abstractmethod
    def targets(self, batch: Batch) -> Target | None:
        """The batch's soft target (None: hard labels)."""

    def forwards_per_batch(self) -> int:
        """Teacher forward passes per training batch (0 for hard and stored labels)."""
        return len(self.teachers) if self.uses_teachers else 0


LABEL_MODES: Registry[type[LabelMode]] = Registry("label mode")


def register_label_mode(cls: type[LabelMode]) -> type[LabelMode]:
    """Class decorator: make ``cls`` available to protocols as ``label_mode = cls.name``."""
    LABEL_MODES.register(cls.name, cls, origin=cls.__module__)
    return cls


@register_label_mode
class HardLabels(LabelMode):
    name = "hard"
    soft = False

    def targets(self, batch: Batch) -> Target | None:
        return None


@register_label_mode
class StoredLabels(LabelMode):
    name = "stored"
    uses_stored = True

    def targets(self, batch: Batch) -> Target | None:
        assert self.stored is not None
        return Target(self.stored[batch.index].float(), batch.perm, batch.lam)


@register_label_mode
class TeacherLabels(LabelMode):
    """One online teacher on the augmented, mixed batch (its output already belongs to the mixed images)."""

    name = "teacher"
    uses_teachers = True

    def __init__(self, teachers: Sequence[nn.Module] = (), stored: torch.Tensor | None = None) -> None:
        super().__init__(teachers, stored)
        if len(self.teachers) > 1:
            raise ValueError(f"label mode 'teacher' takes one teacher, got {len(self.teachers)}; use 'ensemble'")

    @torch.no_grad()
    def targets(self, batch: Batch) -> Target | None:
        return Target(self.teachers[0](batch.x).float())


@register_label_mode
class EnsembleLabels(LabelMode):
    """Several online teachers; the target is the mean of their logits (EDC §5)."""

    name = "ensemble"
    uses_teachers = True

    @torch.no_grad()
    def targets(self, batch: Batch) -> Target | None:
        return Target(ensemble_logits(self.teachers, batch.x))


#: The artifact's ``SoftLabelSpec.mode`` → label mode (``none`` means hard labels).
ARTIFACT_MODES = {"none": "hard"}


def build_label_mode(
    name: str, teachers: Sequence[nn.Module] = (), stored: torch.Tensor | None = None, **kwargs: Any
) -> LabelMode:
    """The registered label mode ``name`` for one training run."""
    return LABEL_MODES.get(ARTIFACT_MODES.get(name, name))(teachers, stored, **kwargs)


__all__ = [
    "ARTIFACT_MODES",
    "LABEL_MODES",
    "LOSSES",
    "Batch",
    "EnsembleLabels",
    "HardLabels",
    "LabelMode",
    "StoredLabels",
    "Target",
    "TeacherLabels",
    "build_label_mode",
    "ensemble_logits",
    "kl_loss",
    "mixed_ce",
    "register_label_mode",
    "register_loss",
]
