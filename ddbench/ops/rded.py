"""RDED (Sun et al., CVPR 2024) patch selection and mosaics: the RDED method's synthesis and EDC's RDED init.

Implements spec ``edc.md`` §8.1 (the official RDED algorithm, [R] ``synthesize/``), per class c, given ``mipc``
candidate real images of c (normalised, at the input size S) and an observer scorer:

1. ``num_crop`` (5) RandomResizedCrop views per image: side S // factor, aspect ratio fixed at 1, area scale
   (0.08, 1) (torchvision's sampling rule, antialiased resize as [R]).
2. Score each view by the observer's cross-entropy on class c of the view **zero-padded**, centred, back to S×S
   (zero in normalised space is the dataset's mean colour). Lower CE = more "realistic" / confident.
3. Keep each image's lowest-CE view only (**one patch per source image**, for diversity).
4. Rank the survivors by CE ascending; keep the best n = IPC·factor².
5. Tile factor×factor mosaics: cell k (row-major) of **every** image comes from rank block [k·IPC, (k+1)·IPC), so
   image j holds the patches ranked j, IPC + j, 2·IPC + j, 3·IPC + j (factor 2). Each patch is resized (nearest,
   as [R]) to its cell; when S is not divisible by factor the first rows/columns of cells are one pixel larger.

Factor 2 for ImageNet-scale inputs (four 112² patches at 224 px), 1 for CIFAR/Tiny (no mosaic: the best single
views). The scorer is any ``logits = score_fn(x)``: RDED uses its one observer, EDC the mean logits of its
synthesis observers (:func:`ddbench.labels.ensemble_logits`). Drawing the ``mipc`` candidates is the
caller's (a seeded draw from the class's real images); all randomness here comes from an explicit CPU generator.

Deviations: none in the algorithm. [R] scores all ``mipc × num_crop`` views in one no-grad pass per class;
here they are scored in chunks of ``batch_size`` (same numbers).

:func:`edc_code_images` is EDC's own RDED-like generator (§8.2, [C] ``data_synthesis_without_optim.py``), kept
behind EDC's ``rded_generator = "edc-code"`` switch because the spec's DEFAULT is the algorithm above: every image
of the class scored whole and the ``keep`` (300) lowest-CE kept; those processed in chunks of 64 (only whole
chunks, so 256 of 300, as [C]; at least one chunk when fewer are kept); per chunk ``num_crop`` (4) full-size
RandomResizedCrop draws (default scale and aspect ratio) with one box and one flip shared by the whole chunk;
every view scored (no one-patch-per-image rule); the ``ipc·factor²`` lowest-CE views resized (antialiased) to a cell
and tiled **consecutively** (image i holds ranks i·f² … i·f²+f²−1). Deviation: [C] pre-scores images squashed to
224×224; here they are the dataset's stored images (short-side resize + centre crop).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ddbench.ops.augment import resized_crop, rrc_boxes

logger = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def cell_sizes(size: int, factor: int) -> list[int]:
    """Side of each mosaic row (and column) of cells: the first ``size % factor`` are one pixel larger ([R])."""
    if factor < 1 or size < factor:
        raise ValueError(f"cannot tile {size} px into {factor}×{factor} cells")
    base, extra = divmod(size, factor)
    return [base + 1 if i < extra else base for i in range(factor)]


def pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad ``[N, C, h, w]`` to ``size``×``size``, centred (top/left get the smaller half, as [R])."""
    dh, dw = size - x.shape[-2], size - x.shape[-1]
    if dh < 0 or dw < 0:
        raise ValueError(f"cannot pad {tuple(x.shape[-2:])} to {size}")
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def random_views(
    images: torch.Tensor,
    num_crop: int,
    side: int,
    *,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    antialias: bool = True,
) -> torch.Tensor:
    """``num_crop`` square RandomResizedCrop views of each image, resized to ``side``: ``[N, num_crop, C, s, s]``.

    Boxes follow torchvision's RandomResizedCrop rule with ratio (1, 1) (:func:`ddbench.ops.augment.rrc_boxes`),
    drawn crop-major (all images' first views, then the second, ...). ``antialias=True`` resizes box by box with
    torchvision's antialiased bilinear resize, as [R]'s ``RandomResizedCrop(antialias=True)``; ``False`` uses one
    batched, non-antialiased :func:`~ddbench.ops.augment.resized_crop` (faster, slightly sharper when shrinking).
    """
    n, _, height, width = images.shape
    boxes = rrc_boxes(n * num_crop, height, width, scale, (1.0, 1.0), generator=generator).view(num_crop, n, 4)
    views = []
    for k in range(num_crop):
        if antialias:
            crops = [TF.resized_crop(images[i : i + 1], *(int(v) for v in boxes[k, i]), [side, side], antialias=True)
                     for i in range(n)]  # fmt: skip
            views.append(torch.cat(crops))
        else:
            views.append(resized_crop(images, boxes[k], side))
    return torch.stack(views, dim=1)


@torch.no_grad()
def view_scores(score_fn: ScoreFn, views: torch.Tensor, label: int, size: int, batch_size: int = 256) -> torch.Tensor:
    """CE of class ``label`` for every view, scored zero-padded back to ``size`` px: ``[N, num_crop]``."""
    n, m = views.shape[:2]
    flat = views.reshape(n * m, *views.shape[2:])
    out = []
    for start in range(0, flat.shape[0], batch_size):
        chunk = pad_to(flat[start : start + batch_size], size)
        logits = score_fn(chunk).float()
        target = torch.full((chunk.shape[0],), label, dtype=torch.long, device=logits.device)
        out.append(F.cross_entropy(logits, target, reduction="none"))
    return torch.cat(out).view(n, m)


def select_patches(views: torch.Tensor, scores: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's lowest-CE view, then the ``n`` best of those by CE ascending: ``(patches [n, ...], ce [n])``.

    Raises:
        ValueError: fewer source images than ``n`` (one patch per source image).
    """
    num_images = views.shape[0]
    if num_images < n:
        raise ValueError(f"{n} patches need at least {n} source images (one patch per image), got {num_images}")
    best = scores.argmin(dim=1)
    ce = scores.gather(1, best[:, None]).squeeze(1)
    order = torch.argsort(ce, stable=True)[:n]
    keep = order.to(views.device)
    return views[keep, best.to(views.device)[keep]], ce[order]


def tile_mosaics(patches: torch.Tensor, ipc: int, factor: int, size: int) -> torch.Tensor:
    """``ipc`` mosaics from ``ipc·factor²`` ranked patches; cell k of image j holds patch k·ipc + j.

    Cells are row-major; each patch is resized (nearest, as [R]) to its cell when the sizes differ.
    """
    if patches.shape[0] != ipc * factor * factor:
        raise ValueError(f"need ipc·factor² = {ipc * factor * factor} patches, got {patches.shape[0]}")
    sides = cell_sizes(size, factor)
    out = patches.new_zeros(ipc, patches.shape[1], size, size)
    k, top = 0, 0
    for h in sides:
        left = 0
        for w in sides:
            block = patches[k * ipc : (k + 1) * ipc]
            if block.shape[-2:] != (h, w):
                block = F.interpolate(block, size=(h, w), mode="nearest")
            out[:, :, top : top + h, left : left + w] = block
            left += w
            k += 1
        top += h
    return out


def rded_images(
    images: torch.Tensor,
    label: int,
    score_fn: ScoreFn,
    *,
    ipc: int,
    factor: int,
    generator: torch.Generator,
    num_crop: int = 5,
    scale: tuple[float, float] = (0.08, 1.0),
    batch_size: int = 256,
    antialias: bool = True,
) -> torch.Tensor:
    """RDED's condensed images of one class: ``[ipc, C, S, S]`` from ``mipc`` candidate images ``[mipc, C, S, S]``.

    Args:
        images: the class's candidate real images, normalised, square, on the scorer's device.
        label: their class index.
        score_fn: observer (or ensemble) logits; called under no_grad, in the caller's eval mode.
        ipc: images per class to produce.
        factor: mosaic factor (2 at ImageNet scale, 1 at 32/64 px).
        generator: CPU generator for the crop boxes.
        num_crop: views per candidate image (5).
        scale: RandomResizedCrop area range of the views.
        batch_size: scoring chunk size.
        antialias: see :func:`random_views`.
    """
    size = images.shape[-1]
    if images.shape[-2] != size:
        raise ValueError(f"RDED expects square images, got {tuple(images.shape[-2:])}")
    views = random_views(images, num_crop, size // factor, generator=generator, scale=scale, antialias=antialias)
    scores = view_scores(score_fn, views, label, size, batch_size)
    patches, ce = select_patches(views, scores, ipc * factor * factor)
    logger.debug("rded class %d: %d candidates, kept %d patches, CE %.3f..%.3f", label, images.shape[0],
                 patches.shape[0], float(ce.min()), float(ce.max()))  # fmt: skip
    return tile_mosaics(patches, ipc, factor, size)


def tile_consecutive(patches: torch.Tensor, ipc: int, factor: int, size: int) -> torch.Tensor:
    """``ipc`` mosaics from ``ipc·factor²`` ranked patches; cell k of image i holds patch i·factor² + k ([C] §8.2)."""
    n = ipc * factor * factor
    if patches.shape[0] != n:
        raise ValueError(f"need ipc·factor² = {n} patches, got {patches.shape[0]}")
    order = torch.arange(n, device=patches.device).view(ipc, factor * factor).t().reshape(-1)
    return tile_mosaics(patches[order], ipc, factor, size)  # tile_mosaics puts patch k·ipc + i in cell k of image i


def chunk_views(
    images: torch.Tensor, chunk: int, num_crop: int, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """[C]'s batched views: per whole chunk of ``chunk`` images, ``num_crop`` full-size RandomResizedCrop draws, each
    one box and one flip for the whole chunk. Returns ``(views [M, C, S, S], source index [M])``."""
    n, size = images.shape[0], images.shape[-1]
    chunks = max(1, n // chunk)  # [C] iterates whole chunks only (256 of 300); one chunk when fewer remain
    views, sources = [], []
    for i in range(chunks):
        lo, hi = i * chunk, min((i + 1) * chunk, n)
        for _ in range(num_crop):
            box = [int(v) for v in rrc_boxes(1, size, size, generator=generator)[0]]
            flip = bool(torch.rand((), generator=generator) < 0.5)
            view = TF.resized_crop(images[lo:hi], *box, [size, size], antialias=True)
            views.append(view.flip(-1) if flip else view)
            sources.append(torch.arange(lo, hi))
    return torch.cat(views), torch.cat(sources)


def edc_code_images(
    images: torch.Tensor,
    label: int,
    score_fn: ScoreFn,
    *,
    ipc: int,
    factor: int,
    generator: torch.Generator,
    keep: int = 300,
    chunk: int = 64,
    num_crop: int = 4,
    batch_size: int = 256,
) -> torch.Tensor:
    """EDC's own generator (§8.2; see the module docstring): ``[ipc, C, S, S]`` from all of a class's images.

    Args:
        images: every real image of the class, normalised, square, on the scorer's device.
        label, score_fn, ipc, factor, generator, batch_size: as :func:`rded_images`.
        keep: whole images kept by the pre-selection (300).
        chunk: images per batched crop draw (64).
        num_crop: crop draws per chunk (4).
    """
    size = images.shape[-1]
    whole = view_scores(score_fn, images[:, None], label, size, batch_size)[:, 0]
    kept = images[torch.argsort(whole, stable=True)[:keep].to(images.device)]
    views, _ = chunk_views(kept, chunk, num_crop, generator=generator)
    n = ipc * factor * factor
    if views.shape[0] < n:
        raise ValueError(f"{n} patches wanted but only {views.shape[0]} views were drawn; lower ipc or raise keep")
    ce = view_scores(score_fn, views[:, None], label, size, batch_size)[:, 0]
    best = views[torch.argsort(ce, stable=True)[:n].to(views.device)]
    cell = cell_sizes(size, factor)[0]
    if cell != size:
        best = TF.resize(best, [cell, cell], antialias=True)
    logger.debug("edc-code rded class %d: %d images, kept %d, %d views, CE %.3f..%.3f", label, images.shape[0],
                 kept.shape[0], views.shape[0], float(ce.min()), float(ce.max()))  # fmt: skip
    return tile_consecutive(best, ipc, factor, size)


__all__ = [
    "cell_sizes",
    "chunk_views",
    "edc_code_images",
    "pad_to",
    "random_views",
    "rded_images",
    "select_patches",
    "tile_consecutive",
    "tile_mosaics",
    "view_scores",
]
