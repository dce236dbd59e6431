"""ConvNet of the DC/DSA/DM/MTT line (``ConvNet``, ``ConvNetD4``, ``ConvNetD5``, ``ConvNetBN``) and EDC's variants.

Provenance: the architecture described in ``specs/mtt.md`` §1 (MTT ``networks.py`` / DC ``utils.py``), written
here from that description: ``depth`` blocks of Conv2d(3×3, ``width``, bias) → norm → ReLU → AvgPool2d(2), then
flatten and one Linear. Norms: ``"instance"`` (MTT's default: GroupNorm with one group per channel, affine),
``"batch"`` (``convnet_bn``) or ``"none"``. Module names (``features.N``, ``classifier``) follow the upstream
layout, where a ``"none"`` norm adds no layer.

Input sizes (:mod:`ddbench.models._stems`): the default depth pools down to about 4×4: 3 at 32 px
(ConvNet-3, 2048 features), 4 at 64 (ConvNetD4), 5 at 128 (ConvNetD5) and 224 (7×7), and at least 2, so 8-px
digits get depth 2 (2×2×128 = 512 features). 28-px inputs (MNIST family) follow DC/MTT: the first conv is padded
by 3, which turns 28 into 32, so ConvNet-3 again ends at 4×4 (upstream keys this on ``channel == 1``; ddbench keys
it on the size, so 1-channel 8-px digits are not padded).

The classifier reads the flattened map, so ``num_features`` is ``width·h·w`` and ``forward_head(...,
pre_logits=True)`` is that flattened vector (MTT's ``embed``), not a global average.

Named variants of the EDC / G-VBSM CIFAR observer set (spec ``edc.md`` §6), instance norm, so they contribute
convolution statistics only: ``convnet_d1`` / ``convnet_d2`` (width 128, depth fixed at 1 / 2 whatever the input
size: 16×16 / 8×8 maps at 32 px) and ``convnet_w32`` (width 32, depth from the size rule). They are registered
names rather than kwargs so that an observer set can list them beside full-width ConvNets.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ddbench.models._layers import norm2d
from ddbench.models._stems import convnet_depth, convnet_effective_size

logger = logging.getLogger(__name__)


class ConvNet(nn.Module):
    """MTT's ConvNet.

    Args:
        num_classes: classifier width.
        img_size: input size; sets the classifier's input width and the first conv's padding.
        in_chans: input channels.
        width: channels of every conv (128 in the papers).
        depth: number of conv blocks; ``None`` applies :func:`~ddbench.models._stems.convnet_depth`.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
    """

    def __init__(
        self,
        num_classes: int,
        img_size: int = 32,
        in_chans: int = 3,
        width: int = 128,
        depth: int | None = None,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        depth = depth or convnet_depth(img_size)
        size = convnet_effective_size(img_size)
        if size >> depth < 1:
            raise ValueError(f"depth {depth} pools a {img_size}-px input below 1×1")
        first_pad = 1 + (size - img_size) // 2
        layers: list[nn.Module] = []
        chans = in_chans
        for d in range(depth):
            layers.append(nn.Conv2d(chans, width, kernel_size=3, padding=first_pad if d == 0 else 1))
            if norm != "none":
                layers.append(norm2d(norm, width))
            layers += [nn.ReLU(inplace=True), nn.AvgPool2d(kernel_size=2, stride=2)]
            chans = width
        self.features = nn.Sequential(*layers)
        final = size >> depth
        self.num_features = width * final * final
        self.classifier = nn.Linear(self.num_features, num_classes)
        self.depth, self.width, self.norm, self.in_chans = depth, width, norm, in_chans

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's pooled map ``[N, width, h, w]``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Flatten the map (MTT's embedding); the logits unless ``pre_logits``."""
        x = torch.flatten(x, 1)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def convnet(
    num_classes: int = 10, img_size: int = 32, in_chans: int = 3, width_mult: float = 1.0, **kwargs: Any
) -> ConvNet:
    """MTT's ConvNet (width 128, instance norm, depth from ``img_size``); ``width``/``depth``/``norm`` override.

    ``width_mult`` scales the default width (128 → ``round(128·m)``) unless ``width`` is given.
    """
    kwargs.setdefault("width", max(1, round(128 * width_mult)))
    model = ConvNet(num_classes, img_size=img_size, in_chans=in_chans, **kwargs)
    logger.debug("convnet: img_size=%d → depth %d, norm %s, %d features", img_size, model.depth, model.norm,
                 model.num_features)  # fmt: skip
    return model


def convnet_bn(
    num_classes: int = 10, img_size: int = 32, in_chans: int = 3, width_mult: float = 1.0, **kwargs: Any
) -> ConvNet:
    """The ConvNet with BatchNorm (MTT's ``ConvNetBN``; DWA's "ConvNet-128" needs a BN-equipped ConvNet)."""
    return convnet(num_classes, img_size, in_chans, width_mult, **{"norm": "batch", **kwargs})


def convnet_d1(
    num_classes: int = 10, img_size: int = 32, in_chans: int = 3, width_mult: float = 1.0, **kwargs: Any
) -> ConvNet:
    """EDC's ConvNetD1: one conv block (width 128, instance norm) at every input size."""
    return convnet(num_classes, img_size, in_chans, width_mult, **{"depth": 1, **kwargs})


def convnet_d2(
    num_classes: int = 10, img_size: int = 32, in_chans: int = 3, width_mult: float = 1.0, **kwargs: Any
) -> ConvNet:
    """EDC's ConvNetD2: two conv blocks (width 128, instance norm) at every input size."""
    return convnet(num_classes, img_size, in_chans, width_mult, **{"depth": 2, **kwargs})


def convnet_w32(num_classes: int = 10, img_size: int = 32, in_chans: int = 3, **kwargs: Any) -> ConvNet:
    """EDC's ConvNetW32: width 32 (instance norm), depth from the input size (3 at 32 px)."""
    return convnet(num_classes, img_size, in_chans, **{"width": 32, **kwargs})


def convnet_d6(num_classes: int = 10, img_size: int = 224, in_chans: int = 3, **kwargs: Any) -> ConvNet:
    """IDC/Minimax's ConvNet-6 (``-n convnet --depth 6``): six blocks of width 128, instance norm (3×3 map at 224)."""
    return convnet(num_classes, img_size, in_chans, **{"depth": 6, **kwargs})
