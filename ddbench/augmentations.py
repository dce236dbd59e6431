"""The batch augmentations a protocol's ``aug`` list may name, as a registry of small functions.

Each entry maps ``(x, protocol, generator) -> x`` on a float batch and says which space it runs in: most run on
[0, 1] pixels (or directly on normalized/ZCA images, which are stored in model space), DSA runs in model space
(MTT applies it to normalised images). :meth:`ddbench.train.Trainer` applies them in the listed order, so a protocol
is a recipe and a new augmentation is one registered function (from any module, a plugin's or a test's), not an
edit of the student loop.

The tensor operations themselves live in :mod:`ddbench.ops.augment`; this module only binds them to protocol
fields. It imports nothing of ddbench but the registry and those pure tensor functions, so the protocol schema can
validate names against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ddbench.ops import augment as ops
from ddbench.registry import Registry

AugFn = Callable[[torch.Tensor, Any, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class BatchAug:
    """One named augmentation.

    Attributes:
        fn: ``fn(x, protocol, generator) -> x``; random parameters come from ``generator`` only.
        model_space: the op runs on model inputs (uint8 sets are normalised before it).
    """

    fn: AugFn
    model_space: bool = False


BATCH_AUGS: Registry[BatchAug] = Registry("batch augmentation")


def register_aug(name: str, *, model_space: bool = False) -> Callable[[AugFn], AugFn]:
    """Decorator registering ``fn(x, protocol, generator)`` as the protocol augmentation ``name``."""

    def deco(fn: AugFn) -> AugFn:
        BATCH_AUGS.register(name, BatchAug(fn, model_space), origin=fn.__module__)
        return fn

    return deco


@register_aug("crop_pad")
def crop_pad(x: torch.Tensor, protocol: Any, generator: torch.Generator) -> torch.Tensor:
    """RandomCrop with zero padding of ``crop_padding``·side pixels (CIFAR's 4 px at 32 px)."""
    side = x.shape[-1]
    return ops.random_crop_pad(x, side, int(protocol.crop_padding * side + 0.5), generator=generator)


@register_aug("rrc")
def rrc(x: torch.Tensor, protocol: Any, generator: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop back to the input size, per-sample boxes from ``rrc_scale``."""
    return ops.random_resized_crop(x, x.shape[-1], protocol.rrc_scale, generator=generator, same_on_batch=False)


@register_aug("flip")
def flip(x: torch.Tensor, protocol: Any, generator: torch.Generator) -> torch.Tensor:
    """Horizontal flip with p = ½ per sample."""
    return ops.random_flip(x, generator=generator, same_on_batch=False)


@register_aug("randaugment")
def randaugment(x: torch.Tensor, protocol: Any, generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandAugment (2 ops, magnitude 9 of 31) per sample on [0, 1] pixels (EDC's evaluations, §5)."""
    return ops.rand_augment(x, generator=generator)


@register_aug("patch_shuffle")
def patch_shuffle(x: torch.Tensor, protocol: Any, generator: torch.Generator) -> torch.Tensor:
    """RDED's per-sample shuffle of the ``patch_factor``×``patch_factor`` mosaic's tile rows and columns (§8.1)."""
    return ops.patch_shuffle(x, protocol.patch_factor, generator=generator)


@register_aug("color_jitter")
def color_jitter(x: torch.Tensor, protocol: Any, generator: torch.Generator) -> torch.Tensor:
    """IDC's ColorJitter(0.4, 0.4, 0.4) (brightness, contrast, saturation), per-sample weights, RGB [0, 1] images."""
    return ops.color_jitter(x, 0.4, 0.4, 0.4, generator=generator)


@register_aug("pca_lighting")
def pca_lighting(x: torch.Tensor, protocol: Any, generator: torch.Generator) -> torch.Tensor:
    """IDC's AlexNet PCA lighting noise (α std 0.1, ImageNet eigen-values/vectors), one RGB offset per image."""
    return ops.pca_lighting(x, 0.1, generator=generator)


@register_aug("dsa", model_space=True)
def dsa(x: torch.Tensor, protocol: Any, generator: torch.Generator) -> torch.Tensor:
    """MTT's DSA (``dsa_strategy``), one family per batch with per-sample parameters, in model space."""
    return ops.dsa(x, protocol.dsa_strategy, generator=generator)


__all__ = ["BATCH_AUGS", "BatchAug", "register_aug"]
