"""Evaluation protocols (versioned TOML) and the one student-training loop every number goes through.

Three layers, each usable on its own:

* :class:`Protocol` / :func:`load_protocol`: a frozen dataclass of typed defaults, filled from a TOML file in
  ``ddbench/protocols/`` (or a user's file). Unknown keys and wrong types fail naming the file and key. A
  ``[profile.cpu]`` table may only shrink epochs, batch and seeds, so a CPU run keeps the paper's mechanism.
* :func:`train_students`: trains several models **in lockstep** on one on-device copy of the (small) training set.
  Every step draws one batch, augments and mixes it once, asks the teacher for soft labels once, and feeds the same
  tensors to every student. Teachers are trained by the same function with a hard-label recipe
  (``ddbench/protocols/teacher/*.toml``), so teacher and student training cannot drift apart.
* :func:`evaluate`: distilled set + dataset + archs + protocol + seed → one :class:`EvalResult` per arch, with
  final-epoch top-1/top-5 on the test split (best-of-run is logged as auxiliary only, never used for selection),
  wall time and peak memory. A failing arch records its error and the others finish.

Seeding (spec sre2l-dwa §4.2): the batch order, crops, flips and mixes come from one CPU generator seeded by
(seed, protocol hash), so two methods evaluated with the same seed see identical augmentation streams. Student
initialisation is seeded by (seed, arch, occurrence), and every student keeps its own global-RNG state (dropout,
drop-path), so training archs together or one by one gives bit-identical weights on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import resource
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ddbench.config import BASE_PROFILE, ConfigError, coerce, config_hash, field_types, from_dict, load_toml
from ddbench.data.source import ImageSource
from ddbench.distilled import DistilledSet
from ddbench.method import derive_seed
from ddbench.ops import augment as aug_ops

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
PixelSpace = Literal["uint8", "normalized", "zca"]

#: Folder of the shipped teacher-training recipes (same schema, not registered as evaluation protocols).
TEACHER_RECIPE_DIR = Path(__file__).parent / "protocols" / "teacher"

#: Keys a ``[profile.cpu]`` table may set: it shrinks the run, never changes the mechanism.
#: Protocol fields added after the first release, with the default that leaves a protocol's hash unchanged.
LATER_FIELDS: dict[str, Any] = {"width_mult": 1.0}

SHRINK_KEYS = frozenset(
    {"epochs", "batch_size", "eval_seeds", "test_every", "warmup_epochs", "milestones", "width_mult"}
)

#: Artifact hints a protocol with ``use_hints = true`` applies, and the field each one sets (MTT's learned lr).
HINT_FIELDS = {"syn_lr": "lr"}

AUG_OPS = ("crop_pad", "rrc", "flip", "dsa")


class TrainingDiverged(RuntimeError):
    """A student's loss became NaN or infinite; the message names the model, epoch and step."""


# ====================================================================================================================
# Protocols
# ====================================================================================================================
@dataclass(frozen=True)
class Protocol:
    """How a student is trained on a distilled set and scored. Every field has a typed default.

    Attributes:
        name: protocol id (the TOML file's stem unless the file sets it).
        version: bump whenever a change can move numbers; part of every record.
        description: one paragraph: source and purpose.
        profile: the profile this instance was resolved under (``paper`` or e.g. ``cpu``); set by the loader.
        epochs: passes over the distilled set.
        batch_size: images per step; the last batch of an epoch may be smaller (DataLoader ``drop_last=False``).
        optimizer: ``sgd``, ``adamw`` or ``adam``.
        lr: base learning rate (an artifact hint may replace it when ``use_hints``).
        momentum, nesterov: SGD only.
        betas: Adam/AdamW only.
        weight_decay: decoupled for AdamW, L2 for SGD/Adam.
        no_weight_decay_1d: no weight decay on parameters with ≤ 1 dimension (biases, norm weights), as the
            DWA/CDA ImageNet recipe.
        schedule: per-epoch multiplier after warmup: ``cosine`` ½(1+cos(πe/E)) to 0; ``step`` ×gamma at each
            milestone; ``constant``; ``smooth`` EDC's ½(1+cos(πe/(ζE))) and ``smooth_linear`` 1−e/(ζE), ζ =
            ``smooth_zeta`` (EDC §4.1).
        warmup_epochs, warmup_start_factor: linear warmup from ``start_factor·lr`` (torchvision LinearLR); the main
            schedule then runs over the remaining ``epochs − warmup_epochs`` epochs.
        milestones, gamma: for ``step``; epoch e runs at lr·gamma^(number of milestones ≤ e).
        reset_optimizer_at_milestones: build a fresh optimizer (momentum reset) at each milestone, as MTT.
        aug: ordered batch augmentations: ``crop_pad`` (RandomCrop with zero padding), ``rrc`` (RandomResizedCrop
            to the input size), ``flip`` (horizontal, p = ½), ``dsa`` (MTT's DSA). Per-sample parameters.
        rrc_scale: RandomResizedCrop area range.
        crop_padding: RandomCrop padding as a fraction of the image side, int(f·side + ½) pixels: 0.125 is
            CIFAR's 4 px at 32 px (8 at 64, 1 at 8), so one value serves every resolution.
        dsa_strategy: DSA families (MTT: ``color_crop_cutout_flip_scale_rotate``).
        mix: ``none``, ``mixup`` or ``cutmix``; one λ and one pairing per batch.
        mix_alpha: λ ~ Beta(α, α).
        mix_prob: probability that a batch is mixed (the coin is always drawn, so streams stay aligned).
        cutmix_pairing: ``perm`` (random permutation) or ``roll`` (torchvision reference: neighbour pairing).
        label_mode: ``hard`` labels; ``teacher`` (one online teacher); ``ensemble`` (mean logits of several);
            ``stored`` (the artifact's per-image soft labels); ``artifact`` (whatever the set's SoftLabelSpec says).
        loss: ``ce`` (hard labels only), ``kl`` (KL(batchmean) of log_softmax(z_s/T) against softmax(z_t/T)),
            ``mse_ce`` (EDC: MSE to the target logits + ``ce_weight``·CE on the unmixed hard label).
        temperature: KD temperature; None takes the artifact's preferred value, else 1.
        kl_t2: multiply the KL by T² (DWA/SRe2L Tiny).
        ce_weight: weight of the CE term of ``mse_ce``.
        ema: student parameter EMA decay (EDC 0.99), evaluated instead of the live weights; None = off.
        eval_seeds: default number of evaluation seeds.
        teacher_bn_train_mode_quirk: run the teacher with train-mode BN (batch statistics, drifting running stats),
            as DWA's and SRe2L's CIFAR eval scripts do by accident (spec sre2l-dwa §9.2). A copy of the teacher
            is used so the cached one never changes.
        test_every: epochs between test evaluations for the logged curve (0 = final epoch only). The curve is
            never used to pick a number.
        test_batch_size: batch size of test passes (does not change any number).
        use_hints: let the artifact's evaluation hints set fields (``syn_lr`` → ``lr``).
        holdout_per_class: teacher recipes only: train images per class held out as a validation split.
        width_mult: channel-width multiplier of the models trained under this recipe
            (:func:`ddbench.models.create_model`; ResNet and ConvNet families only). 1 everywhere in the paper
            protocols; the ``cpu`` teacher recipes use ×0.25, spec sre2l-dwa §10's CPU-trainable ResNet-18.
    """

    name: str = ""
    version: int = 1
    description: str = ""
    profile: str = BASE_PROFILE
    epochs: int = 300
    batch_size: int = 128
    optimizer: Literal["sgd", "adamw", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    no_weight_decay_1d: bool = False
    schedule: Literal["cosine", "step", "constant", "smooth", "smooth_linear"] = "cosine"
    smooth_zeta: float = 2.0
    warmup_epochs: int = 0
    warmup_start_factor: float = 0.01
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    reset_optimizer_at_milestones: bool = False
    aug: tuple[str, ...] = ("crop_pad", "flip")
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    crop_padding: float = 0.125
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    mix: Literal["none", "mixup", "cutmix"] = "none"
    mix_alpha: float = 1.0
    mix_prob: float = 1.0
    cutmix_pairing: Literal["perm", "roll"] = "perm"
    label_mode: Literal["hard", "teacher", "ensemble", "stored", "artifact"] = "hard"
    loss: Literal["ce", "kl", "mse_ce"] = "ce"
    temperature: float | None = None
    kl_t2: bool = False
    ce_weight: float = 0.025
    ema: float | None = None
    eval_seeds: int = 3
    teacher_bn_train_mode_quirk: bool = False
    test_every: int = 0
    test_batch_size: int = 500
    use_hints: bool = False
    holdout_per_class: int = 0
    width_mult: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            (self.version >= 1, "version must be >= 1"),
            (self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size must be >= 1"),
            (self.lr > 0 and self.weight_decay >= 0 and self.momentum >= 0, "lr > 0, weight_decay >= 0, momentum >= 0"),
            (0 <= self.warmup_epochs < self.epochs, "warmup_epochs must be in [0, epochs)"),
            (0 < self.warmup_start_factor <= 1, "warmup_start_factor must be in (0, 1]"),
            (all(a in AUG_OPS for a in self.aug), f"aug entries must be among {', '.join(AUG_OPS)}"),
            (0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1, "rrc_scale must satisfy 0 < lo <= hi <= 1"),
            (0 <= self.crop_padding < 1, "crop_padding is a fraction of the image side, in [0, 1)"),
            (self.mix_alpha > 0 and 0 <= self.mix_prob <= 1, "mix_alpha > 0 and mix_prob in [0, 1]"),
            (self.temperature is None or self.temperature > 0, "temperature must be > 0"),
            (self.ema is None or 0 < self.ema < 1, "ema must be in (0, 1) or unset"),
            (self.smooth_zeta >= 1, "smooth_zeta must be >= 1"),
            (self.width_mult > 0, "width_mult must be > 0"),
            (self.eval_seeds >= 1 and self.test_every >= 0, "eval_seeds >= 1 and test_every >= 0"),
            (list(self.milestones) == sorted(self.milestones), "milestones must be ascending"),
            (
                self.schedule != "step" or all(0 < m <= self.epochs for m in self.milestones),
                "milestones in (0, epochs]",
            ),
            (self.label_mode != "hard" or self.loss == "ce", "label_mode 'hard' needs loss 'ce'"),
            (
                self.label_mode in ("hard", "artifact") or self.loss != "ce",
                f"label_mode {self.label_mode!r} gives soft targets; use loss 'kl' or 'mse_ce'",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def hash(self) -> str:
        """config_hash of every field but ``description``: the cache key of whatever this protocol determines.

        Rewording a description moves no number, so it must not invalidate cached teachers or evaluations; fields
        added after the first release (:data:`LATER_FIELDS`) count only when they differ from their default, so
        adding one leaves every existing key valid.
        """
        values = dataclasses.asdict(self)
        values.pop("description")
        for key, default in LATER_FIELDS.items():
            if values[key] == default:
                values.pop(key)
        return config_hash(values)

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of ``lr`` during 0-based ``epoch`` (schedules step once per epoch, as every upstream)."""
        if epoch < self.warmup_epochs:
            return self.warmup_start_factor + (1 - self.warmup_start_factor) * epoch / self.warmup_epochs
        e, n = epoch - self.warmup_epochs, self.epochs - self.warmup_epochs
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * e / n))
        if self.schedule == "smooth":
            return 0.5 * (1 + math.cos(math.pi * e / (self.smooth_zeta * n)))
        if self.schedule == "smooth_linear":
            return 1 - e / (self.smooth_zeta * n)
        if self.schedule == "step":
            return self.gamma ** sum(1 for m in self.milestones if m <= epoch)
        return 1.0


def protocol_path(name_or_path: str | Path) -> Path:
    """A registered protocol id (``dwa-cifar``) or a path to a TOML file → the file."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise ConfigError(f"protocol file {path} does not exist")
        return path
    from ddbench.protocols import PROTOCOLS

    return PROTOCOLS.get(str(name_or_path))


def load_protocol(
    name_or_path: str | Path, profile: str = BASE_PROFILE, overrides: Mapping[str, Any] | None = None
) -> Protocol:
    """Load a protocol by registry id or TOML path, under a profile, with optional ``--set`` overrides.

    The file holds flat keys plus optional ``[profile.<name>]`` tables that override them. ``version`` is
    required. Every profile table is checked for unknown keys, and ``[profile.cpu]`` may only set
    :data:`SHRINK_KEYS`, whichever profile is being loaded.

    Raises:
        ConfigError: naming the file (and profile table) and the offending key.
    """
    path = protocol_path(name_or_path)
    data = dict(load_toml(path))
    profiles = data.pop("profile", {})
    types = field_types(Protocol)
    if not isinstance(profiles, Mapping) or not all(isinstance(v, Mapping) for v in profiles.values()):
        raise ConfigError(f"{path}: 'profile' must hold tables like [profile.cpu]")
    if "version" not in data:
        raise ConfigError(f"{path}: 'version' is required (bump it whenever a change can move numbers)")
    for key in ("profile",):
        if key in data:
            raise ConfigError(f"{path}: {key!r} is set by the loader, not the file")
    for pname, table in profiles.items():
        where = f"{path} [profile.{pname}]"
        for key, value in table.items():
            if key not in types or key in ("name", "version", "profile"):
                raise ConfigError(f"{where}: unknown or fixed key {key!r} for Protocol; known: {', '.join(types)}")
            if pname == "cpu" and key not in SHRINK_KEYS:
                raise ConfigError(
                    f"{where}: {key!r} would change the mechanism; cpu may only set {sorted(SHRINK_KEYS)}"
                )
            coerce(value, types[key], f"{where}: {key}")
    if profile != BASE_PROFILE and not profiles:
        # a user protocol without profiles is one recipe: use it as written under every run profile
        logger.info("%s defines no profiles; using it as written for profile %r", path, profile)
        profile = BASE_PROFILE
    if profile != BASE_PROFILE and profile not in profiles:
        known = ", ".join([BASE_PROFILE, *profiles])
        raise ConfigError(f"{path}: no profile {profile!r}; available: {known}")
    values = {"name": path.stem, **data, **(profiles.get(profile, {}) if profile != BASE_PROFILE else {})}
    source = f"{path}" + (f" [profile.{profile}]" if profile != BASE_PROFILE else "")
    protocol = from_dict(Protocol, {**values, "profile": profile}, source)
    if overrides:
        protocol = from_dict(Protocol, {**dataclasses.asdict(protocol), **overrides}, f"{source} + overrides")
    return protocol


def apply_hints(protocol: Protocol, hints: Mapping[str, float] | None) -> Protocol:
    """The protocol with the artifact's evaluation hints applied, if the protocol allows hints."""
    if not protocol.use_hints or not hints:
        return protocol
    updates = {HINT_FIELDS[k]: float(v) for k, v in hints.items() if k in HINT_FIELDS}
    ignored = sorted(set(hints) - set(HINT_FIELDS))
    if ignored:
        logger.info("protocol %s ignores unknown hints %s", protocol.name, ignored)
    if updates:
        logger.info("protocol %s: applying artifact hints %s", protocol.name, updates)
    return dataclasses.replace(protocol, **updates)


# ====================================================================================================================
# Losses
# ====================================================================================================================
def kl_loss(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float, t2: bool) -> torch.Tensor:
    """KL(p_t ‖ softmax(z_s/T)) with batchmean reduction (sum over classes, mean over the batch), ×T² if ``t2``."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    loss = F.kl_div(log_q, target_probs.float(), reduction="batchmean")
    return loss * temperature**2 if t2 else loss


def mixed_ce(logits: torch.Tensor, y: torch.Tensor, perm: torch.Tensor | None, lam: float) -> torch.Tensor:
    """λ·CE(z, y) + (1−λ)·CE(z, y[perm]): hard-label loss on a mixed batch (plain CE when unmixed)."""
    loss = F.cross_entropy(logits.float(), y)
    if perm is None or lam >= 1.0:
        return loss
    return lam * loss + (1 - lam) * F.cross_entropy(logits.float(), y[perm])


# ====================================================================================================================
# Batches
# ====================================================================================================================
@dataclass
class Batch:
    """One augmented, mixed, normalised batch, shared by the teacher and every student."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    perm: torch.Tensor | None = None
    lam: float = 1.0


def _stats(values: Sequence[float] | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)


def augment_batch(
    images: torch.Tensor,
    protocol: Protocol,
    mean: torch.Tensor,
    std: torch.Tensor,
    pixel_space: PixelSpace,
    generator: torch.Generator,
) -> tuple[torch.Tensor, aug_ops.Mixed | None]:
    """Augment, normalise and mix one batch; the only place student and teacher inputs are made.

    uint8 images are scaled to [0, 1], augmented there (zero padding is black, as torchvision on PIL images) and
    normalised with ``mean``/``std`` before DSA (which MTT runs in normalised space) or at the end. ``normalized``
    and ``zca`` images are augmented as they are (geometric ops commute with a per-channel affine map; padding is
    then the mean colour). Mixing comes last and commutes with normalisation.
    """
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    normalized = pixel_space != "uint8"
    side = x.shape[-1]
    for op in protocol.aug:
        if op == "dsa" and not normalized:
            x, normalized = (x - mean) / std, True
        if op == "crop_pad":
            x = aug_ops.random_crop_pad(x, side, int(protocol.crop_padding * side + 0.5), generator=generator)
        elif op == "rrc":
            x = aug_ops.random_resized_crop(x, side, protocol.rrc_scale, generator=generator, same_on_batch=False)
        elif op == "flip":
            x = aug_ops.random_flip(x, generator=generator, same_on_batch=False)
        elif op == "dsa":
            x = aug_ops.dsa(x, protocol.dsa_strategy, generator=generator)
    if not normalized:
        x = (x - mean) / std
    if protocol.mix == "none":
        return x, None
    coin = float(torch.rand(1, generator=generator))
    if coin >= protocol.mix_prob:
        return x, None
    if protocol.mix == "mixup":
        return x, aug_ops.mixup(x, None, protocol.mix_alpha, generator=generator, pairing="perm")
    return x, aug_ops.cutmix(x, protocol.mix_alpha, generator=generator, pairing=protocol.cutmix_pairing)


# ====================================================================================================================
# Lockstep training
# ====================================================================================================================
@dataclass
class TrainStats:
    """What training one model produced.

    Attributes:
        name: the model's arch (``ddbench_arch``) or class name, with ``#k`` for repeats.
        epochs_done: epochs completed.
        steps: optimizer steps taken.
        loss_curve: mean training loss per epoch.
        test_curve: (epoch, top1, top5) at each test point (1-based epoch); the last point is the final number.
        wall_time_s: wall time of the whole lockstep run (shared by all its models).
        error: ``Type: message`` if this model failed (``catch_errors=True``), else None.
    """

    name: str
    epochs_done: int = 0
    steps: int = 0
    loss_curve: list[float] = field(default_factory=list)
    test_curve: list[tuple[int, float, float]] = field(default_factory=list)
    wall_time_s: float = 0.0
    error: str | None = None


class _RngSlot:
    """A private global-RNG state (CPU, and the CUDA device in use) swapped in around one model's step.

    Students with dropout or drop-path consume the global RNG; giving each its own stream makes a model's
    trajectory independent of which other models train beside it.
    """

    def __init__(self, seed: int, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        gen = torch.Generator().manual_seed(seed)
        self.cpu_state = gen.get_state()
        self.cuda_state = None
        if self.cuda:
            cgen = torch.Generator(device=device).manual_seed(seed)
            self.cuda_state = cgen.get_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        saved_cpu = torch.get_rng_state()
        saved_cuda = torch.cuda.get_rng_state(self.device) if self.cuda else None
        torch.set_rng_state(self.cpu_state)
        if self.cuda:
            torch.cuda.set_rng_state(self.cuda_state, self.device)
        try:
            yield
        finally:
            self.cpu_state = torch.get_rng_state()
            torch.set_rng_state(saved_cpu)
            if self.cuda:
                self.cuda_state = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(saved_cuda, self.device)


def _param_groups(model: nn.Module, protocol: Protocol) -> list[dict[str, Any]]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not protocol.no_weight_decay_1d:
        return [{"params": params, "weight_decay": protocol.weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": protocol.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, protocol: Protocol) -> torch.optim.Optimizer:
    """The protocol's optimizer over the model's trainable parameters."""
    groups = _param_groups(model, protocol)
    if protocol.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=protocol.lr, momentum=protocol.momentum, nesterov=protocol.nesterov)
    if protocol.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=protocol.lr, betas=protocol.betas)
    return torch.optim.Adam(groups, lr=protocol.lr, betas=protocol.betas)


class _Student:
    """One model's training state inside the lockstep loop."""

    def __init__(self, model: nn.Module, name: str, seed: int, protocol: Protocol, device: torch.device) -> None:
        self.model = model
        self.stats = TrainStats(name)
        self.rng = _RngSlot(seed, device)
        self.protocol = protocol
        self.optimizer = build_optimizer(model, protocol)
        self.ema = [p.detach().clone() for p in model.parameters()] if protocol.ema else None
        self.step_losses: list[torch.Tensor] = []

    def set_lr(self, factor: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.protocol.lr * factor

    def update_ema(self) -> None:
        if self.ema is not None:
            params = [p.detach() for p in self.model.parameters()]
            torch._foreach_lerp_(self.ema, params, 1.0 - float(self.protocol.ema))

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Swap the EMA parameters in (parameters only; BN buffers stay live, as EDC) for a test pass."""
        if self.ema is None:
            yield
            return
        params = list(self.model.parameters())
        live = [p.detach().clone() for p in params]
        with torch.no_grad():
            torch._foreach_copy_(params, self.ema)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, live)


def _model_name(model: nn.Module, seen: dict[str, int]) -> str:
    base = getattr(model, "ddbench_arch", type(model).__name__)
    k = seen.get(base, 0)
    seen[base] = k + 1
    return base if k == 0 else f"{base}#{k}"


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the model's device type when ``amp`` (weights, losses and optimiser stay fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()


def _targets(
    batch: Batch,
    protocol: Protocol,
    teacher_logits: torch.Tensor | None,
    stored: torch.Tensor | None,
) -> torch.Tensor | None:
    """Soft targets for the batch: probabilities at T for ``kl``, logits for ``mse_ce``; None for hard labels.

    Online teachers saw the mixed batch, so their outputs are used as they are. Stored rows belong to the
    unmixed images and are mixed with the batch's pairing and λ (probabilities for KL, logits for MSE).
    """
    temperature = protocol.temperature or 1.0
    if teacher_logits is not None:
        z = teacher_logits.float()
        return F.softmax(z / temperature, dim=1) if protocol.loss == "kl" else z
    if stored is None:
        return None
    rows = stored[batch.index].float()
    target = F.softmax(rows / temperature, dim=1) if protocol.loss == "kl" else rows
    return target if batch.perm is None else aug_ops.mix_targets(target, batch.perm, batch.lam)


def student_loss(logits: torch.Tensor, batch: Batch, protocol: Protocol, target: torch.Tensor | None) -> torch.Tensor:
    """The protocol's loss for one student on one batch."""
    if target is None:
        return mixed_ce(logits, batch.y, batch.perm, batch.lam)
    if protocol.loss == "mse_ce":
        # EDC: MSE to the target logits plus a small CE on the base image's (unmixed) hard label
        return F.mse_loss(logits.float(), target) + protocol.ce_weight * F.cross_entropy(logits.float(), batch.y)
    return kl_loss(logits, target, protocol.temperature or 1.0, protocol.kl_t2)


def _label_source(protocol: Protocol, soft_targets: Any, stored_soft: Any) -> str:
    mode = protocol.label_mode
    if mode == "artifact":
        mode = "teacher" if soft_targets is not None else "stored" if stored_soft is not None else "hard"
    if mode in ("teacher", "ensemble") and soft_targets is None:
        raise ValueError(f"protocol {protocol.name!r} (label_mode {mode!r}) needs soft_targets (a teacher)")
    if mode == "stored" and stored_soft is None:
        raise ValueError(f"protocol {protocol.name!r} (label_mode 'stored') needs stored_soft labels")
    if mode == "hard" and (soft_targets is not None or stored_soft is not None):
        raise ValueError(f"protocol {protocol.name!r} uses hard labels but soft targets were given")
    return "stored" if mode == "stored" else "hard" if mode == "hard" else "teacher"


def train_students(
    models: Sequence[nn.Module],
    images: torch.Tensor | ImageSource,
    labels: torch.Tensor,
    *,
    protocol: Protocol,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    pixel_space: PixelSpace,
    generator: torch.Generator,
    device: torch.device | str,
    soft_targets: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stored_soft: torch.Tensor | None = None,
    hints: Mapping[str, float] | None = None,
    amp: bool = False,
    channels_last: bool = False,
    progress: ProgressFn | None = None,
    test_fn: Callable[[Sequence[nn.Module]], Sequence[tuple[float, float]]] | None = None,
    model_seeds: Sequence[int] | None = None,
    catch_errors: bool = False,
) -> list[TrainStats]:
    """Train ``models`` in lockstep under ``protocol``: one batch, one augmentation, one teacher call per step.

    Args:
        models: students (or a teacher being trained), already built; moved to ``device`` and trained in place.
            Returned models hold their EMA weights when the protocol has ``ema``.
        images: ``[N, C, H, W]`` in ``pixel_space`` (kept on ``device`` as one tensor), or an ImageSource that is
            read batch by batch (large teacher training sets).
        labels: ``[N]`` hard labels.
        protocol: the training recipe; ``label_mode`` decides which of ``soft_targets``/``stored_soft`` is needed.
        mean, std: per-channel normalisation of uint8 images (ignored for ``normalized``/``zca`` pixels).
        pixel_space: ``uint8``, ``normalized`` or ``zca``.
        generator: CPU generator for the batch order and every augmentation and mixing draw.
        device: where training runs.
        soft_targets: teacher (or ensemble) called once per batch on the augmented, mixed, normalised batch under
            ``no_grad``; returns logits. The caller sets its train/eval mode.
        stored_soft: ``[N, K]`` per-image logits (label mode ``stored``).
        hints: artifact hints (applied when ``protocol.use_hints``).
        amp: bf16 autocast of the forward passes (students and teacher); weights, losses and the optimiser stay
            fp32. Meant for CUDA; it also runs on a CPU (fast only with AVX512-BF16/AMX), which is how it is tested.
        channels_last: channels-last memory format for models and batches (numerically equivalent; a speed-up
            for convolutions on tensor cores).
        progress: ``progress("train", epochs_done, epochs)`` after each epoch.
        test_fn: ``test_fn(models) -> [(top1, top5), ...]`` called every ``test_every`` epochs and after the last
            epoch, on EMA weights in eval mode; its points form ``TrainStats.test_curve``.
        model_seeds: per-model seeds of the private RNG streams (default: derived from the generator's seed and
            the model's position). Pass the same seed to get the same dropout stream alone or in a group.
        catch_errors: record a failing model's error in its stats and continue with the others, instead of
            raising.

    Raises:
        TrainingDiverged: a non-finite loss (unless ``catch_errors``).
    """
    device = torch.device(device)
    protocol = apply_hints(protocol, hints)
    source = _label_source(protocol, soft_targets, stored_soft)
    if (amp or channels_last) and device.type != "cuda":
        logger.info("amp=%s channels_last=%s on %s: supported, but the speed-up is a CUDA one", amp, channels_last,
                    device)  # fmt: skip
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    n = len(labels)
    on_device = isinstance(images, torch.Tensor)
    data = images.to(device) if isinstance(images, torch.Tensor) else images
    labels = torch.as_tensor(labels, dtype=torch.long).to(device)
    stored = stored_soft.to(device) if stored_soft is not None and source == "stored" else None
    m, s = _stats(mean, device), _stats(std, device)
    seed0 = generator.initial_seed()
    seeds = (
        list(model_seeds) if model_seeds is not None else [derive_seed(seed0, "model", i) for i in range(len(models))]
    )
    seen: dict[str, int] = {}
    students = []
    for model, seed in zip(models, seeds, strict=True):
        model.to(device=device, memory_format=fmt).train()
        students.append(_Student(model, _model_name(model, seen), seed, protocol, device))
    active = list(students)
    steps_per_epoch = math.ceil(n / protocol.batch_size)
    logger.info(
        "training %d model(s) [%s] under %s@%s: %d epochs x %d steps, labels=%s, device=%s",
        len(students),
        ", ".join(st.stats.name for st in students),
        protocol.name,
        protocol.profile,
        protocol.epochs,
        steps_per_epoch,
        source,
        device,
    )

    def fail(student: _Student, exc: BaseException) -> None:
        if not catch_errors:
            raise exc
        student.stats.error = f"{type(exc).__name__}: {exc}"
        logger.warning("%s failed: %s", student.stats.name, student.stats.error)
        active.remove(student)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    start = time.perf_counter()
    for epoch in range(protocol.epochs):
        if not active:
            break
        factor = protocol.lr_factor(epoch)
        for st in active:
            if protocol.reset_optimizer_at_milestones and epoch in protocol.milestones:
                st.optimizer = build_optimizer(st.model, protocol)
            st.set_lr(factor)
            st.step_losses = []
        order = torch.randperm(n, generator=generator)
        for step in range(steps_per_epoch):
            idx = order[step * protocol.batch_size : (step + 1) * protocol.batch_size]
            idx_d = idx.to(device)
            raw = data[idx_d] if on_device else data.load(idx).to(device)
            x, mixed = augment_batch(raw, protocol, m, s, pixel_space, generator)
            batch = Batch(x.contiguous(memory_format=fmt), labels[idx_d], idx_d)
            if mixed is not None:
                batch.x, batch.perm, batch.lam = mixed.x.contiguous(memory_format=fmt), mixed.perm.to(device), mixed.lam
            teacher_logits = None
            if source == "teacher":
                with torch.no_grad(), _autocast(device, amp):
                    teacher_logits = soft_targets(batch.x).float()
            target = _targets(batch, protocol, teacher_logits, stored)
            for st in list(active):
                try:
                    with st.rng.active(), _autocast(device, amp):
                        logits = st.model(batch.x)
                    loss = student_loss(logits, batch, protocol, target)
                    st.optimizer.zero_grad(set_to_none=True)
                    with st.rng.active():
                        loss.backward()
                    st.optimizer.step()
                    st.update_ema()
                    st.step_losses.append(loss.detach())
                    st.stats.steps += 1
                except Exception as exc:  # OOM, shape errors, ...: this model fails alone (timm validate.py style)
                    fail(st, exc)
        for st in list(active):  # one host sync per epoch and model, not per step
            losses = torch.stack(st.step_losses).float().tolist() if st.step_losses else []
            bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
            if bad is not None:
                fail(st, TrainingDiverged(f"{st.stats.name}: loss {losses[bad]} at epoch {epoch + 1}, step {bad + 1}"))
                continue
            st.stats.loss_curve.append(sum(losses) / max(len(losses), 1))
            st.stats.epochs_done = epoch + 1
        last = epoch + 1 == protocol.epochs
        if (
            test_fn is not None
            and active
            and (last or (protocol.test_every and (epoch + 1) % protocol.test_every == 0))
        ):
            _run_tests(active, test_fn, epoch + 1, fail)
        if progress is not None:
            progress("train", epoch + 1, protocol.epochs)
    wall = time.perf_counter() - start
    for st in students:
        st.stats.wall_time_s = wall
        if st.ema is not None and st.stats.error is None:
            with torch.no_grad():
                torch._foreach_copy_(list(st.model.parameters()), st.ema)
    return [st.stats for st in students]


def _run_tests(active: list[_Student], test_fn: Callable, epoch: int, fail: Callable) -> None:
    """Test every active model (EMA weights, eval mode); on an error, retry one by one to isolate it."""

    def run(group: list[_Student]) -> None:
        with contextlib.ExitStack() as stack:
            for st in group:
                stack.enter_context(st.ema_weights())
                st.model.eval()
            try:
                scores = test_fn([st.model for st in group])
            finally:
                for st in group:
                    st.model.train()
        for st, (top1, top5) in zip(group, scores, strict=True):
            st.stats.test_curve.append((epoch, float(top1), float(top5)))
            logger.info("%s epoch %d: top1 %.2f top5 %.2f", st.stats.name, epoch, top1, top5)

    try:
        run(list(active))
    except Exception as exc:
        if len(active) == 1:
            fail(active[0], exc)
            return
        for st in list(active):
            try:
                run([st])
            except Exception as exc_one:
                fail(st, exc_one)


# ====================================================================================================================
# Test accuracy
# ====================================================================================================================
@torch.no_grad()
def evaluate_models(
    models: Sequence[nn.Module],
    test: ImageSource | tuple[torch.Tensor, torch.Tensor],
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    device: torch.device | str,
    batch_size: int = 500,
    *,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    amp: bool = False,
    channels_last: bool = False,
) -> list[tuple[float, float]]:
    """Top-1 and top-5 accuracy (%) of every model on uint8 test images, each batch read once for all models.

    Args:
        models: evaluated in eval mode (their mode is restored afterwards).
        test: an ImageSource (a Dataset's test split) or ``(uint8 images, labels)``.
        mean, std: normalisation applied after scaling to [0, 1].
        device: where the models are.
        batch_size: test batch size (does not change any number).
        transform: replaces normalisation: maps [0, 1] float images to model input (e.g. a method's ZCA).
        amp, channels_last: as in :func:`train_students`.
    """
    device = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if isinstance(test, ImageSource):
        total, labels_all = len(test), test.labels
        load: Callable[[torch.Tensor], torch.Tensor] = test.load
    else:
        images_all, labels_all = test
        total = int(labels_all.numel())

        def load(idx: torch.Tensor) -> torch.Tensor:
            return images_all[idx]

    m, s = _stats(mean, device), _stats(std, device)
    modes = [model.training for model in models]
    for model in models:
        model.eval()
    correct1 = torch.zeros(len(models), dtype=torch.long, device=device)
    correct5 = torch.zeros(len(models), dtype=torch.long, device=device)
    try:
        for lo in range(0, total, batch_size):
            idx = torch.arange(lo, min(lo + batch_size, total))
            raw = load(idx).to(device)
            y = torch.as_tensor(labels_all[idx], device=device)
            x = raw.float() / 255.0 if raw.dtype == torch.uint8 else raw.float()
            x = (transform(x) if transform is not None else (x - m) / s).contiguous(memory_format=fmt)
            for i, model in enumerate(models):
                with _autocast(device, amp):
                    logits = model(x)
                k = min(5, logits.shape[1])
                top = logits.float().topk(k, dim=1).indices
                hit = top == y[:, None]
                correct1[i] += hit[:, 0].sum()
                correct5[i] += hit.any(dim=1).sum()
    finally:
        for model, mode in zip(models, modes, strict=True):
            model.train(mode)
    scale = 100.0 / max(total, 1)
    return [(c1 * scale, c5 * scale) for c1, c5 in zip(correct1.tolist(), correct5.tolist(), strict=True)]


# ====================================================================================================================
# Evaluating a distilled set
# ====================================================================================================================
@dataclass
class EvalResult:
    """One (arch, seed) evaluation of a distilled set.

    Attributes:
        arch: student architecture.
        seed: evaluation seed.
        top1, top5: final-epoch test accuracy (%), the reported number (NaN if the arch failed).
        best_top1: best top-1 over the logged test points (auxiliary; selected on test, never reported alone).
        wall_time_s: wall time of the lockstep training it was part of (shared by ``lockstep`` archs).
        peak_mem_mb: CUDA peak allocated memory of the run, or the process's peak RSS on CPU.
        curve: (epoch, top1, top5) test points.
        error: ``Type: message`` when this arch failed, else None.
        lockstep: how many archs trained together (the wall time and memory are theirs together).
        protocol_hash: hash of the protocol as resolved for this set (label mode, temperature, hints).
    """

    arch: str
    seed: int
    top1: float
    top5: float
    best_top1: float
    wall_time_s: float
    peak_mem_mb: float
    curve: list[tuple[int, float, float]]
    error: str | None = None
    lockstep: int = 1
    protocol_hash: str = ""


def resolve_for_artifact(protocol: Protocol, distilled: DistilledSet) -> Protocol:
    """Turn ``label_mode = "artifact"``, an unset temperature and hints into concrete protocol values."""
    updates: dict[str, Any] = {}
    if protocol.label_mode == "artifact":
        mode = distilled.soft_label.mode
        updates["label_mode"] = "hard" if mode == "none" else mode
        if mode == "none":
            updates["loss"] = "ce"
        elif protocol.loss == "ce":
            updates["loss"] = "kl"
    if protocol.temperature is None and distilled.soft_label.temperature is not None:
        updates["temperature"] = float(distilled.soft_label.temperature)
    resolved = dataclasses.replace(protocol, **updates) if updates else protocol
    return apply_hints(resolved, distilled.hints)


def student_seed(seed: int, arch: str, occurrence: int = 0) -> int:
    """Seed of a student's initialisation and private RNG: depends on (seed, arch, occurrence) only."""
    return derive_seed(seed, "student", arch, occurrence)


def augment_seed(seed: int, protocol: Protocol) -> int:
    """Seed of the batch-order/augmentation stream: (seed, protocol), independent of method and archs."""
    return derive_seed(seed, "augment", protocol.hash)


def _make_teacher_fn(
    teacher: nn.Module | Sequence[nn.Module], protocol: Protocol, device: torch.device, channels_last: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    if protocol.label_mode == "teacher" and len(teachers) > 1:
        logger.info("label_mode 'teacher' with %d teachers: using their mean logits", len(teachers))
    if protocol.teacher_bn_train_mode_quirk:
        teachers = [copy.deepcopy(t) for t in teachers]  # the quirk drifts BN running stats: never touch the cache
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for t in teachers:
        t.to(device=device, memory_format=fmt)
        t.train(protocol.teacher_bn_train_mode_quirk)

    def soft_targets(x: torch.Tensor) -> torch.Tensor:
        logits = [t(x).float() for t in teachers]
        return logits[0] if len(logits) == 1 else torch.stack(logits).mean(0)

    return soft_targets


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def evaluate(
    distilled: DistilledSet,
    dataset: Any,
    archs: Sequence[str],
    protocol: Protocol,
    seed: int,
    device: torch.device | str = "cpu",
    teacher: nn.Module | Sequence[nn.Module] | None = None,
    amp: bool = False,
    channels_last: bool = False,
    progress: ProgressFn | None = None,
    *,
    test_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[EvalResult]:
    """Train one fresh student per arch on ``distilled`` (in lockstep) and score it on the test split.

    Args:
        distilled: the set; its pixel space, soft-label spec and hints are honoured.
        dataset: the :class:`~ddbench.data.Dataset` it was distilled from (mean/std, classes, test split).
        archs: student architectures for :func:`ddbench.models.create_model`.
        protocol: the evaluation protocol (``artifact`` label mode and hints are resolved per set).
        seed: evaluation seed; with the protocol it fixes every random draw.
        device: where to train.
        teacher: online teacher(s) for ``teacher``/``ensemble`` label modes (ignored otherwise).
        amp, channels_last: speed options (bf16 autocast, channels-last), as in :func:`train_students`.
        progress: ``progress(stage, done, total)``.
        test_transform: maps [0, 1] test images to model input; required for ``zca`` sets (the method's ZCA).

    Returns:
        One result per arch, in order; a failing arch has ``error`` set and NaN accuracies.
    """
    from ddbench.models import create_model

    device = torch.device(device)
    stream_seed = augment_seed(seed, protocol)  # before resolution: same stream for every method under it
    resolved = resolve_for_artifact(protocol, distilled)
    if distilled.pixel_space == "zca" and test_transform is None:
        raise ConfigError("a ZCA-space set needs the method's ZCA transform for the test images (test_transform=)")
    needs_teacher = resolved.label_mode in ("teacher", "ensemble")
    if needs_teacher and teacher is None:
        raise ConfigError(
            f"protocol {resolved.name!r} uses label mode {resolved.label_mode!r} but no teacher was given"
        )
    soft_fn = _make_teacher_fn(teacher, resolved, device, channels_last) if needs_teacher else None
    stored = distilled.soft_labels if resolved.label_mode == "stored" else None
    num_classes = len(dataset.classes)
    in_chans, img_size = int(distilled.images.shape[1]), int(distilled.images.shape[-1])

    results: dict[int, EvalResult] = {}
    models, positions, seeds = [], [], []
    occurrences: dict[str, int] = {}
    for i, arch in enumerate(archs):
        k = occurrences.get(arch, 0)
        occurrences[arch] = k + 1
        s = student_seed(seed, arch, k)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)
                model = create_model(arch, num_classes, img_size, in_chans, width_mult=resolved.width_mult)
        except Exception as exc:  # an arch that cannot be built fails alone
            logger.warning("student %s could not be built: %s", arch, exc)
            results[i] = EvalResult(
                arch, seed, math.nan, math.nan, math.nan, 0.0, 0.0, [], f"{type(exc).__name__}: {exc}"
            )
            continue
        models.append(model)
        positions.append(i)
        seeds.append(s)

    if models:
        mean, std = dataset.spec.mean, dataset.spec.std

        def test_fn(group: Sequence[nn.Module]) -> list[tuple[float, float]]:
            return evaluate_models(
                group,
                dataset.test,
                mean,
                std,
                device,
                resolved.test_batch_size,
                transform=test_transform,
                amp=amp,
                channels_last=channels_last,
            )

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        stats = train_students(
            models,
            distilled.images,
            distilled.labels,
            protocol=resolved,
            mean=mean,
            std=std,
            pixel_space=distilled.pixel_space,
            generator=torch.Generator().manual_seed(stream_seed),
            device=device,
            soft_targets=soft_fn,
            stored_soft=stored,
            amp=amp,
            channels_last=channels_last,
            progress=progress,
            test_fn=test_fn,
            model_seeds=seeds,
            catch_errors=True,
        )
        peak = _peak_mem_mb(device)
        for pos, st in zip(positions, stats, strict=True):
            curve = list(st.test_curve)
            ok = st.error is None and curve and curve[-1][0] == resolved.epochs
            top1, top5 = (curve[-1][1], curve[-1][2]) if ok else (math.nan, math.nan)
            best = max((c[1] for c in curve), default=math.nan)
            results[pos] = EvalResult(
                archs[pos], seed, top1, top5, best, st.wall_time_s, peak, curve, st.error, len(models), resolved.hash
            )
            if ok:
                logger.info("%s seed %d: final top1 %.2f (best-of-run %.2f, auxiliary)", archs[pos], seed, top1, best)
    return [results[i] for i in range(len(archs))]


__all__ = [
    "HINT_FIELDS",
    "SHRINK_KEYS",
    "TEACHER_RECIPE_DIR",
    "Batch",
    "EvalResult",
    "Protocol",
    "TrainStats",
    "TrainingDiverged",
    "apply_hints",
    "augment_batch",
    "augment_seed",
    "build_optimizer",
    "evaluate",
    "evaluate_models",
    "kl_loss",
    "load_protocol",
    "mixed_ce",
    "protocol_path",
    "resolve_for_artifact",
    "student_loss",
    "student_seed",
    "train_students",
]
