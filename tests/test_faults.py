"""Fault injection: every known crash path is a one-line error (exit 2), every silent-wrong-number path recovers.

One test per class of fault (the reliability issue): bad arguments, corrupt cached tensors, an edited protocol
without a version bump, a corrupt or read-only store, a diverging teacher, a recover whose loss rises, identical
evaluations started together, stale temporaries and a ``--no-eval`` rerun on another device. Each CLI test checks the
exit code, that stderr is one line without a traceback, and, where numbers are produced afterwards, that they equal
a clean run's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from ddbench.cli import main
from ddbench.store import Store

TINY_HARD = (
    'version = 1\ndescription = "tiny hard-label protocol for fault tests"\nepochs = 4\nbatch_size = 50\n'
    'optimizer = "sgd"\nlr = 0.05\naug = ["crop_pad"]\nlabel_mode = "hard"\nloss = "ce"\neval_seeds = 1\n'
)


def run(*args: str) -> int:
    return main(["-q", "run", "--dataset", "digits", "--preset", "cpu", "--device", "cpu", "--no-baseline", *args])


def one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "\n" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture
def tiny_protocol(tmp_path: Path) -> Path:
    path = tmp_path / "tinyhard.toml"
    path.write_text(TINY_HARD)
    return path


# -- bad arguments --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--method", "random", "--ipc", "0"], ["--ipc must be a positive"]),
        (["--method", "random", "--ipc", "-3"], ["--ipc must be a positive"]),
        (["--method", "random", "--ipc", "x"], ["--ipc", "invalid int value: 'x'"]),
        (
            ["--method", "random", "--ipc", "1000"],
            ["--ipc 1000 is more than the 122 train images of class '8'", "--allow-short-classes"],
        ),
        (["--method", "random", "--preset", "gpu-ish", "--no-eval"], ["--preset 'gpu-ish' is not a known profile"]),
        (["--method", "sre2l", "--set", "lr=nan"], ["lr=nan", "finite"]),
        (["--method", "sre2l", "--set", "lr=inf"], ["lr=inf", "finite"]),
        (["--method", "random", "--seeds", "abc"], ["--seeds takes comma-separated integers", "'abc'"]),
        (["--method", "random", "--set", "iterations"], ["expected key=value"]),
    ],
)
def test_bad_arguments_are_one_line_errors(capsys, args: list[str], needles: list[str]) -> None:
    assert run(*args) == 2
    one_line_error(capsys, *needles)
    assert not (Path(os.environ["DDBENCH_HOME"]) / "teachers").exists()  # checked before any teacher work


@pytest.mark.parametrize(
    ("device", "needle"), [("foo", "--device 'foo' is not a device"), ("cuda", "no CUDA device is available")]
)
def test_bad_devices_are_one_line_errors(capsys, device: str, needle: str) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["-q", "run", "--method", "random", "--dataset", "digits", "--device", device]) == 2
    one_line_error(capsys, needle)
    assert main(["-q", "teacher", "--dataset", "digits", "--device", device]) == 2
    one_line_error(capsys, needle)


def test_non_utf8_config_file_is_one_line(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes("iterations = 5 # réglage\n".encode("latin-1"))
    assert run("--method", "sre2l", "--config", str(bad)) == 2
    one_line_error(capsys, "latin1.toml", "not UTF-8")


def test_a_bn_method_with_a_teacher_without_bn_fails_before_training(capsys) -> None:
    assert run("--method", "sre2l", "--set", "teacher_arch=convnet") == 2
    one_line_error(capsys, "matches BatchNorm statistics", "convnet", "no BatchNorm2d")
    assert not (Path(os.environ["DDBENCH_HOME"]) / "teachers").exists()


def test_bn_methods_default_to_a_bn_teacher_where_the_dataset_default_has_none() -> None:
    from ddbench.data import DATASETS
    from ddbench.pipeline import RunRequest, prepare

    assert DATASETS.get("mnist").default_teacher == "convnet"  # instance norm
    from ddbench_methods.sre2l import SRe2L, SRe2LConfig, bn_teacher_arch

    fake = type(
        "D", (), {"spec": DATASETS.get("mnist"), "num_classes": 10, "img_size": 28, "channels": 1, "id": "mnist"}
    )
    assert bn_teacher_arch(fake()) == "convnet_bn"
    assert SRe2L(SRe2LConfig()).teachers(fake())[0].arch == "convnet_bn"
    digits = prepare(RunRequest(method="dwa", dataset="digits", profile="cpu"))
    assert digits.teacher_specs[0].arch == "convnet_bn"


# -- corrupt cached tensors -----------------------------------------------------------------------------------------
def test_corrupt_distilled_artifact_and_shard_recompute_to_clean_numbers(tiny_protocol: Path, caplog) -> None:
    from ddbench.distilled import DistilledSet
    from ddbench.pipeline import RunRequest, distill, prepare

    req = RunRequest(method="sre2l", dataset="digits", ipc=1, profile="cpu",
                     overrides={"iterations": 3, "save_format": "uint8"})  # fmt: skip
    state = prepare(req)
    clean = distill(state)
    shard = next(p for p in (state.run_dir / "shards").iterdir() if p.is_dir())
    blob = bytearray((shard / "tensors.pt").read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one flipped bit inside a finished shard
    (shard / "tensors.pt").write_bytes(bytes(blob))
    (state.artifact_dir / "images.pt").write_bytes(b"")  # and a damaged assembled set
    with caplog.at_level(logging.WARNING):
        again = distill(prepare(req))
    assert "corrupt" in caplog.text and "distilling again" in caplog.text
    assert torch.equal(again.images, clean.images)  # recomputed to the same numbers, not the damaged ones
    assert torch.equal(DistilledSet.load(state.artifact_dir).images, clean.images)


# -- protocol edited without a version bump ---------------------------------------------------------------------------
def test_protocol_edit_without_version_bump_recomputes_rows(capsys, tiny_protocol: Path) -> None:
    args = ["--method", "random", "--ipc", "2", "--archs", "convnet", "--protocol", str(tiny_protocol), "--seeds", "0"]
    assert run(*args) == 0
    first = Store().evaluations()
    tiny_protocol.write_text(TINY_HARD.replace("epochs = 4", "epochs = 6"))  # same version = 1
    capsys.readouterr()
    assert run(*args) == 0
    err = "".join(capsys.readouterr().err.split())  # rich wraps log lines to the terminal width
    assert "changedwithoutaversionbump" in err and "".join(str(tiny_protocol).split()) in err
    second = Store().evaluations()
    assert len(second) == 1 and second["protocol_hash"][0] != first["protocol_hash"][0]
    # the recomputed row equals a clean run under the edited protocol
    os.environ["DDBENCH_HOME"] = str(Path(os.environ["DDBENCH_HOME"]) / "clean")
    assert run(*args) == 0
    clean = Store().evaluations()
    assert clean["top1"][0] == second["top1"][0] and clean["protocol_hash"][0] == second["protocol_hash"][0]


# -- the results store ------------------------------------------------------------------------------------------------
def test_corrupt_store_is_one_line_and_never_overwritten(capsys, tiny_protocol: Path) -> None:
    db = Path(os.environ["DDBENCH_HOME"]) / "results.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"this is not a database, it is a user's file" * 20)
    before = db.read_bytes()
    assert run("--method", "random", "--ipc", "1", "--archs", "convnet", "--protocol", str(tiny_protocol)) == 2
    one_line_error(capsys, str(db), "not a readable SQLite database", "move it aside")
    assert main(["-q", "table", "--dataset", "digits"]) == 2
    one_line_error(capsys, "not a readable SQLite database")
    assert db.read_bytes() == before


def _as_unprivileged(args: list[str], home: Path) -> subprocess.CompletedProcess:
    """Run ``python -m ddbench ARGS`` as a user the permissions apply to (root ignores them: drop to nobody)."""
    cmd = [sys.executable, "-m", "ddbench", "-q", *args]
    env = {**os.environ, "DDBENCH_HOME": str(home), "HOME": str(home)}
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop privileges")
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_read_only_home_table_works_and_writers_say_so(tmp_path: Path, tiny_protocol: Path) -> None:
    assert run("--method", "random", "--ipc", "1", "--archs", "convnet", "--protocol", str(tiny_protocol)) == 0
    home = Path(tempfile.mkdtemp(prefix="ddbench-ro-", dir="/tmp"))
    try:
        shutil.copytree(os.environ["DDBENCH_HOME"], home / "h")
        protocol = home / "tinyhard.toml"
        protocol.write_text(TINY_HARD)
        for p in [home, *home.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)  # everything readable, nothing writable
        table = _as_unprivileged(["table", "--dataset", "digits"], home / "h")
        assert table.returncode == 0, table.stderr
        assert "| random |" in table.stdout and "Traceback" not in table.stderr
        args = [
            "run",
            "--method",
            "random",
            "--dataset",
            "digits",
            "--ipc",
            "2",
            "--preset",
            "cpu",
            "--archs",
            "convnet",
        ]
        write = _as_unprivileged([*args, "--protocol", str(protocol), "--no-baseline"], home / "h")
        err = write.stderr.strip()
        assert write.returncode == 2 and "Traceback" not in err and "\n" not in err and "writable" in err, err
    finally:
        for p in [home, *home.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(home, ignore_errors=True)


def test_read_only_store_object_refuses_writes_in_one_line(tiny_protocol: Path) -> None:
    from ddbench.errors import UserError

    assert run("--method", "random", "--ipc", "1", "--archs", "convnet", "--protocol", str(tiny_protocol)) == 0
    ro = Store(read_only=True)
    assert len(ro.evaluations()) == 1
    with pytest.raises(UserError, match="read-only"):
        ro.add_metric("x", "y", 1.0)
    lock = Path(str(ro.path) + ".lock")
    lock.unlink(missing_ok=True)
    Store(read_only=True).evaluations()
    assert not lock.exists()  # reading takes no write lock


def test_schema_1_store_is_migrated_with_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE evaluations (run_id TEXT NOT NULL, arch TEXT NOT NULL, protocol TEXT NOT NULL, "
        "protocol_version INTEGER NOT NULL, eval_seed INTEGER NOT NULL, top1 REAL, top5 REAL, best_top1 REAL, "
        "wall_time_s REAL, peak_mem_mb REAL, error TEXT, created_at TEXT, extra_json TEXT, "
        "UNIQUE (run_id, arch, protocol, protocol_version, eval_seed))"
    )
    extra = json.dumps({"protocol_hash": "abc", "teachers": ["t1", "t2"]})
    con.execute("INSERT INTO evaluations (run_id, arch, protocol, protocol_version, eval_seed, top1, extra_json) "
                "VALUES ('r', 'convnet', 'kd', 1, 0, 55.5, ?)", (extra,))  # fmt: skip
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    rows = Store(db).evaluations()
    assert rows["top1"].tolist() == [55.5] and rows["label_teachers"].tolist() == ["t1,t2"]
    assert rows["protocol_hash"].tolist() == ["abc"]
    assert Store(db).has_evaluation("r", "convnet", "kd", 1, 0, "t1,t2", "abc")


# -- training that goes wrong -----------------------------------------------------------------------------------------
def test_diverging_teacher_recipe_is_one_line_and_caches_nothing(capsys, tmp_path: Path) -> None:
    recipe = tmp_path / "explode.toml"
    recipe.write_text('version = 1\ndescription = "diverges"\nepochs = 3\nbatch_size = 64\nlr = 1e12\naug = []\n')
    assert main(["-q", "teacher", "--dataset", "digits", "--recipe", str(recipe), "--device", "cpu"]) == 2
    one_line_error(capsys, "training diverged", "nothing was cached")
    teachers = Path(os.environ["DDBENCH_HOME"]) / "teachers" / "digits"
    assert not [p for p in teachers.iterdir() if p.is_dir()]


def test_recover_whose_loss_rises_warns_with_start_and_end_loss(caplog) -> None:
    from ddbench.pipeline import RunRequest, distill, prepare

    req = RunRequest(method="dwa", dataset="digits", ipc=1, profile="cpu",
                     overrides={"iterations": 20, "lr": 1e9, "save_format": "uint8"})  # fmt: skip
    with caplog.at_level(logging.WARNING):
        out = distill(prepare(req))
    start, end = (sum(v) for v in zip(out.meta["recover_ce_first_last"], out.meta["recover_bn_first_last"]))
    assert end > start
    assert "recover loss rose" in caplog.text and f"{start:.4g}" in caplog.text and f"{end:.4g}" in caplog.text


# -- concurrency and hygiene ------------------------------------------------------------------------------------------
EVAL_DRIVER = """
import os, sys, time
from pathlib import Path
import ddbench.evaluate as ev
real = ev.evaluate
def counted(*a, **k):
    with open(sys.argv[1], "a") as fh:
        fh.write(f"{os.getpid()} {','.join(a[2])}\\n")
    return real(*a, **k)
ev.evaluate = counted
home = Path(os.environ["DDBENCH_HOME"])
(home / f"ready{sys.argv[2]}").touch()
while not all((home / f"ready{i}").exists() for i in range(2)):
    time.sleep(0.01)
from ddbench.cli import main
raise SystemExit(main(["-q", "eval", sys.argv[3], "--archs", "convnet,resnet18", "--protocol", sys.argv[4],
                       "--seeds", "0"]))
"""


def test_identical_evaluations_started_together_train_each_row_once(tmp_path: Path, tiny_protocol: Path) -> None:
    from ddbench.pipeline import RunRequest, distill, prepare

    state = prepare(RunRequest(method="random", dataset="digits", ipc=2, profile="cpu"))
    distill(state)
    script, log = tmp_path / "driver.py", tmp_path / "evaluated.log"
    script.write_text(EVAL_DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(log), str(i), state.run_id, str(tiny_protocol)],
                              env=env, stderr=subprocess.PIPE, text=True) for i in range(2)]  # fmt: skip
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    trained = [arch for line in log.read_text().splitlines() for arch in line.split()[1].split(",")]
    assert sorted(trained) == ["convnet", "resnet18"]  # each (arch, seed) unit trained once across both processes
    rows = Store().evaluations()
    assert sorted(rows["arch"]) == ["convnet", "resnet18"] and rows["error"].isna().all()


def test_no_eval_rerun_keeps_the_recorded_distillation_device(tiny_protocol: Path) -> None:
    from ddbench.distilled import DistilledSet
    from ddbench.pipeline import RunRequest, prepare, record_run

    assert run("--method", "random", "--ipc", "1", "--no-eval") == 0
    (row,) = Store().runs().to_dict("records")
    assert row["device"] == "cpu"
    state = prepare(RunRequest(method="random", dataset="digits", ipc=1, profile="cpu", device="cuda:7"))
    record_run(state, DistilledSet.load(Path(row["artifact_path"])), Store())  # what a rerun elsewhere records
    assert Store().runs()["device"].tolist() == ["cpu"]


# -- two copies of a dataset --------------------------------------------------------------------------------------
def test_two_data_roots_get_different_runs_and_teachers(tmp_path: Path) -> None:
    """The same command on another copy of MNIST never reuses the run (or the teacher) made from the first."""
    from test_data import write_mnist

    from ddbench.pipeline import RunRequest, prepare, teacher_identity
    from ddbench.teachers import teacher_key

    write_mnist(tmp_path / "a" / "MNIST" / "raw", n_train=30)
    write_mnist(tmp_path / "b" / "MNIST" / "raw", n_train=20)
    runs, keys = [], []
    for root in ("a", "b", "a"):
        state = prepare(RunRequest(method="dwa", dataset="mnist", ipc=1, profile="cpu", data_root=str(tmp_path / root),
                                   allow_short_classes=True))  # fmt: skip
        runs.append(state.run_id)
        ident = teacher_identity(state.dataset, state.teacher_specs[0], "cpu")
        keys.append(teacher_key(state.dataset, ident["arch"], state.teacher_specs[0], ident["recipe_hash"], 1.0))
    assert runs[0] != runs[1] and runs[0] == runs[2]
    assert (
        keys[0] != keys[1] and keys[0] == keys[2] and keys[0]["data"]["fingerprint"] != keys[1]["data"]["fingerprint"]
    )
