"""CIFAR-10 and CIFAR-100 from torchvision's pickle layout or from plain class folders.

Pickles (``cifar-10-batches-py/`` or ``cifar-100-python/``, what ``torchvision.datasets.CIFAR10(download=True)``
leaves) give the official index order and exact pixels. CIFAR-100 uses the 100 *fine* labels. The meta file's
class names must equal the spec's, so a renamed or foreign batch cannot be read under the wrong class order.

Class folders (``train/<class>/*``, ``test/<class>/*``, e.g. the popular CIFAR-10-images JPEG export) are read by
:mod:`ddbench.data.folder`: folder names must be exactly the spec's classes, and images are ordered class by
class, by file name, unless a ``<split>.order.txt`` restores the official order (see that module). JPEG copies
are lossy, so numbers from them are close to, not equal to, numbers from the pickles.

The pickles are read with an unpickler that only admits the numpy array constructors, so a tampered download
cannot execute code.
"""

from __future__ import annotations

import io
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddbench.data import folder
from ddbench.data.dataset import Splits
from ddbench.data.identity import fingerprint_files
from ddbench.data.source import TensorSource
from ddbench.data.spec import DatasetError, DatasetSpec

logger = logging.getLogger(__name__)

LAYOUT = (
    "torchvision pickles cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} or "
    "cifar-100-python/{train,test,meta}, or class folders train/<class>/* and test/<class>/* named exactly as "
    "the dataset's classes"
)


@dataclass(frozen=True)
class PickleLayout:
    """File names and dict keys of one CIFAR pickle release."""

    dirname: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    labels_key: str
    names_key: str
    torchvision_class: str

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, *self.test, self.meta)


PICKLES = {
    "cifar10": PickleLayout(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
        "CIFAR10",
    ),
    "cifar100": PickleLayout(
        "cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names", "CIFAR100"
    ),
}

_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes under protocol 2
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are expected)")
        return super().find_class(module, name)


def _text(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def read_pickle(path: Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with ``str`` keys.

    The releases were written by Python 2, so keys arrive as ``bytes`` or ``str`` depending on the encoding used
    to read them; both are normalized here.

    Raises:
        DatasetError: the file is not a readable pickle of a dict.
    """
    try:
        with open(path, "rb") as fh:
            obj = _NumpyOnlyUnpickler(io.BytesIO(fh.read()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise DatasetError(f"{path} is not a readable CIFAR pickle ({exc})") from exc
    if not isinstance(obj, dict):
        raise DatasetError(f"{path} holds a {type(obj).__name__}, expected a CIFAR batch dict")
    return {_text(k): v for k, v in obj.items()}


def _pickle_dir(path: Path, spec: DatasetSpec) -> Path | None:
    """``path`` if it holds the release's pickles (``cifar-10-batches-py`` under a data root is probed by the spec)."""
    return path if all((path / f).is_file() for f in PICKLES[spec.id].files) else None


def detect(path: Path, spec: DatasetSpec) -> bool:
    assert spec.classes is not None
    return _pickle_dir(path, spec) is not None or folder.has_folders(path, spec.classes)


def fingerprint(root: Path, spec: DatasetSpec) -> str:
    assert spec.classes is not None
    pdir = _pickle_dir(root, spec)
    if pdir is not None:
        layout = PICKLES[spec.id]
        return fingerprint_files(pdir, [pdir / f for f in layout.files], "pickle", spec.classes)
    return folder.fingerprint_folders(root, spec, spec.classes)


def incomplete(path: Path, spec: DatasetSpec) -> str | None:
    """What a partial copy at ``path`` lacks: some of the release's pickles, or split or class folders."""
    assert spec.classes is not None
    layout = PICKLES[spec.id]
    present = [f for f in layout.files if (path / f).is_file()]
    if present and len(present) < len(layout.files):
        missing = [f for f in layout.files if f not in present]
        return f"{path} holds CIFAR pickles ({folder.preview(present, 3)}) but not {', '.join(missing)}"
    return folder.incomplete_folders(path, spec.classes)


def _read_batches(pdir: Path, names: tuple[str, ...], layout: PickleLayout) -> TensorSource:
    xs, ys = [], []
    for name in names:
        batch = read_pickle(pdir / name)
        missing = [k for k in ("data", layout.labels_key) if k not in batch]
        if missing:
            raise DatasetError(f"{pdir / name} has no {missing} entry (keys: {', '.join(sorted(batch))})")
        data = np.asarray(batch["data"])
        labels = np.asarray(batch[layout.labels_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise DatasetError(
                f"{pdir / name}: expected uint8 data [N, 3072] and N labels, got {data.dtype} {data.shape} "
                f"and {labels.shape}"
            )
        xs.append(data.reshape(-1, 3, 32, 32))  # rows are R(1024) G(1024) B(1024), row-major: already CHW
        ys.append(labels)
    return TensorSource(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))


def _load_pickles(pdir: Path, spec: DatasetSpec) -> Splits:
    layout = PICKLES[spec.id]
    meta = read_pickle(pdir / layout.meta)
    if layout.names_key not in meta:
        raise DatasetError(f"{pdir / layout.meta} has no {layout.names_key!r} (keys: {', '.join(sorted(meta))})")
    names = tuple(_text(n) for n in meta[layout.names_key])
    if names != spec.classes:
        raise DatasetError(
            f"{pdir / layout.meta} lists classes {folder.preview(names, 4)}, expected {spec.id}'s "
            f"{folder.preview(spec.classes or (), 4)}; is this the right dataset?"
        )
    train = _read_batches(pdir, layout.train, layout)
    test = _read_batches(pdir, layout.test, layout)
    for split, src in (("train", train), ("test", test)):
        if len(src) and not 0 <= int(src.labels.min()) <= int(src.labels.max()) < len(names):
            raise DatasetError(f"{pdir}: {split} labels outside 0..{len(names) - 1}")
    logger.info("%s: %d train / %d test images from pickles in %s", spec.id, len(train), len(test), pdir)
    return Splits(train, test, names, fingerprint(pdir, spec))


def load(root: Path | None, spec: DatasetSpec, download: bool) -> Splits:
    assert root is not None and spec.classes is not None
    pdir = _pickle_dir(root, spec)
    if pdir is not None:
        return _load_pickles(pdir, spec)
    return folder.load_folders(root, spec, spec.classes)


def download(root: Path, spec: DatasetSpec) -> Path:
    """Fetch the pickles with torchvision into ``root/<cifar-10-batches-py|cifar-100-python>``; return it."""
    import torchvision.datasets as tvd

    layout = PICKLES[spec.id]
    getattr(tvd, layout.torchvision_class)(str(root), train=True, download=True)
    return Path(root) / layout.dirname
