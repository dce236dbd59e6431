"""``ddbench verify``: paper vs ours for every stored run, or a target list that gates a release (exit 1 on a fail)."""

from __future__ import annotations

import argparse
from typing import Any

EPILOG = """examples:
  ddbench verify                          # every published row with a matching record: paper, ours, diff, why
  ddbench verify --dataset cifar10 --format json
  ddbench verify --targets cpu            # the shipped cheap CPU list (digits); exits 1 when a target fails
  ddbench verify --targets gpu --device cuda
  ddbench verify --targets my-targets.toml

A value passes when |ours − paper| ≤ 2σ + 1 points (σ as published, 0 when not printed). A fail lists what differs
from the published setting: preset, epochs, teacher width and accuracy, number of seeds.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="paper vs ours with tolerances and reasons; --targets runs a target list and fails on a miss",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--targets", default=None, help="targets TOML file, or a shipped list: cpu | gpu")
    p.add_argument("--dataset", default=None, help="only this dataset (report mode)")
    p.add_argument("--format", dest="fmt", default="md", choices=["md", "json"], help="output format")
    p.add_argument("--strict", action="store_true", help="report mode: exit 1 when a compared row fails too")
    p.add_argument("--store", default=None, help="results database (default $DDBENCH_HOME/results.sqlite)")
    p.add_argument("--device", default=None, help="device for --targets evaluations (default: cuda if available)")
    p.set_defaults(func=execute)


def _fmt(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" + (f"±{std:.1f}" if std is not None else "")


def markdown(verdicts: list[Any], title: str) -> str:
    """The verdicts as one Markdown table (also what the HTML report shows)."""
    lines = [f"Table: {title}", "", "| Target | Protocol | Expected | Ours | Diff | Tolerance | Status | Why |",
             "|:--|:--|:-:|:-:|:-:|:-:|:-:|:--|"]  # fmt: skip
    for v in verdicts:
        diff = "—" if v.diff is None else f"{v.diff:+.1f}"
        why = "; ".join(v.why) if v.why else ""
        lines.append(f"| {v.name} | {v.protocol} | {_fmt(v.expected, v.expected_std)} | {_fmt(v.ours, v.ours_std)} "
                     f"| {diff} | ±{v.tol:.1f} | {v.status} | {why.replace('|', '/')} |")  # fmt: skip
    sources = sorted({v.source for v in verdicts if v.source})
    if sources:
        lines += ["", "Sources: " + "; ".join(sources) + "."]
    return "\n".join(lines) + "\n"


def execute(args: argparse.Namespace) -> int:
    import json

    from ddbench.cli import console
    from ddbench.errors import UserError
    from ddbench.store import Store
    from ddbench.verify import compare_papers, load_targets, run_targets

    if args.targets:
        from ddbench.cli.args import device as parse_device
        from ddbench.cli.args import writable_home
        from ddbench.cli.run_cmd import rich_progress

        writable_home()
        targets = load_targets(args.targets)
        store = Store(args.store)
        with rich_progress() as progress:
            verdicts = run_targets(targets, store, device=parse_device(args.device), progress=progress)
        title = f"ddbench verify --targets {args.targets}: {len(verdicts)} targets"
        failing = [v for v in verdicts if v.status != "pass"]
    else:
        store = Store(args.store, read_only=True)
        if not store.path.is_file():
            raise UserError(f"no results store at {store.path}; run `ddbench run` first or pass --store")
        unmatched: list[tuple[str, str, int, str, str]] = []
        verdicts = compare_papers(store, dataset=args.dataset, unmatched=unmatched)
        if unmatched and args.fmt == "md":
            lines = [f"- {m} {d} ipc{i} {a} under {p}" for d, m, i, a, p in sorted(unmatched)]
            console.print("stored results without a published row (same method, dataset, ipc, student, protocol):\n"
                          + "\n".join(lines) + "\n", markup=False, highlight=False, soft_wrap=True)  # fmt: skip
        if not verdicts:
            console.print("no stored run matches a published row (same method, dataset, ipc, student, protocol)")
            return 0
        title = "published numbers beside ours (pass: |diff| ≤ 2σ + 1 points)"
        failing = [v for v in verdicts if v.status == "fail"] if args.strict else []
    if args.fmt == "json":
        console.print(json.dumps([v.record() for v in verdicts], indent=1, ensure_ascii=False), markup=False,
                      highlight=False, soft_wrap=True)  # fmt: skip
    else:
        console.print(markdown(verdicts, title), markup=False, highlight=False, soft_wrap=True)
        passed = sum(v.status == "pass" for v in verdicts)
        style = "bold green" if passed == len(verdicts) else "bold red"
        console.print(f"{passed} of {len(verdicts)} pass", style=style)
    return 1 if failing else 0
