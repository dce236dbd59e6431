"""The results store: round trip, upsert semantics, filters, concurrent writers, provenance."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from ddbench.store import Store, environment


def _run(store: Store, run_id: str = "r1", **over) -> None:
    fields = dict(
        run_id=run_id,
        method="dwa",
        method_version=1,
        dataset="cifar10",
        class_hash="c" * 16,
        ipc=10,
        distill_seed=0,
        config_json={"lr": 0.1, "iterations": 1000},
        config_hash="h1",
        teacher_id="resnet18-x-y-s0",
        teacher_sha256="ab" * 32,
        device="cpu",
        wall_time_s=1.5,
    )
    fields.update(over)
    store.add_run(**fields)


def _eval(store: Store, run_id: str = "r1", seed: int = 0, top1: float | None = 50.0, **over) -> None:
    fields = dict(
        run_id=run_id, arch="resnet18", protocol="kd", protocol_version=1, eval_seed=seed, top1=top1, top5=90.0
    )
    fields.update(over)
    store.add_evaluation(**fields)


def test_round_trip_joined_with_run(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    _run(store)
    _eval(store, seed=0, top1=50.0, extra_json={"epochs": 3})
    _eval(store, seed=1, top1=52.0)
    df = store.evaluations(dataset="cifar10")
    assert len(df) == 2
    assert list(df["top1"]) == [50.0, 52.0]
    assert set(df["method"]) == {"dwa"} and set(df["ipc"]) == {10}
    assert df["extra_json"].iloc[0] == '{"epochs":3}'
    assert df["created_at"].notna().all()
    runs = store.runs()
    assert runs["config_json"].iloc[0] == '{"iterations":1000,"lr":0.1}'
    assert runs["status"].iloc[0] == "done"
    # the WAL journal is persistent and visible to any other connection
    with sqlite3.connect(tmp_path / "r.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_path_is_under_home(ddbench_home_path: Path) -> None:
    store = Store()
    _run(store)
    assert store.path == ddbench_home_path / "results.sqlite"
    assert store.path.is_file()


@pytest.fixture
def ddbench_home_path() -> Path:
    import os

    return Path(os.environ["DDBENCH_HOME"])


def test_upsert_replaces_same_key_and_keeps_others(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    _run(store)
    _eval(store, seed=0, top1=None, error="CUDA out of memory")
    assert not store.has_evaluation("r1", "resnet18", "kd", 1, 0)  # a failure is retried, not skipped
    _eval(store, seed=0, top1=51.0, error=None)
    _eval(store, seed=0, top1=51.0, protocol_version=2)  # another version is another row
    df = store.evaluations()
    assert len(df) == 2
    assert store.has_evaluation("r1", "resnet18", "kd", 1, 0)
    assert not store.has_evaluation("r1", "resnet18", "kd", 1, 1)
    v1 = df[df["protocol_version"] == 1].iloc[0]
    assert v1["top1"] == 51.0 and v1["error"] is None
    _run(store, wall_time_s=9.0, status="failed")  # resumed run updates, never duplicates
    runs = store.runs()
    assert len(runs) == 1 and runs["wall_time_s"].iloc[0] == 9.0 and runs["status"].iloc[0] == "failed"


def test_filters_lists_and_unknown_names(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    _run(store, "a", ipc=10)
    _run(store, "b", ipc=50, method="random")
    _eval(store, "a")
    _eval(store, "b")
    assert list(store.evaluations(ipc=[10, 50]).sort_values("ipc")["method"]) == ["dwa", "random"]
    assert list(store.evaluations(method="random")["run_id"]) == ["b"]
    assert store.evaluations(method=[]).empty
    assert len(store.evaluations(method=None)) == 2  # None means "no filter"
    with pytest.raises(ValueError, match="cannot filter"):
        store.evaluations(nonsense=1)
    with pytest.raises(ValueError, match="unknown field"):
        store.add_evaluation(run_id="a", arch="x", protocol="kd", protocol_version=1, eval_seed=0, acc=1.0)
    with pytest.raises(ValueError, match="missing key"):
        store.add_evaluation(run_id="a", arch="x", protocol="kd", protocol_version=1)


def test_metrics_and_teachers(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    _run(store)
    store.add_metric("r1", "feat_dist_mean", 0.5, extra_json={"arch": "resnet18"})
    store.add_metric("r1", "feat_dist_mean", 0.75)
    store.add_metric("r1", "feat_dist_std", 0.1)
    m = store.metrics(dataset="cifar10")
    assert dict(zip(m["name"], m["value"])) == {"feat_dist_mean": 0.75, "feat_dist_std": 0.1}
    assert set(m["method"]) == {"dwa"}
    store.add_teacher(teacher_id="t1", dataset="cifar10", arch="resnet18", sha256="00", test_top1=90.0)
    store.add_teacher(teacher_id="t1", dataset="cifar10", arch="resnet18", sha256="00", test_top1=91.0)
    t = store.teachers()
    assert len(t) == 1 and t["test_top1"].iloc[0] == 91.0


def _writer(path: str, worker: int, n: int) -> None:
    store = Store(path)
    store.add_run(run_id=f"run{worker}", method="m", dataset="d", ipc=worker)
    for i in range(n):
        store.add_evaluation(run_id=f"run{worker}", arch="a", protocol="p", protocol_version=1, eval_seed=i, top1=i)
        if i % 10 == 0:
            store.evaluations(run_id=f"run{worker}")  # readers interleaved with writers
        store.add_metric(f"run{worker}", f"m{i}", float(i))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Several processes write at once onto a fresh file (schema creation races too): every row arrives."""
    path = str(tmp_path / "r.sqlite")
    workers, n = 4, 60
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, n)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * workers  # an OperationalError("database is locked") would exit 1
    store = Store(path)
    ev = store.evaluations()
    assert len(ev) == workers * n
    assert ev.groupby("run_id").size().to_dict() == {f"run{w}": n for w in range(workers)}
    assert len(store.metrics()) == workers * n
    assert len(store.runs()) == workers


def test_environment_has_provenance() -> None:
    env = environment("cpu")
    for key in ("ddbench_version", "git_sha", "torch_version", "python", "device_name", "hostname"):
        assert key in env
    assert env["device"] == "cpu"
    sha = env["git_sha"]
    assert sha is None or len(sha.removesuffix("+dirty")) == 40
