"""The sweep driver: submit the units whose dependencies finished, retry failures a bounded number of times,
ingest each finished unit's records into the store, and say what happened.

This is not a scheduler: it only keeps the DAG order (a unit goes out once its dependencies are done) and hands
every ready unit to the launcher at once; the engine (process pool, Ray, Slurm) queues and places them. A unit
that fails ``retries + 1`` times is reported with its error and its dependents are skipped (``blocked``); every
other unit goes on. Cached units are never submitted, so a re-submitted sweep runs only what is missing.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ddbench.sweep.grid import Plan, dependents
from ddbench.sweep.launchers import Launcher
from ddbench.sweep.records import find_records, ingest
from ddbench.sweep.units import STAGES, Unit, UnitResult

logger = logging.getLogger(__name__)

#: States a unit goes through: waiting on dependencies, submitted to the launcher, and one final state.
STATES = ("waiting", "running", "done", "cached", "failed", "blocked")
EventFn = Callable[[str, Unit, dict[str, Any]], None]


def _no_event(state: str, unit: Unit, info: dict[str, Any]) -> None:
    return None


@dataclass
class Outcome:
    """What became of one unit."""

    unit: Unit
    state: str = "waiting"
    attempts: int = 0
    wall_s: float = 0.0
    error: str | None = None
    result: UnitResult | None = None


@dataclass
class SweepResult:
    """All outcomes, the sweep's wall time and the compute time per stage (summed over the units that ran)."""

    outcomes: dict[str, Outcome]
    wall_s: float
    launcher: str = ""
    records_ingested: int = 0
    counts: Counter = field(default_factory=Counter)

    def uids(self, state: str) -> list[str]:
        return [uid for uid, o in self.outcomes.items() if o.state == state]

    @property
    def ran(self) -> list[str]:
        """Units computed by this submission (done now, not cached)."""
        return self.uids("done")

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes.values() if o.state == "failed"]

    def compute_s(self) -> dict[str, float]:
        """Sum of the units' own wall times per stage (what the workers spent, not the sweep's elapsed time)."""
        out = dict.fromkeys(STAGES, 0.0)
        for o in self.outcomes.values():
            if o.result is not None:
                out[o.unit.kind] += o.result.wall_s
        return out


def _error_text(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:500]


def run_sweep(plan: Plan, launcher: Launcher, store: Any, *, retries: int = 1, on_event: EventFn = _no_event,
              poll_s: float = 0.5) -> SweepResult:  # fmt: skip
    """Run every uncached unit of ``plan`` on ``launcher`` and ingest their records into ``store``.

    Args:
        plan: the expanded sweep (:func:`ddbench.sweep.grid.expand`).
        launcher: where units run.
        store: the :class:`~ddbench.store.Store` records are ingested into (only the driver writes it).
        retries: extra attempts of a failing unit before it is reported failed.
        on_event: ``on_event(state, unit, info)`` at every change of a unit's state (the progress view).
        poll_s: how often the driver wakes while waiting (for ``running`` updates of queued units).

    Returns:
        Every unit's outcome; re-submitting the same plan after it returns computes nothing.
    """
    start = time.perf_counter()
    units = plan.by_uid()
    waiters = dependents(plan)
    outcomes = {uid: Outcome(u) for uid, u in units.items()}
    ingested = 0
    # records that finished units wrote before a crash of the last driver are ingested first
    paths = [p for d in plan.run_dirs() if (d / "records").is_dir() for p in find_records(d / "records")]
    ingested += ingest(paths, store) if paths else 0
    for uid in plan.cached:
        outcomes[uid].state = "cached"
        on_event("cached", units[uid], {})
    in_flight: dict[cf.Future[UnitResult], str] = {}

    def ready(uid: str) -> bool:
        o = outcomes[uid]
        return o.state == "waiting" and all(outcomes[d].state in ("done", "cached") for d in units[uid].deps)

    def block(uid: str) -> None:
        for w in waiters.get(uid, []):
            if outcomes[w].state == "waiting":
                outcomes[w].state = "blocked"
                outcomes[w].error = f"dependency {uid} failed"
                on_event("blocked", units[w], {"error": outcomes[w].error})
                block(w)

    def submit(batch: list[str]) -> None:
        if not batch:
            return
        for uid in batch:
            outcomes[uid].state = "running"
            outcomes[uid].attempts += 1
            on_event("running", units[uid], {"attempt": outcomes[uid].attempts})
        try:
            futures = launcher.submit([units[uid] for uid in batch])
        except Exception as exc:  # the engine refused the whole batch: each unit fails this attempt
            futures = []
            for _ in batch:
                f: cf.Future[UnitResult] = cf.Future()
                f.set_exception(exc)
                futures.append(f)
        in_flight.update(zip(futures, batch, strict=True))

    submit([uid for uid in units if ready(uid)])
    while in_flight:
        done, _ = cf.wait(list(in_flight), timeout=poll_s, return_when=cf.FIRST_COMPLETED)
        again: list[str] = []
        for fut in done:
            uid = in_flight.pop(fut)
            o = outcomes[uid]
            try:
                res = fut.result()
            except BaseException as exc:
                getattr(launcher, "reset_if_broken", lambda e: None)(exc)
                o.error = _error_text(exc)
                if o.attempts <= retries:
                    logger.warning("%s failed (attempt %d of %d): %s", o.unit.label, o.attempts, retries + 1, o.error)
                    on_event("retry", o.unit, {"error": o.error, "attempt": o.attempts})
                    o.state = "waiting"
                    again.append(uid)
                else:
                    logger.error("%s failed after %d attempt(s): %s", o.unit.label, o.attempts, o.error)
                    o.state = "failed"
                    on_event("failed", o.unit, {"error": o.error})
                    block(uid)
                continue
            o.state, o.result, o.wall_s, o.error = "done", res, res.wall_s, None
            if res.records:
                ingested += ingest(res.records, store)
            on_event("done", o.unit, {"wall_s": res.wall_s})
            again.extend(w for w in waiters.get(uid, []) if ready(w))
        submit(list(dict.fromkeys(again)))
    result = SweepResult(outcomes, time.perf_counter() - start, launcher.describe(), ingested)
    result.counts = Counter(o.state for o in outcomes.values())
    return result
