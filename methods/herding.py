"""Herding: real images chosen greedily so that their feature mean tracks the class mean.

Welling, "Herding Dynamical Weights to Learn", ICML 2009; used as a coreset baseline for dataset distillation
since DC (Zhao et al., ICLR 2021) and in DC-BENCH. Features are the teacher's penultimate (pooled) features of
normalized, un-augmented images. At step k the image added is the one minimising
``‖μ_c − (Σ_{selected} f + f_i) / k‖₂`` — the standard greedy form, which selects without replacement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddbench.method import DistillContext, DistilledSet, Method, TeacherSpec, real_set
from ddbench.ops.features import pick_per_class


@dataclass(frozen=True)
class HerdingConfig:
    """Attributes:
    batch_size: images per teacher forward when extracting features.
    """

    batch_size: int = 256


def herd(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (into ``features`` [N, D]) of ``k`` rows chosen by greedy herding, in selection order."""
    mu = features.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
    for step in range(1, min(k, features.shape[0]) + 1):
        dist = (mu - (running + features) / step).norm(dim=1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        running += features[i]
    return torch.tensor(chosen, dtype=torch.long)


class Herding(Method):
    name = "herding"
    version = 1
    Config = HerdingConfig
    paper = "Welling, ICML 2009 (herding); coreset baseline of DC / DC-BENCH"

    def teachers(self, dataset: object) -> list[TeacherSpec]:
        return [TeacherSpec()]

    @torch.no_grad()
    def distill(self, ctx: DistillContext) -> DistilledSet:
        model = ctx.teachers[0].model.to(ctx.device).eval()
        chosen = pick_per_class(ctx, model, lambda feats, c: herd(feats, ctx.ipc),
                                batch_size=self.config.batch_size, stage="herding")  # fmt: skip
        return real_set(ctx.dataset, chosen)
