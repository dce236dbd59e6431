"""``torchrun --nproc-per-node N -m ddbench eval RUN ...``: one evaluation trained across N DDP processes.

Every rank loads the run, its distilled set and the online teachers; the students are trained by the one
training loop with a :class:`~ddbench.distributed.DistInfo` (batches split per rank, per-rank augmentation
streams, DistributedDataParallel gradients, all-reduced test counts). Rank 0 decides which rows are missing
(broadcast, so every rank trains the same students in the same order: no unit locks, whose outcome could differ
between ranks) and is the only one that writes the store; each row records ``world_size`` in its ``extra_json``.
"""

from __future__ import annotations

import logging
from typing import Any

from ddbench.distributed import DistInfo
from ddbench.pipeline import SeedJob, run_units

logger = logging.getLogger(__name__)


class FollowerStore:
    """The store as a rank other than 0 sees it: reads go through, writes are rank 0's job and are dropped."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.path = store.path

    def add_teacher(self, **fields: Any) -> None:
        return None

    def add_evaluation(self, **fields: Any) -> None:
        return None

    def evaluation_hash(self, *args: Any, **kwargs: Any) -> str | None:
        return self._store.evaluation_hash(*args, **kwargs)

    def evaluations(self, **filters: Any) -> Any:
        return self._store.evaluations(**filters)


def store_for(store: Any, dist: DistInfo) -> Any:
    """``store`` on rank 0, a :class:`FollowerStore` elsewhere."""
    return store if dist.is_main else FollowerStore(store)


def ddp_seed_runner(job: SeedJob, archs: list[str]) -> None:
    """:func:`ddbench.pipeline.run_seed` for DDP ranks: rank 0's list of missing archs, trained on every rank."""
    dist: DistInfo = job.request.dist
    todo = job.missing(archs) if dist.is_main else None
    todo = dist.broadcast(todo)
    if todo:
        run_units(job, list(todo))
