"""``ddbench verify``: paper vs ours on hand-made records (pass, fail and why), and a target list's exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddbench.cli import main
from ddbench.store import Store
from ddbench.verify import compare_papers, load_targets, tolerance

NARROW = "resnet18x0.25-cccccccccccccccc-rrrrrrrrrrrrrrrr-s0"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "results.sqlite"
    s = Store(path)
    rows = {  # run → (method, ipc, protocol, teacher, top-1 per seed)
        "dwa-10": ("dwa", 10, "dwa-cifar@cpu", NARROW, [30.0, 31.0]),
        "dwa-50": ("dwa", 50, "dwa-cifar", "resnet18-cccccccccccccccc-pppppppppppppppp-s0", [53.0, 53.4, 53.2]),
        "sre2l-10": ("sre2l", 10, "dwa-cifar", "resnet18-cccccccccccccccc-pppppppppppppppp-s0", [20.0]),
        "random-10": ("random", 10, "dwa-cifar", None, [25.0]),  # no published random row: not compared
    }
    for run_id, (method, ipc, protocol, teacher, accs) in rows.items():
        s.add_run(run_id=run_id, method=method, dataset="cifar10", class_hash="c" * 16, ipc=ipc, teacher_id=teacher)
        for seed, acc in enumerate(accs):
            s.add_evaluation(run_id=run_id, arch="resnet18", protocol=protocol, protocol_version=1, eval_seed=seed,
                             top1=acc)  # fmt: skip
    s.add_teacher(teacher_id=NARROW, dataset="cifar10", arch="resnet18", test_top1=55.0)
    return path


def test_tolerance_is_two_sigma_plus_one_point() -> None:
    assert tolerance(0.4) == pytest.approx(1.8) and tolerance(None) == 1.0 and tolerance(float("nan")) == 1.0


def test_paper_vs_ours_pass_fail_and_why(store: Path, capsys) -> None:
    unmatched: list = []
    verdicts = {(v.method, v.ipc): v for v in compare_papers(Store(store, read_only=True), unmatched=unmatched)}
    assert unmatched == [("cifar10", "random", 10, "resnet18", "dwa-cifar")]  # no published random row
    assert set(verdicts) == {("dwa", 10), ("dwa", 50), ("sre2l", 10)}
    cpu = verdicts[("dwa", 10)]  # 30.5 vs 32.6±0.4: |−2.1| > 1.8
    assert cpu.ours == pytest.approx(30.5) and cpu.diff == pytest.approx(-2.1) and cpu.status == "fail"
    assert cpu.why == [
        "preset cpu, not paper",
        "epochs 100 vs paper 400",
        "teacher resnet18 at width ×0.25, test top-1 55.0%",
        "2 eval seed(s) vs the protocol's 3",
    ]
    ok = verdicts[("dwa", 50)]  # 53.2 vs 53.1±0.3 (tolerance 1.6)
    assert ok.status == "pass" and ok.why == [] and ok.tol == pytest.approx(1.6)
    sre = verdicts[("sre2l", 10)]  # 20 vs 27.2: under the paper preset, only the seed count differs
    assert sre.status == "fail" and sre.why == ["1 eval seed(s) vs the protocol's 3"]
    assert main(["-q", "verify", "--store", str(store)]) == 0  # a report; --strict turns a fail into exit 1
    out = capsys.readouterr().out
    assert "| dwa cifar10 ipc10 resnet18 | dwa-cifar@cpu | 32.6±0.4 | 30.5±0.5 | -2.1 | ±1.8 | fail |" in out
    assert "1 of 3 pass" in out and "Du et al. 2024 (DWA)" in out
    assert "- random cifar10 ipc10 resnet18 under dwa-cifar" in out  # every stored result is listed
    assert main(["-q", "verify", "--store", str(store), "--strict"]) == 1
    capsys.readouterr()
    assert main(["-q", "verify", "--store", str(store), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["status"] for r in records} == {"pass", "fail"} and all("why" in r for r in records)


TINY = (
    'version = 1\ndescription = "tiny"\nepochs = 5\nbatch_size = 64\noptimizer = "sgd"\nlr = 0.05\nmomentum = 0.9\n'
    'aug = ["crop_pad"]\nlabel_mode = "hard"\nloss = "ce"\neval_seeds = 1\ntest_every = 0\n'
)


def _targets(tmp_path: Path, protocol: Path, expects: list[float]) -> Path:
    body = "".join(
        f'[[target]]\nname = "t{i}"\nmethod = "random"\ndataset = "digits"\nipc = 2\narch = "convnet"\n'
        f'protocol = "{protocol}"\npreset = "cpu"\nseeds = [0]\nexpect = {e}\nstd = 0.5\n\n'
        for i, e in enumerate(expects)
    )
    path = tmp_path / f"targets-{len(expects)}.toml"
    path.write_text(body)
    return path


def test_targets_run_missing_evaluations_and_gate_on_failure(tmp_path: Path, capsys) -> None:
    protocol = tmp_path / "tiny.toml"
    protocol.write_text(TINY)
    probe = _targets(tmp_path, protocol, [0.0])
    assert main(["-q", "verify", "--targets", str(probe), "--device", "cpu"]) == 1  # 0 % is far from anything
    assert "same setting as the measured target" in capsys.readouterr().out
    ours = float(Store().evaluations(method="random")["top1"].iloc[0])
    good = _targets(tmp_path, protocol, [ours + 1.5])  # within 2·0.5 + 1 = 2 points
    assert main(["-q", "verify", "--targets", str(good), "--device", "cpu"]) == 0
    assert "1 of 1 pass" in capsys.readouterr().out
    mixed = _targets(tmp_path, protocol, [ours, ours + 2.5])
    assert main(["-q", "verify", "--targets", str(mixed), "--device", "cpu"]) == 1
    assert "1 of 2 pass" in capsys.readouterr().out


def test_shipped_target_lists_load(tmp_path: Path, capsys) -> None:
    cpu, gpu = load_targets("cpu"), load_targets("gpu")
    assert all(t.preset == "cpu" and t.expect is not None for t in cpu) and all(t.paper for t in gpu)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[target]]\nname = "x"\nmethod = "random"\n')
    assert main(["-q", "verify", "--targets", str(bad)]) == 2
    assert "missing dataset, ipc, arch, protocol" in capsys.readouterr().err
