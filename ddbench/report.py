"""``ddbench report --out DIR``: one static HTML page per dataset, built from the results store and the artifacts.

Each page holds, in order: the cross-architecture accuracy table (every protocol side by side, published numbers
beside their own protocol's columns: the same :class:`~ddbench.tables.Grid` as ``ddbench table --with-paper``),
the paper-vs-ours verdicts of ``ddbench verify``, the DD-Ranking-style scores that ``ddbench score`` stored, the
storage and cost tables, plots (accuracy vs IPC per method, a students × methods heatmap per protocol and IPC,
made with matplotlib, the optional ``ddbench[report]`` extra) and the image grid of every distilled set
(``ddbench show``'s grid). ``index.html`` links the pages. Everything is a file beside the page (PNG), so the
folder can be served or opened from disk, with no network and no JavaScript library; one inline script only
flags an image that failed to load.

The report is a presentation layer, like the CLI: it reuses the table command's selection of rows
(:func:`ddbench.cli.table_cmd.tables_for`) and the grid of :mod:`ddbench.cli.show_cmd`.
"""

from __future__ import annotations

import argparse
import logging
import math
from html import escape
from pathlib import Path
from typing import Any

from ddbench.config import ConfigError
from ddbench.errors import UserError
from ddbench.io import atomic_file

logger = logging.getLogger(__name__)

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
table.ddbench { border-collapse: collapse; margin: 1em 0 2em; font-size: 0.9em; }
table.ddbench th, table.ddbench td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: center; }
table.ddbench td.paper { color: #666; font-style: italic; }
table.ddbench caption { caption-side: top; text-align: left; font-size: 0.85em; color: #444; padding: 0.4em 0; }
table.ddbench tfoot td { text-align: left; font-size: 0.8em; color: #555; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }
figcaption { font-size: 0.8em; color: #555; max-width: 40em; }
img.grid { image-rendering: pixelated; border: 1px solid #ddd; }
.warning { background: #fee; border: 1px solid #c00; padding: 0.5em; }
"""
#: Flags (visibly, and in ``data-images-loaded`` on <body>) any image that did not decode.
SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.dataset.imagesLoaded = ok.length + "/" + imgs.length;
  if (ok.length < imgs.length) {
    var p = document.createElement("p");
    p.className = "warning";
    p.textContent = (imgs.length - ok.length) + " image(s) failed to load";
    document.body.insertBefore(p, document.body.firstChild);
  }
});
"""
TABLE_METRICS = (("top1", "Top-1 accuracy, every protocol side by side"), ("hlr", "HLR"), ("ior", "IOR"),
                 ("lrs", "LRS"), ("ars", "ARS"), ("storage", "Storage"), ("cost", "Cost"))  # fmt: skip


def _table_args(store: Path, dataset: str, metric: str) -> argparse.Namespace:
    return argparse.Namespace(dataset=dataset, metric=metric, store=str(store), methods=None, archs=None, ipc=None,
                              protocol=None, with_paper=metric == "top1", fmt="html", out=None)  # fmt: skip


def _tables(store_path: Path, dataset: str) -> list[tuple[str, str]]:
    """(section title, HTML of its tables) for every metric the store has rows of."""
    from ddbench.cli.table_cmd import tables_for

    out = []
    for metric, title in TABLE_METRICS:
        try:
            parts = tables_for(_table_args(store_path, dataset, metric))
        except (UserError, ConfigError) as exc:  # no rows of this kind for the dataset
            logger.info("report %s: no %s table (%s)", dataset, metric, exc)
            continue
        out.append((title, "\n".join(html for _, html in parts)))
    return out


def _verify_html(store: Any, dataset: str) -> str:
    from ddbench.verify import compare_papers

    verdicts = compare_papers(store, dataset=dataset)
    if not verdicts:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("Target", "Protocol", "Paper", "Ours", "Diff", "Tolerance", "Status",
                                              "Why", "Source"))  # fmt: skip
    rows = []
    for v in verdicts:
        ours = "—" if v.ours is None else f"{v.ours:.1f}" + (f"±{v.ours_std:.1f}" if v.ours_std is not None else "")
        paper = f"{v.expected:.1f}" + (f"±{v.expected_std:.1f}" if v.expected_std is not None else "")
        diff = "—" if v.diff is None else f"{v.diff:+.1f}"
        cells = [v.name, v.protocol, paper, ours, diff, f"±{v.tol:.1f}", v.status, "; ".join(v.why), v.source]
        rows.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    caption = "Published numbers beside ours: pass when |ours − paper| ≤ 2σ + 1 points (ddbench verify)."
    return (f'<table class="ddbench"><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>\n")  # fmt: skip


def _plots(evaluations: Any, folder: Path, dataset: str) -> list[tuple[str, str]]:
    """(PNG file name, caption) of the accuracy-vs-IPC and students × methods plots; none without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install 'ddbench[report]'); the report has no plots")
        return []
    ok = evaluations[evaluations["error"].isna() & evaluations["top1"].notna()] if len(evaluations) else evaluations
    figures = []
    for protocol, rows in ok.groupby("protocol", sort=True) if len(ok) else []:
        rows = rows[rows["protocol_version"] == rows["protocol_version"].max()]
        safe = str(protocol).replace("/", "_").replace("@", "_at_").replace("~", "_")
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for method, m in rows.groupby("method", sort=True):
            per_ipc = m.groupby("ipc")["top1"]
            means, stds = per_ipc.mean(), per_ipc.std(ddof=0).fillna(0.0)
            ax.errorbar(means.index, means.values, yerr=stds.values, marker="o", capsize=3, label=str(method))
        ax.set_xlabel("images per class")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{dataset} · {protocol}")
        if rows["ipc"].nunique() > 1:
            ax.set_xscale("log")
        ax.legend(fontsize="small")
        name = f"acc-vs-ipc-{safe}.png"
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        figures.append((name, f"Top-1 vs IPC under {protocol}: mean ± std over students and seeds."))
        for ipc, at in rows.groupby("ipc", sort=True):
            table = at.pivot_table(index="method", columns="arch", values="top1", aggfunc="mean")
            fig, ax = plt.subplots(figsize=(1.2 + 0.9 * table.shape[1], 1.0 + 0.45 * table.shape[0]))
            im = ax.imshow(table.values, cmap="viridis", aspect="auto")
            ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], rotation=45, ha="right")
            ax.set_yticks(range(table.shape[0]), [str(i) for i in table.index])
            for (r, c), value in _cells(table.values):
                ax.text(c, r, f"{value:.1f}", ha="center", va="center", color="white", fontsize=8)
            fig.colorbar(im, ax=ax, label="top-1 (%)")
            ax.set_title(f"{protocol}, ipc {ipc}", fontsize=9)
            name = f"heatmap-{safe}-ipc{ipc}.png"
            fig.tight_layout()
            fig.savefig(folder / name, dpi=100)
            plt.close(fig)
            figures.append((name, f"Students × methods under {protocol} at ipc {ipc} (mean top-1 over seeds)."))
    return figures


def _cells(values: Any) -> list[tuple[tuple[int, int], float]]:
    return [((r, c), float(v)) for r, row in enumerate(values) for c, v in enumerate(row) if not math.isnan(float(v))]


def _grids(runs: Any, folder: Path) -> list[tuple[str, str]]:
    """(PNG name, caption) of each run's image grid (at most 10 classes × 10 images); unreadable artifacts skipped."""
    from ddbench.cli.show_cmd import image_grid
    from ddbench.distilled import CorruptArtifact, DistilledSet

    out = []
    for run in runs.to_dict("records"):
        path = Path(str(run.get("artifact_path") or ""))
        if not (path / "manifest.json").is_file():
            continue
        try:
            distilled = DistilledSet.load(path)
        except CorruptArtifact as exc:
            logger.warning("report: %s skipped (%s)", run["run_id"], exc)
            continue
        name = f"grid-{run['run_id']}.png"
        image_grid(distilled, max_classes=10, max_ipc=10).save(folder / name, format="PNG")
        out.append((name, f"{run['method']} ipc {run['ipc']} ({run['run_id']}): {len(distilled)} images, "
                          f"{distilled.pixel_space} pixels; first 10 classes × 10 images"))  # fmt: skip
    return out


def _figures(items: list[tuple[str, str]], sub: str, css: str = "") -> str:
    return "\n".join(f'<figure><img src="{escape(sub)}/{escape(n)}" alt="{escape(c)}"{css}>'
                     f"<figcaption>{escape(c)}</figcaption></figure>" for n, c in items)  # fmt: skip


def page(store_path: Path, dataset: str, out: Path) -> Path:
    """Write ``out/<dataset>.html`` and its images under ``out/<dataset>/``; returns the page's path."""
    from ddbench.store import Store

    store = Store(store_path, read_only=True)
    folder = out / dataset
    folder.mkdir(parents=True, exist_ok=True)
    sections = [(title, body) for title, body in _tables(store_path, dataset)]
    verify = _verify_html(store, dataset)
    if verify:
        sections.insert(1, ("Paper vs ours", verify))
    plots = _plots(store.evaluations(dataset=dataset), folder, dataset)
    if plots:
        sections.append(("Plots", _figures(plots, dataset)))
    grids = _grids(store.runs(dataset=dataset), folder)
    if grids:
        sections.append(("Distilled images", _figures(grids, dataset, ' class="grid"')))
    body = "\n".join(f"<section><h2>{escape(t)}</h2>\n{b}</section>" for t, b in sections)
    html = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>ddbench · {escape(dataset)}</title>'
            f'<link rel="icon" href="data:,"><style>{CSS}</style><script>{SCRIPT}</script></head>\n'
            f'<body><h1>ddbench report: {escape(dataset)}</h1>\n<p><a href="index.html">all datasets</a></p>\n{body}\n'
            "</body></html>\n")  # fmt: skip
    path = out / f"{dataset}.html"
    with atomic_file(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path


def write_report(store_path: str | Path, out: str | Path, datasets: list[str] | None = None) -> list[Path]:
    """Every dataset's page (or the ``datasets`` given) plus ``index.html``; returns the pages written."""
    from ddbench.store import Store

    store_path, out = Path(store_path), Path(out).expanduser()
    store = Store(store_path, read_only=True)
    runs = store.runs()
    known = sorted(set(runs["dataset"])) if len(runs) else []
    chosen = datasets or known
    missing = [d for d in chosen if d not in known]
    if missing:
        raise UserError(f"no runs of {', '.join(missing)} in {store_path}; found: {', '.join(known) or 'none'}")
    if not chosen:
        raise UserError(f"no runs in {store_path}; run `ddbench run` first")
    out.mkdir(parents=True, exist_ok=True)
    pages = [page(store_path, d, out) for d in chosen]
    links = "".join(f'<li><a href="{escape(p.name)}">{escape(p.stem)}</a></li>' for p in pages)
    index = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>ddbench report</title>'
             f'<link rel="icon" href="data:,"><style>{CSS}</style></head><body><h1>ddbench report</h1><ul>{links}</ul>'
             "</body></html>\n")  # fmt: skip
    with atomic_file(out / "index.html") as tmp:
        tmp.write_text(index, encoding="utf-8")
    return pages


__all__ = ["page", "write_report"]
