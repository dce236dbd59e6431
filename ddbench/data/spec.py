"""Dataset specs: what a dataset *is*, independent of where its files are.

The class order is part of the spec and hashed, because a teacher trained under one class order and
evaluated under another is silently wrong (the Tiny-ImageNet ``wnids.txt`` vs sorted-wnid pitfall).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


class DatasetError(RuntimeError):
    """A dataset cannot be found or read; the message says what was expected, where, and how to get it."""


def class_order_hash(classes: tuple[str, ...] | list[str]) -> str:
    """sha256 (first 16 hex) of the newline-joined class names in canonical order."""
    return hashlib.sha256("\n".join(classes).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DatasetSpec:
    """Static description of a dataset.

    Attributes:
        id: canonical kebab-case id (``tiny-imagenet``).
        classes: class names in canonical order, or None when discovered from disk (ImageNet-1K: sorted wnids).
        img_size: native (or evaluation) side length in pixels.
        channels: 1 or 3.
        mean, std: per-channel normalization used everywhere for this dataset (squeeze, recover, eval).
        default_teacher: architecture name of the default teacher.
        default_protocol: default evaluation protocol id.
        loader: ``"module:function"`` building the splits (see :mod:`ddbench.data.loaders`).
        folder_names: directory names probed under a data root.
        how_to_get: one sentence telling a user how to obtain the data.
        in_memory: small datasets are decoded once into uint8 tensors and cached; large ones stream from files.
        num_train: train images of the release; a load that finds another count warns, naming both (0: unknown,
            e.g. the ImageNet subsets, whose count depends on which tree holds them).
        num_test: test images of the release, checked the same way (0: unknown).
        test_resize: test images are decoded as torchvision's ``Resize(test_resize)`` + ``CenterCrop(img_size)``,
            the official evaluation transform (ImageNet-1K: 256, crop ratio 0.875). 0: the test split is decoded
            like the train split (see :func:`ddbench.data.source.decode_image`); native-size datasets need nothing.
        squash: both splits are resized to ``img_size``×``img_size`` ignoring the aspect ratio (MTT's 128-px
            ImageNet subsets, spec mtt §2) instead of short side + centre crop.
    """

    id: str
    classes: tuple[str, ...] | None
    img_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_teacher: str
    default_protocol: str
    loader: str
    folder_names: tuple[str, ...] = ()
    how_to_get: str = ""
    in_memory: bool = True
    num_train: int = 0
    num_test: int = 0
    test_resize: int = 0
    squash: bool = False
    aliases: tuple[str, ...] = field(default=())

    @property
    def num_classes(self) -> int:
        if self.classes is None:
            raise DatasetError(f"{self.id}: class list is discovered from disk; load the dataset first")
        return len(self.classes)

    @property
    def class_hash(self) -> str:
        if self.classes is None:
            raise DatasetError(f"{self.id}: class list is discovered from disk; load the dataset first")
        return class_order_hash(self.classes)
