"""ddbench: a unified, reproducible benchmark suite for dataset distillation."""

from __future__ import annotations

from ddbench.version import __version__

__all__ = ["__version__"]
