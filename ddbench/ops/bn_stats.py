"""Layer-input statistics hooks and the BN-statistics matching loss (SRe2L, DWA, EDC, ...).

The "recover" family of methods (SRe2L, DWA, G-VBSM, EDC) optimizes pixels so that the per-channel mean and
variance of the *input* of every ``BatchNorm2d`` of a frozen teacher match the teacher's running buffers
(spec ``sre2l-dwa.md`` §3.4–3.5). This module provides the one implementation all of them share:

* :class:`StatsRecorder`: forward hooks on every ``BatchNorm2d`` (and optionally every ``Conv2d``) of one model at a
  time, recording per-channel mean and **biased** variance of the layer input. It can be attached to several models
  in turn (EDC cycles through observers), disabled for passes that must not record (DWA's ascent steps, EDC's EMA
  pass), and can group the batch by an index tensor: per-class statistics (EDC Form 2), per-shard statistics
  (several independent SRe2L class-batches in one forward), or per-sample moments (``groups = arange(N)``).
* :func:`hookless_copy`: a deep copy of a model that carries none of the original's hooks (DWA's working copy).
* :func:`channel_moments`: the statistic itself, usable without hooks (EDC's real-data target pass).
* :func:`bn_matching_loss`: Σ_l m_l (λ_mean ‖μ_l − RM_l‖₂ + λ_var ‖σ²_l − RV_l‖₂), with plain (non-squared) L2 norms
  summed over layers, separate absolute weights for the two terms, and the first-layer multiplier (SRe2L's
  ``first_bn_multiplier`` = 10) on both terms of the first hooked layer of its kind in ``modules()`` order.

The hooks only read the input; they never change the forward computation. The teacher is expected to be in
``eval()`` mode, so BN normalizes with (and never updates) its running buffers.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

logger = logging.getLogger(__name__)

LayerKind = Literal["bn", "conv"]


def hookless_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` without any forward (pre-)hooks.

    ``copy.deepcopy`` copies a module's hook dicts, and a closure hook copied that way still writes into the
    object that registered it on the original: a working copy of a teacher some other recorder is attached to
    would feed that recorder (and pay for its statistics) on every forward. Perturbed copies (DWA) start clean.
    """
    clone = copy.deepcopy(model)
    for module in clone.modules():
        for table in (
            module._forward_hooks,
            module._forward_hooks_with_kwargs,
            module._forward_hooks_always_called,
            module._forward_pre_hooks,
            module._forward_pre_hooks_with_kwargs,
        ):
            table.clear()
    return clone


def channel_moments(
    h: torch.Tensor, groups: torch.Tensor | None = None, num_groups: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``h`` ``[N, C, *spatial]`` over batch and spatial positions.

    Args:
        h: a layer input, ``[N, C]`` or ``[N, C, H, W]`` (any number of trailing spatial dims).
        groups: optional ``[N]`` int64 group index per sample. The moments are then computed separately over the
            samples of each group (and all their spatial positions), so one forward can serve several independent
            batches, per-class targets, or per-sample moments (``groups = arange(N)``).
        num_groups: number of groups G (default ``groups.max() + 1``). Empty groups get mean and variance 0.

    Returns:
        ``(mean, var)``: ``[C]`` each without groups, ``[G, C]`` with groups. The variance divides by the number of
        elements (biased), as BatchNorm's own batch statistic does; this is what SRe2L matches (§3.5).
    """
    dims = (0, *range(2, h.ndim))
    if groups is None:
        var, mean = torch.var_mean(h, dim=dims, correction=0)
        return mean, var
    if num_groups is None:
        num_groups = int(groups.max()) + 1
    spatial = tuple(range(2, h.ndim))
    per_pos = h[0, 0].numel()
    counts = torch.bincount(groups, minlength=num_groups).to(h.dtype).mul_(per_pos).clamp_(min=1).unsqueeze(1)
    sums = h.sum(spatial) if spatial else h
    mean = torch.zeros(num_groups, h.shape[1], dtype=h.dtype, device=h.device).index_add(0, groups, sums) / counts
    # Centred second moment (two passes) rather than E[x²] − E[x]²: exact enough to equal the ungrouped statistic.
    centred = h - mean[groups].view(h.shape[0], h.shape[1], *([1] * len(spatial)))
    sq = centred.square().sum(spatial) if spatial else centred.square()
    var = torch.zeros_like(mean).index_add(0, groups, sq) / counts
    return mean, var


@dataclass
class LayerStats:
    """Statistics of one hooked layer's input from the latest forward.

    Attributes:
        name: qualified module name in the attached model.
        kind: ``bn`` (BatchNorm2d) or ``conv`` (Conv2d).
        module: the layer itself (its running buffers are the default BN targets).
        position: index of the layer among the hooked layers of its kind, in ``modules()`` order (0 = first).
        mean: ``[C]`` or, with groups, ``[G, C]``.
        var: biased variance, same shape.
        input: the raw layer input when the recorder keeps inputs (EDC's patch moments), else None.
    """

    name: str
    kind: LayerKind
    module: nn.Module
    position: int
    mean: torch.Tensor
    var: torch.Tensor
    input: torch.Tensor | None = None

    @property
    def first(self) -> bool:
        """Whether this is the first hooked layer of its kind (the layer the first-layer multiplier weights)."""
        return self.position == 0


class StatsRecorder:
    """Forward hooks recording per-channel input statistics of every BatchNorm2d (and optionally Conv2d).

    One recorder is attached to one model at a time; re-attach it, or use one recorder per model, to observe
    several models in turn. Use it as a context manager so the hooks are always removed::

        with StatsRecorder().attach(teacher) as rec:
            logits = teacher(x)
            loss = bn_matching_loss(rec.stats(), lambda_mean=0.01, lambda_var=0.01)

    Each forward overwrites a layer's record, so the records always describe the latest pass; a layer called twice in
    one forward keeps the last call's statistics. Records hold the autograd graph of the statistics, which is what
    makes the loss differentiable w.r.t. the input images.

    Args:
        bn: hook every ``nn.BatchNorm2d``.
        conv: hook every ``nn.Conv2d`` as well (G-VBSM/EDC convolution statistics).
        keep_inputs: also keep a reference to each layer's input tensor (for statistics beyond channel moments).

    Attributes:
        enabled: when False the hooks return immediately (passes whose statistics must not be recorded or built).
        groups, num_groups: optional per-sample group index; see :meth:`set_groups`.
    """

    def __init__(self, *, bn: bool = True, conv: bool = False, keep_inputs: bool = False) -> None:
        if not (bn or conv):
            raise ValueError("StatsRecorder needs at least one of bn=True or conv=True")
        self.kinds: tuple[LayerKind, ...] = tuple(k for k, on in (("bn", bn), ("conv", conv)) if on)
        self.keep_inputs = keep_inputs
        self.enabled = True
        self.groups: torch.Tensor | None = None
        self.num_groups: int | None = None
        self.model: nn.Module | None = None
        self.layers: list[tuple[str, LayerKind, nn.Module, int]] = []
        self._records: dict[int, LayerStats] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    # -- attaching --------------------------------------------------------------------------------------------------
    @staticmethod
    def _kind(module: nn.Module) -> LayerKind | None:
        if isinstance(module, nn.BatchNorm2d):
            return "bn"
        if isinstance(module, nn.Conv2d):
            return "conv"
        return None

    def attach(self, model: nn.Module) -> StatsRecorder:
        """Hook every selected layer of ``model``; raises if already attached (detach first)."""
        if self.model is not None:
            raise RuntimeError("StatsRecorder is already attached; call detach() before attaching it to another model")
        counts: dict[LayerKind, int] = {}
        for name, module in model.named_modules():
            kind = self._kind(module)
            if kind is None or kind not in self.kinds:
                continue
            position = counts.get(kind, 0)
            counts[kind] = position + 1
            slot = len(self.layers)
            self.layers.append((name, kind, module, position))
            self._handles.append(module.register_forward_hook(self._make_hook(slot)))
        if not self.layers:
            logger.warning("StatsRecorder attached to %s, which has no %s layers", type(model).__name__, self.kinds)
        self.model = model
        self._records.clear()
        return self

    def detach(self) -> None:
        """Remove every hook and forget the records; the recorder can then be attached to another model."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.layers.clear()
        self._records.clear()
        self.model = None

    def __enter__(self) -> StatsRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _make_hook(self, slot: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if not self.enabled:
                return
            h = inputs[0]
            mean, var = channel_moments(h, self.groups, self.num_groups)
            name, kind, _, position = self.layers[slot]
            self._records[slot] = LayerStats(name, kind, module, position, mean, var, h if self.keep_inputs else None)

        return hook

    # -- grouping and reading -----------------------------------------------------------------------------------------
    def set_groups(self, groups: torch.Tensor | None, num_groups: int | None = None) -> None:
        """Compute statistics per group of samples from the next forward on (None: over the whole batch)."""
        self.groups = None if groups is None else groups.to(torch.long)
        self.num_groups = None if groups is None else (num_groups or int(groups.max()) + 1)

    def clear(self) -> None:
        """Drop the records (and the graphs they hold) without removing the hooks."""
        self._records.clear()

    def stats(self, kind: LayerKind | None = "bn") -> list[LayerStats]:
        """Records from the latest forward in ``modules()`` order; ``kind=None`` returns every kind."""
        return [r for slot, r in sorted(self._records.items()) if kind is None or r.kind == kind]

    def __iter__(self) -> Iterator[LayerStats]:
        return iter(self.stats(None))

    def num_layers(self, kind: LayerKind = "bn") -> int:
        """Hooked layers of ``kind`` in the attached model (ResNet-18: 20 BatchNorm2d)."""
        return sum(1 for _, k, _, _ in self.layers if k == kind)


# -- the loss ---------------------------------------------------------------------------------------------------------
Targets = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


def _target(record: LayerStats, targets: Targets | None) -> tuple[torch.Tensor, torch.Tensor]:
    if targets is not None and record.name in targets:
        return targets[record.name]
    if record.kind == "bn":
        return record.module.running_mean, record.module.running_var
    raise KeyError(f"no target statistics for {record.kind} layer {record.name!r}; pass them in targets")


def bn_distances(
    stats: Sequence[LayerStats], targets: Targets | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-layer distances ‖μ_l − RM_l‖₂ and ‖σ²_l − RV_l‖₂ and which layers are first of their kind.

    Args:
        stats: records, e.g. ``recorder.stats()``.
        targets: optional ``{layer name: (mean, var)}`` replacing the BN running buffers (per-class targets may be
            ``[G, C]``, matched group by group); required for conv layers.

    Returns:
        ``(d_mean, d_var, first)``: ``[L]`` (or ``[L, G]`` with groups) plain L2 norms over channels — not squared,
        not divided by the channel count — and a ``[L]`` bool mask of the first layer of each kind.
    """
    if not stats:
        raise ValueError("no layer statistics recorded; is the recorder attached and enabled, and did a forward run?")
    d_mean, d_var = [], []
    for record in stats:
        rm, rv = _target(record, targets)
        d_mean.append(torch.linalg.vector_norm(record.mean - rm, dim=-1))
        d_var.append(torch.linalg.vector_norm(record.var - rv, dim=-1))
    first = torch.tensor([r.first for r in stats], device=d_mean[0].device)
    return torch.stack(d_mean), torch.stack(d_var), first


def bn_matching_loss(
    stats: Sequence[LayerStats],
    *,
    lambda_mean: float,
    lambda_var: float,
    first_multiplier: float = 10.0,
    targets: Targets | None = None,
    reduction: Literal["sum", "none"] = "sum",
) -> torch.Tensor:
    """Σ_l m_l (λ_mean ‖μ_l − RM_l‖₂ + λ_var ‖σ²_l − RV_l‖₂) over the recorded layers (spec §3.4, §6.3).

    ``λ_mean`` and ``λ_var`` are absolute weights: SRe2L's ``r_bn · (‖Δμ‖ + r_var ‖Δσ²‖)`` is
    ``lambda_mean = r_bn, lambda_var = r_bn · r_var``. ``m_l = first_multiplier`` for the first layer of its kind in
    ``modules()`` order (ResNet's stem ``bn1``) and 1 elsewhere; it weights both terms, as upstream does.

    Args:
        stats: records of one forward (``recorder.stats()``).
        lambda_mean, lambda_var: absolute weights of the mean and variance terms.
        first_multiplier: weight of the first layer (10 in SRe2L and DWA, on although neither paper mentions it).
        targets: see :func:`bn_distances`.
        reduction: ``sum`` gives a scalar; ``none`` keeps the group axis (``[G]``) when the recorder grouped the
            batch, so each group's loss (one independent class-batch each) can be inspected separately.
    """
    d_mean, d_var, first = bn_distances(stats, targets)
    weights = torch.where(first, first_multiplier, 1.0).to(d_mean.dtype)
    weights = weights.view(-1, *([1] * (d_mean.ndim - 1)))
    per_layer = weights * (lambda_mean * d_mean + lambda_var * d_var)
    loss = per_layer.sum(0)
    return loss.sum() if reduction == "sum" else loss
