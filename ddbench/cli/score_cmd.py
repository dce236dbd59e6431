"""``ddbench score``: HLR, IOR, LRS and ARS of a run, running only the evaluations the store lacks.

The scores ask whether the images beat random real ones once the soft labels and the augmentation are held fixed
(DD-Ranking, landscape §1); ddbench computes them on fractions (:mod:`ddbench.scores`) from ordinary evaluation
rows (:mod:`ddbench.scoring`), so a second call trains nothing and ``ddbench table --metric lrs`` shows them.
"""

from __future__ import annotations

import argparse
from typing import Any

EPILOG = """examples:
  ddbench score --method dwa --dataset digits --ipc 10
  ddbench score --method sre2l --dataset cifar10 --ipc 10 --protocol sre2l-cifar --archs resnet18,convnet
  ddbench score --method herding --dataset digits --ipc 1 --seeds 0,1,2 --no-ars

HLR = acc(real, hard) − acc(syn, hard) and IOR = acc(syn, recipe) − acc(random, recipe) print in points; LRS and
ARS are DD-Ranking's normalised scores computed on fractions, in [0, 1]. The recipe (--protocol) defaults to the
run's first default protocol (kd@cpu on a CPU); the real reference is the arch trained on the full train split
under the dataset's teacher recipe (--reference-recipe), cached.
"""


def register(sub: argparse._SubParsersAction) -> None:
    from ddbench.cli.run_cmd import add_eval_args, add_request_args

    p = sub.add_parser(
        "score",
        help="DD-Ranking-style scores (HLR, IOR, LRS, ARS) on fractions, evaluating only what is missing",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_request_args(p)
    add_eval_args(p)
    p.add_argument("--hard-protocol", default="hard", help="hard-label protocol of HLR (default hard)")
    p.add_argument("--reference-recipe", default="default", help="teacher recipe of the real-data reference")
    p.add_argument("--reference-seeds", default="0", help="training seeds of the real-data reference (default 0)")
    p.add_argument("--no-ars", action="store_true", help="skip the without-augmentation rows ARS needs")
    p.set_defaults(func=execute)


def _print(results: list[Any], state: Any, console: Any) -> None:
    from rich.markup import escape

    from ddbench.tables import human

    names = {"hlr": "HLR", "ior": "IOR", "lrs": "LRS", "ars": "ARS"}
    for res in results:
        console.print(
            f"[bold]{escape(state.method.name)}[/] on {state.dataset.id} ipc {state.request.ipc}, student "
            f"[cyan]{res.arch}[/], recipe {escape(res.recipe)}, hard-label protocol {escape(res.protocols['hard'])}"
        )
        ref = res.reference
        width = "" if ref["width_mult"] == 1.0 else f" ×{ref['width_mult']:g} width"
        console.print(f"  reference: real {ref['arch']}{width}, recipe {ref['recipe']}@{ref['profile']}, "
                      f"{ref['mean']:.2f}% ({', '.join(ref['ids'])})")  # fmt: skip
        for key in ("hlr", "ior", "lrs", "ars"):
            score = res.scores.get(key)
            if score is None:
                console.print(f"  {names[key]}  —  (inputs missing)")
                continue
            unit = "points" if score.unit == "points" else "in [0, 1]"
            seeds = "; ".join(
                f"seed {s}: " + ", ".join(f"{n} {v:.2f}" for n, v in inp.items()) for s, inp in score.inputs.items()
            )
            console.print(f"  {names[key]}  [bold]{score.text()}[/] {unit}   inputs (%): {escape(seeds)}")
        cost = res.cost
        took = "—" if cost["distill_time_s"] is None else human(float(cost["distill_time_s"]), "seconds")
        images, soft = human(cost["images_bytes"], "bytes"), human(cost["soft_labels_bytes"], "bytes")
        console.print(f"  cost: synthesis {took}, storage {human(cost['total_bytes'], 'bytes')} (images {images} + "
                      f"soft labels {soft}), {cost['teacher_forwards_per_epoch']} online-teacher forwards per student "
                      "epoch")  # fmt: skip
        console.print(f"  runs: syn {res.runs['syn']}, random {res.runs['random']}", style="dim")


def execute(args: argparse.Namespace) -> int:
    from ddbench.cli import console
    from ddbench.cli.args import csv, int_list, writable_home
    from ddbench.cli.run_cmd import rich_progress, run_request
    from ddbench.errors import UserError
    from ddbench.pipeline import distill, prepare, record_run
    from ddbench.scoring import ScoreRequest, score_run
    from ddbench.store import Store

    writable_home()
    if args.select:
        raise UserError("ddbench score compares fixed recipes; choose a value with `ddbench run --select`, then pass "
                        "its protocol (e.g. --protocol kd~lr=0.005)")  # fmt: skip
    protocols = csv(args.protocol) or []
    if len(protocols) > 1:
        raise UserError(f"--protocol names the one recipe the scores compare under, got {len(protocols)}")
    request = ScoreRequest(
        archs=csv(args.archs),
        recipe=protocols[0] if protocols else None,
        hard=args.hard_protocol,
        seeds=int_list(args.seeds, "--seeds"),
        reference_recipe=args.reference_recipe,
        reference_seeds=int_list(args.reference_seeds, "--reference-seeds") or [0],
        ars=not args.no_ars,
        amp=args.amp,
        channels_last=args.channels_last,
    )
    store = Store(args.store)
    state = prepare(run_request(args))
    with rich_progress() as progress:
        distilled = distill(state, progress)
        record_run(state, distilled, store)
        results = score_run(state, distilled, request, store, progress)
    _print(results, state, console)
    console.print(f"records: {store.path}", style="dim")
    return 0
