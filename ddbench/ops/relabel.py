"""Stored relabelling: one soft label per image from a teacher or an ensemble, averaged over fixed views.

The building block behind ``SoftLabelSpec(mode="stored")`` (DD-Ranking's "S" mode): methods that ship labels with
their images (SRe2L's stored variant, EDC/RDED-style relabels) call :func:`stored_soft_labels` instead of each
writing the loop. View 0 is the image itself; the others are per-image RandomResizedCrop(``crop_scale``) + flip drawn
from the caller's generator, so the labels are a pure function of (images, teachers, seed). The label of a view is
the teacher's logits, or the ensemble's mean logits (:func:`ddbench.labels.ensemble_logits`), and the stored label is
the mean over views.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ddbench.labels import ensemble_logits
from ddbench.ops.augment import random_flip, random_resized_crop


@torch.no_grad()
def stored_soft_labels(
    teachers: nn.Module | Sequence[nn.Module],
    x: torch.Tensor,
    *,
    views: int,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    generator: torch.Generator,
    batch_size: int = 256,
) -> torch.Tensor:
    """``[N, K]`` mean teacher (or ensemble) logits over ``views`` views of model-space images ``x``.

    Args:
        teachers: one model or an ensemble (mean of logits), in eval mode.
        x: model inputs ``[N, C, H, W]`` (normalised images).
        views: number of views averaged (view 0 = the image itself).
        crop_scale: RandomResizedCrop area range of the other views.
        generator: draws the crops and flips.
        batch_size: images per forward (does not change any number).
    """
    models = [teachers] if isinstance(teachers, nn.Module) else list(teachers)
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    total = None
    for v in range(views):
        view = x
        if v:
            view = random_resized_crop(x, x.shape[-1], crop_scale, generator=generator, same_on_batch=False)
            view = random_flip(view, generator=generator, same_on_batch=False)
        logits = torch.cat([ensemble_logits(models, view[i : i + batch_size]) for i in range(0, len(view), batch_size)])
        total = logits if total is None else total + logits
    assert total is not None
    return (total / views).cpu()
