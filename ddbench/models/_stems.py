"""Input-size rules shared by every model family: which stem variant, how many pools, which patch size.

The dataset-distillation literature trains the same architecture names on 8-px digits, 28-px MNIST, 32-px CIFAR,
64-px Tiny-ImageNet and 224-px ImageNet. The ImageNet definitions downsample by 32, which leaves nothing of a 32-px
image, so every family here has a *low-res* variant. The rules are collected in this one module so that all
families agree on them and so that a teacher's variant can be recomputed from ``(arch, img_size)`` alone:

* **Stem variant** (:func:`resolve_stem`): ``img_size <= 64`` selects ``"lowres"``, larger inputs ``"imagenet"``.
  The threshold puts CIFAR (32) and Tiny-ImageNet (64) on the SRe2L/DWA low-res ResNet, as those papers do, and
  ImageNet-scale inputs (ImageNette at 128+, ImageNet at 224) on the unmodified definitions.
* **Low-res means total stride 8**: the two earliest downsamplings (ResNet: stem conv stride and max-pool; the
  MobileNet/EfficientNet family: stem conv stride and the first strided stage; ShuffleNetV2: stem conv stride and
  max-pool) become stride 1. That is the MoCo/SRe2L CIFAR ResNet and kuangliu's CIFAR MobileNetV2 (the DWA
  cross-architecture student), and it leaves 4×4 at 32 px, 8×8 at 64 px, 4×4 at 28 px and 1×1 at 8 px.
* **VGG max-pools** (:func:`vgg_pool_plan`): a pool is kept only while the map is at least 2×2 before it, so the
  map never drops below 1×1 (8 px keeps 3 of 5 pools, 28 px keeps 4).
* **ViT patch size** (:func:`vit_patch_size`): the divisor of ``img_size`` among 16/8/4/2/1 closest (in log scale)
  to ``img_size / 8``, clamped to [2, 16]: 16 at 224 (14×14 tokens), 8 at 64, 4 at 32, 4 at 28 (7×7), 2 at 8.
* **ConvNet depth** (:func:`convnet_depth`): enough 2× average pools to reach a 4×4 map, as MTT does
  (3 at 32, 4 at 64, 5 at 128), with 28-px inputs treated as 32 (DC/MTT pad the first conv by 3) and at least 2
  blocks (8 px → depth 2, a 2×2 map); 224 px gets depth 5 (7×7; Minimax's ConvNet-6 needs ``depth=6``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Stem = Literal["auto", "lowres", "imagenet"]
STEM_CHOICES: tuple[str, ...] = ("auto", "lowres", "imagenet")
LOWRES_MAX_SIZE = 64


@dataclass(frozen=True)
class StemSpec:
    """Geometry of a family's first conv and whether its stride-2 max-pool follows.

    Attributes:
        kernel: conv kernel size (padding is ``kernel // 2``).
        stride: conv stride.
        pool: keep the family's stride-2 stem max-pool (``False`` replaces it by Identity).
    """

    kernel: int
    stride: int
    pool: bool

    @property
    def padding(self) -> int:
        return self.kernel // 2


def resolve_stem(stem: str, img_size: int) -> str:
    """Map ``"auto"`` to ``"lowres"`` (``img_size <= 64``) or ``"imagenet"``; validate explicit choices.

    Raises:
        ValueError: for an unknown stem name or a non-positive image size.
    """
    if img_size <= 0:
        raise ValueError(f"img_size must be positive, got {img_size}")
    if stem not in STEM_CHOICES:
        raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEM_CHOICES)}")
    if stem == "auto":
        return "lowres" if img_size <= LOWRES_MAX_SIZE else "imagenet"
    return stem


def vgg_pool_plan(img_size: int, num_pools: int = 5) -> list[bool]:
    """Which of VGG's ``num_pools`` 2×2 max-pools to keep so the map never drops below 1×1.

    A pool is kept while the map entering it is at least 2 px; later pools are dropped (their stage still runs).
    """
    keep, size = [], img_size
    for _ in range(num_pools):
        ok = size >= 2
        keep.append(ok)
        if ok:
            size //= 2
    return keep


def vit_patch_size(img_size: int) -> int:
    """Patch size giving roughly an 8×8 token grid: 16 at 224, 8 at 64, 4 at 32 and 28, 2 at 8 (see module doc)."""
    target = min(max(img_size / 8, 2.0), 16.0)
    divisors = [p for p in (16, 8, 4, 2, 1) if img_size % p == 0]
    # min() keeps the first (largest) candidate on a tie, so e.g. 96 px (target 12) gets 16, not 8.
    return min(divisors, key=lambda p: abs(math.log2(p) - math.log2(target)))


def convnet_effective_size(img_size: int) -> int:
    """Map size after the first ConvNet conv: DC/MTT pad 28-px (MNIST-family) inputs by 3 to reach 32."""
    return 32 if img_size == 28 else img_size


def convnet_depth(img_size: int) -> int:
    """MTT's depth rule generalised: pool down to about 4×4 (32→3, 64→4, 128→5, 224→5), never fewer than 2."""
    size = convnet_effective_size(img_size)
    return max(math.floor(math.log2(max(size, 1) / 4)), 2)
