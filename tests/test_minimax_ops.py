"""Conformance tests of the Minimax diffusion building blocks (spec ``minimax.md`` §10) and IDC's colour augmentation.

Each test is built so that a plausible mistake fails it: hand-made cosine cases with a unique min/max, closed-form
gradients, an independent float64 implementation of guided-diffusion's respaced step, bit-for-bit comparisons of
optimizer steps, and the §2 label table typed from the spec. Tests that need diffusers skip without the
``ddbench[diffusion]`` extra; the rest (memories, terms, labels, IPC subsets, augmentation) run anywhere.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from ddbench.data.catalog import IMAGEIDC_WNIDS, IMAGENETTE_WNIDS, IMAGEWOOF_WNIDS
from ddbench.errors import UserError
from ddbench.ops import augment as A
from ddbench.ops.diffusion import require_diffusers
from ddbench.ops.diffusion.labels import base_label_ids, drop_labels, imagenet_class_index, null_class_id
from ddbench.ops.diffusion.minimax import MinimaxMemory, cosine_matrix, minimax_terms
from ddbench.ops.diffusion.sampling import guide, ipc_permutations, ipc_subset

needs_diffusers = pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="needs ddbench[diffusion]")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unit_with_cos(p: torch.Tensor, cos: float, other: torch.Tensor) -> torch.Tensor:
    """A unit vector with cosine ``cos`` to the unit vector ``p``, in the plane of ``p`` and ``other``."""
    q = other - (other @ p) * p
    q = q / q.norm()
    return cos * p + math.sqrt(1 - cos**2) * q


# -- §10.1 x̂₀ reconstruction ------------------------------------------------------------------------------------------
@needs_diffusers
def test_x0_reconstruction_with_an_oracle_and_its_gradient():
    from ddbench.ops.diffusion.schedule import ProcessTables, predict_x0, training_scheduler

    scheduler = training_scheduler()
    tables = ProcessTables.from_scheduler(scheduler)
    g = gen(1)
    t = torch.tensor([0, 1, 20, 500, 998, 999])
    x0 = torch.randn(6, 3, 8, 8, generator=g)
    eps = torch.randn(6, 3, 8, 8, generator=g)
    x_t = scheduler.add_noise(x0, eps, t)
    eps_hat = eps.clone().requires_grad_(True)
    x0_hat = predict_x0(x_t, eps_hat, t, tables)
    torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=0)  # 1/√ᾱ ≈ 157 at t = 999 amplifies float32 rounding
    x0_hat.sum().backward()
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[t.numpy()]
    expected = -np.sqrt(1 / abar - 1)  # d x̂₀ / d ε̂, the same for every element of a sample
    grad = eps_hat.grad.flatten(1)
    assert torch.equal(grad, grad[:, :1].expand_as(grad))
    np.testing.assert_allclose(grad[:, 0].numpy(), expected, rtol=1e-5)


# -- hybrid loss (spec §1) --------------------------------------------------------------------------------------------
@needs_diffusers
def test_vb_term_is_the_posterior_kl_in_bits_and_trains_only_the_variance():
    from ddbench.ops.diffusion.schedule import ProcessTables, denoising_loss, training_scheduler

    scheduler = training_scheduler()
    tables = ProcessTables.from_scheduler(scheduler)
    g = gen(2)
    t = torch.tensor([1, 7, 300, 999])
    x0 = torch.randn(4, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 3, 4, 4, generator=g, dtype=torch.float64)
    x_t = scheduler.add_noise(x0, eps, t)
    # oracle ε̂ and v = −1 (the posterior variance itself): the model's p(x_{t−1}|x_t) is the true posterior
    exact = denoising_loss(torch.cat([eps, -torch.ones_like(eps)], 1), x0, x_t, t, eps, tables)
    torch.testing.assert_close(exact.vb, torch.zeros(4, dtype=torch.float64), atol=1e-7, rtol=0)
    assert torch.equal(exact.mse, torch.zeros(4, dtype=torch.float64))

    # random ε̂ and v against torch.distributions, with the posterior written from DDPM's Eq. 7
    eps_hat = torch.randn(4, 3, 4, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    v = (torch.rand(4, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    loss = denoising_loss(torch.cat([eps_hat, v], 1), x0, x_t, t, eps, tables)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    ab, ab_prev, beta = abar[t], abar[t - 1], betas[t]
    bshape = (-1, 1, 1, 1)
    coef0 = (ab_prev.sqrt() * beta / (1 - ab)).view(bshape)
    coeft = ((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)).view(bshape)
    post_var = (beta * (1 - ab_prev) / (1 - ab)).view(bshape)
    x0_hat = (x_t - (1 - ab).sqrt().view(bshape) * eps_hat.detach()) / ab.sqrt().view(bshape)
    frac = (v.detach() + 1) / 2
    var = torch.exp(frac * beta.log().view(bshape) + (1 - frac) * post_var.log())
    q = torch.distributions.Normal(coef0 * x0 + coeft * x_t, post_var.sqrt().expand_as(x0))
    p = torch.distributions.Normal(coef0 * x0_hat + coeft * x_t, var.sqrt())
    kl_bits = torch.distributions.kl_divergence(q, p).flatten(1).mean(1) / math.log(2)
    torch.testing.assert_close(loss.vb.detach(), kl_bits, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loss.mse.detach(), (eps_hat.detach() - eps).square().flatten(1).mean(1))

    # the VB term sees the mean detached: its gradient reaches v only; the MSE reaches ε̂ only
    vb_eps, vb_v = torch.autograd.grad(loss.vb.sum(), [eps_hat, v], retain_graph=True)
    assert torch.equal(vb_eps, torch.zeros_like(vb_eps)) and vb_v.abs().sum() > 0
    mse_eps, mse_v = torch.autograd.grad(loss.mse.sum(), [eps_hat, v])
    assert torch.equal(mse_v, torch.zeros_like(mse_v)) and mse_eps.abs().sum() > 0


@needs_diffusers
def test_vb_at_t0_is_the_discretized_decoder_nll():
    from ddbench.ops.diffusion.schedule import ProcessTables, denoising_loss, training_scheduler

    scheduler = training_scheduler()
    tables = ProcessTables.from_scheduler(scheduler)
    g = gen(3)
    x0 = torch.randint(0, 256, (2, 3, 4, 4), generator=g).double() / 127.5 - 1  # pixel bin centres
    eps = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.zeros(2, dtype=torch.long)
    x_t = scheduler.add_noise(x0, eps, t)
    v = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps_hat = eps + 0.3 * torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    loss = denoising_loss(torch.cat([eps_hat, v], 1), x0, x_t, t, eps, tables)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    post_var1 = betas[1] * (1 - abar[0]) / (1 - abar[1])  # the clipped lower end at t = 0
    frac = (v + 1) / 2
    std = torch.exp(0.5 * (frac * betas[0].log() + (1 - frac) * post_var1.log()))
    # at t = 0 the posterior mean coefficient of x̂₀ is 1 and that of x_t is 0
    mean = (x_t - (1 - abar[0]).sqrt() * eps_hat) / abar[0].sqrt()
    normal = torch.distributions.Normal(mean, std)
    hi = torch.where(x0 > 0.999, torch.ones_like(x0), normal.cdf(x0 + 1 / 255))
    lo = torch.where(x0 < -0.999, torch.zeros_like(x0), normal.cdf(x0 - 1 / 255))
    nll_bits = -torch.log((hi - lo).clamp(min=1e-12)).flatten(1).mean(1) / math.log(2)
    torch.testing.assert_close(loss.vb, nll_bits, atol=1e-6, rtol=1e-6)


# -- §10.2–10.4 minimax terms and memories ----------------------------------------------------------------------------
def test_terms_on_hand_made_cosines():
    g = gen(4)
    p = torch.randn(16, generator=g, dtype=torch.float64)
    p = p / p.norm()
    others = torch.randn(4, 16, generator=g, dtype=torch.float64)
    real = torch.stack([unit_with_cos(p, 0.9, others[0]), unit_with_cos(p, 0.2, others[1])])
    pred = torch.stack([unit_with_cos(p, 0.5, others[2]), unit_with_cos(p, 0.95, others[3])])
    memory = MinimaxMemory()
    memory.real[3], memory.pred[3] = 7.0 * real, 0.5 * pred  # cosine is scale-free
    terms = minimax_terms(p[None].clone(), p[None], torch.tensor([3]), memory, update=False)
    assert terms.num_classes == 1
    assert terms.representativeness.item() == pytest.approx(1 - 0.2, abs=1e-12)
    assert terms.diversity.item() == pytest.approx(0.95, abs=1e-12)


def test_only_the_row_of_the_arg_min_and_arg_max_pair_gets_gradient():
    basis = torch.linalg.qr(torch.randn(12, 12, generator=gen(5), dtype=torch.float64)).Q.T  # orthonormal rows
    p = basis[:2]  # two prediction rows of one class
    # cos(p_i, real_j) = sims[i, j]: the global min 0.1 is row 0's; row 1's own minimum is 0.3, so a mean of
    # per-row minima would be 1 − 0.2 and would give both rows gradient
    sims = torch.tensor([[0.6, 0.1, 0.5], [0.5, 0.4, 0.3]], dtype=torch.float64)
    rest = (1 - sims.square().sum(0)).sqrt()
    real = sims.T @ basis[:2] + rest[:, None] * basis[2:5]
    pred_mem = (0.2 * basis[0] + 0.9 * basis[1] + math.sqrt(1 - 0.04 - 0.81) * basis[5])[None]  # row 1: the arg max
    memory = MinimaxMemory()
    memory.real[0], memory.pred[0] = real, pred_mem
    torch.testing.assert_close(cosine_matrix(p, real), sims)
    rows = p.clone().requires_grad_(True)
    terms = minimax_terms(rows, p, torch.tensor([0, 0]), memory, update=False)
    assert terms.representativeness.item() == pytest.approx(1 - 0.1, abs=1e-12)
    assert terms.diversity.item() == pytest.approx(0.9, abs=1e-12)
    (gr,) = torch.autograd.grad(terms.representativeness, rows, retain_graph=True)
    assert gr[0].abs().sum() > 0 and torch.equal(gr[1], torch.zeros_like(gr[1]))
    (gd,) = torch.autograd.grad(terms.diversity, rows)
    assert gd[1].abs().sum() > 0 and torch.equal(gd[0], torch.zeros_like(gd[0]))


def test_limits_of_the_terms():
    g = gen(6)
    p = torch.randn(1, 10, generator=g, dtype=torch.float64)
    memory = MinimaxMemory()
    memory.real[0] = torch.cat([2 * p, 0.5 * p])  # every pair at cos 1
    memory.pred[0] = torch.cat([torch.randn(3, 10, generator=g, dtype=torch.float64), p])  # p itself is stored
    terms = minimax_terms(p, p, torch.tensor([0]), memory, update=False)
    assert terms.representativeness.item() == pytest.approx(0.0, abs=1e-12)
    assert terms.diversity.item() == pytest.approx(1.0, abs=1e-12)
    memory.real[0] = torch.cat([memory.real[0], p + 0.1 * torch.randn(1, 10, generator=g, dtype=torch.float64)])
    assert minimax_terms(p, p, torch.tensor([0]), memory, update=False).representativeness.item() > 1e-6


def test_empty_memory_gives_zero_and_still_counts_in_k():
    g = gen(7)
    x = torch.randn(4, 3, 2, 2, generator=g)
    labels = torch.tensor([0, 1, 0, 1])
    memory = MinimaxMemory()
    first = minimax_terms(x, x, labels, memory)
    assert first.num_classes == 2 and first.representativeness.item() == 0 and first.diversity.item() == 0
    assert 0 in memory and 1 in memory
    # class 0 has memories now, class 5 does not: the batch term is class 0's term divided by K = 2
    y = torch.randn(3, 3, 2, 2, generator=g)
    alone = minimax_terms(y[:2], y[:2], torch.tensor([0, 0]), copy.deepcopy(memory), update=False)
    mixed = minimax_terms(y, y, torch.tensor([0, 0, 5]), memory, update=False)
    assert mixed.num_classes == 2
    assert mixed.representativeness.item() == pytest.approx(alone.representativeness.item() / 2, rel=1e-6)
    assert mixed.diversity.item() == pytest.approx(alone.diversity.item() / 2, rel=1e-6)


def test_memory_is_fifo_per_class_detached_and_capped():
    memory = MinimaxMemory(capacity=64)
    rows = torch.arange(70, dtype=torch.float32)[:, None, None].expand(70, 2, 3).clone().requires_grad_(True)
    for chunk in rows.split([30, 25, 15]):
        memory.push(4, chunk, 2 * chunk)
    memory.push(9, rows[:3], rows[:3])
    assert memory.real[4].shape == (64, 6) and memory.pred[4].shape == (64, 6)
    assert memory.real[4][:, 0].tolist() == list(range(6, 70))  # the oldest 6 left first, order kept
    assert memory.pred[4][:, 0].tolist() == [2.0 * i for i in range(6, 70)]
    assert memory.real[9][:, 0].tolist() == [0, 1, 2]  # other classes untouched by class 4's pushes
    assert not memory.real[4].requires_grad and not memory.pred[4].requires_grad
    assert 4 in memory and 9 in memory and 5 not in memory
    restored = MinimaxMemory.from_state_dict(memory.state_dict())
    assert torch.equal(restored.real[4], memory.real[4]) and restored.capacity == 64


@needs_diffusers
def test_step_fills_memories_with_clean_real_samples_and_detached_predictions(smoke_dit):
    from ddbench.ops.diffusion.finetune import finetune_losses
    from ddbench.ops.diffusion.schedule import ProcessTables, training_scheduler

    scheduler = training_scheduler()
    z0 = torch.rand(6, 3, 32, 32, generator=gen(8)) * 2 - 1
    local = torch.tensor([2, 0, 2, 1, 0, 2])
    memory = MinimaxMemory()
    model = copy.deepcopy(smoke_dit).train()
    out = finetune_losses(model, z0, local, local, scheduler=scheduler, tables=ProcessTables.from_scheduler(scheduler),
                          num_classes=10, generator=gen(9), memory=memory, label_drop=1.0)  # fmt: skip
    assert out.dropped.all()  # every condition dropped, yet every sample entered its local class's memories
    for c in (0, 1, 2):
        assert torch.equal(memory.real[c], z0[local == c].flatten(1))  # z₀, not z_t
        assert torch.equal(memory.pred[c], out.x0_pred[local == c].flatten(1))
        assert not memory.pred[c].requires_grad
    assert not torch.allclose(out.x0_pred, z0, atol=0.1)  # the stored predictions are the model's, not z₀


# -- §10.5 λ = 0 is plain fine-tuning ---------------------------------------------------------------------------------
@needs_diffusers
def test_zero_lambdas_equal_plain_finetuning_bit_for_bit(smoke_dit):
    from ddbench.ops.diffusion.finetune import finetune_losses
    from ddbench.ops.diffusion.models import add_difffit_gammas, mark_trainable
    from ddbench.ops.diffusion.schedule import ProcessTables, training_scheduler

    scheduler = training_scheduler()
    tables = ProcessTables.from_scheduler(scheduler)
    base = copy.deepcopy(smoke_dit)
    add_difffit_gammas(base)
    data = torch.rand(2, 8, 3, 32, 32, generator=gen(10)) * 2 - 1
    local = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])

    def run(memory: MinimaxMemory | None, lam: float) -> list[list[torch.Tensor]]:
        model = copy.deepcopy(base).train()
        opt = torch.optim.AdamW(mark_trainable(model, "difffit"), lr=1e-3, weight_decay=0)
        g, states = gen(11), []
        for z0 in data:
            out = finetune_losses(model, z0, local, local + 3, scheduler=scheduler, tables=tables, num_classes=10,
                                  generator=g, memory=memory, lambda_r=lam, lambda_d=lam)  # fmt: skip
            opt.zero_grad()
            out.total.backward()
            opt.step()
            states.append([p.detach().clone() for p in model.parameters()])
        return states

    plain, zero, strong = run(None, 0.0), run(MinimaxMemory(), 0.0), run(MinimaxMemory(), 1.0)
    for step in range(2):
        assert all(torch.equal(a, b) for a, b in zip(plain[step], zero[step], strict=True))
    # the memories are empty at step 1, so even λ = 1 matches there; at step 2 the terms move the weights
    assert all(torch.equal(a, b) for a, b in zip(plain[0], strong[0], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(plain[1], strong[1], strict=True))


# -- §10.6 / §10.12 labels ---------------------------------------------------------------------------------------------
def test_class_mapping_of_the_imagenet_subsets():
    expected = {
        IMAGEWOOF_WNIDS: [193, 182, 258, 162, 155, 167, 159, 273, 207, 229],
        IMAGENETTE_WNIDS: [0, 217, 482, 491, 497, 566, 569, 571, 574, 701],
        IMAGEIDC_WNIDS: [452, 64, 374, 236, 993, 176, 882, 904, 503, 74],
    }
    for wnids, ids in expected.items():
        assert base_label_ids(wnids, "imagenet-1k").tolist() == ids
        assert base_label_ids(wnids, "own").tolist() == list(range(10))  # a base model of the subset's own classes
    assert imagenet_class_index("n01440764") == 0 and imagenet_class_index("n15075141") == 999
    with pytest.raises(KeyError):
        imagenet_class_index("n00000000")


def test_label_drop_uses_the_null_id_once_per_sample():
    labels = torch.arange(10).repeat(500)
    dropped = drop_labels(labels, 10, generator=gen(12))
    assert null_class_id(10) == 10
    assert torch.equal(dropped.labels[dropped.mask], torch.full((int(dropped.mask.sum()),), 10))
    assert torch.equal(dropped.labels[~dropped.mask], labels[~dropped.mask])
    assert abs(dropped.mask.float().mean().item() - 0.1) < 0.015  # 5000 draws: 4.5 standard deviations
    again = drop_labels(labels, 10, generator=gen(12))
    assert torch.equal(again.mask, dropped.mask)
    assert not drop_labels(labels, 10, generator=gen(12), p=0.0).mask.any()


@needs_diffusers
def test_one_label_drop_mask_shared_by_all_blocks(smoke_dit):
    from diffusers import DiTTransformer2DModel

    def lookups(model: nn.Module, labels: torch.Tensor) -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []
        tables = {id(m): m for m in model.modules() if isinstance(m, nn.Embedding)}
        handles = [m.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone())) for m in tables.values()]
        model.train()
        with torch.no_grad():
            model(torch.randn(64, 3, 32, 32), torch.randint(0, 1000, (64,)), class_labels=labels)
        for h in handles:
            h.remove()
        return seen

    labels = torch.arange(64) % 10
    dropped = drop_labels(labels, 10, generator=gen(13))
    assert dropped.mask.any()
    seen = lookups(copy.deepcopy(smoke_dit), dropped.labels)
    assert len(seen) == len(smoke_dit.transformer_blocks) + 1  # every block and the output modulation
    assert all(torch.equal(s, dropped.labels) for s in seen)  # no further drop inside the model, in train mode

    # diffusers' own DiT draws a new drop in every lookup (spec §8.2.14): the reason for the tied table
    torch.manual_seed(0)
    untied = DiTTransformer2DModel(num_attention_heads=4, attention_head_dim=32, in_channels=3, out_channels=6,
                                   num_layers=4, sample_size=32, patch_size=4, num_embeds_ada_norm=10)  # fmt: skip
    masks = [s == 10 for s in lookups(untied, labels)]
    assert len(masks) == 5 and not all(torch.equal(m, masks[0]) for m in masks)


# -- §10.7 / §10.11 / §10.13 sampler ----------------------------------------------------------------------------------
@needs_diffusers
def test_respacing_timesteps():
    from ddbench.ops.diffusion.schedule import sampling_scheduler

    ddpm = sampling_scheduler("ddpm", 50)
    spaced = [round(i * 999 / 49) for i in range(50)]  # guided-diffusion space_timesteps(1000, "50")
    assert ddpm.timesteps.tolist() == spaced[::-1] and spaced[0] == 0 and spaced[-1] == 999
    assert ddpm.config.clip_sample is False and ddpm.config.variance_type == "learned_range"
    ddim = sampling_scheduler("ddim", 50)
    assert ddim.timesteps.tolist() == list(range(999, 0, -20))


def guided_diffusion_respaced_step(x: np.ndarray, eps: np.ndarray, v: np.ndarray, t: int, kept: list[int]):
    """Mean and log-variance of p(x_prev | x_t) on guided-diffusion's respaced chain, from the formulas (float64)."""
    abar_full = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    abar = abar_full[kept]  # ascending kept timesteps
    abar_prev = np.append(1.0, abar[:-1])
    betas = 1.0 - abar / abar_prev  # the respaced chain's own β
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    post_log_var = np.log(np.append(post_var[1], post_var[1:]))
    k = kept.index(t)
    x0 = np.sqrt(1.0 / abar[k]) * x - np.sqrt(1.0 / abar[k] - 1.0) * eps
    mean = betas[k] * np.sqrt(abar_prev[k]) / (1.0 - abar[k]) * x0
    mean = mean + (1.0 - abar_prev[k]) * np.sqrt(1.0 - betas[k]) / (1.0 - abar[k]) * x
    frac = (v + 1.0) / 2.0
    return mean, frac * np.log(betas[k]) + (1.0 - frac) * post_log_var[k]


@needs_diffusers
def test_respaced_step_equals_guided_diffusion():
    from ddbench.ops.diffusion.schedule import sampling_scheduler

    scheduler = sampling_scheduler("ddpm", 50)
    kept = sorted(scheduler.timesteps.tolist())
    g = gen(14)
    shape = (2, 3, 8, 8)
    for t in (999, 958, kept[25], 41, 20, 0):
        assert t in kept
        x, eps = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        v = torch.rand(shape, generator=g) * 2 - 1
        mean_ref, logvar_ref = guided_diffusion_respaced_step(x.double().numpy(), eps.double().numpy(),
                                                              v.double().numpy(), t, kept)  # fmt: skip
        out = torch.cat([eps, v], 1)
        draws = []
        for seed in (100, 200):
            prev = scheduler.step(out, t, x, generator=gen(seed)).prev_sample
            draws.append((prev.double(), torch.randn(shape, generator=gen(seed)).double()))  # the step's noise
        (p1, n1), (p2, n2) = draws
        if t == 0:  # no noise at the last step: the output is the mean
            assert torch.equal(p1, p2)
            np.testing.assert_allclose(p1.numpy(), mean_ref, atol=2e-5, rtol=0)
            continue
        ok = (n1 - n2).abs() > 0.5
        std = (p1 - p2) / (n1 - n2)
        mean = p1 - std * n1
        np.testing.assert_allclose(mean[ok].numpy(), mean_ref[ok.numpy()], atol=2e-5, rtol=0)
        np.testing.assert_allclose((2 * std[ok].log()).numpy(), logvar_ref[ok.numpy()], atol=2e-4, rtol=0)


class LabelBlindModel(nn.Module):
    """Elementwise stand-in for a denoiser: its output ignores the labels and records what it was called with."""

    def __init__(self, eps_channels: int, learn_sigma: bool = True) -> None:
        super().__init__()
        self.calls: list[tuple[int, torch.Tensor]] = []
        self.learn_sigma = learn_sigma

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor) -> SimpleNamespace:
        self.calls.append((x.shape[0], class_labels.clone()))
        eps = torch.tanh(x) * (t.float() / 1000).view(-1, 1, 1, 1)
        return SimpleNamespace(sample=torch.cat([eps, torch.tanh(-x)], 1) if self.learn_sigma else eps)


@needs_diffusers
@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_cfg_uses_the_null_id_and_scale_one_is_conditional_sampling(kind):
    from ddbench.ops.diffusion.sampling import sample
    from ddbench.ops.diffusion.schedule import sampling_scheduler

    labels = torch.tensor([3, 1, 4])
    results = {}
    for scale in (1.0, 4.0):
        model = LabelBlindModel(3)
        results[scale] = sample(model, labels, scheduler=sampling_scheduler(kind, 10), shape=(3, 4, 4),
                                num_classes=7, generator=gen(15), cfg_scale=scale)  # fmt: skip
        assert len(model.calls) == 10
        sizes = {n for n, _ in model.calls}
        ys = model.calls[0][1]
        if scale == 1.0:
            assert sizes == {3} and torch.equal(ys, labels)
        else:  # [conditional; null], the null id being the number of classes
            assert sizes == {6} and torch.equal(ys, torch.tensor([3, 1, 4, 7, 7, 7]))
    # a label-blind model gives cond == uncond, so guidance at any scale is conditional sampling
    assert torch.equal(results[1.0], results[4.0])
    cond, uncond = torch.randn(5, 6, 2, 2, generator=gen(16)), torch.randn(5, 6, 2, 2, generator=gen(17))
    torch.testing.assert_close(guide(cond, uncond, 1.0, eps_channels=3), cond, atol=1e-6, rtol=0)


def test_cfg_channel_option():
    g = gen(18)
    cond, uncond = torch.randn(2, 8, 4, 4, generator=g), torch.randn(2, 8, 4, 4, generator=g)
    differs = lambda out: [not torch.equal(out[:, k], cond[:, k]) for k in range(out.shape[1])]  # noqa: E731
    quirk = guide(cond, uncond, 4.0, eps_channels=4)
    every = guide(cond, uncond, 4.0, eps_channels=4, all_channels=True)
    assert differs(quirk) == [True, True, True, False, False, False, False, False]  # DiT guides ε channels 0–2
    assert differs(every) == [True, True, True, True, False, False, False, False]
    torch.testing.assert_close(quirk[:, :3], uncond[:, :3] + 4.0 * (cond[:, :3] - uncond[:, :3]))
    assert torch.equal(quirk[:, :3], every[:, :3])
    pix_cond, pix_uncond = cond[:, :6], uncond[:, :6]  # pixel space: C = 3, both settings coincide
    assert torch.equal(guide(pix_cond, pix_uncond, 4.0, eps_channels=3),
                       guide(pix_cond, pix_uncond, 4.0, eps_channels=3, all_channels=True))  # fmt: skip


# -- §10.8 IPC subsets -------------------------------------------------------------------------------------------------
def test_ipc_subsets_are_nested_seeded_permutations():
    perms = ipc_permutations(num_classes=4, per_class=50, seed=3)
    assert perms.shape == (4, 50)
    assert all(sorted(row.tolist()) == list(range(50)) for row in perms)
    assert torch.equal(perms, ipc_permutations(4, 50, 3))
    assert not torch.equal(perms, ipc_permutations(4, 50, 4))
    assert not torch.equal(perms[0], perms[1])  # classes have their own order
    sets = {k: ipc_subset(perms, k) for k in (1, 10, 20, 50)}
    for small, large in ((1, 10), (10, 20), (20, 50)):
        assert set(sets[small].tolist()) <= set(sets[large].tolist())
    assert sets[10][:10].tolist() == perms[0, :10].tolist()
    assert sets[10][10:20].tolist() == (perms[1, :10] + 50).tolist()
    assert sorted(sets[50].tolist()) == list(range(200))
    with pytest.raises(ValueError):
        ipc_subset(perms, 51)
    # uniform: over many seeds each image is first in its class about equally often
    firsts = torch.stack([ipc_permutations(1, 10, s)[0, 0] for s in range(2000)])
    counts = torch.bincount(firsts, minlength=10)
    assert counts.min() > 140 and counts.max() < 260  # expected 200, ~4.5 standard deviations


# -- DiT structure, DiffFit, EMA (§1, §3.2, §3.3) ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_dit():
    if importlib.util.find_spec("diffusers") is None:
        pytest.skip("needs ddbench[diffusion]")
    from ddbench.ops.diffusion.models import build_dit

    torch.manual_seed(0)
    model = build_dit(10, 32, 3, "smoke")
    with torch.no_grad():  # adaLN-Zero starts with zero gates; random ones make every block matter in the tests
        for name, p in model.named_parameters():
            if "norm1.linear" in name or "proj_out" in name:
                p.normal_(0, 0.05)
    return model


@needs_diffusers
def test_tied_dit_xl_2_has_the_original_parameter_set():
    from diffusers import DiTTransformer2DModel

    from ddbench.ops.diffusion.models import dit_xl_2

    with torch.device("meta"):
        tied = dit_xl_2()
        untied = DiTTransformer2DModel(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
                                       num_layers=28, sample_size=32, patch_size=2)  # fmt: skip
    pos_embed = 256 * 1152  # a fixed buffer in diffusers, a frozen parameter in the original
    assert sum(p.numel() for p in tied.parameters()) + pos_embed == 675_129_632  # DiT-XL/2's printed count
    embedder = sum(p.numel() for p in untied.transformer_blocks[0].norm1.emb.parameters())
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 27 * embedder
    assert tied.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.num_embeddings == 1001


@needs_diffusers
def test_difffit_gammas_start_as_identity_and_train(smoke_dit):
    from ddbench.ops.diffusion.models import add_difffit_gammas

    model = copy.deepcopy(smoke_dit).eval()
    x, t, y = torch.randn(2, 3, 32, 32, generator=gen(19)), torch.tensor([10, 900]), torch.tensor([1, 10])
    with torch.no_grad():
        before = model(x, t, class_labels=y).sample
    names = add_difffit_gammas(model)
    blocks = [n for n in names]
    assert len(names) == 2 * 6 and all(n.startswith(("transformer_blocks.0.", "transformer_blocks.1.")) for n in blocks)
    gammas = dict(model.named_parameters())
    assert sum(gammas[n].numel() for n in names) == 2 * 6 * 128
    with torch.no_grad():
        assert torch.equal(model(x, t, class_labels=y).sample, before)  # γ = 1 changes nothing
    out = model(x, t, class_labels=y).sample
    grads = torch.autograd.grad(out.square().sum(), [gammas[n] for n in names])
    assert all(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        gammas["transformer_blocks.1.ff.difffit_gamma"].fill_(0.5)
        assert not torch.allclose(model(x, t, class_labels=y).sample, before)
    with pytest.raises(ValueError):
        add_difffit_gammas(model)


@needs_diffusers
def test_difffit_trains_biases_class_table_and_gammas_only(smoke_dit):
    from ddbench.ops.diffusion.models import add_difffit_gammas, mark_trainable

    model = copy.deepcopy(smoke_dit)
    add_difffit_gammas(model)
    trainable = {n for n, p in model.named_parameters() if p in set(mark_trainable(model, "difffit"))}
    expected = {n for n, _ in model.named_parameters()
                if n.endswith(".bias") or n.endswith("difffit_gamma") or "class_embedder" in n}  # fmt: skip
    assert trainable == expected
    assert "transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight" in trainable  # one shared table
    frozen = {n for n, _ in model.named_parameters()} - trainable
    for name in ("transformer_blocks.0.norm1.linear.weight", "transformer_blocks.0.norm1.emb.timestep_embedder"
                 ".linear_1.weight", "transformer_blocks.2.attn1.to_q.weight", "pos_embed.proj.weight",
                 "proj_out_2.weight"):  # fmt: skip
        assert name in frozen  # a name filter on "norm" would have unfrozen the first two
    assert len(mark_trainable(model, "full")) == len(list(model.parameters()))
    assert all(n.endswith(".bias") for n, p in model.named_parameters() if p in set(mark_trainable(model, "bitfit")))


@needs_diffusers
def test_ema_is_the_original_update_and_keeps_the_paper_share(smoke_dit):
    from ddbench.ops.diffusion.models import ema_copy, ema_decay_for, ema_update

    model = copy.deepcopy(smoke_dit)
    ema = ema_copy(model)
    assert ema.transformer_blocks[3].norm1.emb is ema.transformer_blocks[0].norm1.emb  # still tied
    assert not any(p.requires_grad for p in ema.parameters()) and not ema.training
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        model.proj_out_2.weight.add_(1.0)  # the "trained" weights; everything else plays a frozen parameter
    decay = 0.9
    for _ in range(5):
        ema_update(ema, model, decay)
    for p0, pe, pm in zip(start, ema.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(pe, decay**5 * p0 + (1 - decay**5) * pm, atol=1e-6, rtol=0)
        if torch.equal(p0, pm):
            assert torch.equal(pe, p0)  # frozen parameters stay exactly equal
    assert ema_decay_for(12000) == pytest.approx(0.9999, abs=1e-12)
    for steps in (100, 2000, 12000):
        assert ema_decay_for(steps) ** steps == pytest.approx(math.exp(-1.2), rel=0.01)  # ≈ 30% of the start


# -- latent path plumbing (§1) -----------------------------------------------------------------------------------------
@needs_diffusers
def test_latent_path_plumbing_with_a_tiny_vae():
    from ddbench.ops.diffusion.finetune import finetune_losses
    from ddbench.ops.diffusion.models import decode_latents, encode_latents, tiny_latent_dit, tiny_vae
    from ddbench.ops.diffusion.sampling import sample
    from ddbench.ops.diffusion.schedule import ProcessTables, sampling_scheduler, training_scheduler

    torch.manual_seed(0)
    vae, dit = tiny_vae(32), tiny_latent_dit(10, 16)
    x = torch.rand(4, 3, 32, 32, generator=gen(20)) * 2 - 1
    z = encode_latents(vae, x, generator=gen(21))
    assert z.shape == (4, 4, 16, 16)
    posterior = vae.encode(x).latent_dist
    noise = torch.randn(z.shape, generator=gen(21))
    torch.testing.assert_close(z, 0.18215 * (posterior.mean + posterior.std * noise))  # a posterior sample, scaled
    assert not torch.equal(z, encode_latents(vae, x, generator=gen(22)))  # stochastic encoding
    scheduler = training_scheduler()
    memory = MinimaxMemory()
    labels = torch.tensor([0, 1, 0, 1])
    out = finetune_losses(dit.train(), z, labels, labels + 5, scheduler=scheduler, generator=gen(23),
                          tables=ProcessTables.from_scheduler(scheduler), num_classes=10, memory=memory)  # fmt: skip
    out.total.backward()
    assert memory.real[0].shape == (2, 4 * 16 * 16) and torch.equal(memory.real[1], z[labels == 1].flatten(1))
    assert dit.proj_out_2.weight.grad.abs().sum() > 0
    latents = sample(dit.eval(), torch.tensor([5, 6]), scheduler=sampling_scheduler("ddim", 4), shape=(4, 16, 16),
                     num_classes=10, generator=gen(24))  # fmt: skip
    images = decode_latents(vae, latents)
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1


def test_missing_diffusers_is_a_user_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` raise ImportError
    with pytest.raises(UserError, match=r"ddbench\[diffusion\]") as info:
        require_diffusers()
    assert "\n" not in str(info.value)
    from ddbench.ops.diffusion.models import build_dit

    with pytest.raises(UserError, match=r"ddbench\[diffusion\]"):
        build_dit(10, 32, 3)


# -- IDC colour augmentation (spec §5) --------------------------------------------------------------------------------
def _jitter_op(x: torch.Tensor, op: str, a: float) -> torch.Tensor:
    """IDC's single ops from their definitions: blend towards black, the mean gray level, or the gray image."""
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None].expand_as(x)
    target = {"b": torch.zeros_like(x), "c": gray.mean().expand_as(x), "s": gray}[op]
    return (1 - a) * x + a * target


def test_color_jitter_closed_form_and_order_invariance():
    x = torch.rand(1, 3, 5, 4, generator=gen(25), dtype=torch.float64)
    alphas = torch.tensor([[0.3, -0.25, 0.4]], dtype=torch.float64)
    out = A.apply_color_jitter(x, alphas)
    for order in ("bcs", "bsc", "cbs", "csb", "sbc", "scb"):  # IDC shuffles the order per image
        y = x
        for op in order:
            y = _jitter_op(y, op, float(alphas[0, "bcs".index(op)]))
        torch.testing.assert_close(out, y, atol=1e-12, rtol=0)
    gray = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
    assert torch.allclose(A.apply_color_jitter(gray, torch.tensor([[0.0, 0.4, -0.4]], dtype=torch.float64)), gray)


def test_color_jitter_ranges():
    b = 4000
    x = torch.full((b, 3, 1, 1), 0.5)
    bright = A.color_jitter(x, 0.4, 0.0, 0.0, generator=gen(26))
    factor = bright[:, 0, 0, 0] / 0.5
    assert factor.min() >= 0.6 - 1e-6 and factor.max() <= 1.4 + 1e-6  # 1 − α, α ~ U(−0.4, 0.4)
    assert factor.min() < 0.61 and factor.max() > 1.39 and abs(factor.mean().item() - 1.0) < 0.01
    rgb = torch.rand(b, 3, 4, 4, generator=gen(27))
    con = A.color_jitter(rgb, 0.0, 0.4, 0.0, generator=gen(28))
    gray = lambda t: (0.299 * t[:, 0] + 0.587 * t[:, 1] + 0.114 * t[:, 2]).mean(dim=(1, 2))  # noqa: E731
    torch.testing.assert_close(gray(con), gray(rgb), atol=1e-5, rtol=0)  # contrast keeps the mean gray level
    assert not torch.allclose(con, rgb)
    assert torch.equal(A.color_jitter(rgb, 0.0, 0.0, 0.0, generator=gen(29)), rgb)
    assert torch.equal(A.color_jitter(rgb, generator=gen(30)), A.color_jitter(rgb, generator=gen(30)))


def test_pca_lighting_against_the_closed_form():
    eigvec = torch.tensor(A.IMAGENET_PCA_EIGVEC, dtype=torch.float64)
    shift = A.lighting_shift(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]], dtype=torch.float64))
    torch.testing.assert_close(shift[0], 0.2175 * eigvec[:, 0])
    torch.testing.assert_close(shift[1], 2 * 0.0188 * eigvec[:, 1] - 0.0045 * eigvec[:, 2])
    assert shift[0].tolist() == pytest.approx([-0.2175 * 0.5675, -0.2175 * 0.5808, -0.2175 * 0.5836])
    x = torch.rand(3, 3, 4, 4, generator=gen(31), dtype=torch.float64)
    out = A.pca_lighting(x, 0.1, generator=gen(32))
    alpha = torch.randn(3, 3, generator=gen(32), dtype=torch.float64) * 0.1  # the same draws
    torch.testing.assert_close(out - x, A.lighting_shift(alpha)[:, :, None, None].expand_as(x))
    assert torch.equal(A.pca_lighting(x, 0.0, generator=gen(33)), x)
    many = A.pca_lighting(torch.zeros(20000, 3, 1, 1, dtype=torch.float64), 0.1, generator=gen(34))[:, :, 0, 0]
    # the offsets' covariance is V diag(σ² λ²) Vᵀ
    cov = torch.cov(many.T)
    val = torch.tensor(A.IMAGENET_PCA_EIGVAL, dtype=torch.float64)
    torch.testing.assert_close(cov, eigvec @ torch.diag((0.1 * val) ** 2) @ eigvec.T, atol=2e-5, rtol=0.05)
