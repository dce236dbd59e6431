"""EDC's real-data statistics pass for one observer (stage S1, spec ``edc.md`` §1 S1, §2.4).

:func:`real_targets` runs a frozen observer in eval mode over an iterator of real ``(images, labels)`` batches (the
caller applies the train-time augmentation and normalisation: RandomCrop + flip on CIFAR/Tiny, RRC(0.08–1) + flip
on ImageNet) and returns, for every ``BatchNorm2d`` input and every ``Conv2d`` input (G-VBSM's "generalized
statistical matching"), two kinds of targets:

* **global ("Form 1")**: at a BN hook the observer's own ``running_mean`` / ``running_var`` (nothing is
  recomputed); at a Conv hook the batch-pooled channel and patch moments (:mod:`ddbench.ops.moments`) averaged
  over batches with weights n_b / N, i.e. a sample-weighted mean of per-batch pooled moments, as [C] does, not an
  exact population variance (the two differ by the spread of the batch means, small at batch 64–256);
* **per class ("Form 2")**: for each class c, the average over its images of the **per-image** moments (channel
  moments over H×W, and at Conv hooks patch moments over C×p×p). The class "variance" target is therefore the
  class average of *within-image* variance, not the pooled class variance (the between-image term is missing):
  that is [C]'s definition and the spec's DEFAULT (§9.2 item 16).

The hooks are :class:`ddbench.ops.bn_stats.StatsRecorder`'s (``conv=True, keep_inputs=True``); one batch's layer
inputs are held until its statistics are taken, then released. Accumulation is in float64.

[C]'s save step swaps the per-class patch mean and variance (§9.2 item 2); ddbench stores them the right way
round and has no switch for the swap.

The result is plain tensors (:meth:`ObserverTargets.state_dict` / :meth:`ObserverTargets.from_state_dict`), so the
harness can cache it as an artifact per (observer, dataset, augmentation, patch side).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ddbench.ops.bn_stats import LayerKind, StatsRecorder
from ddbench.ops.moments import STATS, Moments, layer_moments, patch_moments

logger = logging.getLogger(__name__)


@dataclass
class LayerTargets:
    """Targets of one hooked layer of one observer.

    Attributes:
        name: qualified module name in the observer.
        kind: ``bn`` or ``conv``.
        position: index among all hooked layers in ``modules()`` order (0 = the first, EDC's ×10 hook).
        glob: Form 1 targets, ``[D]`` each (patch moments only at Conv hooks).
        per_class: Form 2 targets, ``[K, D]`` each; rows of classes without images are 0.
    """

    name: str
    kind: LayerKind
    position: int
    glob: Moments
    per_class: Moments


@dataclass
class ObserverTargets:
    """Every hooked layer's targets for one observer, plus what they were computed from.

    Attributes:
        layers: ``{module name: LayerTargets}`` in hook (``modules()``) order.
        num_classes: K.
        patch: patch side p of the patch moments.
        class_counts: ``[K]`` real images seen per class.
        num_images: images seen in total.
    """

    layers: dict[str, LayerTargets]
    num_classes: int
    patch: int
    class_counts: torch.Tensor
    num_images: int
    meta: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers, for ``torch.save`` (the artifact cache)."""
        layers = []
        for t in self.layers.values():
            entry: dict[str, Any] = {"name": t.name, "kind": t.kind, "position": t.position}
            for prefix, m in (("glob", t.glob), ("per_class", t.per_class)):
                entry.update({f"{prefix}.{k}": v.cpu() for k, v in m.items()})
            layers.append(entry)
        return {
            "layers": layers,
            "num_classes": self.num_classes,
            "patch": self.patch,
            "class_counts": self.class_counts.cpu(),
            "num_images": self.num_images,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], device: torch.device | str = "cpu") -> ObserverTargets:
        """Inverse of :meth:`state_dict`, with the tensors moved to ``device``."""

        def moments(entry: Mapping[str, Any], prefix: str) -> Moments:
            return Moments(**{k: entry[f"{prefix}.{k}"].to(device) for k in STATS if f"{prefix}.{k}" in entry})

        layers = {
            e["name"]: LayerTargets(e["name"], e["kind"], e["position"], moments(e, "glob"), moments(e, "per_class"))
            for e in state["layers"]
        }
        return cls(layers, state["num_classes"], state["patch"], state["class_counts"].to(device),
                   state["num_images"], dict(state.get("meta", {})))  # fmt: skip

    def to(self, device: torch.device | str) -> ObserverTargets:
        """A copy with every tensor on ``device``."""
        return ObserverTargets.from_state_dict(self.state_dict(), device)


class _Accumulator:
    """Running float64 sums for one layer: sample-weighted pooled moments and per-class sums of per-image ones."""

    def __init__(self) -> None:
        self.pooled: dict[str, torch.Tensor] = {}
        self.class_sums: dict[str, torch.Tensor] = {}

    def add(self, pooled: Moments | None, per_image: Moments, labels: torch.Tensor, num_classes: int) -> None:
        n = labels.numel()
        for k, v in pooled.items() if pooled is not None else ():
            v = v.double() * n
            self.pooled[k] = self.pooled[k] + v if k in self.pooled else v
        for k, v in per_image.items():
            sums = torch.zeros(num_classes, v.shape[1], dtype=torch.float64, device=v.device)
            sums.index_add_(0, labels, v.double())
            if k in self.class_sums and self.class_sums[k].shape != sums.shape:
                raise ValueError(f"statistic {k} changed shape between batches ({tuple(v.shape)}): mixed image sizes?")
            self.class_sums[k] = self.class_sums[k] + sums if k in self.class_sums else sums


@torch.no_grad()
def real_targets(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    *,
    patch: int,
    bn: bool = True,
    conv: bool = True,
    dtype: torch.dtype = torch.float32,
) -> ObserverTargets:
    """One pass over real data: global and per-class targets at every BN and Conv input of ``model``.

    Args:
        model: the observer (any device); put in eval mode for the pass and restored afterwards, so BatchNorm
            normalises with, and never updates, its running buffers.
        batches: ``(images, labels)`` pairs, augmented and normalised, on the model's device; iterated once.
        num_classes: K.
        patch: patch side p of the Conv-hook patch moments (4 at 32/64 px, 16 at 224 px).
        bn, conv: which layer kinds to hook (both in EDC).
        dtype: dtype of the returned tensors.

    Raises:
        ValueError: when ``batches`` is empty or a label is outside ``[0, num_classes)``.
    """
    recorder = StatsRecorder(bn=bn, conv=conv, keep_inputs=True)
    was_training = model.training
    model.eval()
    accs: dict[str, _Accumulator] = {}
    kinds: dict[str, tuple[LayerKind, nn.Module]] = {}
    counts: torch.Tensor | None = None
    seen = 0
    try:
        recorder.attach(model)
        for images, labels in batches:
            labels = labels.to(device=images.device, dtype=torch.long)
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
                raise ValueError(f"labels must be in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
            model(images)
            samples = torch.arange(labels.numel(), device=images.device)
            for record in recorder.stats(None):
                h = record.input
                kinds[record.name] = (record.kind, record.module)
                per_image = layer_moments(h, record.kind, patch, samples, labels.numel())
                # BN global targets are the running buffers, so only Conv hooks accumulate pooled moments
                pooled = Moments(record.mean, record.var, *patch_moments(h, patch)) if record.kind == "conv" else None
                accs.setdefault(record.name, _Accumulator()).add(pooled, per_image, labels, num_classes)
            recorder.clear()
            batch_counts = torch.bincount(labels, minlength=num_classes)
            counts = batch_counts if counts is None else counts + batch_counts
            seen += labels.numel()
    finally:
        recorder.detach()
        model.train(was_training)
    if counts is None or seen == 0:
        raise ValueError("real_targets got no images")
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        logger.warning("real_targets: no images for classes %s; their per-class targets are 0", empty[:20])
    per = counts.clamp(min=1).double().unsqueeze(1)
    layers: dict[str, LayerTargets] = {}
    for position, (name, acc) in enumerate(accs.items()):
        kind, module = kinds[name]
        if kind == "bn":
            glob = Moments(*(buf.detach().to(dtype).clone() for buf in (module.running_mean, module.running_var)))
        else:
            glob = Moments(**{k: (v / seen).to(dtype) for k, v in acc.pooled.items()})
        per_class = Moments(**{k: (v / per).to(dtype) for k, v in acc.class_sums.items()})
        layers[name] = LayerTargets(name, kind, position, glob, per_class)
    num_bn = sum(t.kind == "bn" for t in layers.values())
    logger.info("real_targets: %d images, %d hooked layers (%d BN, %d Conv), patch %d", seen, len(layers), num_bn,
                len(layers) - num_bn, patch)  # fmt: skip
    return ObserverTargets(layers, num_classes, patch, counts.cpu(), seen)


__all__ = ["LayerTargets", "ObserverTargets", "real_targets"]
