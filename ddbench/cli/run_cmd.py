"""``ddbench run`` (distil + evaluate + table) and ``ddbench eval RUN`` (add evaluation rows to a run)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

RUN_EPILOG = """examples:
  ddbench run --method random --dataset digits
  ddbench run --method dwa --dataset cifar10 --ipc 10 --preset paper --device cuda
  ddbench run --method sre2l --dataset tiny-imagenet --data-root ~/data --preset cpu --num-classes 10
  ddbench run --method dwa --dataset cifar10 --set iterations=500 --set rho=0.03 --protocol kd,hard
  ddbench run --method herding --dataset digits --select lr=0.001,0.005,0.01,0.05,0.1   # chosen on held-out train

protocols (--protocol): with --preset paper a run is scored under the method's own paper protocol (e.g. dwa-cifar)
and the shared fair one (kd for soft-label methods, hard otherwise), shown side by side; under cpu it is one fair
protocol (the dataset's, kd) so the demo stays fast. The table caption names every protocol and teacher it uses.
Unless --no-baseline, the random baseline (and the method's own paper baselines, e.g. dit and minimax-finetune
beside minimax) is evaluated beside the method under the same protocols, students and teacher.
"""


def add_eval_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-archs", "--archs", dest="archs", default=None, help="comma-separated student architectures")
    g.add_argument(
        "--protocol",
        "--protocols",
        dest="protocol",
        default=None,
        help="comma-separated evaluation protocols (default: paper preset: the method's paper protocol and the fair "
        "one; cpu: the dataset's fair protocol)",
    )
    g.add_argument("--seeds", default=None, help="comma-separated evaluation seeds (default: the protocol's count)")
    g.add_argument("--amp", action="store_true", help="bf16 autocast of student/teacher forwards (CUDA speed-up)")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format (CUDA speed-up)")
    g.add_argument(
        "--select",
        default=None,
        metavar="FIELD=V1,V2,...",
        help="choose lr, epochs or weight_decay per student on held-out train images (never the test split), e.g. "
        "--select lr=0.001,0.005,0.01,0.05,0.1; the chosen value is evaluated and recorded with the grid",
    )
    g.add_argument("--store", default=None, help="results database (default $DDBENCH_HOME/results.sqlite)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def add_request_args(p: argparse.ArgumentParser) -> None:
    """The flags that name a run (``ddbench run`` and ``ddbench score`` share them)."""
    p.add_argument("--method", required=True, help="method id (ddbench list methods)")
    p.add_argument("--dataset", default="digits", help="dataset id (ddbench list datasets); default digits")
    p.add_argument("--ipc", type=int, default=10, help="images per class (default 10)")
    p.add_argument("--seed", type=int, default=0, help="distillation seed")
    p.add_argument("--preset", default="auto", help="config profile: paper | cpu | auto (paper on CUDA, cpu otherwise)")
    p.add_argument("--config", dest="config_file", default=None, help="TOML file of method config overrides")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override")
    p.add_argument("--num-classes", type=int, default=None, help="only the first N canonical classes")
    p.add_argument("--data-root", default=None, help="where datasets live (also $DDBENCH_DATA)")
    p.add_argument(
        "--allow-short-classes",
        action="store_true",
        help="allow an --ipc larger than a class's real images (the record says which classes were short)",
    )
    p.add_argument(
        "--holdout",
        type=int,
        default=None,
        help="train images per class held out as a validation split before distilling (default with --select: 10%% "
        "of the smallest class, at most 50); the run id records it",
    )


def run_request(args: argparse.Namespace) -> Any:
    """The :class:`~ddbench.pipeline.RunRequest` of :func:`add_request_args`' flags (device and profile resolved)."""
    from ddbench.cli.args import device as parse_device
    from ddbench.cli.args import profile as parse_profile
    from ddbench.config import parse_overrides
    from ddbench.errors import UserError
    from ddbench.pipeline import AUTO_HOLDOUT, RunRequest

    device = parse_device(args.device)
    holdout = args.holdout if args.holdout is not None else (AUTO_HOLDOUT if getattr(args, "select", None) else 0)
    if (holdout < 0 and holdout != AUTO_HOLDOUT) or (args.holdout is not None and args.holdout < 1):
        raise UserError(f"--holdout must be a positive number of images per class, got {args.holdout}")
    return RunRequest(
        method=args.method,
        dataset=args.dataset,
        ipc=args.ipc,
        seed=args.seed,
        profile=parse_profile(args.preset, device),
        num_classes=args.num_classes,
        data_root=args.data_root,
        config_file=args.config_file,
        overrides=parse_overrides(args.overrides),
        device=device,
        allow_short_classes=args.allow_short_classes,
        holdout_per_class=holdout,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="distil a dataset with a method, evaluate it, store and print the records",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_request_args(p)
    p.add_argument("--no-eval", action="store_true", help="distil only")
    p.add_argument("--no-baseline", action="store_true", help="do not also evaluate the random baseline")
    add_eval_args(p)
    p.set_defaults(func=execute_run)

    e = sub.add_parser(
        "eval",
        help="evaluate an existing run on more architectures, protocols or seeds",
        epilog="example: ddbench eval dwa-1a2b3c --archs resnet50,vgg16_bn --seeds 0,1,2",
    )
    e.add_argument("run", help="run id (or unique prefix) or run directory")
    add_eval_args(e)
    e.set_defaults(func=execute_eval)


@contextlib.contextmanager
def rich_progress() -> Iterator[Any]:
    """A ``progress(stage, done, total)`` callback drawing one rich bar per stage."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ddbench.cli import err_console

    bars = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield progress


def _eval_request(args: argparse.Namespace) -> Any:
    from ddbench.cli.args import csv, int_list
    from ddbench.pipeline import EvalRequest

    return EvalRequest(
        archs=csv(args.archs),
        protocols=csv(args.protocol),
        seeds=int_list(args.seeds, "--seeds"),
        amp=args.amp,
        channels_last=args.channels_last,
    )


def _print_table(rows: list[dict[str, Any]], eval_req: Any) -> None:
    import pandas as pd

    from ddbench.cli import console
    from ddbench.tables import build_table

    if rows:
        archs = list(dict.fromkeys(r["arch"] for r in rows))
        console.print(build_table(pd.DataFrame(rows), archs=archs, fmt="md"))


def _finish(state: Any, distilled: Any, args: argparse.Namespace, eval_req: Any, store: Any, progress: Any) -> None:
    import dataclasses

    from ddbench.cli import console
    from ddbench.pipeline import (
        baseline_state,
        default_eval_archs,
        default_protocols,
        distill,
        evaluate_run,
        protocol_teachers,
        record_diversity,
        record_run,
    )

    archs = eval_req.archs or default_eval_archs(state.request.profile, state.method, state.dataset.id)
    eval_req = dataclasses.replace(
        eval_req, protocols=list(eval_req.protocols or default_protocols(state)), archs=list(archs)
    )
    grid = None
    if getattr(args, "select", None):
        from ddbench.selection import Grid

        grid = Grid.parse(args.select)

    def score(st: Any, dset: Any, req: Any) -> list[dict[str, Any]]:
        if grid is None:
            return evaluate_run(st, dset, req, store, progress)
        from ddbench.selection import select_and_evaluate

        rows, selections = select_and_evaluate(st, dset, grid, req, store, progress)
        for sel in selections:
            val = ", ".join(f"{v}: {sum(d.values()) / len(d):.1f}" for v, d in sel.val_top1.items())
            console.print(f"{st.method.name} {sel.arch} under {sel.protocol}: {sel.field}={sel.chosen} chosen on "
                          f"{sel.holdout_per_class} held-out train images per class (val top-1 {val})")  # fmt: skip
        return rows

    rows = score(state, distilled, eval_req)
    diversity = record_diversity(state, distilled, store)
    if state.method.name != "random" and not getattr(args, "no_baseline", True):
        teachers = protocol_teachers(state, distilled, eval_req.protocols, progress)
        for name in reversed(("random", *state.method.baselines)):
            base = baseline_state(state, name)
            base_set = distill(base, progress)
            record_run(base, base_set, store)
            rows = score(base, base_set, dataclasses.replace(eval_req, teachers=teachers)) + rows
    _print_table(rows, eval_req)
    if diversity.get("feat_dist_mean") is not None:
        console.print(
            f"diversity: feat_dist_mean {diversity['feat_dist_mean']:.4g}"
            + (f", relative to real {diversity['feat_dist_rel']:.3f}" if "feat_dist_rel" in diversity else "")
        )


def execute_run(args: argparse.Namespace) -> int:
    from ddbench.cli import console
    from ddbench.cli.args import writable_home
    from ddbench.pipeline import distill, prepare, record_run
    from ddbench.store import Store

    writable_home()
    request = run_request(args)
    device, profile = request.device, request.profile
    store = Store(args.store)
    eval_req = _eval_request(args)
    state = prepare(request)  # every check (ipc, profile, teacher needs) before any training or distillation
    console.print(
        f"[bold]ddbench run[/] {request.method} on {request.dataset} ipc {request.ipc}, "
        f"profile [cyan]{profile}[/], device {device}"
    )
    console.print(f"run [bold green]{state.run_id}[/] → {state.run_dir}")
    with rich_progress() as progress:
        distilled = distill(state, progress)
        record_run(state, distilled, store)
        if not args.no_eval:
            _finish(state, distilled, args, eval_req, store, progress)
    console.print(f"artifact: {state.artifact_dir}\nrecords:  {store.path}")
    return 0


def execute_eval(args: argparse.Namespace) -> int:
    from ddbench.cli import console
    from ddbench.cli.args import device as parse_device
    from ddbench.cli.args import writable_home
    from ddbench.distilled import DistilledSet
    from ddbench.distributed import env_world_size, init_from_env
    from ddbench.errors import UserError
    from ddbench.pipeline import find_run, load_request, prepare
    from ddbench.store import Store

    writable_home()
    run_dir = find_run(args.run)
    request = load_request(run_dir)
    if args.select and not request.holdout_per_class:
        raise UserError(
            f"run {run_dir.name} was distilled without a held-out split, so --select has nothing but the test split "
            "to choose on; re-run it with `ddbench run ... --select ...` (or --holdout N)"
        )
    if args.device:
        request.device = parse_device(args.device)
    if env_world_size() > 1 and request.device.startswith("cuda"):  # torchrun: one GPU per rank
        import os

        request.device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    dist = init_from_env(request.device)
    store = Store(args.store)
    eval_req = _eval_request(args)
    state = prepare(request)
    if state.run_id != run_dir.name:  # code or presets changed since the run: score the artifact that exists
        state.run_id, state.run_dir = run_dir.name, run_dir
    distilled = DistilledSet.load(state.artifact_dir)
    if dist.active:
        return _eval_ddp(state, distilled, eval_req, store, dist)
    with rich_progress() as progress:
        _finish(state, distilled, args, eval_req, store, progress)
    console.print(f"records: {store.path}")
    return 0


def _eval_ddp(state: Any, distilled: Any, eval_req: Any, store: Any, dist: Any) -> int:
    """``ddbench eval`` under torchrun: every rank trains, rank 0 writes and prints (no diversity, no baseline)."""
    import dataclasses

    from ddbench.cli import console
    from ddbench.ddp import ddp_seed_runner, store_for
    from ddbench.distributed import shutdown
    from ddbench.pipeline import evaluate_run

    try:
        rows = evaluate_run(state, distilled, dataclasses.replace(eval_req, dist=dist), store_for(store, dist),
                            seed_runner=ddp_seed_runner)  # fmt: skip
        if dist.is_main:
            _print_table(rows, eval_req)
            console.print(f"records: {store.path} (DDP, world size {dist.world_size})")
    finally:
        shutdown(dist)
    return 0
