"""Records → paper-style tables: mean ± std pivots written as Markdown, LaTeX or CSV.

Input is tidy: one row per (run, student arch, protocol, eval seed) as :meth:`ddbench.store.Store.evaluations`
returns it, or one row per (run, metric) from :meth:`~ddbench.store.Store.metrics`. A table is the mean ± std
over seeds of each (method, ipc, student arch) cell, pivoted to rows = methods (``random`` first, then
alphabetical) and columns = ipc × arch, the layout of DWA Table 4 or EDC Table 2.

Conventions, chosen to match how the papers print and so that a table never hides anything:

* ``52.8±0.2``: one decimal; the std is the population std (``ddof=0``, as ``np.std`` in the DC/DM/MTT/SRe2L
  evaluation scripts) over evaluation seeds. A single-seed cell prints the mean alone and the caption says so.
* The best value of each column is bold (unless every value in it ties); a missing cell is ``—``; a failed cell
  is ``err`` with a footnote giving the (shortened) error, and a cell where only some seeds failed keeps its value
  and gets the footnote too.
* The caption names the dataset, the protocol and its version, the teacher(s) and the number of seeds.
* Published numbers (``leaderboards/papers/*.csv``) go in their own ``(paper)`` sub-columns, printed exactly as
  the paper prints them, with a note listing their sources; they are never merged into a reproduced cell.

The Markdown and LaTeX writers are small and in-house (tabulate and jinja2 are not dependencies); LaTeX output
needs ``\\usepackage{booktabs}``. CSV is the long form of the aggregated cells, for further processing.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

ACCURACY_METRICS = ("top1", "top5", "best_top1")
METRIC_TITLES = {
    "top1": "Top-1 accuracy (%)",
    "top5": "Top-5 accuracy (%)",
    "best_top1": "Best-epoch top-1 (%, selected on test: auxiliary)",
    "diversity": "Run metrics",
    "storage": "Storage: bytes of images and stored soft labels, online-teacher forward passes per student epoch",
    "cost": "Cost: distillation wall time and peak memory, evaluation wall time per student",
    "hlr": "HLR = acc(real, hard) − acc(syn, hard), points (lower is better)",
    "ior": "IOR = acc(syn, recipe) − acc(random, recipe), points",
    "lrs": "LRS = N(0.5·IOR − 0.5·HLR) on fractions, in [0, 1]",
    "ars": "ARS = N(0.5·IOR with augmentation + 0.5·IOR without) on fractions, in [0, 1]",
}
#: DD-Ranking-style scores (``ddbench score``), tabulated per student arch and recipe from their per-seed values.
SCORE_METRICS = ("hlr", "ior", "lrs", "ars")
#: Metric tables that show a fixed set of names, in this column order (built by :func:`storage_frame`/`cost_frame`).
METRIC_SETS = {
    "storage": ("images_bytes", "soft_labels_bytes", "total_bytes", "teacher_forwards_per_epoch"),
    "cost": ("distill_time_s", "distill_peak_mem_mb", "eval_time_per_student_s"),
}
#: Columns where smaller is better (bold marks the minimum).
METRIC_LOWER_IS_BETTER = {name: True for names in METRIC_SETS.values() for name in names} | {"hlr": True}
#: How the storage and cost columns print (human units).
METRIC_UNITS = {
    "images_bytes": "bytes",
    "soft_labels_bytes": "bytes",
    "total_bytes": "bytes",
    "teacher_forwards_per_epoch": "count",
    "distill_time_s": "seconds",
    "eval_time_per_student_s": "seconds",
    "distill_peak_mem_mb": "mb",
}
FORMATS = {"md": "md", "markdown": "md", "latex": "latex", "tex": "latex", "csv": "csv", "json": "json", "html": "html"}
EXTENSIONS = {"md": "md", "latex": "tex", "csv": "csv", "json": "json", "html": "html"}
MISSING = "—"
ERROR = "err"
PAPER_COLUMNS = (
    "method",
    "dataset",
    "ipc",
    "distill_arch",
    "eval_arch",
    "protocol_note",
    "top1",
    "top1_std",
    "paper",
    "table",
    "row",
)
MAX_ERROR_CHARS = 100


def papers_dir() -> Path:
    """The published-number CSVs: the installed ``ddbench_papers`` package (``leaderboards/papers`` of the source tree,
    shipped as package data so a wheel install has them), else the checkout's folder."""
    try:
        from importlib.resources import files

        folder = Path(str(files("ddbench_papers")))
        if any(folder.glob("*.csv")):
            return folder
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[1] / "leaderboards" / "papers"


def _natural_key(text: str) -> list[Any]:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", str(text))]


def method_order(names: Iterable[str]) -> list[str]:
    """``random`` first (every table's control row), then natural alphabetical order."""
    return sorted(set(names), key=lambda n: (n != "random", _natural_key(n)))


# -- published numbers ----------------------------------------------------------------------------------------------
def load_paper_numbers(
    dataset: str, methods: Sequence[str] | None = None, *, root: str | Path | None = None
) -> pd.DataFrame:
    """Published cells for ``dataset`` from every ``*.csv`` in ``leaderboards/papers`` (or ``root``).

    Values are kept as printed (``top1_text``, ``top1_std_text``) for display and parsed (``top1``, ``top1_std``)
    for comparisons. The schema is documented in ``leaderboards/papers/README.md``.

    Raises:
        ConfigError: a CSV lacks a schema column or holds a non-numeric accuracy.
    """
    import pandas as pd

    from ddbench.config import ConfigError

    folder = Path(root) if root is not None else papers_dir()
    frames = []
    for path in sorted(folder.glob("*.csv")):
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        missing = [c for c in PAPER_COLUMNS if c not in df.columns]
        if missing:
            raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; see {folder / 'README.md'}")
        frames.append(df.assign(source_file=path.name))
    if not frames:
        return pd.DataFrame(columns=[*PAPER_COLUMNS, "top1_text", "top1_std_text", "source_file"])
    df = pd.concat(frames, ignore_index=True)
    df = df[df["dataset"] == dataset]
    if methods is not None:
        df = df[df["method"].isin(list(methods))]
    df = df.assign(top1_text=df["top1"].str.strip(), top1_std_text=df["top1_std"].str.strip())
    try:
        df = df.assign(
            ipc=df["ipc"].astype(int),
            top1=df["top1_text"].astype(float),
            top1_std=pd.to_numeric(df["top1_std_text"].replace("", None), errors="raise"),
        )
    except ValueError as exc:
        raise ConfigError(f"{folder}: a published number for {dataset} is not numeric ({exc})") from exc
    return df.reset_index(drop=True)


# -- aggregation ----------------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One table cell: an aggregate over seeds (ours) or a published value (paper)."""

    mean: float | None = None
    std: float | None = None
    n: int = 0
    error: str | None = None  # footnote text when some or all seeds failed
    text: str | None = None  # preformatted value (published numbers, as printed)
    bold: bool = False
    note: int | None = None  # footnote number
    provenance: dict[str, Any] = field(default_factory=dict)  # where the value came from (``--format json``)


@dataclass(frozen=True)
class Column:
    group: str  # protocol key (split by soft-label teacher when they differ); "" for run metrics
    sub: str  # student arch, or metric name
    source: str  # "ours" or "paper"


def _short_error(text: str) -> str:
    line = next((s.strip() for s in str(text).strip().splitlines() if s.strip()), "error")
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"


def _has_error(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and str(value).strip() != ""


def _aggregate(df: pd.DataFrame, value: str, sub: str) -> dict[tuple[str, int, str, str], Cell]:
    """Mean ± population std over the successful rows of each (method, ipc, sub, group); errors as footnotes."""
    cells: dict[tuple[str, int, str, str], Cell] = {}
    errors = df["error"] if "error" in df.columns else [None] * len(df)
    ok = [not _has_error(e) for e in errors]
    work = df.assign(_ok=ok, _err=[_short_error(e) if _has_error(e) else None for e in errors])
    if "_group" not in work.columns:
        work = work.assign(_group="")
    for (method, ipc, key, grp), group in work.groupby(["method", "ipc", sub, "_group"], sort=False):
        values = [float(v) for v in group.loc[group["_ok"], value] if v is not None and not math.isnan(float(v))]
        failed = [e for e in group["_err"] if isinstance(e, str)]
        cell = Cell(n=len(values))
        if values:
            mean = sum(values) / len(values)
            cell.mean = mean
            cell.std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) if len(values) > 1 else None
        if failed:
            distinct = list(dict.fromkeys(failed))
            prefix = f"{len(failed)} of {len(failed) + len(values)} seeds failed: " if values else ""
            cell.error = prefix + "; ".join(distinct)
        cell.provenance = _provenance(group)
        cells[(str(method), int(ipc), str(key), str(grp))] = cell
    return cells


#: Row columns a reproduced cell's provenance lists (their distinct values), for ``--format json``.
PROVENANCE_COLUMNS = ("run_id", "eval_seed", "distill_seed", "protocol", "protocol_version", "protocol_hash",
                      "eval_teachers", "teacher_id", "config_hash", "ddbench_version", "git_sha", "torch_version",
                      "run_device", "created_at")  # fmt: skip


def _provenance(rows: pd.DataFrame) -> dict[str, list[Any]]:
    out = {}
    for column in PROVENANCE_COLUMNS:
        values = _unique(rows, column)
        if values:
            out[column] = [v.item() if hasattr(v, "item") else v for v in values]
    return out


def _paper_cells(
    paper: pd.DataFrame, distill_arch: str | None
) -> tuple[dict[tuple[str, int, str], Cell], list[tuple[str, str, str]]]:
    """Published cells keyed by (row label, ipc, eval arch) and the (paper, table, method) sources used.

    A method published with several distillation architectures gets one row per architecture: the one matching
    ``distill_arch`` (else the method's most common one) keeps the plain method name, so it sits beside our
    numbers; the others become ``method (distilled: arch)``. A cell printed by several tables comes from the
    first table (natural order), so a table-internal inconsistency of the paper is not averaged away.
    """
    cells: dict[tuple[str, int, str], Cell] = {}
    sources: list[tuple[str, str, str]] = []
    for method, rows in paper.groupby("method", sort=False):
        counts = rows["distill_arch"].value_counts()
        if distill_arch is not None and distill_arch in counts.index:
            main = distill_arch
        else:
            main = sorted(counts.index, key=lambda a: (-counts[a], _natural_key(a)))[0]
        ordered = rows.assign(_t=[_natural_key(t) for t in rows["table"]]).sort_values("_t", kind="stable")
        for _, r in ordered.iterrows():
            label = str(method) if r["distill_arch"] == main else f"{method} (distilled: {r['distill_arch']})"
            key = (label, int(r["ipc"]), str(r["eval_arch"]))
            if key in cells:
                continue
            std = r["top1_std_text"]
            cells[key] = Cell(mean=float(r["top1"]), n=1, text=f"{r['top1_text']}±{std}" if std else r["top1_text"],
                              provenance={k: str(r[k]) for k in ("paper", "table", "row", "protocol_note",
                                          "source_file", "protocol") if k in r and str(r[k])})  # fmt: skip
            sources.append((str(r["paper"]), str(r["table"]), label))
    return cells, sources


def _decimals(values: Iterable[float], metric_mode: bool) -> int:
    if not metric_mode:
        return 1
    top = max((abs(v) for v in values), default=0.0)
    return 1 if top >= 10 else 2 if top >= 1 else 3


def human(value: float, unit: str) -> str:
    """Human units: bytes (B/KB/MB/GB, powers of 1024), seconds (s/min/h), MB of memory, counts."""
    if unit == "bytes":
        for scale, name in ((2**30, "GB"), (2**20, "MB"), (2**10, "KB")):
            if abs(value) >= scale:
                return f"{value / scale:.2f} {name}"
        return f"{value:.0f} B"
    if unit == "seconds":
        if abs(value) >= 3600:
            return f"{value / 3600:.2f} h"
        if abs(value) >= 60:
            return f"{value / 60:.1f} min"
        return f"{value:.1f} s"
    if unit == "mb":
        return f"{value / 1024:.2f} GB" if abs(value) >= 1024 else f"{value:.0f} MB"
    return f"{value:,.0f}"


def _fmt(cell: Cell, decimals: int, pm: str, unit: str | None = None) -> str:
    if cell.text is not None:
        return cell.text.replace("±", pm)
    if cell.mean is None:
        return ERROR if cell.error else MISSING
    if unit is not None:
        return human(cell.mean, unit) + (f"{pm}{human(cell.std, unit)}" if cell.std is not None else "")
    text = f"{cell.mean:.{decimals}f}"
    return text + (f"{pm}{cell.std:.{decimals}f}" if cell.std is not None else "")


# -- the table ------------------------------------------------------------------------------------------------------
@dataclass
class Grid:
    """The laid-out table before writing: rows (method, ipc), columns, cells, decimals, footnotes, caption."""

    rows: list[tuple[str, int]]
    columns: list[Column]
    cells: dict[tuple[tuple[str, int], Column], Cell]
    decimals: dict[Column, int]
    footnotes: list[str]
    sources: str
    caption: str
    paper: bool
    formats: dict[str, Any] = field(default_factory=dict)

    @property
    def grouped(self) -> bool:
        """Several protocol (or teacher) groups side by side: column labels name their group."""
        return len({c.group for c in self.columns}) > 1


def _unique(df: pd.DataFrame, column: str) -> list[Any]:
    if column not in df.columns:
        return []
    return [
        v for v in dict.fromkeys(df[column].tolist()) if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]


def _protocol_base(key: str) -> str:
    return str(key).split("@")[0]


def _groups_of(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    """Tag each evaluation row with its column group: its protocol, split by online teacher when they differ.

    A table never pools rows made with different soft-label teachers: within one protocol, each teacher set gets its
    own column group (``kd@cpu [T1]``) and a note saying which teacher ``T1`` is.
    """
    import pandas as pd

    if "protocol" not in df.columns or not len(df):
        return df.assign(_group=""), {}, []
    teachers = df["eval_teachers"] if "eval_teachers" in df.columns else pd.Series([None] * len(df), index=df.index)
    teachers = teachers.where(teachers.notna(), "")
    labels, notes, tags = [], {}, {}
    for proto, t in zip(df["protocol"], teachers):
        variants = sorted(set(teachers[df["protocol"] == proto]))
        if len(variants) <= 1:
            labels.append(str(proto))
            continue
        tag = tags.setdefault(t, f"T{len(tags) + 1}")
        label = f"{proto} [{tag}]"
        notes[label] = f"{label}: soft labels from {t or 'no teacher (hard labels)'}"
        labels.append(label)
    protocols = list(dict.fromkeys(str(p) for p in df["protocol"]))
    return df.assign(_group=labels), notes, protocols


def _caption(df: pd.DataFrame, metric: str, metric_mode: bool, counts: list[int], user: str, paper: bool) -> str:
    parts = [user.strip().rstrip(".") + "."] if user.strip() else []
    datasets = ", ".join(map(str, _unique(df, "dataset"))) or "?"
    if metric in SCORE_METRICS:
        what, unit = METRIC_TITLES[metric], "evaluation seeds"
    elif metric_mode:
        what, unit = METRIC_TITLES.get(metric, "Run metrics"), "distillation runs"
    else:
        what, unit = METRIC_TITLES.get(metric, metric), "evaluation seeds"
    lo, hi = (min(counts), max(counts)) if counts else (0, 0)
    if hi <= 1:
        seeds = f"a single {unit[:-1]} per cell (no std)"
    elif lo == hi:
        seeds = f"mean±std over {hi} {unit}"
    else:
        seeds = f"mean±std over {lo}–{hi} {unit} per cell"
        if lo == 1:
            seeds += f"; cells without ± come from a single {unit[:-1]}"
    parts.append(f"{what} on {datasets}, {seeds}.")
    if not metric_mode:
        if "protocol" in df.columns:
            pairs = df[["protocol", "protocol_version"]].drop_duplicates() if "protocol_version" in df else None
            if pairs is not None:
                protos = ", ".join(f"{p} v{int(v)}" for p, v in pairs.itertuples(index=False, name=None))
            else:
                protos = ", ".join(map(str, _unique(df, "protocol")))
            if protos:
                parts.append(f"Protocol{'s' if ',' in protos else ''} {protos}.")
        online = _unique(df, "eval_teachers")
        teachers = _unique(df, "teacher_id")
        if online:
            parts.append(f"Soft labels from teacher {', '.join(map(str, online))}.")
        if teachers:
            parts.append(f"Distilled with teacher {', '.join(map(str, teachers))}.")
        elif not online:
            parts.append("Teacher: none.")
    devices = _unique(df, "run_device") or _unique(df, "device")
    if devices:
        parts.append(f"Device {', '.join(map(str, devices))}.")
    if paper:
        parts.append("(paper) columns: published numbers as printed, not reproduced.")
    return " ".join(parts)


def _paper_for(
    paper_df: pd.DataFrame,
    groups: dict[str, str],
    ours: dict,
    methods: Sequence[str] | None,
    ipcs: Sequence[int] | None,
    archs: Sequence[str] | None,
    distill_arch: str | None,
) -> tuple[dict, list[tuple[str, str, str]], set]:
    """Published cells placed beside our cells of the protocol they were measured under.

    ``groups`` maps each of our column groups to its protocol key; a published row with protocol ``dwa-cifar`` sits in
    every group whose protocol is ``dwa-cifar`` or a scaled profile of it (``dwa-cifar@cpu``, noted in the caption).
    Published rows of a protocol we have no numbers for, or without a protocol, are not shown beside ours.
    """
    p = paper_df
    if methods is not None:
        p = p[p["method"].isin(list(methods))]
    elif ours:
        p = p[p["method"].isin({k[0] for k in ours})]  # by default, only methods we have numbers for
    if ipcs is not None:
        p = p[p["ipc"].isin([int(i) for i in ipcs])]
    if archs is not None:
        p = p[p["eval_arch"].isin(list(archs))]
    import pandas as pd

    protocol_col = p["protocol"] if "protocol" in p.columns else pd.Series([""] * len(p), index=p.index)
    cells: dict[tuple[str, int, str, str], Cell] = {}
    sources: list[tuple[str, str, str]] = []
    scaled: set[str] = set()
    for group, proto in groups.items():
        part = p[(protocol_col == _protocol_base(proto)) & (protocol_col != "")]
        if ours:  # paper numbers sit beside ours; they do not add columns of their own
            have = {(k[1], k[2]) for k in ours if k[3] == group}
            part = part[[(int(i), a) in have for i, a in zip(part["ipc"], part["eval_arch"])]]
        if not len(part):
            continue
        found, src = _paper_cells(part, distill_arch)
        for (label, ipc, arch), cell in found.items():
            cells[(label, ipc, arch, group)] = cell
        sources += [s for s in src if s not in sources]
        if proto != _protocol_base(proto):
            scaled.add(f"{proto} is the {proto.split('@', 1)[1]} profile of {_protocol_base(proto)}")
    return cells, sources, scaled


def layout(
    df: pd.DataFrame,
    *,
    metric: str = "top1",
    archs: Sequence[str] | None = None,
    ipcs: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    caption: str = "",
    paper_df: pd.DataFrame | None = None,
    distill_arch: str | None = None,
) -> Grid:
    """Aggregate and lay out the table (every writer renders the same :class:`Grid`). See :func:`build_table`."""
    import pandas as pd

    metric_mode = metric not in ACCURACY_METRICS
    value, sub = ("value", "name") if metric_mode else (metric, "arch")
    named = metric in METRIC_SETS or metric in SCORE_METRICS or metric == "diversity"
    if metric_mode and not named and "name" in df.columns:
        df = df[df["name"] == metric]
    if methods is not None:
        df = df[df["method"].isin(list(methods))]
    if ipcs is not None:
        df = df[df["ipc"].isin([int(i) for i in ipcs])]
    if archs is not None and not metric_mode:
        df = df[df["arch"].isin(list(archs))]
    group_notes: dict[str, str] = {}
    if metric_mode:
        df = df.assign(_group="")
        group_proto: dict[str, str] = {}
    else:
        df, group_notes, _ = _groups_of(df)
        group_proto = dict(zip(df["_group"], df["protocol"])) if "protocol" in df.columns else {}
    ours = _aggregate(df, value, sub) if len(df) else {}

    paper_cells: dict[tuple[str, int, str, str], Cell] = {}
    sources: list[tuple[str, str, str]] = []
    scaled: set[str] = set()
    if paper_df is not None and len(paper_df) and not metric_mode:
        groups = group_proto or {str(p): str(p) for p in _unique(paper_df, "protocol") if p}
        paper_cells, sources, scaled = _paper_for(paper_df, groups, ours, methods, ipcs, archs, distill_arch)

    keys = set(ours) | set(paper_cells)
    subs_present = {k[2] for k in keys}
    subs = [a for a in archs if a in subs_present] if archs is not None and not metric_mode else []
    subs += sorted(subs_present - set(subs), key=_natural_key)
    if metric_mode and metric in METRIC_SETS:
        subs = [m for m in METRIC_SETS[metric] if m in subs_present] + [s for s in subs if s not in METRIC_SETS[metric]]
    group_order = list(dict.fromkeys([k[3] for k in ours] + [k[3] for k in paper_cells]))
    columns: list[Column] = []
    for group in group_order:
        for s in subs:
            if any(k[2:] == (s, group) for k in ours):
                columns.append(Column(group, s, "ours"))
            if any(k[2:] == (s, group) for k in paper_cells):
                columns.append(Column(group, s, "paper"))
    row_ipcs = sorted({k[1] for k in keys})
    if ipcs is not None:
        row_ipcs = [int(i) for i in ipcs if int(i) in row_ipcs]
    labels = method_order({k[0] for k in keys})
    rows = [(m, i) for m in labels for i in row_ipcs if any(k[0] == m and k[1] == i for k in keys)]

    cells: dict[tuple[tuple[str, int], Column], Cell] = {}
    for row in rows:
        for col in columns:
            source = ours if col.source == "ours" else paper_cells
            cells[(row, col)] = source.get((row[0], row[1], col.sub, col.group), Cell())
    decimals = {
        col: _decimals((c.mean for (r, cc), c in cells.items() if cc == col and c.mean is not None), metric_mode)
        for col in columns
    }
    for col in columns:  # bold the best of each column among methods at the same ipc, compared as printed
        higher = not (metric_mode and METRIC_LOWER_IS_BETTER.get(col.sub, METRIC_LOWER_IS_BETTER.get(metric, False)))
        for ipc in row_ipcs:
            shown = {r: round(cells[(r, col)].mean, decimals[col]) for r in rows if r[1] == ipc
                     and cells[(r, col)].mean is not None}  # fmt: skip
            if len(set(shown.values())) >= 2:  # every row tied (or only one value): it ranks nothing
                best = max(shown.values()) if higher else min(shown.values())
                for r, v in shown.items():
                    cells[(r, col)].bold = v == best
    footnotes: list[str] = []
    for row in rows:
        for col in columns:
            cell = cells[(row, col)]
            if cell.error:
                if cell.error not in footnotes:
                    footnotes.append(cell.error)
                cell.note = footnotes.index(cell.error) + 1
    by_paper: dict[str, dict[str, list[str]]] = {}
    for paper, table, label in sources:
        methods_of = by_paper.setdefault(paper, {}).setdefault(table, [])
        if label not in methods_of:
            methods_of.append(label)
    cited = []
    for paper, tables in by_paper.items():
        ordered = sorted(tables.items(), key=lambda item: _natural_key(item[0]))
        cited.append(f"{paper}: " + ", ".join(f"{table} ({', '.join(labels)})" for table, labels in ordered))
    source_text = "; ".join(cited)
    counts = [c.n for (_, col), c in cells.items() if col.source == "ours" and c.mean is not None]
    frame = df if len(df) else pd.DataFrame({"dataset": _unique(paper_df, "dataset") if paper_df is not None else []})
    text = _caption(frame, metric, metric_mode, counts, caption, bool(paper_cells))
    extra = [group_notes[g] for g in group_order if g in group_notes] + sorted(scaled)
    if extra:
        text += " " + "; ".join(extra) + "."
    return Grid(rows, columns, cells, decimals, footnotes, source_text, text, bool(paper_cells),
                {"metric_mode": metric_mode, "metric": metric})  # fmt: skip


def build_table(
    df: pd.DataFrame,
    *,
    metric: str = "top1",
    archs: Sequence[str] | None = None,
    ipcs: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    fmt: str = "md",
    caption: str = "",
    paper_df: pd.DataFrame | None = None,
    distill_arch: str | None = None,
) -> str:
    """A paper-style table of ``df`` as Markdown, LaTeX or CSV text.

    Rows are (method, ipc), ``random`` first; columns are student architectures, grouped by protocol (and split by
    online soft-label teacher when those differ within a protocol) when ``df`` holds several.

    Args:
        df: tidy evaluation rows (``method, ipc, arch, eval_seed, top1, ..., error, protocol, protocol_version,
            teacher_id, eval_teachers, dataset``), or metric rows (``method, ipc, name, value``) for run metrics.
        metric: ``top1``/``top5``/``best_top1``; ``diversity`` tabulates every metric name in ``df``; ``storage`` and
            ``cost`` the rows of :func:`storage_frame` / :func:`cost_frame` in human units (smaller is bold); any
            other value selects one metric name.
        archs: student architectures, in column order (default: all, natural order).
        ipcs: ipc values, in row order (default: all, ascending).
        methods: rows to keep (default: all; published rows only for methods that have reproduced numbers).
        fmt: ``md``, ``latex``, ``csv``, ``json`` (one record per cell with its provenance) or ``html`` (a
            ``<table>`` element, for ``ddbench report``).
        caption: a title sentence put before the generated caption.
        paper_df: published numbers (:func:`load_paper_numbers`), shown in ``(paper)`` columns beside our columns
            of the protocol each was measured under.
        distill_arch: the distillation architecture of our runs, to pick which published row sits beside them.
    """
    if fmt not in FORMATS:
        from ddbench.config import ConfigError

        raise ConfigError(f"unknown table format {fmt!r}; use md, latex, csv, json or html")
    grid = layout(
        df,
        metric=metric,
        archs=archs,
        ipcs=ipcs,
        methods=methods,
        caption=caption,
        paper_df=paper_df,
        distill_arch=distill_arch,
    )
    writers = {"md": to_markdown, "latex": to_latex, "csv": to_csv, "json": to_json, "html": to_html}
    return writers[FORMATS[fmt]](grid)


# -- writers --------------------------------------------------------------------------------------------------------
def _col_label(col: Column, grid: Grid) -> str:
    label = col.sub
    if grid.grouped:
        label = f"{label} · {col.group}"
    return f"{label} ({col.source})" if grid.paper else label


def _cell_text(grid: Grid, row: tuple[str, int], col: Column, pm: str) -> str:
    unit = METRIC_UNITS.get(col.sub) if grid.formats.get("metric_mode") else None
    return _fmt(grid.cells[(row, col)], grid.decimals[col], pm, unit)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(grid: Grid) -> str:
    """GitHub-flavoured Markdown: caption, one header row (Method, IPC, one column per student and group), notes."""
    lines = [f"Table: {grid.caption}", ""]
    lines.append("| " + " | ".join(["Method", "IPC"] + [_md_escape(_col_label(c, grid)) for c in grid.columns]) + " |")
    lines.append("|" + "|".join([":--", ":-:"] + [":-:"] * len(grid.columns)) + "|")
    for row in grid.rows:
        out = [_md_escape(row[0]), str(row[1])]
        for col in grid.columns:
            cell = grid.cells[(row, col)]
            text = _cell_text(grid, row, col, "±")
            if cell.bold:
                text = f"**{text}**"
            if cell.note:
                text += f"[^{cell.note}]"
            out.append(text)
        lines.append("| " + " | ".join(out) + " |")
    if grid.footnotes or grid.sources:
        lines.append("")
    for i, note in enumerate(grid.footnotes, 1):
        lines.append(f"[^{i}]: {_md_escape(note)}")
    if grid.sources:
        if grid.footnotes:
            lines.append("")  # else Markdown reads the line as a continuation of the last footnote
        lines.append(f"Published numbers: {_md_escape(grid.sources)}.")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "—": "---",
    "–": "--",
    "…": r"\ldots{}",
    "·": r"$\cdot$",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _col_groups(grid: Grid) -> list[tuple[str, int]]:
    """(group, number of columns) for each protocol group, in order."""
    out: list[tuple[str, int]] = []
    for col in grid.columns:
        if out and out[-1][0] == col.group:
            out[-1] = (col.group, out[-1][1] + 1)
        else:
            out.append((col.group, 1))
    return out


def to_latex(grid: Grid) -> str:
    """A booktabs ``table``: Method and IPC columns, a ``\\multicolumn`` header per protocol group when there are
    several, ``\\cmidrule`` rules and a notes block."""
    groups = _col_groups(grid)
    spec = "lc" + "".join(" " + "c" * span for _, span in groups)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(grid.caption)}}}"]
    lines.append(rf"\begin{{tabular}}{{{spec}}}")
    lines.append(r"\toprule")
    if grid.grouped:
        top, rules, start = ["", ""], [], 3
        for group, span in groups:
            top.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(group)}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
            start += span
        lines.append(" & ".join(top) + r" \\")
        lines.append(" ".join(rules))
    subs = [latex_escape(f"{c.sub} ({c.source})" if grid.paper else c.sub) for c in grid.columns]
    lines.append(" & ".join(["Method", "IPC", *subs]) + r" \\")
    lines.append(r"\midrule")
    for row in grid.rows:
        out = [latex_escape(row[0]), str(row[1])]
        for col in grid.columns:
            cell = grid.cells[(row, col)]
            text = latex_escape(_cell_text(grid, row, col, "±"))
            if cell.bold:
                text = rf"\textbf{{{text}}}"
            if cell.note:
                text += rf"\textsuperscript{{{cell.note}}}"
            out.append(text)
        lines.append(" & ".join(out) + r" \\")
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    notes = [rf"\textsuperscript{{{i}}}{latex_escape(note)}" for i, note in enumerate(grid.footnotes, 1)]
    if grid.sources:
        notes.append(f"Published numbers: {latex_escape(grid.sources)}.")
    if notes:
        lines.append(r"\par\smallskip")
        lines.append(r"{\footnotesize " + r" \\ ".join(notes) + r"\par}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["method", "ipc", "group", "column", "source", "mean", "std", "n", "display", "best", "error"]


def _cell_records(grid: Grid) -> list[dict[str, Any]]:
    """One dict per (row, column) in table order, the fields of :data:`CSV_COLUMNS`."""
    records = []
    for row in grid.rows:
        for col in grid.columns:
            cell = grid.cells[(row, col)]
            records.append(
                {
                    "method": row[0],
                    "ipc": row[1],
                    "group": col.group,
                    "column": col.sub,
                    "source": col.source,
                    "mean": cell.mean,
                    "std": cell.std,
                    "n": cell.n if col.source == "ours" else None,
                    "display": _cell_text(grid, row, col, "±"),
                    "best": cell.bold,
                    "error": cell.error,
                }
            )
    return records


def to_csv(grid: Grid) -> str:
    """The aggregated cells in long form (one line per row × column), in table order."""
    import pandas as pd

    frame = pd.DataFrame.from_records(_cell_records(grid), columns=CSV_COLUMNS)
    return frame.to_csv(index=False, lineterminator="\n")


def to_html(grid: Grid) -> str:
    """One ``<table>``: caption, a header row per protocol group when there are several, cells (best in
    ``<strong>``, footnote marks in ``<sup>``) and the notes in a ``<tfoot>``."""
    from html import escape

    ncols = 2 + len(grid.columns)
    lines = ['<table class="ddbench">', f"<caption>{escape(grid.caption)}</caption>", "<thead>"]
    if grid.grouped:
        groups = "".join(f'<th colspan="{span}">{escape(g)}</th>' for g, span in _col_groups(grid))
        lines.append(f'<tr><th colspan="2"></th>{groups}</tr>')
    subs = "".join(f"<th>{escape(f'{c.sub} ({c.source})' if grid.paper else c.sub)}</th>" for c in grid.columns)
    lines += [f"<tr><th>Method</th><th>IPC</th>{subs}</tr>", "</thead>", "<tbody>"]
    for row in grid.rows:
        out = [f"<th>{escape(row[0])}</th>", f"<td>{row[1]}</td>"]
        for col in grid.columns:
            cell = grid.cells[(row, col)]
            text = escape(_cell_text(grid, row, col, "±"))
            if cell.bold:
                text = f"<strong>{text}</strong>"
            if cell.note:
                text += f"<sup>{cell.note}</sup>"
            out.append(f'<td class="{col.source}">{text}</td>')
        lines.append("<tr>" + "".join(out) + "</tr>")
    lines.append("</tbody>")
    notes = [f"<sup>{i}</sup> {escape(n)}" for i, n in enumerate(grid.footnotes, 1)]
    if grid.sources:
        notes.append(f"Published numbers: {escape(grid.sources)}.")
    if notes:
        lines.append(f'<tfoot><tr><td colspan="{ncols}">' + "<br>".join(notes) + "</td></tr></tfoot>")
    lines.append("</table>")
    return "\n".join(lines) + "\n"


def to_json(grid: Grid) -> str:
    """The table as JSON for leaderboards: caption, notes, and one record per cell with its provenance.

    A reproduced cell lists the distinct runs, seeds, protocol (version, hash), teachers and code versions of the
    rows it aggregates; a published cell names its paper, table, row and CSV file.
    """
    import json

    cells = []
    for record, (row, col) in zip(_cell_records(grid), ((r, c) for r in grid.rows for c in grid.columns)):
        cells.append({**record, "provenance": grid.cells[(row, col)].provenance})
    doc = {"caption": grid.caption, "footnotes": grid.footnotes, "published_sources": grid.sources, "cells": cells}
    return json.dumps(doc, indent=1, default=str, allow_nan=False, ensure_ascii=False) + "\n"


# -- storage and cost ---------------------------------------------------------------------------------------------
def _extra(text: Any) -> dict[str, Any]:
    import json

    try:
        return json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {}


METRIC_ROW = ["method", "ipc", "dataset", "name", "value", "distill_seed", "run_device"]


def _metric_row(run: dict[str, Any], name: str, value: float) -> dict[str, Any]:
    return {"method": run["method"], "ipc": run["ipc"], "dataset": run["dataset"], "name": name, "value": value,
            "distill_seed": run.get("distill_seed"), "run_device": run.get("device")}  # fmt: skip


def storage_frame(runs: pd.DataFrame, evaluations: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Metric rows (method, ipc, name, value) for ``--metric storage``, one set per run.

    ``images_bytes``/``soft_labels_bytes`` are the artifact's tensors (recorded by the pipeline as run metrics),
    ``total_bytes`` their sum, and ``teacher_forwards_per_epoch`` the online-teacher forward passes one student epoch
    costs (the largest over the run's online-teacher protocols; 0 for hard or stored labels), which is the budget
    DD-Ranking users ask to see beside the bytes.
    """
    import pandas as pd

    rows = []
    for run in runs.to_dict("records"):
        m = metrics[metrics["run_id"] == run["run_id"]] if len(metrics) else metrics
        values = dict(zip(m["name"], m["value"])) if len(m) else {}
        if "storage_images_bytes" not in values:
            continue
        images, soft = float(values["storage_images_bytes"]), float(values.get("storage_soft_labels_bytes", 0.0))
        ev = evaluations[evaluations["run_id"] == run["run_id"]] if len(evaluations) else evaluations
        forwards = [float(_extra(x).get("teacher_forwards_per_epoch", 0)) for x in ev.get("extra_json", [])]
        for name, value in (("images_bytes", images), ("soft_labels_bytes", soft), ("total_bytes", images + soft),
                            ("teacher_forwards_per_epoch", max(forwards, default=0.0))):  # fmt: skip
            rows.append(_metric_row(run, name, value))
    return pd.DataFrame(rows, columns=METRIC_ROW)


def cost_frame(runs: pd.DataFrame, evaluations: pd.DataFrame) -> pd.DataFrame:
    """Metric rows for ``--metric cost``: distillation wall time and peak memory (per run), and evaluation wall time
    per student (each lockstep group's wall time divided by the students trained in it), averaged over the run's rows.
    """
    import pandas as pd

    rows = []
    for run in runs.to_dict("records"):
        ev = evaluations[evaluations["run_id"] == run["run_id"]] if len(evaluations) else evaluations
        per = [float(w) / max(1, int(_extra(x).get("lockstep", 1))) for w, x in zip(ev.get("wall_time_s", []),
               ev.get("extra_json", [])) if w is not None and not math.isnan(float(w))]  # fmt: skip
        values = {"distill_time_s": run.get("wall_time_s"), "distill_peak_mem_mb": run.get("peak_mem_mb"),
                  "eval_time_per_student_s": sum(per) / len(per) if per else None}  # fmt: skip
        for name, value in values.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            rows.append(_metric_row(run, name, float(value)))
    return pd.DataFrame(rows, columns=METRIC_ROW)


def scores_frame(metrics: pd.DataFrame, score: str) -> pd.DataFrame:
    """Metric rows for ``--metric hlr|ior|lrs|ars``: one row per evaluation seed of each stored score, named
    ``<arch> · <recipe>``, so a cell is the mean ± std over seeds (and over distillation seeds when there are several).
    """
    import pandas as pd

    from ddbench.scores import parse_metric_name

    rows = []
    for m in metrics.to_dict("records"):
        parsed = parse_metric_name(m["name"])
        if parsed is None or parsed[0] != score:
            continue
        per_seed = _extra(m.get("extra_json")).get("per_seed") or {"0": m["value"]}
        for value in per_seed.values():
            rows.append({**_metric_row(m, f"{parsed[1]} · {parsed[2]}", float(value)), "run_id": m["run_id"]})
    return pd.DataFrame(rows, columns=[*METRIC_ROW, "run_id"])
