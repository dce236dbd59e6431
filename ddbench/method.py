"""The method contract: what a plugin author imports. A plugin only distils; data, teachers, evaluation, records
and tables are the harness's.

A method subclasses :class:`Method`, declares a frozen ``Config`` dataclass of typed defaults, optionally the
teachers it needs (:class:`TeacherSpec`), and implements :meth:`Method.distill`, which receives a
:class:`DistillContext` and returns a :class:`~ddbench.distilled.DistilledSet`. Built-in and third-party methods use
the same contract; third-party ones register through the ``ddbench.methods`` entry-point group.

This module imports no training code (no teachers, training loop, evaluator or pipeline), so importing it is cheap
and a plugin cannot reach into the harness by accident. It also holds what every method used to rewrite, each in one
place:

* :meth:`DistillContext.real_permutation` / :meth:`DistillContext.pick_real`: the seeded, class-balanced pick of real
  training images (random baseline, real-image inits of DWA/EDC/MTT);
* :func:`real_set`: a distilled set made of chosen real images, with their indices recorded;
* :func:`class_major`: shards of (ipc index, tensors) assembled into class-major order;
* :meth:`DistillContext.shard` / :meth:`DistillContext.shards`: cached, verified, resumable units of work, filled by
  several processes at once without recomputation;
* :attr:`DistillContext.cache`: the cross-run artifact cache (expert trajectories, statistics passes, generators).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ddbench.artifacts import CACHE, ArtifactCache, CorruptArtifactError
from ddbench.config import derive_seed
from ddbench.distilled import DistilledSet, SoftLabelSpec

if TYPE_CHECKING:
    from ddbench.data import Dataset
    from ddbench.teachers import Teacher

ProgressFn = Callable[[str, int, int], None]
ShardFn = Callable[[], Mapping[str, torch.Tensor]]

SHARD_KIND = "shards"


@dataclass(frozen=True)
class TeacherSpec:
    """What a method asks for: an architecture (with model kwargs) trained with a named recipe and seed.

    Attributes:
        arch: ddbench architecture; ``""`` means the dataset's default teacher architecture.
        recipe: an entry of the teacher recipes (``default`` = the dataset's paper recipe; the run's profile, e.g.
            ``cpu``, can shrink it), or a TOML path. EDC's weak observers and MTT's experts are recipes too.
        seed: training seed (two seeds of one arch make a two-member ensemble).
        model_kwargs: keyword arguments of the architecture's factory (``width``, ``depth``, ``norm`` ...), as
            sorted ``(name, value)`` pairs; a mapping is accepted and normalised. Part of the teacher's key.
    """

    arch: str = ""
    recipe: str = "default"
    seed: int = 0
    model_kwargs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        kwargs = self.model_kwargs
        pairs = kwargs.items() if isinstance(kwargs, Mapping) else (tuple(p) for p in kwargs)
        object.__setattr__(self, "model_kwargs", tuple(sorted((str(k), v) for k, v in pairs)))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_kwargs)


@dataclass
class DistillContext:
    """Everything the harness hands a method.

    Attributes:
        dataset: real data (the train split is meant for distillation; ``val`` if held out), sizes, mean/std.
        teachers: prepared teachers, in the order :meth:`Method.teachers` asked for them (eval mode, frozen).
        ipc: images per class to produce.
        device: where to compute.
        seed: the distillation seed; derive generators with :meth:`generator`.
        workdir: this run's directory; shards live under ``workdir/shards``.
        logger: where to log.
        progress: ``progress(stage, done, total)`` callback for the CLI's progress bars.
        cache: the cross-run artifact cache (``$DDBENCH_HOME``).
    """

    dataset: Dataset
    teachers: list[Teacher]
    ipc: int
    device: torch.device
    seed: int
    workdir: Path
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("ddbench.method"))
    progress: ProgressFn = field(default=lambda stage, done, total: None)
    cache: ArtifactCache = field(default_factory=lambda: CACHE)
    _perms: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def generator(self, *keys: object, device: torch.device | str = "cpu") -> torch.Generator:
        """A fresh generator seeded from (seed, keys): the same keys give the same stream in any process."""
        return torch.Generator(device=device).manual_seed(derive_seed(self.seed, *keys))

    # -- real images ------------------------------------------------------------------------------------------
    def real_permutation(self, c: int, stream: str) -> torch.Tensor:
        """Train indices of class ``c`` in an order seeded by (seed, ``stream``, c), computed once.

        Entry i of the permutation is the i-th real image a method takes for class c, so the images are drawn
        without replacement and ipc index i does not depend on how many indices are generated.
        """
        key = (stream, c)
        if key not in self._perms:
            pool = self.dataset.class_indices(c)
            self._perms[key] = pool[torch.randperm(pool.numel(), generator=self.generator(stream, c))]
        return self._perms[key]

    def pick_real(self, k: int, stream: str) -> dict[int, torch.Tensor]:
        """The first ``k`` entries of every class's :meth:`real_permutation` (fewer when a class is short)."""
        chosen = {}
        for c in range(self.dataset.num_classes):
            perm = self.real_permutation(c, stream)
            if perm.numel() < k:
                self.logger.warning("class %d has only %d train images for %d per class", c, perm.numel(), k)
            chosen[c] = perm[:k]
        return chosen

    # -- shards -----------------------------------------------------------------------------------------------
    @property
    def shard_cache(self) -> ArtifactCache:
        return ArtifactCache(self.workdir)

    def load_shard(self, key: str) -> dict[str, torch.Tensor] | None:
        """A finished, verified shard's tensors, or None if it is absent or corrupt (nothing is computed)."""
        return self._load_shard(key)

    def _load_shard(self, key: str) -> dict[str, torch.Tensor] | None:
        art = self.shard_cache.lookup(SHARD_KIND, {"shard": key}, name=key)
        if art is None:
            return None
        try:
            return art.tensors()
        except CorruptArtifactError as exc:
            self.logger.warning("%s; recomputing shard %s", exc, key)
            return None

    def shard(self, key: str, compute: ShardFn) -> dict[str, torch.Tensor]:
        """Run ``compute`` once per ``key`` and cache its tensors (verified by sha256) under ``workdir/shards``.

        A shard is the unit of resumption and of distribution: a killed run recomputes only the shards that had not
        finished, a shard whose bytes changed or that lacks its keys is recomputed with a warning, and a second
        process asking for a shard being computed waits for it instead of computing it again.
        """
        cache = self.shard_cache
        for attempt in range(2):
            art = cache.get_or_build(
                SHARD_KIND, {"shard": key}, cache.tensor_build(compute), name=key, refresh=attempt > 0
            )
            try:
                return art.tensors()
            except CorruptArtifactError as exc:
                self.logger.warning("%s; recomputing shard %s", exc, key)
        raise CorruptArtifactError(f"shard {key} could not be written and read back under {self.workdir}")

    def shards(self, items: Sequence[tuple[str, ShardFn]], stage: str = "shards") -> list[dict[str, torch.Tensor]]:
        """Compute independent shards, sharing the work with any other process filling the same run.

        Each pass takes every shard nobody else holds (non-blocking lock), computes it and moves on; shards held by
        another process are revisited, and when only those are left the call waits for one of them. So two
        processes (or machines on a shared filesystem) started on one run split its shards, and neither computes
        one the other finished. Results come back in ``items`` order.
        """
        cache = self.shard_cache
        results: dict[str, dict[str, torch.Tensor]] = {}
        pending = list(items)
        total = len(items)
        while pending:
            busy = []
            for key, compute in pending:
                found = self._load_shard(key)
                if found is None:
                    art = cache.try_build(SHARD_KIND, {"shard": key}, cache.tensor_build(compute), name=key)
                    if art is None:
                        busy.append((key, compute))
                        continue
                    found = self._load_shard(key)
                    if found is None:  # written but unreadable: compute it here, waiting on the lock
                        found = self.shard(key, compute)
                results[key] = found
                self.progress(stage, len(results), total)
            if busy and len(busy) == len(pending):
                key, compute = busy.pop(0)  # everything left is being computed elsewhere: wait for one
                results[key] = self.shard(key, compute)
                self.progress(stage, len(results), total)
            pending = busy
        return [results[key] for key, _ in items]


def real_set(dataset: Dataset, chosen: Mapping[int, torch.Tensor], **meta: Any) -> DistilledSet:
    """A uint8 distilled set of the chosen real train images (class-major), recording their indices in ``meta``."""
    images, labels, indices = [], [], {}
    for c, idx in sorted(chosen.items()):
        idx = torch.as_tensor(idx, dtype=torch.long)
        images.append(dataset.train.load(idx))
        labels.append(torch.full((idx.numel(),), int(c), dtype=torch.long))
        indices[str(c)] = idx.tolist()
    return DistilledSet(torch.cat(images), torch.cat(labels), "uint8", meta={"train_indices": indices, **meta})


def class_major(
    parts: Sequence[tuple[int, Mapping[str, torch.Tensor]]], keys: Sequence[str]
) -> tuple[dict, torch.Tensor]:
    """Concatenate per-shard tensors and sort them class-major, ipc index ascending within a class.

    Args:
        parts: ``(ipc index, shard)`` pairs; every shard holds ``labels`` and the per-image ``keys``.
        keys: per-image tensors to concatenate and reorder (``labels`` is always included).

    Returns:
        The reordered tensors and the permutation applied (to align other per-image records).
    """
    labels = torch.cat([s["labels"] for _, s in parts])
    ipc_of = torch.cat([torch.full_like(s["labels"], i) for i, s in parts])
    order = torch.argsort(labels * (int(ipc_of.max()) + 2) + ipc_of, stable=True)
    out = {k: torch.cat([s[k] for _, s in parts])[order] for k in dict.fromkeys(["labels", *keys])}
    return out, order


class Method(abc.ABC):
    """Base class of every distillation method.

    Class attributes:
        name: registry id (short, lowercase).
        version: bump whenever a change can move numbers; it is part of every cache key and record.
        Config: frozen dataclass of typed defaults; presets in ``methods/configs/<name>.toml`` override them.
        paper: citation line shown by ``ddbench list methods``.
        needs_bn_teacher: the method matches BatchNorm statistics, so each teacher must contain BatchNorm2d layers;
            the harness checks this before any training (SRe2L, DWA, EDC).
        soft_labels: the method's sets are meant to be scored with soft labels (the fair shared protocol is then
            ``kd``, else ``hard``).
        baselines: other registered methods ``ddbench run`` evaluates beside this one, like the random baseline and
            with the same ``--set``/``--config`` (a paper's own baseline columns, e.g. Minimax's ``dit``).

    The resolved configuration is ``self.config`` (one place; the context does not repeat it).
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    Config: ClassVar[type]
    paper: ClassVar[str] = ""
    needs_bn_teacher: ClassVar[bool] = False
    soft_labels: ClassVar[bool] = False
    baselines: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any) -> None:
        self.config = config

    @classmethod
    def preset_path(cls) -> Path | None:
        """Where this method's presets live (built-ins: next to the module under ``configs/``)."""
        import inspect

        path = Path(inspect.getfile(cls)).parent / "configs" / f"{cls.name}.toml"
        return path if path.is_file() else None

    def teachers(self, dataset: Dataset) -> list[TeacherSpec]:
        """Teachers the harness must prepare before :meth:`distill`; none by default."""
        return []

    def paper_protocol(self, dataset: str) -> str | None:
        """The protocol the method's paper evaluates ``dataset`` under (scored beside the fair one under ``paper``)."""
        return None

    def paper_students(self, dataset: str | None) -> Sequence[str] | None:
        """The student set of the paper's cross-architecture table for ``dataset`` (None: the suite's default)."""
        return None

    def cpu_protocol(self, dataset: str) -> str | None:
        """The protocol the ``cpu`` profile scores ``dataset`` under (None: the dataset's fair default)."""
        return None

    def cpu_students(self, dataset: str | None) -> Sequence[str] | None:
        """The students of the ``cpu`` profile (None: the suite's cpu default)."""
        return None

    def check_ipc(self, ipc: int) -> None:
        """Refuse an ``ipc`` this configuration cannot serve, before any teacher or generator is trained.

        :func:`ddbench.pipeline.prepare` calls it with the other checks, so a bad ``--ipc`` costs nothing; the
        default accepts every ipc. Raise :class:`~ddbench.errors.UserError` with the fix in the message.
        """
        del ipc  # every ipc is served by default

    def min_real_per_class(self, ipc: int) -> int:
        """Real train images per class :meth:`distill` needs for ``ipc`` (default: ``ipc``, real-image methods)."""
        return ipc

    @abc.abstractmethod
    def distill(self, ctx: DistillContext) -> DistilledSet:
        """Produce ``ctx.ipc`` images per class for ``ctx.dataset``."""


__all__ = [
    "DistillContext",
    "DistilledSet",
    "Method",
    "SoftLabelSpec",
    "TeacherSpec",
    "class_major",
    "real_set",
]
