"""Filesystem primitives every artifact uses: the ddbench home, atomic writes, locks, checksums.

Everything ddbench writes goes through :func:`atomic_dir` or :func:`atomic_file` so a killed process never
leaves a half-written artifact that a later run would trust, and through :func:`lock` so two processes asking
for the same artifact compute it once.

Two details users notice:

* Atomic writes keep the user's umask. ``tempfile`` creates its files 0600 and folders 0700 (right for secrets,
  wrong for a shared cache a group reads), so the temporary is re-permissioned to what ``open``/``mkdir`` would
  have given before it is moved into place.
* A killed writer leaves its temporary behind (``.<name>.<random>.tmp``). :func:`clean_stale` removes those of one
  target; callers run it while holding the target's lock, when no live writer of that target can exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


def home() -> Path:
    """``$DDBENCH_HOME`` or ``~/.cache/ddbench``: teachers, dataset caches, runs and the results store."""
    return Path(os.environ.get("DDBENCH_HOME") or Path.home() / ".cache" / "ddbench").expanduser()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _lock_path(target: str | Path) -> Path:
    return Path(str(target) + ".lock")


@contextlib.contextmanager
def lock(target: str | Path, timeout: float = -1) -> Iterator[None]:
    """Inter-process lock on ``<target>.lock`` (the target itself need not exist)."""
    path = _lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), timeout=timeout):
        yield


@contextlib.contextmanager
def try_lock(target: str | Path) -> Iterator[bool]:
    """Take ``<target>.lock`` if nobody holds it; yields whether it was taken (then it is held inside the block).

    Work-sharing loops use it to skip a unit another process is computing and come back to it later.
    """
    path = _lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fl = FileLock(str(path), timeout=0)
    try:
        fl.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        fl.release()


def clean_stale(path: str | Path) -> int:
    """Remove temporaries a killed writer left for ``path``; call it while holding ``path``'s lock.

    Returns:
        How many temporaries were removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return 0
    removed = 0
    for stale in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        removed += 1
    if removed:
        logger.info("removed %d stale temporary file(s) of %s left by a killed run", removed, path)
    return removed


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it replaces ``path`` atomically, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp directory; on success it becomes ``path`` (replacing an old one), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX))
    try:
        yield tmp
        mask = _umask()
        os.chmod(tmp, 0o777 & ~mask)
        for child in tmp.rglob("*"):
            if child.is_symlink():
                continue
            os.chmod(child, (0o777 if child.is_dir() else 0o666) & ~mask)
        if path.exists():
            old = path.with_name(f".{path.name}.old{os.getpid()}{TMP_SUFFIX}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def writable(path: str | Path) -> bool:
    """Whether ``path`` (or its nearest existing parent) can be written by this process."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return os.access(p, os.W_OK)
