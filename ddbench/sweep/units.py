"""One unit of a sweep: what it is, whether the cache already holds it, and how a worker runs it.

Three kinds, in DAG order: ``teacher`` (one cached teacher), ``distil`` (one run's distilled set: its shards and
the assembled artifact, plus the run's records) and ``eval`` (one (protocol, student arch, eval seed) row of one
run). A worker runs a unit with the pipeline's own entry points (:func:`ddbench.teachers.get_teacher`,
:func:`ddbench.pipeline.distill`, :func:`ddbench.pipeline.evaluate_run`), which are idempotent, cached and locked,
so a unit that runs twice (a retry, a pre-empted job requeued, two sweeps at once) computes its work once.

Units travel to workers by pickle: they hold only the :class:`~ddbench.pipeline.RunRequest` and names, never
tensors; the worker rebuilds the run with :func:`ddbench.pipeline.prepare`, whose run id comes from the request.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ddbench.method import TeacherSpec
from ddbench.pipeline import RunRequest

logger = logging.getLogger(__name__)

STAGES = ("teacher", "distil", "eval")
#: Environment variables a worker takes from the driver (a Ray or Slurm worker starts with its own environment).
FORWARDED_ENV = ("DDBENCH_HOME", "DDBENCH_DATA")


@dataclass(frozen=True, eq=False)
class Unit:
    """A node of the sweep DAG.

    Attributes:
        kind: ``teacher``, ``distil`` or ``eval``.
        uid: stable id (``distil:<run_id>``, ``eval:<run_id>:<protocol>:<arch>:s<seed>``, ``teacher:<folder>``).
        request: the run the unit belongs to (for a teacher unit: any run that needs the teacher).
        deps: uids that must finish first.
        teacher: the teacher a ``teacher`` unit trains.
        protocol, protocol_key, protocol_version, protocol_hash: the evaluation protocol (name or file, its stored
            id, version and content hash) of an ``eval`` unit.
        arch, eval_seed: the student and seed of an ``eval`` unit.
        run_dir: the run's directory (records live in ``run_dir/records``).
        amp, channels_last: evaluation speed options.
    """

    kind: str
    uid: str
    request: RunRequest
    deps: tuple[str, ...] = ()
    teacher: TeacherSpec | None = None
    protocol: str | None = None
    protocol_key: str | None = None
    protocol_version: int | None = None
    protocol_hash: str | None = None
    arch: str | None = None
    eval_seed: int | None = None
    run_dir: Path | None = None
    teacher_folder: Path | None = None
    amp: bool = False
    channels_last: bool = False

    @property
    def label(self) -> str:
        """A short human name for progress lines."""
        if self.kind == "teacher":
            return f"teacher {self.teacher_folder.name if self.teacher_folder else self.teacher}"
        if self.kind == "distil":
            return f"distil {self.request.method} {self.request.dataset} ipc{self.request.ipc} s{self.request.seed}"
        return f"eval {self.uid.partition(':')[2] or self.uid}"

    @property
    def records_dir(self) -> Path | None:
        from ddbench.sweep.records import RECORDS_DIR

        return self.run_dir / RECORDS_DIR if self.run_dir is not None else None


def is_cached(unit: Unit) -> bool:
    """Whether the unit's result is already on disk (a teacher folder, an artifact and its run record, an eval row).

    Only files are read, nothing is verified or trained: a corrupt artifact is found (and rebuilt) by the worker.
    """
    from ddbench.sweep.records import RecordDir

    if unit.kind == "teacher":
        return unit.teacher_folder is not None and (unit.teacher_folder / "manifest.json").is_file()
    assert unit.run_dir is not None and unit.records_dir is not None
    if unit.kind == "distil":
        return (unit.run_dir / "artifact" / "manifest.json").is_file() and (unit.records_dir / "run.json").is_file()
    records = RecordDir(unit.records_dir)
    return records.has_evaluation(unit.protocol_key or "", int(unit.protocol_version or 0), unit.arch or "",
                                  int(unit.eval_seed or 0), unit.protocol_hash or "")  # fmt: skip


@dataclass
class UnitResult:
    """What a worker reports back: the records it wrote (the driver ingests them) and its compute time."""

    uid: str
    kind: str
    wall_s: float
    records: list[str] = field(default_factory=list)
    host: str = ""
    pid: int = 0
    world_size: int = 1


def _set_env(env: Mapping[str, str]) -> None:
    for name, value in env.items():
        os.environ[name] = value


def execute(unit: Unit, env: Mapping[str, str] | None = None, threads: int | None = None) -> UnitResult:
    """Run one unit in this process (the function every launcher ships to its workers).

    Args:
        unit: the unit.
        env: variables to set first (the driver's ``DDBENCH_HOME``/``DDBENCH_DATA``, see :data:`FORWARDED_ENV`).
        threads: torch intra-op threads (a pool of k workers on c cores gives each c // k, so they do not fight).
    """
    import torch

    _set_env(env or {})
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    records = _RUNNERS[unit.kind](unit)
    return UnitResult(unit.uid, unit.kind, time.perf_counter() - start, [str(p) for p in records],
                      socket.gethostname(), os.getpid())  # fmt: skip


def _run_teacher(unit: Unit) -> list[Path]:
    from ddbench.data import load_dataset
    from ddbench.teachers import get_teacher

    req = unit.request
    dataset = load_dataset(req.dataset, req.data_root, req.num_classes)
    assert unit.teacher is not None
    get_teacher(dataset, unit.teacher, profile=req.profile, device=req.device)
    return []


def _run_distil(unit: Unit) -> list[Path]:
    from ddbench.pipeline import distill, prepare, record_diversity, record_run
    from ddbench.sweep.records import RecordDir

    state = prepare(unit.request)
    distilled = distill(state)
    records = RecordDir(state.run_dir / "records")
    record_run(state, distilled, records)
    record_diversity(state, distilled, records)
    return records.written


def _run_eval(unit: Unit) -> list[Path]:
    from ddbench.distilled import DistilledSet
    from ddbench.pipeline import EvalRequest, evaluate_run, prepare
    from ddbench.sweep.records import RecordDir

    state = prepare(unit.request)
    distilled = DistilledSet.load(state.artifact_dir)
    records = RecordDir(state.run_dir / "records")
    assert unit.protocol is not None and unit.arch is not None and unit.eval_seed is not None
    request = EvalRequest(archs=[unit.arch], protocols=[unit.protocol], seeds=[unit.eval_seed], amp=unit.amp,
                          channels_last=unit.channels_last)  # fmt: skip
    rows = evaluate_run(state, distilled, request, records)
    failed = [r["error"] for r in rows if r.get("eval_seed") == unit.eval_seed and isinstance(r.get("error"), str)]
    if failed:  # the row is recorded (the table shows the failure); the unit is reported failed and retried
        raise RuntimeError(f"{unit.label}: {failed[0]}")
    return records.written


_RUNNERS = {"teacher": _run_teacher, "distil": _run_distil, "eval": _run_eval}
