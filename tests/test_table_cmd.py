"""``ddbench table`` over a real store: protocols side by side, files written, paper columns, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ddbench.cli import main
from ddbench.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "results.sqlite"
    s = Store(path)
    for method, ipc, base in (("random", 10, 20.0), ("dwa", 10, 39.0), ("dwa", 50, 60.0)):
        run_id = f"{method}-{ipc}"
        s.add_run(run_id=run_id, method=method, dataset="cifar100", class_hash="c" * 16, ipc=ipc,
                  teacher_id="resnet18-cccc-rrrr-s0")  # fmt: skip
        for seed in range(2):
            for protocol, version in (("dwa-cifar", 1), ("hard@cpu", 1)):
                s.add_evaluation(run_id=run_id, arch="resnet18", protocol=protocol, protocol_version=version,
                                 eval_seed=seed, top1=base + seed)  # fmt: skip
        s.add_metric(run_id, "feat_dist_mean", base / 100)
    s.add_evaluation(run_id="dwa-10", arch="resnet18", protocol="dwa-cifar", protocol_version=0, eval_seed=0, top1=1.0)
    s.add_teacher(teacher_id="resnet18-cccc-rrrr-s0", dataset="cifar100", arch="resnet18")
    return path


def test_protocols_side_by_side_and_files(store: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "boards"
    assert main(["-q", "table", "--dataset", "cifar-100", "--store", str(store), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("Table: ") == 1 and "Protocols dwa-cifar v1, hard@cpu v1." in text
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert header == "| Method | IPC | resnet18 · dwa-cifar | resnet18 · hard@cpu |"
    assert "| random | 10 | 20.5±0.5 | 20.5±0.5 |" in text  # version 0's row of dwa-cifar is not mixed in
    assert "| dwa | 10 | **39.5±0.5** | **39.5±0.5** |" in text and "| dwa | 50 | 60.5±0.5 | 60.5±0.5 |" in text
    assert sorted(p.name for p in out.iterdir()) == ["cifar100.md"]
    assert (out / "cifar100.md").read_text() in text


def test_protocol_prefix_formats_and_paper(store: Path, tmp_path: Path, capsys) -> None:
    args = ["-q", "table", "--dataset", "cifar100", "--store", str(store), "--protocol", "hard", "--format", "latex"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "cifar100-hard@cpu.tex").read_text().startswith(r"\begin{table}")
    capsys.readouterr()
    base = ["-q", "table", "--dataset", "cifar100", "--store", str(store), "--protocol", "dwa-cifar"]
    assert main([*base, "--with-paper"]) == 0
    text = capsys.readouterr().out
    assert "resnet18 (ours) | resnet18 (paper)" in text and "Published numbers:" in text
    assert (
        main(["-q", "table", "--dataset", "cifar100", "--store", str(store), "--protocol", "hard", "--with-paper"]) == 0
    )
    assert "(paper)" not in capsys.readouterr().out  # DWA's published numbers are dwa-cifar numbers
    assert main([*base, "--format", "csv", "--ipc", "10"]) == 0
    csv = capsys.readouterr().out
    assert csv.splitlines()[0] == "method,ipc,group,column,source,mean,std,n,display,best,error"
    assert ",50," not in csv


def test_diversity_table(store: Path, capsys) -> None:
    assert main(["-q", "table", "--dataset", "cifar100", "--store", str(store), "--metric", "diversity"]) == 0
    text = capsys.readouterr().out
    assert "feat_dist_mean" in text and "| random | 10 | 0.200 |" in text and "| dwa | 50 | 0.600 |" in text


def test_one_line_errors(store: Path, tmp_path: Path, capsys) -> None:
    assert main(["-q", "table", "--dataset", "cifar100", "--store", str(tmp_path / "none.sqlite")]) == 2
    assert "no results store" in capsys.readouterr().err
    assert not (tmp_path / "none.sqlite").exists()  # looking does not create an empty store
    assert main(["-q", "table", "--dataset", "cifar10", "--store", str(store)]) == 2
    assert "no evaluations of cifar10" in capsys.readouterr().err
    assert main(["-q", "table", "--dataset", "cifar100", "--store", str(store), "--protocol", "kd"]) == 2
    assert "found: dwa-cifar, hard@cpu" in capsys.readouterr().err
    for bad, needle in ((["--metric", "foo"], "--metric 'foo' is not one of"), (["--ipc", "x"], "--ipc takes")):
        assert main(["-q", "table", "--dataset", "cifar100", "--store", str(store), *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err and "Traceback" not in err
