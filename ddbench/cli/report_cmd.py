"""``ddbench report --out DIR``: static HTML pages (tables, paper vs ours, scores, cost, plots, image grids)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write one static HTML page per dataset: tables, paper vs ours, scores, storage/cost, plots, images",
        epilog="examples: ddbench report --out site/ ; ddbench report --out site/ --dataset digits,cifar10 "
        "(plots need the report extra: pip install 'ddbench[report]')",
    )
    p.add_argument("--out", required=True, help="folder to write index.html, <dataset>.html and their images into")
    p.add_argument("--dataset", default=None, help="comma-separated datasets (default: every dataset in the store)")
    p.add_argument("--store", default=None, help="results database (default $DDBENCH_HOME/results.sqlite)")
    p.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    from ddbench.cli import console
    from ddbench.cli.args import csv
    from ddbench.data import DATASETS
    from ddbench.errors import UserError
    from ddbench.report import write_report
    from ddbench.store import Store

    store = Store(args.store, read_only=True)
    if not store.path.is_file():
        raise UserError(f"no results store at {store.path}; run `ddbench run` first or pass --store")
    datasets = [DATASETS.canonical(d) for d in csv(args.dataset) or []] or None
    for page in write_report(store.path, args.out, datasets):
        console.print(f"wrote {page}")
    return 0
