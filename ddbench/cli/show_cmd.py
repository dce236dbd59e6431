"""``ddbench show``: a PNG grid of a distilled set's images, one row per class and one column per image.

Looking at the images is the quickest sanity check a distillation run has (a collapsed recover, a wrong
normalisation and a class-order mix-up are all visible at a glance).
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ddbench.distilled import DistilledSet

logger = logging.getLogger(__name__)

PADDING = 2
PAD_VALUE = 255  # white gutters between cells
MIN_CELL_PX = 32  # small images (8 px digits) are upscaled to at least this size by default


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show",
        help="write a PNG grid (classes × images) of a distilled set",
        epilog="examples: ddbench show ~/.cache/ddbench/runs/digits/random/ipc10/random-1a2b3c ; "
        "ddbench show RUN_DIR --out grid.png --max-classes 20",
    )
    p.add_argument("path", help="run directory, artifact directory (holding manifest.json) or run id")
    p.add_argument("--out", default=None, help="PNG to write (default: grid.png in the given directory)")
    p.add_argument("--scale", type=int, default=None, help="integer upscaling (default: to >= 32 px per cell)")
    p.add_argument("--max-classes", type=int, default=100, help="show at most this many classes (rows)")
    p.add_argument("--max-ipc", type=int, default=50, help="show at most this many images per class (columns)")
    p.set_defaults(func=execute)


def find_artifact(path: str | Path) -> Path:
    """The artifact directory behind a run directory, an artifact directory or a run id.

    Raises:
        UserError: nothing that holds a ``manifest.json`` was found.
    """
    from ddbench.errors import UserError

    p = Path(path).expanduser()
    for candidate in (p, p / "artifact"):
        if (candidate / "manifest.json").is_file():
            return candidate
    if p.is_dir():
        found = sorted(m.parent for m in p.glob("*/manifest.json"))
        if len(found) == 1:
            return found[0]
        if found:
            raise UserError(f"{p} holds several artifacts ({', '.join(f.name for f in found)}); pass one of them")
        raise UserError(f"{p} holds no distilled set (no manifest.json in it or in artifact/)")
    from ddbench.pipeline import find_run  # a run id: the pipeline knows where runs live

    return find_artifact(find_run(str(path)))


def to_unit_range(distilled: DistilledSet) -> torch.Tensor:
    """The images as float ``[N, C, H, W]`` in [0, 1] for display, inverted by their own pixel space.

    The set's :class:`~ddbench.pixels.PixelSpace` maps stored images back to pixels (uint8 ÷ 255, de-normalising,
    ZCA's exact inverse with the matrices the artifact carries), then the result is clamped. Spaces whose inverse
    needs the dataset mean/std take them from ``meta``, then from the dataset's registered spec; when neither is
    known each image is min-max stretched, which shows structure though not true colours.
    """

    from ddbench.pixels import PIXEL_SPACES

    x = distilled.images
    mean, std = distilled.meta.get("mean"), distilled.meta.get("std")
    if mean is None or std is None:
        from ddbench.data import DATASETS

        name = distilled.meta.get("dataset")
        if isinstance(name, str) and name in DATASETS:
            spec = DATASETS.get(name)
            mean, std = spec.mean, spec.std
    known = mean is not None and std is not None and len(mean) == x.shape[1] == len(std)
    if known or not PIXEL_SPACES.get(distilled.pixel_space).inverse_needs_stats:
        return distilled.space(mean if known else None, std if known else None).to_unit(x)
    logger.info("no mean/std for %s pixels; stretching each image to [0, 1]", distilled.pixel_space)
    x = x.float()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def image_grid(
    distilled: DistilledSet,
    *,
    scale: int | None = None,
    max_classes: int | None = None,
    max_ipc: int | None = None,
    padding: int = PADDING,
) -> Image.Image:
    """A grid with one row per class (label order) and one column per image of that class.

    Cells are ``H·scale × W·scale`` pixels, separated and framed by ``padding`` white pixels, so the image is
    ``cols·(W·scale + padding) + padding`` wide. A class with fewer images than the widest leaves blank cells.
    """
    import torch
    from PIL import Image

    images = (to_unit_range(distilled) * 255.0).round().to(torch.uint8)
    labels = distilled.labels
    _, c, h, w = images.shape
    scale = scale or max(1, math.ceil(MIN_CELL_PX / max(h, w)))
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    classes: Sequence[int] = range(min(num_classes, max_classes or num_classes))
    per_class = [torch.nonzero(labels == k).flatten()[:max_ipc] for k in classes]
    cols = max((len(i) for i in per_class), default=0)
    if len(classes) < num_classes or any(len(torch.nonzero(labels == k)) > cols for k in classes):
        logger.info("showing %d classes × %d images of %d images", len(classes), cols, len(labels))
    ch, cw = h * scale, w * scale
    canvas = torch.full((c, len(classes) * (ch + padding) + padding, cols * (cw + padding) + padding), PAD_VALUE,
                        dtype=torch.uint8)  # fmt: skip
    for row, idx in enumerate(per_class):
        for col, i in enumerate(idx.tolist()):
            cell = images[i].repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
            top, left = padding + row * (ch + padding), padding + col * (cw + padding)
            canvas[:, top : top + ch, left : left + cw] = cell
    array = canvas.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if c == 1 else array[:, :, :3])  # uint8 2-D → "L", H×W×3 → "RGB"


def execute(args: argparse.Namespace) -> int:
    from ddbench.cli import console
    from ddbench.distilled import DistilledSet
    from ddbench.io import atomic_file

    artifact = find_artifact(args.path)
    distilled = DistilledSet.load(artifact)
    grid = image_grid(distilled, scale=args.scale, max_classes=args.max_classes, max_ipc=args.max_ipc)
    given = Path(args.path).expanduser()
    out = Path(args.out).expanduser() if args.out else (given if given.is_dir() else artifact) / "grid.png"
    with atomic_file(out) as tmp:
        grid.save(tmp, format="PNG")
    console.print(f"{len(distilled)} images ({distilled.pixel_space}) → {out} ({grid.width}×{grid.height} px)")
    return 0
