"""Data-parallel context for one student training spread over ``torchrun`` processes (DDP).

:class:`DistInfo` is what the training loop and the test pass need to know: this process's rank and the world
size. :func:`init_from_env` reads torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and starts the process group
(``gloo`` on CPU, ``nccl`` on CUDA). With ``world_size == 1`` nothing changes anywhere.

How a student is trained across N ranks (:class:`ddbench.train.Trainer` with ``dist``):

* the batch order comes from the shared generator (same seed on every rank), and each global batch is split into N
  contiguous per-rank slices (:meth:`DistInfo.shard`), so the N ranks together see exactly the single-process batch;
* each rank draws its augmentations from its own generator seeded by (seed, rank) (:func:`rank_seed`), so two
  ranks never augment identically;
* every rank runs the online teacher on its own slice; DDP averages the gradients, which equals the gradient of
  the global-batch mean loss when the slices are of equal size;
* test accuracy: each rank scores a slice of the test split and the counts are all-reduced (:meth:`all_sum`).

BatchNorm statistics are per rank (plain DDP; ``SyncBatchNorm`` needs CUDA), so students with BatchNorm match a
single-process run only statistically, instance-norm students (ConvNet) up to float rounding.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from ddbench.config import derive_seed

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the data-parallel group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (or of the test indices)."""
        return index.tensor_split(self.world_size)[self.rank] if self.active else index

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over ranks (in place, also returned)."""
        if self.active:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def broadcast(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def rank_seed(seed: int, rank: int) -> int:
    """Seed of a rank's augmentation generator (rank 0 of a 1-process world keeps the shared generator)."""
    return derive_seed(seed, "rank", rank)


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: str) -> DistInfo:
    """Start the process group torchrun describes (``gloo`` on CPU, ``nccl`` on CUDA) and return this rank's info."""
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
    logger.info("DDP rank %d of %d (%s)", rank, world, backend)
    return DistInfo(rank, world, local)


def shutdown(info: DistInfo) -> None:
    if info.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
