"""Channel and spatial-patch moments of a feature tensor: the statistics G-VBSM and EDC match (spec ``edc.md`` §2.3).

Every hooked layer input ``h`` ``[B, C, H, W]`` yields

* **channel moments** (BN and Conv hooks): per-channel mean and biased variance over (batch, H, W), the statistic
  of :func:`ddbench.ops.bn_stats.channel_moments`, which is reused here;
* **patch moments** (Conv hooks only): ``h`` is bilinearly resized (``align_corners=False``) so that H and W are
  rounded *up* to a multiple of the patch side p (a map smaller than p becomes one p×p patch), tiled into a U×V
  grid of p×p patches, and each patch location u gets the mean and biased variance over (batch, channels, its
  p×p pixels): two vectors in ℝ^{U·V}. p = 4 for 32/64-px datasets, 16 for 224-px ones, so a 32-px image has
  8×8 = 64 locations and a 224-px image 14×14 = 196; a 56×56 map (p = 16) is resized to 64×64 (16 locations) and
  a 7×7 map to 16×16 (one location).

Both take the ``groups`` index of :func:`~ddbench.ops.bn_stats.channel_moments`: per-sample moments
(``groups = arange(B)``, used for EDC's per-class targets, §2.4) and per-class synthetic moments (the
``per_class`` matching mode, §2.6) are the same call with a different index. All variances divide by n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ddbench.ops.bn_stats import LayerKind, channel_moments

#: Statistic names in the order the matching loss sums them (channel terms, then patch terms).
STATS: tuple[str, ...] = ("mean", "var", "patch_mean", "patch_var")


def patch_grid(height: int, width: int, patch: int) -> tuple[int, int]:
    """The (U, V) patch grid of an ``height``×``width`` map: each side rounded up to a multiple of ``patch``.

    Raises:
        ValueError: for a non-positive patch side or map size.
    """
    if patch < 1 or height < 1 or width < 1:
        raise ValueError(f"patch side and map size must be positive, got patch={patch}, map={height}×{width}")
    return max(1, math.ceil(height / patch)), max(1, math.ceil(width / patch))


def to_patches(h: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, U·V, C·p·p]``: resize up to the patch grid, then one row of values per location.

    Locations are numbered row-major (u = i·V + j). No resize happens when H and W are already multiples of p.
    """
    b, c, height, width = h.shape
    u, v = patch_grid(height, width, patch)
    if (u * patch, v * patch) != (height, width):
        h = F.interpolate(h, size=(u * patch, v * patch), mode="bilinear", align_corners=False)
    h = h.reshape(b, c, u, patch, v, patch).permute(0, 2, 4, 1, 3, 5)
    return h.reshape(b, u * v, c * patch * patch)


def patch_moments(
    h: torch.Tensor, patch: int, groups: torch.Tensor | None = None, num_groups: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of every patch location over (batch, channels, pixels of the patch).

    Args:
        h: ``[B, C, H, W]`` layer input.
        patch: patch side p.
        groups, num_groups: as :func:`~ddbench.ops.bn_stats.channel_moments`: moments per group of samples.

    Returns:
        ``(mean, var)``: ``[U·V]`` each, or ``[G, U·V]`` with groups.
    """
    return channel_moments(to_patches(h, patch), groups, num_groups)


@dataclass
class Moments:
    """The statistics of one hooked layer (all ``[D]``, or ``[G, D]`` per group of samples).

    Attributes:
        mean, var: channel moments (``D = C``).
        patch_mean, patch_var: patch moments (``D = U·V``); None for BN hooks or when patch terms are off.
    """

    mean: torch.Tensor
    var: torch.Tensor
    patch_mean: torch.Tensor | None = None
    patch_var: torch.Tensor | None = None

    def items(self) -> list[tuple[str, torch.Tensor]]:
        """(name, tensor) for the statistics present, in :data:`STATS` order."""
        return [(k, getattr(self, k)) for k in STATS if getattr(self, k) is not None]


def layer_moments(
    h: torch.Tensor,
    kind: LayerKind,
    patch: int | None,
    groups: torch.Tensor | None = None,
    num_groups: int | None = None,
) -> Moments:
    """The statistics EDC matches at one hook: channel moments, plus patch moments at Conv hooks (``patch`` set)."""
    mean, var = channel_moments(h, groups, num_groups)
    if kind != "conv" or patch is None:
        return Moments(mean, var)
    pm, pv = patch_moments(h, patch, groups, num_groups)
    return Moments(mean, var, pm, pv)


__all__ = ["STATS", "Moments", "layer_moments", "patch_grid", "patch_moments", "to_patches"]
