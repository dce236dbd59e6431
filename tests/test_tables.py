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
method,dataset,ipc,distill_arch,eval_arch,protocol_note,top1,top1_std,paper,table,row,note
dwa,cifar100,10,resnet18,resnet18,DWA CIFAR protocol,39.6,0.6,"Du et al. 2024 (DWA), NeurIPS",Table 1,"DWA, ResNet-18",
dwa,cifar100,50,resnet18,resnet18,DWA CIFAR protocol,60.9,0.5,"Du et al. 2024 (DWA), NeurIPS",Table 1,"DWA, ResNet-18",
dwa,cifar100,50,resnet18,resnet18,DWA CIFAR protocol,60.3,,"Du et al. 2024 (DWA), NeurIPS",Table 3,"✓, ResNet-18",
dwa,cifar100,10,convnet,convnet,DWA CIFAR protocol,47.6,0.4,"Du et al. 2024 (DWA), NeurIPS",Table 1,"DWA, ConvNet",
sre2l,cifar100,10,resnet18,resnet18,as quoted by DWA,31.60,0.5,"Du et al. 2024 (DWA), NeurIPS",Table 1,"SRe2L, RN18",
mtt,cifar100,10,convnet,convnet,original setting,40.1,0.4,"Du et al. 2024 (DWA), NeurIPS",Table 1,"MTT, ConvNet",
dwa,cifar10,10,resnet18,resnet18,DWA CIFAR protocol,32.6,0.4,"Du et al. 2024 (DWA), NeurIPS",Table 1,"DWA, ResNet-18",
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
    assert [ln.split("|")[1].strip() for ln in body] == ["random", "dwa", "sre2l"]
    assert lines[2] == "| Method | IPC 10 |  | IPC 50 |  |"
    assert lines[4] == "|  | convnet | resnet18 | convnet | resnet18 |"
    assert body[0] == "| random | 15.2±0.2 | 20.3±0.2 | — | 40.2±0.2 |"
    assert body[1] == "| dwa | **27.3** | **39.5±0.1** | — | **60.9±0.3** |"  # single seed: no ±
    assert body[2] == "| sre2l | err[^1] | 31.5±0.2 | 30.2±0.2 | 52.2±0.1[^2] |"  # a lone value is not "best"
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
    assert "| m | 12.0±1.6 |" in build_table(df)
    assert "12.0,1.63299" in build_table(df, fmt="csv")
    one = df.iloc[:1]
    assert "| m | 10.0 |" in build_table(one)
    assert "a single evaluation seed per cell (no std)" in build_table(one)


def test_paper_columns_are_separate(paper_root: Path) -> None:
    paper = load_paper_numbers("cifar100", root=paper_root)
    grid = layout(synthetic(), paper_df=paper, distill_arch="resnet18")
    labels = [(c.ipc, c.sub, c.source) for c in grid.columns]
    assert labels == [
        (10, "convnet", "ours"), (10, "convnet", "paper"), (10, "resnet18", "ours"), (10, "resnet18", "paper"),
        (50, "convnet", "ours"), (50, "resnet18", "ours"), (50, "resnet18", "paper"),
    ]  # fmt: skip
    ours = {c.source: c for c in grid.columns if (c.ipc, c.sub) == (10, "resnet18")}
    assert grid.cells[("dwa", ours["ours"])].text is None and grid.cells[("dwa", ours["ours"])].mean == pytest.approx(
        39.5
    )
    assert grid.cells[("dwa", ours["paper"])].text == "39.6±0.6"
    assert grid.cells[("sre2l", ours["paper"])].text == "31.60±0.5"  # digits kept exactly as printed
    assert grid.cells[("random", ours["paper"])].mean is None
    # the first table wins when a paper prints a cell twice (Table 1's 60.9, not Table 3's 60.3)
    col50 = next(c for c in grid.columns if (c.ipc, c.sub, c.source) == (50, "resnet18", "paper"))
    assert grid.cells[("dwa", col50)].text == "60.9±0.5"
    # mtt has no reproduced numbers, so it is not a row unless asked for; the convnet-distilled dwa row is
    assert "mtt" not in grid.rows
    assert "dwa (distilled: convnet)" in grid.rows
    text = build_table(synthetic(), paper_df=paper, distill_arch="resnet18")
    assert "resnet18 (ours) | resnet18 (paper)" in text
    assert "Published numbers: Du et al. 2024 (DWA), NeurIPS: Table 1 (dwa, dwa (distilled: convnet), sre2l)." in text
    asked = layout(synthetic(), paper_df=paper, methods=["random", "dwa", "mtt"], distill_arch="resnet18")
    assert "mtt" in asked.rows and "sre2l" not in asked.rows


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
    assert "| random | 0.250 | 0.050 | — |" in text
    assert "| dwa | **0.625±0.125** | — | 0.400 |" in text
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
    assert "| random | 10.0 | 0.250 |" in text
    assert "| dwa | 10.0 | **0.500** |" in text


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
        build_table(synthetic(), fmt="html")


def test_latex_escapes_names() -> None:
    df = pd.DataFrame({"method": ["a_b"], "ipc": [1], "arch": ["efficientnet_b0"], "eval_seed": [0], "top1": [5.0]})
    text = build_table(df, fmt="latex")
    assert r"a\_b & 5.0 \\" in text and r"efficientnet\_b0" in text
    assert textwrap.dedent(text).startswith(r"\begin{table}")
