"""``ddbench list methods|datasets|archs|protocols``: what is registered, and what is on this machine."""

from __future__ import annotations

import argparse

from rich.table import Table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list methods, datasets, architectures or protocols",
        epilog="Examples: ddbench list datasets --data-root ~/data ; ddbench list archs 'resnet*'",
    )
    p.add_argument("what", choices=["methods", "datasets", "archs", "protocols"])
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch filter, e.g. 'res*'")
    p.add_argument("--data-root", default=None, help="where datasets are looked for (also $DDBENCH_DATA)")
    p.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    from ddbench.cli import console

    table = {"methods": _methods, "datasets": _datasets, "archs": _archs, "protocols": _protocols}[args.what](args)
    console.print(table)
    return 0


def _methods(args: argparse.Namespace) -> Table:
    from ddbench.plugins import METHODS

    t = Table(title="methods")
    for col in ("name", "version", "paper", "origin"):
        t.add_column(col)
    for name in METHODS.list(args.pattern):
        try:
            cls = METHODS.get(name)
            t.add_row(name, str(cls.version), cls.paper, METHODS.origin(name))
        except Exception as exc:  # a broken plugin is shown, not fatal to listing
            t.add_row(name, "?", f"[red]cannot load: {exc}[/]", METHODS.origin(name))
    return t


def _datasets(args: argparse.Namespace) -> Table:
    from ddbench.data import DATASETS
    from ddbench.data.dataset import locate

    t = Table(title="datasets")
    for col in ("id", "classes", "size", "teacher", "protocol", "found"):
        t.add_column(col)
    for name in DATASETS.list(args.pattern):
        spec = DATASETS.get(name)
        where = locate(spec, args.data_root)
        from ddbench.data.dataset import _format_module

        embedded = getattr(_format_module(spec), "NEEDS_NO_ROOT", False)
        found = "[green]embedded[/]" if embedded else f"[green]{where}[/]" if where else "[dim]not found[/]"
        n = str(len(spec.classes)) if spec.classes else "from disk"
        size = f"{spec.channels}×{spec.img_size}×{spec.img_size}"
        t.add_row(name, n, size, spec.default_teacher, spec.default_protocol, found)
    return t


def _archs(args: argparse.Namespace) -> Table:
    from ddbench.models import ARCHS

    t = Table(title="architectures")
    t.add_column("name")
    t.add_column("defined in")
    for name in ARCHS.list(args.pattern):
        t.add_row(name, ARCHS.target(name))
    return t


def _protocols(args: argparse.Namespace) -> Table:
    from ddbench.protocols import PROTOCOLS

    t = Table(title="evaluation protocols")
    for col in ("name", "file"):
        t.add_column(col)
    for name in PROTOCOLS.list(args.pattern):
        t.add_row(name, PROTOCOLS.origin(name))
    return t
