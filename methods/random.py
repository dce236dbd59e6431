"""Random real images: the control row every ddbench table carries.

``ipc`` real training images per class drawn uniformly without replacement, seeded per class from the run's
seed (:meth:`ddbench.method.DistillContext.pick_real`, stream ``random``). Under a soft-label protocol this baseline
is much stronger than under hard labels (DD-Ranking's point, landscape §1), which is why every table evaluates it
under the same protocol, and with the same soft-label teacher, as the methods it sits beside.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddbench.method import DistillContext, DistilledSet, Method, real_set


@dataclass(frozen=True)
class RandomConfig:
    """Random has no hyperparameters beyond the harness's ipc and seed."""


class Random(Method):
    name = "random"
    version = 1
    Config = RandomConfig
    paper = "real-image baseline (uniform sample per class)"

    def distill(self, ctx: DistillContext) -> DistilledSet:
        return real_set(ctx.dataset, ctx.pick_real(ctx.ipc, "random"))
