"""Why does λ_d not diversify at CPU scale? Trace the minimax terms and measure the samples, per fine-tune variant.

The acceptance test (``tests/test_minimax_data.py``) measured, at smoke scale on real CIFAR-10, a *higher*
within-class cosine with λ_d > 0 than without (300 fine-tune steps) and a *lower* nearest-real cosine with λ_r > 0
(2000 steps). This script separates the possible causes, on one pixel base DiT (the test's smoke recipe, cached under
``--cache``; a variant whose recipe and seed match one of the test's reuses its fine-tune and generation, and its
record equals the test's):

* **optimisation**: does the fine-tune lower the training-time diversity term (max cosine of x̂₀ to the
  predicted-sample memory) with λ_d > 0? Every variant traces it, plain ones too (the memories are filled at
  λ = 0 without changing the weights);
* **noise**: how far apart are two plain fine-tunes with different seeds (the noise floor of the comparison)?
* **dose**: does the effect grow with λ_d or λ_r (×10)? A sign that holds and grows with the weight is the term's
  doing, not seed noise;
* **length**: does it build up over the fine-tune (``--finetune-steps``: 2000, the test's and the spec §9.2 bench
  column's, or 300, the test's old length)?
* **parameter sharing**: DiffFit tunes biases, γ's and the class table, which every sample of a class shares;
  full fine-tuning is the contrast (at 2000 steps it moved the samples the same way, so this is not the cause);
* **metric**: cosines of raw [−1, 1] pixels are dominated by shared brightness, so the centred cosine (minus the
  real train mean image) is printed beside them; beside the nearest-real cosine of (b), the mean- and
  farthest-real ones (L_r's hard min raises the farthest pair's cosine, not the nearest's).

Prints one JSON record per variant (and writes them to ``--out``). Every stage is a cached artifact (the
fine-tunes too, keyed by their recipe and seed), so a rerun with more variants or seeds computes only what is new.
Each fine-tune is sampled with its own seed, as ``Minimax.distill`` does. CPU cost at the defaults, one thread: the
base pretraining (~5 min) then ~4 min per variant and seed (fine-tune ~1.7 min, 50 images per class ~2 min).

Example:
    OMP_NUM_THREADS=1 python scripts/minimax_diagnose.py --data-root DIR/cifar10 --cache /tmp/mmcache --out d.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import torch
from ddbench_methods.minimax import Minimax, MinimaxConfig

from ddbench.artifacts import ArtifactCache
from ddbench.data import load_dataset
from ddbench.method import DistillContext
from ddbench.ops.diffusion import generators as G
from ddbench.ops.diffusion.measures import generation_measures, real_centre

#: the acceptance test's smoke scale, so the two share the base, the fine-tunes and the generations
SMOKE = dict(dit_size="smoke", patch=4, pretrain_steps=2000, pretrain_batch=32, finetune_steps=2000, max_ipc=50)

#: name → (mode, lr or None for the preset's, λ_r, λ_d); ``--seeds`` gives the fine-tune seeds of each
VARIANTS = {
    "plain": ("difffit", None, 0.0, 0.0),
    "lambda_d": ("difffit", None, 0.0, 0.008),
    "lambda_d_x10": ("difffit", None, 0.0, 0.08),
    "lambda_r": ("difffit", None, 0.002, 0.0),
    "lambda_r_x10": ("difffit", None, 0.02, 0.0),
    "full_plain": ("full", 1e-4, 0.0, 0.0),
    "full_lambda_d": ("full", 1e-4, 0.0, 0.008),
    "full_lambda_r": ("full", 1e-4, 0.002, 0.0),
}
DEFAULT_VARIANTS = ("plain", "lambda_d", "lambda_d_x10", "lambda_r", "full_plain", "full_lambda_d")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="the CIFAR-10 folder (train/ and test/)")
    parser.add_argument("--cache", required=True, help="artifact cache for the base DiT, fine-tunes and generations")
    parser.add_argument("--per-class", type=int, default=SMOKE["max_ipc"], help="images sampled per class and variant")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated subset of the variants")
    parser.add_argument("--seeds", default="0", help="comma-separated fine-tune seeds, each run for every variant")
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
    centre = real_centre(dataset)
    records = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.variants.split(","):
            mode, lr, lambda_r, lambda_d = VARIANTS[name]
            recipe = dataclasses.replace(ft, mode=mode, lr=lr or ft.lr, lambda_r=lambda_r, lambda_d=lambda_d)
            tuned = G.finetuned(base, dataset, cond, recipe, seed=seed, device=device, cache=cache)
            out, _ = G.generation(tuned, dataset, cond, sample, seed=seed, device=device, cache=cache)
            second_half = tuned.mean_losses(recipe.steps // 2)
            record = {
                "mode": mode, "lr": recipe.lr, "lambda_r": lambda_r, "lambda_d": lambda_d, "seed": seed,
                "finetune_steps": recipe.steps,
                **{f"train_{k}_2nd_half": v for k, v in second_half.items() if k != "total"},
                **generation_measures(out["images"], out["labels"], dataset, centre),
            }  # fmt: skip
            records[f"{name}@{seed}"] = record
            print(json.dumps({f"{name}@{seed}": record}), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
