"""ImageNet-1K and its 10-class subsets (ImageNette, ImageWoof, ImageIDC) from wnid class folders.

ImageNet-1K is ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (the val images sorted into class folders, as
torchvision's ``ImageFolder`` and every DD codebase expect). Its classes are the wnid folders found on disk,
sorted, so label ``i`` is the standard ImageNet-1K index ``i``. It is never loaded into memory: both splits
stream from the files through :class:`~ddbench.data.source.FileSource` at 224 px: train images short side to 224
and centre-cropped, test (val) images through torchvision's ``Resize(256)`` + ``CenterCrop(224)``, the evaluation
transform of SRe2L's and DWA's code (the subsets use ``Resize(224)``, as IDC and Minimax do; see the catalog).

The subsets read the same tree, picking their 10 wnid folders out of a full ImageNet copy, or from the subset's
own release folder in fast.ai's layout (``imagenette2/train/<wnid>/``, ``imagenette2/val/<wnid>/``), which holds
just those 10 folders. The papers (IDC, Minimax) build the subsets from ImageNet-1K train/val, and the fast.ai
releases hold fewer images, so the spec probes ImageNet folders before release folders and the loaded root is
recorded. Their class order is the listed wnid order of the spec (see ``ddbench.data.catalog``), not sorted.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ddbench.data import folder
from ddbench.data.dataset import Splits
from ddbench.data.spec import DatasetSpec

logger = logging.getLogger(__name__)

LAYOUT = (
    "ImageNet class folders train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (a 10-class subset needs at least its 10 "
    "wnid folders, e.g. fast.ai's imagenette2/ or imagewoof2/)"
)
TEST_DIRS = ("val",)
IMAGENET_1K_CLASSES = 1000


def _wnid_dirs(split_dir: Path) -> list[str]:
    return [d for d in folder.subdirs(split_dir) if folder.WNID.fullmatch(d)]


def _classes(root: Path, spec: DatasetSpec) -> tuple[tuple[str, ...], bool]:
    """The class order and whether the folders must match it exactly (full ImageNet) or contain it (subsets)."""
    if spec.classes is not None:
        return spec.classes, False
    return tuple(_wnid_dirs(root / "train")), True


def detect(path: Path, spec: DatasetSpec) -> bool:
    if spec.classes is None:
        return (path / "val").is_dir() and bool(_wnid_dirs(path / "train"))
    return folder.has_folders(path, spec.classes, exact=False, test_dirs=TEST_DIRS)


def incomplete(path: Path, spec: DatasetSpec) -> str | None:
    """What a partial ImageNet tree at ``path`` lacks: ``train/`` or ``val/``, or (subsets) some wnid folders.

    A tree counts as ImageNet once ``train/`` or ``val/`` holds a wnid folder, or ``val/`` holds images directly
    (the unsorted val release); anything else is not this layout (None).
    """
    train, val = path / "train", path / "val"
    flat_val = val.is_dir() and not folder.subdirs(val) and bool(folder.list_images(val))
    if not (_wnid_dirs(train) or _wnid_dirs(val) or flat_val):
        return None
    if spec.classes is None:
        if not _wnid_dirs(train):
            return f"{path} has val/ but no train/<wnid>/ folders"
        if not val.is_dir():
            return f"{path} has train/<wnid>/ folders but no val/ folder (val/<wnid>/*.JPEG, the test split)"
        return None
    return folder.incomplete_folders(path, spec.classes, exact=False, test_dirs=TEST_DIRS)


def fingerprint(root: Path, spec: DatasetSpec) -> str:
    classes, exact = _classes(root, spec)
    return folder.fingerprint_folders(root, spec, classes, exact=exact, test_dirs=TEST_DIRS)


def load(root: Path | None, spec: DatasetSpec, download: bool) -> Splits:
    assert root is not None
    classes, exact = _classes(root, spec)
    if spec.classes is None and len(classes) != IMAGENET_1K_CLASSES:
        logger.warning("%s: found %d wnid folders in %s, not %d", spec.id, len(classes), root / "train", 1000)
    return folder.load_folders(root, spec, classes, exact=exact, test_dirs=TEST_DIRS)
