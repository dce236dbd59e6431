"""The distilled-set artifact: what every method returns and every protocol evaluates.

Saved as ``images.pt`` (tensors) plus ``manifest.json`` (everything else and the tensor file's sha256), written
atomically. Loading verifies the hash, so a truncated or tampered artifact is reported and recomputed, never
evaluated.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ddbench.io import atomic_dir, sha256_file

PixelSpace = Literal["uint8", "normalized", "zca"]
SoftLabelMode = Literal["none", "stored", "teacher", "ensemble"]
FORMAT_VERSION = 1


class CorruptArtifact(RuntimeError):
    """An artifact on disk does not match its manifest (hash, shapes) or cannot be read."""


@dataclass(frozen=True)
class SoftLabelSpec:
    """How students get labels beyond the hard ones.

    Attributes:
        mode: ``none`` (hard labels), ``stored`` (one fixed soft label per image in ``DistilledSet.soft_labels``),
            ``teacher`` (a teacher relabels every augmented batch online), ``ensemble`` (several teachers, averaged).
        teachers: teacher architectures used online (empty means the protocol's default teacher).
        temperature: the method's preferred temperature; the protocol's value wins when it sets one.
    """

    mode: SoftLabelMode = "none"
    teachers: tuple[str, ...] = ()
    temperature: float | None = None


@dataclass
class DistilledSet:
    """Images, labels and everything an evaluator is entitled to know about them.

    Attributes:
        images: ``[N, C, H, W]``; uint8 for ``pixel_space="uint8"``, float otherwise.
        labels: ``[N]`` int64 hard labels, always present.
        pixel_space: ``uint8`` RGB/gray pixels, ``normalized`` with the dataset mean/std, or ``zca`` whitened.
        soft_label: the soft-label spec; ``soft_labels`` holds the tensor when ``mode == "stored"``.
        soft_labels: ``[N, K]`` float logits or probabilities (stored mode only).
        hints: evaluation hints the method is entitled to (MTT's learned ``syn_lr``).
        meta: provenance, filled by the harness (method, version, config hash, teachers, timings, ...).
    """

    images: torch.Tensor
    labels: torch.Tensor
    pixel_space: PixelSpace = "uint8"
    soft_label: SoftLabelSpec = field(default_factory=SoftLabelSpec)
    soft_labels: torch.Tensor | None = None
    hints: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be [N,C,H,W], got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be [{self.images.shape[0]}], got {tuple(self.labels.shape)}")
        if self.pixel_space == "uint8" and self.images.dtype != torch.uint8:
            raise ValueError(f"pixel_space 'uint8' needs uint8 images, got {self.images.dtype}")
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
            torch.save(tensors, tmp / "images.pt")
            manifest = {
                "format_version": FORMAT_VERSION,
                "sha256": sha256_file(tmp / "images.pt"),
                "num_images": len(self),
                "shape": list(self.images.shape),
                "dtype": str(self.images.dtype).removeprefix("torch."),
                "pixel_space": self.pixel_space,
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
        if list(tensors["images"].shape) != manifest["shape"]:
            raise CorruptArtifact(f"{path}: images shape {list(tensors['images'].shape)} != manifest")
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
        )
