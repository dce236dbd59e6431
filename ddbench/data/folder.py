"""Class-folder layouts (``<split>/<class>/<image>``) and the file machinery every image-file loader shares.

CIFAR's JPEG/PNG folders, ImageNet-1K, its 10-class subsets and Tiny-ImageNet's train split are all "one folder
per class" trees, so one scanner, one fingerprint and one parallel decoder serve them all; a fix here fixes every
loader.

Order of images within a split (it matters: "the first k images of a class" and cached tensors depend on it):

* by default, class by class in the canonical class order, and within a class by file name (plain ``sorted``,
  exactly what torchvision's ``ImageFolder`` yields, so published code that reads folders sees the same order);
* if ``<root>/<split>.order.txt`` exists, its lines (paths relative to ``<root>``, e.g. ``test/cat/0000.jpg``)
  give the order instead. It must list every image of the split exactly once. This lets a folder copy of a
  dataset reproduce the official index order (CIFAR-10's pickles interleave classes: the first test labels are
  3 8 8 0 6 6 1 6 3 1), which no file-naming convention of the common JPEG exports preserves.

Labels always come from the class folder, never from the order file, so a wrong order file cannot mislabel.

The test split is decoded with the spec's test geometry (``test_resize``: ImageNet's ``Resize(256)`` +
``CenterCrop(224)``), the train split with the plain one; see :func:`ddbench.data.source.decode_image`.

No generic ``folder`` dataset is registered: a spec needs a fixed class list, image size and mean/std, which a
user's arbitrary folder does not carry. Format modules call :func:`load_folders` with their spec instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ddbench.data.dataset import Splits
from ddbench.data.identity import STREAM_STAT_LIMIT, fingerprint_files
from ddbench.data.source import FileSource, ImageSource, TensorSource, decode_image
from ddbench.data.spec import DatasetError, DatasetSpec

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})
TEST_DIRS = ("test", "val")
ORDER_FILE = "{split}.order.txt"
# ImageNet's WordNet ids, the class folder names of ImageNet-1K, its subsets and Tiny-ImageNet.
WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class FileList:
    """Image files of one split with their labels (indices into the class order), in canonical order."""

    paths: list[Path]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.paths)


# -- scanning ---------------------------------------------------------------------------------------------------
def subdirs(path: Path) -> list[str]:
    """Sorted names of the non-hidden subdirectories of ``path`` (empty if it is not a directory)."""
    if not path.is_dir():
        return []
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def list_images(directory: Path) -> list[Path]:
    """Image files directly in ``directory``, sorted by name; hidden files and other extensions are skipped."""
    with os.scandir(directory) as it:
        names = [
            e.name
            for e in it
            if e.is_file() and not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        ]
    return [directory / n for n in sorted(names)]


def preview(names: Iterable[str], n: int = 5) -> str:
    """The first ``n`` names and how many more, for one-line error messages."""
    names = list(names)
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def check_class_dirs(split_dir: Path, classes: Sequence[str], exact: bool) -> None:
    """Raise a DatasetError unless ``split_dir`` has a folder for every class (and, if ``exact``, no others)."""
    found = set(subdirs(split_dir))
    missing = [c for c in classes if c not in found]
    extra = found - set(classes) if exact else set()
    if not missing and not extra:
        return
    if not found and split_dir.is_dir() and list_images(split_dir):
        raise DatasetError(
            f"{split_dir} holds images directly but no class folders; expected one folder per class "
            f"({preview(classes, 3)}, ...)"
        )
    parts = []
    if missing:
        parts.append(f"missing class folders {preview(missing)}")
    if extra:
        parts.append(f"unexpected folders {preview(sorted(extra))}")
    raise DatasetError(f"{split_dir}: {'; '.join(parts)} ({len(classes)} classes expected)")


def has_class_dirs(split_dir: Path, classes: Sequence[str], exact: bool) -> bool:
    """Cheap layout test for ``detect``: the folders exist (files are not listed)."""
    try:
        check_class_dirs(split_dir, classes, exact)
    except DatasetError:
        return False
    return split_dir.is_dir()


def find_split_dir(root: Path, names: Sequence[str]) -> Path | None:
    """The first of ``root/<name>`` that is a directory."""
    return next((root / n for n in names if (root / n).is_dir()), None)


def scan_split(
    root: Path, split: str, classes: Sequence[str], *, exact: bool = True, image_subdir: str = ""
) -> FileList:
    """List the images of ``root/split/<class>/[image_subdir/]*`` in canonical order (see module docstring).

    Args:
        root: dataset root (holds the split folders and optional ``<split>.order.txt``).
        split: split folder name (``train``, ``test``, ``val``).
        classes: class folder names in canonical order; label ``i`` is ``classes[i]``.
        exact: the split must hold exactly these class folders (False: pick them out of a larger tree, as
            ImageNette does from ImageNet-1K).
        image_subdir: folder inside each class folder holding the images (Tiny-ImageNet's ``images``).

    Raises:
        DatasetError: a class folder is missing or empty, or the order file does not match the files.
    """
    split_dir = root / split
    check_class_dirs(split_dir, classes, exact)
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name / image_subdir if image_subdir else split_dir / name
        files = list_images(class_dir) if class_dir.is_dir() else []
        if not files:
            where = f"{split_dir / name}/{image_subdir}" if image_subdir else str(split_dir / name)
            raise DatasetError(f"{where} holds no images (extensions {preview(sorted(IMAGE_EXTENSIONS), 9)})")
        paths += files
        labels += [label] * len(files)
    return _apply_order_file(root, split, FileList(paths, labels))


def _apply_order_file(root: Path, split: str, files: FileList) -> FileList:
    order_path = root / ORDER_FILE.format(split=split)
    if not order_path.is_file():
        return files
    lines = [ln.strip() for ln in order_path.read_text().splitlines() if ln.strip()]
    label_of = {p.relative_to(root).as_posix(): lab for p, lab in zip(files.paths, files.labels)}
    unknown = [ln for ln in lines if ln not in label_of]
    if unknown or len(lines) != len(label_of) or len(set(lines)) != len(lines):
        missing = set(label_of) - set(lines)
        raise DatasetError(
            f"{order_path} must list each of the {len(label_of)} images of {root / split} once "
            f"(relative to {root}); it has {len(lines)} lines, "
            f"{len(unknown)} unknown ({preview(unknown, 3)}), {len(missing)} missing ({preview(sorted(missing), 3)})"
        )
    logger.info("%s: image order from %s", root / split, order_path.name)
    return FileList([root / ln for ln in lines], [label_of[ln] for ln in lines])


def scan_folders(
    root: Path, classes: Sequence[str], *, exact: bool = True, test_dirs: Sequence[str] = TEST_DIRS
) -> tuple[FileList, FileList]:
    """Train and test file lists of a class-folder tree; the test split is the first of ``test_dirs`` present."""
    test_dir = find_split_dir(root, test_dirs)
    if test_dir is None:
        raise DatasetError(f"{root} has no {' or '.join(f'{d}/' for d in test_dirs)} folder")
    train = scan_split(root, "train", classes, exact=exact)
    test = scan_split(root, test_dir.name, classes, exact=exact)
    return train, test


def has_folders(
    root: Path, classes: Sequence[str], *, exact: bool = True, test_dirs: Sequence[str] = TEST_DIRS
) -> bool:
    """``detect`` helper: train/ and a test folder both hold the class folders."""
    test_dir = find_split_dir(root, test_dirs)
    return (
        test_dir is not None
        and has_class_dirs(root / "train", classes, exact)
        and has_class_dirs(test_dir, classes, exact)
    )


def incomplete_folders(
    root: Path, classes: Sequence[str], *, exact: bool = True, test_dirs: Sequence[str] = TEST_DIRS
) -> str | None:
    """What a class-folder tree at ``root`` lacks, for the error of a layout found but incomplete.

    None when ``root`` holds neither ``train/`` nor a test folder (not this layout at all) or when the folders are
    complete (then :func:`has_folders` is true and the loader reports anything finer, such as an empty class).
    """
    train, test_dir = root / "train", find_split_dir(root, test_dirs)
    tests = " or ".join(f"{d}/" for d in test_dirs)
    if not train.is_dir() and test_dir is None:
        return None
    if not train.is_dir():
        assert test_dir is not None
        return f"{root} has {test_dir.name}/ but no train/ folder"
    if test_dir is None:
        return f"{root} has train/ but no {tests} folder (the test split)"
    for split_dir in (train, test_dir):
        try:
            check_class_dirs(split_dir, classes, exact)
        except DatasetError as exc:
            return str(exc)
    return None


# -- fingerprint, decoding, sources --------------------------------------------------------------------------------
def decode_key(spec: DatasetSpec) -> tuple[object, ...]:
    """What, besides the files, decides the decoded pixels: size, channels and the test geometry.

    ``test_resize`` enters only when set, so the keys of datasets whose decoding did not change when it was
    introduced (CIFAR folders, Tiny-ImageNet) stay those of their existing tensor caches, while ImageNet caches
    built with the old test geometry are not reused; ``squash`` (the 128-px MTT subsets) likewise.
    """
    extra = (("test_resize", spec.test_resize),) if spec.test_resize else ()
    squash = (("squash", True),) if spec.squash else ()
    return (spec.img_size, spec.channels, *extra, *squash)


def fingerprint_lists(root: Path, spec: DatasetSpec, classes: Sequence[str], *lists: FileList) -> str:
    """:func:`~ddbench.data.identity.fingerprint_files` over split file lists for ``spec``.

    Covers the files, their order, split sizes, labels and :func:`decode_key`. Labels are hashed too because some
    come from a file's content rather than its path (Tiny-ImageNet's ``val_annotations.txt``). Streaming specs
    stat a sample of the files only (``STREAM_STAT_LIMIT``).
    """
    paths = [p for fl in lists for p in fl.paths]
    labels = hashlib.sha256(np.asarray([lab for fl in lists for lab in fl.labels], dtype=np.int64).tobytes())
    return fingerprint_files(
        root,
        paths,
        tuple(classes),
        [len(fl) for fl in lists],
        labels.hexdigest(),
        *decode_key(spec),
        stat_limit=0 if spec.in_memory else STREAM_STAT_LIMIT,
    )


def decode_threads() -> int:
    """Threads for decoding: the CPUs this process may use (PIL releases the GIL while decoding)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 32))


def decode_files(
    paths: Sequence[Path], size: int, channels: int, threads: int | None = None, resize: int = 0, squash: bool = False
) -> torch.Tensor:
    """Decode image files into one uint8 ``[N, C, size, size]`` tensor, in parallel.

    Each image goes through :func:`ddbench.data.source.decode_image` (the one decode path, streamed or not; ``resize``
    selects its test geometry), and is written straight into a preallocated array, so peak memory is the result
    plus one image per thread.

    Raises:
        DatasetError: naming the file that cannot be decoded.
    """
    n = len(paths)
    out = np.empty((n, channels, size, size), dtype=np.uint8)
    threads = threads or decode_threads()
    chunk = max(1, min(512, -(-n // (threads * 4))))

    def work(lo: int) -> None:
        for i in range(lo, min(lo + chunk, n)):
            try:
                out[i] = decode_image(paths[i], size, channels, resize, squash).transpose(2, 0, 1)
            except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three for broken files
                raise DatasetError(f"cannot decode image {paths[i]}: {exc}") from exc

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ddbench-decode") as pool:
        for _ in pool.map(work, range(0, n, chunk)):
            pass
    if n:
        logger.info("decoded %d images in %.1fs with %d threads", n, time.perf_counter() - start, threads)
    return torch.from_numpy(out)


def to_source(files: FileList, spec: DatasetSpec, *, test: bool = False) -> ImageSource:
    """A decoded :class:`TensorSource` for in-memory specs, a streaming :class:`FileSource` otherwise.

    ``test``: decode with the spec's test geometry (``test_resize``), see :func:`~ddbench.data.source.decode_image`.
    """
    labels = torch.as_tensor(files.labels, dtype=torch.long)
    resize = spec.test_resize if test else 0
    if spec.in_memory:
        images = decode_files(files.paths, spec.img_size, spec.channels, resize=resize, squash=spec.squash)
        return TensorSource(images, labels)
    return FileSource(files.paths, labels, spec.img_size, spec.channels, resize, spec.squash)


def load_folders(
    root: Path,
    spec: DatasetSpec,
    classes: Sequence[str],
    *,
    exact: bool = True,
    test_dirs: Sequence[str] = TEST_DIRS,
) -> Splits:
    """Read a class-folder tree into :class:`Splits`: the one loader behind every folder-based format."""
    train, test = scan_folders(root, classes, exact=exact, test_dirs=test_dirs)
    fingerprint = fingerprint_lists(root, spec, classes, train, test)
    logger.info("%s: %d train / %d test images in %d classes at %s", spec.id, len(train), len(test), len(classes), root)
    return Splits(to_source(train, spec), to_source(test, spec, test=True), tuple(classes), fingerprint)


def fingerprint_folders(
    root: Path,
    spec: DatasetSpec,
    classes: Sequence[str],
    *,
    exact: bool = True,
    test_dirs: Sequence[str] = TEST_DIRS,
) -> str:
    """The fingerprint :func:`load_folders` would record, without decoding anything."""
    train, test = scan_folders(root, classes, exact=exact, test_dirs=test_dirs)
    return fingerprint_lists(root, spec, classes, train, test)
