"""The end-to-end pipeline behind ``ddbench run`` and ``ddbench eval``.

resolve request → checks → teacher(s) → distil (cached shards + artifact) → diversity → evaluate (each row cached)
→ store.

Every stage is an artifact keyed by what determines it, so re-running the same command recomputes nothing that
finished: the distilled set lives in ``$DDBENCH_HOME/runs/<dataset>/<method>/ipc<N>/<run_id>/artifact`` (its
shards beside it), and an evaluation row that is already in the store is skipped. A killed run resumes at the
next unfinished shard or evaluation row.

The run id comes from the request alone: method and version, resolved config, the data identity (dataset, class
order and the files' fingerprint, so another copy of a dataset never reuses a run), ipc, seed, and the *keys* of the
teachers the method asks for. Teachers train only when the distillation (or an evaluation) needs them, and every
check that can fail (ipc, profile, a method's teacher requirements) runs before any of that work.

Concurrency: shards carry their own locks (:meth:`ddbench.method.DistillContext.shards`), so two processes on one
run split its shards; the assembled artifact is written under its own lock; each evaluation unit (run, protocol,
arch, seed, soft-label teachers) is computed under a lock, so identical commands started together train each
student once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import resource
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddbench.config import BASE_PROFILE, ConfigError, canonical_json, config_hash, load_toml, profiles_in, resolve
from ddbench.data import Dataset, load_dataset
from ddbench.data.identity import dataset_key
from ddbench.distilled import CorruptArtifact, DistilledSet
from ddbench.errors import UserError
from ddbench.io import atomic_file, clean_stale, home, lock, try_lock
from ddbench.method import DistillContext, Method, TeacherSpec
from ddbench.plugins import METHODS
from ddbench.teachers import (
    Teacher,
    get_teacher,
    is_torchvision_default,
    load_teacher,
    resolve_teacher,
    teacher_dir,
)
from ddbench.version import __version__

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]

#: Student architectures of the default cross-architecture table: one per family the suite covers.
DEFAULT_EVAL_ARCHS = ("resnet18", "mobilenetv2", "shufflenetv2", "efficientnet_b0", "vgg11_bn")
#: The cpu profile keeps four families and drops the two whose depthwise convolutions are slowest on a CPU:
#: EfficientNet-B0 (~10x ResNet-18's step time at 8 px) and MobileNetV2 (6.6 img/s at 64 px on 2 cores, slower than
#: a full ResNet-18; docs/benchmarks.md), adding MTT's ConvNet. ``--eval-archs`` brings them back.
CPU_EVAL_ARCHS = ("convnet", "resnet18", "shufflenetv2", "vgg11_bn")
#: Profiles every shipped preset, protocol and recipe understands (a method preset may add its own).
KNOWN_PROFILES = (BASE_PROFILE, "cpu")


def default_eval_archs(profile: str, method: Method | None = None, dataset: str | None = None) -> tuple[str, ...]:
    """Student architectures evaluated when ``--eval-archs`` is not given.

    Under the paper profile a method may name its paper's cross-architecture set (DWA Tables 4–5 and 9);
    otherwise the suite's default families. The cpu profile always uses :data:`CPU_EVAL_ARCHS`.
    """
    if profile != BASE_PROFILE:
        cpu = method.cpu_students(dataset) if method is not None else None
        return tuple(cpu) if cpu else CPU_EVAL_ARCHS
    paper = method.paper_students(dataset) if method is not None and dataset is not None else None
    return tuple(paper) if paper else DEFAULT_EVAL_ARCHS


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
    allow_short_classes: bool = False
    holdout_per_class: int = 0


@dataclass
class RunState:
    """A resolved run: its id, directory, method instance, dataset, and the teachers it asks for.

    ``teachers`` is filled by :meth:`load_teachers` (training them if needed), only when a stage needs them.
    """

    request: RunRequest
    run_id: str
    run_dir: Path
    method: Method
    config_json: str
    dataset: Dataset
    teacher_specs: list[TeacherSpec]
    teachers: list[Teacher] = field(default_factory=list)
    data_checks: dict[str, Any] = field(default_factory=dict)

    @property
    def artifact_dir(self) -> Path:
        return self.run_dir / "artifact"

    def load_teachers(self, progress: ProgressFn = _no_progress) -> list[Teacher]:
        """The method's teachers, from the cache or trained now (once per state)."""
        if len(self.teachers) != len(self.teacher_specs):
            device = torch.device(self.request.device)
            self.teachers = [
                get_teacher(self.dataset, spec, profile=self.request.profile, device=device, progress=progress)
                for spec in self.teacher_specs
            ]
        return self.teachers


def check_profile(profile: str, preset: dict[str, Any] | None) -> None:
    """An unknown profile is an error whatever the command does next (``--no-eval`` included)."""
    known = set(KNOWN_PROFILES) | (profiles_in(preset) if preset else set())
    if profile not in known:
        raise ConfigError(f"--preset {profile!r} is not a known profile; use one of auto, {', '.join(sorted(known))}")


def resolve_method_config(request: RunRequest, dataset: Dataset) -> Method:
    """Instantiate the method with its config resolved from defaults, presets, ``--config`` and ``--set``."""
    cls = METHODS.get(request.method)
    preset_path = cls.preset_path()
    preset = load_toml(preset_path) if preset_path else None
    check_profile(request.profile, preset)
    resolved = resolve(
        cls.Config,
        preset=preset,
        preset_source=str(preset_path),
        dataset=dataset.id,
        ipc=request.ipc,
        profile=request.profile if preset is not None and request.profile in profiles_in(preset) else BASE_PROFILE,
        config_file=request.config_file,
        overrides=request.overrides,
    )
    for layer in resolved.layers:
        logger.info("config layer %s: %s", layer.source, dict(layer.values))
    return cls(resolved.config)


def check_run_ipc(dataset: Dataset, ipc: int, needed: int, allow_short_classes: bool) -> dict[str, Any]:
    """ipc ≥ 1, and every class has the ``needed`` real images the method takes (unless ``--allow-short-classes``).

    Returns:
        ``{"short_classes": {class: count}}`` when short classes were allowed (recorded with the run), else ``{}``.
    """
    from ddbench.data import check_ipc

    if ipc < 1:
        raise UserError(f"--ipc must be a positive number of images per class, got {ipc}")
    if needed <= 0:
        return {}
    short = check_ipc(dataset, needed, allow_short_classes=allow_short_classes)
    return short if short.get("short_classes") else {}


def teacher_identity(dataset: Dataset, spec: TeacherSpec, profile: str) -> dict[str, Any]:
    """What determines a requested teacher, without training it: arch, kwargs, recipe hash, seed."""
    from ddbench.models import ARCHS

    arch = ARCHS.canonical(spec.arch or dataset.spec.default_teacher)
    if is_torchvision_default(dataset, arch, spec):
        return {"arch": arch, "source": "torchvision"}
    arch, protocol, _ = resolve_teacher(dataset, spec, profile)
    return {
        "arch": arch,
        "model_kwargs": spec.kwargs,
        "recipe_hash": protocol.hash,
        "seed": spec.seed,
        "width_mult": float(getattr(protocol, "width_mult", 1.0)),
    }


def check_teachers(method: Method, dataset: Dataset, specs: Sequence[TeacherSpec], profile: str) -> None:
    """A BN-matching method gets teachers with BatchNorm, checked before anything trains."""
    from ddbench.models import has_batchnorm

    if not method.needs_bn_teacher:
        return
    for spec in specs:
        ident = teacher_identity(dataset, spec, profile)
        width = ident.get("width_mult", 1.0)
        shape = (dataset.num_classes, dataset.img_size, dataset.channels)
        if not has_batchnorm(ident["arch"], *shape, width, **spec.kwargs):
            raise UserError(
                f"{method.name} matches BatchNorm statistics, but teacher {ident['arch']} for {dataset.id} has no "
                "BatchNorm2d layer; choose a BN teacher (e.g. --set teacher_arch=convnet_bn or resnet18)"
            )


#: ``holdout_per_class`` value meaning "choose it from the data" (:func:`default_holdout`).
AUTO_HOLDOUT = -1


def default_holdout(dataset: Dataset) -> int:
    """Validation images per class for ``--select`` without ``--holdout``: 10 % of the smallest class, in [1, 50]."""
    smallest = min(int(dataset.class_indices(c).numel()) for c in range(dataset.num_classes))
    return max(1, min(50, round(0.1 * smallest)))


def prepare(request: RunRequest, progress: ProgressFn = _no_progress) -> RunState:
    """Load data, resolve the config, run every check and compute the run id; nothing is trained or distilled."""
    dataset = load_dataset(request.dataset, request.data_root, request.num_classes)
    if request.holdout_per_class == AUTO_HOLDOUT:
        request = dataclasses.replace(request, holdout_per_class=default_holdout(dataset))
    if request.holdout_per_class:  # the val split is carved before anything sees the train split
        dataset = dataset.with_holdout(request.holdout_per_class, seed=0)
    method = resolve_method_config(request, dataset)
    method.check_ipc(request.ipc)
    data_checks = check_run_ipc(
        dataset, request.ipc, method.min_real_per_class(request.ipc), request.allow_short_classes
    )
    specs = method.teachers(dataset)
    check_teachers(method, dataset, specs, request.profile)
    config_json = canonical_json(method.config)
    identity = {
        "method": method.name,
        "method_version": method.version,
        "config": json.loads(config_json),
        "data": dataset_key(dataset),
        "ipc": request.ipc,
        "seed": request.seed,
        "teachers": [teacher_identity(dataset, s, request.profile) for s in specs],
    }
    run_id = f"{method.name}-{config_hash(identity, 12)}"
    run_dir = home() / "runs" / dataset.id / method.name / f"ipc{request.ipc}" / run_id
    return RunState(request, run_id, run_dir, method, config_json, dataset, specs, data_checks=data_checks)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _load_valid(path: Path) -> DistilledSet | None:
    if not (path / "manifest.json").is_file():
        return None
    try:
        return DistilledSet.load(path)
    except CorruptArtifact as exc:
        logger.warning("%s; distilling again", exc)
        return None


def distill(state: RunState, progress: ProgressFn = _no_progress) -> DistilledSet:
    """Return the run's distilled set, from its artifact if a valid one exists, else by running the method.

    No run-wide lock is held while the method runs: its shards lock one by one, so several processes can fill one
    run. Only writing the assembled artifact is locked (the first writer wins; the others load its result).
    """
    if (found := _load_valid(state.artifact_dir)) is not None:
        return found
    device = torch.device(state.request.device)
    teachers = state.load_teachers(progress)
    ctx = DistillContext(
        dataset=state.dataset,
        teachers=teachers,
        ipc=state.request.ipc,
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
            "data": dataset_key(state.dataset),
            "class_hash": state.dataset.class_hash,
            "classes": list(state.dataset.classes),
            "mean": list(state.dataset.spec.mean),
            "std": list(state.dataset.spec.std),
            "ipc": state.request.ipc,
            "seed": state.request.seed,
            "profile": state.request.profile,
            "teachers": [{"id": t.id, "arch": t.arch, "sha256": t.sha256} for t in teachers],
            "ddbench_version": __version__,
            "torch_version": torch.__version__,
            "device": str(device),
            "wall_time_s": wall,
            "peak_mem_mb": peak,
            **state.data_checks,
        }
    )
    _check_distilled(result, state)
    with lock(state.artifact_dir):
        if (found := _load_valid(state.artifact_dir)) is not None:
            return found  # another process assembled the same shards first
        clean_stale(state.artifact_dir)  # a writer killed mid-save left its temporary folder
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
    """Which students, under which protocols and seeds, to score a run's distilled set with.

    Attributes:
        archs: student architectures (None: :func:`default_eval_archs`).
        protocols: protocol ids or files (None: :func:`default_protocols`).
        seeds: evaluation seeds (None: ``range(protocol.eval_seeds)`` per protocol).
        amp, channels_last: speed options.
        teachers: per protocol name, the online soft-label teachers to use instead of the artifact's own (the
            random baseline is scored with the method's teachers, so a table compares one recipe).
        dist: the DDP place of this process under torchrun (:mod:`ddbench.distributed`); None: one process.
        notes: per stored protocol key, fields added to each new row's ``extra_json`` (a ``--select`` record:
            grid, chosen value, validation numbers).
    """

    archs: Sequence[str] | None = None
    protocols: Sequence[str] | None = None
    seeds: Sequence[int] | None = None
    amp: bool = False
    channels_last: bool = False
    teachers: Mapping[str, Sequence[Teacher]] | None = None
    dist: Any = None
    notes: Mapping[str, Mapping[str, Any]] | None = None


def default_protocols(state: RunState) -> list[str]:
    """The paper profile scores under the method's paper protocol *and* a fair shared one; cpu under one fair one.

    A method whose sets carry hints only its own protocol applies (MTT's learned lr) names that protocol as its
    :meth:`~ddbench.method.Method.cpu_protocol`, and its random baseline is scored under it too (with the
    protocol's fixed lr): one protocol keeps the demo fast, and a hard-label method's number under ``kd`` would be
    the teacher's more than the set's. ``--protocol`` adds any other.

    The fair protocol is ``kd`` for soft-label methods and ``hard`` otherwise (``hard`` is always available).
    """
    if state.request.profile != BASE_PROFILE:
        return [state.method.cpu_protocol(state.dataset.id) or state.dataset.spec.default_protocol]
    own = state.method.paper_protocol(state.dataset.id)
    fair = "kd" if state.method.soft_labels else "hard"
    return list(dict.fromkeys([p for p in (own, fair) if p]))


def _resolve_teacher_ref(state: RunState, ref: str, progress: ProgressFn) -> Teacher:
    """A SoftLabelSpec entry: a cached teacher id, else an architecture (trained or loaded by its default recipe)."""
    device = torch.device(state.request.device)
    known = next((t for t in state.teachers if ref in (t.id, t.arch) or (not ref and t.spec.arch == "")), None)
    if known is not None:
        return known
    if ref and (teacher_dir(state.dataset.id) / ref).is_dir():
        return load_teacher(ref, state.dataset, device=device)
    return get_teacher(
        state.dataset, TeacherSpec(arch=ref), profile=state.request.profile, device=device, progress=progress
    )


def _label_mode(protocol: Any, distilled: DistilledSet) -> str:
    from ddbench.protocol import ARTIFACT_LABEL_MODE

    mode = distilled.soft_label.mode if protocol.label_mode == ARTIFACT_LABEL_MODE else protocol.label_mode
    return "hard" if mode == "none" else mode


def eval_teachers(state: RunState, protocol: Any, distilled: DistilledSet, progress: ProgressFn) -> list[Teacher]:
    """Teachers a protocol's label mode needs: the artifact's named teachers (ids or archs) or the dataset default."""
    from ddbench.labels import LABEL_MODES

    mode = _label_mode(protocol, distilled)
    if not LABEL_MODES.get(mode).uses_teachers:
        return []
    refs = list(distilled.soft_label.teachers) or [""]
    if mode == "teacher":
        refs = refs[:1]
    return [_resolve_teacher_ref(state, ref, progress) for ref in refs]


@contextlib.contextmanager
def _unit_locks(paths: Sequence[Path]) -> Iterator[list[int]]:
    """Take every free lock among ``paths``; yields the indices taken (released on exit)."""
    with contextlib.ExitStack() as stack:
        taken = [i for i, p in enumerate(paths) if stack.enter_context(try_lock(p))]
        yield taken


def evaluate_run(
    state: RunState,
    distilled: DistilledSet,
    request: EvalRequest,
    store: Any,
    progress: ProgressFn = _no_progress,
    *,
    seed_runner: Callable[..., None] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every (protocol, arch, seed) row not yet in ``store``; return all rows of this run and protocols.

    A row is reused only when it was made under the same protocol content (the protocol hash), so editing a
    protocol file without bumping its version recomputes its rows, with a warning naming the file. Each unit is
    computed under a lock: a second process started on the same command waits and then reuses the first's rows.
    ``seed_runner`` replaces how one (protocol, seed) is computed (DDP ranks agree on the missing archs instead of
    taking locks: :func:`ddbench.ddp.ddp_seed_runner`); it is called as :func:`run_seed` is, with a
    :class:`SeedJob` and the archs.
    """
    from ddbench.evaluate import evaluate
    from ddbench.labels import LABEL_MODES
    from ddbench.models import ARCHS
    from ddbench.protocol import load_protocol, protocol_path

    archs = [ARCHS.canonical(a) for a in (request.archs or default_eval_archs(state.request.profile, state.method,
                                                                           state.dataset.id))]  # fmt: skip
    device = torch.device(state.request.device)
    keys: list[tuple[str, str]] = []
    for name in request.protocols or default_protocols(state):
        protocol = load_protocol(name, profile=state.request.profile)
        key = protocol_key(protocol.name, protocol.profile)
        given = (request.teachers or {}).get(name)
        if given is not None and LABEL_MODES.get(_label_mode(protocol, distilled)).uses_teachers:
            teachers = list(given)
        else:
            teachers = eval_teachers(state, protocol, distilled, progress)
        label_teachers = ",".join(t.id for t in teachers)
        keys.append((key, label_teachers))
        for t in teachers:
            store.add_teacher(**t.record())
        models = [t.model for t in teachers]
        seeds = list(request.seeds) if request.seeds is not None else list(range(protocol.eval_seeds))
        runner = seed_runner or run_seed
        for seed in seeds:
            job = SeedJob(state, distilled, protocol, key, label_teachers, models, seed, request, store, device,
                          progress, evaluate, protocol_path(name))  # fmt: skip
            runner(job, archs)
    rows = store.evaluations(run_id=state.run_id).to_dict("records")
    return [r for r in rows if (r["protocol"], r.get("label_teachers") or "") in keys and r["arch"] in archs]


@dataclass(frozen=True)
class SeedJob:
    """One (protocol, eval seed) of a run's evaluation: what a seed runner needs to train and record its rows.

    Attributes:
        key: the stored protocol key (``name@profile``); ``label_teachers`` the comma-joined soft-label teacher ids
            and ``models`` their modules; ``source`` the protocol file (named in the changed-protocol warning).
        evaluate: :func:`ddbench.evaluate.evaluate` (a test may pass an instrumented one).
    """

    state: RunState
    distilled: DistilledSet
    protocol: Any
    key: str
    label_teachers: str
    models: list[Any]
    seed: int
    request: EvalRequest
    store: Any
    device: torch.device
    progress: ProgressFn
    evaluate: Callable[..., Any]
    source: Path

    def stored_hash(self, arch: str) -> str | None:
        """The protocol hash of ``arch``'s stored row for this job (None: no row)."""
        return self.store.evaluation_hash(self.state.run_id, arch, self.key, self.protocol.version, self.seed,
                                          self.label_teachers)  # fmt: skip

    def missing(self, archs: Sequence[str]) -> list[str]:
        """The archs without a row made under this protocol content."""
        return [a for a in archs if self.stored_hash(a) != self.protocol.hash]


def run_seed(job: SeedJob, archs: list[str]) -> None:
    """Evaluate the archs of one (protocol, seed) missing from the store, each under its unit lock."""

    def missing() -> list[str]:
        todo = []
        for arch in archs:
            found = job.stored_hash(arch)
            if found == job.protocol.hash:
                continue
            if found is not None:
                logger.warning(
                    "protocol %s (%s) changed without a version bump since %s seed %d was evaluated; its rows will "
                    "be recomputed (bump `version` in the file when a change can move numbers)",
                    job.key, job.source, arch, job.seed,
                )  # fmt: skip
            todo.append(arch)
        return todo

    unit_dir = job.state.run_dir / "eval-locks"
    lock_key = config_hash([job.key, job.label_teachers, job.seed], 12)
    tried: set[str] = set()  # a unit that failed here is recorded with its error, not retried in a loop
    while todo := [a for a in missing() if a not in tried]:
        paths = [unit_dir / f"{arch}-{lock_key}" for arch in todo]
        with _unit_locks(paths) as taken:
            mine = [todo[i] for i in taken]
            mine = [a for a in mine if a in missing()]  # rows finished while we took the locks
            if mine:
                run_units(job, mine)
                tried.update(mine)
                continue
        with lock(paths[0]):  # every missing unit is being computed elsewhere: wait for one
            pass


def run_units(job: SeedJob, archs: list[str]) -> None:
    """Train ``archs`` in lockstep under one (protocol, seed) and write one row each to the store (no locks)."""
    request, protocol = job.request, job.protocol
    results = job.evaluate(
        job.distilled,
        job.state.dataset,
        archs,
        protocol,
        seed=job.seed,
        device=job.device,
        teachers=job.models,
        amp=request.amp,
        channels_last=request.channels_last,
        progress=job.progress,
        **({"dist": request.dist} if request.dist is not None else {}),
    )
    for r in results:
        extra = {
            "protocol_hash": protocol.hash,
            "resolved_protocol_hash": r.protocol_hash,
            "teachers": [t for t in job.label_teachers.split(",") if t],
            "teacher_forwards_per_epoch": r.teacher_forwards_per_epoch,
            "lockstep": r.lockstep,
            "device": str(job.device),
            "curve": r.curve,
            "world_size": r.world_size,
            **dict((request.notes or {}).get(job.key, {})),
        }
        job.store.add_evaluation(
            run_id=job.state.run_id,
            arch=r.arch,
            protocol=job.key,
            protocol_version=protocol.version,
            eval_seed=job.seed,
            label_teachers=job.label_teachers,
            protocol_hash=protocol.hash,
            top1=r.top1,
            top5=r.top5,
            best_top1=r.best_top1,
            wall_time_s=r.wall_time_s,
            peak_mem_mb=r.peak_mem_mb,
            error=r.error,
            extra_json=json.dumps(extra, default=str),
        )


def record_run(state: RunState, distilled: DistilledSet, store: Any) -> None:
    """Insert (or refresh) this run's row and its storage metrics in the results store.

    Device, wall time and peak memory are those of the distillation (from the artifact), so a later ``--no-eval`` or
    ``eval`` on another device does not overwrite where the set was made.
    """
    from ddbench.store import environment

    env = environment()
    meta = distilled.meta
    teachers = meta.get("teachers") or [{"id": t.id, "sha256": t.sha256} for t in state.teachers]
    for t in state.teachers:
        store.add_teacher(**t.record())
    teacher = teachers[0] if teachers else None
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
        teacher_id=teacher["id"] if teacher else None,
        teacher_sha256=teacher["sha256"] if teacher else None,
        artifact_path=str(state.artifact_dir),
        ddbench_version=__version__,
        git_sha=env.get("git_sha"),
        torch_version=torch.__version__,
        device=meta.get("device", state.request.device),
        wall_time_s=meta.get("wall_time_s"),
        peak_mem_mb=meta.get("peak_mem_mb"),
        status="distilled",
    )
    sizes = distilled.nbytes()
    store.add_metric(state.run_id, "storage_images_bytes", float(sizes["images"]))
    store.add_metric(state.run_id, "storage_soft_labels_bytes", float(sizes["soft_labels"]))


def record_diversity(state: RunState, distilled: DistilledSet, store: Any) -> dict[str, float]:
    """DWA's feature-distance diversity (Eq. 20) of the distilled set under the unperturbed default teacher."""
    from ddbench.ops.diversity import diversity_metrics

    existing = store.metrics(run_id=state.run_id)
    if len(existing) and "feat_dist_mean" in set(existing["name"]):
        return dict(zip(existing["name"], existing["value"]))
    device = torch.device(state.request.device)
    teachers = state.load_teachers()
    teacher = (
        teachers[0]
        if teachers
        else get_teacher(state.dataset, TeacherSpec(), profile=state.request.profile, device=device)
    )
    metrics = diversity_metrics(teacher.model, distilled, state.dataset, seed=state.request.seed, device=device)
    for name, value in metrics.items():
        if isinstance(value, (int, float)):
            store.add_metric(
                run_id=state.run_id, name=name, value=float(value), extra_json=json.dumps({"teacher": teacher.id})
            )
    return metrics


def protocol_teachers(
    state: RunState, distilled: DistilledSet, names: Sequence[str], progress: ProgressFn = _no_progress
) -> dict[str, list[Teacher]]:
    """The online teachers each named protocol uses for this run's set (to score a baseline with the same ones)."""
    from ddbench.protocol import load_protocol

    return {
        n: eval_teachers(state, load_protocol(n, profile=state.request.profile), distilled, progress) for n in names
    }


def baseline_state(state: RunState, method: str = "random") -> RunState:
    """A baseline run at the same dataset, ipc, seed and profile: ``random`` (real images, no teacher), or one of the
    method's :attr:`~ddbench.method.Method.baselines`, which also gets the run's ``--config`` and ``--set`` values
    (a paper baseline shares the method's settings)."""
    companion = method != "random"
    request = RunRequest(
        method=method,
        dataset=state.request.dataset,
        ipc=state.request.ipc,
        seed=state.request.seed,
        profile=state.request.profile,
        num_classes=state.request.num_classes,
        data_root=state.request.data_root,
        config_file=state.request.config_file if companion else None,
        overrides=dict(state.request.overrides) if companion else {},
        device=state.request.device,
        allow_short_classes=state.request.allow_short_classes,
        holdout_per_class=state.request.holdout_per_class,
    )
    return prepare(request)
