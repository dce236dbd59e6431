"""Evaluation protocols: the versioned TOML schema every student and teacher is trained under.

A :class:`Protocol` is a frozen dataclass of typed defaults, filled by :func:`load_protocol` from a TOML file in
``ddbench/protocols/`` (or a user's file). Unknown keys and wrong types fail naming the file and key. A
``[profile.cpu]`` table may only shrink epochs, batch and seeds (:data:`SHRINK_KEYS`), so a CPU run keeps the
paper's mechanism. Teacher recipes (``ddbench/protocols/teacher/*.toml``, :data:`TEACHER_RECIPE_DIR`) use the same
schema but are not registered as evaluation protocols.

This module is only the schema: it holds no training code and imports nothing but :mod:`ddbench.config` and the
protocol registry (:mod:`ddbench.protocols`), so the training loop (:mod:`ddbench.train`), the teachers and the
evaluator can all depend on it without an import cycle.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ddbench import schedules
from ddbench.config import BASE_PROFILE, ConfigError, coerce, config_hash, field_types, from_dict, load_toml

logger = logging.getLogger(__name__)

#: Folder of the shipped teacher-training recipes (same schema, not registered as evaluation protocols).
TEACHER_RECIPE_DIR = Path(__file__).parent / "protocols" / "teacher"

#: Protocol fields added after the first release, with the default that leaves a protocol's hash unchanged.
LATER_FIELDS: dict[str, Any] = {"width_mult": 1.0, "patch_factor": 1, "epochs_by_ipc": (), "milestone_fractions": ()}

#: Keys a ``[profile.cpu]`` table may set: it shrinks the run, never changes the mechanism.
SHRINK_KEYS = frozenset(
    {"epochs", "batch_size", "eval_seeds", "test_every", "warmup_epochs", "milestones", "width_mult", "epochs_by_ipc"}
)

#: Artifact hints a protocol with ``use_hints = true`` applies, and the field each one sets (MTT's learned lr).
HINT_FIELDS = {"syn_lr": "lr"}

#: EDC's smoothing schedules (spec edc §4.1), defined once in :mod:`ddbench.schedules`.
SMOOTH_SCHEDULES = {"smooth": schedules.smoothing, "smooth_linear": schedules.smoothing_linear, "ssrs": schedules.ssrs}

#: Label mode that defers to the distilled set's own ``SoftLabelSpec`` (resolved per artifact by the evaluator).
ARTIFACT_LABEL_MODE = "artifact"


def _names_check(protocol: Protocol) -> list[tuple[bool, str]]:
    """Registry checks of the named pieces (label mode, loss, augmentations); registries hold no training code."""
    from ddbench.augmentations import BATCH_AUGS
    from ddbench.labels import LABEL_MODES, LOSSES

    checks = [
        (all(a in BATCH_AUGS for a in protocol.aug), f"aug entries must be among {', '.join(BATCH_AUGS.names())}"),
        (protocol.loss in LOSSES, f"loss {protocol.loss!r} is not one of {', '.join(LOSSES.names())}"),
    ]
    mode = protocol.label_mode
    if mode == ARTIFACT_LABEL_MODE:
        return checks
    if mode not in LABEL_MODES:
        known = ", ".join([*LABEL_MODES.names(), ARTIFACT_LABEL_MODE])
        return [*checks, (False, f"label_mode {mode!r} is not one of {known}")]
    soft = LABEL_MODES.get(mode).soft
    checks.append((soft or protocol.loss == "ce", f"label_mode {mode!r} gives hard labels; use loss 'ce'"))
    checks.append((not soft or protocol.loss != "ce", f"label_mode {mode!r} gives soft targets; use a soft loss"))
    return checks


@dataclass(frozen=True)
class Protocol:
    """How a student is trained on a distilled set and scored. Every field has a typed default.

    Attributes:
        name: protocol id (the TOML file's stem unless the file sets it).
        version: bump whenever a change can move numbers; part of every record.
        description: one paragraph: source and purpose.
        profile: the profile this instance was resolved under (``paper`` or e.g. ``cpu``); set by the loader.
        epochs: passes over the distilled set (the IPC above every ``epochs_by_ipc`` bound, if that is set).
        epochs_by_ipc: ``(max_ipc, epochs)`` pairs, ascending: a set with at most ``max_ipc`` images per class trains
            for the first matching ``epochs`` (IDC/Minimax's table, spec minimax §5); :meth:`for_ipc` applies it.
        batch_size: images per step; the last batch of an epoch may be smaller (DataLoader ``drop_last=False``).
        optimizer: ``sgd``, ``adamw`` or ``adam``.
        lr: base learning rate (an artifact hint may replace it when ``use_hints``).
        momentum, nesterov: SGD only.
        betas: Adam/AdamW only.
        weight_decay: decoupled for AdamW, L2 for SGD/Adam.
        no_weight_decay_1d: no weight decay on parameters with ≤ 1 dimension (biases, norm weights), as the
            DWA/CDA ImageNet recipe.
        schedule: per-epoch multiplier after warmup: ``cosine`` ½(1+cos(πe/E)) to 0; ``step`` ×gamma at each
            milestone; ``constant``; ``smooth`` EDC's ½(1+cos(πe/(ζE))), ``smooth_linear`` 1−e/(ζE) and ``ssrs``
            (smooth to 5E/6, then a linear tail), ζ = ``smooth_zeta`` (EDC §4.1, :mod:`ddbench.schedules`).
        warmup_epochs, warmup_start_factor: linear warmup from ``start_factor·lr`` (torchvision LinearLR); the main
            schedule then runs over the remaining ``epochs − warmup_epochs`` epochs.
        milestones, gamma: for ``step``; epoch e runs at lr·gamma^(number of milestones ≤ e).
        milestone_fractions: for ``step``, milestones as fractions of ``epochs`` (⌊f·epochs⌋, IDC's 2/3 and 5/6),
            used instead of ``milestones`` when set, so they follow the epochs of :meth:`for_ipc`.
        reset_optimizer_at_milestones: build a fresh optimizer (momentum reset) at each milestone, as MTT.
        aug: ordered batch augmentations from :data:`ddbench.augmentations.BATCH_AUGS`: ``crop_pad`` (RandomCrop
            with zero padding), ``rrc`` (RandomResizedCrop to the input size), ``flip`` (horizontal, p = ½), ``dsa``
            (MTT's DSA), ``randaugment`` (torchvision RandAugment, EDC), ``patch_shuffle`` (RDED's tile shuffle of
            ``patch_factor``), and any a plugin registers. Per-sample parameters.
        rrc_scale: RandomResizedCrop area range.
        crop_padding: RandomCrop padding as a fraction of the image side, int(f·side + ½) pixels: 0.125 is
            CIFAR's 4 px at 32 px (8 at 64, 1 at 8), so one value serves every resolution.
        dsa_strategy: DSA families (MTT: ``color_crop_cutout_flip_scale_rotate``).
        mix: ``none``, ``mixup`` or ``cutmix``; one λ and one pairing per batch.
        mix_alpha: λ ~ Beta(α, α).
        mix_prob: probability that a batch is mixed (the coin is always drawn, so streams stay aligned).
        cutmix_pairing: ``perm`` (random permutation) or ``roll`` (torchvision reference: neighbour pairing).
        label_mode: a :data:`ddbench.labels.LABEL_MODES` name: ``hard`` labels; ``teacher`` (one online teacher);
            ``ensemble`` (mean logits of several); ``stored`` (the artifact's per-image soft labels); or
            ``artifact`` (whatever the set's SoftLabelSpec says).
        loss: a :data:`ddbench.labels.LOSSES` name: ``ce`` (hard labels only), ``kl`` (KL(batchmean) of
            log_softmax(z_s/T) against softmax(z_t/T)), ``mse_ce`` (EDC: MSE to the target logits + ``ce_weight``·CE
            on the unmixed hard label), ``soft_ce``.
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
        patch_factor: mosaic factor of the ``patch_shuffle`` augmentation (RDED: 2 at ImageNet scale, 1 = identity).
    """

    name: str = ""
    version: int = 1
    description: str = ""
    profile: str = BASE_PROFILE
    epochs: int = 300
    epochs_by_ipc: tuple[tuple[int, int], ...] = ()
    batch_size: int = 128
    optimizer: Literal["sgd", "adamw", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    no_weight_decay_1d: bool = False
    schedule: Literal["cosine", "step", "constant", "smooth", "smooth_linear", "ssrs"] = "cosine"
    smooth_zeta: float = 2.0
    warmup_epochs: int = 0
    warmup_start_factor: float = 0.01
    milestones: tuple[int, ...] = ()
    milestone_fractions: tuple[float, ...] = ()
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
    label_mode: str = "hard"
    loss: str = "ce"
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
    patch_factor: int = 1

    def __post_init__(self) -> None:
        checks = [
            (self.version >= 1, "version must be >= 1"),
            (self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size must be >= 1"),
            (self.lr > 0 and self.weight_decay >= 0 and self.momentum >= 0, "lr > 0, weight_decay >= 0, momentum >= 0"),
            (0 <= self.warmup_epochs < self.epochs, "warmup_epochs must be in [0, epochs)"),
            (0 < self.warmup_start_factor <= 1, "warmup_start_factor must be in (0, 1]"),
            (0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1, "rrc_scale must satisfy 0 < lo <= hi <= 1"),
            (0 <= self.crop_padding < 1, "crop_padding is a fraction of the image side, in [0, 1)"),
            (self.mix_alpha > 0 and 0 <= self.mix_prob <= 1, "mix_alpha > 0 and mix_prob in [0, 1]"),
            (self.temperature is None or self.temperature > 0, "temperature must be > 0"),
            (self.ema is None or 0 < self.ema < 1, "ema must be in (0, 1) or unset"),
            (self.smooth_zeta >= 1, "smooth_zeta must be >= 1"),
            (self.width_mult > 0, "width_mult must be > 0"),
            (self.patch_factor >= 1, "patch_factor must be >= 1"),
            (self.eval_seeds >= 1 and self.test_every >= 0, "eval_seeds >= 1 and test_every >= 0"),
            (list(self.milestones) == sorted(self.milestones), "milestones must be ascending"),
            (all(0 < f < 1 for f in self.milestone_fractions), "milestone_fractions must be in (0, 1)"),
            (
                [b for b, _ in self.epochs_by_ipc] == sorted({b for b, _ in self.epochs_by_ipc})
                and all(b >= 1 and e >= 1 for b, e in self.epochs_by_ipc),
                "epochs_by_ipc must be (max_ipc, epochs) pairs >= 1 with strictly ascending max_ipc",
            ),
            (
                self.schedule != "step" or all(0 < m <= self.epochs for m in self.milestones),
                "milestones in (0, epochs]",
            ),
            *_names_check(self),
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
        if self.schedule in SMOOTH_SCHEDULES:
            return SMOOTH_SCHEDULES[self.schedule](e, n, self.smooth_zeta)
        if self.schedule == "step":
            return self.gamma ** sum(1 for m in self.step_milestones if m <= epoch)
        return 1.0

    @property
    def step_milestones(self) -> tuple[int, ...]:
        """The epochs at which ``step`` multiplies by gamma: ``milestones``, or ⌊f·epochs⌋ per fraction."""
        if self.milestone_fractions:
            return tuple(math.floor(f * self.epochs + 1e-9) for f in self.milestone_fractions)
        return self.milestones

    def for_ipc(self, ipc: int) -> Protocol:
        """This protocol with ``epochs`` from ``epochs_by_ipc`` for a set of ``ipc`` images per class (else itself)."""
        for bound, epochs in self.epochs_by_ipc:
            if ipc <= bound:
                return dataclasses.replace(self, epochs=epochs)
        return self


#: Separates a protocol from its variant: ``kd~noaug``, ``hard~lr=0.005``, ``kd~noaug,epochs=50``.
VARIANT_SEP = "~"
#: Named variants: field values a variant name stands for. ``noaug`` is ARS's "without augmentation": no batch
#: augmentation and no mixing, the labels (online teacher or stored) unchanged.
NAMED_VARIANTS: dict[str, dict[str, Any]] = {
    "noaug": {"aug": (), "mix": "none"},  # ARS's without-augmentation twin (DD-Ranking)
    "noema": {"ema": None},  # the live weights instead of the EMA student (EDC Table 5's "EMA ×" rows)
}


def split_variant(name_or_path: str | Path) -> tuple[str | Path, str]:
    """``"kd~noaug"`` → ``("kd", "noaug")``; a name without a variant → ``(name, "")``.

    Only the last ``~`` counts, and only when what follows holds no path separator, so ``~/p.toml`` stays a path.
    """
    text = str(name_or_path)
    head, sep, tail = text.rpartition(VARIANT_SEP)
    if not sep or not head or "/" in tail or head.endswith("/"):
        return name_or_path, ""
    return head, tail


def variant_overrides(variant: str) -> dict[str, Any]:
    """The field values of a variant: named variants (:data:`NAMED_VARIANTS`) and ``field=value`` pairs, in order.

    Raises:
        ConfigError: an unknown name or field, or a value of the wrong type.
    """
    types = field_types(Protocol)
    out: dict[str, Any] = {}
    for part in (p.strip() for p in variant.split(",") if p.strip()):
        if "=" not in part:
            if part not in NAMED_VARIANTS:
                raise ConfigError(f"unknown protocol variant {part!r}; named variants: {', '.join(NAMED_VARIANTS)}, "
                                  "or field=value")  # fmt: skip
            out.update(NAMED_VARIANTS[part])
            continue
        key, value = (x.strip() for x in part.split("=", 1))
        if key not in types or key in ("name", "version", "profile"):
            raise ConfigError(f"protocol variant {part!r}: {key!r} is not a Protocol field one can set")
        import tomllib

        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        out[key] = coerce(parsed, types[key], f"protocol variant {part!r}")
    return out


def variant_name(base: str, overrides: Mapping[str, Any]) -> str:
    """The protocol id of ``base`` with ``field=value`` overrides (``hard~lr=0.005``), as :func:`split_variant`
    reads it back."""
    parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in overrides.items()]
    return f"{base}{VARIANT_SEP}{','.join(parts)}" if parts else base


def protocol_path(name_or_path: str | Path) -> Path:
    """A registered protocol id (``dwa-cifar``) or a path to a TOML file → the file (a variant names its base's)."""
    name_or_path, _ = split_variant(name_or_path)
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
    required. ``name~variant`` loads ``name`` with a variant's values (:func:`variant_overrides`) under the id
    ``name~variant``, so its evaluation rows are keyed apart from the base protocol's (ARS's ``kd~noaug``, the
    chosen value of a ``--select`` grid). Every profile table is checked for unknown keys, and ``[profile.cpu]``
    may only set :data:`SHRINK_KEYS`, whichever profile is being loaded.

    Raises:
        ConfigError: naming the file (and profile table) and the offending key.
    """
    base, variant = split_variant(name_or_path)
    if variant:
        changes = variant_overrides(variant)
        protocol = load_protocol(base, profile=profile, overrides={**changes, **(overrides or {})})
        return dataclasses.replace(protocol, name=f"{protocol.name}{VARIANT_SEP}{variant}")
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


__all__ = [
    "ARTIFACT_LABEL_MODE",
    "HINT_FIELDS",
    "LATER_FIELDS",
    "SHRINK_KEYS",
    "TEACHER_RECIPE_DIR",
    "Protocol",
    "apply_hints",
    "load_protocol",
    "protocol_path",
    "split_variant",
    "variant_name",
    "variant_overrides",
]
