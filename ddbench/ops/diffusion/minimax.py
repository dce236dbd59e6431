"""The minimax terms of Minimax diffusion: representativeness and diversity against per-class memories.

Spec ``minimax.md`` §3.1 step 6, code-faithful (``train_dit.py``):

* Two FIFO memories per **subset-local** class c (the memory key; not the DiT label, §8.2.5): M_c holds real clean
  samples z₀, D_c the model's own earlier predictions ẑ₀. Both are detached, filled together, and truncated to the
  newest ``capacity`` (64) rows. They are plain per-process state (the original does not synchronize them across
  DDP ranks).
* For each class c present in the batch, with P_c the rows of ẑ₀ of class c flattened to vectors, and if D_c is
  non-empty: L_r,c = 1 − min over all (p, m) ∈ P_c × M_c of cos(p, m), and L_d,c = max over all (p, d) ∈ P_c × D_c
  of cos(p, d). A **single hard min (max) over the whole similarity matrix**, not a mean of per-row minima
  (§8.2.2): exactly one pair, hence one row of P_c, receives gradient per class and term.
* A class whose memories are still empty contributes 0 but still counts in K, the number of distinct classes in
  the batch, and the batch terms are Σ_c L_·,c / K (§8.2.3).
* Each class's memories are updated right after its terms are computed, before the optimizer step, so within a step
  only later classes could see the update; since memories are per class, nothing does.
* Samples whose condition was dropped to the null class still enter their true class's terms and memories
  (§8.2.10): the caller passes local labels, which dropout never touches.

cos is the cosine similarity of flattened vectors, ``a·b / (‖a‖‖b‖)``; the norms are clamped at 1e-12 so an
all-zero row gives 0 instead of the original's NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

#: Rows kept per class and memory (``--memory-size``).
MEMORY_SIZE = 64
#: Weights of the representativeness and diversity terms (``--lambda-pos``, ``--lambda-neg``).
LAMBDA_R, LAMBDA_D = 0.002, 0.008


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarities ``[n, m]`` between the rows of ``a`` ``[n, ...]`` and ``b`` ``[m, ...]`` (flattened)."""
    a, b = a.flatten(1), b.flatten(1)
    norms = a.norm(dim=1, keepdim=True) * b.norm(dim=1, keepdim=True).T
    return (a @ b.T) / norms.clamp(min=1e-12)


class MinimaxMemory:
    """Per-class FIFO memories of real clean samples (M) and predicted clean samples (D), detached.

    Rows are stored flattened, on the device and dtype they arrive in. ``c in memory`` is true once class c has an
    entry (both memories are filled together).
    """

    def __init__(self, capacity: int = MEMORY_SIZE) -> None:
        if capacity < 1:
            raise ValueError(f"memory capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.real: dict[int, torch.Tensor] = {}
        self.pred: dict[int, torch.Tensor] = {}

    def __contains__(self, c: int) -> bool:
        return c in self.pred

    def push(self, c: int, real: torch.Tensor, pred: torch.Tensor) -> None:
        """Append the rows of class ``c`` (detached, flattened) and keep the newest ``capacity`` of each memory."""
        for store, rows in ((self.real, real), (self.pred, pred)):
            rows = rows.detach().flatten(1)
            merged = torch.cat([store[c], rows]) if c in store else rows
            store[c] = merged[-self.capacity :]

    def state_dict(self) -> dict:
        """Plain tensors keyed by class, for a resumable fine-tuning checkpoint."""
        return {"capacity": self.capacity, "real": dict(self.real), "pred": dict(self.pred)}

    @classmethod
    def from_state_dict(cls, state: dict) -> MinimaxMemory:
        memory = cls(int(state["capacity"]))
        memory.real = {int(k): v for k, v in state["real"].items()}
        memory.pred = {int(k): v for k, v in state["pred"].items()}
        return memory


class MinimaxTerms(NamedTuple):
    """Batch terms Σ_c L_r,c / K and Σ_c L_d,c / K (scalars with gradient), and K."""

    representativeness: torch.Tensor
    diversity: torch.Tensor
    num_classes: int


def minimax_terms(
    x0_pred: torch.Tensor,
    x0_real: torch.Tensor,
    local_labels: torch.Tensor,
    memory: MinimaxMemory,
    *,
    update: bool = True,
) -> MinimaxTerms:
    """Representativeness and diversity of a batch's predictions against ``memory``, then the memory update.

    Args:
        x0_pred: predicted clean samples ẑ₀ ``[B, ...]`` with gradient (:func:`~.schedule.predict_x0`).
        x0_real: the real clean samples z₀ of the batch (not z_t), same shape.
        local_labels: ``[B]`` subset-local labels, the memory keys.
        memory: the memories; updated in place per class after its terms (unless ``update`` is False).
        update: push the batch into the memories.

    Returns:
        The two batch terms (each Σ_c L_·,c / K with K the number of distinct classes in the batch) and K.
    """
    labels = local_labels.tolist()
    classes = sorted(set(labels))
    r = x0_pred.new_zeros(())
    d = x0_pred.new_zeros(())
    where = torch.as_tensor(labels, device=x0_pred.device)
    for c in classes:
        rows = where == c
        pred_c = x0_pred[rows]
        if c in memory:
            r = r + (1.0 - cosine_matrix(pred_c, memory.real[c]).min())
            d = d + cosine_matrix(pred_c, memory.pred[c]).max()
        if update:
            memory.push(c, x0_real[rows], pred_c)
    k = len(classes)
    return MinimaxTerms(r / k, d / k, k)


__all__ = ["LAMBDA_D", "LAMBDA_R", "MEMORY_SIZE", "MinimaxMemory", "MinimaxTerms", "cosine_matrix", "minimax_terms"]
