"""One Minimax fine-tuning step's losses: noise, label drop, the hybrid loss, x̂₀ and the minimax terms.

Spec ``minimax.md`` §3.1, for a batch of clean samples z₀ (VAE latents, or pixels in [−1, 1] on the pixel path),
their subset-local labels and their base-model labels:

1. t ~ U{0, …, 999}, ε ~ N(0, I), z_t = ``add_noise(z₀, ε, t)``; then one label-drop draw per sample (p = 0.1) to
   the null class. Draws come from one CPU generator in this order (the original's: t, then ε inside the loss, then
   the drop inside the model's label embedder).
2. The model runs in train mode on (z_t, t, dropped labels); L_diff is the per-sample hybrid loss averaged over the
   batch (:func:`~.schedule.denoising_loss`).
3. x̂₀ from the live ε̂; with a memory, the minimax terms against it (:func:`~.minimax.minimax_terms`), which also
   pushes the batch into the memories, keyed by local label (dropped samples included).
4. total = L_diff + λ_r·L_r + λ_d·L_d. With ``memory=None`` the step is plain diffusion fine-tuning; with a memory
   and λ_r = λ_d = 0 it is the same computation bit for bit (the terms are computed for the memories and the log,
   and only enter through ×0).

The caller does backward, the optimizer step and the EMA update (§3.3: AdamW lr 1e-3, weight decay 0, constant lr).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from ddbench.ops.diffusion.labels import LABEL_DROP, drop_labels
from ddbench.ops.diffusion.minimax import LAMBDA_D, LAMBDA_R, MinimaxMemory, minimax_terms
from ddbench.ops.diffusion.schedule import NUM_TRAIN_TIMESTEPS, ProcessTables, denoising_loss

if TYPE_CHECKING:
    from diffusers import DDPMScheduler


class StepLosses(NamedTuple):
    """The parts of one step's loss. ``total`` carries the gradient; the others are for logging and tests.

    Attributes:
        total: L_diff + λ_r·L_r + λ_d·L_d.
        diffusion: L_diff (batch mean of MSE + VB).
        mse, vb: batch means of the two parts of L_diff.
        representativeness, diversity: Σ_c L_·,c / K (0 without a memory).
        x0_pred: the detached x̂₀ of the batch.
        dropped: which samples were conditioned on the null class.
        t: the drawn timesteps.
    """

    total: torch.Tensor
    diffusion: torch.Tensor
    mse: torch.Tensor
    vb: torch.Tensor
    representativeness: torch.Tensor
    diversity: torch.Tensor
    x0_pred: torch.Tensor
    dropped: torch.Tensor
    t: torch.Tensor


def finetune_losses(
    model: nn.Module,
    z0: torch.Tensor,
    local_labels: torch.Tensor,
    cond_labels: torch.Tensor,
    *,
    scheduler: DDPMScheduler,
    tables: ProcessTables,
    num_classes: int,
    generator: torch.Generator,
    memory: MinimaxMemory | None = None,
    lambda_r: float = LAMBDA_R,
    lambda_d: float = LAMBDA_D,
    label_drop: float = LABEL_DROP,
) -> StepLosses:
    """The losses of one fine-tuning step (forward only; the caller calls ``total.backward()``).

    Args:
        model: a diffusers denoiser called as ``model(z_t, t, class_labels=y).sample`` with shared conditioning
            and no built-in label dropout (:func:`~.models.build_dit`), in train mode.
        z0: clean samples ``[B, C, H, W]`` on the model's device.
        local_labels: ``[B]`` subset-local labels (memory keys).
        cond_labels: ``[B]`` base-model labels (the condition; :func:`~.labels.base_label_ids`).
        scheduler: the training scheduler (:func:`~.schedule.training_scheduler`), for ``add_noise``.
        tables: :class:`~.schedule.ProcessTables` of the same scheduler.
        num_classes: classes of the base model's label space; the null id is ``num_classes``.
        generator: CPU generator for t, ε and the label drop.
        memory: the minimax memories, or None for plain fine-tuning.
        lambda_r, lambda_d: weights of the representativeness and diversity terms.
        label_drop: probability of the null condition.
    """
    device = z0.device
    b = z0.shape[0]
    t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (b,), generator=generator).to(device)
    noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype).to(device)
    cond = drop_labels(cond_labels.to(device), num_classes, generator=generator, p=label_drop)
    z_t = scheduler.add_noise(z0, noise, t)
    output = model(z_t, t, class_labels=cond.labels).sample
    parts = denoising_loss(output, z0, z_t, t, noise, tables)
    diffusion = parts.per_sample.mean()
    zero = diffusion.new_zeros(())
    r = d = zero
    total = diffusion
    if memory is not None:
        terms = minimax_terms(parts.x0_pred, z0, local_labels, memory)
        r, d = terms.representativeness, terms.diversity
        total = diffusion + lambda_r * r + lambda_d * d
    return StepLosses(
        total=total,
        diffusion=diffusion,
        mse=parts.mse.mean().detach(),
        vb=parts.vb.mean().detach(),
        representativeness=r.detach(),
        diversity=d.detach(),
        x0_pred=parts.x0_pred.detach(),
        dropped=cond.mask,
        t=t,
    )


__all__ = ["StepLosses", "finetune_losses"]
