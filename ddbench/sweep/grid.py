"""A sweep's grid (flags or a TOML file) and its expansion into the DAG of units.

teacher → distil (shards + artifact) → eval (protocol × arch × eval seed), one distil unit per
(method, dataset, ipc, seed). The expansion resolves every run with :func:`ddbench.pipeline.prepare` (so every
check that can fail, and the run id, come before anything is submitted) and reads the cache to mark each unit
cached or not; nothing is trained.

A sweep file holds the same keys as the flags::

    methods = ["random", "dwa"]
    datasets = ["digits"]
    ipc = [10]
    seeds = [0, 1]            # distillation seeds: one run each
    archs = ["convnet", "resnet18"]
    protocols = ["hard"]
    eval_seeds = [0]          # default: each protocol's eval_seeds
    preset = "cpu"
    [set]                     # method config overrides for every method ...
    [set.dwa]                 # ... or for one
    iterations = 20
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ddbench.config import ConfigError, config_hash, load_toml
from ddbench.pipeline import RunRequest
from ddbench.sweep.units import Unit, is_cached

logger = logging.getLogger(__name__)


@dataclass
class SweepSpec:
    """The grid. ``None`` means the pipeline's default (archs and protocols per run, eval seeds per protocol).

    Attributes:
        overrides: method config overrides, ``{"*": {...}, "<method>": {...}}`` (the method's own win).
    """

    methods: list[str]
    datasets: list[str] = field(default_factory=lambda: ["digits"])
    ipc: list[int] = field(default_factory=lambda: [10])
    seeds: list[int] = field(default_factory=lambda: [0])
    archs: list[str] | None = None
    protocols: list[str] | None = None
    eval_seeds: list[int] | None = None
    preset: str = "auto"
    device: str = "cpu"
    num_classes: int | None = None
    data_root: str | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    amp: bool = False
    channels_last: bool = False

    def method_overrides(self, method: str) -> dict[str, Any]:
        return {**self.overrides.get("*", {}), **self.overrides.get(method, {})}


_LIST_KEYS = {"methods": str, "datasets": str, "ipc": int, "seeds": int, "archs": str, "protocols": str,
              "eval_seeds": int}  # fmt: skip


def load_sweep_file(path: str | Path) -> dict[str, Any]:
    """The keys of a sweep TOML file, checked: lists of the right type, known keys, ``[set]`` tables."""
    data = load_toml(path)
    known = {f.name for f in fields(SweepSpec)} | {"set"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in _LIST_KEYS:
            value = value if isinstance(value, list) else [value]
            if not all(isinstance(v, _LIST_KEYS[key]) for v in value):
                raise ConfigError(f"{path}: {key} must be a list of {_LIST_KEYS[key].__name__}")
            out[key] = value
        elif key == "set":
            out["overrides"] = split_overrides(value, str(path))
        else:
            out[key] = value
    return out


def split_overrides(table: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """``{"iterations": 5, "dwa": {"rho": 0.1}}`` → ``{"*": {"iterations": 5}, "dwa": {"rho": 0.1}}``.

    Dotted flag keys (``--set dwa.iterations=5``) arrive as ``{"dwa.iterations": 5}`` and are split the same way.
    """
    out: dict[str, dict[str, Any]] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.setdefault(key, {}).update(value)
        elif "." in key:
            method, _, name = key.partition(".")
            out.setdefault(method, {})[name] = value
        else:
            out.setdefault("*", {})[key] = value
    if not all(isinstance(k, str) for k in out):
        raise ConfigError(f"{where}: override keys must be names")
    return out


# -- expansion ------------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """The expanded DAG: units in submission order and which of them the cache already holds."""

    units: list[Unit]
    cached: set[str]

    def by_uid(self) -> dict[str, Unit]:
        return {u.uid: u for u in self.units}

    def run_dirs(self) -> list[Path]:
        return list(dict.fromkeys(u.run_dir for u in self.units if u.run_dir is not None))


def _teacher_unit(dataset: Any, spec: Any, request: RunRequest, units: dict[str, Unit]) -> str | None:
    from ddbench.teachers import teacher_address

    address = teacher_address(dataset, spec, request.profile)
    if address is None:
        return None  # imported (torchvision), never trained
    folder = address[-1]
    uid = f"teacher:{dataset.id}/{folder.name}"
    units.setdefault(uid, Unit("teacher", uid, request, teacher=spec, teacher_folder=folder))
    return uid


def _eval_teacher_deps(dataset: Any, protocol: Any, request: RunRequest, units: dict[str, Unit]) -> tuple[str, ...]:
    """The dataset's default teacher when a protocol's own label mode needs one (``artifact`` ones use the set's)."""
    from ddbench.labels import LABEL_MODES
    from ddbench.method import TeacherSpec
    from ddbench.protocol import ARTIFACT_LABEL_MODE

    if protocol.label_mode == ARTIFACT_LABEL_MODE or not LABEL_MODES.get(protocol.label_mode).uses_teachers:
        return ()
    uid = _teacher_unit(dataset, TeacherSpec(), request, units)
    return (uid,) if uid else ()


def expand(spec: SweepSpec) -> Plan:
    """Every unit of the grid, teachers first, each marked cached or not (see :func:`ddbench.sweep.units.is_cached`).

    Raises:
        ConfigError / UserError: the first run or protocol that cannot be resolved, before anything runs.
    """
    import torch

    from ddbench.method import TeacherSpec
    from ddbench.models import ARCHS
    from ddbench.pipeline import default_eval_archs, default_profile, default_protocols, prepare, protocol_key
    from ddbench.protocol import load_protocol

    profile = default_profile(torch.device(spec.device)) if spec.preset == "auto" else spec.preset
    teachers: dict[str, Unit] = {}
    runs: list[Unit] = []
    evals: list[Unit] = []
    for dataset_id in spec.datasets:
        for method in spec.methods:
            for ipc in spec.ipc:
                for seed in spec.seeds:
                    request = RunRequest(method=method, dataset=dataset_id, ipc=ipc, seed=seed, profile=profile,
                                         num_classes=spec.num_classes, data_root=spec.data_root,
                                         overrides=spec.method_overrides(method), device=spec.device)  # fmt: skip
                    state = prepare(request)
                    # the diversity metric of a method without teachers uses the dataset's default teacher
                    specs = state.teacher_specs or [TeacherSpec()]
                    deps = tuple(u for s in specs if (u := _teacher_unit(state.dataset, s, request, teachers)))
                    distil_uid = f"distil:{state.run_id}"
                    runs.append(Unit("distil", distil_uid, request, deps=deps, run_dir=state.run_dir))
                    archs = spec.archs or list(default_eval_archs(profile, state.method, state.dataset.id))
                    for name in spec.protocols or default_protocols(state):
                        protocol = load_protocol(name, profile=profile)
                        key = protocol_key(protocol.name, protocol.profile)
                        extra = _eval_teacher_deps(state.dataset, protocol, request, teachers)
                        seeds = spec.eval_seeds if spec.eval_seeds is not None else range(protocol.eval_seeds)
                        for arch in (ARCHS.canonical(a) for a in archs):
                            for eval_seed in seeds:
                                uid = f"eval:{state.run_id}:{key}:{arch}:s{eval_seed}"
                                evals.append(Unit("eval", uid, request, deps=(distil_uid, *extra), protocol=name,
                                                  protocol_key=key, protocol_version=protocol.version,
                                                  protocol_hash=protocol.hash, arch=arch, eval_seed=int(eval_seed),
                                                  run_dir=state.run_dir, amp=spec.amp,
                                                  channels_last=spec.channels_last))  # fmt: skip
    units = [*teachers.values(), *runs, *evals]
    seen: set[str] = set()
    unique = [u for u in units if not (u.uid in seen or seen.add(u.uid))]
    cached = {u.uid for u in unique if is_cached(u)}
    logger.info("sweep %s: %d units, %d cached", config_hash([u.uid for u in unique], 8), len(unique), len(cached))
    return Plan(unique, cached)


def dependents(plan: Plan) -> dict[str, list[str]]:
    """uid → the uids that wait on it."""
    out: dict[str, list[str]] = {u.uid: [] for u in plan.units}
    for u in plan.units:
        for d in u.deps:
            out.setdefault(d, []).append(u.uid)
    return out


def check_names(spec: SweepSpec) -> None:
    """Empty grid axes are a one-line error (an empty sweep is always a typo)."""
    for name in ("methods", "datasets", "ipc", "seeds"):
        if not getattr(spec, name):
            raise ConfigError(f"the sweep has no {name}; give --{name.replace('_', '-')} or set it in the sweep file")


__all__: Sequence[str] = ["Plan", "SweepSpec", "check_names", "dependents", "expand", "load_sweep_file",
                          "split_overrides"]  # fmt: skip
