"""Timing helpers every benchmark shares: one GEMM reference, one wall-clock timer, one FLOP counter.

The project reports achieved FLOP/s next to a square float32 GEMM timed in the same run, because on a shared
CPU absolute times swing by tens of percent between runs while the ratio to a GEMM measured moments apart does
not. Keeping the three helpers in one place means every benchmark's "fraction of GEMM" means the same thing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def sync(device: torch.device | str = "cpu") -> None:
    """Wait for queued kernels, so a timer around CUDA work measures the work and not its launch."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def gemm_gflops(n: int = 1024, reps: int = 5, device: torch.device | str = "cpu") -> float:
    """Achieved GFLOP/s of ``reps`` float32 ``n``×``n`` matmuls (2n³ FLOPs each), after one warm-up."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def timed(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Wall-clock seconds of one call of ``fn``."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def flops_of(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` as torch's FlopCounterMode counts them (matmuls and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()
