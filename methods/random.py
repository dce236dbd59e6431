"""Random real images: the control row every ddbench table carries.

``ipc`` real training images per class drawn uniformly without replacement, seeded per class from the run's
seed. Under a soft-label protocol this baseline is much stronger than under hard labels (DD-Ranking's point,
landscape §1), which is why every table evaluates it under the same protocol as the methods it sits beside.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddbench.distilled import DistilledSet
from ddbench.method import DistillContext, Method


@dataclass(frozen=True)
class RandomConfig:
    """Random has no hyperparameters beyond the harness's ipc and seed."""


class Random(Method):
    name = "random"
    version = 1
    Config = RandomConfig
    paper = "real-image baseline (uniform sample per class)"

    def distill(self, ctx: DistillContext) -> DistilledSet:
        images, labels, chosen = [], [], {}
        for c in range(ctx.dataset.num_classes):
            idx = ctx.dataset.class_indices(c)
            pick = idx[torch.randperm(idx.numel(), generator=ctx.generator("random", c))[: ctx.ipc]]
            if pick.numel() < ctx.ipc:
                ctx.logger.warning("class %d has only %d images for ipc %d", c, pick.numel(), ctx.ipc)
            images.append(ctx.dataset.train.load(pick))
            labels.append(torch.full((pick.numel(),), c, dtype=torch.long))
            chosen[str(c)] = pick.tolist()
            ctx.progress("select", c + 1, ctx.dataset.num_classes)
        return DistilledSet(torch.cat(images), torch.cat(labels), "uint8", meta={"train_indices": chosen})
