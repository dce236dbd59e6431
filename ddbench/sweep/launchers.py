"""The launcher interface and its registry: where a sweep's units run.

A launcher turns units into :class:`concurrent.futures.Future` objects of :class:`~ddbench.sweep.units.UnitResult`
and nothing else: queueing, placement and resources are the engine's (a process pool, Ray, Slurm). Built-ins are
lazy registry entries, so ``ddbench sweep --launcher local`` never imports ray or submitit; a third-party package
adds one through the ``ddbench.launchers`` entry-point group.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from ddbench.registry import Registry
from ddbench.sweep.units import FORWARDED_ENV, Unit, UnitResult, execute

logger = logging.getLogger(__name__)


@dataclass
class LaunchOptions:
    """Everything a launcher may use; each reads its own fields.

    Attributes:
        workers: concurrent units (local: pool size, default the cores, or the GPUs when there are some).
        cpus_per_unit, gpus_per_unit: resources one unit asks for (Ray tasks, Slurm jobs).
        address: Ray cluster to connect to (``auto`` or ``ray://host:10001``); None starts a local cluster.
        folder: where submitit keeps job scripts, logs and pickles.
        partition, time_min, mem_gb: Slurm job parameters.
        array_parallelism: at most this many array tasks run at once (Slurm ``%N``).
        cluster: submitit cluster (``slurm``; ``local``/``debug`` run the same code without Slurm, for tests).
        extra: launcher-specific parameters passed through (e.g. ``slurm_additional_parameters``).
    """

    workers: int | None = None
    cpus_per_unit: float = 1.0
    gpus_per_unit: float = 0.0
    address: str | None = None
    folder: str | None = None
    partition: str | None = None
    time_min: int = 60
    mem_gb: float | None = None
    array_parallelism: int = 256
    cluster: str = "slurm"
    extra: dict[str, Any] = field(default_factory=dict)


def forwarded_env() -> dict[str, str]:
    """The driver's values of :data:`~ddbench.sweep.units.FORWARDED_ENV` (workers must see the same home)."""
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}


class Launcher:
    """Runs units somewhere. Subclasses implement :meth:`submit`; :meth:`close` releases the engine.

    ``submit`` takes every unit that is ready at once, so an engine that batches (Slurm job arrays) can.
    """

    name = "launcher"

    def __init__(self, options: LaunchOptions) -> None:
        self.options = options

    def submit(self, units: Sequence[Unit]) -> list[cf.Future[UnitResult]]:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the progress view: the engine and its size."""
        return self.name

    def close(self) -> None:
        """Release the engine (pool, cluster connection); called once, also after a failure."""

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _pin_gpu(queue: Any) -> None:
    """Pool initializer: take one GPU id from the queue and make it this worker's only visible device."""
    os.environ["CUDA_VISIBLE_DEVICES"] = str(queue.get())


class LocalLauncher(Launcher):
    """A process pool on this machine, sized to the GPUs (one unit per GPU) or else to the cores.

    Workers are spawned (a fresh interpreter: no forked torch thread pools), each with cores // workers torch
    threads. A worker killed mid-unit breaks a :class:`~concurrent.futures.ProcessPoolExecutor`; its units come
    back as failures (the driver retries them) and the next submission starts a fresh pool.
    """

    name = "local"

    def __init__(self, options: LaunchOptions) -> None:
        super().__init__(options)
        gpus = _gpu_count()
        self.gpus = gpus
        self.workers = options.workers or gpus or (os.cpu_count() or 1)
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)
        self._pool: cf.ProcessPoolExecutor | None = None

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            ctx = mp.get_context("spawn")
            init: dict[str, Any] = {}
            if self.gpus:
                queue = ctx.SimpleQueue()
                for i in range(self.workers):
                    queue.put(i % self.gpus)
                init = {"initializer": _pin_gpu, "initargs": (queue,)}
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx, **init)
        return self._pool

    def submit(self, units: Sequence[Unit]) -> list[cf.Future[UnitResult]]:
        env = forwarded_env()
        futures = []
        for unit in units:
            try:
                futures.append(self._executor().submit(execute, unit, env, self.threads))
            except BrokenProcessPool:  # a worker died: the old pool is unusable, start another
                logger.warning("a local worker died; starting a fresh pool")
                self._pool = None
                futures.append(self._executor().submit(execute, unit, env, self.threads))
        return futures

    def reset_if_broken(self, exc: BaseException) -> None:
        if isinstance(exc, BrokenProcessPool) and self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def describe(self) -> str:
        where = f"{self.gpus} GPU(s)" if self.gpus else f"{self.threads} thread(s) each"
        return f"local: {self.workers} worker process(es), {where}"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


LAUNCHERS: Registry[Any] = Registry("launcher", base_cls=Launcher, entry_point_group="ddbench.launchers")
LAUNCHERS.register("local", LocalLauncher, origin="builtin")
LAUNCHERS.register("ray", "ddbench.sweep.ray_launcher:RayLauncher", origin="builtin")
LAUNCHERS.register("slurm", "ddbench.sweep.slurm_launcher:SlurmLauncher", origin="builtin")


def make_launcher(name: str, options: LaunchOptions) -> Launcher:
    """The launcher ``name`` built with ``options`` (a missing optional dependency is a one-line error)."""
    return LAUNCHERS.get(name)(options)
