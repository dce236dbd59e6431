"""The dataset handle methods and the evaluator receive, and :func:`load_dataset` that builds it.

A format module (``ddbench.data.digits``, ``.cifar``, ``.idx``, ``.tiny_imagenet``, ``.imagenet``, ``.folder``)
provides two functions:

* ``detect(path: Path, spec) -> bool``: does ``path`` hold this dataset in this format?
* ``load(path: Path | None, spec, download: bool) -> Splits``: read it; ``Splits.fingerprint`` identifies the
  files read (see :mod:`ddbench.data.identity`).

and optionally ``fingerprint(path, spec) -> str``, the same value computed without decoding (the tensor cache key
of in-memory specs), ``incomplete(path, spec) -> str | None``, naming what a partial copy of the layout at
``path`` lacks (so a user hears "no test_batch" rather than the generic "expected …; looked in …"), and
``search_paths(spec) -> list[Path]`` of system locations (Debian's fashion-mnist). The spec's ``loader`` names
the module. Roots are searched in this order: ``--data-root``, ``$DDBENCH_DATA``, the module's
system paths; under each root, the root itself and then each of the spec's ``folder_names``.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType

import torch

from ddbench.data.checks import check_counts
from ddbench.data.identity import fingerprint_dataset, fingerprint_sources
from ddbench.data.source import ImageSource, SubsetSource, TensorSource
from ddbench.data.spec import DatasetError, DatasetSpec, class_order_hash
from ddbench.io import home

logger = logging.getLogger(__name__)


@dataclass
class Splits:
    """What a format module returns: train and test sources in canonical class order."""

    train: ImageSource
    test: ImageSource
    classes: tuple[str, ...]
    # Identifies the files read (see ddbench.data.identity): the tensor cache key and the base of
    # Dataset.fingerprint. Empty: nothing is cached and the dataset is identified by its tensors.
    fingerprint: str = ""


@dataclass
class Dataset:
    """A loaded dataset: spec, real train/val/test images, per-class access and normalization.

    ``val`` is a deterministic hold-out carved from train (see :meth:`with_holdout`); the test split is for the
    final number only and never chooses anything.

    ``files_fingerprint`` identifies the files the splits were read from (empty for a dataset built by hand, which
    is then identified by its tensors); ``derivation`` lists the steps that made this dataset from the loaded one
    (``num_classes=3``, ``holdout=5,seed=0``). Both feed :attr:`fingerprint`.
    """

    spec: DatasetSpec
    train: ImageSource
    test: ImageSource
    root: Path | None = None
    val: ImageSource | None = None
    files_fingerprint: str = ""
    derivation: tuple[str, ...] = ()
    _class_index: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    _content_fingerprint: str = field(default="", init=False, repr=False)

    # -- facts ------------------------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def classes(self) -> tuple[str, ...]:
        assert self.spec.classes is not None
        return self.spec.classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_hash(self) -> str:
        return class_order_hash(self.classes)

    @property
    def img_size(self) -> int:
        return self.spec.img_size

    @property
    def channels(self) -> int:
        return self.spec.channels

    # -- identity ---------------------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """Identifies the images this dataset holds (16 hex characters); put it in run ids and teacher keys.

        The files' fingerprint (paths, sizes, mtimes, order, labels and decode parameters) hashed together with
        the split sizes, the class-order hash and the derivation, so the same command on another copy of the data
        (other files, other counts), another ``--num-classes`` or another hold-out gets another value, while the
        same files read again, from the tensor cache or from a moved copy, get the same one. Computing it again
        costs a hash of a few hundred bytes; the file pass was paid by the load.
        """
        return fingerprint_dataset(self.files_fingerprint or self._tensor_fingerprint(), self._facts())

    def identity(self) -> dict[str, object]:
        """What a record stores about the data it came from.

        ``root`` says where the data was found, for people; keys should use ``fingerprint``, which does not change
        when the folder moves.
        """
        return {
            "dataset": self.id,
            "fingerprint": self.fingerprint,
            "root": str(self.root) if self.root is not None else None,
            **self._facts(),
        }

    def _facts(self) -> dict[str, object]:
        return {
            "dataset": self.id,
            "class_hash": self.class_hash,
            "num_classes": self.num_classes,
            "num_train": len(self.train),
            "num_val": len(self.val) if self.val is not None else 0,
            "num_test": len(self.test),
            "derivation": list(self.derivation),
        }

    def _tensor_fingerprint(self) -> str:
        if not self._content_fingerprint:
            splits = [self.train, self.test] + ([self.val] if self.val is not None else [])
            self._content_fingerprint = fingerprint_sources(splits, "hand-built")
        return self._content_fingerprint

    # -- per-class access -------------------------------------------------------------------------------------
    def class_indices(self, c: int) -> torch.Tensor:
        """Indices into ``train`` of every image of class ``c``, ascending."""
        if c not in self._class_index:
            self._class_index[c] = torch.nonzero(self.train.labels == c).flatten()
        return self._class_index[c]

    def images_of_class(self, c: int, k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 images of class ``c``: all of them, or ``k`` drawn without replacement with ``generator``."""
        idx = self.class_indices(c)
        if k is not None:
            if k > idx.numel():
                raise DatasetError(f"{self.id}: class {c} has {idx.numel()} train images, {k} were asked for")
            idx = idx[torch.randperm(idx.numel(), generator=generator)[:k]]
        return self.train.load(idx)

    # -- normalization ----------------------------------------------------------------------------------------
    def mean_std(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.tensor(self.spec.mean, device=device).view(1, -1, 1, 1)
        s = torch.tensor(self.spec.std, device=device).view(1, -1, 1, 1)
        return m, s

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0,1] float) images → normalized float32 on x's device."""
        m, s = self.mean_std(x.device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        return (x - m) / s

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """normalized float → [0,1] float (not clamped)."""
        m, s = self.mean_std(x.device)
        return x * s + m

    # -- derived datasets -------------------------------------------------------------------------------------
    def with_num_classes(self, n: int | None) -> Dataset:
        """The first ``n`` canonical classes only (labels unchanged, since they are already 0..n-1)."""
        if n is None or n == self.num_classes:
            return self
        if not 1 <= n <= self.num_classes:
            raise DatasetError(f"--num-classes must be in 1..{self.num_classes} for {self.id}, got {n}")
        return self._class_range(0, n, f"num_classes={n}")

    def with_class_range(self, lo: int, hi: int) -> Dataset:
        """Canonical classes ``lo..hi-1`` only, relabelled ``0..hi-lo-1`` (a phase of a many-class method run)."""
        if not 0 <= lo < hi <= self.num_classes:
            raise DatasetError(f"{self.id}: class range {lo}:{hi} is not inside 0:{self.num_classes}")
        if (lo, hi) == (0, self.num_classes):
            return self
        return self._class_range(lo, hi, f"classes={lo}:{hi}")

    def _class_range(self, lo: int, hi: int, derivation_step: str) -> Dataset:
        spec = replace(self.spec, classes=self.classes[lo:hi])

        def keep(src: ImageSource) -> ImageSource:
            return SubsetSource(src, torch.nonzero((src.labels >= lo) & (src.labels < hi)).flatten(), lo)

        val = keep(self.val) if self.val is not None else None
        derivation = (*self.derivation, derivation_step)
        return Dataset(spec, keep(self.train), keep(self.test), self.root, val, self.files_fingerprint, derivation)

    def with_holdout(self, per_class: int, seed: int = 0) -> Dataset:
        """Move ``per_class`` train images of every class into ``val``, chosen by ``seed``, deterministically.

        Learning rates or epochs may be chosen on ``val``; never on ``test``.
        """
        g = torch.Generator().manual_seed(seed)
        val_idx, train_idx = [], []
        for c in range(self.num_classes):
            idx = self.class_indices(c)
            if per_class >= idx.numel():
                raise DatasetError(f"{self.id}: class {c} has {idx.numel()} images, cannot hold out {per_class}")
            perm = idx[torch.randperm(idx.numel(), generator=g)]
            val_idx.append(perm[:per_class])
            train_idx.append(perm[per_class:])
        train = SubsetSource(self.train, torch.cat(train_idx).sort().values)
        val = SubsetSource(self.train, torch.cat(val_idx).sort().values)
        derivation = (*self.derivation, f"holdout={per_class},seed={seed}")
        return Dataset(self.spec, train, self.test, self.root, val, self.files_fingerprint, derivation)


# -- locating and loading ---------------------------------------------------------------------------------------
def _format_module(spec: DatasetSpec) -> ModuleType:
    return importlib.import_module(spec.loader)


def candidate_roots(spec: DatasetSpec, data_root: str | Path | None = None) -> list[Path]:
    """Every directory that is probed for ``spec``, in order."""
    bases: list[Path] = []
    if data_root:
        bases.append(Path(data_root).expanduser())
    if os.environ.get("DDBENCH_DATA"):
        bases.append(Path(os.environ["DDBENCH_DATA"]).expanduser())
    module = _format_module(spec)
    system = list(getattr(module, "search_paths", lambda s: [])(spec))
    out: list[Path] = []
    for base in bases:
        out.append(base)
        out += [base / name for name in spec.folder_names]
    out += system
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def locate(spec: DatasetSpec, data_root: str | Path | None = None) -> Path | None:
    """The first candidate root where the format module detects the dataset, or None."""
    module = _format_module(spec)
    if not hasattr(module, "detect"):
        return None
    for path in candidate_roots(spec, data_root):
        try:
            if path.is_dir() and module.detect(path, spec):
                return path
        except OSError:
            continue
    return None


def diagnose(spec: DatasetSpec, data_root: str | Path | None = None) -> list[str]:
    """For each candidate root holding a partial copy of the dataset's layout, one line naming what it lacks."""
    module = _format_module(spec)
    incomplete = getattr(module, "incomplete", None)
    if incomplete is None:
        return []
    found = []
    for path in candidate_roots(spec, data_root):
        try:
            why = incomplete(path, spec) if path.is_dir() else None
        except OSError:
            continue
        if why:
            found.append(why)
    return found


def _as_tensors(splits: Splits) -> Splits:
    if isinstance(splits.train, TensorSource):
        return splits
    return Splits(
        TensorSource(splits.train.all(), splits.train.labels),
        TensorSource(splits.test.all(), splits.test.labels),
        splits.classes,
        splits.fingerprint,
    )


def _cached_splits(spec: DatasetSpec, cache_key: str, read: Callable[[], Splits]) -> Splits:
    """Decoded uint8 splits from the artifact cache (``$DDBENCH_HOME/datasets/``), decoding them once if needed.

    The cache is an artifact like any other: written atomically, sha256-verified on every load (a flipped bit is a
    warning and a re-decode, never a silently different training set) and locked per key.
    """
    from ddbench.artifacts import CACHE

    def compute() -> dict[str, object]:
        splits = _as_tensors(read())
        return {
            "train_x": splits.train.all(),
            "train_y": splits.train.labels,
            "test_x": splits.test.all(),
            "test_y": splits.test.labels,
            "classes": list(splits.classes),
        }

    blob, _ = CACHE.get_or_build_tensors("datasets", {"dataset": spec.id, "files": cache_key}, compute, name=spec.id)
    return Splits(
        TensorSource(blob["train_x"], blob["train_y"]),
        TensorSource(blob["test_x"], blob["test_y"]),
        tuple(blob["classes"]),
        cache_key,
    )


def load_dataset(
    name: str, data_root: str | Path | None = None, num_classes: int | None = None, download: bool = False
) -> Dataset:
    """Load a registered dataset by name; the entry point every command uses.

    The train/test counts are checked against the spec (a loud warning naming both counts when they differ).

    Raises:
        DatasetError: with one line: what a partial copy that was found lacks, or, when nothing was found, the
            expected layout and the places searched; and how to get the data.
    """
    from ddbench.data import DATASETS

    spec: DatasetSpec = DATASETS.get(name)
    module = _format_module(spec)
    root = locate(spec, data_root)
    if root is None and not getattr(module, "NEEDS_NO_ROOT", False):
        if download and hasattr(module, "download"):
            root = module.download(Path(data_root or os.environ.get("DDBENCH_DATA") or home() / "data"), spec)
        else:
            partial = diagnose(spec, data_root)
            if partial:
                raise DatasetError(f"{spec.id}: found an incomplete copy: {'; '.join(partial)}. {spec.how_to_get}")
            where = ", ".join(str(p) for p in candidate_roots(spec, data_root)) or "(no --data-root or $DDBENCH_DATA)"
            raise DatasetError(
                f"{spec.id}: expected {getattr(module, 'LAYOUT', 'its files')}; looked in {where}. {spec.how_to_get}"
            )
    cache_key = module.fingerprint(root, spec) if spec.in_memory and hasattr(module, "fingerprint") else ""
    if cache_key:
        splits = _cached_splits(spec, cache_key, lambda: module.load(root, spec, download))
    else:
        splits = module.load(root, spec, download)
        splits = _as_tensors(splits) if spec.in_memory else splits
    if spec.classes is not None and tuple(splits.classes) != tuple(spec.classes):
        raise DatasetError(
            f"{spec.id}: the files at {root} list classes in a different order than the spec "
            f"(hash {class_order_hash(splits.classes)} != {spec.class_hash}); refusing to mix class orders"
        )
    check_counts(spec, len(splits.train), len(splits.test), root)
    spec = replace(spec, classes=tuple(splits.classes))
    ds = Dataset(spec, splits.train, splits.test, root, files_fingerprint=splits.fingerprint)
    return ds.with_num_classes(num_classes)
