"""The diffusion process of Minimax / DiT: schedulers, x̂₀ from ε̂, and the hybrid MSE + VB training loss.

Process (spec ``minimax.md`` §1): 1000 steps, linear β from 1e-4 to 0.02, ε-prediction, learned-range variance
("learn_sigma": the model emits 2C channels, C for ε and C for the variance interpolation v ∈ [−1, 1]).

* Training noise is diffusers' ``DDPMScheduler.add_noise``. The scheduler settings differ from the diffusers
  defaults in three places that change numbers (§8.2.15): ``variance_type='learned_range'`` (default
  'fixed_small'), ``clip_sample=False`` (default True; the original samples with clip_denoised=False) and
  ``timestep_spacing='linspace'`` (default 'leading'), which reproduces guided-diffusion's
  ``space_timesteps(1000, "50")`` = {0, 20, 41, …, 999} exactly.
* Sampling (§4) is the ancestral DDPM step of that respaced chain, which ``DDPMScheduler.step`` computes with
  these settings: the previous timestep is looked up in the schedule (uneven 20/21 gaps), β of the respaced chain is
  1 − ᾱ_t/ᾱ_prev, and the learned-range log-variance interpolates log β and the log posterior variance. DDIM
  (η = 0, ``'trailing'`` spacing because 'linspace' uses the wrong ᾱ_prev in diffusers, §8.2.16) is the flagged,
  cheaper, deterministic alternative; it sees only the ε channels.
* The training loss is guided-diffusion's "hybrid" loss that DiT uses: per sample, mean-squared ε error plus the
  variational bound term with the predicted mean detached, so the VB term trains only the variance channels. It is
  the KL(q(x_{t−1}|x_t, x₀) ‖ p(x_{t−1}|x_t)) in bits per dimension, and at t = 0 the discretized-Gaussian decoder
  NLL (bins of width 2/255 on [−1, 1]). diffusers has no such loss, so it is written here from the formulas.
  Deviation: the Gaussian CDF of the decoder NLL is the exact one (``torch.special.ndtr``); guided-diffusion uses a
  tanh approximation. It only touches the t = 0 draws (1 in 1000) and only the variance channels.

x̂₀ (:func:`predict_x0`) is the reconstruction the minimax terms compare: x̂₀ = x_t/√ᾱ_t − √(1/ᾱ_t − 1)·ε̂,
unclipped, with the gradient flowing through ε̂ (§3.1 step 5; the slides' ẑ = z_t − ε_θ is a simplification).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import torch

from ddbench.ops.diffusion import require_diffusers

if TYPE_CHECKING:
    from diffusers import DDIMScheduler, DDPMScheduler

NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02
SAMPLING_STEPS = 50

SamplerKind = Literal["ddpm", "ddim"]


def _process_kwargs() -> dict:
    return {
        "num_train_timesteps": NUM_TRAIN_TIMESTEPS,
        "beta_start": BETA_START,
        "beta_end": BETA_END,
        "beta_schedule": "linear",
        "prediction_type": "epsilon",
        "clip_sample": False,
    }


def training_scheduler(*, learned_variance: bool = True) -> DDPMScheduler:
    """The 1000-step DDPM scheduler of spec §1 / §9.1 (``add_noise`` for training, ``step`` after ``set_timesteps``).

    Args:
        learned_variance: the model predicts the variance interpolation (2C output channels, 'learned_range');
            False gives the fixed posterior variance ('fixed_small') for a C-channel model.
    """
    diffusers = require_diffusers()
    return diffusers.DDPMScheduler(
        **_process_kwargs(),
        variance_type="learned_range" if learned_variance else "fixed_small",
        timestep_spacing="linspace",
    )


def sampling_scheduler(
    kind: SamplerKind = "ddpm", steps: int = SAMPLING_STEPS, *, learned_variance: bool = True
) -> DDPMScheduler | DDIMScheduler:
    """A scheduler ready to sample with ``steps`` steps: the respaced ancestral DDPM chain (default) or DDIM.

    ``"ddpm"`` is the original sampler (``p_sample_loop`` over ``space_timesteps(1000, "50")``); ``"ddim"`` is
    DDIM with η = 0 over 'trailing' timesteps (999, 979, …, 19), a documented deviation (§9.1).
    """
    diffusers = require_diffusers()
    if kind == "ddpm":
        scheduler = training_scheduler(learned_variance=learned_variance)
    elif kind == "ddim":
        scheduler = diffusers.DDIMScheduler(**_process_kwargs(), timestep_spacing="trailing", set_alpha_to_one=True)
    else:
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {kind!r}")
    scheduler.set_timesteps(steps)
    return scheduler


@dataclass(frozen=True)
class ProcessTables:
    """Per-timestep coefficients of the 1000-step process in float64 (guided-diffusion keeps them in float64 too).

    Attributes:
        alphas_cumprod: ᾱ_t.
        alphas_cumprod_prev: ᾱ_{t−1}, with ᾱ_{−1} = 1.
        betas: β_t.
        posterior_log_variance: log β̃_t, β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), with β̃_0 (= 0) replaced by β̃_1
            ("clipped"), the lower end of the learned range.
        posterior_coef_x0, posterior_coef_xt: μ̃_t = coef_x0 · x₀ + coef_xt · x_t.
    """

    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    betas: torch.Tensor
    posterior_log_variance: torch.Tensor
    posterior_coef_x0: torch.Tensor
    posterior_coef_xt: torch.Tensor

    @classmethod
    def from_scheduler(cls, scheduler: DDPMScheduler) -> ProcessTables:
        """Tables of ``scheduler``'s training chain (its β, not a respaced one)."""
        betas = scheduler.betas.double()
        abar = torch.cumprod(1.0 - betas, 0)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
        return cls(
            alphas_cumprod=abar,
            alphas_cumprod_prev=abar_prev,
            betas=betas,
            posterior_log_variance=post_log_var,
            posterior_coef_x0=betas * abar_prev.sqrt() / (1.0 - abar),
            posterior_coef_xt=(1.0 - abar_prev) * (1.0 - betas).sqrt() / (1.0 - abar),
        )


def _at(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``table[t]`` as ``[B, 1, …, 1]`` in ``like``'s dtype and device (float64 lookup, then one cast)."""
    return table.to(t.device)[t].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, tables: ProcessTables) -> torch.Tensor:
    """x̂₀ = x_t/√ᾱ_t − √(1/ᾱ_t − 1)·ε̂, unclipped and differentiable in ε̂ (and x_t).

    Args:
        x_t: noisy samples ``[B, C, H, W]``.
        eps: predicted noise, same shape (the ε channels of the model output).
        t: ``[B]`` integer timesteps of the 1000-step chain.
        tables: the process coefficients.
    """
    abar = tables.alphas_cumprod
    return _at(abar.rsqrt(), t, x_t) * x_t - _at((1.0 / abar - 1.0).sqrt(), t, x_t) * eps


class DenoisingLoss(NamedTuple):
    """Per-sample parts of the hybrid loss (each ``[B]``) and the differentiable x̂₀.

    ``mse`` is the mean over all dims of (ε − ε̂)²; ``vb`` the variational-bound term in bits per dim (0 for a model
    without variance channels); ``x0_pred`` is :func:`predict_x0` of the live ε̂, which the minimax terms use.
    """

    mse: torch.Tensor
    vb: torch.Tensor
    x0_pred: torch.Tensor

    @property
    def per_sample(self) -> torch.Tensor:
        return self.mse + self.vb


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2).square() * torch.exp(-logvar2)
    )


def discretized_gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Elementwise −log P(x) in nats of a Gaussian discretized into 256 bins of width 2/255 on [−1, 1].

    The outermost bins extend to ±∞ (x < −0.999 or x > 0.999), as in guided-diffusion's decoder likelihood.
    """
    inv_std = torch.exp(-log_scale)
    upper = torch.special.ndtr(inv_std * (x - mean + 1.0 / 255.0))
    lower = torch.special.ndtr(inv_std * (x - mean - 1.0 / 255.0))
    log_upper = torch.log(upper.clamp(min=1e-12))
    log_one_minus_lower = torch.log((1.0 - lower).clamp(min=1e-12))
    log_delta = torch.log((upper - lower).clamp(min=1e-12))
    log_p = torch.where(x < -0.999, log_upper, torch.where(x > 0.999, log_one_minus_lower, log_delta))
    return -log_p


def learned_range_log_variance(v: torch.Tensor, t: torch.Tensor, tables: ProcessTables) -> torch.Tensor:
    """log σ² = frac·log β_t + (1 − frac)·log β̃_t with frac = (v + 1)/2 (IDDPM's learned range)."""
    frac = (v + 1.0) / 2.0
    return frac * _at(tables.betas.log(), t, v) + (1.0 - frac) * _at(tables.posterior_log_variance, t, v)


def denoising_loss(
    output: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    tables: ProcessTables,
) -> DenoisingLoss:
    """DiT's hybrid loss per sample: MSE(ε̂, ε) + VB (predicted mean detached), and the live x̂₀.

    Args:
        output: model output ``[B, C, …]`` (ε only) or ``[B, 2C, …]`` (ε, then the variance interpolation v).
        x0: clean samples ``[B, C, …]``.
        x_t: their noised versions at ``t``.
        t: ``[B]`` timesteps of the 1000-step chain.
        noise: the ε that made ``x_t``.
        tables: the process coefficients.
    """
    c = x0.shape[1]
    if output.shape[1] not in (c, 2 * c):
        raise ValueError(f"model output has {output.shape[1]} channels; expected {c} (ε) or {2 * c} (ε, variance)")
    eps = output[:, :c]
    mse = (noise - eps).square().flatten(1).mean(1)
    x0_pred = predict_x0(x_t, eps, t, tables)
    if output.shape[1] == c:
        return DenoisingLoss(mse, torch.zeros_like(mse), x0_pred)
    log_var = learned_range_log_variance(output[:, c:], t, tables)
    coef_x0, coef_xt = _at(tables.posterior_coef_x0, t, x_t), _at(tables.posterior_coef_xt, t, x_t)
    mean = coef_x0 * predict_x0(x_t, eps.detach(), t, tables) + coef_xt * x_t
    true_mean = coef_x0 * x0 + coef_xt * x_t
    kl = normal_kl(true_mean, _at(tables.posterior_log_variance, t, x_t), mean, log_var).flatten(1).mean(1)
    nll = discretized_gaussian_nll(x0, mean, 0.5 * log_var).flatten(1).mean(1)
    vb = torch.where(t.to(kl.device) == 0, nll, kl) / math.log(2.0)
    return DenoisingLoss(mse, vb, x0_pred)


__all__ = [
    "BETA_END",
    "BETA_START",
    "NUM_TRAIN_TIMESTEPS",
    "SAMPLING_STEPS",
    "DenoisingLoss",
    "ProcessTables",
    "SamplerKind",
    "denoising_loss",
    "discretized_gaussian_nll",
    "learned_range_log_variance",
    "normal_kl",
    "predict_x0",
    "sampling_scheduler",
    "training_scheduler",
]
