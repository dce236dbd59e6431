"""The ``ddbench`` command line: the only place that prints.

Each subcommand is a module in this package with ``register(subparsers)``; heavy imports happen inside the
subcommand's function so ``ddbench list`` starts fast. Errors a user can fix are printed as one red line and exit
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

SUBCOMMANDS = (
    "ddbench.cli.list_cmd",
    "ddbench.cli.teacher_cmd",
    "ddbench.cli.experts_cmd",
    "ddbench.cli.run_cmd",
    "ddbench.cli.table_cmd",
    "ddbench.cli.show_cmd",
    "ddbench.cli.sweep_cmd",
    "ddbench.cli.score_cmd",
    "ddbench.cli.verify_cmd",
    "ddbench.cli.report_cmd",
)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is a complete, actionable sentence for the user."""
    from ddbench.config import ConfigError
    from ddbench.data.spec import DatasetError
    from ddbench.distilled import CorruptArtifact
    from ddbench.errors import UserError
    from ddbench.registry import RegistryError
    from ddbench.train import TrainingDiverged

    return (ConfigError, DatasetError, RegistryError, CorruptArtifact, UserError, TrainingDiverged)


def one_line(exc: BaseException) -> str:
    """The user-facing sentence of an error, on one line (a diverged training says what to do)."""
    from ddbench.train import TrainingDiverged

    text = " ".join(str(exc).split())
    if isinstance(exc, TrainingDiverged):
        text = f"training diverged ({text}); nothing was cached; lower the learning rate or check the recipe"
    return text


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``ddbench run: error: argument --ipc: invalid int value: 'x'``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def setup_logging(verbose: int) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(console=err_console, show_path=False)], force=True
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ddbench",
        description="Run dataset-distillation methods end to end and compare them fairly.",
        epilog="Example: ddbench run --method random --dataset digits",
    )
    parser.add_argument("-v", "--verbose", action="count", default=1, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # subcommand not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a one-line argument error (Parser.error) already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    setup_logging(0 if args.quiet else args.verbose)
    try:
        return int(args.func(args) or 0)
    except user_errors() as exc:
        err_console.print(f"[bold red]error:[/] {escape(one_line(exc))}", soft_wrap=True, highlight=False)
        return 2
    except PermissionError as exc:  # a file ddbench must write is not writable
        err_console.print(
            f"[bold red]error:[/] cannot write {escape(str(exc.filename))} (permission denied); point DDBENCH_HOME "
            "at a writable folder",
            soft_wrap=True,
            highlight=False,
        )
        return 2
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]; finished stages are kept and the same command resumes")
        return 130


if __name__ == "__main__":
    sys.exit(main())
