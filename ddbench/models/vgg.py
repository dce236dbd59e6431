"""VGG-11-BN and VGG-16-BN: torchvision's layout at ImageNet sizes, the CIFAR-style VGG at small sizes.

Provenance: torchvision ``vgg11_bn`` / ``vgg16_bn`` (configurations "A" and "D", conv 3×3 with bias → BN → ReLU,
2×2 max-pools, torchvision's initialisation). The class is written here rather than subclassing torchvision's VGG,
because that constructor always allocates the 4096-wide classifier (≈120 M parameters) that the small variant
drops; module names (``features.N``, ``classifier.N``) match torchvision's, so its checkpoints load into the
``"imagenet"`` variant.

Small inputs (``stem="lowres"``, automatic for ``img_size <= 64``): the CIFAR-style VGG used by DWA and kuangliu's
pytorch-cifar: the same ``features``, then global average pooling and a single ``Linear(512, num_classes)``
(at 32 px the map is already 1×1, so this is exactly that network). For every variant, max-pools that would take
the map below 1×1 are dropped (:func:`~ddbench.models._stems.vgg_pool_plan`): 8 px keeps 3 pools (final 1×1),
28 px keeps 4 (final 1×1), 64 px keeps all 5 (final 2×2, averaged).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ddbench.models._stems import resolve_stem, vgg_pool_plan

logger = logging.getLogger(__name__)

# Conv widths per configuration; "M" is a 2×2 max-pool (torchvision / Simonyan & Zisserman configs A and D).
CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def make_features(cfg: list[int | str], in_chans: int, img_size: int) -> nn.Sequential:
    """conv3×3 → BN → ReLU stacks with the max-pools that :func:`vgg_pool_plan` keeps for ``img_size``."""
    keep = iter(vgg_pool_plan(img_size, num_pools=cfg.count("M")))
    layers: list[nn.Module] = []
    chans = in_chans
    for v in cfg:
        if v == "M":
            if next(keep):
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers += [nn.Conv2d(chans, int(v), kernel_size=3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
        chans = int(v)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG-BN with torchvision's 3-layer 4096-wide head (``"imagenet"``) or one linear layer (``"lowres"``).

    ``num_features`` is the width of the ``forward_head(..., pre_logits=True)`` vector: 4096 (after the second
    hidden linear + ReLU + dropout) for ``"imagenet"``, 512 (globally pooled features) for ``"lowres"``.

    Args:
        cfg: a :data:`CFGS` entry.
        num_classes: classifier width.
        img_size: input size (decides which max-pools exist).
        in_chans: input channels.
        stem: ``"imagenet"`` or ``"lowres"`` (here it selects the head; the name is shared with the other families).
        dropout: dropout of the ``"imagenet"`` head (torchvision's default 0.5).
    """

    def __init__(
        self,
        cfg: list[int | str],
        num_classes: int = 1000,
        img_size: int = 224,
        in_chans: int = 3,
        stem: str = "imagenet",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.in_chans = in_chans
        self.features = make_features(cfg, in_chans, img_size)
        width = int([v for v in cfg if v != "M"][-1])
        if stem == "imagenet":
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(width * 7 * 7, 4096),
                nn.ReLU(True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, 4096),
                nn.ReLU(True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, num_classes),
            )
            self.num_features = 4096
        else:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.classifier = nn.Linear(width, num_classes)
            self.num_features = width
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's VGG initialisation, for both heads.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv stage's map (after its kept max-pool), before pooling."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, flatten and (``"imagenet"``) run the hidden layers; the penultimate vector if ``pre_logits``."""
        x = torch.flatten(self.avgpool(x), 1)
        if isinstance(self.classifier, nn.Sequential):
            x = self.classifier[:-1](x)
            return x if pre_logits else self.classifier[-1](x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _vgg(cfg: str, num_classes: int, img_size: int, in_chans: int, stem: str, **kwargs: Any) -> VGG:
    stem = resolve_stem(stem, img_size)
    logger.debug("VGG-%s-BN: img_size=%d in_chans=%d → %s head", cfg, img_size, in_chans, stem)
    return VGG(CFGS[cfg], num_classes=num_classes, img_size=img_size, in_chans=in_chans, stem=stem, **kwargs)


def vgg11_bn(num_classes: int = 1000, img_size: int = 224, in_chans: int = 3, stem: str = "auto", **kwargs: Any) -> VGG:
    """VGG-11 with BatchNorm (config "A"); CIFAR-style single-linear head for ``img_size <= 64`` by default."""
    return _vgg("A", num_classes, img_size, in_chans, stem, **kwargs)


def vgg16_bn(num_classes: int = 1000, img_size: int = 224, in_chans: int = 3, stem: str = "auto", **kwargs: Any) -> VGG:
    """VGG-16 with BatchNorm (config "D"); CIFAR-style single-linear head for ``img_size <= 64`` by default."""
    return _vgg("D", num_classes, img_size, in_chans, stem, **kwargs)
