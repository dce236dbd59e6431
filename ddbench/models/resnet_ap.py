"""ResNetAP-10 of IDC and Minimax: ResNet-10 whose downsampling is average pooling instead of strided convs.

Provenance: the architecture described in ``specs/minimax.md`` §5 (IDC ``models/resnet_ap.py``, used by Minimax
with ``-n resnet_ap --depth 10 --norm_type instance``), written here from that description:

* BasicBlock stages ``[1, 1, 1, 1]``, stage strides 1, 2, 2, 2. A "strided" block runs conv1 (3×3, stride 1) →
  norm → ReLU → 2×2 average pool → conv2 → norm; its shortcut is 1×1 conv → 2×2 average pool → norm. Every conv is
  bias-free; the residual add is followed by ReLU.
* ``stem="imagenet"`` (IDC's "large" net, ``img_size > 64`` by default): 7×7 stride-1 conv (64) → norm → ReLU →
  4×4 average pool, widths 64/128/256/512 (56, 28, 14, 7 px at 224).
* ``stem="lowres"`` (IDC's "small" net, ``img_size <= 64`` by default): 3×3 stride-1 conv (32) → norm → ReLU, no
  pool, widths 32/64/128/256 (4×4 at 32 px, 8×8 at 64 px, 1×1 at 8 px).
* global average pool, then Linear. Norm ``"instance"`` (GroupNorm(C, C), the Minimax setting) by default;
  ``"batch"`` and ``"none"`` are available. PyTorch's default initialisation.

Deviation: IDC's shortcut pools whenever it projects; here it pools only in strided blocks (the two coincide for
every configuration above).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ddbench.models._layers import norm2d
from ddbench.models._stems import resolve_stem

logger = logging.getLogger(__name__)

WIDTHS = {"lowres": (32, 64, 128, 256), "imagenet": (64, 128, 256, 512)}


class APBasicBlock(nn.Module):
    """BasicBlock that downsamples by 2×2 average pooling after its first conv (and in its shortcut)."""

    def __init__(self, in_chans: int, planes: int, stride: int = 1, norm: str = "instance") -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_chans, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = norm2d(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = norm2d(norm, planes)
        shortcut: list[nn.Module] = []
        if stride != 1 or in_chans != planes:
            shortcut.append(nn.Conv2d(in_chans, planes, kernel_size=1, stride=1, bias=False))
            if stride != 1:
                shortcut.append(nn.AvgPool2d(kernel_size=stride, stride=stride))
            shortcut.append(norm2d(norm, planes))
        self.shortcut = nn.Sequential(*shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.stride != 1:
            out = F.avg_pool2d(out, kernel_size=self.stride, stride=self.stride)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetAP(nn.Module):
    """ResNetAP (IDC) with BasicBlocks.

    Args:
        layers: blocks per stage (``[1, 1, 1, 1]`` for ResNetAP-10).
        num_classes: classifier width.
        in_chans: input channels.
        stem: ``"lowres"`` (IDC "small") or ``"imagenet"`` (IDC "large").
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
    """

    def __init__(
        self,
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: str = "imagenet",
        norm: str = "instance",
    ) -> None:
        super().__init__()
        widths = WIDTHS[stem]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=7, stride=1, padding=3, bias=False)
            self.pool = nn.AvgPool2d(kernel_size=4, stride=4)
        else:
            self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
            self.pool = nn.Identity()
        self.bn1 = norm2d(norm, widths[0])
        chans = widths[0]
        for i, (planes, blocks) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            stage = [
                APBasicBlock(chans if j == 0 else planes, planes, stride if j == 0 else 1, norm) for j in range(blocks)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            chans = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(chans, num_classes)
        self.num_features = chans
        self.stem, self.norm, self.in_chans = stem, norm, in_chans

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The layer4 output (after the residual add and ReLU), before global pooling."""
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global-average-pool; the pooled vector if ``pre_logits``, else the logits."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def resnet_ap10(
    num_classes: int = 10, img_size: int = 32, in_chans: int = 3, stem: str = "auto", **kwargs: Any
) -> ResNetAP:
    """ResNetAP-10 (IDC/Minimax); IDC's "small" net for ``img_size <= 64`` by default, instance norm."""
    stem = resolve_stem(stem, img_size)
    logger.debug("resnet_ap10: img_size=%d in_chans=%d → %s stem", img_size, in_chans, stem)
    return ResNetAP([1, 1, 1, 1], num_classes=num_classes, in_chans=in_chans, stem=stem, **kwargs)
