"""EDC: Elucidating the Design Space of Dataset Condensation (Shao, Zhou, Gu, Sun, Chen, Yu; NeurIPS 2024).

Implements spec ``edc.md`` §2 (synthesis loss), §3 (flatness), §1 S1–S4 (statistics pass, init, recover loop,
soft labels) and §6 (observers) as a sibling of SRe2L and DWA: :class:`EDC` subclasses
:class:`ddbench_methods.sre2l.SRe2L` and runs its recover loop (Adam (0.5, 0.9), cosine lr from ``lr`` to 0 with no
warmup, clip to the valid pixel range before and after every step, last iterate saved, shards per synthesis
batch), with the :class:`~ddbench.ops.bn_stats.StatsRecorder` hooks (here on every BatchNorm2d *and* Conv2d input)
and EDC's matching loss (:mod:`ddbench.ops.edc_matching`). What EDC changes:

1. **Observers** (§1 S0, §6): ``observers`` (synthesis) and ``label_observers`` (soft labels; default the same),
   weak teachers trained by ``observer_recipe`` (``ddbench/protocols/teacher/observer-*.toml``) through the teacher
   cache, so several methods and runs share them. One observer per iteration, **round robin** with a counter that
   runs on across batches (batch k, iteration t uses observer (k·T + t) mod K); only its hooks fire.
2. **Statistics pass** (§2.3–2.4, :mod:`ddbench_methods.edc_stats`): a cached artifact per observer.
3. **Class-major batches** (§1 S3): the slots (c, j) ordered class by class, cut into consecutive batches of
   ``batch_images`` (default ``classes_per_step``·IPC) images; T iterations per batch, never revisited.
4. **Loss** (§2.7): CE(φ_k(a(x)), y) + r_loss·Σ_l w_l·R_l + w_FR·L'_FR, w = ``first_multiplier`` (10) on the
   first hooked layer only. R_l = α·Form 1 + (1 − α)·Form 2 (α = 0.5; ``category_mode`` ``aggregate`` ([C]) or
   ``per_class`` (paper Eq. 5)), each statistic compared through the straight-through training-momentum EMA (m 0.8,
   reset per batch; ``compat_zero_init_ema`` starts it at 0 as [C]).
5. **Flatness** (§3): L'_FR = KL between the observer's τ-softmaxes on the same view of x and of the EMA images
   (β 0.99, τ 4, weight 0.25); EMA pass without grad and with the hooks disabled; EMA updated with the pre-step x.
6. **Augmentation** (§2.7 step 2): one RandomResizedCrop(scale ``crop_scale``, default (0.5, 1): "weak crop") +
   flip per iteration, shared by the batch; no jitter.
7. **Init** (§1 S2, §8): ``real`` (slot (c, j) = entry j of a seeded permutation of class c's train images, i.e.
   without replacement, resized and randomly flipped), ``rded`` (RDED mosaics of §8.1 scored by the mean logits of
   the synthesis observers, slot (c, j) ↔ RDED image (c, j)) or ``noise`` (N(0, 1), CONFIG A). With
   ``init = "rded"``, ``rded_generator = "edc-code"`` swaps in [C]'s own RDED-like generator (§8.2: every class
   image pre-scored, chunk-shared crops, no one-patch-per-image rule, consecutive tiling), still one slot per image.
8. **Save** (§2.7 step 5, §9.2 item 13): uint8 **rounded** (``save_format="uint8_round"``), lossless.
9. **Soft labels** (§1 S4): online mean **logits** of ``label_observers`` (``SoftLabelSpec(mode="ensemble")``).

The CONFIG A→G ladder (§7.1) is replayed with :data:`LADDER`: each step's method switches (``init``,
``iterations``, ``flatness``, ``alpha``, ``crop_scale``, ``observers``) and protocol switches (schedule, ζ,
batch, EMA) as ``--set`` values.

Deviations, all DEFAULTs of the spec: the momentum EMA starts at the first batch statistic and is reset per batch
(§2.5, §9.2 items 5, 18); per-class patch moments are stored the right way round (§9.2 item 2); flatness is on with
the paper's β/τ/weight and the paper's KL order with batchmean reduction (§3; [C] never enables it); the init is drawn
without replacement (§9.2 item 4); one normalization per dataset everywhere (§6); images rounded, not truncated,
and kept lossless (§9.2 item 13); single-device batch statistics (no per-GPU split, §2.6); observers keep their
final epoch (§9.2 item 23). The ``cpu`` profile (§10.3) shrinks the observer set to ConvNet-D1/D2 (instance norm)
plus a BatchNorm ConvNet at width 64, and the statistics pass to a class-balanced subset; every mechanism is kept.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from ddbench_methods.edc_stats import observer_targets
from ddbench_methods.sre2l import RecoverRun, SRe2L, frozen
from torch import nn

from ddbench.distilled import DistilledSet, SoftLabelSpec
from ddbench.labels import ensemble_logits
from ddbench.method import DistillContext, TeacherSpec
from ddbench.ops.augment import random_flip, random_resized_crop
from ddbench.ops.bn_stats import StatsRecorder
from ddbench.ops.edc_matching import CATEGORY_MODES, MomentumStats, statistics_loss
from ddbench.ops.flatness import FlatnessEMA, same_views
from ddbench.ops.rded import edc_code_images, rded_images
from ddbench.ops.recover import clip_to_valid_

logger = logging.getLogger(__name__)

#: CIFAR-10's eight observers (spec §6): ResNet-18, ConvNet-W128, MobileNetV2-half, WRN-16-2, ShuffleNetV2-0.5,
#: ConvNet-D1, ConvNet-D2, ConvNet-W32.
CIFAR_OBSERVERS = ("resnet18", "convnet", "mobilenetv2_050", "wrn16_2", "shufflenetv2_x0_5", "convnet_d1",
                   "convnet_d2", "convnet_w32")  # fmt: skip

#: The CONFIG A→G ladder of spec §7.1, cumulative: ``(method overrides, protocol overrides)`` per step. Method
#: overrides are EDC config keys; protocol overrides are Protocol fields applied on top of the step's evaluation
#: protocol: A–D evaluate with G-VBSM's large batch (1024) and no EMA, A–B with plain cosine; from E on the protocol's
#: own small batch is kept. "Better backbone choice" (observer sets) is left to the preset (its placement in the
#: ladder is inferred, §7.1).
LADDER: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "A": ({"init": "noise", "alpha": 1.0, "flatness": False, "crop_scale": (0.08, 1.0)},
          {"schedule": "cosine", "ema": None, "batch_size": 1024}),
    "B": ({"init": "real", "alpha": 1.0, "flatness": False, "crop_scale": (0.08, 1.0)},
          {"schedule": "cosine", "ema": None, "batch_size": 1024}),
    "C": ({"init": "real", "alpha": 1.0, "flatness": False, "crop_scale": (0.08, 1.0)},
          {"schedule": "smooth", "smooth_zeta": 1.5, "ema": None, "batch_size": 1024}),
    "D": ({"init": "real", "alpha": 1.0, "flatness": True, "crop_scale": (0.08, 1.0)},
          {"schedule": "smooth", "smooth_zeta": 1.5, "ema": None, "batch_size": 1024}),
    "E": ({"init": "real", "alpha": 1.0, "flatness": True, "crop_scale": (0.08, 1.0)},
          {"schedule": "smooth", "smooth_zeta": 2.0, "ema": None}),
    "F": ({"init": "real", "alpha": 0.5, "flatness": True, "crop_scale": (0.08, 1.0)},
          {"schedule": "smooth", "smooth_zeta": 2.0, "ema": None}),
    "G": ({"init": "real", "alpha": 0.5, "flatness": True, "crop_scale": (0.5, 1.0)},
          {"schedule": "smooth", "smooth_zeta": 2.0, "ema": 0.99}),
}  # fmt: skip


def parse_observer(entry: str, recipe: str) -> TeacherSpec:
    """``arch[:key=value]...`` (e.g. ``convnet_bn:width=64``) → a TeacherSpec under ``recipe``, seed 0.

    Raises:
        ValueError: a malformed ``key=value`` part.
    """
    arch, *parts = entry.strip().split(":")
    kwargs: dict[str, Any] = {}
    for part in parts:
        key, sep, raw = part.partition("=")
        if not sep or not key:
            raise ValueError(f"observer {entry!r}: expected arch[:key=value]..., got part {part!r}")
        value: Any = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        kwargs[key] = {"true": True, "false": False}.get(raw, value) if isinstance(value, str) else value
    return TeacherSpec(arch=arch, recipe=recipe, model_kwargs=kwargs)


@dataclass(frozen=True)
class EDCConfig:
    """EDC synthesis settings; defaults are the CIFAR-10 column of spec §2.7 / §10.2 (presets set the others).

    Attributes:
        observers: synthesis observers (``arch[:key=value]`` entries), used round robin.
        label_observers: soft-label observers (None: the synthesis ones).
        observer_recipe: teacher recipe the observers are trained with (``observer-cifar10``, ...).
        iterations: T per synthesis batch.
        lr: Adam learning rate (cosine to 0 over T).
        classes_per_step: classes per synthesis batch (batch = classes_per_step·IPC images).
        batch_images: images per synthesis batch (None or 0: unset), overriding ``classes_per_step`` (the slot
            list is cut into consecutive batches of this size, so a class may span two batches).
        init: ``real``, ``rded`` or ``noise``.
        rded_factor, rded_mipc, rded_num_crop: RDED init (§8.1): mosaic factor, candidates per class, views each.
        rded_generator: ``rded`` (DEFAULT, §8.1) or ``edc-code``, [C]'s own generator (§8.2): every class image
            scored, the ``rded_mipc`` best kept, 4 chunk-shared crop draws, no one-patch-per-image rule,
            consecutive tiling (:func:`ddbench.ops.rded.edc_code_images`; ``rded_num_crop`` is not used).
        crop_scale: RandomResizedCrop area range of the synthesis augmentation ((0.5, 1) weak; (0.08, 1) CIFAR-10).
        r_loss: weight of the statistics term.
        first_multiplier: weight of the first hooked layer (the first conv: image-level statistics).
        train_momentum: m of the straight-through EMA (0.8; 0 = plain batch statistics).
        reset_momentum_per_batch: reset the EMAs at every synthesis batch (DEFAULT; [C] never resets).
        compat_zero_init_ema: start each EMA at 0 as [C] (first value (1 − m)·s).
        alpha: weight of Form 1 (1: global matching only, G-VBSM/SRe2L; 0: class terms only).
        category_mode: ``aggregate`` ([C]) or ``per_class`` (paper Eq. 5).
        hook_bn, hook_conv: match at BatchNorm2d inputs / Conv2d inputs.
        conv_patch: include the patch moments at Conv hooks.
        patch: patch side p (4 at 32/64 px, 16 at 224 px).
        flatness: add L'_FR (§3); flatness_weight, flatness_beta, flatness_tau, flatness_order ("paper" KL(cur‖EMA)
            or "code" KL(EMA‖cur)), flatness_reduction ("batchmean" or [C]'s "mean").
        stats_per_class: real images per class of the statistics pass (None: all).
        stats_aug, stats_batch, stats_seed: the statistics pass's augmentation, batch size and seed.
        save_format: ``uint8_round`` (DEFAULT), or SRe2L's ``uint8``/``png``/``jpeg_q75`` (truncated).
        temperature: preferred KD temperature for protocols that use one (None: the protocol's).
        log_every: log the loss terms every this many iterations (0: first and last only).
    """

    observers: tuple[str, ...] = CIFAR_OBSERVERS
    label_observers: tuple[str, ...] | None = None
    observer_recipe: str = "observer-default"
    iterations: int = 75
    lr: float = 0.05
    classes_per_step: int = 2
    batch_images: int | None = None
    init: Literal["real", "rded", "noise"] = "real"
    rded_factor: int = 1
    rded_mipc: int = 300
    rded_num_crop: int = 5
    rded_generator: Literal["rded", "edc-code"] = "rded"
    crop_scale: tuple[float, float] = (0.5, 1.0)
    r_loss: float = 0.01
    first_multiplier: float = 10.0
    train_momentum: float = 0.8
    reset_momentum_per_batch: bool = True
    compat_zero_init_ema: bool = False
    alpha: float = 0.5
    category_mode: Literal["aggregate", "per_class"] = "aggregate"
    hook_bn: bool = True
    hook_conv: bool = True
    conv_patch: bool = True
    patch: int = 4
    flatness: bool = True
    flatness_weight: float = 0.25
    flatness_beta: float = 0.99
    flatness_tau: float = 4.0
    flatness_order: Literal["paper", "code"] = "paper"
    flatness_reduction: Literal["batchmean", "mean"] = "batchmean"
    stats_per_class: int | None = None
    stats_aug: tuple[str, ...] = ("crop_pad", "flip")
    stats_batch: int = 64
    stats_seed: int = 0
    save_format: Literal["uint8_round", "uint8", "png", "jpeg_q75"] = "uint8_round"
    temperature: float | None = None
    log_every: int = 0

    def __post_init__(self) -> None:
        checks = [
            (bool(self.observers), "observers must name at least one architecture"),
            (self.label_observers is None or bool(self.label_observers), "label_observers must not be empty"),
            (self.iterations >= 1 and self.lr > 0, "iterations >= 1 and lr > 0"),
            (self.classes_per_step >= 1 and (self.batch_images or 1) >= 1, "classes_per_step, batch_images >= 1"),
            (0 < self.crop_scale[0] <= self.crop_scale[1] <= 1, "crop_scale must satisfy 0 < lo <= hi <= 1"),
            (0.0 <= self.alpha <= 1.0, f"alpha must be in [0, 1], got {self.alpha}"),
            (0.0 <= self.train_momentum < 1.0, "train_momentum must be in [0, 1)"),
            (0.0 <= self.flatness_beta < 1.0 and self.flatness_tau > 0, "flatness_beta in [0, 1), flatness_tau > 0"),
            (self.category_mode in CATEGORY_MODES, f"category_mode must be one of {CATEGORY_MODES}"),
            (self.hook_bn or self.hook_conv, "at least one of hook_bn, hook_conv"),
            (self.patch >= 1 and self.rded_factor >= 1 and self.rded_num_crop >= 1, "patch, rded_* >= 1"),
            (self.stats_per_class is None or self.stats_per_class >= 1, "stats_per_class >= 1 or unset"),
            (
                self.reset_momentum_per_batch or self.category_mode == "aggregate",
                "per_class matching keeps one EMA per class present, so it needs reset_momentum_per_batch = true",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def bn_weights(self) -> tuple[float, float]:
        """(r_loss, r_loss): the weight of the mean and variance terms, for the recover loop's record."""
        return self.r_loss, self.r_loss

    @property
    def labellers(self) -> tuple[str, ...]:
        return self.observers if self.label_observers is None else self.label_observers


@dataclass
class ObserverState:
    """One synthesis observer: its model, hooks, real-data targets and straight-through EMAs."""

    model: nn.Module
    recorder: StatsRecorder
    targets: Any
    momentum: MomentumStats


class EDC(SRe2L):
    """EDC on SRe2L's recover loop; see the module docstring."""

    name = "edc"
    version = 1
    Config = EDCConfig
    paper = "Shao, Zhou, Gu, Sun, Chen, Yu. Elucidating the Design Space of Dataset Condensation. NeurIPS 2024"
    needs_bn_teacher = False  # ConvNet observers without BN contribute conv statistics (spec §2.2)
    soft_labels = True
    PAPER_PROTOCOLS: ClassVar[dict[str, str]] = {
        "cifar10": "edc-cifar10",
        "cifar100": "edc-cifar100",
        "tiny-imagenet": "edc-tiny",
        "imageidc": "edc-imageidc",
        "imagenet-1k": "edc-imagenet",
    }
    #: Table 1's students (CIFAR-style ResNet-18/50/101 and the half-width MobileNetV2 on 32/64 px, §5) and
    #: Table 2's ImageNet-1k set (the DeiT/Swin/ConvNeXt columns have no ddbench architecture)
    PAPER_STUDENTS: ClassVar[dict[str, tuple[str, ...]]] = {
        "cifar10": ("resnet18", "resnet50", "resnet101", "mobilenetv2_050"),
        "cifar100": ("resnet18", "resnet50", "resnet101", "mobilenetv2_050"),
        "tiny-imagenet": ("resnet18", "resnet50", "resnet101", "mobilenetv2_050"),
        "imageidc": ("resnet18", "resnet50", "resnet101", "mobilenetv2"),
        "imagenet-1k": ("resnet18", "resnet50", "resnet101", "mobilenetv2", "efficientnet_b0", "shufflenetv2"),
    }
    config: EDCConfig

    # -- teachers -------------------------------------------------------------------------------------------------
    def observer_specs(self) -> tuple[list[TeacherSpec], list[int], list[int]]:
        """Unique observer specs (synthesis first), and the positions of the synthesis / label observers in them."""
        cfg = self.config
        specs: list[TeacherSpec] = []

        def position(entry: str) -> int:
            spec = parse_observer(entry, cfg.observer_recipe)
            if spec not in specs:
                specs.append(spec)
            return specs.index(spec)

        synth = [position(e) for e in cfg.observers]
        label = [position(e) for e in cfg.labellers]
        return specs, synth, label

    def teachers(self, dataset: Any) -> list[TeacherSpec]:
        return self.observer_specs()[0]

    def min_real_per_class(self, ipc: int) -> int:
        cfg = self.config
        if cfg.init == "real":
            return ipc
        return ipc * cfg.rded_factor**2 if cfg.init == "rded" else 0

    # -- the plan -------------------------------------------------------------------------------------------------
    def batch_size(self, ipc: int) -> int:
        return self.config.batch_images or self.config.classes_per_step * ipc

    def slot_batches(self, num_classes: int, start: int, stop: int) -> list[list[tuple[int, int]]]:
        """Class-major slots (c, j), j ∈ [start, stop), cut into consecutive synthesis batches (§1 S3)."""
        slots = [(c, j) for c in range(num_classes) for j in range(start, stop)]
        b = self.batch_size(stop - start)
        return [slots[s : s + b] for s in range(0, len(slots), b)]

    def units(self, num_classes: int, start: int, stop: int) -> list[tuple[str, int, list[tuple[int, list[int]]]]]:
        """One cached unit per synthesis batch; its "classes" list repeats each class once per slot."""
        self._slots = self.slot_batches(num_classes, start, stop)
        return [(f"edc-ipc{start}-{stop}-b{k:04d}", start, [(k, [c for c, _ in batch])])
                for k, batch in enumerate(self._slots)]  # fmt: skip

    # -- state ------------------------------------------------------------------------------------------------------
    def prepare(self, ctx: DistillContext) -> RecoverRun:
        """Observers on the device, each with its hooks, statistics-pass targets and momentum EMAs."""
        cfg = self.config
        _, synth, label = self.observer_specs()
        models = {i: ctx.teachers[i].model.to(ctx.device).eval() for i in synth}
        states = []
        for i in synth:
            teacher = ctx.teachers[i]
            targets = observer_targets(
                ctx.cache, teacher, ctx.dataset, patch=cfg.patch, per_class=cfg.stats_per_class, aug=cfg.stats_aug,
                batch_size=cfg.stats_batch, seed=cfg.stats_seed, device=ctx.device,
            )  # fmt: skip
            recorder = StatsRecorder(bn=cfg.hook_bn, conv=cfg.hook_conv, keep_inputs=True).attach(models[i])
            recorder.enabled = False
            momentum = MomentumStats(cfg.train_momentum, compat_zero_init_ema=cfg.compat_zero_init_ema)
            states.append(ObserverState(models[i], recorder, targets, momentum))
        first = states[0]
        run = RecoverRun(first.model, first.model, first.recorder, first.model, ctx.dataset.spec.mean,
                         ctx.dataset.spec.std)  # fmt: skip
        run.extra.update(observers=states, rded={}, batch=0)
        ctx.logger.info("edc: %d synthesis observers, %d label observers, EMA start %s, reset per batch %s",
                        len(states), len(label), "zero ([C])" if cfg.compat_zero_init_ema else "first statistic",
                        cfg.reset_momentum_per_batch)  # fmt: skip
        self._run = run
        return run

    def release(self, run: RecoverRun) -> None:
        for state in run.extra["observers"]:
            state.recorder.detach()

    @contextlib.contextmanager
    def session(self, ctx: DistillContext) -> Iterator[RecoverRun]:
        with contextlib.ExitStack() as stack:
            for teacher in ctx.teachers:
                stack.enter_context(frozen(teacher.model))
            with super().session(ctx) as run:
                yield run

    def recover_batch(
        self, ctx: DistillContext, run: RecoverRun, ipc_index: int, batch_index: int, classes: list[int]
    ) -> dict[str, torch.Tensor]:
        run.extra["batch"] = batch_index
        return super().recover_batch(ctx, run, ipc_index, batch_index, classes)

    def start_batch(self, run: RecoverRun) -> None:
        if self.config.reset_momentum_per_batch:
            for state in run.extra["observers"]:
                state.momentum.reset()

    def trace_window(self, run: RecoverRun) -> int:
        """One full round of the synthesis observers: each end of the loss trace averages every observer once."""
        return len(run.extra["observers"])

    def observer_index(self, batch_index: int, t: int, num_observers: int) -> int:
        """Round robin with a counter that runs on across batches (§2.7 step 1)."""
        return (batch_index * self.config.iterations + t) % num_observers

    # -- init -----------------------------------------------------------------------------------------------------
    def init_images(
        self, ctx: DistillContext, run: RecoverRun, ipc_index: int, classes: list[int], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        slots = self._slots[run.extra["batch"]]
        size = ctx.dataset.img_size
        extras: dict[str, torch.Tensor] = {"slot": torch.tensor([j for _, j in slots])}
        if cfg.init == "noise":  # clipped at once: [C] clips before every augmentation (§2.7 step 2)
            x = clip_to_valid_(torch.randn(len(slots), ctx.dataset.channels, size, size, generator=generator),
                               ctx.dataset.spec.mean, ctx.dataset.spec.std)  # fmt: skip
        elif cfg.init == "real":
            index = torch.tensor([int(ctx.real_permutation(c, "edc-init")[j]) for c, j in slots])
            x = ctx.dataset.normalize(ctx.dataset.train.load(index))
            if tuple(x.shape[-2:]) != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            x = random_flip(x, generator=generator, same_on_batch=False)
            extras["init_index"] = index
        else:
            x = torch.stack([self.rded_class(ctx, run, c)[j] for c, j in slots]).cpu()
        if self.config.flatness:
            run.extra["flat"] = FlatnessEMA(x.to(ctx.device), cfg.flatness_beta, cfg.flatness_tau,
                                            order=cfg.flatness_order, reduction=cfg.flatness_reduction)  # fmt: skip
        return x, extras

    def rded_class(self, ctx: DistillContext, run: RecoverRun, c: int) -> torch.Tensor:
        """RDED images of class c (§8.1), scored by the synthesis observers' mean logits; computed once per class."""
        cache = run.extra["rded"]
        if c not in cache:
            cfg = self.config
            models = [s.model for s in run.extra["observers"]]

            def score(x: torch.Tensor) -> torch.Tensor:
                return ensemble_logits(models, x)

            # §8.1 draws rded_mipc candidates; [C]'s §8.2 generator pre-selects among every image of the class
            code = cfg.rded_generator == "edc-code"
            pool = ctx.dataset.class_indices(c) if code else ctx.real_permutation(c, "edc-rded")[: cfg.rded_mipc]
            images = ctx.dataset.normalize(ctx.dataset.train.load(pool)).to(ctx.device)
            generator = ctx.generator("edc-rded", c)
            if code:
                cache[c] = edc_code_images(images, c, score, ipc=ctx.ipc, factor=cfg.rded_factor, generator=generator,
                                           keep=cfg.rded_mipc)  # fmt: skip
            else:
                cache[c] = rded_images(images, c, score, ipc=ctx.ipc, factor=cfg.rded_factor, generator=generator,
                                       num_crop=cfg.rded_num_crop)  # fmt: skip
        return cache[c]

    # -- the loop ---------------------------------------------------------------------------------------------------
    def iteration(
        self,
        ctx: DistillContext,
        run: RecoverRun,
        t: int,
        x: torch.Tensor,
        y: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        extras: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick this iteration's observer, then SRe2L's iteration (lr, augment, loss, step, clip)."""
        states = run.extra["observers"]
        k = self.observer_index(run.extra["batch"], t, len(states))
        run.model = run.stats_model = states[k].model
        run.recorder = states[k].recorder
        run.extra["k"], run.extra["x"] = k, x
        return super().iteration(ctx, run, t, x, y, optimizer, generator, extras)

    def augment(self, x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
        """One RandomResizedCrop(``crop_scale``) + flip shared by the batch; the EMA images get the same draw."""
        scale = self.config.crop_scale

        def view(z: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            z = random_resized_crop(z, size, scale, generator=g, same_on_batch=True)
            return random_flip(z, generator=g, same_on_batch=True)

        flat = self._run.extra.get("flat") if self.config.flatness else None
        if flat is None:
            return view(x, generator)
        a, self._run.extra["ema_view"] = same_views(view, [x, flat.images], generator)
        return a

    def losses(self, run: RecoverRun, a: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(CE, r_loss·statistics + w_FR·flatness) of the current observer (§2.7, §3)."""
        cfg = self.config
        state: ObserverState = run.extra["observers"][run.extra["k"]]
        state.recorder.clear()
        state.recorder.enabled = True
        try:
            logits = state.model(a)
        finally:
            state.recorder.enabled = False
        records = state.recorder.stats(None)
        if records:
            stats = statistics_loss(records, state.targets, y, alpha=cfg.alpha, category_mode=cfg.category_mode,
                                    momentum=state.momentum, first_multiplier=cfg.first_multiplier,
                                    conv_patch=cfg.conv_patch)  # fmt: skip
        else:  # e.g. hook_bn only on an observer without BN: it contributes its CE alone
            stats = logits.new_zeros(())
        state.recorder.clear()
        extra = cfg.r_loss * stats
        if cfg.flatness:
            flat: FlatnessEMA = run.extra["flat"]
            with torch.no_grad():
                ema_logits = state.model(run.extra["ema_view"])  # hooks disabled: nothing recorded
            flat.update(run.extra["x"])  # the pre-step x
            extra = extra + cfg.flatness_weight * flat.loss(logits, ema_logits)
        return F.cross_entropy(logits, y), extra

    # -- output ---------------------------------------------------------------------------------------------------
    def package(
        self, ctx: DistillContext, images: torch.Tensor, labels: torch.Tensor, meta: dict[str, Any], teacher: nn.Module
    ) -> DistilledSet:
        """Online ensemble soft labels: the mean logits of the label observers (§1 S4)."""
        cfg = self.config
        _, synth, label = self.observer_specs()
        meta.update(
            relabel="online ensemble: mean logits of the label observers",
            observers=[ctx.teachers[i].id for i in synth],
            observer_accuracy={ctx.teachers[i].id: ctx.teachers[i].accuracy.get("test_top1") for i in synth},
            momentum_start="zero (compat)" if cfg.compat_zero_init_ema else "first batch statistic",
            init=cfg.init,
        )
        spec = SoftLabelSpec(mode="ensemble", teachers=tuple(ctx.teachers[i].id for i in label),
                             temperature=cfg.temperature)  # fmt: skip
        return DistilledSet(images, labels, "uint8", spec, meta=meta)

    def extra_meta(self, shards: list[tuple[int, dict[str, torch.Tensor]]], order: torch.Tensor) -> dict[str, Any]:
        if self.config.init != "real":
            return {}
        index = torch.cat([s["init_index"] for _, s in shards])[order]
        return {"init_train_indices": index.tolist()}


__all__ = ["CIFAR_OBSERVERS", "EDC", "LADDER", "EDCConfig", "parse_observer"]
