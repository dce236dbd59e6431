"""``ddbench verify``: published numbers beside ours, with a verdict and, when it fails, the reasons.

Two uses:

* **A report of every stored run** (:func:`compare_papers`): each row of ``leaderboards/papers/*.csv`` with a
  matching record (same method, dataset, ipc, student and protocol; our protocol may be a scaled profile of the
  paper's, ``dwa-cifar@cpu``) gives paper value, ours (mean over seeds and runs), difference, and whether ours lies
  within the paper's ±(2σ + 1) points. When it does not, :func:`reasons` says what differs from the paper's setting:
  the preset (a ``cpu`` profile shrinks epochs, seeds and teacher width), the epochs, the teacher's width and
  accuracy, the number of seeds.
* **A target list** (:func:`load_targets`, :func:`run_targets`): a TOML file of ``[[target]]`` tables naming a
  method, dataset, ipc, student, protocol, preset and seeds plus the expected top-1 (``expect`` and ``std``, or
  ``paper = true`` to take the published number). ``ddbench verify --targets FILE`` runs the evaluations a target is
  missing through the ordinary pipeline, then judges each one; any failure makes the command exit non-zero, so a
  release can be gated on it. ``ddbench/targets/cpu.toml`` is the cheap CPU list (digits, measured on the 2-core
  development machine), ``ddbench/targets/gpu.toml`` the paper presets.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddbench.config import BASE_PROFILE, ConfigError, load_toml

logger = logging.getLogger(__name__)

TARGETS_DIR = Path(__file__).parent / "targets"
#: Points added to 2σ: the tolerance a reproduction gets (σ = the published or expected std, 0 when not printed).
SLACK_POINTS = 1.0


def tolerance(std: float | None) -> float:
    """±(2σ + 1) points."""
    s = 0.0 if std is None or (isinstance(std, float) and math.isnan(std)) else float(std)
    return 2.0 * s + SLACK_POINTS


@dataclass
class Verdict:
    """One comparison: expected (paper or target) value, ours, and why they differ when they do."""

    name: str
    dataset: str
    method: str
    ipc: int
    arch: str
    protocol: str
    expected: float
    expected_std: float | None
    ours: float | None
    ours_std: float | None = None
    n: int = 0
    source: str = ""
    why: list[str] = field(default_factory=list)

    @property
    def diff(self) -> float | None:
        return None if self.ours is None else self.ours - self.expected

    @property
    def tol(self) -> float:
        return tolerance(self.expected_std)

    @property
    def status(self) -> str:
        if self.ours is None:
            return "missing"
        return "pass" if abs(self.ours - self.expected) <= self.tol + 1e-9 else "fail"

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "dataset": self.dataset, "method": self.method, "ipc": self.ipc,
                "arch": self.arch, "protocol": self.protocol, "expected": self.expected,
                "expected_std": self.expected_std, "ours": self.ours, "ours_std": self.ours_std, "n": self.n,
                "diff": self.diff, "tolerance": self.tol, "status": self.status, "why": self.why,
                "source": self.source}  # fmt: skip


def _base(protocol: str) -> tuple[str, str]:
    name, _, profile = str(protocol).partition("@")
    return name, profile or BASE_PROFILE


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    m = sum(values) / len(values)
    return m, (math.sqrt(sum((v - m) ** 2 for v in values) / len(values)) if len(values) > 1 else None)


def reasons(rows: Any, protocol: str, teachers: Any, paper_seeds: int | None = None) -> list[str]:
    """What differs between our rows' setting and the published one (empty when nothing we record does)."""
    from ddbench.protocol import load_protocol

    why: list[str] = []
    name, profile = _base(protocol)
    if profile != BASE_PROFILE:
        why.append(f"preset {profile}, not paper")
    try:
        ours, paper = load_protocol(name, profile=profile), load_protocol(name)
        if ours.epochs != paper.epochs:
            why.append(f"epochs {ours.epochs} vs paper {paper.epochs}")
    except ConfigError:
        pass  # a user protocol file no longer at hand: nothing to compare
    ids = sorted({t for t in rows.get("teacher_id", []) if isinstance(t, str)} |
                 {t for s in rows.get("eval_teachers", []) if isinstance(s, str) for t in s.split(", ")})  # fmt: skip
    for tid in ids:
        known = teachers[teachers["teacher_id"] == tid] if len(teachers) else teachers
        acc = float(known["test_top1"].iloc[0]) if len(known) and known["test_top1"].iloc[0] is not None else None
        narrow = re.match(r"(.+?)x(\d+(?:\.\d+)?)$", tid.split("-", 1)[0])  # ids: <arch>[x<width>]-<hash>-...
        if narrow:
            why.append(f"teacher {narrow.group(1)} at width ×{narrow.group(2)}"
                       + (f", test top-1 {acc:.1f}%" if acc is not None else ""))  # fmt: skip
        elif acc is not None and profile != BASE_PROFILE:
            why.append(f"teacher {tid} trained under the {profile} recipe, test top-1 {acc:.1f}%")
    n = int(rows["eval_seed"].nunique()) if len(rows) else 0
    if paper_seeds and n < paper_seeds:
        why.append(f"{n} eval seed(s) vs the protocol's {paper_seeds}")
    return why


def _ours(evaluations: Any) -> dict[tuple[str, str, int, str, str], Any]:
    """(dataset, method, ipc, arch, protocol key) → the successful rows of the latest protocol version."""
    out: dict[tuple[str, str, int, str, str], Any] = {}
    if not len(evaluations):
        return out
    ok = evaluations[evaluations["error"].isna() & evaluations["top1"].notna()]
    for key, rows in ok.groupby(["dataset", "method", "ipc", "arch", "protocol"], sort=False):
        latest = rows["protocol_version"].max()
        name = (str(key[0]), str(key[1]), int(key[2]), str(key[3]), str(key[4]))
        out[name] = rows[rows["protocol_version"] == latest]
    return out


def _verdict(name: str, key: tuple[str, str, int, str, str], expected: float, std: float | None, rows: Any,
             teachers: Any, source: str, against_paper: bool = True, seeds: int | None = None) -> Verdict:  # fmt: skip
    """Judge ``rows``; a failure against a published number lists the setting differences (:func:`reasons`), one
    against ddbench's own measurement (a target's ``expect``) means the same setting now gives another number."""
    from ddbench.protocol import load_protocol

    dataset, method, ipc, arch, protocol = key
    v = Verdict(name, dataset, method, ipc, arch, protocol, expected, std, None, source=source)
    if rows is not None and len(rows):
        v.ours, v.ours_std = _mean_std([float(x) for x in rows["top1"]])
        v.n = len(rows)
        if v.status == "fail" and against_paper:
            try:
                seeds = load_protocol(_base(protocol)[0]).eval_seeds
            except ConfigError:
                seeds = None
            v.why = reasons(rows, protocol, teachers, seeds) or ["unexplained: same preset, epochs and teachers"]
        elif v.status == "fail":
            v.why = ["same setting as the measured target: a code, dependency or device change moved the number"]
            if seeds and v.n < seeds:
                v.why.append(f"only {v.n} of {seeds} seeds succeeded")
    return v


def compare_papers(
    store: Any, *, dataset: str | None = None, paper_root: str | Path | None = None, unmatched: list | None = None
) -> list[Verdict]:
    """Every published row that has a matching record in ``store``, judged (see the module docstring).

    Args:
        unmatched: if given, filled with the (dataset, method, ipc, student, protocol) of our records that no
            published row matches, so a report can list every stored run.
    """
    import pandas as pd

    from ddbench.tables import load_paper_numbers

    evaluations = store.evaluations(dataset=dataset)
    ours = _ours(evaluations)
    teachers = store.teachers()
    verdicts = []
    matched: set[tuple[str, str, int, str, str]] = set()
    datasets = sorted({k[0] for k in ours})
    for ds in datasets:
        paper = load_paper_numbers(ds, root=paper_root)
        if not len(paper) or "protocol" not in paper.columns:
            continue
        for r in paper.to_dict("records"):
            if not r.get("protocol"):
                continue
            for key, rows in ours.items():
                same = key[:4] == (ds, r["method"], int(r["ipc"]), r["eval_arch"])
                if same and _base(key[4])[0] == r["protocol"]:
                    std = None if pd.isna(r["top1_std"]) else float(r["top1_std"])
                    source = f"{r['paper']}, {r['table']} ({r['row']})"
                    verdicts.append(_verdict(f"{r['method']} {ds} ipc{r['ipc']} {r['eval_arch']}", key,
                                             float(r["top1"]), std, rows, teachers, source))  # fmt: skip
                    matched.add(key)
    if unmatched is not None:
        unmatched.extend(k for k in ours if k not in matched)
    return verdicts


# -- targets --------------------------------------------------------------------------------------------------------
@dataclass
class Target:
    """One ``[[target]]`` of a targets file."""

    name: str
    method: str
    dataset: str
    ipc: int
    arch: str
    protocol: str
    preset: str = "cpu"
    seeds: tuple[int, ...] = (0,)
    seed: int = 0
    expect: float | None = None
    std: float | None = None
    paper: bool = False
    source: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)


TARGET_KEYS = {f for f in Target.__dataclass_fields__}


def targets_path(name: str | Path) -> Path:
    """A targets file: a path, or the name of a shipped list (``cpu``, ``gpu``)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = TARGETS_DIR / f"{name}.toml"
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in TARGETS_DIR.glob("*.toml")))
    raise ConfigError(f"no targets file {name!r}; give a path or one of: {known}")


def load_targets(name: str | Path) -> list[Target]:
    """The targets of a file, validated (unknown keys, a target with neither ``expect`` nor ``paper``)."""
    path = targets_path(name)
    data = load_toml(path)
    items = data.get("target")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: no [[target]] tables")
    out = []
    for i, item in enumerate(items):
        where = f"{path} target {i + 1}"
        unknown = sorted(set(item) - TARGET_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(TARGET_KEYS))}")
        missing = [k for k in ("name", "method", "dataset", "ipc", "arch", "protocol") if k not in item]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        t = Target(**{**item, "seeds": tuple(item.get("seeds", (0,)))})
        if t.expect is None and not t.paper:
            raise ConfigError(f"{where} ({t.name}): set `expect` (and `std`) or `paper = true`")
        out.append(t)
    return out


def _paper_value(t: Target) -> tuple[float, float | None, str]:
    from ddbench.tables import load_paper_numbers

    p = load_paper_numbers(t.dataset)
    base = _base(t.protocol)[0]
    hit = p[(p["method"] == t.method) & (p["ipc"] == t.ipc) & (p["eval_arch"] == t.arch)
            & (p.get("protocol", "") == base)]  # fmt: skip
    if not len(hit):
        raise ConfigError(f"target {t.name}: no published {t.method} {t.dataset} ipc{t.ipc} {t.arch} under {base}")
    r = hit.iloc[0]
    std = None if math.isnan(float(r["top1_std"])) else float(r["top1_std"])
    return float(r["top1"]), std, f"{r['paper']}, {r['table']} ({r['row']})"


def run_targets(targets: Sequence[Target], store: Any, *, device: str = "cpu", progress: Any = None) -> list[Verdict]:
    """Run each target's missing evaluations through the pipeline, then judge it."""
    import pandas as pd

    from ddbench.pipeline import EvalRequest, RunRequest, distill, evaluate_run, prepare, protocol_key, record_run
    from ddbench.protocol import load_protocol

    progress = progress or (lambda stage, done, total: None)

    teachers_frame = None
    out = []
    for t in targets:
        expected, std, source = (t.expect, t.std, t.source) if not t.paper else _paper_value(t)
        state = prepare(RunRequest(method=t.method, dataset=t.dataset, ipc=t.ipc, seed=t.seed, profile=t.preset,
                                   overrides=dict(t.overrides), device=device))  # fmt: skip
        distilled = distill(state, progress)
        record_run(state, distilled, store)
        request = EvalRequest(archs=[t.arch], protocols=[t.protocol], seeds=list(t.seeds))
        rows = evaluate_run(state, distilled, request, store, progress)
        proto = load_protocol(t.protocol, profile=t.preset)
        key = protocol_key(proto.name, proto.profile)
        frame = pd.DataFrame(rows)
        if len(frame):
            frame = frame[(frame["protocol"] == key) & frame["eval_seed"].isin(list(t.seeds)) & frame["error"].isna()
                          & (frame["protocol_version"] == proto.version)]  # fmt: skip
        teachers_frame = store.teachers() if teachers_frame is None else teachers_frame
        key5 = (state.dataset.id, t.method, t.ipc, t.arch, key)
        out.append(_verdict(t.name, key5, float(expected), std, frame, teachers_frame, source, against_paper=t.paper,
                            seeds=len(t.seeds)))  # fmt: skip
    return out


__all__ = ["SLACK_POINTS", "Target", "Verdict", "compare_papers", "load_targets", "reasons", "run_targets",
           "tolerance"]  # fmt: skip
