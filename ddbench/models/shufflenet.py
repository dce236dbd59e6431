"""ShuffleNetV2 1.0× and 0.5×: torchvision's definition with a stem option and timm's feature contract.

Provenance: ``torchvision.models.shufflenetv2.ShuffleNetV2`` with ``shufflenet_v2_x1_0``'s configuration (repeats
4/8/4, channels 24/116/232/464/1024) subclassed, not copied; timm has no ShuffleNet. Parameter names are
torchvision's.

Small inputs (``stem="lowres"``, automatic for ``img_size <= 64``): the stem conv runs at stride 1 and the stem
max-pool is Identity, the same two removals as the low-res ResNet, so the total stride is 8 (4×4 at 32 px, 8×8 at
64 px, 1×1 at 8 px). DWA's CIFAR "ShuffleNetG2" is a different (ShuffleNetV1) network and is not reproduced here.

``shufflenetv2_x0_5`` is torchvision's ``shufflenet_v2_x0_5`` configuration (channels 24/48/96/192/1024): EDC's
ImageNet observer as it is, and its CIFAR/Tiny "ShuffleNetV2-0.5" observer (spec ``edc.md`` §6) with the low-res
stem above. Deviation: EDC's CIFAR copy uses a 1×1 stride-1 stem conv; ddbench keeps the family's 3×3 kernel.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torchvision.models import shufflenetv2 as tv_shufflenet

from ddbench.models._stems import StemSpec, resolve_stem

logger = logging.getLogger(__name__)

STEMS: dict[str, StemSpec] = {
    "imagenet": StemSpec(kernel=3, stride=2, pool=True),  # torchvision
    "lowres": StemSpec(kernel=3, stride=1, pool=False),
}
X1_0 = {"stages_repeats": [4, 8, 4], "stages_out_channels": [24, 116, 232, 464, 1024]}
X0_5 = {"stages_repeats": [4, 8, 4], "stages_out_channels": [24, 48, 96, 192, 1024]}


class ShuffleNetV2(tv_shufflenet.ShuffleNetV2):
    """torchvision ShuffleNetV2 whose stem is a constructor option.

    The stem conv (``conv1[0]``) is rebuilt inside ``__init__`` only when it differs from torchvision's (low-res
    stride or ``in_chans != 3``). torchvision uses PyTorch's default init for ShuffleNetV2, so the rebuilt conv is
    initialised exactly like the original.

    Args:
        stages_repeats: blocks in stages 2-4.
        stages_out_channels: stem, stage 2-4 and conv5 widths.
        num_classes: classifier width.
        in_chans: input channels.
        stem: ``"imagenet"`` or ``"lowres"``.
        **kwargs: passed to torchvision's ShuffleNetV2.
    """

    def __init__(
        self,
        stages_repeats: list[int],
        stages_out_channels: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: str = "imagenet",
        **kwargs: Any,
    ) -> None:
        super().__init__(stages_repeats, stages_out_channels, num_classes=num_classes, **kwargs)
        spec = STEMS[stem]
        if spec != STEMS["imagenet"] or in_chans != 3:
            width = stages_out_channels[0]
            self.conv1[0] = nn.Conv2d(in_chans, width, spec.kernel, spec.stride, spec.padding, bias=False)
        if not spec.pool:
            self.maxpool = nn.Identity()
        self.stem = stem
        self.in_chans = in_chans
        self.num_features = self.fc.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The conv5 map (1024 channels after BN and ReLU), before global pooling."""
        x = self.maxpool(self.conv1(x))
        return self.conv5(self.stage4(self.stage3(self.stage2(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global-average-pool; return the pooled vector if ``pre_logits``, else the logits."""
        x = x.mean([2, 3])
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


def shufflenetv2(
    num_classes: int = 1000, img_size: int = 224, in_chans: int = 3, stem: str = "auto", **kwargs: Any
) -> ShuffleNetV2:
    """ShuffleNetV2 1.0× (torchvision ``shufflenet_v2_x1_0``); low-res stem for ``img_size <= 64`` by default."""
    stem = resolve_stem(stem, img_size)
    logger.debug("shufflenetv2: img_size=%d in_chans=%d → %s stem", img_size, in_chans, stem)
    return ShuffleNetV2(**X1_0, num_classes=num_classes, in_chans=in_chans, stem=stem, **kwargs)


def shufflenetv2_x0_5(
    num_classes: int = 1000, img_size: int = 224, in_chans: int = 3, stem: str = "auto", **kwargs: Any
) -> ShuffleNetV2:
    """ShuffleNetV2 0.5× (torchvision ``shufflenet_v2_x0_5``); low-res stem for ``img_size <= 64`` by default."""
    stem = resolve_stem(stem, img_size)
    logger.debug("shufflenetv2_x0_5: img_size=%d in_chans=%d → %s stem", img_size, in_chans, stem)
    return ShuffleNetV2(**X0_5, num_classes=num_classes, in_chans=in_chans, stem=stem, **kwargs)
