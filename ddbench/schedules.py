"""Per-epoch learning-rate multipliers of EDC's post-evaluation (spec ``edc.md`` §4.1), as pure functions.

Every schedule here is stepped once per epoch (LambdaLR.step() per epoch upstream), with a 0-based epoch
i ∈ [0, N) and ζ ≥ 1 the "slowdown coefficient" (ζ = 1 is plain cosine):

* :func:`smoothing` (EDC, paper Eq. and Fig. 6): μ(i) = ½·(1 + cos(π·i/(ζ·N))); ζ = 2 ends at ≈ 0.50.
* :func:`smoothing_linear`: μ(i) = 1 − i/(ζ·N), what [C]'s ImageNet-1k trainer really runs (an ``if``/``if``
  fall-through builds a second, linear LambdaLR; §4.1 caveat).
* :func:`ssrs` ([P] Eq. 33, [C] ``--ls-type cos2``): the smoothing cosine up to 5N/6, then
  ½·(1 + cos(5π/(6ζ)))·(1 − i/N), a deliberate ≈6× drop at 5N/6 (ζ = 2: 0.63 → 0.10).

This module sits in the bottom layer (it imports nothing of ddbench), so :class:`ddbench.protocol.Protocol` can
call it; ``Protocol.lr_factor`` implements the first two inline today.
"""

from __future__ import annotations

import math


def _check(epoch: int, epochs: int, zeta: float) -> None:
    if epochs < 1 or not 0 <= epoch < epochs:
        raise ValueError(f"epoch must be in [0, {epochs}), got {epoch}")
    if zeta < 1:
        raise ValueError(f"the slowdown coefficient zeta must be >= 1, got {zeta}")


def smoothing(epoch: int, epochs: int, zeta: float = 2.0) -> float:
    """EDC's smoothing schedule ½·(1 + cos(π·i/(ζN)))."""
    _check(epoch, epochs, zeta)
    return 0.5 * (1.0 + math.cos(math.pi * epoch / (zeta * epochs)))


def smoothing_linear(epoch: int, epochs: int, zeta: float = 2.0) -> float:
    """The linear variant 1 − i/(ζN) that [C]'s ImageNet-1k trainer runs."""
    _check(epoch, epochs, zeta)
    return 1.0 - epoch / (zeta * epochs)


def ssrs(epoch: int, epochs: int, zeta: float = 2.0) -> float:
    """SSRS: :func:`smoothing` for i ≤ 5N/6, then ½·(1 + cos(5π/(6ζ)))·(1 − i/N).

    The boundary is tested in integers (6i ≤ 5N), so i = 5N/6 exactly still takes the cosine branch.
    """
    _check(epoch, epochs, zeta)
    if 6 * epoch <= 5 * epochs:
        return smoothing(epoch, epochs, zeta)
    return 0.5 * (1.0 + math.cos(5.0 * math.pi / (6.0 * zeta))) * (1.0 - epoch / epochs)


__all__ = ["smoothing", "smoothing_linear", "ssrs"]
