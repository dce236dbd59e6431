"""``ddbench score`` on digits runs exactly the missing evaluations (a second call none); score tables and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddbench.cli import main
from ddbench.store import Store

HARD = (
    'version = 1\ndescription = "tiny hard"\nepochs = 8\nbatch_size = 64\noptimizer = "sgd"\nlr = 0.05\n'
    'momentum = 0.9\naug = ["crop_pad"]\nlabel_mode = "hard"\nloss = "ce"\neval_seeds = 2\ntest_every = 0\n'
)
SOFT = (
    'version = 1\ndescription = "tiny kd"\nepochs = 8\nbatch_size = 64\noptimizer = "adamw"\nlr = 0.003\n'
    'aug = ["rrc"]\nmix = "cutmix"\nlabel_mode = "teacher"\nloss = "kl"\ntemperature = 4.0\neval_seeds = 2\n'
    "test_every = 0\n"
)


@pytest.fixture
def protocols(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "tinyhard.toml").write_text(HARD)
    (tmp_path / "tinykd.toml").write_text(SOFT)
    return str(tmp_path / "tinyhard.toml"), str(tmp_path / "tinykd.toml")


def _calls(monkeypatch) -> list[tuple[str, str, int]]:
    import ddbench.evaluate as ev

    calls: list[tuple[str, str, int]] = []
    original = ev.evaluate

    def logged(distilled, dataset, archs, protocol, seed, **kw):
        calls.append((distilled.meta["method"], protocol.name, seed))
        return original(distilled, dataset, archs, protocol, seed, **kw)

    monkeypatch.setattr(ev, "evaluate", logged)
    return calls


def test_score_runs_only_missing_evaluations(protocols, monkeypatch, capsys) -> None:
    hard, soft = protocols
    common = ["--method", "herding", "--dataset", "digits", "--ipc", "2", "--preset", "cpu", "--device", "cpu",
              "--archs", "convnet_bn", "--seeds", "0,1"]  # fmt: skip
    # the hard-label rows exist already (an ordinary `ddbench run`); the score must not recompute them
    assert main(["-q", "run", *common, "--protocol", hard, "--no-baseline"]) == 0
    calls = _calls(monkeypatch)
    score = ["-q", "score", *common, "--protocol", soft, "--hard-protocol", hard]
    assert main(score) == 0
    expected = {(m, p, s) for m in ("herding", "random") for p in ("tinykd", "tinykd~noaug") for s in (0, 1)}
    assert sorted(calls) == sorted(expected)  # each missing unit once, the existing hard rows never
    out = capsys.readouterr().out
    for name in ("HLR", "IOR", "LRS", "ARS", "reference: real convnet_bn", "cost: synthesis", "soft labels 0 B"):
        assert name in out
    assert "storage 1.25 KB" in out  # 20 uint8 8×8 digits = 1280 bytes

    # the stored scores are the formulas applied to the stored rows
    store = Store()
    ev = store.evaluations(dataset="digits")
    teachers = store.teachers()
    real = float(teachers[teachers["arch"] == "convnet_bn"]["test_top1"].iloc[0])  # herding's teacher = the reference
    syn_hard = ev[(ev["method"] == "herding") & (ev["protocol"] == "tinyhard")]["top1"].mean()
    metrics = store.metrics(dataset="digits")
    by_name = dict(zip(metrics["name"], metrics["value"]))
    assert by_name["score:hlr:convnet_bn:tinykd"] == pytest.approx(real - syn_hard)
    syn = ev[(ev["method"] == "herding") & (ev["protocol"] == "tinykd")].sort_values("eval_seed")["top1"].to_numpy()
    rand = ev[(ev["method"] == "random") & (ev["protocol"] == "tinykd")].sort_values("eval_seed")["top1"].to_numpy()
    assert by_name["score:ior:convnet_bn:tinykd"] == pytest.approx((syn - rand).mean())
    extra = json.loads(metrics[metrics["name"] == "score:lrs:convnet_bn:tinykd"]["extra_json"].iloc[0])
    assert 0.0 <= extra["mean"] <= 1.0 and set(extra["per_seed"]) == {"0", "1"} and extra["reference"]["mean"] == real

    # a second call runs no evaluation and trains nothing
    calls.clear()
    import ddbench.train as train

    monkeypatch.setattr(train.Trainer, "fit", lambda *a, **k: pytest.fail("something was trained again"))
    assert main(score) == 0
    assert calls == []

    # the score tables read the stored per-seed values; JSON carries each cell's provenance
    capsys.readouterr()
    assert main(["-q", "table", "--dataset", "digits", "--metric", "hlr"]) == 0
    text = capsys.readouterr().out
    assert "lower is better" in text and "convnet_bn · tinykd" in text and "| herding | 2 |" in text
    assert main(["-q", "table", "--dataset", "digits", "--format", "json", "--protocol", "tinykd"]) == 0
    doc = json.loads(capsys.readouterr().out)
    cells = {(c["method"], c["column"]): c for c in doc["cells"]}
    herd = cells[("herding", "convnet_bn")]
    assert herd["mean"] == pytest.approx(syn.mean()) and herd["n"] == 2
    assert herd["provenance"]["eval_seed"] == [0, 1] and herd["provenance"]["protocol"] == ["tinykd"]
    assert len(herd["provenance"]["run_id"]) == 1 and herd["provenance"]["run_id"][0].startswith("herding-")


def test_score_errors_are_one_line(capsys) -> None:
    args = ["-q", "score", "--method", "random", "--dataset", "digits", "--preset", "cpu", "--device", "cpu"]
    assert main([*args, "--protocol", "kd,hard"]) == 2
    assert "one recipe" in capsys.readouterr().err
    assert main([*args, "--protocol", "kd~nosuch"]) == 2
    assert "unknown protocol variant 'nosuch'" in capsys.readouterr().err
    assert main([*args, "--select", "lr=0.1,0.01"]) == 2
    assert "compares fixed recipes" in capsys.readouterr().err
    assert main(["-q", "table", "--dataset", "digits", "--metric", "ars"]) == 2
