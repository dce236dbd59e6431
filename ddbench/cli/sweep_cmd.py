"""``ddbench sweep`` (a grid of runs on a launcher) and ``ddbench ingest DIR`` (records into the store)."""

from __future__ import annotations

import argparse
import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

SWEEP_EPILOG = """examples:
  ddbench sweep --methods random,dwa --datasets digits --seeds 0,1 --dry-run
  ddbench sweep --methods random,dwa --datasets digits --seeds 0,1 --launcher ray
  ddbench sweep --methods random,dwa --datasets digits --seeds 0,1 --launcher ray --address auto
  ddbench sweep sweeps/dwa-table.toml --launcher slurm --slurm-partition gpu --gpus-per-unit 1 --slurm-time 240

Re-submitting a sweep runs only the units that are not cached (after a crash, a pre-emption or an edit of the
grid). Workers write JSON records beside the artifacts; the driver ingests them into the store as units finish,
and `ddbench ingest $DDBENCH_HOME/runs` does it after a driver that did not wait (or died).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid of methods x datasets x ipc x seeds x students on local/Ray/Slurm",
                       epilog=SWEEP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("file", nargs="?", default=None, help="TOML sweep file (flags given as well override its keys)")
    g = p.add_argument_group("grid")
    g.add_argument("--methods", default=None, help="comma-separated method ids")
    g.add_argument("--datasets", default=None, help="comma-separated dataset ids (default digits)")
    g.add_argument("--ipc", default=None, help="comma-separated images per class (default 10)")
    g.add_argument("--seeds", default=None, help="comma-separated distillation seeds, one run each (default 0)")
    g.add_argument("--archs", "--eval-archs", dest="archs", default=None, help="student architectures")
    g.add_argument("--protocol", "--protocols", dest="protocols", default=None, help="evaluation protocols")
    g.add_argument("--eval-seeds", default=None, help="evaluation seeds (default: each protocol's count)")
    g.add_argument("--preset", default=None, help="paper | cpu | auto (default auto)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="[METHOD.]KEY=VALUE",
                   help="method config override, for every method or for METHOD only")  # fmt: skip
    g.add_argument("--num-classes", type=int, default=None, help="only the first N canonical classes")
    g.add_argument("--data-root", default=None, help="where datasets live (also $DDBENCH_DATA)")
    g.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    g.add_argument("--amp", action="store_true", help="bf16 autocast in evaluation")
    g.add_argument("--channels-last", action="store_true", help="channels-last in evaluation")
    r = p.add_argument_group("launching")
    r.add_argument("--launcher", default="local", help="local | ray | slurm (or a plugin's name)")
    r.add_argument("--dry-run", action="store_true", help="list the units and what is cached; run nothing")
    r.add_argument("--retries", type=int, default=1, help="extra attempts of a failing unit (default 1)")
    r.add_argument("--workers", type=int, default=None, help="local: pool size; ray: CPUs of a local cluster")
    r.add_argument("--cpus-per-unit", type=float, default=1.0, help="ray/slurm: CPUs per unit")
    r.add_argument("--gpus-per-unit", type=float, default=None, help="ray/slurm: GPUs per unit (default 1 on cuda)")
    r.add_argument("--address", default=None, help="ray: cluster address (auto, ray://host:10001); default local")
    r.add_argument("--slurm-partition", default=None, help="slurm: partition")
    r.add_argument("--slurm-time", type=int, default=60, help="slurm: minutes per job (default 60)")
    r.add_argument("--slurm-mem", type=float, default=None, help="slurm: GB of memory per job")
    r.add_argument("--slurm-folder", default=None, help="slurm: submitit folder (default $DDBENCH_HOME/slurm/%%j)")
    r.add_argument("--slurm-array-parallelism", type=int, default=256, help="slurm: array tasks running at once")
    r.add_argument("--slurm-cluster", default="slurm", choices=("slurm", "local", "debug"),
                   help="submitit executor: slurm, or local/debug to run the same jobs without Slurm")  # fmt: skip
    r.add_argument("--store", default=None, help="results database (default $DDBENCH_HOME/results.sqlite)")
    p.set_defaults(func=execute_sweep)

    i = sub.add_parser("ingest", help="upsert the JSON records a sweep wrote under DIR into the store (idempotent)",
                       epilog="example: ddbench ingest $DDBENCH_HOME/runs")  # fmt: skip
    i.add_argument("dir", help="a folder holding run records (a run, $DDBENCH_HOME/runs, a copy from a cluster)")
    i.add_argument("--store", default=None, help="results database (default $DDBENCH_HOME/results.sqlite)")
    i.set_defaults(func=execute_ingest)


def sweep_spec(args: argparse.Namespace) -> Any:
    """The grid from the sweep file and the flags (a flag wins over the file's key)."""
    from ddbench.cli.args import csv, device, int_list
    from ddbench.config import parse_overrides
    from ddbench.sweep.grid import SweepSpec, check_names, load_sweep_file, split_overrides

    values: dict[str, Any] = load_sweep_file(args.file) if args.file else {}
    flags = {
        "methods": csv(args.methods),
        "datasets": csv(args.datasets),
        "ipc": int_list(args.ipc, "--ipc"),
        "seeds": int_list(args.seeds, "--seeds"),
        "archs": csv(args.archs),
        "protocols": csv(args.protocols),
        "eval_seeds": int_list(args.eval_seeds, "--eval-seeds"),
        "preset": args.preset,
        "num_classes": args.num_classes,
        "data_root": args.data_root,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.overrides:
        for method, table in split_overrides(parse_overrides(args.overrides), "--set").items():
            values.setdefault("overrides", {}).setdefault(method, {}).update(table)
    values["device"] = device(args.device or values.get("device"))
    values["amp"] = args.amp or values.get("amp", False)
    values["channels_last"] = args.channels_last or values.get("channels_last", False)
    values.setdefault("methods", [])
    spec = SweepSpec(**values)
    check_names(spec)
    return spec


def launch_options(args: argparse.Namespace, device: str) -> Any:
    from ddbench.sweep.launchers import LaunchOptions

    gpus = args.gpus_per_unit if args.gpus_per_unit is not None else (1.0 if device.startswith("cuda") else 0.0)
    return LaunchOptions(workers=args.workers, cpus_per_unit=args.cpus_per_unit, gpus_per_unit=gpus,
                         address=args.address, folder=args.slurm_folder, partition=args.slurm_partition,
                         time_min=args.slurm_time, mem_gb=args.slurm_mem,
                         array_parallelism=args.slurm_array_parallelism, cluster=args.slurm_cluster)  # fmt: skip


def _print_plan(plan: Any) -> None:
    from rich.table import Table

    from ddbench.cli import console

    table = Table(title=f"{len(plan.units)} units, {len(plan.cached)} cached", show_lines=False)
    for col in ("stage", "unit", "status", "after"):
        table.add_column(col)
    for u in plan.units:
        status = "[green]cached[/]" if u.uid in plan.cached else "[yellow]to run[/]"
        table.add_row(u.kind, u.uid.split(":", 1)[1], status, ", ".join(d.split(":", 1)[0] for d in u.deps) or "-")
    console.print(table)


class LiveView:
    """Counts of units per stage and state, redrawn as the driver reports changes (one rich Live table)."""

    def __init__(self, plan: Any, launcher: str) -> None:
        self.launcher = launcher
        self.state = {u.uid: "waiting" for u in plan.units}
        self.kind = {u.uid: u.kind for u in plan.units}
        self.last_error = ""

    def event(self, state: str, unit: Any, info: dict[str, Any]) -> None:
        self.state[unit.uid] = "waiting" if state == "retry" else state
        if info.get("error"):
            self.last_error = f"{unit.label}: {info['error']}"

    def render(self) -> Any:
        from rich.table import Table

        from ddbench.sweep.units import STAGES

        table = Table(title=f"ddbench sweep on {self.launcher}", caption=self.last_error[:160] or None)
        table.add_column("stage")
        for col in STATE_COLUMNS:
            table.add_column(HEADERS.get(col, col), justify="right")
        for stage in STAGES:
            counts = Counter(s for uid, s in self.state.items() if self.kind[uid] == stage)
            table.add_row(stage, *(str(counts.get(c, 0)) for c in STATE_COLUMNS))
        return table


STATE_COLUMNS = ("waiting", "running", "done", "cached", "failed", "blocked")
#: A launcher says when a unit finishes, not when it leaves the engine's queue: "running" means handed over.
HEADERS = {"waiting": "pending", "running": "queued/running"}


@contextlib.contextmanager
def live_view(plan: Any, launcher: str) -> Iterator[LiveView]:
    from rich.live import Live

    from ddbench.cli import err_console

    view = LiveView(plan, launcher)

    class _Renderable:
        def __rich__(self) -> Any:
            return view.render()

    with Live(_Renderable(), console=err_console, refresh_per_second=4, transient=False):
        yield view


def _print_summary(result: Any) -> None:
    from rich.table import Table

    from ddbench.cli import console

    compute = result.compute_s()
    table = Table(title=f"sweep finished in {result.wall_s:.1f} s on {result.launcher}")
    for col in ("stage", "ran", "cached", "failed", "compute s"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for stage, seconds in compute.items():
        states = Counter(o.state for o in result.outcomes.values() if o.unit.kind == stage)
        table.add_row(stage, str(states["done"]), str(states["cached"]), str(states["failed"] + states["blocked"]),
                      f"{seconds:.1f}")  # fmt: skip
    console.print(table)
    console.print(f"{len(result.ran)} unit(s) ran, {result.records_ingested} record(s) ingested")
    for o in result.failed:
        console.print(f"[red]failed[/] {o.unit.label} after {o.attempts} attempt(s): {o.error}", soft_wrap=True)
    blocked = result.uids("blocked")
    if blocked:
        console.print(f"[yellow]{len(blocked)} unit(s) skipped[/] because a unit they need failed")


def execute_sweep(args: argparse.Namespace) -> int:
    from ddbench.cli import console
    from ddbench.cli.args import writable_home
    from ddbench.errors import UserError
    from ddbench.store import Store
    from ddbench.sweep.driver import run_sweep
    from ddbench.sweep.grid import expand
    from ddbench.sweep.launchers import make_launcher

    if args.retries < 0:
        raise UserError(f"--retries must be 0 or more, got {args.retries}")
    spec = sweep_spec(args)
    plan = expand(spec)
    if args.dry_run:
        _print_plan(plan)
        return 0
    writable_home()
    store = Store(args.store)
    with make_launcher(args.launcher, launch_options(args, spec.device)) as launcher:
        console.print(f"[bold]ddbench sweep[/] {len(plan.units)} units ({len(plan.cached)} cached) on "
                      f"{launcher.describe()}")  # fmt: skip
        with live_view(plan, launcher.describe()) as view:
            result = run_sweep(plan, launcher, store, retries=args.retries, on_event=view.event)
    console.print()
    _print_summary(result)
    console.print(f"records: {store.path}")
    return 1 if result.failed else 0


def execute_ingest(args: argparse.Namespace) -> int:
    from ddbench.cli import console
    from ddbench.store import Store
    from ddbench.sweep.records import find_records, ingest

    store = Store(args.store)
    count = ingest(list(find_records(args.dir)), store)
    console.print(f"{count} record(s) from {args.dir} upserted into {store.path}")
    return 0
