"""Student-training throughput: ResNet-18 (low-res stem) students at 32 px with online KD from a ResNet-18 teacher.

Run with ``pytest tests/benchmarks/test_bench_student.py -m bench --benchmark-only -o addopts="" -p no:cacheprovider``.
The benchmark times one epoch of :class:`ddbench.train.Trainer` under the ``dwa-cifar`` mechanism
(RandomCrop + flip, mixup, teacher KL at T = 30) on 64 random images, batch 32, for four students in lockstep, and
times the same epoch for one student, interleaved. Reported in ``extra_info``:

* ``images_per_s_per_student_1``: images each student trains on per second when trained alone;
* ``images_per_s_per_student_4``: the same for each of four students trained in lockstep;
* ``lockstep_speedup``: (4 × time of one student) / (time of four in lockstep): what sharing the batch, the
  augmentation and the teacher call saves over four separate runs. With S a student's forward + backward, T the
  teacher's forward and A the batch preparation, it is 4(S + T + A) / (4S + T + A); a ResNet-18 teacher forward is
  about S/3, so expect about 1.2-1.3, not 4: the students' own work is not shared.

Timings on shared CPUs are noisy; compare numbers from one run on one machine only.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from ddbench.labels import TeacherLabels
from ddbench.models import create_model
from ddbench.pixels import UInt8Space
from ddbench.protocol import load_protocol
from ddbench.train import Trainer

pytestmark = pytest.mark.bench

N_IMAGES, BATCH, CLASSES, SIZE = 64, 32, 10, 32
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _students(n: int, seed: int = 0) -> list[torch.nn.Module]:
    torch.manual_seed(seed)
    return [create_model("resnet18", CLASSES, SIZE, 3) for _ in range(n)]


def test_bench_student_lockstep(benchmark):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N_IMAGES, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    labels = torch.arange(N_IMAGES) % CLASSES
    protocol = load_protocol("dwa-cifar", overrides={"epochs": 1, "batch_size": BATCH})
    torch.manual_seed(1)
    teacher = create_model("resnet18", CLASSES, SIZE, 3).eval()

    def epoch(models: list[torch.nn.Module]) -> list:
        trainer = Trainer(protocol, space=UInt8Space(MEAN, STD), labels=TeacherLabels([teacher]), device="cpu")
        return trainer.fit(models, images, labels, generator=torch.Generator().manual_seed(0))

    def timed(n: int) -> float:
        models = _students(n)
        start = time.perf_counter()
        epoch(models)
        return time.perf_counter() - start

    timed(1)  # warm-up (allocator, oneDNN kernels)
    singles = []

    def setup():
        singles.append(timed(1))  # interleave one single-student epoch before each lockstep round
        return (_students(4),), {}

    benchmark.pedantic(epoch, setup=setup, rounds=3, iterations=1)
    t4 = benchmark.stats.stats.median
    t1 = statistics.median(singles)
    benchmark.extra_info.update(
        {
            "images_per_s_per_student_1": round(N_IMAGES / t1, 2),
            "images_per_s_per_student_4": round(N_IMAGES / t4, 2),
            "aggregate_student_images_per_s_4": round(4 * N_IMAGES / t4, 2),
            "lockstep_speedup": round(4 * t1 / t4, 3),
            "epoch_s_1": round(t1, 3),
            "epoch_s_4": round(t4, 3),
            "threads": torch.get_num_threads(),
            "setting": f"resnet18 32px x{N_IMAGES} images, batch {BATCH}, dwa-cifar mechanism, online resnet18 teacher",
        }
    )
    assert t4 > 0 and t1 > 0
