"""EL2N: real images ranked by their early-training error norm (a training-dynamics coreset baseline).

Paul, Ganguli & Dziugaite, "Deep Learning on a Data Diet: Finding Important Examples Early in Training",
NeurIPS 2021, §2: the EL2N score of a training image is E_w ‖softmax(f_w(x)) − onehot(y)‖₂, the expectation over
independently initialised models trained for a few epochs (the paper: 10 inits, scored at epoch 20 of CIFAR-10
training). It is one of the selection scores the coreset studies compare distilled sets against (DeepCore's
training-dynamics family, RethinkDC). Here:

* the ``models`` scoring networks are teachers the harness trains and caches (seeds 0..models−1) under the
  ``el2n`` teacher recipe (``ddbench/protocols/teacher/el2n.toml``: a short constant-lr SGD run on the full real
  train split with hard labels, so the models are *early in training*); the student loop trains them;
* each class keeps its ``ipc`` images of highest mean score (``keep = "hardest"``, the paper's pruning rule, which
  drops the easy ones) or lowest (``keep = "easiest"``, the better choice at very small budgets per the coreset
  literature); ties go to the lower index.

Deviations: per class (balanced) selection so every class gets ``ipc`` images, as every DD table needs; the score
is taken at the end of the short recipe rather than at an epoch of a full run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ddbench.method import DistillContext, DistilledSet, Method, TeacherSpec, real_set
from ddbench.ops.features import train_outputs

RECIPE = "el2n"


@dataclass(frozen=True)
class EL2NConfig:
    """Attributes:
    models: independently initialised scoring models averaged (paper: 10).
    arch: their architecture ("" = the dataset's default teacher architecture).
    keep: ``hardest`` (highest EL2N, the paper) or ``easiest``.
    batch_size: images per forward when scoring.
    """

    models: int = 4
    arch: str = ""
    keep: Literal["hardest", "easiest"] = "hardest"
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.models < 1:
            raise ValueError("models must be >= 1")


def el2n_scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """‖softmax(z) − onehot(y)‖₂ per row of ``logits`` [N, K] (one model; average over models outside)."""
    probs = F.softmax(logits.float(), dim=1)
    return (probs - F.one_hot(labels, probs.shape[1]).to(probs.dtype)).norm(dim=1)


def rank(scores: torch.Tensor, k: int, hardest: bool) -> torch.Tensor:
    """Positions of the ``k`` highest (``hardest``) or lowest scores; ties to the lower position."""
    order = torch.argsort(-scores if hardest else scores, stable=True)
    return order[: min(k, scores.numel())]


class EL2N(Method):
    name = "el2n"
    version = 1
    Config = EL2NConfig
    paper = "Paul, Ganguli & Dziugaite, NeurIPS 2021 (EL2N); coreset baseline"

    def teachers(self, dataset: object) -> list[TeacherSpec]:
        return [TeacherSpec(arch=self.config.arch, recipe=RECIPE, seed=s) for s in range(self.config.models)]

    def distill(self, ctx: DistillContext) -> DistilledSet:
        chosen, kept = {}, {}
        for c in range(ctx.dataset.num_classes):
            idx = ctx.dataset.class_indices(c)
            labels = torch.full((idx.numel(),), c, dtype=torch.long, device=ctx.device)
            total = torch.zeros(idx.numel(), device=ctx.device)
            for teacher in ctx.teachers:
                logits = train_outputs(teacher.model.to(ctx.device), ctx.dataset, idx, device=ctx.device,
                                       batch_size=self.config.batch_size, logits=True)  # fmt: skip
                total += el2n_scores(logits, labels)
            score = total / len(ctx.teachers)
            pos = rank(score, ctx.ipc, self.config.keep == "hardest").to(idx.device)
            chosen[c] = idx[pos]
            kept[str(c)] = score[pos.to(score.device)].tolist()
            ctx.progress("el2n", c + 1, ctx.dataset.num_classes)
        return real_set(ctx.dataset, chosen, el2n_scores=kept)
