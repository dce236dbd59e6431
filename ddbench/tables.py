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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

ACCURACY_METRICS = ("top1", "top5", "best_top1")
METRIC_TITLES = {"top1": "Top-1 accuracy (%)", "top5": "Top-5 accuracy (%)", "best_top1": "Best-epoch top-1 (%)"}
FORMATS = {"md": "md", "markdown": "md", "latex": "latex", "tex": "latex", "csv": "csv"}
EXTENSIONS = {"md": "md", "latex": "tex", "csv": "csv"}
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
    """``leaderboards/papers`` of the source checkout this package runs from."""
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


@dataclass(frozen=True)
class Column:
    ipc: int
    sub: str  # student arch, or metric name
    source: str  # "ours" or "paper"


def _short_error(text: str) -> str:
    line = next((s.strip() for s in str(text).strip().splitlines() if s.strip()), "error")
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"


def _has_error(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and str(value).strip() != ""


def _aggregate(df: pd.DataFrame, value: str, sub: str) -> dict[tuple[str, int, str], Cell]:
    """Mean ± population std over the successful rows of each (method, ipc, sub); errors kept as footnotes."""
    cells: dict[tuple[str, int, str], Cell] = {}
    errors = df["error"] if "error" in df.columns else [None] * len(df)
    ok = [not _has_error(e) for e in errors]
    work = df.assign(_ok=ok, _err=[_short_error(e) if _has_error(e) else None for e in errors])
    for (method, ipc, key), group in work.groupby(["method", "ipc", sub], sort=False):
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
        cells[(str(method), int(ipc), str(key))] = cell
    return cells


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
            cells[key] = Cell(mean=float(r["top1"]), n=1, text=f"{r['top1_text']}±{std}" if std else r["top1_text"])
            sources.append((str(r["paper"]), str(r["table"]), label))
    return cells, sources


def _decimals(values: Iterable[float], metric_mode: bool) -> int:
    if not metric_mode:
        return 1
    top = max((abs(v) for v in values), default=0.0)
    return 1 if top >= 10 else 2 if top >= 1 else 3


def _fmt(cell: Cell, decimals: int, pm: str) -> str:
    if cell.text is not None:
        return cell.text.replace("±", pm)
    if cell.mean is None:
        return ERROR if cell.error else MISSING
    text = f"{cell.mean:.{decimals}f}"
    return text + (f"{pm}{cell.std:.{decimals}f}" if cell.std is not None else "")


# -- the table ------------------------------------------------------------------------------------------------------
@dataclass
class Grid:
    """The laid-out table before writing: rows, columns, cells, decimals per column, footnotes, caption."""

    rows: list[str]
    columns: list[Column]
    cells: dict[tuple[str, Column], Cell]
    decimals: dict[Column, int]
    footnotes: list[str]
    sources: str
    caption: str
    paper: bool


def _unique(df: pd.DataFrame, column: str) -> list[Any]:
    if column not in df.columns:
        return []
    return [
        v for v in dict.fromkeys(df[column].tolist()) if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]


def _caption(df: pd.DataFrame, metric: str, metric_mode: bool, counts: list[int], user: str, paper: bool) -> str:
    parts = [user.strip().rstrip(".") + "."] if user.strip() else []
    datasets = ", ".join(map(str, _unique(df, "dataset"))) or "?"
    if metric_mode:
        what, unit = "Run metrics", "distillation runs"
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
                parts.append(f"Protocol {protos}.")
        online = _unique(df, "eval_teachers")
        teachers = _unique(df, "teacher_id")
        if online:
            parts.append(f"Soft labels from teacher {', '.join(map(str, online))}.")
        if teachers:
            parts.append(f"Distilled with teacher {', '.join(map(str, teachers))}.")
        elif not online:
            parts.append("Teacher: none.")
    if paper:
        parts.append("(paper) columns: published numbers as printed, not reproduced.")
    return " ".join(parts)


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
    if metric_mode and metric != "diversity" and "name" in df.columns:
        df = df[df["name"] == metric]
    if methods is not None:
        df = df[df["method"].isin(list(methods))]
    if ipcs is not None:
        df = df[df["ipc"].isin([int(i) for i in ipcs])]
    if archs is not None and not metric_mode:
        df = df[df["arch"].isin(list(archs))]
    if "protocol" in df.columns and df["protocol"].nunique() > 1:
        logger.warning(
            "one table mixes protocols %s; pass a protocol to compare like with like",
            ", ".join(map(str, df["protocol"].unique())),
        )
    ours = _aggregate(df, value, sub) if len(df) else {}

    paper_cells: dict[tuple[str, int, str], Cell] = {}
    sources: list[tuple[str, str, str]] = []
    if paper_df is not None and len(paper_df) and not metric_mode:
        p = paper_df
        if methods is not None:
            p = p[p["method"].isin(list(methods))]
        elif ours:
            p = p[p["method"].isin({k[0] for k in ours})]  # by default, only methods we have numbers for
        if ipcs is not None:
            p = p[p["ipc"].isin([int(i) for i in ipcs])]
        if archs is not None:
            p = p[p["eval_arch"].isin(list(archs))]
        if ours:  # paper numbers sit beside ours; they do not add columns of their own
            have = {(k[1], k[2]) for k in ours}
            p = p[[(int(i), a) in have for i, a in zip(p["ipc"], p["eval_arch"])]]
        paper_cells, sources = _paper_cells(p, distill_arch) if len(p) else ({}, [])

    col_ipcs = sorted({k[1] for k in ours} | {k[1] for k in paper_cells})
    if ipcs is not None:
        col_ipcs = [int(i) for i in ipcs if int(i) in col_ipcs]
    subs_present = {k[2] for k in ours} | {k[2] for k in paper_cells}
    subs = [a for a in archs if a in subs_present] if archs is not None and not metric_mode else []
    subs += sorted(subs_present - set(subs), key=_natural_key)
    columns: list[Column] = []
    for ipc in col_ipcs:
        for s in subs:
            if any(k[1:] == (ipc, s) for k in ours):
                columns.append(Column(ipc, s, "ours"))
            if any(k[1:] == (ipc, s) for k in paper_cells):
                columns.append(Column(ipc, s, "paper"))
    rows = method_order({k[0] for k in ours} | {k[0] for k in paper_cells})

    cells: dict[tuple[str, Column], Cell] = {}
    for row in rows:
        for col in columns:
            source = ours if col.source == "ours" else paper_cells
            cells[(row, col)] = source.get((row, col.ipc, col.sub), Cell())
    decimals = {
        col: _decimals((cells[(r, col)].mean for r in rows if cells[(r, col)].mean is not None), metric_mode)
        for col in columns
    }
    for col in columns:  # bold the best of each column, compared as printed (ties are all bold)
        shown = {r: round(cells[(r, col)].mean, decimals[col]) for r in rows if cells[(r, col)].mean is not None}
        if len(set(shown.values())) >= 2:  # a column where every row ties (or only one has a value) ranks nothing
            best = max(shown.values())
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
    return Grid(rows, columns, cells, decimals, footnotes, source_text, text, bool(paper_cells))


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

    Args:
        df: tidy evaluation rows (``method, ipc, arch, eval_seed, top1, ..., error, protocol, protocol_version,
            teacher_id, dataset``), or metric rows (``method, ipc, name, value``) for ``metric="diversity"``.
        metric: ``top1``/``top5``/``best_top1``; ``diversity`` tabulates every metric name in ``df`` (columns are
            ipc × metric name, seeds are distillation runs); any other value selects one metric name.
        archs: student architectures, in column order (default: all, natural order).
        ipcs: ipc values, in column order (default: all, ascending).
        methods: rows to keep (default: all; published rows only for methods that have reproduced numbers).
        fmt: ``md``, ``latex`` or ``csv``.
        caption: a title sentence put before the generated caption.
        paper_df: published numbers (:func:`load_paper_numbers`), shown in separate ``(paper)`` sub-columns.
        distill_arch: the distillation architecture of our runs, to pick which published row sits beside them.
    """
    if fmt not in FORMATS:
        from ddbench.config import ConfigError

        raise ConfigError(f"unknown table format {fmt!r}; use md, latex or csv")
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
    return {"md": to_markdown, "latex": to_latex, "csv": to_csv}[FORMATS[fmt]](grid)


# -- writers --------------------------------------------------------------------------------------------------------
def _sub_label(col: Column, grid: Grid) -> str:
    return f"{col.sub} ({col.source})" if grid.paper else col.sub


def _groups(grid: Grid) -> list[tuple[int, int]]:
    """(ipc, number of columns) for each ipc group, in order."""
    out: list[tuple[int, int]] = []
    for col in grid.columns:
        if out and out[-1][0] == col.ipc:
            out[-1] = (col.ipc, out[-1][1] + 1)
        else:
            out.append((col.ipc, 1))
    return out


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(grid: Grid) -> str:
    """GitHub-flavoured Markdown: caption, a two-row header (ipc, then arch), footnotes and sources."""
    header = ["Method"]
    for ipc, span in _groups(grid):
        header += [f"IPC {ipc}"] + [""] * (span - 1)
    lines = [f"Table: {grid.caption}", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":--"] + [":-:"] * len(grid.columns)) + "|")
    lines.append("| " + " | ".join([""] + [_md_escape(_sub_label(c, grid)) for c in grid.columns]) + " |")
    for row in grid.rows:
        out = [_md_escape(row)]
        for col in grid.columns:
            cell = grid.cells[(row, col)]
            text = _fmt(cell, grid.decimals[col], "±")
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
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(grid: Grid) -> str:
    """A booktabs ``table`` with a ``\\multicolumn`` ipc header, ``\\cmidrule`` rules and a notes block."""
    spec = "l" + "".join(" " + "c" * span for _, span in _groups(grid))
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(grid.caption)}}}"]
    lines.append(rf"\begin{{tabular}}{{{spec}}}")
    lines.append(r"\toprule")
    top, rules, start = [""], [], 2
    for ipc, span in _groups(grid):
        top.append(rf"\multicolumn{{{span}}}{{c}}{{IPC {ipc}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
        start += span
    lines.append(" & ".join(top) + r" \\")
    if rules:
        lines.append(" ".join(rules))
    lines.append(" & ".join(["Method"] + [latex_escape(_sub_label(c, grid)) for c in grid.columns]) + r" \\")
    lines.append(r"\midrule")
    for row in grid.rows:
        out = [latex_escape(row)]
        for col in grid.columns:
            cell = grid.cells[(row, col)]
            text = _fmt(cell, grid.decimals[col], r"$\pm$")
            text = "---" if text == MISSING else text
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


def to_csv(grid: Grid) -> str:
    """The aggregated cells in long form (one line per row × column), in table order."""
    import pandas as pd

    records = []
    for row in grid.rows:
        for col in grid.columns:
            cell = grid.cells[(row, col)]
            records.append(
                {
                    "method": row,
                    "ipc": col.ipc,
                    "column": col.sub,
                    "source": col.source,
                    "mean": cell.mean,
                    "std": cell.std,
                    "n": cell.n if col.source == "ours" else None,
                    "display": _fmt(cell, grid.decimals[col], "±"),
                    "best": cell.bold,
                    "error": cell.error,
                }
            )
    frame = pd.DataFrame.from_records(
        records, columns=["method", "ipc", "column", "source", "mean", "std", "n", "display", "best", "error"]
    )
    return frame.to_csv(index=False, lineterminator="\n")
