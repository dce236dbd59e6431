"""MNIST and Fashion-MNIST from their idx files (``train-images-idx3-ubyte[.gz]`` and friends).

The idx format is parsed here, not through torchvision, so a user's plain folder of idx files works without a
torchvision download and a damaged file fails with a message naming it. Both the distributed names
(``train-images-idx3-ubyte``) and the common renamed variant (``train-images.idx3-ubyte``) are accepted, plain
or gzipped (detected by content, not by extension). Debian's ``dataset-fashion-mnist`` package installs the four
``.gz`` files in ``/usr/share/datasets/fashion-mnist``, which is searched automatically.
"""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import numpy as np
import torch

from ddbench.data.dataset import Splits
from ddbench.data.identity import fingerprint_files
from ddbench.data.source import TensorSource
from ddbench.data.spec import DatasetError, DatasetSpec

logger = logging.getLogger(__name__)

STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
LAYOUT = (
    "idx files train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
    "(each plain or .gz)"
)
SYSTEM_PATHS: dict[str, tuple[Path, ...]] = {"fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),)}
TORCHVISION_CLASS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}

# idx type codes (third magic byte) → big-endian numpy dtypes.
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse one idx file (plain or gzip) into an array of the shape its header declares.

    Raises:
        DatasetError: not an idx file (bad magic), or its data is shorter or longer than the header says.
    """
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"{path}: corrupt gzip data ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES or raw[3] == 0:
        raise DatasetError(
            f"{path} is not an idx file: magic {raw[:4].hex() or '(empty)'}, expected 0000 + type byte + ndim "
            "(e.g. 00000803 for images, 00000801 for labels)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: idx header truncated ({len(raw)} bytes, {header} needed for {ndim} dims)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(
            f"{path}: header declares shape {shape} ({expected} bytes) but the file holds {len(raw) - header}; "
            "the file is truncated or damaged"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(root: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")
    return next((root / n for n in (stem, f"{stem}.gz", dotted, f"{dotted}.gz") if (root / n).is_file()), None)


def _files(root: Path) -> dict[str, tuple[Path, Path]] | None:
    found = {split: (_find(root, img), _find(root, lab)) for split, (img, lab) in STEMS.items()}
    if any(p is None for pair in found.values() for p in pair):
        return None
    return found  # type: ignore[return-value]


def search_paths(spec: DatasetSpec) -> list[Path]:
    return list(SYSTEM_PATHS.get(spec.id, ()))


def detect(path: Path, spec: DatasetSpec) -> bool:
    return _files(path) is not None


def incomplete(path: Path, spec: DatasetSpec) -> str | None:
    """The idx files missing at ``path`` when some, not all four, are there (the test pair is the usual gap)."""
    stems = [stem for pair in STEMS.values() for stem in pair]
    found = {stem: _find(path, stem) for stem in stems}
    present = [p.name for p in found.values() if p is not None]
    if not present or len(present) == len(stems):
        return None
    missing = [stem for stem, p in found.items() if p is None]
    return f"{path} holds {', '.join(present)} but not {', '.join(missing)} (each plain or .gz)"


def fingerprint(root: Path, spec: DatasetSpec) -> str:
    files = _files(root)
    if files is None:
        raise DatasetError(f"{spec.id}: expected {LAYOUT} in {root}")
    return fingerprint_files(root, [p for pair in files.values() for p in pair], "idx", spec.classes)


def _read_split(images_path: Path, labels_path: Path, spec: DatasetSpec) -> TensorSource:
    images, labels = read_idx(images_path), read_idx(labels_path)
    size = spec.img_size
    if images.dtype != np.uint8 or images.shape[1:] != (size, size):
        raise DatasetError(f"{images_path}: expected uint8 images of {size}×{size}, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetError(f"{labels_path}: {labels.shape} labels for {len(images)} images in {images_path.name}")
    num_classes = len(spec.classes or ())
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise DatasetError(f"{labels_path}: labels outside 0..{num_classes - 1}")
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # [N,1,H,W]
    return TensorSource(x, torch.from_numpy(labels.astype(np.int64)))


def load(root: Path | None, spec: DatasetSpec, download: bool) -> Splits:
    files = _files(root) if root is not None else None
    if files is None:
        raise DatasetError(f"{spec.id}: expected {LAYOUT} in {root}")
    train = _read_split(*files["train"], spec)
    test = _read_split(*files["test"], spec)
    logger.info("%s: %d train / %d test images from %s", spec.id, len(train), len(test), root)
    assert spec.classes is not None
    return Splits(train, test, tuple(spec.classes), fingerprint(root, spec))


def download(root: Path, spec: DatasetSpec) -> Path:
    """Fetch the idx files with torchvision into ``root/<MNIST|FashionMNIST>/raw`` and return that folder."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION_CLASS[spec.id])
    for train in (True, False):
        cls(str(root), train=train, download=True)
    return Path(root) / TORCHVISION_CLASS[spec.id] / "raw"
