"""Sanity checks for the published-number tables in leaderboards/papers/*.csv.

Format: exact header (optionally followed by a ``protocol`` column), valid ids, 0 <= top1 <= 100, unique keys.
Content: a handful of headline cells spot-checked against the SRe2L/DWA spec §8 (which itself restates the DWA
paper), plus the paper's own internal consistency between Table 3 (directed column) and Table 4 (ResNet-18-distilled
DWA rows); for EDC/RDED, headline cells against spec edc.md §7 and the EDC paper's cross-table consistency.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ddbench.data.catalog import SPECS
from ddbench.protocol import load_protocol

PAPERS = Path(__file__).resolve().parents[1] / "leaderboards" / "papers"
HEADER = [
    "method", "dataset", "ipc", "distill_arch", "eval_arch", "protocol_note",
    "top1", "top1_std", "paper", "table", "row", "note",
]  # fmt: skip
DATASETS = {spec.id for spec in SPECS}  # any ddbench dataset id
KEY = ["method", "dataset", "ipc", "distill_arch", "eval_arch", "paper", "table"]  # two papers' Table 1 are two tables
CSVS = sorted(PAPERS.glob("*.csv"))


def _load(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


@pytest.fixture(scope="module")
def allrows() -> pd.DataFrame:
    return pd.concat([_load(p).assign(_file=p.name) for p in CSVS], ignore_index=True)


def test_expected_files_present() -> None:
    names = {p.name for p in CSVS}
    assert {"dwa.csv", "sre2l.csv", "others-from-dwa.csv", "edc.csv", "rded.csv"} <= names


@pytest.mark.parametrize("path", CSVS, ids=lambda p: p.name)
def test_header_and_values(path: Path) -> None:
    with path.open(encoding="utf-8") as fh:
        header = fh.readline().rstrip("\r\n").split(",")
    assert header in (HEADER, [*HEADER, "protocol"]), header
    df = _load(path)
    if "protocol" in df:  # a ddbench protocol id, or empty where the number's protocol is unknown
        assert df["protocol"].str.fullmatch(r"([a-z0-9][a-z0-9\-]*(~[a-z0-9=.,_]+)?)?").all()  # id[~variant]
    assert len(df) > 0
    assert set(df["dataset"]) <= DATASETS, set(df["dataset"]) - DATASETS
    assert df["method"].str.fullmatch(r"[a-z0-9][a-z0-9_\-]*").all()
    assert df["ipc"].str.fullmatch(r"[1-9]\d*").all()
    for col in ("distill_arch", "eval_arch", "paper", "table", "row"):
        assert (df[col].str.strip() != "").all(), col
    top1 = pd.to_numeric(df["top1"], errors="raise")
    assert ((top1 >= 0) & (top1 <= 100)).all()
    std = df["top1_std"][df["top1_std"] != ""]
    assert (pd.to_numeric(std, errors="raise") >= 0).all()


def test_unique_keys(allrows: pd.DataFrame) -> None:
    dup = allrows[allrows.duplicated(KEY, keep=False)]
    assert dup.empty, dup[[*KEY, "_file"]].to_string()


def _cell(
    df: pd.DataFrame, method: str, dataset: str, ipc: int, da: str, ea: str, table: str, paper: str | None = None
) -> pd.Series:
    hit = df[
        (df.paper.str.startswith(paper) if paper else True)
        & (df.method == method)
        & (df.dataset == dataset)
        & (df.ipc == str(ipc))
        & (df.distill_arch == da)
        & (df.eval_arch == ea)
        & (df.table == table)
    ]
    assert len(hit) == 1, (method, dataset, ipc, da, ea, table, len(hit))
    return hit.iloc[0]


# (method, dataset, ipc, distill_arch, eval_arch, table, top1, std or None): spec sre2l-dwa.md §8.
HEADLINE = [
    ("dwa", "cifar10", 10, "resnet18", "resnet18", "Table 1", 32.6, 0.4),
    ("sre2l", "cifar10", 10, "resnet18", "resnet18", "Table 1", 27.2, 0.4),
    ("dwa", "cifar100", 10, "resnet18", "resnet18", "Table 1", 39.6, 0.6),
    ("sre2l", "cifar100", 50, "resnet18", "resnet18", "Table 1", 52.2, 0.3),
    ("dwa", "cifar100", 50, "resnet18", "resnet18", "Table 1", 60.9, 0.5),
    ("dwa", "cifar100", 50, "convnet_bn", "convnet_bn", "Table 1", 59.0, 0.1),
    ("mtt", "cifar10", 10, "convnet", "convnet", "Table 1", 65.4, 0.7),
    ("dwa", "tiny-imagenet", 50, "resnet18", "resnet18", "Table 2", 52.8, None),
    ("sre2l", "tiny-imagenet", 50, "resnet18", "resnet101", "Table 2", 42.5, None),
    ("dwa", "imagenet-1k", 10, "resnet18", "resnet18", "Table 2", 37.9, None),
    ("sre2l", "imagenet-1k", 50, "resnet18", "resnet101", "Table 2", 60.8, None),
    ("dwa", "imagenet-1k", 100, "resnet18", "resnet101", "Table 2", 66.7, None),
    ("dwa-no-perturb", "cifar100", 10, "resnet18", "resnet18", "Table 3", 30.6, None),
    ("dwa-random-perturb", "cifar100", 10, "resnet18", "resnet18", "Table 3", 14.9, None),
    ("dwa", "cifar100", 50, "resnet18", "resnet18", "Table 3", 60.3, None),
    ("sre2l", "cifar100", 50, "resnet18", "shufflenetv2", "Table 4", 27.5, None),
    ("dwa", "cifar100", 50, "resnet18", "convnet_bn", "Table 4", 37.0, None),
    ("sre2l", "imagenet-1k", 10, "resnet18", "efficientnet_b0", "Table 5", 11.7, None),
    ("dwa", "imagenet-1k", 10, "resnet18", "efficientnet_b0", "Table 5", 37.4, None),
    ("sre2l", "imagenet-1k", 50, "resnet18", "deit_tiny", "Table 9", 15.41, None),
    ("dwa", "imagenet-1k", 50, "resnet18", "deit_tiny", "Table 9", 22.72, None),
]


@pytest.mark.parametrize("row", HEADLINE, ids=lambda r: f"{r[0]}-{r[1]}-ipc{r[2]}-{r[4]}-{r[5].replace(' ', '')}")
def test_headline_cells_match_spec(allrows: pd.DataFrame, row: tuple) -> None:
    *key, top1, std = row
    cell = _cell(allrows, *key, paper="Du et al. 2024 (DWA)")
    assert float(cell.top1) == pytest.approx(top1, abs=1e-9)
    if std is not None:
        assert float(cell.top1_std) == pytest.approx(std, abs=1e-9)


def test_known_inconsistencies_are_flagged(allrows: pd.DataFrame) -> None:
    # Spec §6.5 D10: transcribed as printed, each carrying a note.
    for table in ("Table 1", "Table 3"):
        assert "D10" in _cell(allrows, "dwa", "cifar100", 50, "resnet18", "resnet18", table).note
    typo = _cell(allrows, "dwa", "cifar100", 50, "convnet_bn", "shufflenetv2", "Table 4")
    assert typo.top1 == "44.37" and "typo" in typo.note
    for ipc in (10, 50):
        assert "D10" in _cell(allrows, "sre2l", "cifar100", ipc, "resnet18", "convnet_bn", "Table 4").note


def test_table3_directed_equals_table4_dwa(allrows: pd.DataFrame) -> None:
    t3 = allrows[(allrows.table == "Table 3") & (allrows.method == "dwa")]
    checked = 0
    for _, r in t3.iterrows():
        if r.eval_arch == "resnet18":
            continue  # Table 4 has no ResNet-18 column
        t4 = _cell(allrows, "dwa", "cifar100", int(r.ipc), "resnet18", r.eval_arch, "Table 4")
        assert (t4.top1, t4.top1_std) == (r.top1, r.top1_std)
        checked += 1
    assert checked == 8


# -- EDC (edc.csv) and RDED (rded.csv) ------------------------------------------------------------------------------
# (method, dataset, ipc, distill_arch, eval_arch, table, top1, std or None): spec edc.md §7.2, Table 1 and Table 2.
EDC_HEADLINE = [
    ("edc", "cifar10", 10, "edc-observers", "resnet18", "Table 1", 79.1, 0.3),
    ("edc", "cifar10", 10, "edc-observers", "mobilenetv2_050", "Table 1", 42.0, 0.4),
    ("edc", "cifar100", 1, "edc-observers", "resnet18", "Table 1", 39.7, 0.1),
    ("edc", "tiny-imagenet", 50, "edc-observers", "resnet18", "Table 1", 57.2, 0.2),
    ("edc", "imageidc", 50, "edc-observers", "resnet18", "Table 1", 82.2, 0.1),
    ("edc", "imagenet-1k", 10, "edc-observers", "resnet18", "Table 1", 48.6, 0.3),
    ("edc", "imagenet-1k", 50, "edc-observers", "mobilenetv2", "Table 1", 57.8, 0.1),
    ("rded", "cifar10", 10, "resnet18", "resnet18", "Table 1", 37.1, 0.3),
    ("rded", "tiny-imagenet", 1, "resnet18", "resnet18", "Table 1", 9.7, 0.4),
    ("rded", "imagenet-1k", 50, "resnet18", "resnet101", "Table 1", 61.2, 0.4),
    ("g-vbsm", "cifar10", 10, "gvbsm-observers", "resnet18", "Table 1", 53.5, 0.6),
    ("g-vbsm", "imagenet-1k", 10, "gvbsm-observers", "resnet50", "Table 1", 35.4, 0.8),
    ("edc", "imagenet-1k", 10, "edc-observers", "efficientnet_b0", "Table 2", 51.1, None),
    ("rded", "imagenet-1k", 50, "resnet18", "convnext_tiny", "Table 2", 65.4, None),
    ("edc", "imagenet-1k", 50, "edc-observers", "shufflenetv2", "Table 2", 45.7, None),
]


@pytest.mark.parametrize("row", EDC_HEADLINE, ids=lambda r: f"{r[0]}-{r[1]}-ipc{r[2]}-{r[4]}-{r[5].replace(' ', '')}")
def test_edc_headline_cells_match_spec(allrows: pd.DataFrame, row: tuple) -> None:
    *key, top1, std = row
    cell = _cell(allrows, *key)
    assert float(cell.top1) == pytest.approx(top1, abs=1e-9)
    if std is not None:
        assert float(cell.top1_std) == pytest.approx(std, abs=1e-9)


# EDC Table 2 prints its own "+Δ" rows (EDC − RDED per architecture): an independent check of both transcriptions.
TABLE2_DELTA = {
    10: [6.6, 8.1, 3.4, 10.6, 8.3, 4.4, 9.1, 6.1, 10.4],
    20: [6.4, 0.6, 2.0, 7.3, 7.5, 1.9, 5.0, 7.4, 12.3],
    30: [5.1, 2.1, 2.2, 8.9, 4.3, 16.0, 11.4, 1.8, 17.6],
    40: [2.5, 0.4, 2.2, 4.4, 3.4, 8.2, 3.0, 1.5, 17.0],
    50: [1.5, 0.6, 3.7, 3.9, 3.3, 10.5, 6.4, 1.2, 14.8],
}
TABLE2_ARCHS = ["resnet18", "resnet50", "resnet101", "mobilenetv2", "efficientnet_b0", "deit_tiny", "swin_tiny",
                "convnext_tiny", "shufflenetv2"]  # fmt: skip


def test_edc_table2_deltas(allrows: pd.DataFrame) -> None:
    for ipc, deltas in TABLE2_DELTA.items():
        for arch, delta in zip(TABLE2_ARCHS, deltas, strict=True):
            edc = _cell(allrows, "edc", "imagenet-1k", ipc, "edc-observers", arch, "Table 2")
            rded = _cell(allrows, "rded", "imagenet-1k", ipc, "resnet18", arch, "Table 2")
            assert float(edc.top1) - float(rded.top1) == pytest.approx(delta, abs=0.051), (ipc, arch)


def test_edc_tables_agree_where_the_paper_repeats_a_configuration(allrows: pd.DataFrame) -> None:
    def top1(method: str, table: str, arch: str = "resnet18", ipc: int = 10, da: str = "edc-observers") -> float:
        return float(_cell(allrows, method, "imagenet-1k", ipc, da, arch, table).top1)

    for arch in ("resnet18", "resnet50", "resnet101"):  # Table 5's full configuration is Table 1's EDC
        assert top1("edc", "Table 5", arch) == top1("edc", "Table 1", arch)
    for ipc in (10, 50):  # Table 2 repeats Table 1's ResNet-18 and ResNet-101 columns
        assert top1("edc", "Table 2", ipc=ipc) == top1("edc", "Table 1", ipc=ipc)
        rded = [top1("rded", table, "resnet101", ipc, "resnet18") for table in ("Table 1", "Table 2")]
        assert rded[0] == rded[1]
    assert top1("edc", "Table 23") == top1("edc", "Table 1")  # CONFIG G
    assert top1("edc-config-e", "Table 23") == top1("edc-alpha0", "Table 5")  # CONFIG E = α 0 without extras
    f23 = _cell(allrows, "edc-config-f", "imagenet-1k", 10, "edc-observers", "resnet18", "Table 23")
    f5 = _cell(allrows, "edc-alpha05", "imagenet-1k", 10, "edc-observers", "resnet18", "Table 5")
    assert (f23.top1, f5.top1) == ("48.0", "48.1") and "48.1" in f23.note and "48.0" in f5.note  # flagged as printed


def test_edc_and_rded_rows_name_their_protocol(allrows: pd.DataFrame) -> None:
    rows = allrows[allrows._file.isin(["edc.csv", "rded.csv"])]
    assert rows.protocol.str.fullmatch(r"(edc|rded|gvbsm)-[a-z0-9\-]+(~noema)?").all()
    quoted = rows.protocol.str.startswith("gvbsm-") | (rows.protocol == "edc-imagenet-config-c")  # G-VBSM's recipe
    ours = rows.protocol[~quoted]  # G-VBSM's evaluation is quoted, not shipped (no G-VBSM method)
    for name in sorted(set(ours)):
        assert load_protocol(name).name == name  # every protocol EDC/RDED rows name loads under that id
    assert load_protocol("edc-imagenet~noema").ema is None and load_protocol("edc-imagenet").ema == 0.99
    edc_t1 = rows[(rows.method == "edc") & (rows.table == "Table 1")]
    assert dict(edc_t1.groupby("dataset").protocol.first()) == {
        "cifar10": "edc-cifar10", "cifar100": "edc-cifar100", "tiny-imagenet": "edc-tiny",
        "imageidc": "edc-imageidc", "imagenet-1k": "edc-imagenet",
    }  # fmt: skip


# -- Minimax diffusion (minimax.csv) -----------------------------------------------------------------------------------
# (method, dataset, ipc, distill_arch, eval_arch, table, top1, std): spec minimax.md §6 (Table 1, ablation, IN-1K).
MINIMAX_HEADLINE = [
    ("minimax", "imagewoof", 10, "dit-xl-2", "resnet_ap10", "Table 1", 39.2, 1.3),
    ("minimax", "imagewoof", 100, "dit-xl-2", "resnet18_in", "Table 1", 65.7, 0.4),
    ("minimax", "imagewoof", 50, "dit-xl-2", "convnet_d6", "Table 1", 53.9, 0.6),
    ("dit", "imagewoof", 70, "dit-xl-2", "resnet18_in", "Table 1", 51.5, 1.0),
    ("random", "imagewoof", 20, "none", "resnet_ap10", "Table 1", 32.7, 0.4),
    ("random", "imagewoof", 100, "none", "convnet_d6", "Table 1", 52.2, 0.4),
    ("minimax-finetune", "imagewoof", 50, "dit-xl-2", "resnet_ap10", "Ablation (poster)", 51.0, 0.9),
    ("minimax-lr-nomem", "imageidc", 50, "dit-xl-2", "resnet_ap10", "Ablation (poster)", 60.2, 1.2),
    ("minimax", "imageidc", 50, "dit-xl-2", "resnet_ap10", "Ablation (poster)", 69.6, 0.2),
    ("minimax", "imagenet-1k", 10, "dit-xl-2", "resnet18", "via Minimax README", 44.3, 0.5),
    ("dit", "imagenet-1k", 50, "dit-xl-2", "resnet18", "via Minimax README", 52.9, 0.6),
]


@pytest.mark.parametrize("row", MINIMAX_HEADLINE, ids=lambda r: f"{r[0]}-{r[1]}-ipc{r[2]}-{r[4]}")
def test_minimax_headline_cells_match_spec(allrows: pd.DataFrame, row: tuple) -> None:
    *key, top1, std = row
    cell = _cell(allrows, *key)
    assert (float(cell.top1), float(cell.top1_std)) == pytest.approx((top1, std), abs=1e-9)


def test_minimax_ablation_full_row_equals_table1(allrows: pd.DataFrame) -> None:
    for ipc in (10, 50):
        t1 = _cell(allrows, "minimax", "imagewoof", ipc, "dit-xl-2", "resnet_ap10", "Table 1")
        abl = _cell(allrows, "minimax", "imagewoof", ipc, "dit-xl-2", "resnet_ap10", "Ablation (poster)")
        assert (t1.top1, t1.top1_std) == (abl.top1, abl.top1_std)


def test_minimax_rows_name_their_protocol(allrows: pd.DataFrame) -> None:
    rows = allrows[allrows._file == "minimax.csv"]
    assert len(rows) == 45 + 28 + 4  # Table 1 (3 methods × 5 ipc × 3 archs), the ablation, the IN-1K figure
    assert set(rows[rows.dataset != "imagenet-1k"].protocol) == {"idc"}
    assert set(rows[rows.dataset == "imagenet-1k"].protocol) == {"rded-imagenet"}


# (method, dataset, ipc, distill_arch, eval_arch, top1, std): spec mtt.md §7, MTT paper Table 1 (seed slides 003).
MTT_HEADLINE = [
    ("mtt", "cifar10", 1, "convnet", "convnet", 46.3, 0.8),
    ("mtt", "cifar10", 10, "convnet", "convnet", 65.3, 0.7),
    ("mtt", "cifar10", 50, "convnet", "convnet", 71.6, 0.2),
    ("mtt", "cifar100", 1, "convnet", "convnet", 24.3, 0.3),
    ("mtt", "cifar100", 50, "convnet", "convnet", 47.7, 0.2),
    ("mtt", "tiny-imagenet", 10, "convnet", "convnet", 23.2, 0.2),
    ("random", "cifar10", 1, "none", "convnet", 14.4, 2.0),
    ("dsa", "cifar100", 10, "convnet", "convnet", 32.3, 0.3),
    ("dm", "tiny-imagenet", 50, "convnet", "convnet", 24.1, 0.3),
]


@pytest.mark.parametrize("row", MTT_HEADLINE, ids=lambda r: f"{r[0]}-{r[1]}-ipc{r[2]}")
def test_mtt_table1_cells_match_spec(allrows: pd.DataFrame, row: tuple) -> None:
    *key, top1, std = row
    cell = _cell(allrows, *key, "Table 1", paper="Cazenavette et al. 2022 (MTT)")
    assert (float(cell.top1), float(cell.top1_std)) == pytest.approx((top1, std), abs=1e-9)


def test_mtt_rows_name_their_protocol_and_zca(allrows: pd.DataFrame) -> None:
    rows = allrows[allrows._file == "mtt.csv"]
    assert len(rows) == 9 * 3 + 6  # MTT, Random, DM on 9 settings; DSA on the 6 CIFAR ones (Tiny prints -)
    assert set(rows[rows.method == "mtt"].protocol) == {"mtt"}
    assert set(rows[rows.method != "mtt"].protocol) == {""}  # quoted from earlier work under their own protocols
    starred = rows[(rows.method == "mtt") & rows.note.str.contains("printed with [*]")]
    assert sorted(zip(starred.dataset, starred.ipc.astype(int))) == [
        ("cifar10", 1), ("cifar10", 10), ("cifar100", 1), ("cifar100", 50)
    ]  # fmt: skip
