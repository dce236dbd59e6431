"""MTT's inner loop: a functional student unrolled for N steps on the synthetic set, and the matching loss.

Implements spec mtt §5.2 items 3-6 (one distillation iteration's unroll and loss) and §8.2 (TESLA's
constant-memory gradient), for Cazenavette et al., "Dataset Distillation by Matching Training Trajectories"
(CVPR 2022) and Cui et al., "Scaling Up Dataset Distillation to ImageNet-1K with Constant Memory" (ICML 2023).

One iteration, given an expert segment (θ_start = θ*_s, θ_target = θ*_{s+M}):

* θ̂_0 = θ_start; for n < N: x_n = augment(X̃[b_n]), g_n = ∂CE(f(x_n; θ̂_n), ỹ[b_n])/∂θ̂_n and
  θ̂_{n+1} = θ̂_n − α̃·g_n, where the batches b_n come from :class:`MinibatchQueue`.
* L = ‖θ̂_N − θ_target‖² / ‖θ_start − θ_target‖², both sums over all P parameters (the 1/P of the official code
  cancels); the denominator carries no gradient.
* ``grad_mode="full"`` (MTT, the reference): g_n is built with ``create_graph=True`` and L is backpropagated
  through the whole unroll into X̃ and α̃. Memory grows linearly in N (spec §8.1).
* ``grad_mode="tesla"``: θ̂_N = θ_start − α̃·G with G = Σ g_n. A first sweep computes every g_n without a graph
  and keeps θ̂_n; then, with v = α̃(θ_target − θ_start) + α̃²G fixed, each step's g_n is recomputed at the stored
  θ̂_n (a constant) on the same augmented batch, and (2/D)·⟨v, g_n⟩ is backpropagated into X̃ (indexing scatters
  the batch's gradient into X̃.grad). The α̃ gradient differentiates ‖θ_start − α̃G − θ_target‖²/D with G
  constant. Only one step's double-backward graph is alive at a time. This is an **approximation** of MTT's
  gradient: it drops the paths through later parameters (the Π(I − α̃H_k) products); it is exact at N = 1
  (spec §8.2, [measured] there and tested here).

How this differs from the official code, and why:

* Randomness comes from explicit ``torch.Generator``s (queue permutations, augmentation), never the global RNG,
  which the official code re-seeds from the wall clock at every network construction (spec §9.2).
* The student is ``torch.func.functional_call`` on a model built by :func:`ddbench.models.create_model`, not the
  official ``ReparamModule``; the flat order is the same (``named_parameters``, :mod:`ddbench.ops.flat_params`).
* TESLA mode replays each step's augmentation from the generator state saved before it, instead of keeping the N
  augmented batches with their graphs as the TESLA code does: the same batch values (the augmentation is a pure
  function of the generator state), with memory independent of N apart from the N stored vectors θ̂_n.
* TESLA's first sweep computes g_n without a graph (the TESLA code builds it with ``create_graph`` and drops it):
  same numbers, less peak memory (spec §8.2 item 1).
* ``normalize="none"`` (L = ‖θ̂_N − θ_target‖², spec §10) is for debugging only; ``"ratio"`` is the faithful loss.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ddbench.ops.flat_params import ParamLayout

__all__ = ["Augment", "FunctionalStudent", "MatchResult", "MinibatchQueue", "match_trajectory"]

logger = logging.getLogger(__name__)

GradMode = Literal["full", "tesla"]
Normalize = Literal["ratio", "none"]


class Augment(Protocol):
    """A batch augmentation drawing its randomness from ``generator`` only (e.g. :func:`ddbench.ops.augment.dsa`,
    whose default strategy is MTT's ``color_crop_cutout_flip_scale_rotate``)."""

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor: ...


class FunctionalStudent:
    """A network evaluated on an external flat parameter vector (MTT's ``ReparamModule``, spec §5.2 item 3).

    Only the architecture of ``model`` is used: its parameters are replaced, for each call, by views of the flat
    vector in ``named_parameters`` order. Buffers, if any, are the model's own, and the model's train/eval mode
    applies (the instance-norm ConvNet has no buffers, and both modes compute the same function).

    Args:
        model: e.g. ``create_model("convnet", num_classes, img_size, in_chans)``.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layout = ParamLayout.of(model)

    @property
    def num_params(self) -> int:
        """P."""
        return self.layout.num_params

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits of the network with parameters ``flat`` on ``x`` (differentiable w.r.t. both)."""
        return functional_call(self.model, self.layout.unflatten(flat), (x,))


class MinibatchQueue:
    """The inner loop's minibatch indices, as the official code draws them (spec §5.2 item 4, §9.2).

    When the queue is empty, a random permutation of all ``num_items`` synthetic indices is split into chunks of
    ``batch_size`` (the last chunk may be shorter); chunks are popped **from the end**, so a shorter chunk is
    used first. Create one queue per distillation iteration: the official queue persists across the N steps of
    one iteration only.

    Args:
        num_items: number of synthetic images (C·ipc).
        batch_size: ``batch_syn``.
        generator: source of the permutations.
    """

    def __init__(self, num_items: int, batch_size: int, generator: torch.Generator) -> None:
        if num_items < 1 or batch_size < 1:
            raise ValueError(f"need num_items ≥ 1 and batch_size ≥ 1, got {num_items}, {batch_size}")
        if not isinstance(generator, torch.Generator):
            raise TypeError("MinibatchQueue takes an explicit torch.Generator")
        self.num_items, self.batch_size, self.generator = num_items, batch_size, generator
        self._chunks: list[torch.Tensor] = []

    def pop(self) -> torch.Tensor:
        """The next batch of indices (a CPU int64 tensor)."""
        if not self._chunks:
            perm = torch.randperm(self.num_items, generator=self.generator)
            self._chunks = list(perm.split(self.batch_size))
        return self._chunks.pop()

    def take(self, n: int) -> list[torch.Tensor]:
        """The next ``n`` batches, in the order the unroll uses them."""
        return [self.pop() for _ in range(n)]


@dataclass(frozen=True)
class MatchResult:
    """What one unroll returns; the gradients are in ``images.grad`` and ``syn_lr.grad``.

    Attributes:
        loss: L (detached 0-dim tensor).
        param_dist: ‖θ̂_N − θ_target‖² (the numerator).
        start_dist: ‖θ_start − θ_target‖² (the denominator, D).
    """

    loss: torch.Tensor
    param_dist: float
    start_dist: float


def _step_loss(
    student: FunctionalStudent,
    theta: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    idx: torch.Tensor,
    augment: Augment | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Mean cross-entropy of the student at ``theta`` on the (augmented) batch ``idx``."""
    idx = idx.to(images.device)
    x = images[idx]
    if augment is not None:
        x = augment(x, generator=generator)
    return F.cross_entropy(student(theta, x), labels[idx])


def _grad_inputs(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t for t in tensors if t.requires_grad]


def match_trajectory(
    student: FunctionalStudent,
    images: torch.Tensor,
    labels: torch.Tensor,
    syn_lr: torch.Tensor,
    start: torch.Tensor,
    target: torch.Tensor,
    batches: Sequence[torch.Tensor],
    *,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
    grad_mode: GradMode = "full",
    normalize: Normalize = "ratio",
) -> MatchResult:
    """Unroll the student N = ``len(batches)`` steps from ``start`` and match ``target``; accumulate gradients.

    Gradients of L are **accumulated** into ``images.grad`` and ``syn_lr.grad`` (like ``backward``), for those of
    the two that require grad, so the caller zeroes its optimizers' grads, calls this, and steps them (spec §5.2
    item 6). Nothing else receives gradient.

    Args:
        student: the functional network.
        images: X̃ ``[K, C, H, W]``, usually a leaf with ``requires_grad``.
        labels: ỹ ``[K]`` class indices (hard labels; class-probability rows ``[K, classes]`` also work, as
            ``F.cross_entropy`` accepts them).
        syn_lr: α̃, a 0-dim tensor, usually a leaf with ``requires_grad``.
        start: θ_start, flat ``[P]``.
        target: θ_target, flat ``[P]``.
        batches: the N index batches, e.g. ``MinibatchQueue(...).take(N)``.
        augment: applied to every step's batch with ``generator`` (MTT: DSA); None for no augmentation.
        generator: the augmentation's randomness; required when ``augment`` is given.
        grad_mode: ``"full"`` (MTT) or ``"tesla"`` (constant memory, approximate for N > 1).
        normalize: ``"ratio"`` (faithful) or ``"none"`` (debugging: the bare numerator).

    Raises:
        ValueError: no batches, mismatched vector sizes, an unknown mode, or θ_start = θ_target under ``"ratio"``.
        TypeError: ``augment`` without a ``generator``.
    """
    if not batches:
        raise ValueError("match_trajectory needs at least one inner step (N ≥ 1)")
    if start.shape != (student.num_params,) or target.shape != start.shape:
        raise ValueError(f"start {tuple(start.shape)} / target {tuple(target.shape)} need [{student.num_params}]")
    if augment is not None and not isinstance(generator, torch.Generator):
        raise TypeError("an augmentation needs an explicit torch.Generator")
    if normalize not in ("ratio", "none"):
        raise ValueError(f"normalize must be 'ratio' or 'none', got {normalize!r}")
    start, target = start.detach(), target.detach()
    start_dist = (start - target).pow(2).sum()
    if normalize == "ratio" and not start_dist > 0:
        raise ValueError("θ_start equals θ_target: the normalised loss is undefined (is expert_epochs ≥ 1?)")
    denom = start_dist if normalize == "ratio" else torch.ones_like(start_dist)
    if grad_mode not in _MODES:
        raise ValueError(f"grad_mode must be 'full' or 'tesla', got {grad_mode!r}")
    loss, param_dist = _MODES[grad_mode](student, images, labels, syn_lr, start, target, batches, augment, generator,
                                         denom)  # fmt: skip
    return MatchResult(loss, float(param_dist), float(start_dist))


def _match_full(
    student: FunctionalStudent,
    images: torch.Tensor,
    labels: torch.Tensor,
    syn_lr: torch.Tensor,
    start: torch.Tensor,
    target: torch.Tensor,
    batches: Sequence[torch.Tensor],
    augment: Augment | None,
    generator: torch.Generator | None,
    denom: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    theta = start.clone().requires_grad_(True)  # θ̂_0 must require grad for the first ∂ℓ/∂θ̂_0
    for idx in batches:
        ce = _step_loss(student, theta, images, labels, idx, augment, generator)
        (grad,) = torch.autograd.grad(ce, theta, create_graph=True)
        theta = theta - syn_lr * grad
    param_dist = (theta - target).pow(2).sum()
    loss = param_dist / denom
    inputs = _grad_inputs(images, syn_lr)
    if inputs:
        loss.backward(inputs=inputs)
    return loss.detach(), param_dist.detach()


def _match_tesla(
    student: FunctionalStudent,
    images: torch.Tensor,
    labels: torch.Tensor,
    syn_lr: torch.Tensor,
    start: torch.Tensor,
    target: torch.Tensor,
    batches: Sequence[torch.Tensor],
    augment: Augment | None,
    generator: torch.Generator | None,
    denom: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    alpha = float(syn_lr.detach())
    pixels = images.detach()
    theta = start.clone()
    grad_sum = torch.zeros_like(start)
    steps: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
    # sweep 1: g_n without a graph; keep θ̂_n, the batch and the generator state that replays its augmentation
    for idx in batches:
        state = generator.get_state() if augment is not None else None
        leaf = theta.detach().requires_grad_(True)
        ce = _step_loss(student, leaf, pixels, labels, idx, augment, generator)
        (grad,) = torch.autograd.grad(ce, leaf)
        steps.append((idx, state, theta))
        theta = theta - alpha * grad
        grad_sum += grad
    # loss and α̃ gradient with G constant
    end = start - syn_lr * grad_sum
    param_dist = (end - target).pow(2).sum()
    loss = param_dist / denom
    if syn_lr.requires_grad:
        loss.backward(inputs=[syn_lr])
    # sweep 2: each step's ⟨dL/dG, g_n⟩ backpropagated through its own batch only
    if images.requires_grad:
        v = (alpha * (target - start) + alpha**2 * grad_sum) * (2.0 / denom)
        for idx, state, theta_n in steps:
            replay = None
            if state is not None:
                replay = torch.Generator(device=generator.device)
                replay.set_state(state)
            leaf = theta_n.requires_grad_(True)
            ce = _step_loss(student, leaf, images, labels, idx, augment, replay)
            (grad,) = torch.autograd.grad(ce, leaf, create_graph=True)
            torch.dot(v, grad).backward(inputs=[images])
    return loss.detach(), param_dist.detach()


_MODES = {"full": _match_full, "tesla": _match_tesla}
