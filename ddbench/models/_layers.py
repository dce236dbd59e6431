"""Small layers shared by the ddbench-defined families (ConvNet, ResNetAP-10, DeiT-Tiny-BN).

Kept apart from the model files so those stay declarative, like timm's ``layers/`` package.
"""

from __future__ import annotations

import torch
from torch import nn

NORM_CHOICES: tuple[str, ...] = ("instance", "batch", "none")


def norm2d(kind: str, channels: int) -> nn.Module:
    """The 2-D normalisation layers of the DC/MTT/IDC code bases, by their names there.

    ``"instance"`` is ``GroupNorm(channels, channels, affine=True)`` (one group per channel), which is how MTT and
    IDC implement instance norm: per-sample, per-channel statistics with a learnable affine and no running
    buffers, so train and eval mode agree. ``"batch"`` is ``BatchNorm2d``; ``"none"`` is Identity.

    Raises:
        ValueError: for any other name.
    """
    if kind == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORM_CHOICES)}")


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the flattened ``(B·N, C)`` tokens of a ``[B, N, C]`` sequence, a drop-in for LayerNorm.

    This is the normalisation of SRe2L's BN-ViT (DeiT-Tiny-BN): statistics per channel over every token of every
    sample, so the model has BatchNorm running statistics that SRe2L-style recovery can match. Inputs of any rank
    are flattened to ``(-1, C)`` and reshaped back.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return super().forward(x.reshape(-1, shape[-1])).reshape(shape)
