"""The ``slurm`` launcher: units as submitit jobs; the units that are ready together go out as one job array.

``--slurm-partition``, ``--slurm-time`` (minutes), ``--gpus-per-unit``, ``--cpus-per-unit`` and ``--slurm-mem`` set
the job parameters; ``--slurm-folder`` holds submitit's scripts, logs and result pickles (on a filesystem the
nodes share). Pre-emption: each job's callable is a :class:`UnitTask`, whose ``checkpoint`` hands submitit the same
unit again, so a pre-empted or timed-out job is requeued and resumes from the unit's cached shards and rows.

``cluster = "local"`` / ``"debug"`` (``--slurm-cluster``, for tests and laptops) runs the same submission through
submitit's LocalExecutor / DebugExecutor without Slurm. Each Future waits on ``job.result()`` in a thread.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ddbench.errors import UserError
from ddbench.io import home
from ddbench.sweep.launchers import Launcher, LaunchOptions, forwarded_env
from ddbench.sweep.units import Unit, UnitResult, execute

try:
    import submitit
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise UserError("the slurm launcher needs submitit: pip install 'ddbench[slurm]'") from exc

logger = logging.getLogger(__name__)


def _detected() -> str:
    try:
        return submitit.AutoExecutor.which()
    except RuntimeError:
        return "none"


class UnitTask(Checkpointable):
    """A unit as a submitit callable; requeued unchanged on pre-emption (units resume from their caches)."""

    def __init__(self, unit: Unit, env: Mapping[str, str], threads: int) -> None:
        self.unit, self.env, self.threads = unit, dict(env), threads

    def __call__(self) -> UnitResult:
        return execute(self.unit, self.env, self.threads)

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        logger.warning("%s pre-empted or out of time: requeued", self.unit.label)
        return DelayedSubmission(self, *args, **kwargs)


class SlurmLauncher(Launcher):
    """Units as Slurm jobs through submitit (job arrays for the units ready together)."""

    name = "slurm"

    def __init__(self, options: LaunchOptions) -> None:
        super().__init__(options)
        if options.cluster == "slurm" and _detected() != "slurm":
            raise UserError(
                "--launcher slurm: no Slurm here (sbatch not found); submit from a login node, or use "
                "--slurm-cluster local to run the same jobs on this machine"
            )
        folder = Path(options.folder or home() / "slurm" / "%j")
        self.executor = submitit.AutoExecutor(folder=folder, cluster=None if options.cluster == "slurm" else
                                              options.cluster)  # fmt: skip
        params: dict[str, Any] = {"timeout_min": options.time_min, "cpus_per_task": max(1, int(options.cpus_per_unit)),
                                  "name": "ddbench"}  # fmt: skip
        if options.gpus_per_unit:
            params["gpus_per_node"] = int(options.gpus_per_unit)
        if options.mem_gb:
            params["mem_gb"] = options.mem_gb
        if options.cluster == "slurm":
            if options.partition:
                params["slurm_partition"] = options.partition
            params["slurm_array_parallelism"] = options.array_parallelism
        params.update(options.extra)
        self.executor.update_parameters(**params)
        self.threads = max(1, int(options.cpus_per_unit))
        self._waiters = cf.ThreadPoolExecutor(max_workers=64, thread_name_prefix="submitit-wait")

    def submit(self, units: Sequence[Unit]) -> list[cf.Future[UnitResult]]:
        env = forwarded_env()
        tasks = [UnitTask(u, env, self.threads) for u in units]
        if len(tasks) > 1:
            with self.executor.batch():  # one job array
                jobs = [self.executor.submit(t) for t in tasks]
        else:
            jobs = [self.executor.submit(t) for t in tasks]
        for unit, job in zip(units, jobs, strict=True):
            logger.info("%s → job %s", unit.label, job.job_id)
        return [self._waiters.submit(job.result) for job in jobs]

    def describe(self) -> str:
        where = self.options.partition or "default partition"
        return f"slurm ({self.options.cluster}): {where}, {self.options.time_min} min, {self.threads} CPU per unit"

    def close(self) -> None:
        self._waiters.shutdown(wait=False, cancel_futures=True)
