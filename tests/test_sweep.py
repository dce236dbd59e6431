"""`ddbench sweep`: the grid's DAG, cache status, launchers (local pool, Ray, submitit), retries, records and ingest.

The digits sweep is 2 methods (random, DWA with 2 recover iterations) x 2 seeds x 2 students under a 5-epoch
hard-label protocol file; its reference is the same runs made one by one with `ddbench run` into another home.
Every worker uses one torch thread, as the reference process does (conftest), so CPU records are bit-identical.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddbench.cli import main
from ddbench.pipeline import RunRequest
from ddbench.store import Store
from ddbench.sweep.driver import run_sweep
from ddbench.sweep.grid import SweepSpec, expand
from ddbench.sweep.launchers import Launcher, LaunchOptions, make_launcher
from ddbench.sweep.records import RecordDir, find_records, ingest
from ddbench.sweep.units import Unit, UnitResult

TINY = ('version = 1\ndescription = "tiny"\nepochs = 5\nbatch_size = 64\noptimizer = "sgd"\nlr = 0.01\n'
        'momentum = 0.9\nlabel_mode = "hard"\nloss = "ce"\neval_seeds = 1\ntest_every = 0\n')  # fmt: skip
ARCHS = ["convnet", "resnet18"]
KEY = ["run_id", "arch", "protocol", "protocol_version", "eval_seed", "label_teachers"]
NUMBERS = ["top1", "top5", "best_top1", "protocol_hash"]


def grid(protocol: Path, methods: tuple[str, ...] = ("random", "dwa"), seeds: tuple[int, ...] = (0, 1)) -> SweepSpec:
    return SweepSpec(methods=list(methods), datasets=["digits"], ipc=[2], seeds=list(seeds), archs=ARCHS,
                     protocols=[str(protocol)], eval_seeds=[0], preset="cpu", device="cpu",
                     overrides={"dwa": {"iterations": 2}})  # fmt: skip


def rows(store: Store) -> dict[tuple, tuple]:
    frame = store.evaluations()
    return {tuple(r[k] for k in KEY): tuple(r[k] for k in NUMBERS) for r in frame.to_dict("records")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The sweep's runs made one by one with `ddbench run` (its own home), and its teacher cache to reuse."""
    home = tmp_path_factory.mktemp("reference-home")
    protocol = home / "tiny.toml"
    protocol.write_text(TINY)
    old = os.environ.get("DDBENCH_HOME")
    os.environ["DDBENCH_HOME"] = str(home)
    try:
        for method in ("random", "dwa"):
            for seed in (0, 1):
                extra = ["--set", "iterations=2"] if method == "dwa" else []
                assert main(["-q", "run", "--method", method, "--dataset", "digits", "--ipc", "2", "--seed", str(seed),
                             "--preset", "cpu", "--device", "cpu", "--archs", ",".join(ARCHS), "--protocol",
                             str(protocol), "--seeds", "0", "--no-baseline", *extra]) == 0  # fmt: skip
        return {"rows": rows(Store()), "runs": Store().runs(), "home": home, "protocol": protocol}
    finally:
        if old is None:
            os.environ.pop("DDBENCH_HOME", None)
        else:
            os.environ["DDBENCH_HOME"] = old


def _protocol(home: Path) -> Path:
    path = home / "tiny.toml"
    path.write_text(TINY)
    return path


def _copy_teachers(reference: dict, home: Path) -> None:
    """Seed the fresh home with the reference's teacher (saves its training; the file is the same either way)."""
    shutil.copytree(Path(reference["home"]) / "teachers", home / "teachers", dirs_exist_ok=True)


def _check_same_as_reference(reference: dict, store: Store) -> None:
    got, want = rows(store), reference["rows"]
    assert len(want) == 8 and set(got) == set(want)  # 4 runs x 2 students, same run ids and keys
    assert got == want  # bit-identical accuracies under the same protocol hash
    runs = store.runs().set_index("run_id").sort_index()
    ref = reference["runs"].set_index("run_id").sort_index()
    cols = ["method", "dataset", "ipc", "distill_seed", "config_hash", "teacher_id", "teacher_sha256"]
    assert runs[cols].equals(ref[cols])


def _sweep(spec: SweepSpec, launcher: str, **options: object):
    with make_launcher(launcher, LaunchOptions(**options)) as launch:
        return run_sweep(expand(spec), launch, Store(), retries=0)


# -- the DAG ----------------------------------------------------------------------------------------------------------
def test_dry_run_lists_the_dag_and_reads_a_sweep_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'methods = ["random", "dwa"]\nipc = [2]\nseeds = [0, 1]\narchs = ["convnet", "resnet18"]\n'
                     f'protocols = ["{_protocol(tmp_path)}"]\neval_seeds = [0, 1]\npreset = "cpu"\n'
                     '[set.dwa]\niterations = 2\n')  # fmt: skip
    assert main(["-q", "sweep", str(sweep), "--device", "cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    # 1 teacher (DWA's), 4 distil, 4 runs x 2 archs x 2 eval seeds = 16 eval units; nothing cached yet
    assert "21 units, 0 cached" in out and out.count("to run") == 21
    plan = expand(grid(_protocol(tmp_path)))
    kinds = [u.kind for u in plan.units]
    assert kinds == ["teacher"] + ["distil"] * 4 + ["eval"] * 8  # DAG order: teachers, runs, evaluations
    by = plan.by_uid()
    dwa = [u for u in plan.units if u.kind == "distil" and u.request.method == "dwa"]
    # DWA waits on its teacher; random on the default teacher its diversity metric uses (the same one on digits)
    assert all(u.deps == (plan.units[0].uid,) for u in plan.units if u.kind == "distil")
    assert all(by[u.deps[0]].kind == "distil" for u in plan.units if u.kind == "eval")
    assert all(u.request.overrides == {"iterations": 2} for u in dwa)  # [set.dwa] reaches DWA only
    # a flag beats the file, and a dotted --set targets one method
    assert main(["-q", "sweep", str(sweep), "--device", "cpu", "--methods", "random", "--eval-seeds", "0",
                 "--dry-run"]) == 0  # fmt: skip
    assert "7 units, 0 cached" in capsys.readouterr().out  # the teacher, 2 runs, 4 evaluations


def test_bad_sweeps_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('methods = ["random"]\nipcs = [2]\n')
    assert main(["-q", "sweep", str(bad), "--dry-run"]) == 2
    assert "unknown key(s) ipcs" in capsys.readouterr().err
    assert main(["-q", "sweep", "--dry-run"]) == 2
    assert "the sweep has no methods" in capsys.readouterr().err
    assert main(["-q", "sweep", "--methods", "random", "--launcher", "kubernetes", "--preset", "cpu",
                 "--archs", "convnet", "--protocol", str(_protocol(tmp_path)), "--device", "cpu"]) == 2  # fmt: skip
    assert "unknown launcher 'kubernetes'" in capsys.readouterr().err
    assert main(["-q", "sweep", "--methods", "random", "--retries", "-1", "--dry-run"]) == 2
    assert "--retries must be 0 or more" in capsys.readouterr().err


# -- the driver (a fake launcher: no training) ---------------------------------------------------------------------
class Flaky(Launcher):
    """Runs nothing: every unit succeeds at once, except those named in ``fail`` (always) or ``once``."""

    name = "flaky"

    def __init__(self, fail: set[str], once: set[str]) -> None:
        super().__init__(LaunchOptions())
        self.fail, self.once, self.calls = fail, set(once), []

    def submit(self, units):
        out = []
        for u in units:
            self.calls.append(u.uid)
            f: cf.Future = cf.Future()
            if u.uid in self.fail or u.uid in self.once:
                self.once.discard(u.uid)
                f.set_exception(RuntimeError(f"boom in {u.uid}"))
            else:
                f.set_result(UnitResult(u.uid, u.kind, 1.0))
            out.append(f)
        return out


def _fake_plan(tmp_path: Path):
    from ddbench.sweep.grid import Plan

    req = RunRequest(method="random", dataset="digits")
    evals = [Unit("eval", f"{r}{i}", req, deps=(r,), run_dir=tmp_path / r) for r in "ab" for i in range(2)]
    units = [Unit("teacher", "t", req), Unit("distil", "a", req, deps=("t",), run_dir=tmp_path / "a"),
             Unit("distil", "b", req, run_dir=tmp_path / "b"), *evals]  # fmt: skip
    return Plan(units, cached={"t"})


def test_a_failing_unit_is_retried_then_reported_and_the_rest_finish(tmp_path: Path) -> None:
    launcher = Flaky(fail={"a"}, once={"b0"})
    result = run_sweep(_fake_plan(tmp_path), launcher, Store(), retries=2, poll_s=0.01)
    out = result.outcomes
    assert out["t"].state == "cached" and "t" not in launcher.calls  # cached units never go out
    assert out["a"].state == "failed" and out["a"].attempts == 3 and "boom in a" in out["a"].error
    assert launcher.calls.count("a") == 3  # retries=2: three attempts, then reported
    assert {out["a0"].state, out["a1"].state} == {"blocked"}  # its evaluations cannot run
    assert out["b0"].state == "done" and out["b0"].attempts == 2  # failed once, succeeded on the retry
    assert out["b"].state == out["b1"].state == "done"
    assert sorted(result.ran) == ["b", "b0", "b1"] and result.compute_s()["eval"] == 2.0


# -- records ----------------------------------------------------------------------------------------------------------
def test_ingest_twice_leaves_the_store_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = RecordDir(tmp_path / "runs" / "r1" / "records")
    records.add_run(run_id="r1", method="random", dataset="digits", ipc=2, distill_seed=0, status="distilled")
    for arch, top1 in (("convnet", 81.5), ("resnet18", 77.25)):
        records.add_evaluation(run_id="r1", arch=arch, protocol="tiny", protocol_version=1, eval_seed=0,
                               label_teachers="", protocol_hash="h", top1=top1, error=None,
                               extra_json='{"world_size": 1}')  # fmt: skip
    records.add_metric("r1", "storage_images_bytes", 1280.0)
    assert len(list(find_records(tmp_path))) == 4
    db = tmp_path / "results.sqlite"

    def dump() -> list[tuple]:
        with sqlite3.connect(db) as con:
            return [r for t in ("runs", "evaluations", "metrics") for r in con.execute(f"select rowid, * from {t}")]

    assert main(["-q", "ingest", str(tmp_path / "runs"), "--store", str(db)]) == 0
    first = dump()
    assert "4 record(s)" in capsys.readouterr().out and len(first) == 4
    assert main(["-q", "ingest", str(tmp_path / "runs"), "--store", str(db)]) == 0
    assert dump() == first  # same rows, same rowids, same created_at
    store = Store(db)
    assert sorted(store.evaluations()["top1"]) == [77.25, 81.5]
    assert store.evaluations()["method"].tolist() == ["random", "random"]  # joined with the ingested run
    # a retried unit that now succeeds clears the error of its earlier row
    records.add_evaluation(run_id="r1", arch="convnet", protocol="tiny", protocol_version=1, eval_seed=0,
                           label_teachers="", protocol_hash="h", top1=None, error="RuntimeError: x")  # fmt: skip
    ingest(records.written[-1:], store)
    assert store.evaluations(arch="convnet")["error"].tolist() == ["RuntimeError: x"]
    records.add_evaluation(run_id="r1", arch="convnet", protocol="tiny", protocol_version=1, eval_seed=0,
                           label_teachers="", protocol_hash="h", top1=80.0, error=None)  # fmt: skip
    ingest(records.written[-1:], store)
    assert store.evaluations(arch="convnet")["error"].isna().all()


# -- launchers on the digits sweep ------------------------------------------------------------------------------------
@pytest.mark.slow  # the reference runs and the sweep each train DWA's teacher: about a minute on 2 cores
def test_local_sweep_equals_the_sequential_runs_and_resubmits_nothing(reference: dict, tmp_path: Path) -> None:
    home = Path(os.environ["DDBENCH_HOME"])
    spec = grid(_protocol(home))
    result = _sweep(spec, "local", workers=2)
    assert not result.failed and len(result.ran) == 13  # the teacher, 4 runs, 8 evaluations
    _check_same_as_reference(reference, Store())
    table = Store().evaluations()
    assert table["extra_json"].str.contains('"world_size": 1').all()
    again = _sweep(spec, "local", workers=2)
    assert again.ran == [] and len(again.uids("cached")) == 13  # a second submission runs zero units
    assert rows(Store()) == reference["rows"]


@pytest.mark.slow
def test_ray_sweep_on_a_two_cpu_local_cluster(reference: dict) -> None:
    pytest.importorskip("ray")
    home = Path(os.environ["DDBENCH_HOME"])
    _copy_teachers(reference, home)
    spec = grid(_protocol(home))
    result = _sweep(spec, "ray", workers=2, cpus_per_unit=1)
    assert not result.failed and len(result.ran) == 12 and result.uids("cached") == [expand(spec).units[0].uid]
    _check_same_as_reference(reference, Store())
    assert _sweep(spec, "ray", workers=2).ran == []


@pytest.mark.slow
def test_slurm_launcher_through_submitit_local_executor(reference: dict) -> None:
    pytest.importorskip("submitit")
    home = Path(os.environ["DDBENCH_HOME"])
    _copy_teachers(reference, home)
    spec = grid(_protocol(home))
    result = _sweep(spec, "slurm", cluster="local", folder=str(home / "jobs" / "%j"), time_min=10)
    assert not result.failed and len(result.ran) == 12
    _check_same_as_reference(reference, Store())
    assert list((home / "jobs").glob("*/*_result.pkl"))  # they really were submitit jobs
    assert _sweep(spec, "slurm", cluster="local", folder=str(home / "jobs" / "%j")).ran == []


def test_slurm_without_slurm_says_so_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    if shutil.which("sbatch"):
        pytest.skip("a real Slurm is here")
    assert main(["-q", "sweep", "--methods", "random", "--ipc", "2", "--preset", "cpu", "--device", "cpu",
                 "--archs", "convnet", "--protocol", str(_protocol(tmp_path)), "--launcher", "slurm"]) == 2  # fmt: skip
    assert "no Slurm here" in capsys.readouterr().err


# -- kill and resubmit --------------------------------------------------------------------------------------------
SLOWER = TINY.replace("epochs = 5", "epochs = 25")  # ~1.5 s per ConvNet unit: the kill lands mid-sweep


def test_killed_sweep_resubmission_runs_only_the_unfinished_units(tmp_path: Path) -> None:
    home = Path(os.environ["DDBENCH_HOME"])
    protocol = home / "slower.toml"
    protocol.write_text(SLOWER)
    args = ["--methods", "random", "--ipc", "2", "--seeds", "0", "--archs", "convnet", "--protocol", str(protocol),
            "--eval-seeds", "0,1,2,3", "--preset", "cpu", "--device", "cpu"]  # fmt: skip
    cmd = [sys.executable, "-m", "ddbench", "-q", "sweep", *args, "--workers", "2"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    run_records = home / "runs"
    start = time.time()
    while len([p for p in run_records.rglob("records/eval-*.json")]) < 1:
        assert proc.poll() is None and time.time() - start < 300, "the sweep ended before any evaluation row"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-sweep
    proc.wait()
    spec = SweepSpec(methods=["random"], ipc=[2], seeds=[0], archs=["convnet"], protocols=[str(protocol)],
                     eval_seeds=[0, 1, 2, 3], preset="cpu", device="cpu")  # fmt: skip
    plan = expand(spec)
    unfinished = {u.uid for u in plan.units} - plan.cached
    assert len(plan.cached) >= 1 and 1 <= len(unfinished) < len(plan.units)
    with make_launcher("local", LaunchOptions(workers=2)) as launcher:
        result = run_sweep(plan, launcher, Store(), retries=0)
    assert set(result.ran) == unfinished  # nothing that finished before the kill ran again
    assert len(Store().evaluations()) == 4 and Store().evaluations()["error"].isna().all()


def test_live_view_counts_units_per_stage_and_state(tmp_path: Path) -> None:
    from rich.console import Console

    from ddbench.cli.sweep_cmd import LiveView

    plan = _fake_plan(tmp_path)
    view = LiveView(plan, "flaky")
    by = plan.by_uid()
    for state, uid in (("cached", "t"), ("running", "a"), ("done", "b"), ("running", "b0"), ("retry", "b0"),
                       ("failed", "b1")):  # fmt: skip
        view.event(state, by[uid], {"error": "boom"} if state == "failed" else {})
    console = Console(record=True, width=120)
    console.print(view.render())
    lines = {line.split()[1]: line.split()[2:] for line in console.export_text().splitlines() if "│" in line}
    # columns: waiting running done cached failed blocked
    assert [c for c in lines["teacher"] if c != "│"] == ["0", "0", "0", "1", "0", "0"]
    assert [c for c in lines["distil"] if c != "│"] == ["0", "1", "1", "0", "0", "0"]
    assert [c for c in lines["eval"] if c != "│"] == ["3", "0", "0", "0", "1", "0"]  # a retried unit waits again


def test_a_diverging_evaluation_unit_records_its_error_and_raises_after_one_try(monkeypatch, tmp_path: Path) -> None:
    """The worker side of a failing unit: one training (no loop retrying a recorded failure), its row written with
    the error, the unit raising (so the driver retries or reports it) and not counted as cached."""
    import ddbench.evaluate as ev
    from ddbench.pipeline import distill, prepare
    from ddbench.sweep.units import execute, is_cached

    protocol = tmp_path / "diverge.toml"
    protocol.write_text(TINY.replace("lr = 0.01", "lr = 1e12").replace("epochs = 5", "epochs = 2"))
    spec = SweepSpec(methods=["random"], ipc=[2], seeds=[0], archs=["convnet"], protocols=[str(protocol)],
                     eval_seeds=[0], preset="cpu", device="cpu")  # fmt: skip
    plan = expand(spec)
    run = next(u for u in plan.units if u.kind == "distil")
    unit = next(u for u in plan.units if u.kind == "eval")
    distill(prepare(run.request))  # random needs no teacher to distil
    calls = []
    original = ev.evaluate
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: calls.append(1) or original(*a, **k))
    with pytest.raises(RuntimeError, match="TrainingDiverged"):
        execute(unit)
    assert len(calls) == 1
    (row,) = RecordDir(unit.records_dir).records("evaluations")
    assert row["error"].startswith("TrainingDiverged") and row["arch"] == "convnet"
    assert not is_cached(unit)
