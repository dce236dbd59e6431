"""MobileNetV2 1.0× (timm ``mobilenetv2_100``) and 0.5× (timm ``mobilenetv2_050``).

Provenance: timm's ``mobilenetv2_100`` (timm's EfficientNet class, ReLU6, 1280-channel head) as it is; timm
supplies the feature contract. Small inputs (``stem="lowres"``, automatic for ``img_size <= 64``): stem conv and
stage 1 (24 channels) at stride 1, total stride 8, as in kuangliu's CIFAR MobileNetV2 that DWA evaluates on; see
:mod:`ddbench.models.efficientnet` for how the variant is built.

The 0.5× network is the "half" MobileNetV2 of the EDC / G-VBSM CIFAR and Tiny observer sets (spec ``edc.md`` §6),
built as timm's ``mobilenetv2_050`` (the same network as torchvision's ``mobilenet_v2(width_mult=0.5)``: widths
rounded to multiples of 8, 1280-channel head) with the low-res rule above. Deviations from RepDistiller's
``mobile_half`` that EDC's code uses: there, widths are truncated instead of rounded (8/12/16/32/48/80/160
instead of 8/16/16/32/48/80/160), the t = 1 block keeps a 1×1 expansion conv, the activation is ReLU instead of
ReLU6, and only stage 2 runs at stride 1 (total stride 16, a 2×2 map at 32 px, instead of ddbench's 8).
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


def mobilenetv2_050(
    num_classes: int = 1000, img_size: int = 224, in_chans: int = 3, stem: str = "auto", **kwargs: Any
) -> EfficientNet:
    """MobileNetV2 0.5× (timm ``mobilenetv2_050``), EDC's "half" observer; total stride 8 for ``img_size <= 64``."""
    return build_timm_efficientnet("mobilenetv2_050", num_classes, img_size, in_chans, stem, **kwargs)
