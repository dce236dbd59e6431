"""``ddbench table``: paper-style tables from the results store, every protocol of a dataset side by side.

The field argues about protocols (the same images score 42.7 under RDED's recipe and 79.1 under EDC's), so a table
shows each method under every protocol it was evaluated with, in column groups, and a published number only beside
the columns of the protocol it was measured under. Rows of different online soft-label teachers are never pooled:
each teacher set gets its own column group. ``--metric storage`` and ``--metric cost`` show what a number cost.
"""

from __future__ import annotations

import argparse
import logging
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

EPILOG = """examples:
  ddbench table --dataset digits
  ddbench table --dataset cifar100 --protocol dwa-cifar --ipc 10,50 --archs resnet18,mobilenetv2 --with-paper
  ddbench table --dataset tiny-imagenet --format latex --out leaderboards/
  ddbench table --dataset cifar10 --metric diversity
  ddbench table --dataset cifar10 --metric storage      # bytes of images + soft labels, teacher passes per epoch
  ddbench table --dataset cifar10 --metric cost         # distil time, peak memory, evaluation time per student
  ddbench table --dataset digits --metric lrs            # DD-Ranking-style scores stored by `ddbench score`
  ddbench table --dataset digits --format json           # one record per cell with its provenance
"""
METRICS = ("top1", "top5", "best_top1", "diversity", "storage", "cost", "hlr", "ior", "lrs", "ars")


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "table",
        help="print (and write) comparison tables from the results store",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, help="dataset id")
    p.add_argument(
        "--protocol",
        default=None,
        help="comma-separated protocols (a prefix like kd also finds kd@cpu; default: every protocol, side by side)",
    )
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all)")
    p.add_argument("--ipc", default=None, help="comma-separated ipc values (default: all)")
    p.add_argument("--archs", default=None, help="comma-separated student architectures, in column order")
    p.add_argument(
        "--format", dest="fmt", default="md", choices=["md", "latex", "csv", "json", "html"], help="output format"
    )
    p.add_argument("--out", default=None, help="also write <out>/<dataset>-<protocol>.<ext>")
    p.add_argument("--with-paper", action="store_true", help="add published numbers (leaderboards/papers/*.csv)")
    p.add_argument("--metric", default="top1", help=" | ".join(METRICS) + " (default top1)")
    p.add_argument("--store", default=None, help="results database (default $DDBENCH_HOME/results.sqlite)")
    p.set_defaults(func=execute)


def _distill_arch(store: Any, df: pd.DataFrame, default: str) -> str:
    """The architecture of the teachers our runs were distilled with (to pick the matching published rows)."""
    ids = [t for t in df.get("teacher_id", []) if isinstance(t, str)]
    if not ids:
        return default
    teachers = store.teachers(teacher_id=sorted(set(ids)))
    arch_of = dict(zip(teachers["teacher_id"], teachers["arch"]))
    for t in ids:  # teachers not in the store: the id is "<arch>-<16-hex class hash>-..."
        if t not in arch_of and (match := re.match(r"(.+?)-[0-9a-f]{16}-", t)):
            arch_of[t] = match.group(1)
    archs = [arch_of[t] for t in ids if t in arch_of]
    return max(sorted(set(archs)), key=archs.count) if archs else default


def tables_for(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(file stem, table text) for every table the arguments ask for."""
    from ddbench.data import DATASETS
    from ddbench.errors import UserError
    from ddbench.store import Store
    from ddbench.tables import SCORE_METRICS, build_table, cost_frame, load_paper_numbers, scores_frame, storage_frame

    if args.metric not in METRICS:
        raise UserError(f"--metric {args.metric!r} is not one of {', '.join(METRICS)}")
    dataset = DATASETS.canonical(args.dataset)
    store = Store(args.store, read_only=True)  # reading takes no lock and works on a read-only home
    if not store.path.is_file():
        raise UserError(f"no results store at {store.path}; run `ddbench run` first or pass --store")
    methods, archs = _csv(args.methods), _csv(args.archs)
    try:
        ipcs = [int(i) for i in _csv(args.ipc) or []] or None
    except ValueError:
        raise UserError(f"--ipc takes comma-separated integers, got {args.ipc!r}") from None
    if args.metric in SCORE_METRICS:
        df = scores_frame(store.metrics(dataset=dataset, method=methods, ipc=ipcs), args.metric)
        if df.empty:
            raise UserError(f"no {args.metric} scores for {dataset} in {store.path}; run `ddbench score` first")
        return [(f"{dataset}-{args.metric}", build_table(df, metric=args.metric, fmt=args.fmt))]
    if args.metric in ("diversity", "storage", "cost"):
        runs = store.runs(dataset=dataset, method=methods)
        runs = runs[runs["ipc"].isin(ipcs)] if ipcs else runs
        if args.metric == "diversity":
            df = store.metrics(dataset=dataset, method=methods, ipc=ipcs)
            df = df[~df["name"].str.startswith(("storage_", "score:"))] if len(df) else df
        elif args.metric == "storage":
            df = storage_frame(runs, store.evaluations(dataset=dataset), store.metrics(dataset=dataset))
        else:
            df = cost_frame(runs, store.evaluations(dataset=dataset))
        if df.empty:
            raise UserError(f"no {args.metric} records for {dataset} in {store.path} (filters: {_filters(args)})")
        return [(f"{dataset}-{args.metric}", build_table(df, metric=args.metric, fmt=args.fmt))]

    df = store.evaluations(dataset=dataset, method=methods, ipc=ipcs, arch=archs)
    if df.empty:
        raise UserError(f"no evaluations of {dataset} in {store.path} (filters: {_filters(args)})")
    protocols = sorted(df["protocol"].unique())
    wanted = _csv(args.protocol)
    if wanted:
        chosen = []
        for name in wanted:
            hits = [p for p in protocols if p == name] or [p for p in protocols if p.split("@")[0] == name]
            if not hits:  # ``kd`` also finds ``kd@cpu``, the key scaled-down profiles are stored under
                raise UserError(f"no evaluations of {dataset} under protocol {name!r}; found: {', '.join(protocols)}")
            chosen += [h for h in hits if h not in chosen]
        protocols = chosen
    parts = []
    for protocol in protocols:
        rows = df[df["protocol"] == protocol]
        latest = rows["protocol_version"].max()
        if (rows["protocol_version"] != latest).any():
            logger.warning("%s: showing version %d only; older versions' rows are not comparable", protocol, latest)
            rows = rows[rows["protocol_version"] == latest]
        parts.append(rows)
    import pandas as pd

    df = pd.concat(parts, ignore_index=True)
    paper = load_paper_numbers(dataset) if args.with_paper else None
    default_arch = DATASETS.get(dataset).default_teacher
    out: list[tuple[str, str]] = []
    hashes = sorted(h for h in df["class_hash"].dropna().unique())
    for class_hash in hashes or [None]:
        part = df if class_hash is None else df[df["class_hash"] == class_hash]
        stem = (
            dataset + (f"-{'+'.join(protocols)}" if wanted else "") + (f"-{class_hash[:8]}" if len(hashes) > 1 else "")
        )
        text = build_table(
            part,
            metric=args.metric,
            archs=archs,
            ipcs=ipcs,
            methods=methods,
            fmt=args.fmt,
            paper_df=paper,
            distill_arch=_distill_arch(store, part, default_arch) if paper is not None else None,
        )
        out.append((stem.replace("/", "_"), text))
    return out


def _filters(args: argparse.Namespace) -> str:
    given = {k: getattr(args, k) for k in ("methods", "ipc", "archs", "protocol") if getattr(args, k, None)}
    return ", ".join(f"--{k} {v}" for k, v in given.items()) or "none"


def execute(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ddbench.cli import console
    from ddbench.io import atomic_file
    from ddbench.tables import EXTENSIONS, FORMATS

    ext = EXTENSIONS[FORMATS[args.fmt]]
    for stem, text in tables_for(args):
        console.print(text, markup=False, highlight=False, soft_wrap=True)
        if args.out:
            path = Path(args.out).expanduser() / f"{stem}.{ext}"
            with atomic_file(path) as tmp:
                tmp.write_text(text, encoding="utf-8")
            console.print(f"wrote {path}", style="dim")
    return 0
