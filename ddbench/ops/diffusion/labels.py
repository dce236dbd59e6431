"""Conditioning labels of Minimax diffusion: label dropout, the null class, and the base model's label ids.

Two labels travel with every fine-tuning sample (spec ``minimax.md`` §2): the **subset-local** label (0–9 for
ImageWoof), the key of the minimax memories and the evaluation label, and the **base-model** label, the DiT
condition. For the ImageNet-pretrained DiT-XL/2 the latter is the wnid's ImageNet-1K index. The official code
derives it from the position of the class folder under the data root, which silently conditions on the wrong
classes when the root holds only the subset (§8.2.1); here it comes from the dataset spec's wnids and the standard
ImageNet-1K order (sorted wnids, which is also the order of ``misc/class_indices.txt``).

Label dropout for classifier-free guidance happens here, once per sample, outside the model: diffusers' DiT draws
a separate drop in every block (§8.2.14), so :func:`ddbench.ops.diffusion.models.build_dit` turns the built-in
dropout off and the fine-tuning step calls :func:`drop_labels`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

#: Probability that a training label is replaced by the null class (DiT's ``class_dropout_prob``).
LABEL_DROP = 0.1

#: Label spaces a base model can be conditioned in: ImageNet-1K indices, or the dataset's own class indices.
LabelSpace = Literal["imagenet-1k", "own"]


def null_class_id(num_classes: int) -> int:
    """The unconditional ("null") label: one past the last class, the extra embedding row of DiT."""
    return num_classes


class DroppedLabels(NamedTuple):
    """Labels after dropout: ``labels`` with dropped entries set to the null id, and the boolean ``mask``."""

    labels: torch.Tensor
    mask: torch.Tensor


def drop_labels(
    labels: torch.Tensor, num_classes: int, *, generator: torch.Generator, p: float = LABEL_DROP
) -> DroppedLabels:
    """Replace each label by the null id with probability ``p``: one draw per sample, as the original DiT.

    The uniform draws come from the CPU ``generator`` (one value per sample, also when ``p`` is 0, so the stream
    does not depend on ``p``) and the mask is moved to the labels' device.
    """
    mask = (torch.rand(labels.shape[0], generator=generator) < p).to(labels.device)
    return DroppedLabels(torch.where(mask, torch.full_like(labels, null_class_id(num_classes)), labels), mask)


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1K wnids in standard index order (sorted), from timm's bundled synset list."""
    from timm.data import ImageNetInfo

    wnids = tuple(ImageNetInfo().label_names())
    if len(wnids) != 1000 or list(wnids) != sorted(wnids):
        raise RuntimeError("timm's ImageNet-1K synset list is not the 1000 sorted wnids")
    return wnids


def imagenet_class_index(wnid: str) -> int:
    """ImageNet-1K class index of ``wnid``: its position among the sorted wnids (``n01440764`` → 0).

    Raises:
        KeyError: ``wnid`` is not an ImageNet-1K class.
    """
    index = _wnid_index()
    if wnid not in index:
        raise KeyError(f"{wnid!r} is not an ImageNet-1K wnid")
    return index[wnid]


@functools.cache
def _wnid_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


def base_label_ids(classes: Sequence[str], label_space: LabelSpace) -> torch.Tensor:
    """Base-model label id of each local class, in the given (canonical, spec) class order.

    Args:
        classes: the dataset spec's class names in local-label order (wnids for ImageNet subsets).
        label_space: ``"imagenet-1k"`` for a base model pretrained on ImageNet-1K (DiT-XL/2): the wnids' ImageNet
            indices; ``"own"`` for a base model pretrained on the dataset's own classes (the pixel-space path):
            the identity.

    Returns:
        ``[len(classes)]`` long tensor; entry k is the condition of local class k.
    """
    if label_space == "own":
        return torch.arange(len(classes))
    if label_space == "imagenet-1k":
        return torch.tensor([imagenet_class_index(c) for c in classes])
    raise ValueError(f"label_space must be 'imagenet-1k' or 'own', got {label_space!r}")


__all__ = [
    "LABEL_DROP",
    "DroppedLabels",
    "LabelSpace",
    "base_label_ids",
    "drop_labels",
    "imagenet_class_index",
    "imagenet_wnids",
    "null_class_id",
]
