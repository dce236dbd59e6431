"""Why does λ_d not diversify at CPU scale? Trace the minimax terms and measure the samples, per fine-tune variant.

The acceptance test (``tests/test_minimax_data.py``) measured, at smoke scale on real CIFAR-10, a *higher*
within-class cosine with λ_d > 0 than without. This script separates the possible causes, on one pixel base DiT
(the test's smoke recipe, cached under ``--cache``):

* **optimisation**: does the fine-tune lower the training-time diversity term (max cosine of x̂₀ to the
  predicted-sample memory) with λ_d > 0? Every variant traces it, plain ones too (the memories are filled at
  λ = 0 without changing the weights);
* **noise**: how far apart are two plain fine-tunes with different seeds (the noise floor of the comparison)?
* **dose**: does the effect grow with λ_d (×10)?
* **parameter sharing**: DiffFit tunes biases, γ's and the class table, which every sample of a class shares, so
  pushing x̂₀ away from the memory can only move the whole class; full fine-tuning is the contrast;
* **metric**: cosines of raw [−1, 1] pixels are dominated by shared brightness, so the centred cosine (minus the
  real train mean image) is printed beside them.

Prints one JSON record per variant (and writes them to ``--out``). CPU cost at the defaults: the base pretraining
(~25 min on one thread) then ~5 min per variant.

Example:
    OMP_NUM_THREADS=1 python scripts/minimax_diagnose.py --data-root DIR/cifar10 --cache /tmp/mmcache --out d.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
from pathlib import Path

import torch
from ddbench_methods.minimax import Minimax, MinimaxConfig

from ddbench.artifacts import ArtifactCache
from ddbench.config import derive_seed
from ddbench.data import load_dataset
from ddbench.method import DistillContext
from ddbench.ops.diffusion import generators as G
from ddbench.ops.diffusion import models as M
from ddbench.ops.diffusion.minimax import MinimaxMemory, cosine_matrix

SMOKE = dict(dit_size="smoke", patch=4, pretrain_steps=2000, pretrain_batch=32, finetune_steps=300, max_ipc=50)

#: name → (mode, lr or None for the preset's, λ_r, λ_d, seed)
VARIANTS = {
    "plain": ("difffit", None, 0.0, 0.0, 0),
    "plain_seed1": ("difffit", None, 0.0, 0.0, 1),
    "lambda_d": ("difffit", None, 0.0, 0.008, 0),
    "lambda_d_x10": ("difffit", None, 0.0, 0.08, 0),
    "lambda_r": ("difffit", None, 0.002, 0.0, 0),
    "full_plain": ("full", 1e-4, 0.0, 0.0, 0),
    "full_lambda_d": ("full", 1e-4, 0.0, 0.008, 0),
    # second and third seeds of the sign-deciding pairs (not in the default list: --variants names them)
    "lambda_d_seed1": ("difffit", None, 0.0, 0.008, 1),
    "full_plain_seed1": ("full", 1e-4, 0.0, 0.0, 1),
    "full_lambda_d_seed1": ("full", 1e-4, 0.0, 0.008, 1),
    "full_plain_seed2": ("full", 1e-4, 0.0, 0.0, 2),
    "full_lambda_d_seed2": ("full", 1e-4, 0.0, 0.008, 2),
}
DEFAULT_VARIANTS = ("plain", "plain_seed1", "lambda_d", "lambda_d_x10", "lambda_r", "full_plain", "full_lambda_d")


def signed(images: torch.Tensor) -> torch.Tensor:
    return images.float().flatten(1) / 127.5 - 1.0


def mean_off_diagonal(x: torch.Tensor) -> float:
    sim = cosine_matrix(x, x)
    n = x.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def measure(images: torch.Tensor, labels: torch.Tensor, dataset, centre: torch.Tensor) -> dict[str, float]:
    """Within-class cosine (raw and centred) and nearest-real cosine, means over classes."""
    raw, centred, nearest = [], [], []
    for c in labels.unique():
        x = signed(images[labels == c])
        real = signed(dataset.train.load(dataset.class_indices(int(c))))
        raw.append(mean_off_diagonal(x))
        centred.append(mean_off_diagonal(x - centre))
        nearest.append(float(cosine_matrix(x, real).max(dim=1).values.mean()))
    k = len(raw)
    return {"within_cos": sum(raw) / k, "within_cos_centred": sum(centred) / k, "nearest_real_cos": sum(nearest) / k}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="the CIFAR-10 folder (train/ and test/)")
    parser.add_argument("--cache", required=True, help="artifact cache for the base DiT and the generations")
    parser.add_argument("--per-class", type=int, default=30, help="images sampled per class and variant")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated subset of the variants")
    parser.add_argument("--pretrain-steps", type=int, default=SMOKE["pretrain_steps"], help="base DiT steps")
    parser.add_argument("--finetune-steps", type=int, default=SMOKE["finetune_steps"], help="fine-tune steps")
    parser.add_argument("--out", default="", help="also write the records here as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    dataset = load_dataset("cifar10", args.data_root)
    cache = ArtifactCache(Path(args.cache))
    device = torch.device("cpu")
    scale = {**SMOKE, "pretrain_steps": args.pretrain_steps, "finetune_steps": args.finetune_steps}
    method = Minimax(MinimaxConfig(**scale))
    ctx = DistillContext(dataset, [], 10, device, 0, Path(args.cache) / "run", cache=cache)
    base = method.base(ctx)
    cond = method.condition_ids(ctx)
    _, ft, sample = method.recipes()
    sample = dataclasses.replace(sample, per_class=args.per_class)
    centre = signed(dataset.train.load(torch.arange(len(dataset.train)))).mean(0)
    records = {}
    for name in args.variants.split(","):
        mode, lr, lambda_r, lambda_d, seed = VARIANTS[name]
        model = copy.deepcopy(base.model)
        if mode == "difffit":
            M.add_difffit_gammas(model)
        params = M.mark_trainable(model, mode)
        trace: list[dict[str, float]] = []
        ema, _ = G.train_diffusion(
            model, dataset, base.space, cond, num_classes=base.num_classes, steps=ft.steps, batch=ft.batch,
            params=params, lr=lr or ft.lr, ema_decay=ft.ema_decay, generator=torch.Generator().manual_seed(
                derive_seed(seed, "minimax-finetune")), device=device, flip=ft.flip, memory=MinimaxMemory(ft.memory),
            lambda_r=lambda_r, lambda_d=lambda_d, label_drop=ft.label_drop, trace=trace,
        )  # fmt: skip
        ema.eval().requires_grad_(False)
        gen = G.Generator(ema, {"diagnose": name, "base": base.key}, base.num_classes, base.space)
        out, _ = G.generation(gen, dataset, cond, sample, seed=0, device=device, cache=cache)
        tail = trace[len(trace) // 2 :]
        record = {
            "mode": mode, "lr": lr or ft.lr, "lambda_r": lambda_r, "lambda_d": lambda_d, "seed": seed,
            "train_diversity_2nd_half": sum(t["diversity"] for t in tail) / len(tail),
            "train_representativeness_2nd_half": sum(t["representativeness"] for t in tail) / len(tail),
            "train_diffusion_2nd_half": sum(t["diffusion"] for t in tail) / len(tail),
            **measure(out["images"], out["labels"], dataset, centre),
        }  # fmt: skip
        records[name] = record
        print(json.dumps({name: record}), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
