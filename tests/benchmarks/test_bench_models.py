"""Model throughput on CPU: low-res ResNet-18 forward + backward at 32 px, batch 128, against a GEMM reference.

Run with ``pytest tests/benchmarks/test_bench_models.py -m bench --benchmark-only -p no:cacheprovider -o addopts=""``.

* ``test_bench_gemm``: ``torch.mm`` of two 2048×2048 float32 matrices (2·2048³ FLOP), the machine's practical
  dense-FP32 ceiling for these thread counts.
* ``test_bench_resnet18_lowres``: one training step without the optimizer (zero grads, forward, cross-entropy,
  backward) of ``create_model("resnet18", 10, 32)`` (the SRe2L/DWA CIFAR network) on a 128-image batch.
  ``extra_info`` holds ``images_per_s``, the step's FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``
  (convolutions and matmuls, forward and backward; BN/ReLU/pooling are not counted), the achieved
  ``model_gflops_per_s`` and ``fraction_of_gemm``, the ratio to a GEMM rate measured between the model's rounds at
  the same thread count (interleaving makes the ratio less sensitive to load that changes during the run).

Both run with 1 and 2 intra-op threads. On shared CPUs the absolute numbers are noisy, and two threads can be far
slower than one when other jobs occupy the cores; compare numbers from one run on one machine only.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ddbench.models import create_model

pytestmark = pytest.mark.bench

BATCH, SIZE, CLASSES = 128, 32, 10
GEMM_N = 2048
GEMM_FLOP = 2 * GEMM_N**3
THREADS = [1, 2]


@pytest.fixture
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _gemm_operands() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(GEMM_N, GEMM_N, generator=g), torch.randn(GEMM_N, GEMM_N, generator=g)


def _gemm_seconds(a: torch.Tensor, b: torch.Tensor, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.mark.parametrize("threads", THREADS, indirect=True)
def test_bench_gemm(benchmark, threads):
    a, b = _gemm_operands()
    torch.mm(a, b)  # warm-up
    benchmark.pedantic(torch.mm, args=(a, b), rounds=5, iterations=1)
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update(
        {"threads": threads, "n": GEMM_N, "gflop": GEMM_FLOP / 1e9, "gflops_per_s": round(GEMM_FLOP / seconds / 1e9, 2)}
    )
    assert seconds > 0


@pytest.mark.parametrize("threads", THREADS, indirect=True)
def test_bench_resnet18_lowres(benchmark, threads):
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=CLASSES, img_size=SIZE, in_chans=3).train()
    assert model.stem == "lowres"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g)
    y = torch.randint(0, CLASSES, (BATCH,), generator=g)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    with FlopCounterMode(display=False) as counter:
        step()  # also the warm-up
    flop = counter.get_total_flops()

    a, b = _gemm_operands()
    gemm_times: list[float] = []

    def setup():
        gemm_times.append(_gemm_seconds(a, b))  # interleave the reference with the model rounds
        return (), {}

    benchmark.pedantic(step, setup=setup, rounds=3, iterations=1)
    seconds = benchmark.stats.stats.median
    gemm_rate = GEMM_FLOP / statistics.median(gemm_times)
    model_rate = flop / seconds
    benchmark.extra_info.update(
        {
            "threads": threads,
            "batch": BATCH,
            "img_size": SIZE,
            "images_per_s": round(BATCH / seconds, 2),
            "gflop_per_step": round(flop / 1e9, 2),
            "model_gflops_per_s": round(model_rate / 1e9, 2),
            "gemm_gflops_per_s": round(gemm_rate / 1e9, 2),
            "fraction_of_gemm": round(model_rate / gemm_rate, 3),
        }
    )
    # Forward ≈ 0.56 GMAC = 1.11 GFLOP per 32-px image for the stride-8 ResNet-18, backward ≈ 2× forward.
    assert 3 * 1.0e9 * BATCH < flop < 3 * 1.2e9 * BATCH
