"""Soft labels from several teachers: the mean of their **logits**, not of their probabilities.

EDC (spec ``edc.md`` §1 S4, paper Eq. 4), G-VBSM and EDC's RDED-style scorer (§8.2) average the observers' raw
logits; the soft target is then that mean vector (MSE + 0.025·CE in EDC's evaluation, or softmax(mean/T) for a KL
loss). Averaging probabilities instead gives a different, flatter target. This is the one definition the label
modes (``ensemble`` of teacher ids) and the RDED scorer share.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def ensemble_mean_logits(models: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """(1/K)·Σ_k φ_k(x) in float32: the mean of the models' logits on one batch.

    The models' train/eval mode and the grad context are the caller's (soft labels: eval mode under no_grad).

    Raises:
        ValueError: for an empty model list.
    """
    if not models:
        raise ValueError("ensemble_mean_logits needs at least one model")
    total = models[0](x).float()
    for model in models[1:]:
        total = total + model(x).float()
    return total / len(models)


__all__ = ["ensemble_mean_logits"]
