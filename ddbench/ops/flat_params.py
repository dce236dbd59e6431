"""Flat parameter vectors: a network's parameters as one 1-D tensor θ, in ``named_parameters`` order.

MTT (spec mtt §0 notation, §5.2 items 3 and 5) works on θ as a single vector: the expert trajectories store one
per epoch, the student runs on one, and the matching loss sums squared differences over all P entries. The order
is the one the official ``ReparamModule`` uses (modules in registration order, each module's own parameters),
which equals ``named_parameters()`` / ``parameters()`` order, the order the official buffers store their
per-layer lists in. :class:`ParamLayout` is that order plus the shapes, so a vector can be checked against a
model before anything is matched to it (a trajectory from a different width, depth or class count must fail
loudly, not produce a wrong loss).

Buffers (BatchNorm running statistics) are not part of θ. MTT's instance-norm ConvNet has none (spec §1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import prod

import torch
from torch import nn

__all__ = ["ParamLayout"]


@dataclass(frozen=True)
class ParamLayout:
    """The names and shapes of a model's parameters, in ``named_parameters`` order.

    Attributes:
        names: parameter names (``features.0.weight``, ...).
        shapes: their shapes, same order.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise ValueError(f"{len(self.names)} names for {len(self.shapes)} shapes")

    @classmethod
    def of(cls, model: nn.Module) -> ParamLayout:
        """The layout of ``model``'s parameters."""
        named = list(model.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def numels(self) -> tuple[int, ...]:
        """Entries per parameter."""
        return tuple(prod(s) for s in self.shapes)

    @property
    def num_params(self) -> int:
        """P, the length of the flat vector."""
        return sum(self.numels)

    def flatten(self, tensors: Sequence[torch.Tensor] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One flat vector from per-parameter tensors (a list in layout order, or a name → tensor mapping).

        Differentiable (a concatenation); shapes are checked against the layout.
        """
        if isinstance(tensors, Mapping):
            missing = [n for n in self.names if n not in tensors]
            if missing or len(tensors) != len(self.names):
                extra = sorted(set(tensors) - set(self.names))
                raise ValueError(f"parameter names differ from the layout: missing {missing}, extra {extra}")
            tensors = [tensors[n] for n in self.names]
        if len(tensors) != len(self.names):
            raise ValueError(f"{len(tensors)} tensors for a layout of {len(self.names)} parameters")
        for name, shape, t in zip(self.names, self.shapes, tensors):
            if tuple(t.shape) != shape:
                raise ValueError(f"{name}: shape {tuple(t.shape)}, layout says {shape}")
        return torch.cat([t.reshape(-1) for t in tensors])

    def flatten_model(self, model: nn.Module) -> torch.Tensor:
        """``model``'s current parameters as one detached flat vector (after checking the model's layout)."""
        self.check(model)
        return torch.nn.utils.parameters_to_vector(p.detach() for p in model.parameters())

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Name → view of ``flat`` with that parameter's shape; differentiable w.r.t. ``flat``."""
        if flat.ndim != 1 or flat.numel() != self.num_params:
            raise ValueError(f"flat vector of shape {tuple(flat.shape)}, layout needs [{self.num_params}]")
        pieces = torch.split(flat, self.numels)
        return {n: p.view(s) for n, s, p in zip(self.names, self.shapes, pieces)}

    def check(self, other: nn.Module | ParamLayout) -> None:
        """Raise ValueError naming the first difference between this layout and ``other``'s.

        Raises:
            ValueError: different parameter count, names, order or shapes.
        """
        theirs = other if isinstance(other, ParamLayout) else ParamLayout.of(other)
        if theirs == self:
            return
        if len(theirs.names) != len(self.names):
            raise ValueError(
                f"layout mismatch: {len(self.names)} parameters (P={self.num_params}) vs "
                f"{len(theirs.names)} (P={theirs.num_params})"
            )
        for k, (a, b) in enumerate(zip(zip(self.names, self.shapes), zip(theirs.names, theirs.shapes))):
            if a != b:
                raise ValueError(f"layout mismatch at parameter {k}: {a[0]} {a[1]} vs {b[0]} {b[1]}")

    def to_dict(self) -> dict[str, list]:
        """Plain lists (loadable with ``torch.load(weights_only=True)`` and JSON)."""
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence]) -> ParamLayout:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(str(n) for n in d["names"]), tuple(tuple(int(v) for v in s) for s in d["shapes"]))
