"""Teacher outputs of real training images, for the selection baselines (herding, k-center, EL2N).

Images go through test-time preprocessing only (uint8 → [0, 1] → the dataset's normalisation; no augmentation),
in batches, so a selection sees each image as the teacher classifies it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ddbench.data import Dataset


@torch.no_grad()
def train_outputs(
    model: nn.Module,
    dataset: Dataset,
    indices: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    logits: bool = False,
) -> torch.Tensor:
    """Pooled penultimate features (``forward_head(·, pre_logits=True)``), or logits, of train images ``indices``.

    Returns:
        float32 ``[len(indices), D]`` on ``device``, in the order of ``indices``.
    """
    model.eval()
    out = []
    for start in range(0, indices.numel(), batch_size):
        x = dataset.normalize(dataset.train.load(indices[start : start + batch_size]).to(device))
        out.append((model(x) if logits else model.forward_head(model.forward_features(x), pre_logits=True)).float())
    return torch.cat(out) if out else torch.empty(0, device=device)
