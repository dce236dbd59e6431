"""Tiny-ImageNet-200 in its distributed layout.

``tiny-imagenet-200/`` holds ``wnids.txt``, ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG`` labelled by
``val/val_annotations.txt`` (file, wnid, box). The official test split has no labels, so ddbench's test split is
``val``. A val folder already rearranged into ``val/<wnid>/[images/]*`` by a preparation script is accepted too.

Class order: **sorted wnids**, as torchvision's ``ImageFolder`` yields, not the order of ``wnids.txt`` (which is
not sorted). Code that mixes the two silently scrambles a teacher's labels, so the 200 sorted wnids are fixed in
the spec (``ddbench.data.catalog``) and ``wnids.txt`` is only checked to name the same set.

Train images are ordered by class, then by file name (plain sort, as ``ImageFolder``); val follows the annotation
file. Any number of train images per class is accepted (the full release has 500). About 2% of the images are
grayscale and are converted to RGB. Decoding ~110k small JPEGs is done once, in parallel, and then served from
the tensor cache.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ddbench.data import folder
from ddbench.data.dataset import Splits
from ddbench.data.folder import FileList
from ddbench.data.spec import DatasetError, DatasetSpec

logger = logging.getLogger(__name__)

LAYOUT = (
    "tiny-imagenet-200/ with wnids.txt, train/<wnid>/images/*.JPEG for every wnid, and val/images/*.JPEG labelled "
    "by val/val_annotations.txt"
)
ANNOTATIONS = "val/val_annotations.txt"


def _classes(spec: DatasetSpec) -> tuple[str, ...]:
    if spec.classes is None:
        raise DatasetError(f"{spec.id}: the spec must list the sorted wnids")
    return spec.classes


def detect(path: Path, spec: DatasetSpec) -> bool:
    return (path / "val").is_dir() and folder.has_class_dirs(path / "train", _classes(spec), exact=True)


def incomplete(path: Path, spec: DatasetSpec) -> str | None:
    """What a partial Tiny-ImageNet tree at ``path`` lacks: train/, a wnid folder of train/, or val/.

    A tree counts as Tiny-ImageNet once it has ``wnids.txt``, ``val/val_annotations.txt`` or a wnid folder in
    ``train/``; anything else is not this layout (None).
    """
    classes = _classes(spec)
    train = path / "train"
    if not (
        (path / "wnids.txt").is_file()
        or (path / ANNOTATIONS).is_file()
        or any(folder.WNID.fullmatch(d) for d in folder.subdirs(train))
    ):
        return None
    if not train.is_dir():
        return f"{path} has no train/ folder (train/<wnid>/images/*.JPEG)"
    try:
        folder.check_class_dirs(train, classes, exact=True)
    except DatasetError as exc:
        return str(exc)
    if not (path / "val").is_dir():
        return f"{path} has no val/ folder (val/images/*.JPEG labelled by {ANNOTATIONS}, the test split)"
    return None


def _check_wnids(root: Path, classes: Sequence[str]) -> None:
    wnids_path = root / "wnids.txt"
    if not wnids_path.is_file():
        return
    listed = [w.strip() for w in wnids_path.read_text().splitlines() if w.strip()]
    if sorted(listed) != sorted(classes):
        odd = sorted(set(listed) ^ set(classes))
        raise DatasetError(
            f"{wnids_path} lists {len(listed)} wnids that differ from the {len(classes)} expected "
            f"(differences: {folder.preview(odd)})"
        )
    if listed != list(classes):
        logger.debug("%s is not in sorted order; using sorted wnids as the canonical class order", wnids_path)


def _val_files(root: Path, classes: Sequence[str]) -> FileList:
    ann = root / ANNOTATIONS
    if not ann.is_file():
        if (root / "val" / "images").is_dir():
            raise DatasetError(f"{root / 'val' / 'images'} has images but {ann} is missing; it labels them")
        image_subdir = "images" if (root / "val" / classes[0] / "images").is_dir() else ""
        return folder.scan_split(root, "val", classes, image_subdir=image_subdir)
    index = {c: i for i, c in enumerate(classes)}
    names: list[str] = []
    labels: list[int] = []
    for lineno, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1].strip() not in index:
            raise DatasetError(
                f"{ann}:{lineno}: expected '<image>\\t<one of the {len(classes)} wnids>...', got {line!r}"
            )
        names.append(parts[0].strip())
        labels.append(index[parts[1].strip()])
    image_dir = root / "val" / "images"
    on_disk = {p.name for p in folder.list_images(image_dir)} if image_dir.is_dir() else set()
    missing = [n for n in names if n not in on_disk]
    unlabelled = on_disk - set(names)
    if missing or unlabelled or len(set(names)) != len(names):
        raise DatasetError(
            f"{ann} must label every image in {image_dir} exactly once: {len(names)} lines "
            f"({len(names) - len(set(names))} repeated), {len(missing)} listed but absent "
            f"({folder.preview(missing, 3)}), {len(unlabelled)} unlabelled ({folder.preview(sorted(unlabelled), 3)})"
        )
    return FileList([image_dir / n for n in names], labels)


def _scan(root: Path, spec: DatasetSpec) -> tuple[FileList, FileList]:
    classes = _classes(spec)
    _check_wnids(root, classes)
    train = folder.scan_split(root, "train", classes, image_subdir="images")
    return train, _val_files(root, classes)


def fingerprint(root: Path, spec: DatasetSpec) -> str:
    return folder.fingerprint_lists(root, spec, _classes(spec), *_scan(root, spec))


def load(root: Path | None, spec: DatasetSpec, download: bool) -> Splits:
    assert root is not None
    classes = _classes(spec)
    train, val = _scan(root, spec)
    logger.info("%s: %d train / %d val images at %s", spec.id, len(train), len(val), root)
    return Splits(
        folder.to_source(train, spec),
        folder.to_source(val, spec, test=True),
        classes,
        folder.fingerprint_lists(root, spec, classes, train, val),
    )
