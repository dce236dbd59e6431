"""What identifies the data a load read: fingerprints of files, of tensors, and of a whole loaded dataset.

One definition serves two users. The tensor cache keys decoded splits by the fingerprint of the files they came
from (:func:`fingerprint_files`, computed by each format module), and :attr:`ddbench.data.Dataset.fingerprint`
extends that same value with what was derived from it (split sizes, class subset, hold-out), so that run ids,
teacher keys and records can tell two copies of a dataset apart: a run distilled from a 17,435-image MNIST copy is
never reused on a 5,000-image one, and a teacher trained on a JPEG export of CIFAR-10 is not taken for one trained
on the pickles.

Files are identified by path relative to the dataset root, size and mtime, not by content: hashing the bytes of
CIFAR-10 or Tiny-ImageNet would cost more than the cache saves, and the stat pass is what the cache already pays.
Moving or copying a dataset folder with its mtimes (``cp -a``, ``rsync -a``) keeps the fingerprint; rewriting a
file changes it. Datasets built in memory without files (scikit-learn's digits, hand-made test datasets) are
identified by the bytes of their tensors (:func:`fingerprint_sources`), which is cheap at their size.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ddbench.data.source import FileSource, ImageSource

# Bump when decoding or ordering changes for every format, so tensor caches built by older code are not reused. A
# change that concerns some datasets only goes into the ``extra`` values those datasets hash instead (see
# ``ddbench.data.folder.decode_key``), so unaffected caches stay valid.
CACHE_VERSION = 1
# Streaming datasets (ImageNet-1K, 1.3 M files) stat at most this many files, evenly spaced, and hash the path of
# every other file: a full stat pass over ImageNet costs minutes on a network disk, while this still tells apart
# copies whose files were re-encoded or resized (every size changes) or that hold other files (the names change).
STREAM_STAT_LIMIT = 4096


def _digest(h: hashlib._Hash) -> str:
    return h.hexdigest()[:16]


def fingerprint_files(root: Path, paths: Sequence[Path], *extra: object, stat_limit: int = 0) -> str:
    """Identify the files a load reads (16 hex characters).

    Hashes each file's path relative to ``root``, its size and mtime, the order of the paths, and ``extra`` (class
    order, decode parameters), so any change to what would be decoded gives a new key.

    Args:
        root: the dataset root; paths are hashed relative to it so moving the folder keeps the key.
        paths: the files in load order.
        extra: values that change what is decoded from the files (hashed by ``repr``).
        stat_limit: 0 stats every file; otherwise about ``stat_limit`` evenly spaced files are stat'ed and the
            others contribute their path only (see ``STREAM_STAT_LIMIT``).
    """
    stride = max(1, -(-len(paths) // stat_limit)) if stat_limit else 1
    h = hashlib.sha256(f"ddbench-files-v{CACHE_VERSION}".encode())
    if stride > 1:  # only then, so the keys of fully stat'ed datasets stay those of existing caches
        h.update(f"stat-stride {stride}\0".encode())
    for item in extra:
        h.update(repr(item).encode() + b"\0")
    prefix = str(root).rstrip(os.sep) + os.sep  # string slicing: Path.relative_to was 2/3 of the cost
    for i, p in enumerate(paths):
        name = str(p)
        rel = (name[len(prefix) :] if name.startswith(prefix) else name).replace(os.sep, "/")
        if i % stride == 0:
            st = os.stat(name)
            h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        else:
            h.update(f"{rel}\n".encode())
    return _digest(h)


def fingerprint_sources(sources: Iterable[ImageSource], *extra: object) -> str:
    """Identify in-memory splits by content: the bytes of their images and labels, in order (16 hex characters).

    A streaming :class:`~ddbench.data.source.FileSource` contributes its file paths instead of decoding every file.
    """
    h = hashlib.sha256(b"ddbench-tensors-v1")
    for item in extra:
        h.update(repr(item).encode() + b"\0")
    for src in sources:
        h.update(f"split {len(src)}\0".encode())
        h.update(src.labels.contiguous().numpy().tobytes())
        if isinstance(src, FileSource):
            h.update("\n".join(src.paths).encode())
        else:
            h.update(src.all().contiguous().numpy().tobytes())
    return _digest(h)


def fingerprint_dataset(files_fingerprint: str, facts: dict[str, object]) -> str:
    """The fingerprint of a loaded dataset: its files' fingerprint plus the facts derived from them.

    ``facts`` (JSON-serializable: split sizes, class-order hash, class subset, hold-out) are hashed as canonical
    JSON, so the same files seen through a different ``--num-classes`` or hold-out get a different fingerprint.
    """
    blob = json.dumps({"files": files_fingerprint, **facts}, sort_keys=True, separators=(",", ":"))
    return _digest(hashlib.sha256(blob.encode()))


def dataset_key(dataset: object) -> dict[str, object]:
    """The part of a dataset's identity that cache keys use: everything but where it was found.

    ``Dataset.identity()`` minus ``root`` (moving a folder must not invalidate runs and teachers). Objects that only
    look like datasets (test doubles) are keyed by id, class order and train size.
    """
    identity = getattr(dataset, "identity", None)
    if callable(identity):
        return {k: v for k, v in identity().items() if k != "root"}
    return {"dataset": dataset.id, "class_hash": dataset.class_hash, "num_train": len(dataset.train)}  # type: ignore[attr-defined]
