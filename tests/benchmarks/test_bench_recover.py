"""Recover-loop cost: one SRe2L/DWA iteration on ResNet-18 (low-res stem) at 32 px, batch 100 (CIFAR-100's batch).

Run with ``pytest -m bench --benchmark-only tests/benchmarks/test_bench_recover.py``. Reported in ``extra_info``:

* ``step_gflop``: FLOPs of one iteration (forward + backward to the pixels + BN statistics), counted with
  :class:`torch.utils.flop_counter.FlopCounterMode` on the method's own :meth:`SRe2L.iteration`;
* ``step_gflops``: those FLOPs over the measured step time, next to ``gemm_gflops``, a square float32 GEMM timed in the
  same test, so the fraction of the machine's matmul throughput the loop reaches can be read off;
* ``dwa_over_sre2l``: DWA/SRe2L time at equal iterations (T = 1000, K = 12, CIFAR-100's budget),
  (T·t_dwa + t_block) / (T·t_sre2l), from interleaved timings of SRe2L and DWA synthesis iterations and one timing of
  DWA's K-step ascent block; ``dwa_over_sre2l_flops`` is the same ratio in counted FLOPs, which is what the test
  asserts (≤ 1.05) because it is exact. The paper reports 1.073 (Table 11); with the teacher frozen outside the
  ascent block (D6) a DWA synthesis iteration is exactly an SRe2L one, so the overhead is the K ascent passes only.

Timings on shared CPUs are noisy; compare numbers from one run on one machine only.
"""

from __future__ import annotations

import logging

import pytest
import torch
from bench_timing import flops_of, gemm_gflops, timed
from ddbench_methods.dwa import DWA, DWAConfig
from ddbench_methods.sre2l import SRe2L, SRe2LConfig

from ddbench.data.dataset import Dataset
from ddbench.data.source import TensorSource
from ddbench.data.spec import DatasetSpec
from ddbench.method import DistillContext
from ddbench.models import create_model
from ddbench.teachers import Teacher, TeacherSpec

pytestmark = pytest.mark.bench
logger = logging.getLogger(__name__)

CLASSES, SIZE, T_PAPER, K_PAPER = 100, 32, 1000, 12


def fake_cifar100() -> Dataset:
    """100 classes of random 32×32 RGB images (two per class) with CIFAR-100's constants: timing needs no data."""
    spec = DatasetSpec(
        id="bench100",
        classes=tuple(str(c) for c in range(CLASSES)),
        img_size=SIZE,
        channels=3,
        mean=(0.5071, 0.4867, 0.4408),
        std=(0.2675, 0.2565, 0.2761),
        default_teacher="resnet18",
        default_protocol="kd",
        loader="ddbench.data.digits",
    )
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2 * CLASSES, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    labels = torch.arange(CLASSES).repeat(2)
    return Dataset(spec, TensorSource(images, labels), TensorSource(images, labels))


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    torch.manual_seed(0)
    dataset = fake_cifar100()
    model = create_model("resnet18", CLASSES, SIZE).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    teacher = Teacher(TeacherSpec(), "resnet18", "bench100", dataset.class_hash, model, "bench", "0" * 64)
    return dataset, teacher, tmp_path_factory.mktemp("bench")


class Stepper:
    """A method's own loop state for one class-batch of all 100 classes, stepping iterations t ≥ 1."""

    def __init__(self, method: SRe2L, dataset: Dataset, teacher: Teacher, workdir) -> None:
        self.method = method
        self.ctx = DistillContext(dataset, [teacher], 1, torch.device("cpu"), 0, workdir)
        self._session = method.session(self.ctx)
        self.run = self._session.__enter__()
        method.start_unit(self.run)
        method.start_batch(self.run)
        self.generator = self.ctx.generator("bench")
        classes = list(range(CLASSES))
        x0, self.extras = method.init_images(self.ctx, self.run, 0, classes, self.generator)
        self.x = x0.requires_grad_(True)
        self.y = torch.tensor(classes)
        self.optimizer = torch.optim.Adam([self.x], lr=0.25, betas=(0.5, 0.9))
        self.step(0)  # iteration 0 (DWA: the weight adjustment) happens once, outside the timed steps

    def step(self, t: int = 1) -> None:
        self.method.iteration(self.ctx, self.run, t, self.x, self.y, self.optimizer, self.generator, self.extras)

    def ascent_block(self) -> None:
        """DWA's whole iteration-0 weight adjustment: K ascent passes (forward + backward to the weights + update)."""
        a = self.method.augment(self.x, SIZE, self.generator)
        self.method.directed_ascent(self.run, a, self.y)

    def close(self) -> None:
        self._session.__exit__(None, None, None)


@pytest.mark.parametrize("name", ["sre2l", "dwa"])
def test_recover_step(name, setting, benchmark) -> None:
    dataset, teacher, workdir = setting
    method = SRe2L(SRe2LConfig(iterations=T_PAPER)) if name == "sre2l" else DWA(DWAConfig(iterations=T_PAPER))
    stepper = Stepper(method, dataset, teacher, workdir / name)
    try:
        flops = flops_of(stepper.step)
        benchmark.pedantic(stepper.step, rounds=3, iterations=1, warmup_rounds=1)
        seconds = benchmark.stats.stats.mean
        gemm = gemm_gflops()
    finally:
        stepper.close()
    benchmark.extra_info.update(
        {"step_gflop": flops / 1e9, "step_gflops": flops / seconds / 1e9, "gemm_gflops": gemm, "batch": CLASSES}
    )
    logger.warning("%s step: %.2f s, %.1f GFLOP, %.1f GFLOP/s (GEMM %.1f)", name, seconds, flops / 1e9,
                   flops / seconds / 1e9, gemm)  # fmt: skip
    assert flops > 0


def test_dwa_over_sre2l_time_ratio(setting, benchmark) -> None:
    dataset, teacher, workdir = setting
    sre2l = Stepper(SRe2L(SRe2LConfig(iterations=T_PAPER)), dataset, teacher, workdir / "r-sre2l")
    dwa = Stepper(DWA(DWAConfig(iterations=T_PAPER)), dataset, teacher, workdir / "r-dwa")
    steps: dict[str, list[float]] = {"sre2l": [], "dwa": []}
    try:
        f_s, f_d, f_b = flops_of(sre2l.step), flops_of(dwa.step), flops_of(dwa.ascent_block)
        for _ in range(5):  # interleaved, so load changes on the shared machine hit both alike
            steps["sre2l"].append(timed(sre2l.step))
            steps["dwa"].append(timed(dwa.step))
        t_b = timed(dwa.ascent_block)
        benchmark.pedantic(dwa.step, rounds=1, iterations=1)
    finally:
        sre2l.close()
        dwa.close()
    t_s, t_d = min(steps["sre2l"]), min(steps["dwa"])
    time_ratio = (T_PAPER * t_d + t_b) / (T_PAPER * t_s)
    flop_ratio = (T_PAPER * f_d + f_b) / (T_PAPER * f_s)
    benchmark.extra_info.update(
        {
            "sre2l_step_s": t_s,
            "dwa_step_s": t_d,
            "ascent_block_s": t_b,
            "dwa_over_sre2l": time_ratio,
            "dwa_over_sre2l_flops": flop_ratio,
            "ascent_block_gflop": f_b / 1e9,
        }
    )
    logger.warning("SRe2L %.3f s, DWA %.3f s per step (min of 5), K=%d ascent block %.3f s (%.0f GFLOP); "
                   "DWA/SRe2L at T=1000: time %.4f, FLOPs %.4f", t_s, t_d, K_PAPER, t_b, f_b / 1e9, time_ratio,
                   flop_ratio)  # fmt: skip
    # D6: frozen weights make a DWA synthesis iteration exactly an SRe2L one; the K passes are the only extra work.
    # Asserted on FLOPs, which are exact; the time ratio on a shared CPU swings by ±10% and is reported only.
    assert f_d == f_s
    assert flop_ratio <= 1.05
