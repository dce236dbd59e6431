"""Minimax's latent path at the paper's size, for shape and speed only: DiT-XL/2 + the SD VAE, randomly initialised.

Spec ``minimax.md`` §1/§3: one fine-tuning step = VAE-encode 256-px images (a posterior sample), the DiT's diffusion
loss plus the minimax terms against warm 4096-d memories, backward, AdamW on the DiffFit parameters; sampling = 50
respaced DDPM steps with CFG 4.0 (a doubled batch per call) and a VAE decode. Both in bf16 autocast on a GPU.

Two scales:

* ``xl`` (markers ``bench`` + ``gpu``, skipped without CUDA): DiT-XL/2 (1000 classes, learned sigma, DiffFit γ's)
  and SD's VAE architecture at 256 px, batch 8 (the paper's), 16 sampled images. Run by ``scripts/gpu_check.sh``.
  Random weights: the numbers say nothing about image quality, only about cost.
* ``tiny`` (marker ``bench``): the same code with :func:`~ddbench.ops.diffusion.models.tiny_latent_dit` and
  :func:`~ddbench.ops.diffusion.models.tiny_vae` at 32 px on the CPU, so the GPU run is known to work before a lease.

Reported in ``extra_info`` and logged: fine-tune steps/s and images/s, sampling images/s, the FLOPs of one step and
of one guided DiT call (:class:`torch.utils.flop_counter.FlopCounterMode`), the FLOP/s they reach, and a square GEMM
of the same dtype timed in the same test (``gemm_tflops``), whose ratio says how far the path is from the chip's
matmul speed. Run with ``pytest -m bench --benchmark-only tests/benchmarks/test_bench_minimax_latent.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

pytest.importorskip("diffusers")

from ddbench.ops.diffusion import models as M
from ddbench.ops.diffusion.finetune import finetune_losses
from ddbench.ops.diffusion.generators import DiffusionSpace
from ddbench.ops.diffusion.minimax import MinimaxMemory
from ddbench.ops.diffusion.sampling import sample
from ddbench.ops.diffusion.schedule import ProcessTables, sampling_scheduler, training_scheduler

pytestmark = pytest.mark.bench
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scale:
    image: int  # pixel side the VAE sees
    classes: int  # the DiT's label space
    batch: int  # fine-tuning batch
    sample_images: int  # images per sampling call (the model sees twice as many with CFG)
    gemm: int  # side of the reference GEMM
    steps: int  # timed fine-tuning steps


SCALES = {
    "xl": Scale(image=256, classes=1000, batch=8, sample_images=16, gemm=8192, steps=5),
    "tiny": Scale(image=32, classes=10, batch=4, sample_images=4, gemm=1024, steps=2),
}


def build(scale: str, device: torch.device) -> tuple[torch.nn.Module, DiffusionSpace]:
    if scale == "xl":
        dit, vae = M.dit_xl_2(SCALES[scale].classes), M.sd_vae_random()
    else:
        dit, vae = M.tiny_latent_dit(SCALES[scale].classes, latent_size=SCALES[scale].image // 2), M.tiny_vae()
    M.add_difffit_gammas(dit)
    vae = vae.to(device)
    return dit.to(device), DiffusionSpace(SCALES[scale].image, encoder=vae, decoder=vae)


def synced(device: torch.device) -> Callable[[Callable[[], object]], float]:
    def timed(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    return timed


def gemm_tflops(n: int, dtype: torch.dtype, device: torch.device, reps: int = 5) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    t = synced(device)(lambda: [torch.mm(a, b) for _ in range(reps)])
    return 2 * n**3 * reps / t / 1e12


def flops_of(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def device_for(scale: str) -> torch.device:
    if scale == "xl":
        if not torch.cuda.is_available():
            pytest.skip("the DiT-XL/2 latent bench needs CUDA")
        return torch.device("cuda")
    return torch.device("cpu")


@pytest.mark.parametrize("scale", [pytest.param("xl", marks=pytest.mark.gpu), "tiny"])
def test_latent_finetune_step_and_sampling(scale, benchmark) -> None:
    device = device_for(scale)
    cfg = SCALES[scale]
    amp = device.type == "cuda"  # bf16 autocast is ~50× slower than fp32 on CPUs without AMX
    dtype = torch.bfloat16 if amp else torch.float32
    dit, space = build(scale, device)
    params = M.mark_trainable(dit, "difffit")
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    scheduler = training_scheduler(learned_variance=True)
    tables = ProcessTables.from_scheduler(scheduler)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (cfg.batch, 3, cfg.image, cfg.image), generator=g, dtype=torch.uint8)
    local = torch.arange(cfg.batch, device=device) % 10
    cond = local * (cfg.classes // 10)
    with torch.no_grad():
        latent = tuple(space.to_model(images[:1], device, g).shape[1:])  # SD's VAE: 256 px → 4×32×32
    memory = MinimaxMemory()
    for c in range(10):  # warm memories: the step pays for the full 64-row similarity matrices
        rows = torch.randn(64, latent[0] * latent[1] * latent[2], generator=g).to(device)
        memory.push(c, rows, rows)

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            z0 = space.to_model(images, device, g)
            out = finetune_losses(dit.train(), z0, local, cond, scheduler=scheduler, tables=tables,
                                  num_classes=cfg.classes, generator=g, memory=memory)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()
        return z0

    z0 = step()  # warm-up (allocator, kernels)
    assert tuple(z0.shape) == (cfg.batch, *latent) and latent[0] == 4
    timed = synced(device)
    step_flops = flops_of(step)
    step_s = sorted(timed(step) for _ in range(cfg.steps))[cfg.steps // 2]  # median

    dit.eval()
    labels = cond[: cfg.sample_images].repeat(-(-cfg.sample_images // cfg.batch))[: cfg.sample_images]
    sampler = sampling_scheduler("ddpm", 50, learned_variance=True)

    def run_sampling() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            z = sample(dit, labels, scheduler=sampler, shape=latent, num_classes=cfg.classes,
                       generator=torch.Generator().manual_seed(3), cfg_scale=4.0)  # fmt: skip
            return space.to_uint8(z, cfg.image, 3)

    x = torch.randn(2 * cfg.sample_images, *latent, device=device)
    t = torch.full((2 * cfg.sample_images,), 500, device=device)
    y = torch.cat([labels, torch.full_like(labels, cfg.classes)])
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        call_flops = flops_of(lambda: dit(x, t, class_labels=y))
    out = run_sampling()  # warm-up
    assert out.shape == (cfg.sample_images, 3, cfg.image, cfg.image) and out.dtype == torch.uint8
    sample_s = timed(run_sampling)
    benchmark.pedantic(step, rounds=1, iterations=1)
    gemm = gemm_tflops(cfg.gemm, dtype, device)
    steps = len(sampler.timesteps)
    info = {
        "scale": scale, "device": str(torch.cuda.get_device_name(device) if amp else "cpu"), "dtype": str(dtype),
        "dit_params_m": sum(p.numel() for p in dit.parameters()) / 1e6,
        "trainable_params_m": sum(p.numel() for p in params) / 1e6,
        "vae_params_m": sum(p.numel() for p in space.encoder.parameters()) / 1e6,
        "batch": cfg.batch, "finetune_step_s": step_s, "finetune_steps_s": 1 / step_s,
        "finetune_img_s": cfg.batch / step_s, "finetune_step_tflop": step_flops / 1e12,
        "finetune_tflops": step_flops / step_s / 1e12,
        "sample_images": cfg.sample_images, "sample_steps": steps, "sample_s": sample_s,
        "sample_img_s": cfg.sample_images / sample_s, "guided_call_tflop": call_flops / 1e12,
        "sample_tflops": steps * call_flops / sample_s / 1e12, "gemm_tflops": gemm,
        "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if amp else 0.0,
    }  # fmt: skip
    benchmark.extra_info.update(info)
    logger.warning("latent %s: fine-tune %.3f s/step (%.2f steps/s, %.1f TFLOP/s); sampling %d images x %d steps "
                   "%.2f s (%.2f img/s, %.1f TFLOP/s); GEMM %s %.1f TFLOP/s", scale, step_s, 1 / step_s,
                   info["finetune_tflops"], cfg.sample_images, steps, sample_s, info["sample_img_s"],
                   info["sample_tflops"], dtype, gemm)  # fmt: skip
    assert step_flops > 0 and call_flops > 0
    # the DiffFit selection trains a small fraction of DiT-XL/2 (biases, γ's, class table)
    assert info["trainable_params_m"] < 0.1 * info["dit_params_m"] or scale == "tiny"
