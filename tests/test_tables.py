"""Tables: golden Markdown/LaTeX output, mean ± std by hand, paper columns kept apart, metric tables, loader.

Regenerate the golden files after an intended format change with ``DDBENCH_UPDATE_GOLDEN=1 pytest
tests/test_tables.py`` and review the diff.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from ddbench.config import ConfigError
from ddbench.tables import build_table, layout, load_paper_numbers, method_order

GOLDEN = Path(__file__).parent / "golden"
OOM = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\nTraceback (most recent call last): ..."


def synthetic() -> pd.DataFrame:
    """Two ipcs × two archs, three methods (``dwa`` sorts before ``random``), every special cell kind."""
    rows = []

    def add(method: str, ipc: int, arch: str, values: list[float | None], error: str | None = None) -> None:
        for seed, top1 in enumerate(values):
            rows.append(
                dict(run_id=f"{method}-ipc{ipc}", method=method, ipc=ipc, arch=arch, eval_seed=seed, top1=top1,
                     top5=None, error=error if top1 is None else None, protocol="kd", protocol_version=2,
                     teacher_id="resnet18-0123abcd-4567ef89-s0", dataset="cifar100")
            )  # fmt: skip

    add("random", 10, "resnet18", [20.1, 20.3, 20.5])
    add("random", 10, "convnet", [15.0, 15.2, 15.4])
    add("random", 50, "resnet18", [40.0, 40.4, 40.2])  # random × ipc50 × convnet missing: —
    add("dwa", 10, "resnet18", [39.6, 39.4, 39.5])
    add("dwa", 10, "convnet", [27.3])  # a single seed: no ±
    add("dwa", 50, "resnet18", [60.9, 60.5, 61.3])
    add("sre2l", 10, "resnet18", [31.2, 31.8, 31.5])
    add("sre2l", 10, "convnet", [None, None, None], error=OOM)  # every seed failed: err + footnote
    add("sre2l", 50, "resnet18", [52.1, 52.3, None], error="ValueError: loss is NaN")  # one seed failed
    add("sre2l", 50, "convnet", [30.0, 30.2, 30.4])
    df = pd.DataFrame(rows)
    return df.sample(frac=1.0, random_state=0).reset_index(drop=True)  # input order must not matter


PAPER_CSV = """\
method,dataset,ipc,distill_arch,eval_arch,protocol_note,top1,top1_std,paper,table,row,note,protocol
dwa,cifar100,10,resnet18,resnet18,DWA CIFAR protocol,39.6,0.6,"Du 2024 (DWA)",Table 1,"DWA, ResNet-18",,kd
dwa,cifar100,50,resnet18,resnet18,DWA CIFAR protocol,60.9,0.5,"Du 2024 (DWA)",Table 1,"DWA, ResNet-18",,kd
dwa,cifar100,50,resnet18,resnet18,DWA CIFAR protocol,60.3,,"Du 2024 (DWA)",Table 3,"✓, ResNet-18",,kd
dwa,cifar100,10,convnet,convnet,DWA CIFAR protocol,47.6,0.4,"Du 2024 (DWA)",Table 1,"DWA, ConvNet",,kd
sre2l,cifar100,10,resnet18,resnet18,as quoted by DWA,31.60,0.5,"Du 2024 (DWA)",Table 1,"SRe2L, RN18",,kd
mtt,cifar100,10,convnet,convnet,original setting,40.1,0.4,"Du 2024 (DWA)",Table 1,"MTT, ConvNet",,mtt
dwa,cifar10,10,resnet18,resnet18,DWA CIFAR protocol,32.6,0.4,"Du 2024 (DWA)",Table 1,"DWA, ResNet-18",,kd
"""


@pytest.fixture
def paper_root(tmp_path: Path) -> Path:
    (tmp_path / "example.csv").write_text(PAPER_CSV, encoding="utf-8")
    return tmp_path


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("DDBENCH_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs; see the module docstring to regenerate"


def test_markdown_golden() -> None:
    check_golden("table.md", build_table(synthetic(), fmt="md", caption="CIFAR-100 cross-architecture"))


def test_latex_golden() -> None:
    check_golden("table.tex", build_table(synthetic(), fmt="latex", archs=["resnet18", "convnet"]))


def test_paper_markdown_golden(paper_root: Path) -> None:
    paper = load_paper_numbers("cifar100", root=paper_root)
    check_golden("table_paper.md", build_table(synthetic(), fmt="md", paper_df=paper, distill_arch="resnet18"))


def test_layout_facts() -> None:
    """What the golden files show, asserted directly so a wrong regeneration cannot hide it."""
    text = build_table(synthetic(), fmt="md")
    lines = text.splitlines()
    body = [ln for ln in lines if ln.startswith("| ") and ln.split("|")[1].strip() in {"random", "dwa", "sre2l"}]
    assert [ln.split("|")[1].strip() for ln in body] == ["random", "random", "dwa", "dwa", "sre2l", "sre2l"]
    assert lines[2] == "| Method | IPC | convnet | resnet18 |"  # one header row: arch names, IPC in a column
    assert sum(1 for ln in lines if ln.startswith("|:--")) == 1 and lines[3].startswith("|:--")
    assert body[0] == "| random | 10 | 15.2±0.2 | 20.3±0.2 |"
    assert body[1] == "| random | 50 | — | 40.2±0.2 |"
    assert body[2] == "| dwa | 10 | **27.3** | **39.5±0.1** |"  # single seed: no ±; best per column at the same ipc
    assert body[5] == "| sre2l | 50 | 30.2±0.2 | 52.2±0.1[^2] |"  # a lone value is not "best"
    assert body[4] == "| sre2l | 10 | err[^1] | 31.5±0.2 |"
    assert "[^1]: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB" in lines  # first line only
    assert "[^2]: 1 of 3 seeds failed: ValueError: loss is NaN" in lines
    caption = lines[0]
    for fact in ("cifar100", "kd v2", "resnet18-0123abcd-4567ef89-s0", "1–3 evaluation seeds", "single evaluation"):
        assert fact in caption, fact


def test_mean_std_by_hand() -> None:
    """Population std (ddof=0), as np.std in the DD evaluation scripts: [10, 12, 14] → 12.0±1.6 (ddof=1: 2.0)."""
    df = pd.DataFrame(
        {"method": "m", "ipc": 1, "arch": "a", "eval_seed": [0, 1, 2], "top1": [10.0, 12.0, 14.0], "error": None}
    )
    grid = layout(df)
    (cell,) = grid.cells.values()
    assert cell.mean == pytest.approx(12.0) and cell.std == pytest.approx((8 / 3) ** 0.5) and cell.n == 3
    assert "| m | 1 | 12.0±1.6 |" in build_table(df)
    assert "12.0,1.63299" in build_table(df, fmt="csv")
    one = df.iloc[:1]
    assert "| m | 1 | 10.0 |" in build_table(one)
    assert "a single evaluation seed per cell (no std)" in build_table(one)


def test_paper_columns_are_separate(paper_root: Path) -> None:
    paper = load_paper_numbers("cifar100", root=paper_root)
    grid = layout(synthetic(), paper_df=paper, distill_arch="resnet18")
    labels = [(c.group, c.sub, c.source) for c in grid.columns]
    assert labels == [("kd", "convnet", "ours"), ("kd", "convnet", "paper"), ("kd", "resnet18", "ours"),
                      ("kd", "resnet18", "paper")]  # fmt: skip
    ours = {c.source: c for c in grid.columns if c.sub == "resnet18"}
    cell = grid.cells[(("dwa", 10), ours["ours"])]
    assert cell.text is None and cell.mean == pytest.approx(39.5)
    assert grid.cells[(("dwa", 10), ours["paper"])].text == "39.6±0.6"
    assert grid.cells[(("sre2l", 10), ours["paper"])].text == "31.60±0.5"  # digits kept exactly as printed
    assert grid.cells[(("random", 10), ours["paper"])].mean is None
    # the first table wins when a paper prints a cell twice (Table 1's 60.9, not Table 3's 60.3)
    assert grid.cells[(("dwa", 50), ours["paper"])].text == "60.9±0.5"
    # mtt has no reproduced numbers, so it is not a row unless asked for; the convnet-distilled dwa row is
    assert not any(r[0] == "mtt" for r in grid.rows)
    assert ("dwa (distilled: convnet)", 10) in grid.rows
    text = build_table(synthetic(), paper_df=paper, distill_arch="resnet18")
    assert "resnet18 (ours) | resnet18 (paper)" in text
    assert "Published numbers: Du 2024 (DWA): Table 1 (dwa, dwa (distilled: convnet), sre2l)." in text
    asked = layout(synthetic(), paper_df=paper, methods=["random", "dwa", "mtt"], distill_arch="resnet18")
    assert not any(r[0] == "sre2l" for r in asked.rows)  # mtt's row is measured under mtt, not beside kd


def two_protocols() -> pd.DataFrame:
    """The synthetic kd rows plus the same methods under dwa-cifar@cpu (values +1) and hard@cpu (values −10)."""
    kd = synthetic()
    dwa = kd.assign(protocol="dwa-cifar@cpu", protocol_version=1, top1=kd["top1"] + 1)
    hard = kd.assign(protocol="hard@cpu", protocol_version=1, top1=kd["top1"] - 10)
    return pd.concat([kd, dwa, hard], ignore_index=True)


def test_two_protocols_side_by_side_with_paper_only_beside_its_own(paper_root: Path) -> None:
    csv = PAPER_CSV.replace(",kd\n", ",dwa-cifar\n")  # these numbers were measured under DWA's protocol
    (paper_root / "example.csv").write_text(csv, encoding="utf-8")
    paper = load_paper_numbers("cifar100", root=paper_root)
    grid = layout(two_protocols(), paper_df=paper, distill_arch="resnet18")
    groups = list(dict.fromkeys(c.group for c in grid.columns))
    assert groups == ["kd", "dwa-cifar@cpu", "hard@cpu"]
    paper_groups = {c.group for c in grid.columns if c.source == "paper"}
    assert paper_groups == {"dwa-cifar@cpu"}  # never beside kd or hard cells
    col = next(c for c in grid.columns if (c.group, c.sub, c.source) == ("dwa-cifar@cpu", "resnet18", "ours"))
    assert grid.cells[(("dwa", 10), col)].mean == pytest.approx(40.5)
    assert "dwa-cifar@cpu is the cpu profile of dwa-cifar" in grid.caption
    text = build_table(two_protocols(), paper_df=paper, distill_arch="resnet18")
    check_golden("table_protocols.md", text)
    assert text.splitlines()[2].startswith("| Method | IPC | convnet · kd (ours) | resnet18 · kd (ours) |")


def test_different_soft_label_teachers_are_never_pooled() -> None:
    df = synthetic()
    other = df.assign(eval_teachers="resnet50-teacher", top1=df["top1"] + 5)
    grid = layout(pd.concat([df.assign(eval_teachers="resnet18-teacher"), other], ignore_index=True))
    groups = sorted({c.group for c in grid.columns})
    assert groups == ["kd [T1]", "kd [T2]"]
    assert "kd [T1]: soft labels from resnet18-teacher" in grid.caption
    assert "kd [T2]: soft labels from resnet50-teacher" in grid.caption
    means = {c.group: grid.cells[(("dwa", 10), c)].mean for c in grid.columns if c.sub == "resnet18"}
    assert means == {"kd [T1]": pytest.approx(39.5), "kd [T2]": pytest.approx(44.5)}  # not pooled to 42.0


def test_storage_and_cost_tables_from_hand_made_records() -> None:
    from ddbench.tables import cost_frame, storage_frame

    runs = pd.DataFrame([
        {"run_id": "r1", "method": "random", "ipc": 10, "dataset": "cifar10", "distill_seed": 0, "device": "cuda:0",
         "wall_time_s": 2.0, "peak_mem_mb": 500.0},
        {"run_id": "d1", "method": "dwa", "ipc": 10, "dataset": "cifar10", "distill_seed": 0, "device": "cuda:0",
         "wall_time_s": 7200.0, "peak_mem_mb": 3072.0},
    ])  # fmt: skip
    metrics = pd.DataFrame([
        {"run_id": "r1", "name": "storage_images_bytes", "value": 3072.0 * 100},
        {"run_id": "r1", "name": "storage_soft_labels_bytes", "value": 0.0},
        {"run_id": "d1", "name": "storage_images_bytes", "value": 3072.0 * 100},
        {"run_id": "d1", "name": "storage_soft_labels_bytes", "value": 4000.0},
    ])  # fmt: skip
    evals = pd.DataFrame([
        {"run_id": "r1", "wall_time_s": 40.0, "extra_json": '{"teacher_forwards_per_epoch": 0, "lockstep": 4}'},
        {"run_id": "d1", "wall_time_s": 90.0, "extra_json": '{"teacher_forwards_per_epoch": 1, "lockstep": 3}'},
        {"run_id": "d1", "wall_time_s": 30.0, "extra_json": '{"teacher_forwards_per_epoch": 2, "lockstep": 1}'},
    ])  # fmt: skip
    storage = build_table(storage_frame(runs, evals, metrics), metric="storage")
    lines = storage.splitlines()
    assert lines[2] == "| Method | IPC | images_bytes | soft_labels_bytes | total_bytes | teacher_forwards_per_epoch |"
    assert "| random | 10 | 300.00 KB | **0 B** | **300.00 KB** | **0** |" in lines  # 307200 B = 300 KiB
    assert "| dwa | 10 | 300.00 KB | 3.91 KB | 303.91 KB | 2 |" in lines  # 4000 B = 3.91 KiB; max passes 2
    assert "Device cuda:0." in storage
    cost = build_table(cost_frame(runs, evals), metric="cost")
    assert "| random | 10 | **2.0 s** | **500 MB** | **10.0 s** |" in cost  # 40 s over 4 lockstep students
    assert "| dwa | 10 | 2.00 h | 3.00 GB | 30.0 s |" in cost  # (90/3 + 30/1) / 2 = 30 s per student


def test_metric_table_for_diversity() -> None:
    df = pd.DataFrame(
        {
            "method": ["random", "random", "dwa", "dwa", "dwa"],
            "ipc": [10, 10, 10, 10, 50],
            "distill_seed": [0, 0, 0, 1, 0],
            "name": ["feat_dist_mean", "feat_dist_std", "feat_dist_mean", "feat_dist_mean", "feat_dist_mean"],
            "value": [0.25, 0.05, 0.5, 0.75, 0.4],
            "dataset": "cifar100",
        }
    )
    text = build_table(df, metric="diversity")
    assert "| random | 10 | 0.250 | 0.050 |" in text
    assert "| dwa | 10 | **0.625±0.125** | — |" in text and "| dwa | 50 | 0.400 | — |" in text
    assert "Run metrics on cifar100" in text and "distillation runs" in text
    assert "feat_dist_std" not in build_table(df, metric="feat_dist_mean")


def test_a_column_where_every_row_ties_has_no_bold() -> None:
    """feat_dist_classes is the same for every method of a dataset: bolding all of it would rank nothing."""
    df = pd.DataFrame(
        {
            "method": ["random", "dwa", "random", "dwa"],
            "ipc": 10,
            "distill_seed": 0,
            "name": ["feat_dist_classes", "feat_dist_classes", "feat_dist_mean", "feat_dist_mean"],
            "value": [10.0, 10.0, 0.25, 0.5],
            "dataset": "cifar100",
        }
    )
    text = build_table(df, metric="diversity")
    assert "| random | 10 | 10.0 | 0.250 |" in text
    assert "| dwa | 10 | 10.0 | **0.500** |" in text


def test_load_paper_numbers(paper_root: Path) -> None:
    df = load_paper_numbers("cifar100", root=paper_root)
    assert len(df) == 6 and set(df["dataset"]) == {"cifar100"}
    assert df["ipc"].dtype.kind == "i" and df["top1"].dtype.kind == "f"
    assert df.loc[df["top1_std_text"] == "", "top1_std"].isna().all()
    assert list(load_paper_numbers("cifar100", ["mtt"], root=paper_root)["top1"]) == [40.1]
    (paper_root / "bad.csv").write_text("method,dataset,ipc\nx,cifar100,1\n")
    with pytest.raises(ConfigError, match="missing column"):
        load_paper_numbers("cifar100", root=paper_root)


def test_shipped_paper_numbers_load() -> None:
    df = load_paper_numbers("tiny-imagenet")
    assert {"dwa", "sre2l"} <= set(df["method"])


def test_method_order_and_bad_format() -> None:
    assert method_order(["sre2l", "random", "dwa", "edc"]) == ["random", "dwa", "edc", "sre2l"]
    with pytest.raises(ConfigError, match="unknown table format"):
        build_table(synthetic(), fmt="docx")


def test_latex_escapes_names() -> None:
    df = pd.DataFrame({"method": ["a_b"], "ipc": [1], "arch": ["efficientnet_b0"], "eval_seed": [0], "top1": [5.0]})
    text = build_table(df, fmt="latex")
    assert r"a\_b & 1 & 5.0 \\" in text and r"efficientnet\_b0" in text
    assert textwrap.dedent(text).startswith(r"\begin{table}")
