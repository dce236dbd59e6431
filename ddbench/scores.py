"""DD-Ranking's scores (HLR, IOR, LRS, ARS) in fixed units: accuracies as fractions, differences in points.

DD-Ranking (landscape §1) asks whether a distilled set beats random real images once the soft labels and the
augmentation are held fixed. Its four scores, as ddbench defines them (``acc`` is top-1 on the test split):

* **HLR** (hard-label recovery) = acc(full real train set, hard labels) − acc(synthetic, hard labels). Lower is
  better: how much of the full-data accuracy the images alone (no soft labels) fail to recover.
* **IOR** (improvement over random) = acc(synthetic, recipe) − acc(random real subset at the same IPC, same recipe).
  Higher is better.
* **LRS** (label-robust score) = N(α), α = w·IOR − (1 − w)·HLR, w = 0.5.
* **ARS** (augmentation-robust score) = N(β), β = γ·(syn − rdm with the recipe's augmentation)
  + (1 − γ)·(syn − rdm without augmentation), γ = 0.5, both under the recipe's labels.
* N(x) = (eˣ − e⁻¹)/(e − e⁻¹), which maps x ∈ [−1, 1] monotonically onto [0, 1] (N(−1) = 0, N(0) = 0.2689,
  N(1) = 1).

Units (the fix): every accuracy enters as a **fraction** in [0, 1], so HLR, IOR, α and β lie in [−1, 1] and N maps
them into [0, 1] as the formula intends. DD-Ranking's code (v0.2.0, ``ddranking/metrics/*``) feeds percentages:
with a typical HLR of 30 points and IOR of 2, α = −14, so its LRS is N(−14) = −0.1565, negative and saturated, the
same for any method with HLR ≳ 5 points. Here an HLR of 30 points is 0.30, α = 0.5·0.02 − 0.5·0.30 = −0.14 and
LRS = N(−0.14) = 0.2134. HLR and IOR are *reported* in percentage points (×100) because that is how papers print
accuracy; LRS and ARS are reported as the [0, 1] values.

Other differences from DD-Ranking's code, each deliberate:

* **Paired seeds.** Each score is computed per evaluation seed from the rows of that seed (ddbench seeds make the
  syn and random students see the same augmentation stream, :func:`ddbench.evaluate.augment_seed`), then
  reported as mean ± population std over seeds. DD-Ranking draws time-based seeds, so its rounds are not
  repeatable and syn/random are not paired.
* **Final-epoch accuracy, no test-set selection.** DD-Ranking takes the best test accuracy over epochs and over a
  5-value lr sweep; ddbench uses the final epoch, and lr/epoch selection only on a held-out part of the train
  split (``--select``).
* **The real reference** is trained by the same student loop per (dataset, arch, recipe) and cached as an
  artifact; DD-Ranking ships two cached pairs (ImageNet-1K and Tiny-ImageNet ResNet-18-BN) and otherwise retrains.
* **"Without augmentation"** is the recipe with ``aug = []`` and ``mix = "none"`` (protocol variant ``~noaug``); the
  labels (online teacher or stored) stay the recipe's.

This module is pure arithmetic (no torch, no store) so each formula can be checked by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Default weight of IOR in LRS (DD-Ranking's ``lrs_lambda``) and of the augmented difference in ARS.
DEFAULT_W = 0.5
DEFAULT_GAMMA = 0.5
SCORES = ("hlr", "ior", "lrs", "ars")
#: Scores reported in percentage points (the others are [0, 1] values).
POINT_SCORES = frozenset({"hlr", "ior"})
#: Scores where smaller is better.
LOWER_IS_BETTER = frozenset({"hlr"})
METRIC_PREFIX = "score"


def fraction(percent: float) -> float:
    """An accuracy in percent (how the store holds it) as a fraction; refuses values outside [0, 100]."""
    value = float(percent)
    if not 0.0 <= value <= 100.0 or math.isnan(value):
        raise ValueError(f"accuracy {percent!r} is not a percentage in [0, 100]")
    return value / 100.0


def normalize(x: float) -> float:
    """DD-Ranking's map N(x) = (eˣ − e⁻¹)/(e − e⁻¹): [−1, 1] → [0, 1], monotone."""
    return (math.exp(x) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def hlr(real: float, syn_hard: float) -> float:
    """Hard-label recovery on fractions: acc(real, hard) − acc(syn, hard)."""
    return real - syn_hard


def ior(syn: float, rand: float) -> float:
    """Improvement over random on fractions: acc(syn, recipe) − acc(random, recipe)."""
    return syn - rand


def lrs(hlr_value: float, ior_value: float, w: float = DEFAULT_W) -> float:
    """Label-robust score N(w·IOR − (1 − w)·HLR), both inputs fractions."""
    return normalize(w * ior_value - (1.0 - w) * hlr_value)


def ars(diff_aug: float, diff_noaug: float, gamma: float = DEFAULT_GAMMA) -> float:
    """Augmentation-robust score N(γ·(syn − rdm)_aug + (1 − γ)·(syn − rdm)_noaug), inputs fractions."""
    return normalize(gamma * diff_aug + (1.0 - gamma) * diff_noaug)


@dataclass
class Score:
    """One score of one (run, arch, recipe): per-seed values, their mean ± population std, and the inputs.

    Attributes:
        name: ``hlr``, ``ior``, ``lrs`` or ``ars``.
        per_seed: eval seed → value in the reported unit (points for HLR/IOR, [0, 1] for LRS/ARS).
        inputs: eval seed → the accuracies (%) the value was computed from, named.
    """

    name: str
    per_seed: dict[int, float]
    inputs: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        values = list(self.per_seed.values())
        return sum(values) / len(values) if values else math.nan

    @property
    def std(self) -> float | None:
        values = list(self.per_seed.values())
        if len(values) < 2:
            return None
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))

    @property
    def unit(self) -> str:
        return "points" if self.name in POINT_SCORES else "score in [0, 1]"

    def text(self) -> str:
        digits = 1 if self.name in POINT_SCORES else 3
        std = self.std
        return f"{self.mean:.{digits}f}" + (f"±{std:.{digits}f}" if std is not None else "")

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "mean": self.mean, "std": self.std, "unit": self.unit,
                "per_seed": {str(k): v for k, v in self.per_seed.items()},
                "inputs": {str(k): v for k, v in self.inputs.items()}}  # fmt: skip


def compute_scores(
    accuracies: Mapping[str, Mapping[int, float]],
    real: float | None,
    *,
    w: float = DEFAULT_W,
    gamma: float = DEFAULT_GAMMA,
) -> dict[str, Score]:
    """Every score whose inputs are present, per seed, from accuracies in percent.

    Args:
        accuracies: input name → eval seed → top-1 (%). Names: ``syn_hard`` (synthetic, hard-label protocol),
            ``syn`` and ``rand`` (recipe), ``syn_noaug`` and ``rand_noaug`` (recipe without augmentation).
        real: the real-data reference top-1 (%) of the same arch (mean over its seeds), or None.
        w, gamma: LRS and ARS weights.

    Returns:
        name → :class:`Score`, for the scores that could be computed from seeds present in all their inputs.
    """

    def seeds(*names: str) -> list[int]:
        sets = [set(accuracies.get(n, {})) for n in names]
        return sorted(set.intersection(*sets)) if sets and all(sets) else []

    def acc(name: str, seed: int) -> float:
        return fraction(accuracies[name][seed])

    out: dict[str, Score] = {}
    if real is not None:
        s = seeds("syn_hard")
        if s:
            out["hlr"] = Score("hlr", {k: 100 * hlr(fraction(real), acc("syn_hard", k)) for k in s},
                               {k: {"real": real, "syn_hard": accuracies["syn_hard"][k]} for k in s})  # fmt: skip
    s = seeds("syn", "rand")
    if s:
        out["ior"] = Score("ior", {k: 100 * ior(acc("syn", k), acc("rand", k)) for k in s},
                           {k: {"syn": accuracies["syn"][k], "rand": accuracies["rand"][k]} for k in s})  # fmt: skip
    if real is not None:
        s = seeds("syn_hard", "syn", "rand")
        if s:
            out["lrs"] = Score(
                "lrs",
                {k: lrs(hlr(fraction(real), acc("syn_hard", k)), ior(acc("syn", k), acc("rand", k)), w) for k in s},
                {k: {"real": real, **{n: accuracies[n][k] for n in ("syn_hard", "syn", "rand")}} for k in s},
            )
    names = ("syn", "rand", "syn_noaug", "rand_noaug")
    s = seeds(*names)
    if s:
        out["ars"] = Score(
            "ars",
            {
                k: ars(ior(acc("syn", k), acc("rand", k)), ior(acc("syn_noaug", k), acc("rand_noaug", k)), gamma)
                for k in s
            },
            {k: {n: accuracies[n][k] for n in names} for k in s},
        )
    return out


def metric_name(score: str, arch: str, recipe_key: str) -> str:
    """The run-metric name a score is stored under: ``score:<name>:<arch>:<recipe protocol key>``."""
    return f"{METRIC_PREFIX}:{score}:{arch}:{recipe_key}"


def parse_metric_name(name: str) -> tuple[str, str, str] | None:
    """``score:hlr:convnet:kd@cpu`` → ``("hlr", "convnet", "kd@cpu")``; None for other metrics."""
    parts = str(name).split(":", 3)
    return (parts[1], parts[2], parts[3]) if len(parts) == 4 and parts[0] == METRIC_PREFIX else None


__all__ = ["DEFAULT_GAMMA", "DEFAULT_W", "SCORES", "Score", "ars", "compute_scores", "fraction", "hlr", "ior", "lrs",
           "metric_name", "normalize", "parse_metric_name"]  # fmt: skip
