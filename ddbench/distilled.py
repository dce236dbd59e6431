"""The distilled-set artifact: what every method returns and every protocol evaluates.

Saved as ``images.pt`` (tensors) plus ``manifest.json`` (everything else and the tensor file's sha256), written
atomically. Loading verifies the hash, so a truncated or tampered artifact is reported and recomputed, never
evaluated.

The pixel space is named (:data:`ddbench.pixels.PIXEL_SPACES`) and its state travels inside the artifact
(``pixel.<name>`` tensors in ``images.pt``, parameters in the manifest), so a ZCA set carries the fitted transform
its test images must go through; :meth:`DistilledSet.space` rebuilds the space object.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddbench.io import atomic_dir, sha256_file
from ddbench.pixels import PIXEL_SPACES, PixelSpace, build_pixel_space

FORMAT_VERSION = 1
PIXEL_PREFIX = "pixel."


class CorruptArtifact(RuntimeError):
    """An artifact on disk does not match its manifest (hash, shapes) or cannot be read."""


@dataclass(frozen=True)
class SoftLabelSpec:
    """How students get labels beyond the hard ones.

    Attributes:
        mode: ``none`` (hard labels), ``stored`` (one fixed soft label per image in ``DistilledSet.soft_labels``),
            ``teacher`` (a teacher relabels every augmented batch online), ``ensemble`` (several teachers, mean
            logits), or any label mode a plugin registered (:data:`ddbench.labels.LABEL_MODES`).
        teachers: the teachers used online: teacher ids (two seeds of one arch can be an ensemble) or, for
            artifacts written before ids were recorded, architecture names; empty means the dataset's default teacher.
        temperature: the method's preferred temperature; the protocol's value wins when it sets one.
    """

    mode: str = "none"
    teachers: tuple[str, ...] = ()
    temperature: float | None = None


@dataclass
class DistilledSet:
    """Images, labels and everything an evaluator is entitled to know about them.

    Attributes:
        images: ``[N, C, H, W]``; uint8 for ``pixel_space="uint8"``, float otherwise.
        labels: ``[N]`` int64 hard labels, always present.
        pixel_space: the registered space name: ``uint8`` RGB/gray pixels, ``normalized`` with the dataset
            mean/std, ``zca`` whitened, or a plugin's.
        pixel_state: tensors of the space (ZCA's mean and matrices); saved inside the artifact.
        pixel_params: JSON-able parameters of the space (ZCA's eps).
        soft_label: the soft-label spec; ``soft_labels`` holds the tensor when ``mode == "stored"``.
        soft_labels: ``[N, K]`` float logits or probabilities (stored mode only).
        hints: evaluation hints the method is entitled to (MTT's learned ``syn_lr``).
        meta: provenance, filled by the harness (method, version, config hash, teachers, timings, ...).
    """

    images: torch.Tensor
    labels: torch.Tensor
    pixel_space: str = "uint8"
    soft_label: SoftLabelSpec = field(default_factory=SoftLabelSpec)
    soft_labels: torch.Tensor | None = None
    hints: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    pixel_state: dict[str, torch.Tensor] = field(default_factory=dict)
    pixel_params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def in_space(cls, images: torch.Tensor, labels: torch.Tensor, space: PixelSpace, **kwargs: Any) -> DistilledSet:
        """A set whose images are in ``space``, carrying the space's state (ZCA matrices) with it."""
        return cls(images, labels, space.name, pixel_state=space.state(), pixel_params=space.params(), **kwargs)

    def space(self, mean: Any = None, std: Any = None) -> PixelSpace:
        """The pixel-space object of these images (mean/std default to the ones recorded in ``meta``)."""
        mean = mean if mean is not None else self.meta.get("mean", (0.0,) * self.images.shape[1])
        std = std if std is not None else self.meta.get("std", (1.0,) * self.images.shape[1])
        return build_pixel_space(self.pixel_space, mean, std, self.pixel_state, self.pixel_params)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be [N,C,H,W], got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be [{self.images.shape[0]}], got {tuple(self.labels.shape)}")
        if self.pixel_space not in PIXEL_SPACES:
            raise ValueError(f"unknown pixel_space {self.pixel_space!r}; known: {', '.join(PIXEL_SPACES.names())}")
        PIXEL_SPACES.get(self.pixel_space).check(self.images)
        if self.soft_label.mode == "stored" and self.soft_labels is None:
            raise ValueError("soft_label.mode 'stored' needs soft_labels")
        self.labels = self.labels.to(torch.long)

    def __len__(self) -> int:
        return int(self.labels.numel())

    def ipc_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels)

    def nbytes(self) -> dict[str, int]:
        """Storage of images and stored soft labels, shown in tables (soft-label budgets are never hidden)."""
        img = self.images.numel() * self.images.element_size()
        soft = 0 if self.soft_labels is None else self.soft_labels.numel() * self.soft_labels.element_size()
        return {"images": img, "soft_labels": soft}

    # -- persistence ------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path/`` atomically (images.pt + manifest.json with the tensor file's sha256)."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            tensors = {"images": self.images.cpu().contiguous(), "labels": self.labels.cpu()}
            if self.soft_labels is not None:
                tensors["soft_labels"] = self.soft_labels.cpu().contiguous()
            for name, value in self.pixel_state.items():
                tensors[PIXEL_PREFIX + name] = value.cpu().contiguous()
            torch.save(tensors, tmp / "images.pt")
            manifest = {
                "format_version": FORMAT_VERSION,
                "sha256": sha256_file(tmp / "images.pt"),
                "num_images": len(self),
                "shape": list(self.images.shape),
                "dtype": str(self.images.dtype).removeprefix("torch."),
                "pixel_space": self.pixel_space,
                "pixel_params": self.pixel_params,
                "pixel_state": sorted(self.pixel_state),
                "soft_label": asdict(self.soft_label),
                "hints": self.hints,
                "meta": self.meta,
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> DistilledSet:
        """Read and verify an artifact; raise :class:`CorruptArtifact` on any mismatch."""
        path = Path(path)
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CorruptArtifact(f"{path}: manifest unreadable ({exc})") from exc
        tensor_file = path / "images.pt"
        if not tensor_file.is_file() or sha256_file(tensor_file) != manifest.get("sha256"):
            raise CorruptArtifact(f"{path}: images.pt is missing or does not match its sha256; recompute it")
        try:
            tensors = torch.load(tensor_file, weights_only=True)
        except Exception as exc:
            raise CorruptArtifact(f"{path}: images.pt unreadable ({exc})") from exc
        if not isinstance(tensors, dict) or "images" not in tensors or "labels" not in tensors:
            raise CorruptArtifact(f"{path}: images.pt lacks images/labels; recompute it")
        if list(tensors["images"].shape) != manifest["shape"]:
            raise CorruptArtifact(f"{path}: images shape {list(tensors['images'].shape)} != manifest")
        state = {k.removeprefix(PIXEL_PREFIX): v for k, v in tensors.items() if k.startswith(PIXEL_PREFIX)}
        if sorted(state) != sorted(manifest.get("pixel_state", [])):
            raise CorruptArtifact(f"{path}: pixel-space state {sorted(state)} != manifest")
        soft = manifest.get("soft_label") or {}
        return cls(
            images=tensors["images"],
            labels=tensors["labels"],
            pixel_space=manifest["pixel_space"],
            soft_label=SoftLabelSpec(
                mode=soft.get("mode", "none"),
                teachers=tuple(soft.get("teachers", ())),
                temperature=soft.get("temperature"),
            ),
            soft_labels=tensors.get("soft_labels"),
            hints=manifest.get("hints", {}),
            meta=manifest.get("meta", {}),
            pixel_state=state,
            pixel_params=manifest.get("pixel_params", {}),
        )
