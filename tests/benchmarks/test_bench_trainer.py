"""Harness student loop against a bare hand-written torch loop doing the same work (issue: rooms, item 5).

Run with ``pytest tests/benchmarks/test_bench_trainer.py -m bench --benchmark-only -o addopts="" -p no:cacheprovider``.

Work per step, in both loops: one ResNet-18 student (low-res stem) at 32 px, batch 64, RandomCrop(pad 4) + flip per
sample, normalisation, mixup (one λ ~ Beta(0.8, 0.8) and one permutation per batch), an online ResNet-18 teacher
forward on the mixed batch under ``no_grad``, KL(batchmean) at T = 4, backward, AdamW step. The bare loop is written
with plain torch calls (no ddbench code at all); the harness loop is :class:`ddbench.train.Trainer` with its pixel
space, label mode, loss and augmentation registries, per-model RNG slots and per-epoch loss bookkeeping.

Rounds are interleaved (bare, harness, bare, harness, ...) and the reported ratio is median(bare) / median(harness)
over the rounds of one run: ≥ 1 means the harness is as fast as the bare loop. FLOPs are counted on one bare epoch
(FlopCounterMode; both loops do the same work) and set against a 1024³ GEMM timed in the same run. Timings on a
shared 2-core CPU swing by tens of percent between runs, so only the ratio measured in one run is meaningful.
"""

from __future__ import annotations

import statistics

import pytest
import torch
import torch.nn.functional as F
from bench_timing import flops_of, gemm_gflops, timed

from ddbench.labels import TeacherLabels
from ddbench.models import create_model
from ddbench.pixels import UInt8Space
from ddbench.protocol import Protocol
from ddbench.train import Trainer

pytestmark = pytest.mark.bench

N, BATCH, CLASSES, SIZE, T = 256, 64, 10, 32, 4.0
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
PROTOCOL = Protocol(
    name="bench", epochs=1, batch_size=BATCH, optimizer="adamw", lr=1e-3, weight_decay=0.01, schedule="constant",
    aug=("crop_pad", "flip"), crop_padding=0.125, mix="mixup", mix_alpha=0.8, label_mode="teacher", loss="kl",
    temperature=T, eval_seeds=1,
)  # fmt: skip


def _models() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    student = create_model("resnet18", CLASSES, SIZE, 3)
    torch.manual_seed(1)
    teacher = create_model("resnet18", CLASSES, SIZE, 3).eval().requires_grad_(False)
    return student, teacher


def bare_epoch(student: torch.nn.Module, teacher: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    """The same epoch as plain torch: what a user would write by hand."""
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=0.01)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    beta = torch.distributions.Beta(0.8, 0.8)
    student.train()
    order = torch.randperm(N, generator=g)
    rows = torch.arange(SIZE)
    for s in range(0, N, BATCH):
        idx = order[s : s + BATCH]
        x = images[idx].float() / 255
        b = x.shape[0]
        padded = F.pad(x, (4, 4, 4, 4))
        top = torch.randint(0, 9, (b,), generator=g)
        left = torch.randint(0, 9, (b,), generator=g)
        ii = (top[:, None] + rows[None]).view(b, 1, SIZE, 1).expand(b, 3, SIZE, SIZE)
        jj = (left[:, None] + rows[None]).view(b, 1, 1, SIZE).expand(b, 3, SIZE, SIZE)
        x = padded[torch.arange(b)[:, None, None, None], torch.arange(3)[None, :, None, None], ii, jj]
        flip = torch.rand(b, generator=g) < 0.5
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
        x = (x - mean) / std
        lam = float(beta.sample())
        perm = torch.randperm(b, generator=g)
        x = lam * x + (1 - lam) * x[perm]
        with torch.no_grad():
            target = F.softmax(teacher(x) / T, dim=1)
        loss = F.kl_div(F.log_softmax(student(x) / T, dim=1), target, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def harness_epoch(
    student: torch.nn.Module, teacher: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> None:
    trainer = Trainer(PROTOCOL, space=UInt8Space(MEAN, STD), labels=TeacherLabels([teacher]), device="cpu")
    trainer.fit([student], images, labels, generator=torch.Generator().manual_seed(0))


def test_bench_trainer_vs_bare_loop(benchmark) -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    labels = torch.arange(N) % CLASSES

    def epoch_seconds(fn) -> float:
        student, teacher = _models()
        return timed(lambda: fn(student, teacher, images, labels))

    epoch_seconds(bare_epoch), epoch_seconds(harness_epoch)  # warm-up (allocator, oneDNN kernels)
    epoch_flops = flops_of(lambda: bare_epoch(*_models(), images, labels))
    bare: list[float] = []

    def setup():
        bare.append(epoch_seconds(bare_epoch))  # one bare epoch before each harness round
        return (*_models(), images, labels), {}

    benchmark.pedantic(harness_epoch, setup=setup, rounds=5, iterations=1)
    t_harness = benchmark.stats.stats.median
    t_bare = statistics.median(bare)
    gemm = gemm_gflops()
    benchmark.extra_info.update(
        {
            "bare_over_harness": round(t_bare / t_harness, 3),
            "harness_epoch_s": round(t_harness, 3),
            "bare_epoch_s": round(t_bare, 3),
            "images_per_s_harness": round(N / t_harness, 1),
            "images_per_s_bare": round(N / t_bare, 1),
            "epoch_gflop": round(epoch_flops / 1e9, 1),
            "harness_gflops": round(epoch_flops / t_harness / 1e9, 2),
            "gemm_gflops": round(gemm, 2),
            "fraction_of_gemm": round(epoch_flops / t_harness / 1e9 / gemm, 3),
            "threads": torch.get_num_threads(),
            "setting": "resnet18 student + online resnet18 teacher, 32px, batch 64, crop+flip+mixup, KL T=4, AdamW",
        }
    )
    assert t_harness > 0 and t_bare > 0
