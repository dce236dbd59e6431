"""Datasets: specs, the dataset registry, and loaders for the on-disk formats users have.

Importing this package is cheap (no torch) so ``ddbench list`` stays fast; the loading machinery is imported
on first use.
"""

from __future__ import annotations

from typing import Any

from ddbench.data.catalog import SPECS
from ddbench.data.spec import DatasetError, DatasetSpec, class_order_hash
from ddbench.registry import Registry

DATASETS: Registry[DatasetSpec] = Registry("dataset", base_cls=DatasetSpec)
for _spec in SPECS:
    DATASETS.register(_spec.id, _spec, aliases=_spec.aliases, origin="builtin")

_LAZY = {"Dataset", "Splits", "load_dataset", "locate", "candidate_roots", "diagnose"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from ddbench.data import dataset

        return getattr(dataset, name)
    if name == "check_ipc":
        from ddbench.data.checks import check_ipc

        return check_ipc
    raise AttributeError(f"module 'ddbench.data' has no attribute {name!r}")


__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "DatasetSpec",
    "Splits",
    "candidate_roots",
    "check_ipc",
    "class_order_hash",
    "diagnose",
    "load_dataset",
    "locate",
]
