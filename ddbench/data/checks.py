"""Sanity checks on a loaded dataset that catch runs which would silently not be comparable or not be what was asked.

* :func:`check_counts`: a copy whose train or test count differs from the release's (a partial download, the
  Tiny-ImageNet copy with 200 of 500 images per class, a re-split MNIST) still loads, since it is the user's data,
  but with a warning naming both counts, because its numbers cannot be compared with published ones.
* :func:`check_ipc`: ``--ipc`` must be at least 1 and at most the train images of every class. A class with fewer
  images cannot give ``ipc`` distinct real images (random/herding selection, real-image initialization), so that
  is an error unless the caller allows short classes, and then the returned facts go into the run's record.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ddbench.data.spec import DatasetError, DatasetSpec

if TYPE_CHECKING:
    from ddbench.data.dataset import Dataset

logger = logging.getLogger(__name__)


def check_counts(spec: DatasetSpec, num_train: int, num_test: int, root: Path | None) -> None:
    """Warn, naming both counts, for each split whose size differs from the spec's (counts of 0 are unknown)."""
    where = f" at {root}" if root is not None else ""
    for split, found, expected in (("train", num_train, spec.num_train), ("test", num_test, spec.num_test)):
        if expected and found != expected:
            logger.warning(
                "%s: %d %s images%s, but the release has %d; results on this copy are not comparable with "
                "published %s numbers",
                spec.id,
                found,
                split,
                where,
                expected,
                spec.id,
            )


def check_ipc(dataset: Dataset, ipc: int, *, allow_short_classes: bool) -> dict[str, dict[str, int]]:
    """Check ``ipc`` against the train images of each class, before any teacher or distillation work.

    Args:
        dataset: the dataset the run uses (after ``--num-classes``).
        ipc: images per class asked for.
        allow_short_classes: accept classes with fewer than ``ipc`` train images (``--allow-short-classes``).

    Returns:
        ``{"short_classes": {class name: train images}}`` for every class with fewer than ``ipc`` images (empty
        when there are none), for the run's record.

    Raises:
        DatasetError: ``ipc`` < 1, or a class has fewer than ``ipc`` train images and short classes are not
            allowed; one line naming the class, its count and the flag.
    """
    if ipc < 1:
        raise DatasetError(f"--ipc must be at least 1, got {ipc}")
    counts = torch.bincount(dataset.train.labels, minlength=dataset.num_classes).tolist()
    short = {dataset.classes[c]: n for c, n in enumerate(counts) if n < ipc}
    if short and not allow_short_classes:
        (name, n), *others = sorted(short.items(), key=lambda kv: (kv[1], kv[0]))
        more = f" (and {len(others)} more {'class' if len(others) == 1 else 'classes'})" if others else ""
        raise DatasetError(
            f"{dataset.id}: --ipc {ipc} is more than the {n} train images of class {name!r}{more}; "
            "pass --allow-short-classes to run with fewer images for those classes"
        )
    if short:
        logger.warning("%s: %d classes have fewer than %d train images: %s", dataset.id, len(short), ipc, short)
    return {"short_classes": short}
