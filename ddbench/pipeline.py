"""The end-to-end pipeline behind ``ddbench run`` and ``ddbench eval``.

resolve config → teacher(s) → distil (cached artifact) → diversity metric → evaluate (each row cached) → store.

Every stage is an artifact keyed by what determines it, so re-running the same command recomputes nothing that
finished: the distilled set lives in ``$DDBENCH_HOME/runs/<dataset>/<method>/ipc<N>/<run_id>/artifact`` (its
shards beside it), and an evaluation row that is already in the store is skipped. A killed run resumes at the
next unfinished shard or evaluation row.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddbench.config import BASE_PROFILE, canonical_json, config_hash, load_toml, resolve
from ddbench.data import Dataset, load_dataset
from ddbench.distilled import CorruptArtifact, DistilledSet
from ddbench.io import atomic_file, home, lock
from ddbench.method import DistillContext, Method
from ddbench.plugins import METHODS
from ddbench.teachers import Teacher, TeacherSpec, get_teacher
from ddbench.version import __version__

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]

#: Student architectures of the default cross-architecture table: one per family the suite covers.
DEFAULT_EVAL_ARCHS = ("resnet18", "mobilenetv2", "shufflenetv2", "efficientnet_b0", "vgg11_bn")
#: The cpu profile keeps four families and drops the two whose depthwise convolutions are slowest on a CPU:
#: EfficientNet-B0 (~10x ResNet-18's step time at 8 px) and MobileNetV2 (6.6 img/s at 64 px on 2 cores, slower than
#: a full ResNet-18; docs/benchmarks.md), adding MTT's ConvNet. ``--eval-archs`` brings them back.
CPU_EVAL_ARCHS = ("convnet", "resnet18", "shufflenetv2", "vgg11_bn")


def default_eval_archs(profile: str) -> tuple[str, ...]:
    """Student architectures evaluated when ``--eval-archs`` is not given."""
    return DEFAULT_EVAL_ARCHS if profile == BASE_PROFILE else CPU_EVAL_ARCHS


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def default_profile(device: torch.device) -> str:
    """``paper`` on CUDA, ``cpu`` elsewhere: the profile ``--preset auto`` picks (and records)."""
    return BASE_PROFILE if device.type == "cuda" else "cpu"


def protocol_key(name: str, profile: str) -> str:
    """The protocol id stored with each record; non-paper profiles are suffixed so tables never mix them."""
    return name if profile == BASE_PROFILE else f"{name}@{profile}"


@dataclass
class RunRequest:
    """Everything ``ddbench run`` was asked for (the resolved form is stored as ``run.json``)."""

    method: str
    dataset: str
    ipc: int = 10
    seed: int = 0
    profile: str = BASE_PROFILE
    num_classes: int | None = None
    data_root: str | None = None
    config_file: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"


@dataclass
class RunState:
    """A resolved run: its id, directory, method instance, dataset and teachers."""

    request: RunRequest
    run_id: str
    run_dir: Path
    method: Method
    config_json: str
    dataset: Dataset
    teachers: list[Teacher]

    @property
    def artifact_dir(self) -> Path:
        return self.run_dir / "artifact"


def resolve_method_config(request: RunRequest, dataset: Dataset) -> Method:
    """Instantiate the method with its config resolved from defaults, presets, ``--config`` and ``--set``."""
    cls = METHODS.get(request.method)
    preset_path = cls.preset_path()
    preset = load_toml(preset_path) if preset_path else None
    resolved = resolve(
        cls.Config,
        preset=preset,
        preset_source=str(preset_path),
        dataset=dataset.id,
        ipc=request.ipc,
        profile=request.profile if preset is not None else BASE_PROFILE,
        config_file=request.config_file,
        overrides=request.overrides,
    )
    for layer in resolved.layers:
        logger.info("config layer %s: %s", layer.source, dict(layer.values))
    return cls(resolved.config)


def prepare(request: RunRequest, progress: ProgressFn = _no_progress) -> RunState:
    """Load data, resolve the config and prepare teachers; compute the run id (nothing is distilled yet)."""
    device = torch.device(request.device)
    dataset = load_dataset(request.dataset, request.data_root, request.num_classes)
    method = resolve_method_config(request, dataset)
    teachers = [
        get_teacher(dataset, spec, profile=request.profile, device=device, progress=progress)
        for spec in method.teachers(dataset)
    ]
    config_json = canonical_json(method.config)
    identity = {
        "method": method.name,
        "method_version": method.version,
        "config": json.loads(config_json),
        "dataset": dataset.id,
        "class_hash": dataset.class_hash,
        "ipc": request.ipc,
        "seed": request.seed,
        "teachers": [t.sha256 for t in teachers],
    }
    run_id = f"{method.name}-{config_hash(identity, 12)}"
    run_dir = home() / "runs" / dataset.id / method.name / f"ipc{request.ipc}" / run_id
    return RunState(request, run_id, run_dir, method, config_json, dataset, teachers)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def distill(state: RunState, progress: ProgressFn = _no_progress) -> DistilledSet:
    """Return the run's distilled set, from its artifact if a valid one exists, else by running the method."""
    with lock(state.run_dir):
        if (state.artifact_dir / "manifest.json").is_file():
            try:
                return DistilledSet.load(state.artifact_dir)
            except CorruptArtifact as exc:
                logger.warning("%s; distilling again", exc)
        device = torch.device(state.request.device)
        ctx = DistillContext(
            dataset=state.dataset,
            teachers=state.teachers,
            ipc=state.request.ipc,
            config=state.method.config,
            device=device,
            seed=state.request.seed,
            workdir=state.run_dir,
            logger=logging.getLogger(f"ddbench.method.{state.method.name}"),
            progress=progress,
        )
        write_run_json(state)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        result = state.method.distill(ctx)
        wall = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mb()
        result.meta.update(
            {
                "method": state.method.name,
                "method_version": state.method.version,
                "config": json.loads(state.config_json),
                "config_hash": config_hash(state.method.config),
                "run_id": state.run_id,
                "dataset": state.dataset.id,
                "class_hash": state.dataset.class_hash,
                "classes": list(state.dataset.classes),
                "mean": list(state.dataset.spec.mean),
                "std": list(state.dataset.spec.std),
                "ipc": state.request.ipc,
                "seed": state.request.seed,
                "profile": state.request.profile,
                "teachers": [{"id": t.id, "arch": t.arch, "sha256": t.sha256} for t in state.teachers],
                "ddbench_version": __version__,
                "torch_version": torch.__version__,
                "device": str(device),
                "wall_time_s": wall,
                "peak_mem_mb": peak,
            }
        )
        _check_distilled(result, state)
        result.save(state.artifact_dir)
        return result


def _check_distilled(result: DistilledSet, state: RunState) -> None:
    ds = state.dataset
    shape = (ds.channels, ds.img_size, ds.img_size)
    if tuple(result.images.shape[1:]) != shape:
        raise RuntimeError(
            f"{state.method.name} returned images of shape {tuple(result.images.shape[1:])}, not {shape}"
        )
    if result.labels.min() < 0 or result.labels.max() >= ds.num_classes:
        raise RuntimeError(f"{state.method.name} returned labels outside 0..{ds.num_classes - 1}")
    if not torch.isfinite(result.images.float()).all():
        raise RuntimeError(f"{state.method.name} returned non-finite images")


def write_run_json(state: RunState) -> None:
    """``run.json`` holds the request, so ``ddbench eval RUN`` can rebuild the run without the original flags."""
    with atomic_file(state.run_dir / "run.json") as tmp:
        tmp.write_text(json.dumps({"run_id": state.run_id, "request": asdict(state.request)}, indent=2))
    with atomic_file(state.run_dir / "config.json") as tmp:
        tmp.write_text(json.dumps(json.loads(state.config_json), indent=2, sort_keys=True))


def find_run(run: str) -> Path:
    """A run directory from a path or a run id (searched under ``$DDBENCH_HOME/runs``)."""
    from ddbench.errors import UserError

    path = Path(run)
    if (path / "run.json").is_file():
        return path
    matches = sorted((home() / "runs").glob(f"*/*/*/{run}*"))
    matches = [m for m in matches if (m / "run.json").is_file()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UserError(f"no run {run!r} under {home() / 'runs'}; pass a run directory or an id printed by ddbench run")
    raise UserError(f"run id {run!r} is ambiguous: {', '.join(m.name for m in matches)}")


def load_request(run_dir: Path) -> RunRequest:
    data = json.loads((run_dir / "run.json").read_text())
    return RunRequest(**data["request"])


# -- evaluation ---------------------------------------------------------------------------------------------------
@dataclass
class EvalRequest:
    """Which students, under which protocol and seeds, to score a run's distilled set with."""

    archs: Sequence[str] | None = None  # None: default_eval_archs(profile)
    protocol: str | None = None  # None: the dataset's default protocol
    seeds: Sequence[int] | None = None  # None: range(protocol.eval_seeds)
    amp: bool = False
    channels_last: bool = False


def eval_teachers(state: RunState, protocol: Any, distilled: DistilledSet, progress: ProgressFn) -> list[Any]:
    """Teacher models a protocol needs for soft labels: the artifact's named teachers or the dataset default."""
    mode = protocol.label_mode
    if mode == "artifact":
        mode = distilled.soft_label.mode
    if mode not in ("teacher", "ensemble"):
        return []
    archs = list(distilled.soft_label.teachers) or [""]
    if mode == "teacher":
        archs = archs[:1]
    device = torch.device(state.request.device)
    out = []
    for arch in archs:
        known = next((t for t in state.teachers if t.arch == arch or (not arch and t.spec.arch == "")), None)
        teacher = known or get_teacher(
            state.dataset, TeacherSpec(arch=arch), profile=state.request.profile, device=device, progress=progress
        )
        out.append(teacher)
    return out


def evaluate_run(
    state: RunState,
    distilled: DistilledSet,
    request: EvalRequest,
    store: Any,
    progress: ProgressFn = _no_progress,
) -> list[dict[str, Any]]:
    """Evaluate every (arch, seed) row not yet in ``store``; return all rows of this run and protocol."""
    from ddbench.evaluate import evaluate
    from ddbench.models import ARCHS
    from ddbench.protocol import load_protocol

    name = request.protocol or state.dataset.spec.default_protocol
    protocol = load_protocol(name, profile=state.request.profile)
    key = protocol_key(protocol.name, protocol.profile)
    seeds = list(request.seeds) if request.seeds is not None else list(range(protocol.eval_seeds))
    archs = [ARCHS.canonical(a) for a in (request.archs or default_eval_archs(state.request.profile))]
    teachers = eval_teachers(state, protocol, distilled, progress)
    for t in teachers:
        store.add_teacher(**t.record())
    models = [t.model for t in teachers]
    device = torch.device(state.request.device)
    for seed in seeds:
        todo = [a for a in archs if not store.has_evaluation(state.run_id, a, key, protocol.version, seed)]
        if not todo:
            continue
        results = evaluate(
            distilled,
            state.dataset,
            todo,
            protocol,
            seed=seed,
            device=device,
            teacher=models if len(models) > 1 else (models[0] if models else None),
            amp=request.amp,
            channels_last=request.channels_last,
            progress=progress,
        )
        for r in results:
            store.add_evaluation(
                run_id=state.run_id,
                arch=r.arch,
                protocol=key,
                protocol_version=protocol.version,
                eval_seed=seed,
                top1=r.top1,
                top5=r.top5,
                best_top1=r.best_top1,
                wall_time_s=r.wall_time_s,
                peak_mem_mb=r.peak_mem_mb,
                error=r.error,
                extra_json=json.dumps(
                    {"protocol_hash": protocol.hash, "teachers": [t.id for t in teachers], "curve": r.curve},
                    default=str,
                ),
            )
    return [
        row
        for row in store.evaluations(run_id=state.run_id).to_dict("records")
        if row["protocol"] == key and row["arch"] in archs
    ]


def record_run(state: RunState, distilled: DistilledSet, store: Any) -> None:
    """Insert (or refresh) this run's row in the results store."""
    from ddbench.store import environment

    env = environment()
    meta = distilled.meta
    for t in state.teachers:
        store.add_teacher(**t.record())
    teacher = state.teachers[0] if state.teachers else None
    store.add_run(
        run_id=state.run_id,
        method=state.method.name,
        method_version=state.method.version,
        dataset=state.dataset.id,
        class_hash=state.dataset.class_hash,
        ipc=state.request.ipc,
        distill_seed=state.request.seed,
        config_json=state.config_json,
        config_hash=config_hash(state.method.config),
        teacher_id=teacher.id if teacher else None,
        teacher_sha256=teacher.sha256 if teacher else None,
        artifact_path=str(state.artifact_dir),
        ddbench_version=__version__,
        git_sha=env.get("git_sha"),
        torch_version=torch.__version__,
        device=state.request.device,
        wall_time_s=meta.get("wall_time_s"),
        peak_mem_mb=meta.get("peak_mem_mb"),
        status="distilled",
    )


def record_diversity(state: RunState, distilled: DistilledSet, store: Any) -> dict[str, float]:
    """DWA's feature-distance diversity (Eq. 20) of the distilled set under the unperturbed default teacher."""
    from ddbench.ops.diversity import diversity_metrics

    existing = store.metrics(run_id=state.run_id)
    if len(existing) and "feat_dist_mean" in set(existing["name"]):
        return dict(zip(existing["name"], existing["value"]))
    device = torch.device(state.request.device)
    teacher = (
        state.teachers[0]
        if state.teachers
        else get_teacher(state.dataset, TeacherSpec(), profile=state.request.profile, device=device)
    )
    metrics = diversity_metrics(teacher.model, distilled, state.dataset, seed=state.request.seed, device=device)
    for name, value in metrics.items():
        if isinstance(value, (int, float)):
            store.add_metric(
                run_id=state.run_id, name=name, value=float(value), extra_json=json.dumps({"teacher": teacher.id})
            )
    return metrics
