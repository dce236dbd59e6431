"""EDC cost at 32 px: the statistics pass and one synthesis iteration per observer, and EDC/SRe2L per iteration.

Run with ``pytest -m bench --benchmark-only tests/benchmarks/test_bench_edc.py``. Observers are the eight CIFAR
architectures of spec edc.md §6 at full width, randomly initialised (cost does not depend on the weights), on 100
random 32×32 images of CIFAR-100's shape (:func:`test_bench_recover.fake_cifar100`). Reported in ``extra_info``:

* ``stats_img_s``: images/s of the statistics pass (eval forward + channel and patch moments at every BN/Conv
  input, per-image and pooled), batch 64, and its counted GFLOP/s;
* ``step_s`` / ``step_gflops``: one EDC synthesis iteration (augment, forward with hooks, CE + α-mixed matching
  with momentum, flatness forward on the EMA images, backward to the pixels, Adam, clip) on a batch of 100;
* ``gemm_gflops``: a square float32 GEMM timed in the same test;
* ``edc_over_sre2l``: mean EDC iteration over the eight observers (round robin) / one SRe2L iteration on
  ResNet-18, both batch 100, interleaved (the per-iteration ratio; EDC's CIFAR-10 recipe runs 75 iterations,
  SRe2L's 1000).

Timings on shared CPUs are noisy; compare numbers from one run on one machine only.
"""

from __future__ import annotations

import logging

import pytest
import torch
from ddbench_methods.edc import CIFAR_OBSERVERS, EDC, EDCConfig
from ddbench_methods.sre2l import SRe2L, SRe2LConfig
from test_bench_recover import CLASSES, SIZE, Stepper, fake_cifar100, flops_of, gemm_gflops, timed

from ddbench.method import DistillContext
from ddbench.models import create_model
from ddbench.ops.edc_targets import real_targets
from ddbench.teachers import Teacher, TeacherSpec

pytestmark = pytest.mark.bench
logger = logging.getLogger(__name__)


def observer(arch: str, dataset) -> Teacher:
    torch.manual_seed(0)
    model = create_model(arch, CLASSES, SIZE).eval().requires_grad_(False)
    return Teacher(TeacherSpec(arch=arch), arch, dataset.id, dataset.class_hash, model, f"bench-{arch}", "0" * 64)


class EDCStepper:
    """EDC's own loop state for one synthesis batch of 100 images (one per class), stepping iterations."""

    def __init__(self, arch: str, dataset, workdir) -> None:
        self.method = EDC(EDCConfig(observers=(arch,), batch_images=CLASSES, iterations=1000, stats_aug=()))
        self.ctx = DistillContext(dataset, [observer(arch, dataset)], 1, torch.device("cpu"), 0, workdir)
        self.method.units(CLASSES, 0, 1)
        self._session = self.method.session(self.ctx)
        self.run = self._session.__enter__()
        self.run.extra["batch"] = 0
        self.method.start_batch(self.run)
        self.generator = self.ctx.generator("bench")
        x0, self.extras = self.method.init_images(self.ctx, self.run, 0, list(range(CLASSES)), self.generator)
        self.x = x0.requires_grad_(True)
        self.y = torch.arange(CLASSES)
        self.optimizer = torch.optim.Adam([self.x], lr=0.05, betas=(0.5, 0.9))
        self.t = 0
        self.step()

    def step(self) -> None:
        self.method.iteration(self.ctx, self.run, self.t, self.x, self.y, self.optimizer, self.generator, self.extras)
        self.t += 1

    def close(self) -> None:
        self._session.__exit__(None, None, None)


@pytest.fixture(scope="module")
def dataset():
    return fake_cifar100()


@pytest.mark.parametrize("arch", CIFAR_OBSERVERS)
def test_statistics_pass_and_synthesis_step(arch, dataset, tmp_path, benchmark) -> None:
    teacher = observer(arch, dataset)
    images = dataset.normalize(dataset.train.all()[:64])
    labels = dataset.train.labels[:64]

    def stats_pass() -> None:
        real_targets(teacher.model, [(images, labels)], CLASSES, patch=4)

    stats_flops = flops_of(stats_pass)
    stats_s = min(timed(stats_pass) for _ in range(2))
    stepper = EDCStepper(arch, dataset, tmp_path / arch)
    try:
        step_flops = flops_of(stepper.step)
        benchmark.pedantic(stepper.step, rounds=3, iterations=1, warmup_rounds=0)
        step_s = benchmark.stats.stats.mean
    finally:
        stepper.close()
    gemm = gemm_gflops()
    benchmark.extra_info.update({
        "stats_img_s": 64 / stats_s, "stats_gflops": stats_flops / stats_s / 1e9, "step_s": step_s,
        "step_gflop": step_flops / 1e9, "step_gflops": step_flops / step_s / 1e9, "gemm_gflops": gemm, "batch": CLASSES,
    })  # fmt: skip
    logger.warning("%s: statistics pass %.0f img/s (%.1f GFLOP/s); synthesis step %.3f s, %.2f GFLOP, %.1f GFLOP/s "
                   "(GEMM %.1f)", arch, 64 / stats_s, stats_flops / stats_s / 1e9, step_s, step_flops / 1e9,
                   step_flops / step_s / 1e9, gemm)  # fmt: skip
    assert stats_flops > 0 and step_flops > 0


def test_edc_over_sre2l_per_iteration(dataset, tmp_path, benchmark) -> None:
    edc = [EDCStepper(arch, dataset, tmp_path / f"r-{arch}") for arch in CIFAR_OBSERVERS]
    resnet = observer("resnet18", dataset)
    sre2l = Stepper(SRe2L(SRe2LConfig(iterations=1000)), dataset, resnet, tmp_path / "r-sre2l")
    edc_s, sre2l_s = [], []
    try:
        for _ in range(2):  # interleaved, so load changes on the shared machine hit both alike
            edc_s.append(sum(timed(s.step) for s in edc) / len(edc))
            sre2l_s.append(timed(sre2l.step))
        benchmark.pedantic(sre2l.step, rounds=1, iterations=1)
    finally:
        for s in edc:
            s.close()
        sre2l.close()
    ratio = min(edc_s) / min(sre2l_s)
    benchmark.extra_info.update({"edc_step_s": min(edc_s), "sre2l_step_s": min(sre2l_s), "edc_over_sre2l": ratio})
    logger.warning("EDC %.3f s (mean over 8 observers), SRe2L ResNet-18 %.3f s per iteration: ratio %.3f",
                   min(edc_s), min(sre2l_s), ratio)  # fmt: skip
    assert ratio > 0
