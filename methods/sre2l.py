"""SRe2L: Squeeze, Recover and Relabel (Yin, Xing, Shen, NeurIPS 2023), and the recover loop DWA shares.

Implements spec ``sre2l-dwa.md`` §3 (recover), §4 (relabel) and the ddbench definition of the SRe2L baseline (§3.8):
the shared recover loop of §6.2 with N(0, 1) init, λ_var = λ_mean (r_var = 1) and no weight perturbation (K = 0).
:mod:`ddbench_methods.dwa` subclasses :class:`SRe2L` and overrides only the initialization and the iteration-0
weight adjustment, so both methods run literally the same loop.

Per ipc index i and class-batch k (classes [kB, (k+1)B), one image per class, labels = class indices):

1. x ~ N(0, 1) in normalized space; a fresh Adam (β = 0.5, 0.9, eps 1e-8, no weight decay) on x.
2. For t = 0…T−1: lr η₀·½(1 + cos(πt/T)) set before the step; a = augment(x) (batch-shared RandomResizedCrop + flip
   for ≥ 64 px inputs, then a circular roll by (dy, dx) ∈ [0, J]² or [−J, J]²); one teacher forward;
   L = CE(f(a), y) + Σ_l m_l (λ_mean ‖μ_l(a) − RM_l‖₂ + λ_var ‖σ²_l(a) − RV_l‖₂) with m_1 = 10 on the stem BN
   (:mod:`ddbench.ops.bn_stats`); backward to x only (teacher parameters frozen); Adam step; clip x to the valid
   pixel range.
3. The last iterate is quantized (denormalize, clamp, ×255, truncate) and, under ``save_format=jpeg_q75``, passed
   through PIL's default JPEG encoder, as upstream saves it (§3.7). The DistilledSet holds these uint8 pixels, so
   evaluation reads exactly the artifact.

Each (ipc index, class-batch) is one cached shard (``ipc0003-cb001``) whose random streams derive from
(seed, ipc index, class-batch) only, so a killed run resumes at the next unfinished shard and generating ipc
indices [0, 5) then [5, 10) gives the same images as [0, 10) (§3.1, §11). Bit-exact for the same torch build,
device and number of CPU threads (another thread count changes float rounding in convolutions, not the algorithm).

Not done (future work): running several class-batches in one forward with per-shard BN statistics
(:meth:`StatsRecorder.set_groups` already computes them, tested) or vmapping DWA's per-batch weights. A rough CPU
measurement (ResNet-18, 4 shards of 10 images at 8 and 32 px) gave 1.4–1.8× more shard-iterations per second, but
batched convolutions round differently from unbatched ones, so a shard's pixels would depend on which shards it was
batched with, breaking the bit-exact range independence above; it would also need per-shard augmentation draws.

Relabel (§4): ``relabel="online"`` (default, as SRe2L's CIFAR/Tiny scripts and every DWA setting) returns
``SoftLabelSpec(mode="teacher")``, i.e. the evaluator runs the same teacher on every augmented, mixed batch.
``relabel="stored"`` is a simplified FKD stand-in (not FKD itself): one soft label per image, the mean of the
teacher's logits over ``relabel_views`` fixed views of the saved image (view 0 = the image itself, the others
per-image RandomResizedCrop(``crop_scale``) + flip drawn from a seeded generator). It does not store per-epoch crops,
boxes or mixing parameters, so it cannot be replayed under mixup/CutMix the way FKD's labels are.

Deviations from the official code, all [ddbench] choices of the spec:

* single-device semantics: BN statistics over the whole class-batch (no DataParallel sharding, §3.5);
* one normalization constant set per dataset everywhere (SRe2L's CIFAR-100 reuses CIFAR-10 constants; §1.2);
* no TV-L2 / L2 image priors (the published commands set them to 0; §3.4);
* the official code has no CIFAR-10 path; CIFAR-10 uses the CIFAR-100 settings (§3.8, [inferred]);
* the stored-relabel variant above is simpler than FKD (§4.1).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ddbench.method import DistillContext, DistilledSet, Method, SoftLabelSpec, TeacherSpec, class_major
from ddbench.models import has_batchnorm
from ddbench.ops.augment import random_flip, random_resized_crop, random_roll
from ddbench.ops.bn_stats import StatsRecorder, bn_matching_loss
from ddbench.ops.recover import clip_to_valid_, cosine_lr, set_lr, to_artifact
from ddbench.ops.relabel import stored_soft_labels

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SRe2LConfig:
    """SRe2L recover settings; defaults are the CIFAR-100 column of spec §3.8 (presets set the other datasets).

    Attributes:
        iterations: recover iterations T per class-batch.
        lr: initial Adam learning rate η₀ (cosine to ~0 over T, no warmup).
        class_batch: classes per class-batch B (one image per class per batch).
        lambda_mean: absolute weight of the BN mean terms (SRe2L's r_bn).
        lambda_var: absolute weight of the BN variance terms (r_bn · r_var; equal to lambda_mean in SRe2L).
        r_bn, r_var: optional upstream-style pair. When either is set it defines both weights:
            lambda_mean = r_bn and lambda_var = r_bn · r_var, with r_bn defaulting to ``lambda_mean`` and r_var to 1
            (coupled), so ``r_bn=0.11`` alone is DWA Fig. 3's coupled variant (§6.3).
        first_bn_multiplier: m_1, the weight of both terms of the first BatchNorm2d (the stem).
        jitter: J, the maximum circular shift in pixels.
        jitter_symmetric: shifts in [−J, J] (SRe2L Tiny) instead of [0, J].
        crop_flip: batch-shared RandomResizedCrop + horizontal flip before the roll; ``auto`` = on for inputs of at
            least 64 px (Tiny, ImageNet), off below (CIFAR drops the multi-crop).
        crop_scale: RandomResizedCrop scale range (also used by ``relabel="stored"`` views).
        aug_per_sample: draw crop/flip per image instead of once per batch (a named behavioural change, §9.2).
        save_format: ``jpeg_q75`` (faithful PIL JPEG artifact), ``png`` or ``uint8`` (lossless); see
            :mod:`ddbench.ops.recover`.
        teacher_recipe: the teacher's training recipe (``default`` = the dataset's paper recipe, or a TOML path; the
            GPU check cuts the CIFAR recipe's epochs this way).
        teacher_arch: teacher architecture ("" = the dataset's default teacher when it has BatchNorm, else
            ``convnet_bn``: BN matching needs BN layers, and MNIST-style datasets default to an instance-norm ConvNet).
        temperature: KD temperature preferred for evaluation (None = the protocol's).
        relabel: ``online`` (teacher at evaluation) or ``stored`` (per-image mean logits; see module docstring).
        relabel_views: views averaged per image under ``relabel="stored"``.
        log_every: log the CE and BN components every this many iterations (0: first and last only).
    """

    iterations: int = 1000
    lr: float = 0.25
    class_batch: int = 100
    lambda_mean: float = 0.01
    lambda_var: float = 0.01
    r_bn: float | None = None
    r_var: float | None = None
    first_bn_multiplier: float = 10.0
    jitter: int = 4
    jitter_symmetric: bool = False
    crop_flip: Literal["auto", "on", "off"] = "auto"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    aug_per_sample: bool = False
    save_format: Literal["jpeg_q75", "png", "uint8"] = "jpeg_q75"
    teacher_arch: str = ""
    teacher_recipe: str = "default"
    temperature: float | None = None
    relabel: Literal["online", "stored"] = "online"
    relabel_views: int = 10
    log_every: int = 0

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.iterations < 1 or self.class_batch < 1:
            raise ValueError(f"iterations and class_batch must be >= 1, got {self.iterations}, {self.class_batch}")
        if self.jitter < 0 or self.relabel_views < 1:
            raise ValueError(f"jitter must be >= 0 and relabel_views >= 1, got {self.jitter}, {self.relabel_views}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")

    @property
    def bn_weights(self) -> tuple[float, float]:
        """The absolute (λ_mean, λ_var) in effect, after the r_bn/r_var compatibility rule."""
        if self.r_bn is None and self.r_var is None:
            return self.lambda_mean, self.lambda_var
        r_bn = self.lambda_mean if self.r_bn is None else self.r_bn
        return r_bn, r_bn * (1.0 if self.r_var is None else self.r_var)


@dataclass
class RecoverRun:
    """Per-distillation state of the recover loop.

    Attributes:
        teacher: the unperturbed teacher θ_T (eval mode, never modified).
        model: the network producing the logits (the teacher for SRe2L; DWA's perturbable working copy).
        recorder: BN hooks on the network whose statistics are matched (``model``, or the teacher when DWA takes the
            statistics from the unperturbed network).
        stats_model: the network ``recorder`` is attached to.
        mean, std: the dataset's normalization constants.
        extra: method-specific state (subclasses keep per-distillation caches here).
    """

    teacher: nn.Module
    model: nn.Module
    recorder: StatsRecorder
    stats_model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    extra: dict[str, Any] = field(default_factory=dict)


StepProbe = Callable[[int, torch.Tensor, torch.Tensor, RecoverRun], None]


def bn_teacher_arch(dataset: Any) -> str:
    """The dataset's default teacher if it has BatchNorm, else ``convnet_bn`` (BN matching needs BN layers)."""
    arch = dataset.spec.default_teacher
    if has_batchnorm(arch, dataset.num_classes, dataset.img_size, dataset.channels):
        return arch
    logger.info("%s's default teacher %s has no BatchNorm; BN-matching methods use convnet_bn", dataset.id, arch)
    return "convnet_bn"


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Parameters do not require grad inside the block (only the images do); previous flags are restored after."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


class SRe2L(Method):
    """SRe2L recover with online (default) or stored soft labels; see the module docstring.

    Subclasses customise :meth:`init_images`, :meth:`before_synthesis`, :meth:`start_batch` and :meth:`units`.
    ``step_probe``, when set, is called as ``probe(t, x, a, run)`` after every backward and before the Adam step
    (tests read iteration 0's ``x.grad`` through it).
    """

    name = "sre2l"
    version = 2
    Config = SRe2LConfig
    paper = "Yin, Xing, Shen. Squeeze, Recover and Relabel: Dataset Condensation at ImageNet Scale. NeurIPS 2023"
    needs_bn_teacher = True
    soft_labels = True
    #: the paper protocol per dataset (SRe2L's own evaluation scripts)
    PAPER_PROTOCOLS: ClassVar[dict[str, str]] = {
        "cifar10": "sre2l-cifar",
        "cifar100": "sre2l-cifar",
        "tiny-imagenet": "sre2l-tiny",
        "imagenet-1k": "sre2l-imagenet",
    }
    #: the cross-architecture students of DWA's tables, where SRe2L is the baseline row (Tables 4–5 CIFAR, 9
    #: ImageNet-1K; Tiny: Table 2's ResNet-18/50/101)
    PAPER_STUDENTS: ClassVar[dict[str, tuple[str, ...]]] = {
        "cifar10": ("convnet_bn", "resnet18", "resnet50", "mobilenetv2", "shufflenetv2", "efficientnet_b0", "vgg16_bn"),
        "cifar100": (
            "convnet_bn",
            "resnet18",
            "resnet50",
            "mobilenetv2",
            "shufflenetv2",
            "efficientnet_b0",
            "vgg16_bn",
        ),
        "tiny-imagenet": ("resnet18", "resnet50", "resnet101"),
        "imagenet-1k": ("resnet18", "resnet50", "resnet101", "deit_tiny_bn"),
    }

    def __init__(self, config: SRe2LConfig) -> None:
        super().__init__(config)
        self.step_probe: StepProbe | None = None

    def teachers(self, dataset: Any) -> list[TeacherSpec]:
        return [
            TeacherSpec(arch=self.config.teacher_arch or bn_teacher_arch(dataset), recipe=self.config.teacher_recipe)
        ]

    def paper_protocol(self, dataset: str) -> str | None:
        return self.PAPER_PROTOCOLS.get(dataset)

    def paper_students(self, dataset: str | None) -> tuple[str, ...] | None:
        return self.PAPER_STUDENTS.get(dataset or "")

    def min_real_per_class(self, ipc: int) -> int:
        return 0  # N(0, 1) init: no real image is used

    # -- the plan -------------------------------------------------------------------------------------------------
    def class_batches(self, num_classes: int) -> list[list[int]]:
        """Classes of each class-batch: [0, B), [B, 2B), … (the last one may be shorter)."""
        b = self.config.class_batch
        return [list(range(s, min(s + b, num_classes))) for s in range(0, num_classes, b)]

    def units(self, num_classes: int, start: int, stop: int) -> list[tuple[str, int, list[tuple[int, list[int]]]]]:
        """Cached units ``(shard key, ipc index, [(class-batch index, classes), …])``: one class-batch each."""
        batches = list(enumerate(self.class_batches(num_classes)))
        return [(f"ipc{i:04d}-cb{k:03d}", i, [(k, classes)]) for i in range(start, stop) for k, classes in batches]

    # -- customisation points ---------------------------------------------------------------------------------------
    def prepare(self, ctx: DistillContext) -> RecoverRun:
        """Attach the BN hooks to the teacher (SRe2L matches and classifies with the same network)."""
        teacher = ctx.teachers[0].model.to(ctx.device).eval()
        recorder = StatsRecorder().attach(teacher)
        return RecoverRun(teacher, teacher, recorder, teacher, ctx.dataset.spec.mean, ctx.dataset.spec.std)

    def release(self, run: RecoverRun) -> None:
        run.recorder.detach()

    def start_unit(self, run: RecoverRun) -> None:
        """Called before the first class-batch of a cached unit (DWA: fresh teacher copy)."""

    def start_batch(self, run: RecoverRun) -> None:
        """Called before every class-batch (DWA: reset θ ← θ_T unless accumulating)."""

    def init_images(
        self, ctx: DistillContext, run: RecoverRun, ipc_index: int, classes: list[int], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """SRe2L's N(0, 1) init in normalized space, drawn on the CPU from the class-batch's generator."""
        shape = (len(classes), ctx.dataset.channels, ctx.dataset.img_size, ctx.dataset.img_size)
        return torch.randn(shape, generator=generator), {}

    def before_synthesis(
        self,
        ctx: DistillContext,
        run: RecoverRun,
        x: torch.Tensor,
        a: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """Called at iteration 0 after the augmentation, before the forward (DWA: the weight adjustment)."""
        return {}

    def trace_window(self, run: RecoverRun) -> int:
        """Iterations averaged at each end of a class-batch's loss trace (the loss-rose check compares the two).

        One for a single teacher. A method that changes the loss function between iterations (EDC's round-robin
        observers) returns its period, so both windows average the same functions and "the loss rose" means the
        images got worse, not that the last iteration used a harder observer.
        """
        del run
        return 1

    def synthesis_param_grads(self) -> bool:
        """Whether teacher parameters require grad during synthesis (only DWA's accumulate mode, D3/D6)."""
        return False

    # -- the loop -----------------------------------------------------------------------------------------------------
    def augment(self, x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
        """Crop/flip (batch-shared by default) for ≥ 64 px or when forced, then the circular roll (§3.3)."""
        cfg = self.config
        use_crop = cfg.crop_flip == "on" or (cfg.crop_flip == "auto" and size >= 64)
        same = not cfg.aug_per_sample
        if use_crop:
            x = random_resized_crop(x, size, cfg.crop_scale, generator=generator, same_on_batch=same)
            x = random_flip(x, generator=generator, same_on_batch=same)
        if cfg.jitter > 0:
            x = random_roll(x, cfg.jitter, generator=generator, symmetric=cfg.jitter_symmetric)
        return x

    def losses(self, run: RecoverRun, a: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(CE, BN term) of one iteration: one forward, plus one more only when the statistics come from another net."""
        lambda_mean, lambda_var = self.config.bn_weights
        run.recorder.clear()
        logits = run.model(a)
        if run.stats_model is not run.model:
            run.stats_model(a)
        bn = bn_matching_loss(
            run.recorder.stats(),
            lambda_mean=lambda_mean,
            lambda_var=lambda_var,
            first_multiplier=self.config.first_bn_multiplier,
        )
        run.recorder.clear()
        return F.cross_entropy(logits, y), bn

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
        """One recover iteration t on x (in place): lr, augment, [t = 0: weight adjustment], loss, step, clip."""
        cfg = self.config
        set_lr(optimizer, cosine_lr(cfg.lr, t, cfg.iterations))
        optimizer.zero_grad()
        a = self.augment(x, ctx.dataset.img_size, generator)
        if t == 0:
            extras.update(self.before_synthesis(ctx, run, x, a, y, generator))
        ce, bn = self.losses(run, a, y)
        (ce + bn).backward()
        if self.step_probe is not None:
            self.step_probe(t, x, a, run)
        optimizer.step()
        clip_to_valid_(x, run.mean, run.std)
        return ce.detach(), bn.detach()

    def recover_batch(
        self, ctx: DistillContext, run: RecoverRun, ipc_index: int, batch_index: int, classes: list[int]
    ) -> dict[str, torch.Tensor]:
        """Optimize one class-batch and return its shard tensors (uint8 images, labels, losses, extras)."""
        cfg = self.config
        generator = ctx.generator("recover", ipc_index, batch_index)
        self.start_batch(run)
        y = torch.tensor(classes, dtype=torch.long, device=ctx.device)
        x0, extras = self.init_images(ctx, run, ipc_index, classes, generator)
        x = x0.to(ctx.device, torch.float32).requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=cfg.lr, betas=(0.5, 0.9), eps=1e-8, weight_decay=0.0)
        trace = torch.zeros(2, 2)  # rows: mean (CE, BN) over the first / the last `window` iterations
        window = min(self.trace_window(run), cfg.iterations)
        for t in range(cfg.iterations):
            ce, bn = self.iteration(ctx, run, t, x, y, optimizer, generator, extras)
            for row, inside in ((0, t < window), (1, t >= cfg.iterations - window)):
                if inside:
                    trace[row] += torch.tensor([ce.item(), bn.item()]) / window
            if cfg.log_every and t % cfg.log_every == 0:
                ctx.logger.debug("ipc %d cb %d it %d: CE %.4f BN %.4f", ipc_index, batch_index, t, ce.item(), bn.item())
        images = to_artifact(x.detach(), run.mean, run.std, cfg.save_format)
        with torch.no_grad():
            correct = run.teacher(ctx.dataset.normalize(images.to(ctx.device))).argmax(1).cpu() == y.cpu()
        ctx.logger.info(
            "ipc %d cb %d: CE %.4f → %.4f, BN %.4f → %.4f, teacher acc on saved %.2f",
            ipc_index,
            batch_index,
            *trace.T.flatten().tolist(),
            correct.float().mean().item(),
        )
        return {"images": images, "labels": y.cpu(), "losses": trace, "correct": correct, **extras}

    def recover_unit(
        self, ctx: DistillContext, run: RecoverRun, ipc_index: int, batches: list[tuple[int, list[int]]]
    ) -> dict[str, torch.Tensor]:
        """One cached unit: its class-batches in order, tensors concatenated (per-batch scalars stacked)."""
        self.start_unit(run)
        parts = [self.recover_batch(ctx, run, ipc_index, k, classes) for k, classes in batches]
        out: dict[str, torch.Tensor] = {}
        for key in parts[0]:
            values = [p[key] for p in parts]
            out[key] = torch.cat(values) if values[0].ndim and key not in ("losses",) else torch.stack(values)
        return out

    @contextlib.contextmanager
    def session(self, ctx: DistillContext) -> Iterator[RecoverRun]:
        """Prepared loop state with the teacher frozen and the hooks removed afterwards, whatever happens."""
        run = self.prepare(ctx)
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(frozen(run.teacher))  # θ_T never receives gradients
                if run.model is not run.teacher and not self.synthesis_param_grads():
                    stack.enter_context(frozen(run.model))  # D6: weights frozen outside DWA's ascent block
                yield run
        finally:
            self.release(run)

    # -- entry points -------------------------------------------------------------------------------------------------
    def distill(self, ctx: DistillContext) -> DistilledSet:
        return self.distill_range(ctx, 0, ctx.ipc)

    def distill_range(self, ctx: DistillContext, start: int, stop: int) -> DistilledSet:
        """Distil ipc indices [start, stop); each index is independent, so ranges concatenate into larger sets."""
        if not 0 <= start < stop:
            raise ValueError(f"ipc range [{start}, {stop}) is empty or negative")
        cfg = self.config
        units = self.units(ctx.dataset.num_classes, start, stop)
        with self.session(ctx) as run:
            items = [
                (key, lambda i=i, batches=batches: self.recover_unit(ctx, run, i, batches)) for key, i, batches in units
            ]
            shards = list(zip((i for _, i, _ in units), ctx.shards(items, stage="recover"), strict=True))
            teacher = run.teacher
        out, order = class_major(shards, ["images"])
        images, labels = out["images"], out["labels"]
        losses = torch.stack([s["losses"].reshape(-1, 2, 2) for _, s in shards]).reshape(-1, 2, 2)
        correct = torch.cat([s["correct"] for _, s in shards])
        ce_first, ce_last = losses[:, :, 0].mean(0).tolist()
        start_loss, end_loss = losses.sum(2).mean(0).tolist()
        if end_loss > start_loss:
            ctx.logger.warning(
                "recover loss rose: CE + BN %.4g at the first iteration(s), %.4g at the last (mean over %d "
                "class-batches); the learning rate (%g) is probably too high",
                start_loss,
                end_loss,
                len(losses),
                cfg.lr,
            )
        meta: dict[str, Any] = {
            "save_format": cfg.save_format,
            "ipc_range": [start, stop],
            "lambda_mean": cfg.bn_weights[0],
            "lambda_var": cfg.bn_weights[1],
            "recover_ce_first_last": [ce_first, ce_last],
            "recover_bn_first_last": losses[:, :, 1].mean(0).tolist(),
            "teacher_acc_on_distilled": int(correct.sum()) / correct.numel(),
            "shards": [key for key, _, _ in units],
        }
        meta.update(self.extra_meta(shards, order))
        return self.package(ctx, images, labels, meta, teacher)

    def package(
        self, ctx: DistillContext, images: torch.Tensor, labels: torch.Tensor, meta: dict[str, Any], teacher: nn.Module
    ) -> DistilledSet:
        """The DistilledSet of the saved uint8 images with its soft-label spec (relabel, §4); EDC: the ensemble."""
        cfg = self.config
        teacher_id = ctx.teachers[0].id
        if cfg.relabel == "stored":
            x = ctx.dataset.normalize(images.to(ctx.device))
            soft = stored_soft_labels(
                teacher, x, views=cfg.relabel_views, crop_scale=cfg.crop_scale, generator=ctx.generator("relabel")
            )
            spec = SoftLabelSpec(mode="stored", teachers=(teacher_id,), temperature=cfg.temperature)
            meta["relabel"] = f"stored: mean teacher logits over {cfg.relabel_views} views per image"
            return DistilledSet(images, labels, "uint8", spec, soft_labels=soft, meta=meta)
        spec = SoftLabelSpec(mode="teacher", teachers=(teacher_id,), temperature=cfg.temperature)
        meta["relabel"] = "online"
        return DistilledSet(images, labels, "uint8", spec, meta=meta)

    def extra_meta(self, shards: list[tuple[int, dict[str, torch.Tensor]]], order: torch.Tensor) -> dict[str, Any]:
        """Method-specific provenance from the shards (DWA: init indices, ‖Δθ‖)."""
        return {}
