"""MTT's expert trajectories as cached artifacts, one per expert, trained by the students' loop.

Implements spec mtt §4 (stage 1, ``buffer.py``) and §10 (the plugin contract's trajectory store) for Cazenavette
et al., "Dataset Distillation by Matching Training Trajectories" (CVPR 2022).

An expert is a network trained from scratch on the **whole real train split** with hard labels under the
``mtt-expert`` recipe (``ddbench/protocols/teacher/mtt-expert.toml``: SGD 0.01, momentum 0, wd 0, batch 256, DSA on
every batch, no decay) by :class:`ddbench.train.Trainer`, the loop that trains every evaluation student and teacher.
A :class:`SnapshotCallback` records the flat parameters (``named_parameters`` order,
:mod:`ddbench.ops.flat_params`) before the first step and after every epoch, so one expert is E+1 float32 snapshots
in one file (:class:`~ddbench.ops.trajectories.ExpertTrajectory`).

Each expert is its **own** artifact (:mod:`ddbench.artifacts`) under ``$DDBENCH_HOME/experts/<dataset>/``, keyed by
everything that determines it: the data identity (dataset, class order, files' fingerprint), the architecture and
its model kwargs, the pixel space (ZCA with its ε, or mean/std normalisation: for **every** dataset, unlike the
official folder names, which mix Tiny's ZCA and non-ZCA buffers), the recipe's hash (lr, momentum, wd, batch, DSA
strategy, epochs) and the expert's seed, which is its index k. Consequences, each tested:

* asking for k experts stores exactly k (no groups of 10, whose last partial group ``buffer.py`` drops);
* an expert is persisted the moment it finishes, so a killed run keeps every finished expert and the next run
  resumes at the next one;
* a run that needs 10 experts reuses the 5 another run (or ``ddbench experts``) made: expert k is the same
  artifact whoever asks;
* two processes asking for the same expert train it once (the artifact lock).

The official ``replay_buffer_{n}.pt`` layout is an optional export (:meth:`ExpertStore.export`).

Deviations from ``buffer.py``, all [ddbench] choices of the spec: explicit seeds per expert instead of the
wall-clock re-seeding of the global RNG (§9.2); the test accuracy is measured at initialisation and after the last
epoch (plus every ``test_every`` epochs of the recipe), not after every epoch, because it never feeds back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ddbench.artifacts import CACHE, Artifact, ArtifactCache
from ddbench.config import BASE_PROFILE, config_hash
from ddbench.data.identity import dataset_key
from ddbench.ops.trajectories import ExpertTrajectory, TrajectoryRecorder, export_replay_buffers
from ddbench.pixels import NormalizedSpace, PixelSpace, UInt8Space, fit_zca
from ddbench.protocol import load_protocol
from ddbench.train import Callback, Student, Trainer, evaluate_models

if TYPE_CHECKING:
    from ddbench.data.dataset import Dataset

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
TRAJECTORY_FILE = "trajectory.pt"
RECIPE = "mtt-expert"
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ExpertSpec:
    """What determines a family of experts (expert k adds its seed k).

    Attributes:
        arch: architecture (MTT: ``convnet``, instance norm; its depth follows the input size).
        model_kwargs: keyword arguments of the factory (``width``, ``depth``), sorted pairs; part of the key.
        recipe: teacher recipe name or TOML path (default: ``mtt-expert``).
        train_epochs: E, overriding the recipe's epochs (None: the recipe's, under the run's profile).
        zca: train on ZCA-whitened images (kornia semantics, fitted on the whole train split) instead of
            mean/std-normalised ones.
        zca_eps: ZCA's ε (absolute; MTT 0.1).
    """

    arch: str = "convnet"
    model_kwargs: tuple[tuple[str, Any], ...] = ()
    recipe: str = RECIPE
    train_epochs: int | None = None
    zca: bool = False
    zca_eps: float = 0.1

    def __post_init__(self) -> None:
        kwargs = self.model_kwargs
        pairs = kwargs.items() if isinstance(kwargs, dict) else (tuple(p) for p in kwargs)
        object.__setattr__(self, "model_kwargs", tuple(sorted((str(k), v) for k, v in pairs if v is not None)))
        if self.train_epochs is not None and self.train_epochs < 1:
            raise ValueError(f"train_epochs must be >= 1, got {self.train_epochs}")

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_kwargs)


def expert_space(dataset: Dataset, zca: bool, eps: float = 0.1) -> PixelSpace:
    """MTT's pixel space for ``dataset``: the cached ZCA fit (ε) or mean/std normalisation (spec §2)."""
    if zca:
        return fit_zca(dataset, eps)
    return NormalizedSpace(dataset.spec.mean, dataset.spec.std)


def expert_recipe(dataset: Dataset, spec: ExpertSpec, profile: str) -> Any:
    """The recipe protocol of ``spec``, with E set when the spec gives it.

    ``profile`` applies only when E is not given (the cpu profile of a recipe shrinks nothing but epochs), so
    ``ddbench experts --epochs E`` under any preset and a run with ``train_epochs = E`` name the same experts.
    """
    from ddbench.teachers import recipe_path

    path = recipe_path(dataset.id, spec.recipe)
    if spec.train_epochs is None:
        return load_protocol(path, profile=profile)
    return replace(load_protocol(path, profile=BASE_PROFILE), epochs=spec.train_epochs)


def expert_kind(dataset_id: str) -> str:
    return f"experts/{dataset_id}"


def expert_key(dataset: Dataset, spec: ExpertSpec, recipe_hash: str, seed: int) -> dict[str, Any]:
    """Everything that determines expert ``seed`` of ``spec`` (the artifact key)."""
    from ddbench.models import ARCHS

    space = {"name": "zca", "eps": float(spec.zca_eps)} if spec.zca else {"name": "normalized"}
    return {
        "format": FORMAT_VERSION,
        "data": dataset_key(dataset),
        "arch": ARCHS.canonical(spec.arch),
        "model_kwargs": spec.kwargs,
        "space": space,
        "recipe_hash": recipe_hash,
        "seed": int(seed),
    }


def expert_name(key: dict[str, Any], spec: ExpertSpec, epochs: int) -> str:
    """The readable prefix of an expert's folder: ``convnet-nozca-e50-s3-<hash>``."""
    return f"{key['arch']}-{'zca' if spec.zca else 'nozca'}-e{epochs}-s{key['seed']}"


def _seed(*keys: object) -> int:
    return int(config_hash([str(k) for k in keys], 16), 16) & ((1 << 63) - 1)


class SnapshotCallback(Callback):
    """Record each student's flat parameters before training and after every epoch (θ*_0 … θ*_E)."""

    def __init__(self) -> None:
        self.recorders: list[TrajectoryRecorder] = []

    def on_train_begin(self, trainer: Trainer, students: Sequence[Student]) -> None:
        self.recorders = [TrajectoryRecorder(st.model) for st in students]
        for rec, st in zip(self.recorders, students, strict=True):
            rec.record(st.model)

    def on_epoch_end(self, trainer: Trainer, epoch: int, students: Sequence[Student]) -> None:
        for rec, st in zip(self.recorders, trainer.students, strict=True):
            if st in students:
                rec.record(st.model)


class _TrainingInputs:
    """The real train split as the experts see it, built once per :func:`get_experts` call and only if needed."""

    def __init__(self, dataset: Dataset, spec: ExpertSpec) -> None:
        self.dataset, self.spec = dataset, spec
        self._value: tuple[Any, PixelSpace] | None = None

    def get(self) -> tuple[Any, PixelSpace]:
        if self._value is None:
            ds = self.dataset
            if self.spec.zca:
                space = expert_space(ds, True, self.spec.zca_eps)
                raw = ds.train.all()
                images = torch.cat([space.test_input(raw[i : i + 4096].float() / 255.0)
                                    for i in range(0, len(raw), 4096)])  # fmt: skip
            else:
                space = UInt8Space(ds.spec.mean, ds.spec.std)  # normalised after augmentation: MTT's inputs
                images = ds.train.all() if ds.spec.in_memory else ds.train
            self._value = (images, space)
        return self._value


def _build_expert(
    dataset: Dataset,
    spec: ExpertSpec,
    protocol: Any,
    seed: int,
    inputs: _TrainingInputs,
    device: torch.device,
    progress: ProgressFn | None,
    callbacks: Sequence[Callback],
) -> Callable[[Path], dict[str, Any]]:
    def build(tmp: Path) -> dict[str, Any]:
        from ddbench.models import ARCHS, create_model

        arch = ARCHS.canonical(spec.arch)
        ident = (dataset.id, dataset.class_hash, arch, *spec.model_kwargs, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed("expert-init", *ident))
            model = create_model(arch, dataset.num_classes, dataset.img_size, dataset.channels, **spec.kwargs)
        model.to(device)
        images, space = inputs.get()

        def test_fn(models: Sequence[nn.Module]) -> list[tuple[float, float]]:
            return evaluate_models(models, dataset.test, space, device, protocol.test_batch_size)

        ((init_top1, _),) = test_fn([model])
        snapshots = SnapshotCallback()
        trainer = Trainer(protocol, space=space, device=device, callbacks=[snapshots, *callbacks],
                          progress=progress, stage=f"expert {seed}", test_fn=test_fn)  # fmt: skip
        start = time.perf_counter()
        (stats,) = trainer.fit([model], images, dataset.train.labels,
                               generator=torch.Generator().manual_seed(_seed("expert-train", *ident)))  # fmt: skip
        wall = time.perf_counter() - start
        trajectory = snapshots.recorders[0].trajectory()
        if trajectory.num_epochs != protocol.epochs:
            raise RuntimeError(f"expert {seed}: {trajectory.num_epochs} snapshots after {protocol.epochs} epochs")
        trajectory.save(tmp / TRAJECTORY_FILE)
        final = stats.test_curve[-1][1] if stats.test_curve else float("nan")
        logger.info("expert %d: test top-1 %.2f%% at init, %.2f%% after %d epochs (%.1f s)", seed, init_top1, final,
                    protocol.epochs, wall)  # fmt: skip
        return {
            "arch": arch,
            "model_kwargs": spec.kwargs,
            "dataset": dataset.id,
            "class_hash": dataset.class_hash,
            "seed": seed,
            "epochs": protocol.epochs,
            "num_params": trajectory.layout.num_params,
            "space": space.name if spec.zca else "normalized",
            "zca_eps": spec.zca_eps if spec.zca else None,
            "recipe": {"name": protocol.name, "hash": protocol.hash, "profile": protocol.profile},
            "test_top1_init": init_top1,
            "test_top1": final,
            "test_curve": stats.test_curve,
            "loss_curve": stats.loss_curve,
            "device": str(device),
            "wall_time_s": round(wall, 3),
        }

    return build


@dataclass
class ExpertStore:
    """k verified expert artifacts, loaded lazily (one trajectory at a time, as the official distiller loads files).

    Attributes:
        artifacts: expert k's artifact at position k.
    """

    artifacts: list[Artifact]

    def __len__(self) -> int:
        return len(self.artifacts)

    @property
    def ids(self) -> list[str]:
        return [a.id for a in self.artifacts]

    @property
    def num_epochs(self) -> int:
        """E (every expert of a store has the same recipe)."""
        return int(self.artifacts[0].meta["epochs"])

    def load(self, k: int) -> ExpertTrajectory:
        """Expert k's trajectory, after checking its file's sha256 against the manifest."""
        art = self.artifacts[k]
        art = CACHE.verify(art.kind, art.path)  # verification reads the folder only, whatever the cache root
        return ExpertTrajectory.load(art.file(TRAJECTORY_FILE))

    def export(self, directory: str | Path, save_interval: int = 10) -> list[Path]:
        """Write the official ``replay_buffer_{n}.pt`` files (spec §4; the last partial group kept)."""
        return export_replay_buffers([self.load(k) for k in range(len(self))], directory, save_interval=save_interval)


def get_experts(
    dataset: Dataset,
    spec: ExpertSpec,
    num: int,
    *,
    profile: str = "paper",
    device: torch.device | str = "cpu",
    cache: ArtifactCache | None = None,
    progress: ProgressFn | None = None,
    callbacks: Sequence[Callback] = (),
) -> ExpertStore:
    """Experts 0 … num−1 of ``spec``: each from the cache, or trained now and stored the moment it finishes.

    Args:
        dataset: the real data (its identity is part of every key).
        spec: architecture, model kwargs, recipe, E and pixel space.
        num: how many experts (exactly that many are stored).
        profile: the recipe's profile (``paper`` or ``cpu``).
        device: where to train.
        cache: the artifact cache (default ``$DDBENCH_HOME``).
        progress: ``progress(stage, done, total)``: one bar per expert's epochs and one over the experts.
        callbacks: extra :class:`~ddbench.train.Callback` objects for each expert's training loop.

    Raises:
        ValueError: ``num`` < 1.
        TrainingDiverged: an expert's loss became non-finite (nothing is stored for it).
    """
    if num < 1:
        raise ValueError(f"need at least one expert, got {num}")
    cache = cache or CACHE
    device = torch.device(device)
    protocol = expert_recipe(dataset, spec, profile)
    inputs = _TrainingInputs(dataset, spec)
    kind = expert_kind(dataset.id)
    out = []
    for k in range(num):
        key = expert_key(dataset, spec, protocol.hash, k)
        build = _build_expert(dataset, spec, protocol, k, inputs, device, progress, callbacks)
        name = expert_name(key, spec, protocol.epochs)
        art = cache.get_or_build(kind, key, build, name=name)
        try:
            ExpertTrajectory.load(art.file(TRAJECTORY_FILE))
        except (ValueError, RuntimeError) as exc:  # verified bytes that are not a trajectory: rebuild once
            logger.warning("expert %s unreadable (%s); retraining it", art.id, exc)
            art = cache.get_or_build(kind, key, build, name=name, refresh=True)
        out.append(art)
        if progress is not None:
            progress("experts", k + 1, num)
    return ExpertStore(out)


def cached_experts(dataset: Dataset, spec: ExpertSpec, num: int, *, profile: str = "paper",
                   cache: ArtifactCache | None = None) -> list[int]:  # fmt: skip
    """Indices among 0 … num−1 whose expert is already cached and verifies (nothing is trained)."""
    cache = cache or CACHE
    protocol = expert_recipe(dataset, spec, profile)
    found = []
    for k in range(num):
        key = expert_key(dataset, spec, protocol.hash, k)
        if cache.lookup(expert_kind(dataset.id), key, name=expert_name(key, spec, protocol.epochs)) is not None:
            found.append(k)
    return found


__all__ = [
    "ExpertSpec",
    "ExpertStore",
    "SnapshotCallback",
    "cached_experts",
    "expert_key",
    "expert_recipe",
    "expert_space",
    "get_experts",
]
