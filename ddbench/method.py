"""The method contract: a plugin only distils. Data, teachers, evaluation, records and tables are the harness's.

A method subclasses :class:`Method`, declares a frozen ``Config`` dataclass of typed defaults, optionally the
teachers it needs, and implements :meth:`Method.distill`. Built-in and third-party methods use the same contract;
third-party ones register through the ``ddbench.methods`` entry-point group.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ddbench.config import derive_seed
from ddbench.data import Dataset
from ddbench.distilled import DistilledSet
from ddbench.io import atomic_file
from ddbench.teachers import Teacher, TeacherSpec

ProgressFn = Callable[[str, int, int], None]


@dataclass
class DistillContext:
    """Everything the harness hands a method.

    Attributes:
        dataset: real data (train split only is meant for distillation; ``val`` if held out), sizes, mean/std.
        teachers: prepared teachers, in the order :meth:`Method.teachers` asked for them (eval mode, frozen).
        ipc: images per class to produce.
        config: the resolved method config (an instance of ``Method.Config``).
        device: where to compute.
        seed: the distillation seed; derive generators with :meth:`generator`.
        workdir: this run's directory; shards live under ``workdir/shards``.
        logger: where to log.
        progress: ``progress(stage, done, total)`` callback for the CLI's progress bars.
    """

    dataset: Dataset
    teachers: list[Teacher]
    ipc: int
    config: Any
    device: torch.device
    seed: int
    workdir: Path
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("ddbench.method"))
    progress: ProgressFn = field(default=lambda stage, done, total: None)

    def generator(self, *keys: object, device: torch.device | str = "cpu") -> torch.Generator:
        """A fresh generator seeded from (seed, keys): the same keys give the same stream in any process."""
        return torch.Generator(device=device).manual_seed(derive_seed(self.seed, *keys))

    def shard(self, key: str, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Run ``compute`` once per ``key`` and cache its tensors under ``workdir/shards``.

        A shard is the unit of resumption (and, later, of distribution): a killed run recomputes only the
        shards that had not finished. The file is written atomically, so a half-written shard never exists.
        """
        path = self.workdir / "shards" / f"{key}.pt"
        if path.is_file():
            try:
                return torch.load(path, weights_only=True)
            except Exception as exc:
                self.logger.warning("shard %s unreadable (%s); recomputing", path, exc)
        out = compute()
        with atomic_file(path) as tmp:
            torch.save({k: v.detach().cpu() for k, v in out.items()}, tmp)
        return out


class Method(abc.ABC):
    """Base class of every distillation method.

    Class attributes:
        name: registry id (short, lowercase).
        version: bump whenever a change can move numbers; it is part of every cache key and record.
        Config: frozen dataclass of typed defaults; presets in ``methods/configs/<name>.toml`` override them.
        paper: citation line shown by ``ddbench list methods``.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    Config: ClassVar[type]
    paper: ClassVar[str] = ""

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

    @abc.abstractmethod
    def distill(self, ctx: DistillContext) -> DistilledSet:
        """Produce ``ctx.ipc`` images per class for ``ctx.dataset``."""
