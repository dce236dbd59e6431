"""EfficientNet-B0 (timm ``efficientnet_b0``) and the shared low-res variant of timm's EfficientNet class.

Provenance: timm's ``EfficientNet`` class and its ``efficientnet_b0`` / ``mobilenetv2_100`` generators, used as
they are (no pretrained weights are ever requested); timm supplies ``forward_features`` / ``forward_head`` /
``num_features``. :mod:`ddbench.models.mobilenet` builds MobileNetV2 through :func:`build_timm_efficientnet` too,
because timm implements both with the same class.

Small inputs (``stem="lowres"``, automatic for ``img_size <= 64``): the stem conv and the first strided stage
(stage 1, 24 channels, in both networks) run at stride 1, so the total stride drops from 32 to 8 (4×4 at 32 px,
8×8 at 64 px, 4×4 at 28 px, 1×1 at 8 px). This is kuangliu's CIFAR MobileNetV2 (DWA's CIFAR student), applied to
EfficientNet-B0 with the same rule. No weights or channels change. timm's ``EfficientNet.__init__`` hard-codes the
stem stride, so the variant is applied by :func:`_lowres_strides`, the one place that edits a built timm model:
only two ``Conv2d.stride`` attributes (timm's static padding for odd kernels does not depend on the stride) and
the ``feature_info`` reductions change.
"""

from __future__ import annotations

import logging
from typing import Any

import timm
from timm.models.efficientnet import EfficientNet
from torch import nn

from ddbench.models._stems import resolve_stem

logger = logging.getLogger(__name__)


def _unstride(conv: nn.Module) -> None:
    """Set a static-padded odd-kernel conv to stride 1; refuse anything whose padding depends on the stride."""
    if type(conv) is not nn.Conv2d or conv.padding != tuple(k // 2 for k in conv.kernel_size):
        raise TypeError(f"cannot make {conv!r} stride 1 without changing its padding (TF-'same' variant?)")
    conv.stride = (1, 1)


def _lowres_strides(model: EfficientNet) -> EfficientNet:
    """The low-res variant of a timm EfficientNet-class model: stem and first strided stage at stride 1."""
    strided = [i for i, stage in enumerate(model.blocks) if stage[0].conv_dw.stride != (1, 1)]
    first = strided[0]
    _unstride(model.conv_stem)
    _unstride(model.blocks[first][0].conv_dw)
    for info in model.feature_info:  # keep timm's features_only metadata truthful
        stage = int(info["module"].split(".")[1]) if info["module"].startswith("blocks.") else -1
        info["reduction"] = max(1, info["reduction"] // (4 if stage >= first else 2))
    return model


def build_timm_efficientnet(
    timm_name: str, num_classes: int, img_size: int, in_chans: int, stem: str = "auto", **kwargs: Any
) -> EfficientNet:
    """Build timm's ``timm_name`` (an EfficientNet-class model) for this input size.

    Args:
        timm_name: a timm model name implemented by ``timm.models.efficientnet.EfficientNet``.
        num_classes: classifier width.
        img_size: input size; selects the stem when ``stem="auto"``.
        in_chans: input channels.
        stem: ``"auto"``, ``"lowres"`` or ``"imagenet"``.
        **kwargs: passed to ``timm.create_model`` (``drop_rate``, ``drop_path_rate``, ...).
    """
    stem = resolve_stem(stem, img_size)
    logger.debug("%s: img_size=%d in_chans=%d → %s stem", timm_name, img_size, in_chans, stem)
    model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if stem == "lowres":
        _lowres_strides(model)
    model.stem = stem
    return model


def efficientnet_b0(
    num_classes: int = 1000, img_size: int = 224, in_chans: int = 3, stem: str = "auto", **kwargs: Any
) -> EfficientNet:
    """EfficientNet-B0 (timm ``efficientnet_b0``); total stride 8 for ``img_size <= 64`` by default."""
    return build_timm_efficientnet("efficientnet_b0", num_classes, img_size, in_chans, stem, **kwargs)
