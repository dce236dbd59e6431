"""Teachers (the "squeeze" stage): train or import a model per dataset, cache it, verify it.

Contract types live here; training and caching are implemented below them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn


@dataclass(frozen=True)
class TeacherSpec:
    """What a method asks for: an architecture trained with a named recipe and seed.

    ``arch=""`` means the dataset's default teacher architecture. ``recipe`` names an entry of the dataset's
    teacher recipes (``default`` = the paper recipe; the run's profile, e.g. ``cpu``, can shrink it).
    """

    arch: str = ""
    recipe: str = "default"
    seed: int = 0


@dataclass
class Teacher:
    """A prepared teacher: a frozen eval-mode model plus what identifies it."""

    spec: TeacherSpec
    arch: str
    dataset: str
    class_hash: str
    model: nn.Module
    id: str
    sha256: str
    accuracy: dict[str, float] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
