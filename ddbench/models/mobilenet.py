"""MobileNetV2 1.0× (timm ``mobilenetv2_100``).

Provenance: timm's ``mobilenetv2_100`` (timm's EfficientNet class, ReLU6, 1280-channel head) as it is; timm
supplies the feature contract. Small inputs (``stem="lowres"``, automatic for ``img_size <= 64``): stem conv and
stage 1 (24 channels) at stride 1, total stride 8, as in kuangliu's CIFAR MobileNetV2 that DWA evaluates on; see
:mod:`ddbench.models.efficientnet` for how the variant is built.
"""

from __future__ import annotations

from typing import Any

from timm.models.efficientnet import EfficientNet

from ddbench.models.efficientnet import build_timm_efficientnet


def mobilenetv2(
    num_classes: int = 1000, img_size: int = 224, in_chans: int = 3, stem: str = "auto", **kwargs: Any
) -> EfficientNet:
    """MobileNetV2 1.0× (timm ``mobilenetv2_100``); total stride 8 for ``img_size <= 64`` by default."""
    return build_timm_efficientnet("mobilenetv2_100", num_classes, img_size, in_chans, stem, **kwargs)
