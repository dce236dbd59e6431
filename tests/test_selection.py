"""``--select`` chooses on held-out train images only: the test split is never read before the final evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ddbench.cli import main
from ddbench.data.source import ImageSource
from ddbench.errors import UserError
from ddbench.selection import Grid, Selection, choose
from ddbench.store import Store

TINY_HARD = (
    'version = 1\ndescription = "tiny hard"\nepochs = 6\nbatch_size = 64\noptimizer = "sgd"\nlr = 0.01\n'
    'momentum = 0.9\naug = ["crop_pad"]\nlabel_mode = "hard"\nloss = "ce"\neval_seeds = 1\ntest_every = 0\n'
)


class RecordingSource(ImageSource):
    """The test split, logging every read into ``log``."""

    def __init__(self, inner: ImageSource, log: list[str]) -> None:
        self.inner, self.log = inner, log
        self.labels, self.img_size, self.channels = inner.labels, inner.img_size, inner.channels

    def load(self, indices) -> torch.Tensor:
        self.log.append("test")
        return self.inner.load(indices)


def test_grid_parsing_and_choice() -> None:
    assert Grid.parse("lr=0.001,0.005, 0.1") == Grid("lr", (0.001, 0.005, 0.1))
    assert Grid.parse("epochs=50,100").values == (50, 100)
    for bad in ("lr", "momentum=0.9,0.99", "lr=0.1", "lr=0.1,0.1", "epochs=1.5,2"):
        with pytest.raises(UserError):
            Grid.parse(bad)
    sel = Selection("hard", "convnet", "lr", (0.01, 0.05, 0.1), {"0.01": {0: 50.0, 1: 60.0}, "0.05": {0: 55.0, 1: 55.0},
                    "0.1": {0: 40.0}})  # fmt: skip
    assert choose(sel) == 0.01 and sel.chosen == 0.01  # 55 ties 55: the earlier grid value wins


def test_select_never_reads_the_test_split_before_the_final_evaluation(tmp_path: Path, monkeypatch, capsys) -> None:
    import ddbench.pipeline as pipeline
    import ddbench.selection as selection

    log: list[str] = []
    load = pipeline.load_dataset

    def instrumented(*args, **kwargs):
        ds = load(*args, **kwargs)
        ds.test = RecordingSource(ds.test, log)
        return ds

    monkeypatch.setattr(pipeline, "load_dataset", instrumented)
    original_choose = selection.choose

    def logged_choose(sel):
        log.append(f"chosen {sel.arch}")
        return original_choose(sel)

    monkeypatch.setattr(selection, "choose", logged_choose)
    protocol = tmp_path / "tinyhard.toml"
    protocol.write_text(TINY_HARD)
    args = ["-q", "run", "--method", "random", "--dataset", "digits", "--ipc", "3", "--preset", "cpu",
            "--device", "cpu", "--archs", "convnet,resnet18", "--protocol", str(protocol), "--seeds", "0",
            "--no-baseline"]  # fmt: skip
    assert main([*args, "--select", "lr=0.003,0.1", "--holdout", "20"]) == 0
    assert log.count("chosen convnet") == 1 and log.count("chosen resnet18") == 1
    first_test = log.index("test")
    assert first_test > max(i for i, e in enumerate(log) if e.startswith("chosen")), log[:5]
    assert "lr=" in capsys.readouterr().out

    rows = Store().evaluations(method="random")
    assert len(rows) == 2 and rows["error"].isna().all()
    for row in rows.to_dict("records"):
        sel = json.loads(row["extra_json"])["selection"]
        assert sel["grid"] == [0.003, 0.1] and sel["holdout_per_class"] == 20
        assert row["protocol"] == f"tinyhard~lr={sel['chosen']:g}"
        val = {float(v): next(iter(d.values())) for v, d in sel["val_top1"].items()}
        assert sel["chosen"] == max(val, key=lambda v: (val[v], -list(val).index(v)))  # best on val
    # the run was distilled without the 20 held-out images per class: another data identity, another run id
    from ddbench.pipeline import RunRequest, prepare

    plain = prepare(RunRequest(method="random", dataset="digits", ipc=3, profile="cpu"))
    held = prepare(RunRequest(method="random", dataset="digits", ipc=3, profile="cpu", holdout_per_class=20))
    assert plain.run_id != held.run_id and rows["run_id"].iloc[0] == held.run_id
    assert len(held.dataset.val) == 200 and len(held.dataset.train) == len(plain.dataset.train) - 200
    meta = json.loads((held.artifact_dir / "manifest.json").read_text())["meta"]
    picked = torch.tensor([i for idx in meta["train_indices"].values() for i in idx])
    in_base = set(held.dataset.train.indices[picked].tolist())  # the reduced split's indices, mapped to the files'
    assert len(in_base) == 30 and not in_base & set(held.dataset.val.indices.tolist())

    # a run made without a hold-out cannot be selected on: the only split left would be test
    assert main([*args[:-1]]) == 0
    assert main(["-q", "eval", plain.run_id, "--archs", "convnet", "--protocol", str(protocol), "--select",
                 "lr=0.003,0.1"]) == 2  # fmt: skip
    assert "without a held-out split" in capsys.readouterr().err
