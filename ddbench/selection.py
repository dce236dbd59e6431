"""``--select lr=0.001,0.005,0.01,0.05,0.1``: choose a protocol value on a held-out part of the *train* split.

DD-Ranking sweeps five learning rates and keeps the best **test** accuracy (landscape §1, weakness 1); a number
chosen on the test split is not a test number. ddbench chooses on validation images instead:

1. With ``--select`` the run is prepared with ``holdout_per_class`` (:meth:`ddbench.data.Dataset.with_holdout`):
   those train images move to ``val`` *before* anything else reads the train split, so the method, its teachers and
   the random baseline never see them (the data identity, hence the run id, records the hold-out).
2. For every grid value, the students are trained on the distilled set under the protocol with that value
   (variant ``<protocol>~lr=0.005``) and scored on ``val``: the evaluator is handed the dataset with its ``test``
   split replaced by ``val``, so the test split is not read. Each (value, seed) result is a cached artifact.
3. Per student arch, the value with the best mean validation top-1 over seeds wins (ties: the earlier grid value).
4. Only then the final evaluation runs, as ordinary rows under ``<protocol>~<field>=<chosen>``, whose
   ``extra_json`` records the grid, the chosen value and every validation number.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddbench.artifacts import CACHE
from ddbench.config import config_hash
from ddbench.errors import UserError
from ddbench.pipeline import (
    EvalRequest,
    ProgressFn,
    RunState,
    _no_progress,
    default_eval_archs,
    default_protocols,
    eval_teachers,
    evaluate_run,
    protocol_key,
)

logger = logging.getLogger(__name__)

#: Protocol fields a grid may select (the ones DD-Ranking and the papers tune).
SELECTABLE = {"lr": float, "epochs": int, "weight_decay": float}
SELECTION_KIND = "selection"


@dataclass(frozen=True)
class Grid:
    """A ``--select`` grid: one protocol field and the values to try, in order."""

    field: str
    values: tuple[float | int, ...]

    @classmethod
    def parse(cls, text: str) -> Grid:
        """``"lr=0.001,0.005"`` → ``Grid("lr", (0.001, 0.005))``; one-line errors for anything else."""
        name, sep, rest = text.partition("=")
        name = name.strip()
        if not sep or name not in SELECTABLE:
            raise UserError(f"--select takes FIELD=V1,V2,... with FIELD one of {', '.join(SELECTABLE)}, got {text!r}")
        try:
            values = tuple(SELECTABLE[name](v) for v in rest.split(",") if v.strip())
        except ValueError:
            raise UserError(f"--select {name}: values must be {SELECTABLE[name].__name__}s, got {rest!r}") from None
        if len(values) < 2 or len(set(values)) != len(values):
            raise UserError(f"--select {name}: give at least two distinct values, got {rest!r}")
        return cls(name, values)


@dataclass
class Selection:
    """The choice for one (protocol, arch): the grid, the validation top-1 per value and seed, the winner."""

    protocol: str
    arch: str
    field: str
    grid: tuple[float | int, ...]
    val_top1: dict[str, dict[int, float]] = field(default_factory=dict)
    chosen: float | int | None = None
    holdout_per_class: int = 0

    def record(self) -> dict[str, Any]:
        return {"field": self.field, "grid": list(self.grid), "chosen": self.chosen,
                "val_top1": {v: {str(s): a for s, a in d.items()} for v, d in self.val_top1.items()},
                "holdout_per_class": self.holdout_per_class, "selected_on": "val (held-out train images)"}  # fmt: skip


def choose(selection: Selection) -> float | int:
    """The grid value with the best mean validation top-1 (ties: the earlier value); sets ``selection.chosen``."""
    best, best_acc = None, -1.0
    for value in selection.grid:
        scores = list(selection.val_top1.get(_label(value), {}).values())
        mean = sum(scores) / len(scores) if scores else -1.0
        if mean > best_acc:
            best, best_acc = value, mean
    if best is None:
        raise RuntimeError(f"{selection.arch}: no grid value of {selection.field} trained successfully")
    selection.chosen = best
    return best


def _label(value: float | int) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def validation_view(dataset: Any) -> Any:
    """The dataset with ``test`` replaced by its ``val`` split: what a selection evaluation is allowed to read."""
    if dataset.val is None:
        raise UserError("selection needs a held-out validation split; prepare the run with holdout_per_class > 0")
    return dataclasses.replace(dataset, test=dataset.val)


def _val_scores(
    state: RunState, distilled: Any, name: str, value: float | int, grid: Grid, archs: Sequence[str], seed: int,
    request: EvalRequest, progress: ProgressFn,
) -> dict[str, float]:  # fmt: skip
    """arch → validation top-1 of one (value, seed), from the cache or trained now."""
    from ddbench.evaluate import evaluate, resolve_for_artifact
    from ddbench.labels import LABEL_MODES
    from ddbench.protocol import load_protocol, variant_name

    protocol = load_protocol(variant_name(name, {grid.field: value}), profile=state.request.profile)
    given = (request.teachers or {}).get(name)
    uses = LABEL_MODES.get(resolve_for_artifact(protocol, distilled).label_mode).uses_teachers
    teachers = list(given) if given is not None and uses else eval_teachers(state, protocol, distilled, progress)
    key = {"run_id": state.run_id, "protocol_hash": protocol.hash, "archs": list(archs), "seed": seed,
           "teachers": [t.id for t in teachers], "data": state.dataset.fingerprint}  # fmt: skip

    def build(tmp: Path) -> dict[str, Any]:
        results = evaluate(distilled, validation_view(state.dataset), archs, protocol, seed=seed,
                           device=torch.device(state.request.device), teachers=[t.model for t in teachers],
                           amp=request.amp, channels_last=request.channels_last, progress=progress)  # fmt: skip
        scores = {r.arch: r.top1 for r in results if r.error is None}
        (tmp / "val.json").write_text(json.dumps(scores))
        return {"protocol": protocol.name, "val_top1": scores}

    art = CACHE.get_or_build(SELECTION_KIND, key, build, name=f"{state.run_id}-{config_hash(key, 8)}")
    return json.loads((art.path / "val.json").read_text())


def select_and_evaluate(
    state: RunState,
    distilled: Any,
    grid: Grid,
    request: EvalRequest,
    store: Any,
    progress: ProgressFn = _no_progress,
) -> tuple[list[dict[str, Any]], list[Selection]]:
    """Choose ``grid``'s value per (protocol, arch) on ``val``, then run the final evaluations on the test split.

    Returns:
        The final rows (ordinary evaluation rows, protocol ``<name>~<field>=<chosen>``) and the selections.
    """
    from ddbench.models import ARCHS
    from ddbench.protocol import load_protocol, variant_name

    if state.dataset.val is None:
        raise UserError(f"run {state.run_id} has no held-out split; --select needs a run prepared with --holdout")
    archs = [ARCHS.canonical(a) for a in (request.archs or default_eval_archs(state.request.profile, state.method,
                                                                           state.dataset.id))]  # fmt: skip
    selections: list[Selection] = []
    for name in request.protocols or default_protocols(state):
        seeds = list(request.seeds) if request.seeds is not None else list(
            range(load_protocol(name, profile=state.request.profile).eval_seeds))  # fmt: skip
        found = {a: Selection(name, a, grid.field, grid.values, holdout_per_class=len(state.dataset.val)
                              // state.dataset.num_classes) for a in archs}  # fmt: skip
        for value in grid.values:
            for seed in seeds:
                scores = _val_scores(state, distilled, name, value, grid, archs, seed, request, progress)
                for arch, top1 in scores.items():
                    found[arch].val_top1.setdefault(_label(value), {})[seed] = top1
        for sel in found.values():
            choose(sel)
            logger.info("%s %s: %s=%s chosen on val %s", name, sel.arch, grid.field, sel.chosen, sel.val_top1)
        selections += found.values()
    rows: list[dict[str, Any]] = []
    for sel in selections:  # the test split is read only from here on
        final = variant_name(sel.protocol, {grid.field: sel.chosen})
        loaded = load_protocol(final, profile=state.request.profile)
        key = protocol_key(loaded.name, loaded.profile)
        final_req = dataclasses.replace(request, archs=[sel.arch], protocols=[final],
                                        notes={key: {"selection": sel.record()}})  # fmt: skip
        rows += evaluate_run(state, distilled, final_req, store, progress)
    return rows, selections


__all__ = ["SELECTABLE", "Grid", "Selection", "choose", "select_and_evaluate", "validation_view"]
