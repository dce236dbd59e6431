"""EDC's flatness regularisation on EMA images, L'_FR (spec ``edc.md`` §3).

X^S_EMA is an exponential moving average of the synthetic images, X_EMA ← β·X_EMA + (1 − β)·X (β = 0.99), started
at X⁰. Each synthesis iteration the current observer sees the *same* augmented view of X and of X_EMA, the EMA
pass runs without gradient (and with the statistic hooks disabled), and the loss is a KL divergence between the
two temperature-τ (τ = 4) softmaxes, weighted 0.25. The EMA is updated with the pre-step X, after the EMA pass.
After t updates, X_EMA = β^t·X⁰ + Σ_{s<t} (1 − β)·β^{t−1−s}·X^s.

Paper and code differ, and both are available:

* ``order="paper"`` (DEFAULT, paper Eq.): KL(p_cur ‖ p_EMA); ``order="code"`` ([C]): KL(p_EMA ‖ p_cur), the EMA
  distribution as the target;
* ``reduction="batchmean"`` (DEFAULT): sum over classes, mean over the batch; ``reduction="mean"`` ([C]):
  PyTorch's element mean, i.e. divided by B·K, so K times smaller. No τ² factor either way.

Gradient flows only through the current logits. [C]'s released scripts never enable the term (and its ImageNet
branches hard-code it to 0); Table 4 reports +0.8 top-1 for ResNet-18 on ImageNet-1k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

KLOrder = Literal["paper", "code"]
KLReduction = Literal["batchmean", "mean"]


def flatness_kl(
    logits: torch.Tensor,
    ema_logits: torch.Tensor,
    tau: float = 4.0,
    *,
    order: KLOrder = "paper",
    reduction: KLReduction = "batchmean",
) -> torch.Tensor:
    """KL between softmax(logits/τ) of the current images and softmax(ema_logits/τ) of the EMA images.

    ``ema_logits`` is detached. ``order="paper"`` is KL(p_cur ‖ p_EMA), ``"code"`` KL(p_EMA ‖ p_cur).
    """
    log_p = F.log_softmax(logits.float() / tau, dim=1)
    log_q = F.log_softmax(ema_logits.detach().float() / tau, dim=1)
    if order == "paper":
        pointwise = log_p.exp() * (log_p - log_q)
    elif order == "code":
        pointwise = log_q.exp() * (log_q - log_p)
    else:
        raise ValueError(f"order must be 'paper' or 'code', got {order!r}")
    if reduction == "batchmean":
        return pointwise.sum() / logits.shape[0]
    if reduction == "mean":
        return pointwise.mean()
    raise ValueError(f"reduction must be 'batchmean' or 'mean', got {reduction!r}")


class FlatnessEMA:
    """The EMA copy of the synthetic images and the L'_FR loss against it.

    Usage per iteration (the observer's hooks disabled for the EMA pass)::

        view, view_ema = same_views(augment, [x, flat.images], generator)
        with torch.no_grad():
            ema_logits = observer(view_ema)
        flat.update(x)                        # pre-step x
        loss = ... + weight * flat.loss(observer(view), ema_logits)

    Args:
        x0: the initial synthetic images (copied and detached).
        beta: EMA decay β (0.99).
        tau: softmax temperature τ (4).
        order, reduction: see :func:`flatness_kl`.
    """

    def __init__(
        self,
        x0: torch.Tensor,
        beta: float = 0.99,
        tau: float = 4.0,
        *,
        order: KLOrder = "paper",
        reduction: KLReduction = "batchmean",
    ) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"EMA decay beta must be in [0, 1), got {beta}")
        self.images = x0.detach().clone()
        self.beta, self.tau, self.order, self.reduction = beta, tau, order, reduction
        self.steps = 0

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """X_EMA ← β·X_EMA + (1 − β)·X, with X detached."""
        self.images.mul_(self.beta).add_(x.detach().to(self.images.dtype), alpha=1.0 - self.beta)
        self.steps += 1

    def loss(self, logits: torch.Tensor, ema_logits: torch.Tensor) -> torch.Tensor:
        """:func:`flatness_kl` with this helper's τ, order and reduction."""
        return flatness_kl(logits, ema_logits, self.tau, order=self.order, reduction=self.reduction)


def same_views(
    fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    xs: Sequence[torch.Tensor],
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """Apply a random augmentation ``fn(x, generator)`` to each of ``xs`` with the *same* random draws.

    The generator state is replayed for every input, so each sees identical crops and flips; afterwards the
    generator stands where one call would have left it. (One batch-shared draw per iteration, as [C].)
    """
    state = generator.get_state()
    out = []
    for x in xs:
        generator.set_state(state)
        out.append(fn(x, generator))
    return out


__all__ = ["FlatnessEMA", "KLOrder", "KLReduction", "flatness_kl", "same_views"]
