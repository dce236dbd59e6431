"""AlexNet: torchvision's definition at ImageNet sizes, the DC/DSA/MTT benchmark AlexNet at small sizes.

AlexNet has no BatchNorm, so as an EDC observer (ImageNet-1k synthesis and soft-label set, spec ``edc.md``
§2.2, §4.5, §6) it contributes convolution-input statistics only.

* ``stem="imagenet"`` (``img_size > 64`` by default): ``torchvision.models.AlexNet`` subclassed, not copied
  (parameter names, initialisation and dropout 0.5 are torchvision's, so its checkpoints load as they are; EDC's
  ImageNet observer is torchvision's ``alexnet``). ``in_chans != 3`` rebuilds only ``features.0``.
* ``stem="lowres"`` (``img_size <= 64``): the AlexNet of the dataset-distillation benchmarks (DC ``utils.py``,
  the "AlexNet" of DC-BENCH, MTT and EDC's Table 11 cross-architecture checks), written here from its
  description: conv5×5(128) → ReLU → 2×2 max-pool → conv5×5(192) → ReLU → 2×2 max-pool → conv3×3(256) → ReLU →
  conv3×3(192) → ReLU → conv3×3(192) → ReLU → 2×2 max-pool, every conv with bias and "same" padding, then one
  Linear on the flattened map (4×4×192 = 3072 features at 32 px). Torchvision's 11×11 stride-4 stem would leave
  nothing of a 32-px image. The 28-px (MNIST-family) case pads the first conv by 4 (28 → 32), as DC does; DC
  keys that on ``channel == 1``, ddbench on the size, as for the ConvNet (:mod:`ddbench.models._stems`). Maps:
  4×4 at 32 and 28 px, 8×8 at 64 px, 1×1 at 8 px. PyTorch's default initialisation, as DC.

The feature contract: ``forward_features`` is the last max-pooled conv map. ``forward_head(..., pre_logits=True)``
is the flattened map for ``"lowres"`` (like the ConvNet's embedding), and the 4096-wide output of the second
hidden layer for ``"imagenet"`` (like VGG's).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torchvision.models import AlexNet as TorchvisionAlexNet

from ddbench.models._stems import convnet_effective_size, resolve_stem

logger = logging.getLogger(__name__)


class AlexNet(TorchvisionAlexNet):
    """torchvision's AlexNet with timm's feature contract and an ``in_chans`` option (ImageNet sizes)."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> None:
        super().__init__(num_classes=num_classes, dropout=dropout)
        if in_chans != 3:
            self.features[0] = nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2)
        self.stem = "imagenet"
        self.in_chans = in_chans
        self.num_features = self.classifier[-1].in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last max-pooled conv map (``[N, 256, 6, 6]`` at 224 px)."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Adaptive-pool to 6×6, flatten, run the hidden layers; the 4096-wide vector if ``pre_logits``."""
        x = self.classifier[:-1](torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.classifier[-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class AlexNetSmall(nn.Module):
    """The DC/MTT benchmark AlexNet for small images (see the module docstring).

    Args:
        num_classes: classifier width.
        img_size: input size; sets the classifier's input width and the first conv's padding.
        in_chans: input channels.
    """

    def __init__(self, num_classes: int = 10, img_size: int = 32, in_chans: int = 3) -> None:
        super().__init__()
        size = convnet_effective_size(img_size)
        if size < 8:
            raise ValueError(f"the small AlexNet pools three times; img_size {img_size} < 8 leaves no map")
        first_pad = 2 + (size - img_size) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 128, kernel_size=5, stride=1, padding=first_pad),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(128, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(192, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 192, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(192, 192, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        final = size // 8
        self.num_features = 192 * final * final
        self.fc = nn.Linear(self.num_features, num_classes)
        self.stem = "lowres"
        self.in_chans = in_chans

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last max-pooled conv map ``[N, 192, s/8, s/8]``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Flatten the map (DC's ``embed``); the logits unless ``pre_logits``."""
        x = torch.flatten(x, 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def alexnet(
    num_classes: int = 1000, img_size: int = 224, in_chans: int = 3, stem: str = "auto", **kwargs: Any
) -> nn.Module:
    """AlexNet: torchvision's for ``img_size > 64``, the DC benchmark AlexNet otherwise (unless ``stem`` says)."""
    stem = resolve_stem(stem, img_size)
    logger.debug("alexnet: img_size=%d in_chans=%d → %s variant", img_size, in_chans, stem)
    if stem == "imagenet":
        return AlexNet(num_classes=num_classes, in_chans=in_chans, **kwargs)
    return AlexNetSmall(num_classes=num_classes, img_size=img_size, in_chans=in_chans, **kwargs)
