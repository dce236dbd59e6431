"""Minimax diffusion cost at CPU scale: the smoke DiT against the UNet2DModel alternative of the same size (spec §9.1).

Run with ``pytest -m bench --benchmark-only tests/benchmarks/test_bench_minimax.py`` (``-k "8 or 10"`` for the
smallest cases). Both denoisers are built, timed interleaved and counted in the same test, so their ratio is
comparable even on a loaded machine. Reported in ``extra_info``:

* ``*_img_s``: images per second of one fine-tuning step (:func:`finetune_losses` with warm minimax memories +
  backward + AdamW, DiffFit parameters for the DiT, all parameters for the UNet, which has no DiffFit selection) at
  batch 8 (the method's batch) and 32; and of sampling: 50 respaced DDPM steps with CFG 4.0, i.e. a doubled batch
  per step, for 10 and 100 images (10 classes × 1 and × 10);
* ``*_gflop``: FLOPs of one step (training) or of one guided model call (sampling), counted with
  :class:`torch.utils.flop_counter.FlopCounterMode`; ``*_gflops`` those over the measured time, next to
  ``gemm_gflops``, a square float32 GEMM timed in the same test.

Timings on shared CPUs are noisy; compare numbers from one run on one machine only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

pytest.importorskip("diffusers")

from ddbench.ops.diffusion.finetune import finetune_losses
from ddbench.ops.diffusion.minimax import MinimaxMemory
from ddbench.ops.diffusion.models import add_difffit_gammas, build_dit, mark_trainable, pixel_unet
from ddbench.ops.diffusion.sampling import sample
from ddbench.ops.diffusion.schedule import ProcessTables, sampling_scheduler, training_scheduler

pytestmark = pytest.mark.bench
logger = logging.getLogger(__name__)

CLASSES, SIZE, CHANNELS = 10, 32, 3


def denoisers() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    dit = build_dit(CLASSES, SIZE, CHANNELS, "smoke")
    add_difffit_gammas(dit)
    return {"dit": dit, "unet": pixel_unet(CLASSES, SIZE, CHANNELS)}


def gemm_gflops(n: int = 1024, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def flops_of(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


class Trainer:
    """One model's fine-tuning step on a fixed batch, with memories already holding every class."""

    def __init__(self, name: str, model: torch.nn.Module, batch: int) -> None:
        self.model = model.train()
        params = mark_trainable(model, "difffit" if name == "dit" else "full")
        self.opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0)
        self.scheduler = training_scheduler()
        self.tables = ProcessTables.from_scheduler(self.scheduler)
        g = torch.Generator().manual_seed(1)
        self.z0 = torch.rand(batch, CHANNELS, SIZE, SIZE, generator=g) * 2 - 1
        self.labels = torch.arange(batch) % CLASSES
        self.memory = MinimaxMemory()
        for c in range(CLASSES):
            rows = torch.randn(64, CHANNELS * SIZE * SIZE, generator=g)
            self.memory.push(c, rows, rows)
        self.generator = torch.Generator().manual_seed(2)

    def step(self) -> None:
        out = finetune_losses(self.model, self.z0, self.labels, self.labels, scheduler=self.scheduler,
                              tables=self.tables, num_classes=CLASSES, generator=self.generator,
                              memory=self.memory)  # fmt: skip
        self.opt.zero_grad()
        out.total.backward()
        self.opt.step()


@pytest.mark.parametrize("batch", [8, 32])
def test_finetune_step_dit_vs_unet(batch, benchmark) -> None:
    trainers = {name: Trainer(name, model, batch) for name, model in denoisers().items()}
    flops = {name: flops_of(tr.step) for name, tr in trainers.items()}
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(5):  # interleaved, so load changes on the shared machine hit both alike
        for name, tr in trainers.items():
            times[name].append(timed(tr.step))
    benchmark.pedantic(trainers["dit"].step, rounds=1, iterations=1)
    gemm = gemm_gflops()
    info: dict[str, float] = {"batch": batch, "gemm_gflops": gemm}
    for name in trainers:
        t = min(times[name])
        params = sum(p.numel() for p in trainers[name].model.parameters())
        info.update({f"{name}_step_s": t, f"{name}_img_s": batch / t, f"{name}_gflop": flops[name] / 1e9,
                     f"{name}_gflops": flops[name] / t / 1e9, f"{name}_params": params})  # fmt: skip
    benchmark.extra_info.update(info)
    logger.warning("fine-tune step, batch %d: DiT %.3f s (%.1f img/s, %.2f GFLOP/s), UNet %.3f s (%.1f img/s, "
                   "%.2f GFLOP/s), GEMM %.1f GFLOP/s", batch, info["dit_step_s"], info["dit_img_s"],
                   info["dit_gflops"], info["unet_step_s"], info["unet_img_s"], info["unet_gflops"], gemm)  # fmt: skip
    assert all(f > 0 for f in flops.values())


@pytest.mark.parametrize("images", [10, 100])
def test_sampling_dit_vs_unet(images, benchmark) -> None:
    models = {name: m.eval() for name, m in denoisers().items()}
    labels = torch.arange(images) % CLASSES
    scheduler = sampling_scheduler("ddpm", 50)

    def run(model: torch.nn.Module) -> torch.Tensor:
        return sample(model, labels, scheduler=scheduler, shape=(CHANNELS, SIZE, SIZE), num_classes=CLASSES,
                      generator=torch.Generator().manual_seed(3), cfg_scale=4.0)  # fmt: skip

    x = torch.randn(2 * images, CHANNELS, SIZE, SIZE)
    t = torch.full((2 * images,), 500)
    y = torch.cat([labels, torch.full_like(labels, CLASSES)])
    with torch.no_grad():
        call_flops = {n: flops_of(lambda m=m: m(x, t, class_labels=y)) for n, m in models.items()}
    rounds = 2 if images <= 10 else 1
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(timed(lambda model=model: run(model)))
    benchmark.pedantic(lambda: run(models["dit"]), rounds=1, iterations=1)
    gemm = gemm_gflops()
    steps = len(scheduler.timesteps)
    info: dict[str, float] = {"images": images, "steps": steps, "gemm_gflops": gemm}
    for name in models:
        s = min(times[name])
        info.update({f"{name}_sample_s": s, f"{name}_img_s": images / s, f"{name}_call_gflop": call_flops[name] / 1e9,
                     f"{name}_gflops": steps * call_flops[name] / s / 1e9})  # fmt: skip
    benchmark.extra_info.update(info)
    logger.warning("sampling %d images, %d steps, CFG: DiT %.2f s (%.2f img/s, %.2f GFLOP/s), UNet %.2f s "
                   "(%.2f img/s, %.2f GFLOP/s), GEMM %.1f GFLOP/s", images, steps, info["dit_sample_s"],
                   info["dit_img_s"], info["dit_gflops"], info["unet_sample_s"], info["unet_img_s"],
                   info["unet_gflops"], gemm)  # fmt: skip
    assert all(f > 0 for f in call_flops.values())
