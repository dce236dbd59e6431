"""The model zoo: one factory for every architecture teachers and students use.

``create_model(arch, num_classes, img_size, in_chans)`` builds any registered architecture. Definitions come
from timm or torchvision wherever they exist; small-input stems (the SRe2L/DWA low-res ResNet: 3×3 stride-1
stem, no max-pool, and equivalents for the other families) are construction-time variants chosen from
``img_size`` (``stem="auto"``: low-res for ``img_size <= 64``). The rules for every family live in
:mod:`ddbench.models._stems`. The one edit of a built model is timm's EfficientNet class (MobileNetV2,
EfficientNet-B0), whose constructor hard-codes the stem stride; :mod:`ddbench.models.efficientnet` confines it
to one named builder that changes two stride attributes.

Every model returned here follows one feature contract, used by the diversity metric and herding:

* ``forward(x)`` → logits ``[N, num_classes]``.
* ``forward_features(x)`` → the last feature map before global pooling (ResNet: the layer4 block output after the
  residual add and ReLU) or tokens for transformers.
* ``forward_head(features, pre_logits=True)`` → the pooled penultimate vector ``[N, num_features]``.
* ``num_features`` → its width.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ddbench.registry import Registry

if TYPE_CHECKING:
    from torch import nn

ARCHS: Registry[Any] = Registry("architecture")

_BUILTIN = {
    "resnet18": "ddbench.models.resnet:resnet18",
    "resnet50": "ddbench.models.resnet:resnet50",
    "resnet101": "ddbench.models.resnet:resnet101",
    "mobilenetv2": "ddbench.models.mobilenet:mobilenetv2",
    "shufflenetv2": "ddbench.models.shufflenet:shufflenetv2",
    "efficientnet_b0": "ddbench.models.efficientnet:efficientnet_b0",
    "vgg11_bn": "ddbench.models.vgg:vgg11_bn",
    "vgg16_bn": "ddbench.models.vgg:vgg16_bn",
    "deit_tiny_bn": "ddbench.models.deit_bn:deit_tiny_bn",
    "convnet": "ddbench.models.convnet:convnet",
    "convnet_bn": "ddbench.models.convnet:convnet_bn",
    "resnet_ap10": "ddbench.models.resnet_ap:resnet_ap10",
    # IDC / Minimax students (spec minimax.md §5), instance norm
    "convnet_d6": "ddbench.models.convnet:convnet_d6",
    "resnet18_in": "ddbench.models.resnet:resnet18_in",
    # EDC / G-VBSM observers (spec edc.md §6)
    "wrn16_2": "ddbench.models.wrn:wrn16_2",
    "alexnet": "ddbench.models.alexnet:alexnet",
    "mobilenetv2_050": "ddbench.models.mobilenet:mobilenetv2_050",
    "shufflenetv2_x0_5": "ddbench.models.shufflenet:shufflenetv2_x0_5",
    "convnet_d1": "ddbench.models.convnet:convnet_d1",
    "convnet_d2": "ddbench.models.convnet:convnet_d2",
    "convnet_w32": "ddbench.models.convnet:convnet_w32",
}
_ALIASES = {
    "mobilenetv2": ("mobilenetv2_100", "mobilenet_v2"),
    "shufflenetv2": ("shufflenet_v2_x1_0", "shufflenet_v2"),
    "deit_tiny_bn": ("deit_tiny_bn_patch16",),
    "wrn16_2": ("wrn_16_2",),
    "mobilenetv2_050": ("mobilenetv2_half",),
    "shufflenetv2_x0_5": ("shufflenet_v2_x0_5",),
}
#: Built-in architectures whose factory takes ``width_mult`` (channel widths scaled, depth and norms kept).
WIDTH_ARCHS = frozenset({"resnet18", "resnet50", "resnet101", "convnet", "convnet_bn", "convnet_d1", "convnet_d2"})

for _name, _target in _BUILTIN.items():
    ARCHS.register(_name, _target, aliases=_ALIASES.get(_name, ()), origin="builtin")


def create_model(
    arch: str, num_classes: int, img_size: int = 32, in_chans: int = 3, width_mult: float = 1.0, **kwargs: Any
) -> nn.Module:
    """Build ``arch`` for ``num_classes`` classes and ``img_size``-pixel, ``in_chans``-channel inputs.

    Keyword arguments that are None are dropped, so unset CLI flags never override a model's defaults (timm).
    ``width_mult`` (channel-width multiplier, for the CPU-scale teachers of spec sre2l-dwa §10) is passed only
    when it is not 1, and only families listed in :data:`WIDTH_ARCHS` accept it.

    Raises:
        ValueError: ``width_mult != 1`` for an architecture without a width option.
    """
    factory = ARCHS.get(arch)
    name = ARCHS.canonical(arch)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if width_mult != 1.0:
        if name not in WIDTH_ARCHS:
            raise ValueError(
                f"{name} has no width option (width_mult {width_mult:g}); use one of {', '.join(sorted(WIDTH_ARCHS))} "
                "or width_mult = 1"
            )
        kwargs["width_mult"] = width_mult
    model = factory(num_classes=num_classes, img_size=img_size, in_chans=in_chans, **kwargs)
    model.ddbench_arch = name
    return model


def has_batchnorm(
    arch: str, num_classes: int, img_size: int, in_chans: int, width_mult: float = 1.0, **kwargs: Any
) -> bool:
    """Whether ``arch`` built for these inputs contains a BatchNorm2d (BN-statistics methods need one)."""
    from torch import nn

    model = create_model(arch, num_classes, img_size, in_chans, width_mult=width_mult, **kwargs)
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def list_models(pattern: str = "*", exclude: str | list[str] = ()) -> list[str]:
    """Registered architecture names matching an fnmatch pattern, like timm's ``list_models``."""
    return ARCHS.list(pattern, exclude)


__all__ = ["ARCHS", "WIDTH_ARCHS", "create_model", "has_batchnorm", "list_models"]
