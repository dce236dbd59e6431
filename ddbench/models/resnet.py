"""ResNet-18/50/101: torchvision's definitions with a stem option and timm's feature contract.

Provenance: ``torchvision.models.resnet.ResNet`` (BasicBlock / Bottleneck, torchvision's init) subclassed, not
copied. Parameter names are torchvision's, so torchvision and SRe2L/DWA checkpoints load as they are.

Small inputs (``stem="lowres"``, chosen automatically for ``img_size <= 64``): the SRe2L/DWA CIFAR/Tiny network
(after MoCo's CIFAR ResNet), ``conv1`` = 3×3 stride 1 padding 1 without bias and ``maxpool`` = Identity; nothing
else changes (layer strides 1, 2, 2, 2), so layer4 is 4×4 at 32 px and 8×8 at 64 px. At 224 px
(``stem="imagenet"``) the network is the unmodified torchvision one, down to the initialisation sequence.
``in_chans != 3`` only changes ``conv1``'s input channels.

``width_mult`` scales the base width (64 → ``round(64·m)``; stages w, 2w, 4w, 8w) with depth and every BatchNorm
kept: spec sre2l-dwa §10's CPU-trainable teacher is ResNet-18 at ×0.25 (16 base channels). Rebuilt stages get
torchvision's initialisation (Kaiming fan-out convolutions, unit BatchNorm).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from ddbench.models._layers import norm2d
from ddbench.models._stems import StemSpec, resolve_stem

logger = logging.getLogger(__name__)

STEMS: dict[str, StemSpec] = {
    "imagenet": StemSpec(kernel=7, stride=2, pool=True),  # torchvision
    "lowres": StemSpec(kernel=3, stride=1, pool=False),  # SRe2L/DWA, MoCo CIFAR
}


class ResNet(tv_resnet.ResNet):
    """torchvision ResNet whose stem is a constructor option.

    Variants: ``stem="imagenet"`` (7×7/2 conv + 3×3/2 max-pool) and ``stem="lowres"`` (3×3/1 conv, no max-pool).
    The stem conv is rebuilt inside ``__init__`` only when it differs from torchvision's (low-res stem or
    ``in_chans != 3``); it keeps its place in ``modules()`` order, so ``bn1`` stays the first BatchNorm2d, which
    SRe2L/DWA's first-BN multiplier relies on.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage.
        num_classes: classifier width.
        in_chans: input channels (1 for MNIST and digits).
        stem: ``"imagenet"`` or ``"lowres"`` (resolve ``"auto"`` with :func:`~ddbench.models._stems.resolve_stem`).
        channels: base width (torchvision: 64); the stages are ``channels·(1, 2, 4, 8)``.
        **kwargs: passed to torchvision's ResNet (``zero_init_residual``, ``norm_layer``, ...).
    """

    def __init__(
        self,
        block: type[tv_resnet.BasicBlock | tv_resnet.Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: str = "imagenet",
        channels: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(block, layers, num_classes=num_classes, **kwargs)
        if channels != self.conv1.out_channels:
            self._rebuild_stages(block, layers, num_classes, channels, kwargs.get("zero_init_residual", False))
        spec = STEMS[stem]
        if spec != STEMS["imagenet"] or in_chans != 3 or channels != 64:
            self.conv1 = nn.Conv2d(in_chans, channels, spec.kernel, spec.stride, spec.padding, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
        if not spec.pool:
            self.maxpool = nn.Identity()
        self.stem = stem
        self.in_chans = in_chans
        self.num_features = self.fc.in_features

    def _rebuild_stages(
        self, block: type[nn.Module], layers: list[int], num_classes: int, channels: int, zero_init_residual: bool
    ) -> None:
        """Replace bn1, layer1-4 and fc by ``channels``-based ones (same attribute slots, so module order holds)."""
        self.inplanes = channels
        self.bn1 = self._norm_layer(channels)
        for i, n in enumerate(layers):
            stage = self._make_layer(block, channels << i, n, stride=1 if i == 0 else 2)
            setattr(self, f"layer{i + 1}", stage)
            for m in stage.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif zero_init_residual and isinstance(m, tv_resnet.Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif zero_init_residual and isinstance(m, tv_resnet.BasicBlock):
                    nn.init.zeros_(m.bn2.weight)
        self.fc = nn.Linear((channels << 3) * block.expansion, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The layer4 output (after the last block's residual add and ReLU), before global pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global-average-pool the layer4 map; return the pooled vector if ``pre_logits``, else the logits."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:  # torchvision's forward delegates here
        return self.forward(x)


def _resnet(
    block: type[tv_resnet.BasicBlock | tv_resnet.Bottleneck],
    layers: list[int],
    num_classes: int,
    img_size: int,
    in_chans: int,
    stem: str,
    width_mult: float = 1.0,
    **kwargs: Any,
) -> ResNet:
    stem = resolve_stem(stem, img_size)
    channels = max(1, round(64 * width_mult))
    logger.debug("ResNet%s: img_size=%d in_chans=%d → %s stem, %d base channels", layers, img_size, in_chans, stem,
                 channels)  # fmt: skip
    return ResNet(block, layers, num_classes=num_classes, in_chans=in_chans, stem=stem, channels=channels, **kwargs)


def resnet18(
    num_classes: int = 1000, img_size: int = 224, in_chans: int = 3, stem: str = "auto", **kwargs: Any
) -> ResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]); low-res stem for ``img_size <= 64`` unless ``stem`` says otherwise."""
    return _resnet(tv_resnet.BasicBlock, [2, 2, 2, 2], num_classes, img_size, in_chans, stem, **kwargs)


def resnet50(
    num_classes: int = 1000, img_size: int = 224, in_chans: int = 3, stem: str = "auto", **kwargs: Any
) -> ResNet:
    """ResNet-50 (Bottleneck, [3, 4, 6, 3]); low-res stem for ``img_size <= 64`` unless ``stem`` says otherwise."""
    return _resnet(tv_resnet.Bottleneck, [3, 4, 6, 3], num_classes, img_size, in_chans, stem, **kwargs)


def resnet101(
    num_classes: int = 1000, img_size: int = 224, in_chans: int = 3, stem: str = "auto", **kwargs: Any
) -> ResNet:
    """ResNet-101 (Bottleneck, [3, 4, 23, 3]); low-res stem for ``img_size <= 64`` unless ``stem`` says otherwise."""
    return _resnet(tv_resnet.Bottleneck, [3, 4, 23, 3], num_classes, img_size, in_chans, stem, **kwargs)


def resnet18_in(
    num_classes: int = 1000, img_size: int = 224, in_chans: int = 3, stem: str = "auto", **kwargs: Any
) -> ResNet:
    """ResNet-18 with instance norm (GroupNorm(C, C), IDC's ``--norm_type instance``), the Minimax student (§5).

    Whether the paper's ResNet-18 row used instance norm (the script default) is not confirmed (spec §11).
    """
    return resnet18(num_classes, img_size, in_chans, stem, norm_layer=_instance_norm, **kwargs)


def _instance_norm(channels: int) -> nn.Module:
    return norm2d("instance", channels)
