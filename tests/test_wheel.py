"""``--with-paper`` from an installed wheel (not a source checkout): the published-number CSVs ship as package data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ddbench.store import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_with_paper_works_from_a_wheel_install(tmp_path: Path) -> None:
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(wheels),
        str(REPO),
    ]
    subprocess.run(build, check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("ddbench-*.whl")
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=600)
    shipped = sorted(p.name for p in (target / "ddbench_papers").glob("*.csv"))
    assert {"dwa.csv", "sre2l.csv"} <= set(shipped)
    store = tmp_path / "results.sqlite"
    s = Store(store)
    s.add_run(run_id="d", method="dwa", dataset="cifar10", class_hash="c" * 16, ipc=10)
    s.add_evaluation(run_id="d", arch="resnet18", protocol="dwa-cifar", protocol_version=1, eval_seed=0, top1=30.0)
    outside = tmp_path / "elsewhere"  # no checkout around: the wheel must carry its data
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "DDBENCH_HOME": str(tmp_path / "home")}
    argv = ["-q", "table", "--dataset", "cifar10", "--store", str(store), "--with-paper"]
    code = f"import ddbench, sys; print(ddbench.__file__); from ddbench.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=outside, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith(str(target))  # the installed copy ran, not the checkout
    assert "resnet18 (paper)" in proc.stdout and "32.6±0.4" in proc.stdout  # DWA Table 1, CIFAR-10 ipc 10
