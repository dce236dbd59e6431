"""The one student-training loop every number goes through, and the test-accuracy pass.

* :class:`Trainer`: trains several models **in lockstep** on one on-device copy of the (small) training set.
  Every step draws one batch, augments and mixes it once, asks the label mode (an online teacher, an ensemble,
  stored labels or none) for targets once, and feeds the same tensors to every student. Teachers and MTT's expert
  trajectories are trained by the same object with a hard-label recipe (``ddbench/protocols/teacher/*.toml``), so
  teacher, expert and student training cannot drift apart.
* :class:`Callback`: hooks at train begin/end, after every step and after every epoch that see the trainer and its
  students (models, optimizers, stats); MTT records one parameter snapshot per epoch through one.
* :func:`evaluate_models`: top-1/top-5 of several models on uint8 test images, each batch read once for all models,
  turned into model inputs by the set's pixel space (a ZCA set's test images are whitened the same way).

The pieces a protocol names are objects looked up in registries: the pixel space (:mod:`ddbench.pixels`), the
label mode and loss (:mod:`ddbench.labels`) and the batch augmentations (:mod:`ddbench.augmentations`); the loop
switches on none of their names.

Seeding (spec sre2l-dwa §4.2): the batch order, crops, flips and mixes all come from the caller's CPU generator,
and every model keeps its own global-RNG state (dropout, drop-path), so training models together or one by one
gives bit-identical weights on CPU.

This module sits beside :mod:`ddbench.teachers` and below :mod:`ddbench.evaluate`: it knows protocols, tensors and
image sources, never distilled sets or methods, so that teachers are trained by the students' loop without
importing the evaluator above them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ddbench.augmentations import BATCH_AUGS
from ddbench.config import derive_seed
from ddbench.data.source import ImageSource
from ddbench.distributed import DistInfo, rank_seed
from ddbench.labels import LOSSES, Batch, HardLabels, LabelMode
from ddbench.ops import augment as aug_ops
from ddbench.pixels import PixelSpace
from ddbench.protocol import Protocol, apply_hints

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
TestFn = Callable[[Sequence[nn.Module]], Sequence[tuple[float, float]]]


class TrainingDiverged(RuntimeError):
    """A student's loss became NaN or infinite; the message names the model, epoch and step."""


# ====================================================================================================================
# Batches
# ====================================================================================================================
def augment_batch(
    images: torch.Tensor, protocol: Protocol, space: PixelSpace, generator: torch.Generator
) -> tuple[torch.Tensor, aug_ops.Mixed | None]:
    """Augment and mix one batch of stored images into model inputs; the only place student inputs are made.

    The pixel space turns stored images into a working tensor (uint8: [0, 1], where zero padding is black, as
    torchvision on PIL images; normalized/ZCA: as stored, where geometric ops commute with the affine map and padding
    is the mean colour), the protocol's augmentations run in order (an op that needs model inputs, such as DSA,
    first finishes the conversion), the space finishes the conversion to model inputs, and mixing comes last.
    """
    x = space.start(images)
    in_model = space.model_space
    for name in protocol.aug:
        op = BATCH_AUGS.get(name)
        if op.model_space and not in_model:
            x, in_model = space.finish(x), True
        x = op.fn(x, protocol, generator)
    if not in_model:
        x = space.finish(x)
    if protocol.mix == "none":
        return x, None
    coin = float(torch.rand(1, generator=generator))
    if coin >= protocol.mix_prob:
        return x, None
    if protocol.mix == "mixup":
        return x, aug_ops.mixup(x, None, protocol.mix_alpha, generator=generator, pairing="perm")
    return x, aug_ops.cutmix(x, protocol.mix_alpha, generator=generator, pairing=protocol.cutmix_pairing)


# ====================================================================================================================
# Students and callbacks
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


class Student:
    """One model's training state inside the lockstep loop (what callbacks see).

    Attributes:
        model: the model being trained, in place.
        stats: its :class:`TrainStats`.
        optimizer: its optimizer (rebuilt at milestones when the protocol resets it).
        ema: parameter EMA (None unless the protocol sets ``ema``).
    """

    def __init__(self, model: nn.Module, name: str, seed: int, protocol: Protocol, device: torch.device) -> None:
        self.model = model
        self.forward: nn.Module = model  # the DistributedDataParallel wrapper under DDP
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


class Callback:
    """Hooks into :meth:`Trainer.fit`; override the ones you need (each default does nothing).

    ``epoch`` is the number of epochs completed (1-based) in :meth:`on_epoch_end`, the 0-based epoch index in
    :meth:`on_step_end`. ``students`` are the active ones (a failed student leaves the list).
    """

    def on_train_begin(self, trainer: Trainer, students: Sequence[Student]) -> None:
        """Before the first step (MTT records the initial parameters here)."""

    def on_step_end(self, trainer: Trainer, epoch: int, step: int, students: Sequence[Student], batch: Batch) -> None:
        """After every optimizer step of every active student."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, students: Sequence[Student]) -> None:
        """After each epoch (and after the epoch's test pass, if any)."""

    def on_train_end(self, trainer: Trainer, students: Sequence[Student]) -> None:
        """After the last epoch, before EMA weights are copied in."""


def _model_name(model: nn.Module, seen: dict[str, int]) -> str:
    base = getattr(model, "ddbench_arch", type(model).__name__)
    k = seen.get(base, 0)
    seen[base] = k + 1
    return base if k == 0 else f"{base}#{k}"


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the model's device type when ``amp`` (weights, losses and optimiser stay fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()


# ====================================================================================================================
# Lockstep training
# ====================================================================================================================
class Trainer:
    """Train models in lockstep under a protocol: one batch, one augmentation, one target per step.

    Args:
        protocol: the training recipe (``hints`` applied when the protocol allows them).
        space: the pixel space of the training images (turns stored images into model inputs).
        labels: the label mode (default: hard labels). Its teachers are called under ``no_grad`` on the
            augmented, mixed, model-space batch; the caller sets their train/eval mode.
        device: where training runs.
        hints: artifact hints (MTT's learned ``syn_lr``), applied when ``protocol.use_hints``.
        amp: bf16 autocast of the forward passes (students and teachers); weights, losses and the optimiser stay
            fp32. Meant for CUDA; it also runs on a CPU (fast only with AVX512-BF16/AMX), which is how it is tested.
        channels_last: channels-last memory format for models and batches (numerically equivalent; a speed-up
            for convolutions on tensor cores).
        callbacks: :class:`Callback` objects, called in order.
        progress: ``progress(stage, epochs_done, epochs)`` after each epoch.
        stage: the progress bar's label (``train``, ``teacher resnet18``, ``expert 3``...).
        test_fn: ``test_fn(models) -> [(top1, top5), ...]`` called every ``test_every`` epochs and after the last
            epoch, on EMA weights in eval mode; its points form ``TrainStats.test_curve``.
        catch_errors: record a failing model's error in its stats and continue with the others, instead of
            raising.
        dist: data-parallel place of this process (:mod:`ddbench.distributed`): each global batch is split over
            the ranks, augmentations come from a per-rank generator, and gradients are averaged by
            DistributedDataParallel. None (or a world of one) trains as a single process, bit for bit.
    """

    def __init__(
        self,
        protocol: Protocol,
        *,
        space: PixelSpace,
        labels: LabelMode | None = None,
        device: torch.device | str = "cpu",
        hints: Mapping[str, float] | None = None,
        amp: bool = False,
        channels_last: bool = False,
        callbacks: Sequence[Callback] = (),
        progress: ProgressFn | None = None,
        stage: str = "train",
        test_fn: TestFn | None = None,
        catch_errors: bool = False,
        dist: DistInfo | None = None,
    ) -> None:
        self.protocol = apply_hints(protocol, hints)
        self.dist = dist if dist is not None else DistInfo()
        self.space = space
        self.labels = labels if labels is not None else HardLabels()
        self.loss_fn = LOSSES.get(self.protocol.loss)
        if self.labels.soft != (self.protocol.loss != "ce"):
            raise ValueError(
                f"protocol {self.protocol.name!r}: loss {self.protocol.loss!r} does not fit label mode "
                f"{self.labels.name!r}"
            )
        self.device = torch.device(device)
        self.amp, self.channels_last = amp, channels_last
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.callbacks = list(callbacks)
        self.progress, self.stage, self.test_fn, self.catch_errors = progress, stage, test_fn, catch_errors
        self.students: list[Student] = []
        self.active: list[Student] = []
        if (amp or channels_last) and self.device.type != "cuda":
            logger.info("amp=%s channels_last=%s on %s: supported, but the speed-up is a CUDA one", amp, channels_last,
                        self.device)  # fmt: skip

    def steps_per_epoch(self, n: int) -> int:
        return math.ceil(n / self.protocol.batch_size)

    def teacher_forwards_per_epoch(self, n: int) -> int:
        """Teacher forward passes one epoch over ``n`` images costs (shown in the storage table)."""
        return self.steps_per_epoch(n) * self.labels.forwards_per_batch()

    # -- the loop -------------------------------------------------------------------------------------------------
    def fit(
        self,
        models: Sequence[nn.Module],
        images: torch.Tensor | ImageSource,
        labels: torch.Tensor,
        *,
        generator: torch.Generator,
        model_seeds: Sequence[int] | None = None,
    ) -> list[TrainStats]:
        """Train ``models`` in place; returns one :class:`TrainStats` per model, in order.

        Args:
            models: built models; moved to the device and trained in place. Returned models hold their EMA
                weights when the protocol has ``ema``.
            images: ``[N, C, H, W]`` stored images (kept on the device as one tensor), or an ImageSource read batch
                by batch (large teacher training sets).
            labels: ``[N]`` hard labels.
            generator: CPU generator for the batch order and every augmentation and mixing draw.
            model_seeds: per-model seeds of the private RNG streams (default: derived from the generator's seed and
                the model's position). Pass the same seed to get the same dropout stream alone or in a group.

        Raises:
            TrainingDiverged: a non-finite loss (unless ``catch_errors``).
        """
        protocol, device = self.protocol, self.device
        n = len(labels)
        on_device = isinstance(images, torch.Tensor)
        data = images.to(device) if isinstance(images, torch.Tensor) else images
        y_all = torch.as_tensor(labels, dtype=torch.long).to(device)
        self.labels.to(device)
        seed0 = generator.initial_seed()
        seeds = (
            list(model_seeds)
            if model_seeds is not None
            else [derive_seed(seed0, "model", i) for i in range(len(models))]
        )
        seen: dict[str, int] = {}
        self.students = []
        for model, seed in zip(models, seeds, strict=True):
            model.to(device=device, memory_format=self.fmt).train()
            self.students.append(Student(model, _model_name(model, seen), seed, protocol, device))
        self.active = list(self.students)
        aug_gen = generator
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            for st in self.students:
                st.forward = DistributedDataParallel(st.model, device_ids=ids)
            aug_gen = torch.Generator().manual_seed(rank_seed(seed0, self.dist.rank))
        steps = self.steps_per_epoch(n)
        logger.info(
            "training %d model(s) [%s] under %s@%s: %d epochs x %d steps, labels=%s, space=%s, device=%s",
            len(self.students),
            ", ".join(st.stats.name for st in self.students),
            protocol.name,
            protocol.profile,
            protocol.epochs,
            steps,
            self.labels.name,
            self.space.name,
            device,
        )
        for cb in self.callbacks:
            cb.on_train_begin(self, self.active)
        start = time.perf_counter()
        for epoch in range(protocol.epochs):
            if not self.active:
                break
            self._begin_epoch(epoch)
            order = torch.randperm(n, generator=generator)
            for step in range(steps):
                idx = self.dist.shard(order[step * protocol.batch_size : (step + 1) * protocol.batch_size])
                idx_d = idx.to(device)
                raw = data[idx_d] if on_device else data.load(idx).to(device)
                batch = self._batch(raw, y_all[idx_d], idx_d, aug_gen)
                self._step(batch)
                for cb in self.callbacks:
                    cb.on_step_end(self, epoch, step, self.active, batch)
            self._end_epoch(epoch)
        wall = time.perf_counter() - start
        for cb in self.callbacks:
            cb.on_train_end(self, self.active)
        for st in self.students:
            st.stats.wall_time_s = wall
            if st.ema is not None and st.stats.error is None:
                with torch.no_grad():
                    torch._foreach_copy_(list(st.model.parameters()), st.ema)
        return [st.stats for st in self.students]

    def _fail(self, student: Student, exc: BaseException) -> None:
        if not self.catch_errors:
            raise exc
        student.stats.error = f"{type(exc).__name__}: {exc}"
        logger.warning("%s failed: %s", student.stats.name, student.stats.error)
        self.active.remove(student)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _begin_epoch(self, epoch: int) -> None:
        protocol = self.protocol
        factor = protocol.lr_factor(epoch)
        for st in self.active:
            if protocol.reset_optimizer_at_milestones and epoch in protocol.step_milestones:
                st.optimizer = build_optimizer(st.model, protocol)
            st.set_lr(factor)
            st.step_losses = []

    def _batch(self, raw: torch.Tensor, y: torch.Tensor, index: torch.Tensor, generator: torch.Generator) -> Batch:
        x, mixed = augment_batch(raw, self.protocol, self.space, generator)
        batch = Batch(x.contiguous(memory_format=self.fmt), y, index)
        if mixed is not None:
            batch.x = mixed.x.contiguous(memory_format=self.fmt)
            batch.perm, batch.lam = mixed.perm.to(self.device), mixed.lam
        return batch

    def _step(self, batch: Batch) -> None:
        with torch.no_grad(), _autocast(self.device, self.amp):
            target = self.labels.targets(batch)
        for st in list(self.active):
            try:
                with st.rng.active(), _autocast(self.device, self.amp):
                    logits = st.forward(batch.x)
                loss = self.loss_fn(logits, batch, target, self.protocol)
                st.optimizer.zero_grad(set_to_none=True)
                with st.rng.active():
                    loss.backward()
                st.optimizer.step()
                st.update_ema()
                st.step_losses.append(loss.detach())
                st.stats.steps += 1
            except Exception as exc:  # OOM, shape errors, ...: this model fails alone (timm validate.py style)
                self._fail(st, exc)

    def _end_epoch(self, epoch: int) -> None:
        for st in list(self.active):  # one host sync per epoch and model, not per step
            losses = torch.stack(st.step_losses).float().tolist() if st.step_losses else []
            bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
            if bad is not None:
                msg = f"{st.stats.name}: loss {losses[bad]} at epoch {epoch + 1}, step {bad + 1}"
                self._fail(st, TrainingDiverged(msg))
                continue
            st.stats.loss_curve.append(sum(losses) / max(len(losses), 1))
            st.stats.epochs_done = epoch + 1
        protocol = self.protocol
        last = epoch + 1 == protocol.epochs
        if (
            self.test_fn is not None
            and self.active
            and (last or (protocol.test_every and (epoch + 1) % protocol.test_every == 0))
        ):
            self._run_tests(epoch + 1)
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch + 1, self.active)
        if self.progress is not None:
            self.progress(self.stage, epoch + 1, protocol.epochs)

    def _run_tests(self, epoch: int) -> None:
        """Test every active model (EMA weights, eval mode); on an error, retry one by one to isolate it."""
        assert self.test_fn is not None

        def run(group: list[Student]) -> None:
            with contextlib.ExitStack() as stack:
                for st in group:
                    stack.enter_context(st.ema_weights())
                    st.model.eval()
                try:
                    scores = self.test_fn([st.model for st in group])
                finally:
                    for st in group:
                        st.model.train()
            for st, (top1, top5) in zip(group, scores, strict=True):
                st.stats.test_curve.append((epoch, float(top1), float(top5)))
                logger.info("%s epoch %d: top1 %.2f top5 %.2f", st.stats.name, epoch, top1, top5)

        try:
            run(list(self.active))
        except Exception as exc:
            if len(self.active) == 1:
                self._fail(self.active[0], exc)
                return
            for st in list(self.active):
                try:
                    run([st])
                except Exception as exc_one:
                    self._fail(st, exc_one)


# ====================================================================================================================
# Test accuracy
# ====================================================================================================================
@torch.no_grad()
def evaluate_models(
    models: Sequence[nn.Module],
    test: ImageSource | tuple[torch.Tensor, torch.Tensor],
    space: PixelSpace,
    device: torch.device | str,
    batch_size: int = 500,
    *,
    amp: bool = False,
    channels_last: bool = False,
    dist: DistInfo | None = None,
) -> list[tuple[float, float]]:
    """Top-1 and top-5 accuracy (%) of every model on uint8 test images, each batch read once for all models.

    Args:
        models: evaluated in eval mode (their mode is restored afterwards).
        test: an ImageSource (a Dataset's test split) or ``(uint8 images, labels)``.
        space: the pixel space the models were trained in; its :meth:`~ddbench.pixels.PixelSpace.test_input` turns
            the real [0, 1] test images into model inputs (normalisation, or the set's fitted ZCA).
        device: where the models are.
        batch_size: test batch size (does not change any number).
        amp, channels_last: as in :class:`Trainer`.
        dist: under DDP each rank scores its slice of the test split and the counts are summed over ranks.
    """
    device = torch.device(device)
    dist = dist if dist is not None else DistInfo()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if isinstance(test, ImageSource):
        total, labels_all = len(test), test.labels
        load: Callable[[torch.Tensor], torch.Tensor] = test.load
    else:
        images_all, labels_all = test
        total = int(labels_all.numel())

        def load(idx: torch.Tensor) -> torch.Tensor:
            return images_all[idx]

    modes = [model.training for model in models]
    for model in models:
        model.eval()
    correct1 = torch.zeros(len(models), dtype=torch.long, device=device)
    correct5 = torch.zeros(len(models), dtype=torch.long, device=device)
    mine = dist.shard(torch.arange(total))
    try:
        for lo in range(0, len(mine), batch_size):
            idx = mine[lo : lo + batch_size]
            raw = load(idx).to(device)
            y = torch.as_tensor(labels_all[idx], device=device)
            x = raw.float() / 255.0 if raw.dtype == torch.uint8 else raw.float()
            x = space.test_input(x).contiguous(memory_format=fmt)
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
    if dist.active:
        dist.all_sum(correct1)
        dist.all_sum(correct5)
    scale = 100.0 / max(total, 1)
    return [(c1 * scale, c5 * scale) for c1, c5 in zip(correct1.tolist(), correct5.tolist(), strict=True)]


__all__ = [
    "Callback",
    "ProgressFn",
    "Student",
    "TrainStats",
    "Trainer",
    "TrainingDiverged",
    "augment_batch",
    "build_optimizer",
    "evaluate_models",
]
