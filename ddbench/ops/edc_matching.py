"""EDC's synthesis-side statistic matching: straight-through "training momentum" and soft category-aware matching.

The sibling of :func:`ddbench.ops.bn_stats.bn_matching_loss` for G-VBSM/EDC (spec ``edc.md`` §2.5–2.7). The hooks
are the same :class:`~ddbench.ops.bn_stats.StatsRecorder` (``bn=True, conv=True, keep_inputs=True``, no groups);
the targets are :func:`ddbench.ops.edc_targets.real_targets`'s. Per hooked layer l of the current observer:

* **synthetic statistics** s(h): channel mean/variance (BN and Conv hooks) and patch mean/variance (Conv hooks)
  of the layer input over the whole synthetic batch (:mod:`ddbench.ops.moments`);
* **training momentum** (:class:`MomentumStats`, §2.5): each s is replaced by ŝ + s − stopgrad(s), where
  ŝ ← m·ŝ + (1 − m)·s is a detached EMA (m = 0.8 in EDC). The value compared is the EMA, the gradient is the
  current batch statistic's with coefficient 1 (straight-through). DEFAULT: ŝ starts at the first batch
  statistic and is reset for every synthesis batch; ``compat_zero_init_ema=True`` starts at 0 as [C] does (its
  "first call" test never fires), so the first value is (1 − m)·s;
* **soft category-aware matching** (§2.6): R_l = α·Form1 + (1 − α)·Form2, α = 0.5 (the code's two factors of ½;
  α is read as weighting the whole of Form 1), each form a sum of plain (non-squared) L2 norms, one per statistic:

  - Form 1: ‖target_global − ŝ‖ (BN hooks: the running buffers);
  - Form 2, ``category_mode="aggregate"`` ([C], the DEFAULT, all published numbers): the per-class targets are
    averaged over the batch labels, Σ_c p_batch(c)·μ_c, and compared once with the whole-batch ŝ; its category
    awareness comes only from class-major batches of few classes;
  - Form 2, ``category_mode="per_class"`` (paper Eq. 5): ŝ_c over the synthetic samples of each class c in the
    batch (their own EMA), compared with (μ_c, s²_c, ...), weighted by p_batch(c).

* **total**: Σ_l w_l·R_l with w = ``first_multiplier`` (10) on the **first** hooked layer of the observer in
  ``modules()`` order (the first Conv2d, whose input is the image) and 1 elsewhere. Unlike SRe2L's
  per-kind first-BN multiplier, only one layer is boosted. The caller multiplies by r_loss and adds CE and the
  flatness term (:mod:`ddbench.ops.flatness`).

One :class:`MomentumStats` per observer: layer names repeat across architectures, and [C] keeps the EMA in each
observer's own hooks.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from typing import Literal

import torch

from ddbench.ops.bn_stats import LayerStats
from ddbench.ops.edc_targets import LayerTargets, ObserverTargets
from ddbench.ops.moments import Moments, layer_moments, patch_moments

logger = logging.getLogger(__name__)

CategoryMode = Literal["aggregate", "per_class"]
CATEGORY_MODES: tuple[str, ...] = ("aggregate", "per_class")


class MomentumStats:
    """Detached EMAs of synthetic statistics, returned with the straight-through trick (spec §2.5).

    ``stats(key, s)`` updates ŝ_key ← m·ŝ_key + (1 − m)·s (detached) and returns ŝ_key + (s − stopgrad(s)):
    numerically ŝ_key exactly, with ∂/∂s = identity. The first call for a key starts ŝ at s (DEFAULT) or, with
    ``compat_zero_init_ema``, at 0 ([C]): the first value is then (1 − m)·s. ``momentum = 0`` makes it the plain
    batch statistic.

    Args:
        momentum: m, EDC's "training momentum" (0.8; 0.0 in the ImageNet-10 script; G-VBSM 0.4).
        compat_zero_init_ema: start every EMA at 0, as [C] does.
    """

    def __init__(self, momentum: float = 0.8, *, compat_zero_init_ema: bool = False) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"training momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.compat_zero_init_ema = compat_zero_init_ema
        self._ema: dict[Hashable, torch.Tensor] = {}

    def reset(self) -> None:
        """Forget every EMA (call at the start of each synthesis batch; [C] never does, spec §9.2 item 5)."""
        self._ema.clear()

    def __len__(self) -> int:
        return len(self._ema)

    def __call__(self, key: Hashable, s: torch.Tensor) -> torch.Tensor:
        current = s.detach()
        prev = self._ema.get(key)
        if prev is not None and prev.shape != current.shape:
            raise ValueError(f"statistic {key!r} changed shape {tuple(prev.shape)} → {tuple(current.shape)}; reset()?")
        if prev is None and not self.compat_zero_init_ema:
            ema = current.clone()
        else:
            prev = torch.zeros_like(current) if prev is None else prev
            ema = self.momentum * prev + (1.0 - self.momentum) * current
        self._ema[key] = ema
        return ema + (s - current)


def _smoothed(moments: Moments, momentum: MomentumStats | None, name: str, tag: str) -> Moments:
    if momentum is None:
        return moments
    return Moments(**{k: momentum((name, k, tag), v) for k, v in moments.items()})


def _distances(target: Moments, synthetic: Moments, layer: str) -> torch.Tensor:
    """Σ over statistics of ‖target − synthetic‖₂ along the last axis (``[]`` or ``[G]``)."""
    total = None
    for k, s in synthetic.items():
        t = getattr(target, k)
        if t is None:
            raise KeyError(f"layer {layer!r} has no {k} target (was the statistics pass run with these hooks?)")
        d = torch.linalg.vector_norm(t.to(s.dtype) - s, dim=-1)
        total = d if total is None else total + d
    assert total is not None
    return total


def _aggregate_targets(per_class: Moments, weights: torch.Tensor, keys: Sequence[str]) -> Moments:
    return Moments(**{k: weights.to(getattr(per_class, k).dtype) @ getattr(per_class, k) for k in keys})


def layer_loss(
    record: LayerStats,
    target: LayerTargets,
    labels: torch.Tensor,
    *,
    patch: int,
    alpha: float = 0.5,
    category_mode: CategoryMode = "aggregate",
    momentum: MomentumStats | None = None,
    conv_patch: bool = True,
) -> torch.Tensor:
    """R_l = α·Form1 + (1 − α)·Form2 for one hooked layer (see the module docstring).

    Args:
        record: the layer's record from an ungrouped recorder; ``record.input`` is needed at Conv hooks with
            ``conv_patch`` and in ``per_class`` mode (``keep_inputs=True``).
        target: the layer's targets.
        labels: ``[B]`` class of every synthetic image.
        patch: patch side of the targets.
        alpha: weight of Form 1 (1: global matching only, SRe2L/G-VBSM style; 0: class terms only).
        category_mode: ``aggregate`` ([C]) or ``per_class`` (paper Eq. 5).
        momentum: the observer's EMAs; None compares the plain batch statistics.
        conv_patch: include the patch terms at Conv hooks.
    """
    if category_mode not in CATEGORY_MODES:
        raise ValueError(f"category_mode must be one of {', '.join(CATEGORY_MODES)}, got {category_mode!r}")
    if record.mean.ndim != 1:
        raise ValueError("layer_loss needs whole-batch statistics: do not set groups on the recorder")
    patch_on = record.kind == "conv" and conv_patch
    needs_input = patch_on or (category_mode == "per_class" and alpha < 1)
    if needs_input and record.input is None:
        raise ValueError(f"layer {record.name!r}: attach the StatsRecorder with keep_inputs=True")
    num_classes = target.per_class.mean.shape[0]
    labels = labels.to(record.mean.device)
    loss = torch.zeros((), dtype=record.mean.dtype, device=record.mean.device)
    glob: Moments | None = None
    if alpha > 0 or category_mode == "aggregate":
        pm, pv = patch_moments(record.input, patch) if patch_on else (None, None)
        glob = _smoothed(Moments(record.mean, record.var, pm, pv), momentum, record.name, "global")
    if alpha > 0:
        assert glob is not None
        loss = loss + alpha * _distances(target.glob, glob, record.name)
    if alpha < 1:
        counts = torch.bincount(labels, minlength=num_classes)
        if category_mode == "aggregate":
            assert glob is not None
            weights = counts.to(record.mean.dtype) / labels.numel()
            keys = [k for k, _ in glob.items()]
            form2 = _distances(_aggregate_targets(target.per_class, weights, keys), glob, record.name)
        else:
            classes, inverse = torch.unique(labels, sorted=True, return_inverse=True)
            syn = layer_moments(record.input, record.kind, patch if patch_on else None, inverse, len(classes))
            syn = _smoothed(syn, momentum, record.name, "class")
            keys = [k for k, _ in syn.items()]
            per_class = Moments(**{k: getattr(target.per_class, k)[classes] for k in keys})
            p = counts[classes].to(record.mean.dtype) / labels.numel()
            form2 = (p * _distances(per_class, syn, record.name)).sum()
        loss = loss + (1 - alpha) * form2
    return loss


def statistics_loss(
    records: Sequence[LayerStats],
    targets: ObserverTargets,
    labels: torch.Tensor,
    *,
    alpha: float = 0.5,
    category_mode: CategoryMode = "aggregate",
    momentum: MomentumStats | None = None,
    first_multiplier: float = 10.0,
    conv_patch: bool = True,
    reduction: Literal["sum", "none"] = "sum",
) -> torch.Tensor:
    """Σ_l w_l·R_l over one forward's records of the current observer (w = ``first_multiplier`` on the first).

    Args:
        records: ``recorder.stats(None)``: every hooked layer of one forward, in ``modules()`` order; the first
            record gets ``first_multiplier``.
        targets: the observer's :class:`~ddbench.ops.edc_targets.ObserverTargets`.
        labels, alpha, category_mode, momentum, conv_patch: see :func:`layer_loss`.
        first_multiplier: weight of the first hooked layer (EDC's ``first_multiplier`` = 10).
        reduction: ``sum`` → scalar; ``none`` → the weighted per-layer terms ``[L]``.

    Raises:
        ValueError: no records, or α outside [0, 1].
        KeyError: a record without targets.
    """
    if not records:
        raise ValueError("no layer statistics recorded; is the recorder attached and enabled, and did a forward run?")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    terms = []
    for i, record in enumerate(records):
        if record.name not in targets.layers:
            raise KeyError(f"no targets for {record.kind} layer {record.name!r}")
        r = layer_loss(record, targets.layers[record.name], labels, patch=targets.patch, alpha=alpha,
                       category_mode=category_mode, momentum=momentum, conv_patch=conv_patch)  # fmt: skip
        terms.append(r * (first_multiplier if i == 0 else 1.0))
    stacked = torch.stack(terms)
    return stacked.sum() if reduction == "sum" else stacked


__all__ = ["CATEGORY_MODES", "CategoryMode", "MomentumStats", "layer_loss", "statistics_loss"]
