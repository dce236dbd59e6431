"""``ddbench score``: the evaluations DD-Ranking's scores need, run only where missing, and the scores from them.

For one run (method, dataset, ipc, seed, profile) and each student arch, the inputs are ordinary evaluation rows
of the results store, produced by :func:`ddbench.pipeline.evaluate_run`, which skips every row already there:

* the set under the hard-label protocol (``hard``): HLR's acc(syn, hard);
* the set and the ``random`` run at the same ipc/seed under the recipe (default: the run's first default protocol,
  e.g. ``kd@cpu``), the random set scored with the *method's* soft-label teachers: IOR;
* both again under the recipe without augmentation (``<recipe>~noaug``): ARS;
* the real-data reference of the arch (:func:`ddbench.references.real_reference`, a cached teacher artifact): HLR.

So a second ``ddbench score`` with the same arguments trains nothing. Each score is stored as a run metric
``score:<name>:<arch>:<recipe>`` whose value is the mean over seeds and whose ``extra_json`` lists the per-seed
values, every input accuracy, the reference and the rows' run ids, which is what ``ddbench table --metric hlr``
and the HTML report read. Formulas and units: :mod:`ddbench.scores`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ddbench.pipeline import (
    EvalRequest,
    ProgressFn,
    RunState,
    _no_progress,
    baseline_state,
    default_eval_archs,
    default_protocols,
    distill,
    evaluate_run,
    protocol_key,
    protocol_teachers,
    record_run,
)
from ddbench.scores import DEFAULT_GAMMA, DEFAULT_W, Score, compute_scores, metric_name

logger = logging.getLogger(__name__)

HARD_PROTOCOL = "hard"
NOAUG = "noaug"


@dataclass
class ScoreRequest:
    """What to score a run with (None: the defaults named in the module docstring)."""

    archs: Sequence[str] | None = None
    recipe: str | None = None
    hard: str = HARD_PROTOCOL
    seeds: Sequence[int] | None = None
    reference_recipe: str = "default"
    reference_seeds: Sequence[int] = (0,)
    ars: bool = True
    w: float = DEFAULT_W
    gamma: float = DEFAULT_GAMMA
    amp: bool = False
    channels_last: bool = False


@dataclass
class ArchScores:
    """The scores of one student arch, with what they were computed from."""

    arch: str
    recipe: str
    scores: dict[str, Score]
    reference: dict[str, Any]
    protocols: dict[str, str]
    runs: dict[str, str] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)


def cost_of(distilled: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The cost axes beside a score: time to synthesise (RD3), bytes of images + stored soft labels, and the
    online-teacher forward passes one student epoch of the recipe costs (the soft labels that are not stored)."""
    sizes = distilled.nbytes()
    forwards = [int(json.loads(r["extra_json"]).get("teacher_forwards_per_epoch", 0)) for r in rows
                if isinstance(r.get("extra_json"), str) and r["extra_json"]]  # fmt: skip
    return {"distill_time_s": distilled.meta.get("wall_time_s"), "images_bytes": sizes["images"],
            "soft_labels_bytes": sizes["soft_labels"], "total_bytes": sizes["images"] + sizes["soft_labels"],
            "teacher_forwards_per_epoch": max(forwards, default=0)}  # fmt: skip


def _top1(rows: list[dict[str, Any]], key: str, version: int, seeds: Sequence[int]) -> dict[str, dict[int, float]]:
    """arch → eval seed → top-1 of the successful rows under protocol ``key`` (its current version)."""
    out: dict[str, dict[int, float]] = {}
    for r in rows:
        top1 = r.get("top1")
        ok = r["protocol"] == key and int(r["protocol_version"]) == version and top1 is not None
        ok = ok and not math.isnan(float(top1))
        failed = isinstance(r.get("error"), str) and bool(r["error"].strip())  # NULL reads back as None or NaN
        if ok and not failed and int(r["eval_seed"]) in seeds:
            out.setdefault(r["arch"], {})[int(r["eval_seed"])] = float(r["top1"])
    return out


def score_run(
    state: RunState, distilled: Any, request: ScoreRequest, store: Any, progress: ProgressFn = _no_progress
) -> list[ArchScores]:
    """Run the missing evaluations for ``state``'s scores, compute them, store them as run metrics."""
    from ddbench.models import ARCHS
    from ddbench.protocol import VARIANT_SEP, load_protocol
    from ddbench.references import real_reference

    profile = state.request.profile
    archs = [ARCHS.canonical(a) for a in (request.archs or
             default_eval_archs(profile, state.method, state.dataset.id)[:1])]  # fmt: skip
    recipe = request.recipe or default_protocols(state)[0]
    names = {"hard": request.hard, "recipe": recipe}
    if request.ars:
        names["noaug"] = f"{recipe}{VARIANT_SEP}{NOAUG}"
    protos = {role: load_protocol(n, profile=profile) for role, n in names.items()}
    keys = {role: protocol_key(p.name, p.profile) for role, p in protos.items()}
    seeds = list(request.seeds) if request.seeds is not None else list(range(protos["recipe"].eval_seeds))
    eval_opts = {"archs": archs, "seeds": seeds, "amp": request.amp, "channels_last": request.channels_last}

    syn_rows = evaluate_run(state, distilled, EvalRequest(protocols=list(names.values()), **eval_opts), store,
                            progress)  # fmt: skip
    soft = [n for role, n in names.items() if role != "hard"]
    base = baseline_state(state)
    base_set = distill(base, progress)
    record_run(base, base_set, store)
    teachers = protocol_teachers(state, distilled, soft, progress)
    rand_rows = evaluate_run(base, base_set, EvalRequest(protocols=soft, teachers=teachers, **eval_opts), store,
                             progress)  # fmt: skip

    def top1(rows: list[dict[str, Any]], role: str) -> dict[str, dict[int, float]]:
        return _top1(rows, keys[role], protos[role].version, seeds)

    inputs = {"syn_hard": top1(syn_rows, "hard"), "syn": top1(syn_rows, "recipe"), "rand": top1(rand_rows, "recipe")}
    if request.ars:
        inputs |= {"syn_noaug": top1(syn_rows, "noaug"), "rand_noaug": top1(rand_rows, "noaug")}
    out = []
    for arch in archs:
        ref = real_reference(state.dataset, arch, recipe=request.reference_recipe, profile=profile,
                             seeds=request.reference_seeds, device=state.request.device, progress=progress)  # fmt: skip
        acc = {name: by_arch.get(arch, {}) for name, by_arch in inputs.items()}
        scores = compute_scores(acc, ref.mean, w=request.w, gamma=request.gamma)
        recipe_rows = [r for r in syn_rows if r["protocol"] == keys["recipe"] and r["arch"] == arch]
        result = ArchScores(arch, keys["recipe"], scores, ref.record(), keys,
                            {"syn": state.run_id, "random": base.run_id}, cost_of(distilled, recipe_rows))  # fmt: skip
        for name, score in scores.items():
            extra = {**score.record(), "reference": ref.record(), "protocols": keys, "runs": result.runs,
                     "cost": result.cost,
                     "w": request.w, "gamma": request.gamma, "label_teachers": {n: [t.id for t in ts] for n, ts in
                     teachers.items()}}  # fmt: skip
            store.add_metric(state.run_id, metric_name(name, arch, keys["recipe"]), score.mean,
                             json.dumps(extra, default=str))  # fmt: skip
        missing = [n for n, values in acc.items() if not values]
        if missing:
            logger.warning("%s: no successful rows for %s; the scores needing them are not computed", arch, missing)
        out.append(result)
    return out


__all__ = ["ArchScores", "ScoreRequest", "score_run"]
