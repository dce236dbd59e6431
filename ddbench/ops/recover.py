"""Building blocks of pixel-space "recover" loops: valid-range clipping, cosine lr, and saving quantization.

Shared by SRe2L, DWA and EDC (spec ``sre2l-dwa.md`` §3.6–3.7, ``edc.md`` §2.7). Images are optimized in
*normalized* space ``(x − m) / s``; these helpers keep them inside the image of the pixel range [0, 1], schedule
the learning rate, and turn the last iterate into the uint8 artifact that evaluation reads.

Evaluation always happens from the quantized artifact, never from the float tensor, so every method goes through
the same quantization (§3.7). ``save_format`` records how:

* ``jpeg_q75``: truncate to uint8, then encode and decode with PIL's JPEG writer using its default options (quality 75,
  4:2:0 chroma subsampling, standard tables), which is what the official SRe2L/DWA scripts save. JPEG visibly degrades
  32×32 images; this is the faithful artifact.
* ``png`` / ``uint8``: lossless; the truncated uint8 pixels themselves (a PNG file would decode to exactly these).
* ``uint8_round``: lossless, rounded to the nearest level instead of truncated (EDC, spec ``edc.md`` §9.2 item 13:
  truncation darkens every pixel by half a level on average).
"""

from __future__ import annotations

import io
import math
from typing import Literal

import numpy as np
import torch

SaveFormat = Literal["jpeg_q75", "png", "uint8", "uint8_round"]
SAVE_FORMATS: tuple[str, ...] = ("jpeg_q75", "png", "uint8", "uint8_round")


def _as_4d(t: torch.Tensor | tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(t, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def valid_range(
    mean: torch.Tensor | tuple[float, ...], std: torch.Tensor | tuple[float, ...], like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel bounds ``[−m_c/s_c, (1 − m_c)/s_c]`` as ``[1, C, 1, 1]`` tensors on ``like``'s device/dtype."""
    m, s = _as_4d(mean, like), _as_4d(std, like)
    return -m / s, (1 - m) / s


@torch.no_grad()
def clip_to_valid_(
    x: torch.Tensor, mean: torch.Tensor | tuple[float, ...], std: torch.Tensor | tuple[float, ...]
) -> torch.Tensor:
    """Clamp normalized images in place so every channel is a valid [0, 1] pixel after denormalizing (§3.7)."""
    lo, hi = valid_range(mean, std, x)
    return x.copy_(torch.maximum(torch.minimum(x, hi), lo))


def cosine_lr(lr0: float, t: int, total: int) -> float:
    """η_t = η₀ · ½ · (1 + cos(π t / T)) for t in 0…T−1, no warmup (§3.6); η_{T−1} stays above 0."""
    return lr0 * 0.5 * (1.0 + math.cos(math.pi * t / total))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every param group's learning rate (the schedule is applied before each step)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def quantize(
    x: torch.Tensor,
    mean: torch.Tensor | tuple[float, ...],
    std: torch.Tensor | tuple[float, ...],
    *,
    rounding: Literal["truncate", "round"] = "truncate",
) -> torch.Tensor:
    """Normalized float images → uint8: denormalize, clamp to [0, 1], ×255 and **truncate** (as upstream saves), or
    round to the nearest level (``rounding="round"``, EDC's ddbench default)."""
    m, s = _as_4d(mean, x), _as_4d(std, x)
    pixels = (x.detach() * s + m).clamp_(0.0, 1.0).mul_(255.0)
    if rounding == "round":
        pixels = pixels.round_()
    return pixels.to(torch.uint8).cpu()  # float→uint8 conversion truncates toward zero


def jpeg_roundtrip(images: torch.Tensor) -> torch.Tensor:
    """Encode each uint8 ``[N, C, H, W]`` image with PIL's default JPEG options and decode it back.

    PIL's defaults are quality 75 with 4:2:0 chroma subsampling for RGB; grayscale images are saved as mode ``L``.
    """
    from PIL import Image

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"jpeg_roundtrip needs uint8 [N, 1|3, H, W], got {images.dtype} {tuple(images.shape)}")
    out = []
    for img in images.cpu():
        arr = img.permute(1, 2, 0).numpy()
        pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG")
        buf.seek(0)
        decoded = np.asarray(Image.open(buf).convert(pil.mode))
        out.append(torch.from_numpy(decoded.reshape(*decoded.shape[:2], -1).copy()).permute(2, 0, 1))
    return torch.stack(out)


def to_artifact(
    x: torch.Tensor,
    mean: torch.Tensor | tuple[float, ...],
    std: torch.Tensor | tuple[float, ...],
    save_format: SaveFormat = "jpeg_q75",
) -> torch.Tensor:
    """The uint8 pixels evaluation will see: :func:`quantize`, then the JPEG round trip under ``jpeg_q75``."""
    if save_format not in SAVE_FORMATS:
        raise ValueError(f"save_format {save_format!r} is not one of {', '.join(SAVE_FORMATS)}")
    pixels = quantize(x, mean, std, rounding="round" if save_format == "uint8_round" else "truncate")
    return jpeg_roundtrip(pixels) if save_format == "jpeg_q75" else pixels
