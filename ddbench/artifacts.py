"""The cross-run artifact cache: ``get_or_build(kind, key, build)`` for every stage that outlives a run.

Teachers, MTT expert trajectories, EDC statistics passes, ZCA fits, diffusion generators and each distillation
run's shards are artifacts: a folder of files plus ``manifest.json``. The folder name is the canonical hash of
``key`` (everything that determines the content), optionally behind a readable ``name`` prefix, under
``<root>/<kind>/``; ``root`` is ``$DDBENCH_HOME`` unless a caller (a run's shard cache) gives its own.

Guarantees, each tested:

* **Written atomically.** ``build(tmp)`` writes into a temporary folder that becomes the artifact only when it
  returns; a killed build leaves nothing a later run would trust, and its temporary is removed by the next build of
  the same key.
* **Verified on every load.** The manifest records each file's sha256 and size; a mismatch (a flipped bit, a file
  replaced by ``{}``) or an unreadable manifest is logged as a warning and the artifact is rebuilt, never used.
  Tensor artifacts also record their keys and a loaded dict that lacks one counts as corrupt.
* **Built once.** One ``filelock`` per key: a second process asking for the same key waits and then loads the
  first one's result. :meth:`ArtifactCache.try_build` is the non-blocking variant work-sharing loops use (two
  processes filling the shards of one run each take the shards nobody holds).
* **Provenance.** The manifest holds the key, ddbench/torch/python versions, host, pid, creation time, build wall
  time and peak memory, plus whatever ``build`` returns as ``meta``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ddbench.config import canonical_json, config_hash
from ddbench.io import atomic_dir, clean_stale, home, lock, sha256_file, try_lock
from ddbench.version import __version__

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TENSORS = "tensors.pt"
FORMAT_VERSION = 1

Build = Callable[[Path], Mapping[str, Any] | None]


class CorruptArtifactError(RuntimeError):
    """An artifact's files do not match its manifest (or the manifest cannot be read)."""


@dataclass
class Artifact:
    """A verified artifact folder.

    Attributes:
        kind: the cache section (``teachers/cifar10``, ``experts``, ``shards``, ...).
        path: the folder.
        manifest: the parsed ``manifest.json`` (``key``, ``files``, ``meta``, ``provenance``).
    """

    kind: str
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The folder name: a stable id (teacher ids are these)."""
        return self.path.name

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest.get("meta", {})

    @property
    def key(self) -> dict[str, Any]:
        return self.manifest.get("key", {})

    def file(self, name: str) -> Path:
        return self.path / name

    def sha256(self, name: str) -> str:
        return self.manifest["files"][name]["sha256"]

    def tensors(self, name: str = TENSORS) -> dict[str, Any]:
        """The tensor dict saved by :meth:`ArtifactCache.get_or_build_tensors`, loaded with ``weights_only``."""
        import torch

        try:
            out = torch.load(self.path / name, map_location="cpu", weights_only=True)
        except Exception as exc:  # already sha256-verified, so this means an incompatible torch pickle
            raise CorruptArtifactError(f"{self.path / name} unreadable ({type(exc).__name__}: {exc})") from exc
        expected = self.meta.get("tensor_keys")
        if expected is not None and (not isinstance(out, dict) or sorted(out) != sorted(expected)):
            raise CorruptArtifactError(f"{self.path / name} holds keys {sorted(out)} not {sorted(expected)}")
        return out


def provenance(wall_time_s: float | None = None) -> dict[str, Any]:
    """Who built an artifact, where, and at what cost."""
    import torch

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak = max(peak, torch.cuda.max_memory_allocated() / 2**20)
    return {
        "ddbench_version": __version__,
        "torch_version": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_time_s": None if wall_time_s is None else round(wall_time_s, 4),
        "peak_mem_mb": round(peak, 1),
    }


class ArtifactCache:
    """Artifacts under ``root/<kind>/<name->hash/``; see the module docstring for the guarantees.

    Args:
        root: the cache root (default ``$DDBENCH_HOME``, read when used so tests can change it).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self._root = Path(root) if root is not None else None

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else home()

    # -- addressing ---------------------------------------------------------------------------------------------
    @staticmethod
    def key_hash(key: Mapping[str, Any]) -> str:
        """Canonical 16-hex hash of a key (sorted keys, no NaN/inf: a key that cannot be hashed is a bug)."""
        return config_hash(dict(key))

    def path(self, kind: str, key: Mapping[str, Any], name: str | None = None) -> Path:
        """``root/kind/<name>-<hash>``; a ``name`` containing ``{hash}`` places the hash itself (teacher ids)."""
        digest = self.key_hash(key)
        if name and "{hash}" in name:
            return self.root / kind / name.replace("{hash}", digest)
        return self.root / kind / (f"{name}-{digest}" if name else digest)

    # -- reading ------------------------------------------------------------------------------------------------
    def verify(self, kind: str, folder: Path) -> Artifact:
        """The artifact in ``folder`` if every file matches the manifest, else :class:`CorruptArtifactError`."""
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CorruptArtifactError(f"{folder / MANIFEST} unreadable ({exc})") from exc
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict) or not files:
            raise CorruptArtifactError(f"{folder / MANIFEST} lists no files")
        for name, info in files.items():
            f = folder / name
            if not f.is_file():
                raise CorruptArtifactError(f"{f} is missing")
            if f.stat().st_size != info.get("bytes") or sha256_file(f) != info.get("sha256"):
                raise CorruptArtifactError(f"{f} does not match its recorded sha256")
        return Artifact(kind, folder, manifest)

    def lookup(self, kind: str, key: Mapping[str, Any], name: str | None = None) -> Artifact | None:
        """The verified artifact for ``key``, or None if absent or corrupt (a corrupt one is logged)."""
        folder = self.path(kind, key, name)
        return self._valid(kind, folder)

    def _valid(self, kind: str, folder: Path) -> Artifact | None:
        if not (folder / MANIFEST).is_file() and not folder.is_dir():
            return None
        try:
            return self.verify(kind, folder)
        except CorruptArtifactError as exc:
            logger.warning("corrupt %s artifact %s (%s); it will be rebuilt, never used", kind, folder.name, exc)
            return None

    # -- building -----------------------------------------------------------------------------------------------
    def _build(self, kind: str, key: Mapping[str, Any], folder: Path, build: Build) -> Artifact:
        clean_stale(folder)
        start = time.perf_counter()
        with atomic_dir(folder) as tmp:
            meta = dict(build(tmp) or {})
            files = {}
            for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
                rel = f.relative_to(tmp).as_posix()
                files[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
            if not files:
                raise RuntimeError(f"building {kind} artifact {folder.name} wrote no files")
            manifest = {
                "format_version": FORMAT_VERSION,
                "kind": kind,
                "key": json.loads(canonical_json(dict(key))),
                "key_hash": self.key_hash(key),
                "files": files,
                "meta": json.loads(json.dumps(meta, default=str)),
                "provenance": provenance(time.perf_counter() - start),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        return Artifact(kind, folder, manifest)

    def get_or_build(
        self, kind: str, key: Mapping[str, Any], build: Build, *, name: str | None = None, refresh: bool = False
    ) -> Artifact:
        """The artifact for ``key``, built by ``build(tmp_dir) -> meta`` if absent, corrupt or ``refresh``.

        Two processes asking at once build it once: the second waits on the key's lock and then loads the
        first one's result.
        """
        folder = self.path(kind, key, name)
        if not refresh and (found := self._valid(kind, folder)) is not None:
            return found
        with lock(folder):
            if not refresh and (found := self._valid(kind, folder)) is not None:
                return found  # built by another process while we waited
            return self._build(kind, key, folder, build)

    def try_build(self, kind: str, key: Mapping[str, Any], build: Build, *, name: str | None = None) -> Artifact | None:
        """Like :meth:`get_or_build` but returns None at once when another process holds the key's lock."""
        folder = self.path(kind, key, name)
        if (found := self._valid(kind, folder)) is not None:
            return found
        with try_lock(folder) as taken:
            if not taken:
                return None
            if (found := self._valid(kind, folder)) is not None:
                return found
            return self._build(kind, key, folder, build)

    # -- tensor artifacts ---------------------------------------------------------------------------------------
    @staticmethod
    def tensor_build(compute: Callable[[], Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> Build:
        """A ``build`` that saves ``compute()``'s tensor dict as ``tensors.pt`` and records its keys."""

        def build(tmp: Path) -> dict[str, Any]:
            import torch

            out = compute()
            tensors = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
            torch.save(tensors, tmp / TENSORS)
            return {**(meta or {}), "tensor_keys": sorted(tensors)}

        return build

    def get_or_build_tensors(
        self,
        kind: str,
        key: Mapping[str, Any],
        compute: Callable[[], Mapping[str, Any]],
        *,
        name: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Any], Artifact]:
        """The tensor dict for ``key`` (computed and cached if needed) and its artifact."""
        build = self.tensor_build(compute, meta)
        art = self.get_or_build(kind, key, build, name=name)
        try:
            return art.tensors(), art
        except CorruptArtifactError as exc:
            logger.warning("%s; rebuilding", exc)
            art = self.get_or_build(kind, key, build, name=name, refresh=True)
            return art.tensors(), art


#: The default cache, rooted at ``$DDBENCH_HOME``.
CACHE = ArtifactCache()


def get_or_build(kind: str, key: Mapping[str, Any], build: Build, *, name: str | None = None) -> Artifact:
    """:meth:`ArtifactCache.get_or_build` on the default cache (``$DDBENCH_HOME/<kind>/``)."""
    return CACHE.get_or_build(kind, key, build, name=name)


__all__ = ["CACHE", "MANIFEST", "TENSORS", "Artifact", "ArtifactCache", "CorruptArtifactError", "get_or_build"]
