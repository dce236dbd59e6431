"""Teachers (the "squeeze" stage): train or import a model per dataset, cache it, verify it.

Teachers are first-class artifacts because most reproduction gaps in dataset distillation trace back to them
(RDED#3/#5, CaO2#2): each cached teacher records its recipe, seed, class order, data identity and accuracy, and its
weights are checked against a sha256 before every use. Teachers live in the cross-run artifact cache
(:mod:`ddbench.artifacts`), keyed by everything that determines them: the data (dataset, class order and the files'
fingerprint, so another copy of a dataset gets another teacher), the architecture and its model kwargs (EDC's weak
observers, MTT's ConvNet depths), the recipe's hash and the seed. A teacher is trained by the same loop that trains
evaluation students (:class:`ddbench.train.Trainer`) with a teacher recipe, a ``Protocol`` TOML under
``ddbench/protocols/teacher/``, on the full real train split with hard labels; a recipe that diverges raises
:class:`~ddbench.train.TrainingDiverged` and caches nothing. The test accuracy is always
recorded; a validation accuracy only when the recipe sets ``holdout_per_class`` (the paper recipes train on the
whole train split and keep the last epoch, so nothing is selected and no hold-out is needed).

Layout: ``$DDBENCH_HOME/teachers/<dataset>/<arch>[x<width>]-<class hash>-<key hash>-s<seed>/`` holding
``model.pt`` (a state dict) and the artifact ``manifest.json`` (its ``meta`` is the teacher's record); the folder
name is the teacher id. Imported checkpoints live beside them as ``<arch>-<class hash>-import<sha256[:16]>-<key
hash>``.

The training loop (:mod:`ddbench.train`) and the recipe schema (:mod:`ddbench.protocol`) sit at this module's
layer or below, so they are imported here directly; :mod:`ddbench.evaluate`, which scores distilled sets and sits
above the teachers, is never imported, which keeps the import arrows pointing one way and free of cycles.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ddbench.artifacts import MANIFEST, ArtifactCache, CorruptArtifactError
from ddbench.config import ConfigError, config_hash
from ddbench.data.identity import dataset_key
from ddbench.data.spec import class_order_hash
from ddbench.errors import UserError
from ddbench.io import home
from ddbench.method import TeacherSpec
from ddbench.pixels import UInt8Space
from ddbench.protocol import TEACHER_RECIPE_DIR, load_protocol
from ddbench.train import Trainer, evaluate_models
from ddbench.version import __version__

if TYPE_CHECKING:
    from ddbench.data.dataset import Dataset

logger = logging.getLogger(__name__)


@dataclass
class Teacher:
    """A prepared teacher: a frozen eval-mode model plus what identifies it."""

    spec: TeacherSpec
    arch: str
    dataset: str
    class_hash: str
    model: nn.Module
    id: str
    sha256: str
    accuracy: dict[str, float] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    width_mult: float = 1.0

    def record(self) -> dict[str, Any]:
        """The fields of this teacher's row in the results store (:meth:`ddbench.store.Store.add_teacher`)."""
        return {
            "teacher_id": self.id,
            "dataset": self.dataset,
            "arch": self.arch,
            "class_hash": self.class_hash,
            "recipe_hash": self.recipe.get("hash"),
            "sha256": self.sha256,
            "test_top1": self.accuracy.get("test_top1"),
            "path": str(self.path) if self.path is not None else None,
        }


# -- implementation --------------------------------------------------------------------------------------------------
FORMAT_VERSION = 2
MODEL_FILE = "model.pt"
META_FILE = MANIFEST
REQUIRED_META = frozenset({"arch", "dataset", "classes", "class_hash", "img_size", "in_chans"})

#: Teacher recipe per dataset (files under ``ddbench/protocols/teacher/``); any other dataset uses ``default``.
DATASET_RECIPES = {"cifar10": "cifar", "cifar100": "cifar", "tiny-imagenet": "tiny"}

#: Checkpoint keys under which training scripts nest the state dict (torchvision reference scripts: ``model``).
_NESTED_KEYS = ("model", "state_dict", "model_state_dict", "net")

#: Batch size of the accuracy passes (inference only, so it does not change any number).
EVAL_BATCH_SIZE = 256


class CorruptTeacherError(RuntimeError):
    """A cached teacher that cannot be trusted (bad checksum, unreadable file, weights not fitting the arch)."""


ProgressFn = Callable[[str, int, int], None]


def recipe_dir() -> Path:
    """Folder of the shipped teacher recipes (``Protocol`` TOMLs shared with the evaluation protocols)."""
    return TEACHER_RECIPE_DIR


def recipe_path(dataset_id: str, recipe: str = "default") -> Path:
    """The recipe file for a dataset: ``default`` means the dataset's paper recipe.

    Args:
        dataset_id: canonical dataset id; CIFAR-10/100 use ``cifar``, Tiny-ImageNet ``tiny``, others ``default``.
        recipe: ``default``, the name of a shipped recipe (``cifar``), or a path to a TOML file.

    Raises:
        ConfigError: the named recipe does not exist.
    """
    name = DATASET_RECIPES.get(dataset_id, "default") if recipe in ("", "default") else recipe
    as_path = Path(name).expanduser()
    if as_path.suffix == ".toml" and as_path.is_file():
        return as_path
    path = recipe_dir() / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in recipe_dir().glob("*.toml"))) or "none installed"
        raise ConfigError(f"no teacher recipe {name!r} (looked for {path}); known: {known}, or give a .toml path")
    return path


def teacher_kind(dataset_id: str) -> str:
    """The artifact-cache section of one dataset's teachers."""
    return f"teachers/{dataset_id}"


def teacher_dir(dataset_id: str) -> Path:
    """Where the teachers of one dataset are cached: ``$DDBENCH_HOME/teachers/<dataset>/``."""
    return home() / teacher_kind(dataset_id)


def _cache() -> ArtifactCache:
    return ArtifactCache()


def _seed(*keys: object) -> int:
    """A 63-bit seed from keys, stable across processes (for model init and the training order)."""
    return int(config_hash([str(k) for k in keys], 16), 16) & ((1 << 63) - 1)


def _freeze(model: nn.Module, device: torch.device | str) -> nn.Module:
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def _build(arch: str, meta: dict[str, Any]) -> nn.Module:
    from ddbench.models import create_model

    return create_model(
        arch,
        num_classes=len(meta["classes"]),
        img_size=meta["img_size"],
        in_chans=meta["in_chans"],
        width_mult=float(meta.get("width_mult", 1.0)),
        **dict(meta.get("model_kwargs") or {}),
    )


def _check_class_order(meta: dict[str, Any], dataset: Dataset, where: str) -> None:
    if meta.get("class_hash") != dataset.class_hash:
        raise UserError(
            f"teacher {where} was trained with class order {meta.get('class_hash')} ({len(meta.get('classes', []))} "
            f"classes) but {dataset.id} here has {dataset.class_hash} ({dataset.num_classes} classes); a teacher "
            f"under another class order is silently wrong, so retrain it (ddbench teacher --dataset {dataset.id})"
        )


def _read_meta(folder: Path) -> dict[str, Any]:
    """The verified teacher record of ``folder`` (every file matches the manifest's sha256)."""
    try:
        art = _cache().verify(teacher_kind(folder.parent.name), folder)
    except CorruptArtifactError as exc:
        raise CorruptTeacherError(str(exc)) from exc
    meta = art.meta
    if not set(meta) >= REQUIRED_META:
        raise CorruptTeacherError(f"{folder / META_FILE} lacks required teacher fields")
    return {**meta, "sha256": art.sha256(MODEL_FILE)}


def _teacher_from(folder: Path, meta: dict[str, Any], model: nn.Module) -> Teacher:
    spec = TeacherSpec(**meta.get("spec", {"arch": meta["arch"]}))
    model.ddbench_teacher_id = folder.name
    return Teacher(
        spec=spec,
        arch=meta["arch"],
        dataset=meta["dataset"],
        class_hash=meta["class_hash"],
        model=model,
        id=folder.name,
        sha256=meta["sha256"],
        accuracy=dict(meta.get("accuracy", {})),
        recipe=dict(meta.get("recipe", {})),
        path=folder,
        width_mult=float(meta.get("width_mult", 1.0)),
    )


def load_teacher(teacher: str | Path, dataset: Dataset, *, device: torch.device | str = "cpu") -> Teacher:
    """Load a cached teacher by id (under the dataset's teacher folder) or folder path, verifying it.

    The class order it was trained under must equal the dataset's; its ``model.pt`` must match the recorded
    sha256 and load into the recorded architecture, else it is :class:`CorruptTeacherError` and must not be used.

    Raises:
        UserError: no such teacher, or it was trained under another class order.
        CorruptTeacherError: the files do not verify.
    """
    folder = Path(teacher).expanduser()
    if not folder.is_dir():
        folder = teacher_dir(dataset.id) / str(teacher)
        if not folder.is_dir():
            raise UserError(f"no teacher {str(teacher)!r} (neither a folder nor an id under {teacher_dir(dataset.id)})")
    meta = _read_meta(folder)
    _check_class_order(meta, dataset, folder.name)
    weights = folder / MODEL_FILE
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model = _build(meta["arch"], meta)
        model.load_state_dict(state)
    except Exception as exc:  # any failure to read or fit the weights means the file cannot be trusted
        raise CorruptTeacherError(f"{weights} does not load into {meta['arch']} ({type(exc).__name__}: {exc})") from exc
    return _teacher_from(folder, meta, _freeze(model, device))


def _cached(folder: Path, dataset: Dataset, device: torch.device | str) -> Teacher | None:
    """The teacher in ``folder`` if it exists and verifies; a corrupt one is logged and reported as absent."""
    if not folder.is_dir():
        return None
    try:
        return load_teacher(folder, dataset, device=device)
    except CorruptTeacherError as exc:
        logger.warning("corrupt teacher %s (%s); it will be recomputed and never used", folder.name, exc)
        return None


def _write_weights(tmp: Path, model: nn.Module) -> None:
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / MODEL_FILE)


def _from_artifact(art: Any, model: nn.Module, device: torch.device | str) -> Teacher:
    meta = {**art.meta, "sha256": art.sha256(MODEL_FILE)}
    return _teacher_from(art.path, meta, _freeze(model, device))


def _base_meta(dataset: Dataset, arch: str) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "dataset": dataset.id,
        "classes": list(dataset.classes),
        "class_hash": dataset.class_hash,
        "img_size": dataset.img_size,
        "in_chans": dataset.channels,
        "ddbench_version": __version__,
        "torch_version": torch.__version__,
    }


def _accuracy(model: nn.Module, dataset: Dataset, device: torch.device | str, splits: dict[str, Any]) -> dict:
    """Top-1/top-5 (%) of a model on the given splits, through the evaluator every student uses."""
    out: dict[str, float] = {}
    space = UInt8Space(dataset.spec.mean, dataset.spec.std)
    for name, source in splits.items():
        ((top1, top5),) = evaluate_models([model], source, space, device, batch_size=EVAL_BATCH_SIZE)
        out[f"{name}_top1"], out[f"{name}_top5"] = float(top1), float(top5)
    return out


def fit_teacher(
    model: nn.Module,
    images: torch.Tensor | Any,
    labels: torch.Tensor,
    protocol: Any,
    dataset: Dataset,
    generator: torch.Generator,
    device: torch.device | str,
    progress: ProgressFn | None,
    stage: str = "teacher",
) -> None:
    """Train ``model`` in place on real images with hard labels: the student loop under a teacher recipe."""
    space = UInt8Space(dataset.spec.mean, dataset.spec.std)
    Trainer(protocol, space=space, device=device, progress=progress, stage=stage).fit(
        [model], images, labels, generator=generator
    )


def _trainer_build(
    dataset: Dataset,
    arch: str,
    protocol: Any,
    recipe: dict[str, Any],
    spec: TeacherSpec,
    name: str,
    device: torch.device | str,
    progress: ProgressFn | None,
) -> Callable[[Path], dict[str, Any]]:
    """The artifact build of a trained teacher: train on the real train split (hard labels), measure, save."""

    def build(tmp: Path) -> dict[str, Any]:
        from ddbench.models import create_model

        holdout = int(getattr(protocol, "holdout_per_class", 0) or 0)
        width_mult = float(getattr(protocol, "width_mult", 1.0))
        data = dataset.with_holdout(holdout, seed=spec.seed) if holdout else dataset
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(
                _seed(spec.seed, "teacher-init", dataset.id, dataset.class_hash, arch, *spec.model_kwargs)
            )
            model = create_model(
                arch, dataset.num_classes, dataset.img_size, dataset.channels, width_mult=width_mult, **spec.kwargs
            )
        model.to(device)
        generator = torch.Generator().manual_seed(
            _seed(spec.seed, "teacher-train", dataset.id, dataset.class_hash, arch, *spec.model_kwargs)
        )
        images = data.train.all() if dataset.spec.in_memory else data.train
        logger.info(
            "training teacher %s (%s, %s epochs) on %d images",
            name,
            recipe["name"],
            getattr(protocol, "epochs", "?"),
            len(data.train),
        )
        start = time.perf_counter()
        fit_teacher(model, images, data.train.labels, protocol, dataset, generator, device, progress, f"teacher {arch}")
        train_time = time.perf_counter() - start
        model.eval()
        splits: dict[str, Any] = {"test": dataset.test}
        if holdout:
            splits["val"] = data.val
        if dataset.spec.in_memory:
            splits["train"] = data.train  # a fit diagnostic; too costly for streamed datasets
        accuracy = _accuracy(model, dataset, device, splits)
        _write_weights(tmp, model)
        logger.info("teacher %s: test top-1 %.2f%% (%.0f s)", name, accuracy["test_top1"], train_time)
        return _base_meta(dataset, arch) | {
            "source": "trained",
            "spec": asdict(spec),
            "seed": spec.seed,
            "recipe": recipe,
            "holdout_per_class": holdout,
            "width_mult": width_mult,
            "model_kwargs": spec.kwargs,
            "accuracy": accuracy,
            "device": str(device),
            "wall_time_s": round(train_time, 3),
        }

    return build


def _recipe_info(protocol: Any, path: Path, name: str, profile: str) -> dict[str, Any]:
    return {
        "name": name,
        "path": str(path),
        "hash": protocol.hash,
        "version": getattr(protocol, "version", None),
        "profile": profile,
        "epochs": getattr(protocol, "epochs", None),
    }


def teacher_key(dataset: Dataset, arch: str, spec: TeacherSpec, recipe_hash: str, width_mult: float) -> dict[str, Any]:
    """Everything that determines a trained teacher (the artifact key)."""
    return {
        "source": "trained",
        "format": FORMAT_VERSION,
        "data": dataset_key(dataset),
        "arch": arch,
        "model_kwargs": spec.kwargs,
        "width_mult": width_mult,
        "recipe_hash": recipe_hash,
        "seed": spec.seed,
    }


def resolve_teacher(dataset: Dataset, spec: TeacherSpec, profile: str = "paper") -> tuple[str, Any, dict[str, Any]]:
    """(canonical arch, recipe protocol, recipe info) of a spec, without training anything."""
    from ddbench.models import ARCHS

    arch = ARCHS.canonical(spec.arch or dataset.spec.default_teacher)
    path = recipe_path(dataset.id, spec.recipe)
    protocol = load_protocol(path, profile=profile)
    name = DATASET_RECIPES.get(dataset.id, "default") if spec.recipe in ("", "default") else spec.recipe
    return arch, protocol, _recipe_info(protocol, path, name, profile)


def is_torchvision_default(dataset: Dataset, arch: str, spec: TeacherSpec) -> bool:
    """ImageNet-1K's default ResNet-18 is torchvision's pretrained model (imported, never trained here)."""
    return dataset.id == "imagenet-1k" and arch == "resnet18" and spec.recipe in ("", "default") and not spec.kwargs


def teacher_address(
    dataset: Dataset, spec: TeacherSpec, profile: str = "paper"
) -> tuple[str, Any, dict[str, Any], dict[str, Any], str, Path] | None:
    """Where the cache keeps the teacher ``spec`` asks for, without training or loading it.

    Returns:
        ``(arch, recipe protocol, recipe info, cache key, name pattern, folder)``, or None for ImageNet-1K's
        torchvision ResNet-18 (imported, never trained). A sweep's dry run reads the folder to say what is cached.
    """
    from ddbench.models import ARCHS

    arch = ARCHS.canonical(spec.arch or dataset.spec.default_teacher)
    if is_torchvision_default(dataset, arch, spec):
        return None
    arch, protocol, recipe = resolve_teacher(dataset, spec, profile)
    width_mult = float(getattr(protocol, "width_mult", 1.0))
    width = "" if width_mult == 1.0 else f"x{width_mult:g}"  # visible in ids and table captions
    key = teacher_key(dataset, arch, spec, protocol.hash, width_mult)
    name = f"{arch}{width}-{dataset.class_hash}-{{hash}}-s{spec.seed}"
    return arch, protocol, recipe, key, name, _cache().path(teacher_kind(dataset.id), key, name)


def get_teacher(
    dataset: Dataset,
    spec: TeacherSpec,
    *,
    profile: str = "paper",
    device: torch.device | str = "cpu",
    progress: ProgressFn | None = None,
    refresh: bool = False,
) -> Teacher:
    """The teacher ``spec`` asks for, from the cache or trained now; the one entry point every caller uses.

    The teacher id is ``<arch>[x<width_mult>]-<class hash>-<key hash>-s<seed>``, the key covering the data
    identity (another class subset or another copy of the files is another teacher), the architecture and its model
    kwargs, the recipe (and profile) hash and the seed. Two processes asking for the same teacher train it once: the
    second waits on the key's lock and then loads the first one's result. A cached teacher that fails verification is
    logged as corrupt and retrained, never used. ImageNet-1K's default ResNet-18 is torchvision's pretrained model
    (the SRe2L/DWA teacher), imported from the torch hub cache; it is never downloaded here.

    Args:
        dataset: the loaded dataset (its class order and data identity are part of the key).
        spec: architecture (``""`` = the dataset's default teacher), model kwargs, recipe and seed.
        profile: recipe profile (``paper`` or a scaled-down one such as ``cpu``).
        device: where to train and where the returned model lives.
        progress: ``progress(stage, done, total)`` forwarded to the training loop.
        refresh: retrain even if a valid cached teacher exists.

    Returns:
        A :class:`Teacher` whose model is in eval mode with gradients disabled.

    Raises:
        TrainingDiverged: the recipe's loss became non-finite (nothing is cached).
    """
    address = teacher_address(dataset, spec, profile)
    if address is None:
        return _torchvision_resnet18(dataset, device=device)
    arch, protocol, recipe, key, name, folder = address
    cache = _cache()
    kind = teacher_kind(dataset.id)
    build = _trainer_build(dataset, arch, protocol, recipe, spec, folder.name, device, progress)
    if not refresh and (teacher := _cached(folder, dataset, device)) is not None:
        return teacher
    art = cache.get_or_build(kind, key, build, name=name, refresh=refresh)
    return _from_artifact(art, _load_weights(art.path, art.meta), device)


def _load_weights(folder: Path, meta: dict[str, Any]) -> nn.Module:
    model = _build(meta["arch"], meta)
    model.load_state_dict(torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True))
    return model


def _state_dict_of(obj: Any, where: Path) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint: a raw state dict or one nested under a usual key."""
    if isinstance(obj, dict):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(
            f"{where}: expected a state_dict (or one under 'model'/'state_dict'); "
            "save model.state_dict() with torch.save"
        )
    prefix = "module."  # DataParallel / DistributedDataParallel wrappers
    if all(k.startswith(prefix) for k in obj):
        obj = {k.removeprefix(prefix): v for k, v in obj.items()}
    return obj


def _read_checkpoint(path: Path, arch: str, dataset: Dataset) -> nn.Module:
    """The user's checkpoint loaded (weights only) into ``arch``; one-line UserErrors for what does not fit."""
    import argparse

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(
            f"{path}: not a weights-only torch checkpoint ({type(exc).__name__}); "
            "re-save it with torch.save(model.state_dict(), PATH)"
        ) from exc
    state = _state_dict_of(raw, path)
    model = _build(arch, _base_meta(dataset, arch))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).split("\n\t")[1:2] or [str(exc)[:200]]
        raise UserError(f"{path}: the weights do not fit {arch} for {dataset.id}: {first[0].strip()}") from exc
    return model.eval()


def import_teacher(
    dataset: Dataset,
    arch: str,
    checkpoint_path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    source: str = "imported",
) -> Teacher:
    """Adopt a user's checkpoint as a teacher: verify it fits ``arch``, measure it, cache it with its sha256.

    The checkpoint is read with ``weights_only=True`` (argparse namespaces, which the torchvision reference
    scripts store beside the weights, are allowed); anything else executable is refused. A DataParallel
    ``module.`` prefix is stripped. The teacher id is ``<arch>-<class hash>-import<sha256[:16]>-<key hash>``, so
    importing the same file twice reuses the first import.

    Args:
        dataset: the dataset the checkpoint was trained on, in its canonical class order.
        arch: the ddbench architecture the weights belong to.
        checkpoint_path: ``.pt``/``.pth`` file.
        class_names: the class order the checkpoint was trained with, if known; refused if it differs.
        device: where the returned model lives (and the accuracy is measured).
        source: provenance label stored in the record (``imported`` or ``torchvision``).

    Raises:
        UserError: missing/unreadable file, weights that do not fit ``arch``, or a different class order.
    """
    from ddbench.io import sha256_file
    from ddbench.models import ARCHS

    arch = ARCHS.canonical(arch)
    path = Path(checkpoint_path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if class_names is not None and tuple(class_names) != tuple(dataset.classes):
        raise UserError(
            f"{path}: its class order (hash {class_order_hash(list(class_names))}) differs from {dataset.id}'s "
            f"({dataset.class_hash}); a teacher under another class order is silently wrong, so it is refused"
        )
    digest = sha256_file(path)
    key = {"source": "import", "format": FORMAT_VERSION, "checkpoint_sha256": digest, "arch": arch,
           "data": dataset_key(dataset)}  # fmt: skip
    name = f"{arch}-{dataset.class_hash}-import{digest[:16]}"
    cache, kind = _cache(), teacher_kind(dataset.id)
    if (teacher := _cached(cache.path(kind, key, name), dataset, device)) is not None:
        return teacher
    model = _read_checkpoint(path, arch, dataset)  # before the lock: a refusal writes nothing

    def build(tmp: Path) -> dict[str, Any]:
        start = time.perf_counter()
        accuracy = _accuracy(model, dataset, device, {"test": dataset.test})
        _write_weights(tmp, model)
        logger.info("imported teacher %s from %s: test top-1 %.2f%%", name, path, accuracy["test_top1"])
        return _base_meta(dataset, arch) | {
            "source": source,
            "spec": asdict(TeacherSpec(arch=arch, recipe=source)),
            "seed": None,
            "recipe": {
                "name": source,
                "hash": f"import{digest[:16]}",
                "checkpoint": str(path),
                "checkpoint_sha256": digest,
            },
            "accuracy": accuracy,
            "device": str(device),
            "wall_time_s": round(time.perf_counter() - start, 3),
        }

    art = cache.get_or_build(kind, key, build, name=name)
    return _from_artifact(art, _load_weights(art.path, art.meta), device)


def torchvision_weights_path(arch: str = "resnet18") -> Path:
    """Where torchvision's ImageNet weights for ``arch`` sit in the torch hub cache (present or not)."""
    from urllib.parse import urlparse

    from torchvision.models import get_model_weights

    url = get_model_weights(arch).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _torchvision_resnet18(dataset: Dataset, *, device: torch.device | str) -> Teacher:
    """SRe2L/DWA's ImageNet-1K teacher: torchvision's pretrained ResNet-18, only if already downloaded."""
    path = torchvision_weights_path("resnet18")
    if not path.is_file():
        raise UserError(
            f"imagenet-1k resnet18 teacher: torchvision weights not found at {path}; download them with "
            "torchvision.models.resnet18(weights='IMAGENET1K_V1') or pass --checkpoint PATH"
        )
    return import_teacher(dataset, "resnet18", path, device=device, source="torchvision")
