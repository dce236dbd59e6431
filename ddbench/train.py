"""The one student-training loop every number goes through, and the test-accuracy pass.

* :func:`train_students`: trains several models **in lockstep** on one on-device copy of the (small) training set.
  Every step draws one batch, augments and mixes it once, asks the teacher for soft labels once, and feeds the same
  tensors to every student. Teachers are trained by the same function with a hard-label recipe
  (``ddbench/protocols/teacher/*.toml``), so teacher and student training cannot drift apart.
* :func:`evaluate_models`: top-1/top-5 of several models on uint8 test images, each batch read once for all models.

Seeding (spec sre2l-dwa §4.2): the batch order, crops, flips and mixes all come from the caller's CPU generator,
and every model keeps its own global-RNG state (dropout, drop-path), so training models together or one by one
gives bit-identical weights on CPU.

This module sits beside :mod:`ddbench.teachers` and below :mod:`ddbench.evaluate`: it knows protocols
(:mod:`ddbench.protocol`), tensors and image sources, never distilled sets or methods, so that teachers are
trained by the students' loop without importing the evaluator above them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ddbench.config import derive_seed
from ddbench.data.source import ImageSource
from ddbench.ops import augment as aug_ops
from ddbench.protocol import Protocol, apply_hints

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
PixelSpace = Literal["uint8", "normalized", "zca"]


class TrainingDiverged(RuntimeError):
    """A student's loss became NaN or infinite; the message names the model, epoch and step."""


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


__all__ = [
    "Batch",
    "PixelSpace",
    "ProgressFn",
    "TrainStats",
    "TrainingDiverged",
    "augment_batch",
    "build_optimizer",
    "evaluate_models",
    "kl_loss",
    "mixed_ce",
    "student_loss",
    "train_students",
]
