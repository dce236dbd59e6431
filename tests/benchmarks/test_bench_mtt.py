"""Cost of one MTT distillation iteration: ConvNet-3 (instance norm) at 32 px, full unroll against TESLA.

Run with ``pytest tests/benchmarks/test_bench_mtt.py -m bench --benchmark-only -o addopts="" -p no:cacheprovider``
(``-k "w32-b10-n10"`` for the smallest case). The grid is width {32, 128} × batch_syn {10, 100} (CIFAR-10 ipc1 and
ipc10, full batch) × N {10, 20} × grad mode {full, tesla}; one iteration is the queue, the N-step unroll with DSA,
the matching loss, its gradients and the two SGD(momentum 0.5) steps (spec mtt §5.2). Reported in ``extra_info``:

* ``step_gflop``: FLOPs of one iteration, counted by :class:`torch.utils.flop_counter.FlopCounterMode`;
  ``step_gflops`` is that over the measured time, next to ``gemm_gflops``, a square float32 GEMM timed in the same
  test on the same device;
* ``saved_mib``: the peak bytes of the tensors autograd keeps for the backward (``tests/saved_tensors.py``), and
  ``saved_mib_per_step``: the same for N = 1, measured alongside. This is the memory that grows with N in the
  full unroll (spec §8.1) and stays flat in TESLA (§8.2). It is chosen over process RSS because it is exact and
  repeatable: on the CPU ``ru_maxrss`` never decreases (each case would need its own subprocess) and the
  allocator's caching blurs it; it leaves out transient kernel buffers and the N vectors θ̂_n TESLA keeps
  (N·P·4 bytes: 1.3 MB per step at width 128), so it is a lower bound on the peak;
* ``cuda_peak_mib``: ``torch.cuda.max_memory_allocated`` when run on a GPU.

The test asserts the memory law it measures: full-unroll saved bytes are N times a single step's, TESLA's those of
a single step (±20%: the DSA family drawn for a step changes its saved bytes by a few per cent; without
augmentation the law is exact, see ``tests/test_mtt_ops.py``).

``test_expert_training_vs_bare_loop``: images/s of one expert epoch (ConvNet-3, width 32 / 128, 1,024 random
32-px images, DSA, SGD 0.01) through the harness Trainer with the snapshot callback, against a bare hand-written
loop doing the same work (``bare_over_harness`` ≥ 1 means the harness is as fast).

Timings on shared CPUs are noisy; compare numbers from one run on one machine only.
"""

from __future__ import annotations

import logging
import time

import pytest
import torch
from saved_tensors import SavedTensorMeter
from torch.utils.flop_counter import FlopCounterMode

from ddbench.models import create_model
from ddbench.ops.augment import dsa
from ddbench.ops.unroll import FunctionalStudent, MinibatchQueue, match_trajectory

pytestmark = pytest.mark.bench
logger = logging.getLogger(__name__)

CLASSES, SIZE = 10, 32
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def gemm_gflops(n: int = 1024, reps: int = 5) -> float:
    a, b = torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)
    torch.mm(a, b)
    _sync()
    start = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    _sync()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


class Iteration:
    """One distillation iteration's state: synthetic set, α̃, optimizers and an expert segment."""

    def __init__(self, width: int, batch_syn: int, mode: str) -> None:
        g = torch.Generator().manual_seed(0)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = create_model("convnet", CLASSES, SIZE, 3, width=width).to(DEVICE)
        self.student = FunctionalStudent(model)
        self.images = torch.randn(batch_syn, 3, SIZE, SIZE, generator=g).to(DEVICE).requires_grad_(True)
        self.labels = torch.arange(CLASSES).repeat_interleave(batch_syn // CLASSES).to(DEVICE)
        self.syn_lr = torch.tensor(0.01, device=DEVICE, requires_grad=True)
        self.start = self.student.layout.flatten_model(model)
        self.target = self.start + 0.01 * torch.randn(self.start.shape, generator=g).to(DEVICE)
        self.opt_img = torch.optim.SGD([self.images], lr=100, momentum=0.5)
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=1e-5, momentum=0.5)
        self.batch_syn, self.mode, self.generator = batch_syn, mode, g

    def step(self, n_steps: int) -> float:
        self.opt_img.zero_grad()
        self.opt_lr.zero_grad()
        batches = MinibatchQueue(len(self.images), self.batch_syn, self.generator).take(n_steps)
        result = match_trajectory(self.student, self.images, self.labels, self.syn_lr, self.start, self.target,
                                  batches, augment=dsa, generator=self.generator, grad_mode=self.mode)  # fmt: skip
        self.opt_img.step()
        self.opt_lr.step()
        _sync()
        return float(result.loss)


def saved_peak(it: Iteration, n_steps: int) -> int:
    with SavedTensorMeter() as meter:
        it.step(n_steps)
    return meter.peak


@pytest.mark.parametrize("mode", ["full", "tesla"])
@pytest.mark.parametrize("n_steps", [10, 20], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("batch_syn", [10, 100], ids=lambda b: f"b{b}")
@pytest.mark.parametrize("width", [32, 128], ids=lambda w: f"w{w}")
def test_mtt_iteration(width, batch_syn, n_steps, mode, benchmark) -> None:
    it = Iteration(width, batch_syn, mode)
    per_step = saved_peak(it, 1)
    peak = saved_peak(it, n_steps)
    with FlopCounterMode(display=False) as counter:
        it.step(n_steps)
    flops = counter.get_total_flops()
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats(DEVICE)
    # the largest cases (width 128 × batch_syn 100: ~1.3 s per unrolled step on one CPU core) get one timed round;
    # the three untimed steps above already warm them up
    heavy = width * batch_syn >= 128 * 100 and DEVICE.type == "cpu"
    benchmark.pedantic(
        it.step, args=(n_steps,), rounds=1 if heavy else 3, iterations=1, warmup_rounds=0 if heavy else 1
    )
    seconds = benchmark.stats.stats.mean
    cuda_peak = torch.cuda.max_memory_allocated(DEVICE) / 2**20 if DEVICE.type == "cuda" else None
    gemm = gemm_gflops()
    benchmark.extra_info.update(
        {
            "device": DEVICE.type,
            "params": it.student.num_params,
            "step_gflop": flops / 1e9,
            "step_gflops": flops / seconds / 1e9,
            "gemm_gflops": gemm,
            "saved_mib": peak / 2**20,
            "saved_mib_per_step": per_step / 2**20,
            "cuda_peak_mib": cuda_peak,
        }
    )
    logger.warning("mtt %s w%d b%d N=%d: %.3f s, %.2f GFLOP (%.1f GFLOP/s, GEMM %.1f), saved %.1f MiB (N=1: %.1f)",
                   mode, width, batch_syn, n_steps, seconds, flops / 1e9, flops / seconds / 1e9, gemm,
                   peak / 2**20, per_step / 2**20)  # fmt: skip
    # DSA's family (drawn per call) changes a step's saved bytes by a few per cent, hence the tolerances
    if mode == "full":
        assert 0.8 * n_steps * per_step <= peak <= 1.2 * n_steps * per_step  # every step's graph is kept
    else:
        assert peak <= 1.2 * per_step  # one step's double-backward graph at a time


# -- expert training: the harness loop against a bare torch loop ----------------------------------------------------
def _expert_data(n: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8), torch.arange(n) % CLASSES


def _expert_model(width: int) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return create_model("convnet", CLASSES, SIZE, 3, width=width).to(DEVICE)


def bare_expert_epoch(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> None:
    """buffer.py's epoch written by hand: shuffle, normalise, DSA, CE, SGD(0.01, m 0, wd 0), batch 256."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.0)
    mean = torch.tensor((0.4914, 0.4822, 0.4465), device=DEVICE).view(1, 3, 1, 1)
    std = torch.tensor((0.2023, 0.1994, 0.2010), device=DEVICE).view(1, 3, 1, 1)
    order = torch.randperm(len(labels), generator=g)
    for lo in range(0, len(labels), 256):
        idx = order[lo : lo + 256].to(DEVICE)
        x = dsa((images[idx].float() / 255.0 - mean) / std, generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync()


@pytest.mark.parametrize("width", [32, 128], ids=lambda w: f"w{w}")
def test_expert_training_vs_bare_loop(width, benchmark) -> None:
    """Images/s of one expert epoch through :class:`ddbench.train.Trainer` (what ``ddbench experts`` runs, with its
    per-epoch snapshot callback) against :func:`bare_expert_epoch`; rounds interleaved, medians compared."""
    import dataclasses
    import statistics

    from ddbench.experts import SnapshotCallback
    from ddbench.pixels import UInt8Space
    from ddbench.protocol import TEACHER_RECIPE_DIR, load_protocol
    from ddbench.train import Trainer

    images, labels = _expert_data()
    images, labels = images.to(DEVICE), labels.to(DEVICE)
    protocol = dataclasses.replace(load_protocol(TEACHER_RECIPE_DIR / "mtt-expert.toml"), epochs=1)
    space = UInt8Space((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    bare_model, harness_model = _expert_model(width), _expert_model(width)

    def harness_epoch() -> None:
        Trainer(protocol, space=space, device=DEVICE, callbacks=[SnapshotCallback()]).fit(
            [harness_model], images, labels, generator=torch.Generator().manual_seed(2)
        )
        _sync()

    def timed(fn, *args) -> float:
        start = time.perf_counter()
        fn(*args)
        return time.perf_counter() - start

    g = torch.Generator().manual_seed(2)
    timed(bare_expert_epoch, bare_model, images, labels, g), timed(harness_epoch)  # warm-up
    bare, harness = [], []
    for _ in range(3):
        bare.append(timed(bare_expert_epoch, bare_model, images, labels, g))
        harness.append(timed(harness_epoch))
    benchmark.pedantic(harness_epoch, rounds=1, iterations=1)
    t_bare, t_harness = statistics.median(bare), statistics.median(harness)
    rates = {"bare_img_s": len(labels) / t_bare, "harness_img_s": len(labels) / t_harness}
    benchmark.extra_info.update({"device": DEVICE.type, "images": len(labels), **rates,
                                 "bare_over_harness": t_bare / t_harness})  # fmt: skip
    logger.warning("expert epoch w%d: bare %.0f img/s, harness %.0f img/s (ratio %.2f)", width, len(labels) / t_bare,
                   len(labels) / t_harness, t_bare / t_harness)  # fmt: skip
    assert t_harness < 2.0 * t_bare  # the loop and its snapshot callback add no large overhead
