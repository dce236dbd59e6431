"""Feature-space diversity of a distilled set: DWA's Eq. 20 and two normalized variants (spec ``sre2l-dwa.md`` §7).

DWA (Du et al., NeurIPS 2024, App. A.2.2) measures diversity per class as
D^c = Σ_i Σ_j ‖g(s_i^c) − g(s_j^c)‖² over the ipc synthetic images of class c, with g the *unperturbed* teacher
truncated at "the last convolutional layer". The paper leaves the feature point, pooling and normalization open
(§12), so ddbench fixes them and reports three numbers, all averaged over the evaluated classes:

* ``feat_dist_raw``: Eq. 20 exactly, on the flattened ``forward_features`` map (ResNet: the layer4 block output after
  the residual add and ReLU — reading 2 of §7).
* ``feat_dist_mean``: D^c / (n (n − 1)), the mean squared distance over ordered pairs i ≠ j, on the pooled
  ``forward_head(f, pre_logits=True)`` vector (global-average-pooled layer4 for ResNets).
* ``feat_dist_rel``: per class, ``feat_dist_mean`` divided by the same quantity on n random real training images of
  that class (seeded), then averaged; ≈1 means the synthetic set is as spread out as real data.

Images go through test-time preprocessing only (uint8 → [0, 1] → normalize; no augmentation). Class subset and real
images are fixed by ``seed``, so every method is measured on the same classes and the same real reference.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from ddbench.data import Dataset
from ddbench.distilled import DistilledSet

logger = logging.getLogger(__name__)

FEATURE_POINT = "forward_features (ResNet: layer4 block output after residual add + ReLU)"


def pairwise_sq_dist_sum(features: torch.Tensor) -> float:
    """Σ_i Σ_j ‖f_i − f_j‖² over all ordered pairs of rows of ``features`` ``[n, ...]`` (Eq. 20).

    Uses the identity Σ_i Σ_j ‖f_i − f_j‖² = 2 n Σ_i ‖f_i − f̄‖² in float64, which is exact up to rounding and
    avoids the cancellation of the ‖a‖² + ‖b‖² − 2ab form.
    """
    f = features.reshape(features.shape[0], -1).double()
    n = f.shape[0]
    return float(2 * n * (f - f.mean(0)).square().sum())


def mean_pairwise_sq_dist(features: torch.Tensor) -> float:
    """Mean of ‖f_i − f_j‖² over ordered pairs i ≠ j; NaN for fewer than two rows."""
    n = features.shape[0]
    return pairwise_sq_dist_sum(features) / (n * (n - 1)) if n >= 2 else math.nan


@torch.no_grad()
def _features(
    model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(flattened forward_features, pooled pre-logits) of normalized images, batched."""
    flat, pooled = [], []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        f = model.forward_features(x)
        flat.append(f.flatten(1).float().cpu())
        pooled.append(model.forward_head(f, pre_logits=True).flatten(1).float().cpu())
    return torch.cat(flat), torch.cat(pooled)


def real_reference(dataset: Dataset, c: int, n: int, seed: int) -> torch.Tensor:
    """The ``n`` random real training images of class ``c`` that ``feat_dist_rel`` compares against (uint8)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + c)
    return dataset.images_of_class(c, k=n, generator=g)


def _normalized(distilled: DistilledSet, mask: torch.Tensor, dataset: Dataset) -> torch.Tensor:
    """The set's images as the teacher sees real ones: back to pixels through the set's space, then normalized."""
    space = distilled.space(dataset.spec.mean, dataset.spec.std)
    return dataset.normalize(space.to_pixels(distilled.images[mask]))


def diversity_metrics(
    model: nn.Module,
    distilled: DistilledSet,
    dataset: Dataset,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """The three diversity numbers of §7 for ``distilled``, measured with the unperturbed teacher ``model``.

    Args:
        model: the unperturbed teacher, providing ``forward_features`` and ``forward_head(f, pre_logits=True)``;
            it is switched to eval mode.
        distilled: the saved (quantized) distilled set.
        dataset: the real dataset (normalization constants and the real reference images).
        num_classes: evaluate this many classes chosen by ``seed`` (DWA Fig. 4 uses 10); None = every class.
        seed: fixes the class subset and the real reference images.
        batch_size: images per forward.
        device: where to run the teacher.

    Returns:
        ``feat_dist_raw``, ``feat_dist_mean``, ``feat_dist_rel``, ``feat_dist_mean_real`` (the real reference) and
        ``feat_dist_classes`` (how many classes were averaged). Classes with fewer than two images are skipped.
    """
    device = torch.device(device)
    model.eval()
    classes = list(range(dataset.num_classes))
    if num_classes is not None and num_classes < len(classes):
        g = torch.Generator().manual_seed(seed)
        classes = sorted(torch.randperm(len(classes), generator=g)[:num_classes].tolist())
    raw, mean, rel, real_mean = [], [], [], []
    for c in classes:
        mask = distilled.labels == c
        n = int(mask.sum())
        if n < 2:
            logger.warning("diversity: class %d has %d distilled image(s); skipped", c, n)
            continue
        syn = _normalized(distilled, mask, dataset)
        flat, pooled = _features(model, syn, batch_size, device)
        real = dataset.normalize(real_reference(dataset, c, n, seed))
        _, real_pooled = _features(model, real, batch_size, device)
        raw.append(pairwise_sq_dist_sum(flat))
        mean.append(mean_pairwise_sq_dist(pooled))
        real_mean.append(mean_pairwise_sq_dist(real_pooled))
        rel.append(mean[-1] / real_mean[-1] if real_mean[-1] > 0 else math.nan)

    def avg(values: list[float]) -> float:
        return sum(values) / len(values) if values else math.nan

    return {
        "feat_dist_raw": avg(raw),
        "feat_dist_mean": avg(mean),
        "feat_dist_rel": avg(rel),
        "feat_dist_mean_real": avg(real_mean),
        "feat_dist_classes": float(len(raw)),
    }
