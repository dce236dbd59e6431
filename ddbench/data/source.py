"""Image sources: uint8 images addressable by index, in memory or streamed from files.

Every split of every dataset is an :class:`ImageSource`, so methods and the evaluator never care whether
CIFAR sits in RAM or ImageNet streams from disk. Images are always uint8 ``[N, C, H, W]``; normalization
happens on the device, batched, where it is cheap.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class ImageSource(abc.ABC):
    """Indexable uint8 images with int64 labels."""

    labels: torch.Tensor  # [N] int64
    img_size: int
    channels: int

    def __len__(self) -> int:
        return int(self.labels.numel())

    @abc.abstractmethod
    def load(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """uint8 ``[len(indices), C, H, W]`` in the order given."""

    def all(self) -> torch.Tensor:
        """Every image as one tensor; only sensible for small datasets."""
        return self.load(torch.arange(len(self)))

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageSource:
        return SubsetSource(self, torch.as_tensor(indices, dtype=torch.long))


class TensorSource(ImageSource):
    """A split held in memory as one uint8 tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N,C,H,W], got {images.dtype} {tuple(images.shape)}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images = images
        self.labels = labels.to(torch.long)
        self.channels = int(images.shape[1])
        self.img_size = int(images.shape[-1])

    def load(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        return self.images[torch.as_tensor(indices, dtype=torch.long)]

    def all(self) -> torch.Tensor:
        return self.images


class SubsetSource(ImageSource):
    """A view of another source restricted to some indices (class subsets, validation splits).

    ``label_offset`` is subtracted from the base labels, so a contiguous class range ``[lo, hi)`` reads as
    classes ``0..hi-lo-1``.
    """

    def __init__(self, base: ImageSource, indices: torch.Tensor, label_offset: int = 0) -> None:
        self.base = base
        self.indices = indices
        self.labels = base.labels[indices] - label_offset
        self.channels = base.channels
        self.img_size = base.img_size

    def load(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        return self.base.load(self.indices[torch.as_tensor(indices, dtype=torch.long)])


def decode_image(path: str | Path, size: int, channels: int, resize: int = 0, squash: bool = False) -> np.ndarray:
    """Decode one image file to uint8 HWC at ``size``×``size`` (grayscale→RGB when 3 channels are wanted).

    Two geometries, one per split:

    * ``resize == 0`` (train, and the test split of native-size datasets): an image not at ``size``×``size`` gets
      its short side resized to ``size`` (bilinear) and the long side centre-cropped. This keeps the whole short
      side of the picture: stored train images are the canvas that the train-time augmentations (random resized
      crops, flips) cut from on the device, so none of the field of view the official pipelines crop from full
      images is thrown away here. It is also what teachers in the store were trained on, so it stays unchanged.
    * ``resize > 0`` (test): torchvision's ``Resize(resize)`` + ``CenterCrop(size)`` on the PIL image, through
      torchvision itself, so the test pixels are exactly those of the official evaluation code (ImageNet:
      ``Resize(256)`` + ``CenterCrop(224)``; torchvision truncates the long side and rounds the crop offset, which
      differs from the train geometry by a pixel even at ``resize == size``).
    * ``squash`` (both splits; MTT's 128-px ImageNet subsets, spec mtt §2): the whole image resized to
      ``size``×``size`` without keeping the aspect ratio (bilinear, antialiased), as the official
      ``Resize((128, 128))`` + ``CenterCrop(128)`` does; the centre crop is then a no-op.
    """
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB" if channels == 3 else "L")
        if squash:
            im = im.resize((size, size), Image.BILINEAR)  # PIL resizing is antialiased
        elif resize:
            from torchvision.transforms import InterpolationMode
            from torchvision.transforms import functional as tvf

            im = tvf.center_crop(tvf.resize(im, resize, InterpolationMode.BILINEAR), size)
        elif im.size != (size, size):
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            im = im.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
        arr = np.asarray(im, dtype=np.uint8)
    return arr if arr.ndim == 3 else arr[:, :, None]


class FileSource(ImageSource):
    """A split streamed from image files, decoded on demand (ImageNet-scale data never fully in memory)."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | torch.Tensor,
        img_size: int,
        channels: int,
        resize: int = 0,
        squash: bool = False,
    ) -> None:
        """``resize``, ``squash``: the geometry of :func:`decode_image` (``resize`` 0 for train; the spec's
        ``test_resize`` for test)."""
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [str(p) for p in paths]
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.img_size = img_size
        self.channels = channels
        self.resize = resize
        self.squash = squash

    def load(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long).tolist()
        arrs = [decode_image(self.paths[i], self.img_size, self.channels, self.resize, self.squash) for i in idx]
        if not arrs:
            return torch.empty(0, self.channels, self.img_size, self.img_size, dtype=torch.uint8)
        return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()

    def materialize(self) -> TensorSource:
        """Decode everything into a :class:`TensorSource` (small datasets only)."""
        return TensorSource(self.all(), self.labels)
