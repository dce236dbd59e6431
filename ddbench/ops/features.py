"""Teacher outputs of real training images, for the selection baselines (herding, k-center, EL2N).

Images go through test-time preprocessing only (uint8 → [0, 1] → the dataset's normalisation; no augmentation),
in batches, so a selection sees each image as the teacher classifies it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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


def pick_per_class(
    ctx: Any,
    model: nn.Module,
    pick: Callable[[torch.Tensor, int], torch.Tensor],
    *,
    batch_size: int,
    stage: str,
) -> dict[int, torch.Tensor]:
    """Feature-space selection class by class, the loop every coreset baseline shares.

    For each class ``c`` of ``ctx.dataset`` the model's outputs on that class's train images are computed once and
    ``pick(features, c)`` returns positions into them; the result maps ``c`` to dataset indices, ready for
    :func:`ddbench.method.real_set`. Progress is reported per class under ``stage``.
    """
    chosen: dict[int, torch.Tensor] = {}
    num_classes = ctx.dataset.num_classes
    for c in range(num_classes):
        idx = ctx.dataset.class_indices(c)
        feats = train_outputs(model, ctx.dataset, idx, device=ctx.device, batch_size=batch_size)
        chosen[c] = idx[pick(feats, c).to(idx.device)]
        ctx.progress(stage, c + 1, num_classes)
    return chosen
