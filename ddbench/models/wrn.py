"""Wide ResNet (Zagoruyko & Komodakis 2016), CIFAR form: WRN-16-2, an EDC / G-VBSM observer on CIFAR and Tiny.

Provenance: the architecture of the WRN paper as used by RepDistiller (``wrn_16_2``), which the G-VBSM and EDC
observer sets take for CIFAR-10/100 and Tiny-ImageNet (spec ``edc.md`` §6), written here from that description;
timm and torchvision only define the ImageNet bottleneck variants (``wide_resnet50_2``), so there is nothing to
reuse. Depth d = 6n + 4 gives n pre-activation BasicBlocks per group (BN → ReLU → 3×3 conv → BN → ReLU → 3×3
conv, bias-free convs, a 1×1 projection on the pre-activated input when the width changes), groups of width
16k, 32k, 64k at strides 1, 2, 2 after a 3×3 16-channel stem conv, then BN → ReLU → global average pool → Linear.
Initialisation as RepDistiller: convs N(0, 2/(k²·C_out)), unit BatchNorm, zero Linear bias.

Input sizes (:mod:`ddbench.models._stems`): WRN is a CIFAR-native network, so its ``"lowres"`` variant
(``img_size <= 64``) is the original one, total stride 4: 8×8 at 32 px, 16×16 at 64 px, 7×7 at 28 px, 2×2 at
8 px. It does not follow the stride-8 rule of the ImageNet families, whose low-res variants *remove* two early
downsamplings; WRN has none to remove. The ``"imagenet"`` variant (ddbench's choice; WRN has no published
ImageNet form of this depth) adds ResNet's ImageNet stem downsamplings in front: a 7×7 stride-2 stem conv and a
3×3 stride-2 max-pool, total stride 16 (14×14 at 224 px).

Deviation from RepDistiller: the final pool is a global average, where RepDistiller's ``avg_pool2d(out, 8)`` only
pools globally at 32 px (at 64 px it would leave 2×2 and break the classifier's reshape). Identical at 32 px.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from ddbench.models._stems import StemSpec, resolve_stem

logger = logging.getLogger(__name__)

STEMS: dict[str, StemSpec] = {
    "lowres": StemSpec(kernel=3, stride=1, pool=False),  # the CIFAR WRN
    "imagenet": StemSpec(kernel=7, stride=2, pool=True),  # ddbench: ResNet's ImageNet stem in front
}


class PreActBlock(nn.Module):
    """WRN BasicBlock: BN → ReLU → conv3×3(stride) → BN → ReLU → conv3×3, plus an identity or 1×1 shortcut.

    When the width changes, the shortcut projects the *pre-activated* input (as the WRN reference code does).
    """

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chans)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chans, out_chans, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chans, out_chans, kernel_size=3, stride=1, padding=1, bias=False)
        self.equal = in_chans == out_chans and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-d-k for small images (CIFAR), with the ddbench stem option.

    Args:
        depth: 6n + 4 (16 → two blocks per group).
        widen_factor: k; group widths 16k, 32k, 64k.
        num_classes: classifier width.
        in_chans: input channels.
        stem: ``"lowres"`` (the CIFAR network) or ``"imagenet"`` (with ResNet's stride-4 stem in front).
    """

    def __init__(
        self, depth: int = 16, widen_factor: int = 2, num_classes: int = 10, in_chans: int = 3, stem: str = "lowres"
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        spec = STEMS[stem]
        self.conv1 = nn.Conv2d(in_chans, widths[0], spec.kernel, spec.stride, spec.padding, bias=False)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if spec.pool else nn.Identity()
        groups = []
        for g, stride in enumerate((1, 2, 2)):
            blocks = [PreActBlock(widths[g] if i == 0 else widths[g + 1], widths[g + 1], stride if i == 0 else 1)
                      for i in range(n)]  # fmt: skip
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        self.num_features = widths[3]
        self.depth, self.widen_factor, self.stem, self.in_chans = depth, widen_factor, stem, in_chans
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last group's map after the final BN and ReLU, before global pooling."""
        x = self.maxpool(self.conv1(x))
        return self.relu(self.bn1(self.block3(self.block2(self.block1(x)))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global-average-pool; return the pooled vector if ``pre_logits``, else the logits."""
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def wrn16_2(
    num_classes: int = 10, img_size: int = 32, in_chans: int = 3, stem: str = "auto", **kwargs: Any
) -> WideResNet:
    """WRN-16-2 (the EDC/G-VBSM CIFAR observer); the CIFAR network for ``img_size <= 64`` by default."""
    stem = resolve_stem(stem, img_size)
    logger.debug("wrn16_2: img_size=%d in_chans=%d → %s stem", img_size, in_chans, stem)
    return WideResNet(16, 2, num_classes=num_classes, in_chans=in_chans, stem=stem, **kwargs)
