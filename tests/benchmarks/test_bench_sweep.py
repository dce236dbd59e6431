"""Sweep overhead: a 16-unit digits evaluation sweep on ``local`` (2 worker processes) and on ``ray`` (a 2-CPU local
cluster), against the sum of the units' own times.

Run with ``pytest tests/benchmarks/test_bench_sweep.py -m bench --benchmark-only -o addopts="" -p no:cacheprovider``.
An untimed first sweep trains the teacher and distils the run
(random, ipc 2), so the 16 timed units are evaluations (2 students x 8 seeds, a 5-epoch protocol). Each launcher
is started and warmed by one untimed round; a timed round deletes the evaluation records and runs the 16 units
again. Reported in ``extra_info``:

* ``wall_s``: the sweep's elapsed time; ``unit_sum_s``: the units' own times summed (what the workers computed);
* ``overhead_per_unit_s``: ``(wall_s - unit_sum_s / workers) * workers / units``, the scheduling, pickling,
  process and record-ingest cost each unit adds beyond its own work.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from ddbench.store import Store
from ddbench.sweep.driver import run_sweep
from ddbench.sweep.grid import SweepSpec, expand
from ddbench.sweep.launchers import LaunchOptions, make_launcher
from ddbench.sweep.records import read_record

pytestmark = pytest.mark.bench
logger = logging.getLogger(__name__)

TINY = ('version = 1\ndescription = "tiny"\nepochs = 5\nbatch_size = 64\noptimizer = "sgd"\nlr = 0.01\n'
        'momentum = 0.9\nlabel_mode = "hard"\nloss = "ce"\neval_seeds = 1\ntest_every = 0\n')  # fmt: skip
WORKERS, UNITS = 2, 16


def _spec(home: Path) -> SweepSpec:
    protocol = home / "tiny.toml"
    protocol.write_text(TINY)
    return SweepSpec(methods=["random"], ipc=[2], seeds=[0], archs=["convnet", "resnet18"], protocols=[str(protocol)],
                     eval_seeds=list(range(8)), preset="cpu", device="cpu")  # fmt: skip


def _measure(benchmark, launcher_name: str, **options: object) -> None:
    home = Path(os.environ["DDBENCH_HOME"])
    spec = _spec(home)
    results = []

    def reset() -> None:  # forget the evaluation rows only: the teacher and the distilled run stay cached
        for path in (home / "runs").rglob("records/*.json"):
            if read_record(path)[0] == "evaluations":
                path.unlink()
        for locks in (home / "runs").rglob("eval-locks"):
            shutil.rmtree(locks)

    with make_launcher(launcher_name, LaunchOptions(workers=WORKERS, **options)) as launcher:
        run_sweep(expand(spec), launcher, Store(), retries=0, poll_s=0.02)  # teacher + distil, then cached

        def sweep() -> None:
            plan = expand(spec)
            assert len(plan.units) - len(plan.cached) == UNITS, [u.uid for u in plan.units if u.uid not in plan.cached]
            results.append(run_sweep(plan, launcher, Store(), retries=0, poll_s=0.02))

        benchmark.pedantic(sweep, setup=reset, rounds=1, iterations=1, warmup_rounds=1)
    result = results[-1]
    assert not result.failed and len(result.ran) == UNITS
    unit_sum = result.compute_s()["eval"]
    info = {
        "launcher": result.launcher,
        "wall_s": round(result.wall_s, 3),
        "unit_sum_s": round(unit_sum, 3),
        "mean_unit_s": round(unit_sum / UNITS, 3),
        "overhead_per_unit_s": round((result.wall_s - unit_sum / WORKERS) * WORKERS / UNITS, 3),
    }
    logger.info("sweep overhead %s", info)
    benchmark.extra_info.update(info)


def test_bench_local_sweep_overhead(benchmark) -> None:
    _measure(benchmark, "local")


def test_bench_ray_task_overhead(benchmark) -> None:
    pytest.importorskip("ray")
    _measure(benchmark, "ray", cpus_per_unit=1)
