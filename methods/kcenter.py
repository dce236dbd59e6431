"""k-Center greedy: real images that cover each class's teacher feature space (a coreset baseline).

Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach", ICLR 2018, after
Gonzalez's 2-approximation of the k-center problem (1985); the coreset baseline of DeepCore (Guo, Zhao, Bai, DEXA
2022, ``kCenterGreedy``) and of the 2026 "distilled vs coreset" studies. Per class (DeepCore's ``balance=True``),
in the teacher's pooled penultimate features of normalised, un-augmented train images
(:func:`ddbench.ops.features.train_outputs`):

1. the first center is a random image of the class (DeepCore draws it uniformly; here from the run's seed, stream
   ``kcenter``, so runs repeat);
2. every next center is the image farthest, in Euclidean distance, from its nearest chosen center (ties: the lowest
   index), until ``ipc`` centers are chosen.

Deviation from DeepCore: DeepCore embeds with a model it trains for a few epochs inside the selection; ddbench uses
the run's teacher (the dataset's default teacher, as herding), so the coreset baselines share one feature space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddbench.method import DistillContext, DistilledSet, Method, TeacherSpec, real_set
from ddbench.ops.features import pick_per_class


@dataclass(frozen=True)
class KCenterConfig:
    """Attributes:
    batch_size: images per teacher forward when extracting features.
    """

    batch_size: int = 256


def k_center_greedy(features: torch.Tensor, k: int, first: int) -> torch.Tensor:
    """Indices of ``k`` rows of ``features`` [N, D] chosen by greedy k-center from row ``first``, in order."""
    n = features.shape[0]
    k = min(k, n)
    chosen = [int(first)]
    nearest = torch.cdist(features, features[first : first + 1]).squeeze(1)
    nearest[first] = -1.0  # a chosen point is never picked again
    while len(chosen) < k:
        p = int(nearest.argmax())  # first maximum: ties go to the lowest index
        chosen.append(p)
        nearest = torch.minimum(nearest, torch.cdist(features, features[p : p + 1]).squeeze(1))
        nearest[chosen] = -1.0
    return torch.tensor(chosen, dtype=torch.long)


class KCenter(Method):
    name = "kcenter"
    version = 1
    Config = KCenterConfig
    paper = "Sener & Savarese, ICLR 2018 (k-center greedy); coreset baseline of DeepCore"

    def teachers(self, dataset: object) -> list[TeacherSpec]:
        return [TeacherSpec()]

    def distill(self, ctx: DistillContext) -> DistilledSet:
        model = ctx.teachers[0].model.to(ctx.device)

        def pick(feats: torch.Tensor, c: int) -> torch.Tensor:
            first = int(torch.randint(feats.shape[0], (1,), generator=ctx.generator("kcenter", c)))
            return k_center_greedy(feats, ctx.ipc, first)

        chosen = pick_per_class(ctx, model, pick, batch_size=self.config.batch_size, stage="k-center")
        return real_set(ctx.dataset, chosen)
