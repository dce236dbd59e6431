"""Acceptance of Minimax diffusion on real CIFAR-10 (spec ``minimax.md`` §9.2 (a), (b), (c)); ``slow`` + ``data``.

Absolute paper numbers need the ImageNet DiT, so acceptance is relative, on the pixel path: one base DiT pretrained
on all of CIFAR-10, then, for each of ``DDBENCH_MINIMAX_SEEDS`` (default 3) fine-tune seeds, three fine-tunes from
it with that seed (hence the same t, ε and label-drop draws) that differ only in the λ's, each sampled with it:

* (a) the mean pairwise cosine between a class's generated images is lower with λ_d > 0 than with λ = 0;
* (b) the mean nearest-real-neighbour cosine (each generated image against the real train images of its class) is
  higher with λ_r > 0 than with λ = 0;
* both compared as **means over the seeds** (one pair is inside the seed noise at smoke scale: plain fine-tunes of
  two seeds differ by 0.02 in within-class cosine, ``docs/benchmarks.md``), and the paired differences reported;
* the mechanism, asserted at every scale: each term lowers itself over the fine-tune (the recorded second-half L_d,
  L_r), and λ_r raises the farthest-real cosine, the worst (prediction, real) pair its hard min acts on;
* (c) advisory: Minimax vs the ``dit`` baseline (no fine-tuning), ConvNet-3 under ``idc-32@cpu``, 3 distillation
  seeds at IPC 10 and 50. Printed (run with ``-s``) and written to ``$DDBENCH_MINIMAX_REPORT`` when set, not
  asserted.

Cosines are of flattened images in [−1, 1], the space the minimax terms compare x̂₀ in
(:mod:`ddbench.ops.diffusion.measures`). ``DDBENCH_MINIMAX_SCALE`` picks the budget: ``smoke`` (default; spec §9.2
smoke model with a longer pretraining and the bench column's 2000 fine-tune steps, ~80 min on one thread) or
``bench`` (the bench column, CPU-days). ``DDBENCH_TEST_HOME`` keeps the artifacts (base DiT, fine-tunes,
generations) between invocations; it is the cache ``scripts/minimax_diagnose.py`` takes as ``--cache``, so the two
share the base model and every fine-tune and generation of the same recipe and seed (the script's records for
these variants equal the test's), and a second process pointed at the same cache fills it concurrently (file locks).

Measured at the smoke scale (``docs/benchmarks.md``, "Minimax acceptance"): the mechanism holds on every seed; (a)
holds on the raw mean by 0.008 (not on the centred cosine), (b) **fails** on every seed, and the ×10 doses of
``scripts/minimax_diagnose.py`` move both the wrong way further, so the spec test is a strict ``xfail`` at the smoke
scale (an unexpected pass fails, so the record cannot go stale) and a plain test at ``bench``. (c) favours Minimax.
Reported as measured; the λ's are the paper's and are not tuned to pass.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import cifar10_root
from ddbench_methods.minimax import DiT, Minimax, MinimaxConfig

from ddbench.artifacts import ArtifactCache
from ddbench.data import load_dataset
from ddbench.evaluate import evaluate
from ddbench.method import DistillContext
from ddbench.ops.diffusion import generators as G
from ddbench.ops.diffusion.measures import generation_measures, real_centre
from ddbench.protocol import load_protocol

pytestmark = [
    pytest.mark.slow,
    pytest.mark.data,
    pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="needs ddbench[diffusion]"),
]

# The smoke base with the bench column's fine-tune length (spec §9.2: ~2k steps; the paper runs ~12k). At 300 steps
# λ_d's change in within-class cosine was inside the seed noise (+0.05 and -0.004 on two seeds); at 2000 steps it is
# -0.008 on the mean of three seeds (docs/benchmarks.md, "Minimax acceptance"). DDBENCH_MINIMAX_FINETUNE_STEPS=300
# reruns the shorter one.
SCALES = {
    "smoke": dict(dit_size="smoke", patch=4, pretrain_steps=2000, pretrain_batch=32, finetune_steps=2000, max_ipc=50),
    "bench": dict(dit_size="bench", patch=4, pretrain_steps=20000, pretrain_batch=64, pretrain_ema=0.9999,
                  finetune_steps=2000, max_ipc=50),
}  # fmt: skip
SCALE = os.environ.get("DDBENCH_MINIMAX_SCALE", "smoke")
if os.environ.get("DDBENCH_MINIMAX_FINETUNE_STEPS"):
    SCALES[SCALE]["finetune_steps"] = int(os.environ["DDBENCH_MINIMAX_FINETUNE_STEPS"])
SEEDS = int(os.environ.get("DDBENCH_MINIMAX_SEEDS") or 3)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    # under DDBENCH_TEST_HOME the data folder is kept too: its file times are part of the data key
    home = os.environ.get("DDBENCH_TEST_HOME")
    return load_dataset("cifar10", cifar10_root(Path(home) if home else tmp_path_factory.mktemp("minimax-data")))


@pytest.fixture(scope="module")
def report(cifar10, tmp_path_factory) -> dict:
    """Every fine-tune, generation and measure of the module, and (c); printed (``-s``) and written to
    ``$DDBENCH_MINIMAX_REPORT`` when set."""
    # every core, unless OMP_NUM_THREADS says otherwise (one thread per job when jobs share the cores)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, os.cpu_count() or 1))
    tmp_path = tmp_path_factory.mktemp("minimax-runs")
    home = Path(os.environ.get("DDBENCH_TEST_HOME") or tmp_path)
    cache = ArtifactCache(home)
    scale = SCALES[SCALE]

    def run(cls=Minimax, seed=0, ipc=10, **lambdas):
        method = cls(MinimaxConfig(**scale, **lambdas))
        ctx = DistillContext(cifar10, [], ipc, torch.device("cpu"), seed, tmp_path / f"run{seed}", cache=cache)
        return method.distill(ctx)

    centre = real_centre(cifar10)
    variants = {"plain": dict(lambda_r=0.0, lambda_d=0.0), "lambda_d": dict(lambda_r=0.0),
                "lambda_r": dict(lambda_d=0.0)}  # fmt: skip
    per_seed: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for seed in range(SEEDS):
        for name, lambdas in variants.items():
            ds = run(seed=seed, **lambdas)
            g = torch.load(home / G.KIND_GENERATION / ds.meta["generation"] / "tensors.pt", weights_only=True)
            measured = generation_measures(g["images"], g["labels"], cifar10, centre)
            train = ds.meta["finetune_losses_2nd_half"]
            per_seed[name].append({**measured, "train_diversity": train["diversity"],
                                   "train_representativeness": train["representativeness"]})  # fmt: skip
    means = {name: {k: mean([r[k] for r in rows]) for k in rows[0]} for name, rows in per_seed.items()}
    keys = ("within_cos", "within_cos_centred", "nearest_real_cos", "mean_real_cos", "farthest_real_cos",
            "train_diversity", "train_representativeness")  # fmt: skip
    paired = {
        f"{name}_minus_plain": {k: [r[k] - p[k] for r, p in zip(per_seed[name], per_seed["plain"], strict=True)]
                                for k in keys}
        for name in ("lambda_d", "lambda_r")
    }  # fmt: skip
    out = {"scale": SCALE, "seeds": SEEDS, "means": means, "paired_differences": paired, "per_seed": per_seed}
    # (c) advisory: Minimax vs DiT, ConvNet-3 under idc-32@cpu, 3 seeds at IPC 10 and 50
    protocol = load_protocol("idc-32", profile="cpu")
    acc: dict[str, dict[str, list[float]]] = {}
    for ipc in (10, 50):
        for name, cls in (("minimax", Minimax), ("dit", DiT)):
            for seed in range(3):
                ds = run(cls, seed=seed, ipc=ipc)
                (r,) = evaluate(ds, cifar10, ["convnet"], protocol, seed=0)
                acc.setdefault(f"ipc{ipc}", {}).setdefault(name, []).append(r.top1)
    out["accuracy_idc32_cpu_convnet"] = acc
    print(json.dumps(out, indent=2))
    if os.environ.get("DDBENCH_MINIMAX_REPORT"):
        Path(os.environ["DDBENCH_MINIMAX_REPORT"]).write_text(json.dumps(out, indent=2))
    return out


def test_minimax_terms_optimise_what_they_measure(report):
    # The mechanism, whatever the scale: each term lowers itself over the fine-tune, and L_r's hard min
    # (1 - min cos over predictions x real memory) raises the farthest-real cosine, the worst pair it acts on.
    means = report["means"]
    assert means["lambda_d"]["train_diversity"] < means["plain"]["train_diversity"], "λ_d should lower its own term"
    assert means["lambda_r"]["train_representativeness"] < means["plain"]["train_representativeness"], (
        "λ_r should lower its own term"
    )
    assert means["lambda_r"]["farthest_real_cos"] > means["plain"]["farthest_real_cos"], (
        "λ_r's hard min should raise the farthest-real cosine"
    )


@pytest.mark.xfail(
    SCALE == "smoke",
    strict=True,
    reason="measured at the smoke scale over 3 seeds (docs/benchmarks.md, 'Minimax acceptance'): λ_r lowers the "
    "nearest-real cosine on every seed, more so at ×10, while raising the farthest-real cosine its hard min acts on; "
    "λ_d at ×10 raises within-class cosine on every seed. Strict: a pass here means the docs need updating",
)
def test_spec_acceptance_diversity_and_representativeness(report):
    # spec §9.2 (a) and (b), as the spec states them, compared as means over the fine-tune seeds
    means = report["means"]
    assert means["lambda_d"]["within_cos"] < means["plain"]["within_cos"], (
        "(a) λ_d > 0 should lower within-class similarity"
    )
    assert means["lambda_r"]["nearest_real_cos"] > means["plain"]["nearest_real_cos"], (
        "(b) λ_r > 0 should raise nearest-real similarity"
    )
