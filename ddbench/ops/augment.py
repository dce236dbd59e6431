"""Batched tensor augmentation: one call augments a whole batch on its own device, no per-image PIL.

Why tensors and not torchvision transforms: the SRe2L/DWA recover loop needs augmentations that are
differentiable w.r.t. the pixels, and the student trainer needs the teacher and every student to see the *same*
augmented batch (online KD), which is easiest when the batch is augmented once, as one tensor.

Conventions shared by every function here:

* ``x`` is ``[B, C, H, W]`` float, on any device. Random parameters are drawn on the CPU from the explicit
  ``generator`` (so a stream depends only on the generator's seed, never on the device or the global RNG) and then
  moved to ``x``'s device.
* Geometric operations (crops, flips, rolls, DSA scale/rotate) are differentiable w.r.t. ``x``; the random
  parameters themselves are not.
* ``same_on_batch=True`` draws one parameter set for the whole batch. That is what SRe2L does when it calls
  torchvision's ``RandomResizedCrop``/``RandomHorizontalFlip`` on a batch tensor ("one crop box and one flip per
  iteration", spec sre2l-dwa §3.3); per-sample parameters (``False``) are what a DataLoader gives a student.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DSAParams",
    "Mixed",
    "cutmix",
    "dsa",
    "mix_targets",
    "mixup",
    "random_crop_pad",
    "random_flip",
    "random_resized_crop",
    "random_roll",
    "resized_crop",
    "rrc_boxes",
]


# -- parameter helpers ----------------------------------------------------------------------------------------------
def _rand(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64)


def _randint(low: int, high: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """Integers in ``[low, high]`` inclusive (note: inclusive, unlike ``torch.randint``)."""
    return torch.randint(low, high + 1, (n,), generator=generator)


def _beta(alpha: float, generator: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha) from ``generator``.

    torch.distributions cannot take a generator, so a numpy Generator is seeded from ``generator``: the draw stays
    a pure function of the torch stream (and consumes exactly one value of it).
    """
    if alpha <= 0:
        raise ValueError(f"mix alpha must be > 0, got {alpha}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _check_generator(generator: torch.Generator | None) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError("augmentations take an explicit torch.Generator (generator=...)")
    if generator.device.type != "cpu":
        raise ValueError("draw augmentation parameters from a CPU torch.Generator; they are applied on x's device")
    return generator


# -- random resized crop --------------------------------------------------------------------------------------------
def rrc_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    generator: torch.Generator,
    attempts: int = 10,
) -> torch.Tensor:
    """``n`` integer crop boxes ``[n, 4]`` as (top, left, h, w), drawn like torchvision's RandomResizedCrop.

    Torchvision's rule, vectorised: up to ``attempts`` candidates per box with area fraction ~ U(scale) and
    log-aspect ~ U(log ratio), rounded to integers; the first candidate that fits is taken, with a uniform position.
    If none fits, the fallback is the largest centred box whose aspect ratio is clamped to ``ratio``. All
    ``attempts`` candidates are always drawn, so the number of values consumed does not depend on the outcome.
    """
    generator = _check_generator(generator)
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * _rand(n * attempts, generator)).view(n, attempts)
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * _rand(n * attempts, generator)).view(n, attempts)
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.argmax(ok.int(), dim=1)  # index of the first fitting candidate (0 if none fits)
    has = ok.any(dim=1)
    h = h.gather(1, first[:, None]).squeeze(1)
    w = w.gather(1, first[:, None]).squeeze(1)
    # fallback: centre crop with the aspect ratio clamped into ``ratio`` (torchvision's rule)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fh, fw = height, round(height * max(ratio))
    else:
        fw, fh = width, height
    h = torch.where(has, h, torch.full_like(h, fh))
    w = torch.where(has, w, torch.full_like(w, fw))
    u_top, u_left = _rand(n, generator), _rand(n, generator)
    top = torch.where(has, torch.floor(u_top * (height - h + 1)).long(), (height - h) // 2)
    left = torch.where(has, torch.floor(u_left * (width - w + 1)).long(), (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Crop each image to its box and resize it to ``size`` with bilinear interpolation, differentiably.

    The sampling grid is exactly that of ``F.interpolate(crop, size, mode="bilinear", align_corners=False)``
    applied to the cropped image (torchvision's tensor ``resized_crop`` without antialiasing, which only matters
    when a box is shrunk): sample positions are clamped into the box, so no pixel outside the box contributes.
    One ``grid_sample`` call serves per-sample boxes and a shared box alike.

    Args:
        x: ``[B, C, H, W]`` float.
        boxes: ``[B, 4]`` or ``[1, 4]`` (shared) integer (top, left, h, w).
        size: output side, or (height, width).
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    b, _, height, width = x.shape
    # coordinates in at least float32 (a bf16 grid would be off by pixels at 224 px), cast for grid_sample at the end
    boxes = boxes.to(device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    top, left, h, w = (boxes[:, k : k + 1] for k in range(4))

    def axis(start: torch.Tensor, extent: torch.Tensor, n_out: int, n_in: int) -> torch.Tensor:
        k = torch.arange(n_out, device=x.device, dtype=boxes.dtype)[None, :] + 0.5
        src = start + (k * extent / n_out - 0.5).clamp(min=0)  # interpolate's source index, ≥ 0 like PyTorch
        src = torch.minimum(src, start + extent - 1)
        return (2 * src + 1) / n_in - 1  # pixel index → grid_sample coordinate (align_corners=False)

    gx = axis(left, w, out_w, width)  # [B or 1, out_w]
    gy = axis(top, h, out_h, height)  # [B or 1, out_h]
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    grid = grid.expand(b, out_h, out_w, 2).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(
    x: torch.Tensor,
    size: int | tuple[int, int],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    generator: torch.Generator,
    same_on_batch: bool,
) -> torch.Tensor:
    """torchvision-style RandomResizedCrop of a batch (bilinear), per sample or one box for the whole batch.

    ``same_on_batch=True`` is SRe2L's recover augmentation: one box per call, shared by every image. Students
    trained from a DataLoader see per-sample boxes (``False``).
    """
    n = 1 if same_on_batch else x.shape[0]
    boxes = rrc_boxes(n, x.shape[-2], x.shape[-1], scale, ratio, generator=generator)
    return resized_crop(x, boxes, size)


# -- flips, rolls, padded crops -------------------------------------------------------------------------------------
def random_flip(x: torch.Tensor, *, generator: torch.Generator, same_on_batch: bool, p: float = 0.5) -> torch.Tensor:
    """Horizontal flip with probability ``p``, per sample or one decision for the batch."""
    generator = _check_generator(generator)
    n = 1 if same_on_batch else x.shape[0]
    flip = (_rand(n, generator) < p).to(x.device).view(-1, *([1] * (x.ndim - 1)))
    return torch.where(flip, x.flip(-1), x)


def random_roll(
    x: torch.Tensor, max_shift: int, *, generator: torch.Generator, symmetric: bool = False
) -> torch.Tensor:
    """Circular shift of the whole batch by integers (dy, dx), as SRe2L's jitter (no padding, wrap-around).

    Shifts are drawn from {0, …, J} (SRe2L ImageNet/CIFAR, DWA), or {−J, …, J} when ``symmetric`` (SRe2L Tiny).
    One shift for the batch: dy first, then dx.
    """
    generator = _check_generator(generator)
    low = -max_shift if symmetric else 0
    dy, dx = (int(v) for v in _randint(low, max_shift, 2, generator))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def _crop_at(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Per-sample ``size``×``size`` crops at integer offsets (one gather, differentiable)."""
    b = x.shape[0]
    ar = torch.arange(size, device=x.device)
    rows = (top.to(x.device)[:, None] + ar)[:, :, None]  # [B, S, 1]
    cols = (left.to(x.device)[:, None] + ar)[:, None, :]  # [B, 1, S]
    bidx = torch.arange(b, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[bidx, rows, cols].permute(0, 3, 1, 2)  # [B,S,S,C] → [B,C,S,S]


def random_crop_pad(x: torch.Tensor, size: int, padding: int, *, generator: torch.Generator) -> torch.Tensor:
    """CIFAR's RandomCrop(size, padding): zero-pad by ``padding`` and take a per-sample random ``size`` crop."""
    generator = _check_generator(generator)
    b, _, height, width = x.shape
    xp = F.pad(x, (padding, padding, padding, padding)) if padding else x
    top = _randint(0, height + 2 * padding - size, b, generator)
    left = _randint(0, width + 2 * padding - size, b, generator)
    return _crop_at(xp, top, left, size)


# -- mixing ---------------------------------------------------------------------------------------------------------
class Mixed(NamedTuple):
    """A mixed batch: ``x = lam·x + (1−lam)·x[perm]`` (mixup) or ``x[perm]`` pasted into ``box`` (cutmix).

    ``lam`` is the weight of the *original* sample, so hard-label losses mix as
    ``lam·CE(y) + (1−lam)·CE(y[perm])`` and soft targets as :func:`mix_targets`. ``y`` is the mixed version of
    the targets passed in (None if none were). ``box`` is (y1, y2, x1, x2) for cutmix, None for mixup.
    """

    x: torch.Tensor
    perm: torch.Tensor
    lam: float
    y: torch.Tensor | None = None
    box: tuple[int, int, int, int] | None = None


def mix_targets(y: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """Soft targets (probabilities or logits, ``[B, K]``) mixed with the batch's pairing and weight."""
    return lam * y + (1.0 - lam) * y[perm.to(y.device)]


def _pairing(n: int, pairing: str, generator: torch.Generator) -> torch.Tensor:
    if pairing == "perm":
        return torch.randperm(n, generator=generator)
    if pairing == "roll":  # torchvision reference: each image pairs with its predecessor (batch rolled by one)
        return torch.roll(torch.arange(n), 1)
    raise ValueError(f"pairing must be 'perm' or 'roll', got {pairing!r}")


def mixup(
    x: torch.Tensor,
    y: torch.Tensor | None,
    alpha: float,
    *,
    generator: torch.Generator,
    pairing: Literal["perm", "roll"] = "perm",
) -> Mixed:
    """Mixup: λ ~ Beta(α, α), one λ and one pairing for the batch (DWA CIFAR eval: α = 0.8, random permutation)."""
    generator = _check_generator(generator)
    lam = _beta(alpha, generator)
    perm = _pairing(x.shape[0], pairing, generator)
    p = perm.to(x.device)
    out = lam * x + (1.0 - lam) * x[p]
    return Mixed(out, perm, lam, None if y is None else mix_targets(y, perm, lam))


def cutmix(
    x: torch.Tensor,
    alpha: float,
    *,
    generator: torch.Generator,
    pairing: Literal["perm", "roll"] = "perm",
    y: torch.Tensor | None = None,
) -> Mixed:
    """CutMix with one box for the batch; λ is recomputed from the box area after clipping to the image.

    λ ~ Beta(α, α); the box has sides ``int(H·√(1−λ))`` × ``int(W·√(1−λ))`` around a uniform centre
    (CutMix paper / CDA / DWA ImageNet), clipped to the image, and λ becomes the kept-area fraction.
    ``pairing="roll"`` is the torchvision-reference pairing DWA's Tiny eval uses.
    """
    generator = _check_generator(generator)
    b, _, height, width = x.shape
    lam0 = _beta(alpha, generator)
    perm = _pairing(b, pairing, generator)
    cut = math.sqrt(1.0 - lam0)
    ch, cw = int(height * cut), int(width * cut)
    cy, cx = (
        int(v) for v in torch.stack([_randint(0, height - 1, 1, generator), _randint(0, width - 1, 1, generator)])
    )
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, height)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, width)
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (height * width)
    mask = torch.zeros(1, 1, height, width, dtype=torch.bool, device=x.device)
    mask[..., y1:y2, x1:x2] = True
    out = torch.where(mask, x[perm.to(x.device)], x)
    return Mixed(out, perm, lam, None if y is None else mix_targets(y, perm, lam), (y1, y2, x1, x2))


# -- DSA (differentiable siamese augmentation, MTT's evaluation and expert augmentation) ------------------------------
@dataclass(frozen=True)
class DSAParams:
    """DSA parameters; the defaults are those MTT uses (spec mtt §3).

    Attributes:
        brightness: brightness shift x += (u − ½)·brightness.
        saturation: saturation factor 2u·saturation/2 = u·saturation around the per-pixel channel mean.
        contrast: contrast factor u + contrast around the image mean.
        crop_ratio: translation range ±int(ratio·size + ½) pixels, zero fill (4 px at 32).
        cutout_ratio: zeroed square of side int(ratio·size + ½) (16 px at 32).
        scale_ratio: per-axis scale factors ~ U(1/ratio, ratio).
        rotate_deg: angle ~ U(−deg, deg).
        flip_p: horizontal flip probability.
        single: MTT's mode 'S': one family per call, chosen uniformly; False applies every family in order ('M').
    """

    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    crop_ratio: float = 0.125
    cutout_ratio: float = 0.5
    scale_ratio: float = 1.2
    rotate_deg: float = 15.0
    flip_p: float = 0.5
    single: bool = True


DSA_FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")


def _per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _dsa_color(x: torch.Tensor, g: torch.Generator, p: DSAParams) -> torch.Tensor:
    b = x.shape[0]
    x = x + _per_sample(_rand(b, g) - 0.5, x) * p.brightness
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * _per_sample(_rand(b, g) * p.saturation, x) + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * _per_sample(_rand(b, g) + p.contrast, x) + m


def _dsa_crop(x: torch.Tensor, g: torch.Generator, p: DSAParams) -> torch.Tensor:
    # a translation by ±s with zero fill is a padded crop back to the input size (square inputs, as in MTT)
    shift = int(x.shape[-1] * p.crop_ratio + 0.5)
    return random_crop_pad(x, x.shape[-1], shift, generator=g) if shift else x


def _dsa_cutout(x: torch.Tensor, g: torch.Generator, p: DSAParams) -> torch.Tensor:
    b, _, height, width = x.shape
    side_h, side_w = int(height * p.cutout_ratio + 0.5), int(width * p.cutout_ratio + 0.5)
    cy = _randint(0, height - side_h % 2, b, g).to(x.device)  # centre in {0..H} for an even side (MTT)
    cx = _randint(0, width - side_w % 2, b, g).to(x.device)
    rows = torch.arange(height, device=x.device)[None, :] - (cy[:, None] - side_h // 2)
    cols = torch.arange(width, device=x.device)[None, :] - (cx[:, None] - side_w // 2)
    inside = ((rows >= 0) & (rows < side_h))[:, :, None] & ((cols >= 0) & (cols < side_w))[:, None, :]
    return x * (~inside).to(x.dtype)[:, None]


def _dsa_flip(x: torch.Tensor, g: torch.Generator, p: DSAParams) -> torch.Tensor:
    return random_flip(x, generator=g, same_on_batch=False, p=p.flip_p)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _dsa_scale(x: torch.Tensor, g: torch.Generator, p: DSAParams) -> torch.Tensor:
    b = x.shape[0]
    lo = 1.0 / p.scale_ratio
    sx = _rand(b, g) * (p.scale_ratio - lo) + lo
    sy = _rand(b, g) * (p.scale_ratio - lo) + lo
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    return _affine(x, theta)


def _dsa_rotate(x: torch.Tensor, g: torch.Generator, p: DSAParams) -> torch.Tensor:
    b = x.shape[0]
    angle = (_rand(b, g) - 0.5) * 2 * math.radians(p.rotate_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, sin, torch.zeros_like(cos)], 1), torch.stack([-sin, cos, torch.zeros_like(cos)], 1)], 1
    )
    return _affine(x, theta)


_DSA_FNS = {
    "color": _dsa_color,
    "crop": _dsa_crop,
    "cutout": _dsa_cutout,
    "flip": _dsa_flip,
    "scale": _dsa_scale,
    "rotate": _dsa_rotate,
}


def dsa(
    x: torch.Tensor,
    strategy: str = "color_crop_cutout_flip_scale_rotate",
    *,
    generator: torch.Generator,
    param: DSAParams | None = None,
) -> torch.Tensor:
    """Differentiable siamese augmentation with MTT's semantics (spec mtt §3).

    In single mode (MTT's 'S', the default) one family of ``strategy`` (underscore-separated names from
    ``color, crop, cutout, flip, scale, rotate``) is chosen uniformly per call for the whole batch, and its
    parameters are drawn independently per sample. Gradients flow to the pixels only.
    """
    generator = _check_generator(generator)
    param = param or DSAParams()
    families = [f for f in strategy.split("_") if f]
    unknown = [f for f in families if f not in _DSA_FNS]
    if unknown or not families:
        raise ValueError(f"DSA strategy {strategy!r}: unknown families {unknown}; known: {', '.join(DSA_FAMILIES)}")
    if param.single:
        families = [families[int(torch.randint(0, len(families), (1,), generator=generator))]]
    for family in families:
        x = _DSA_FNS[family](x, generator, param)
    return x


# -- RDED patch shuffle and per-sample RandAugment (EDC / RDED evaluation, spec edc.md §5, §8.1) ---------------------
def _strip_bounds(side: int, factor: int) -> torch.Tensor:
    """Start offsets of ``factor`` strips of a ``side``-px axis, the last strip taking the remainder."""
    base = side // factor
    return torch.tensor([i * base for i in range(factor)] + [side])


def _permuted_axis(side: int, factor: int, perms: torch.Tensor) -> torch.Tensor:
    """Per-sample source index of every output position when the axis' strips are concatenated in ``perms`` order."""
    bounds = _strip_bounds(side, factor)
    sizes = bounds[1:] - bounds[:-1]  # [f]
    new_sizes = sizes[perms]  # [B, f]
    new_ends = new_sizes.cumsum(1)  # [B, f]
    pos = torch.arange(side)
    strip = torch.searchsorted(new_ends, pos.expand(perms.shape[0], side).contiguous(), right=True)  # [B, side]
    offset = pos - (new_ends.gather(1, strip) - new_sizes.gather(1, strip))
    return bounds[perms.gather(1, strip)] + offset


def patch_shuffle(x: torch.Tensor, factor: int, *, generator: torch.Generator) -> torch.Tensor:
    """RDED's ShufflePatches, per sample: permute the ``factor`` column strips, then the ``factor`` row strips.

    A mosaic of factor×factor patches therefore gets its columns of tiles and its rows of tiles reordered (not an
    arbitrary permutation of tiles), independently per image, as RDED's per-image transform does. When the side is
    not divisible by ``factor`` the last strip keeps the remainder (RDED drops the remainder pixels; spec §8.1 notes
    the shuffle only for divisible sizes). ``factor = 1`` is the identity, and so is EDC's patch shuffle (a no-op in
    [C], spec §9.2 item 1). Column permutations are drawn first, then row permutations.
    """
    generator = _check_generator(generator)
    if factor < 1:
        raise ValueError(f"patch_shuffle factor must be >= 1, got {factor}")
    if factor == 1:
        return x
    b, _, height, width = x.shape
    col_perm = torch.argsort(torch.rand(b, factor, generator=generator), dim=1)
    row_perm = torch.argsort(torch.rand(b, factor, generator=generator), dim=1)
    cols = _permuted_axis(width, factor, col_perm).to(x.device)  # [B, W]
    rows = _permuted_axis(height, factor, row_perm).to(x.device)  # [B, H]
    x = x.gather(3, cols[:, None, None, :].expand(-1, x.shape[1], height, -1))
    return x.gather(2, rows[:, None, :, None].expand(-1, x.shape[1], -1, width))


def rand_augment(
    x: torch.Tensor, *, generator: torch.Generator, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31
) -> torch.Tensor:
    """torchvision's RandAugment applied per sample, with every draw taken from ``generator``.

    EDC's CIFAR, Tiny and ImageNet-10 evaluations apply ``transforms.RandAugment()`` (2 ops, magnitude 9 of 31,
    nearest interpolation, black fill) to each image before the crop (spec §5). torchvision's batched call would
    give one op sequence to the whole batch and reads the global RNG, so each image here gets its own call of
    torchvision's ``v2.RandAugment`` under a forked CPU RNG seeded from ``generator`` (one draw per image). The op
    table and magnitudes are torchvision's own. ``x`` is uint8 or float in [0, 1] (the pixel range, before
    normalisation), ``[B, C, H, W]``; not differentiable (student-side augmentation).
    """
    from torchvision.transforms import v2

    generator = _check_generator(generator)
    op = v2.RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_magnitude_bins)
    seeds = torch.randint(0, 2**62, (x.shape[0],), generator=generator).tolist()
    out = torch.empty_like(x)
    with torch.random.fork_rng(devices=[]):
        for i, seed in enumerate(seeds):
            torch.manual_seed(seed)
            out[i] = op(x[i])
    return out


__all__ += ["patch_shuffle", "rand_augment"]
# -- IDC / Minimax ImageNet-subset colour augmentation (spec minimax.md §5) -------------------------------------------
#: AlexNet's PCA of ImageNet RGB pixels (eigenvalues, and eigenvectors as columns), used by IDC's lighting noise.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
#: Luma weights of IDC's grayscale (ITU-R 601).
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def apply_color_jitter(x: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """IDC's ColorJitter with given per-sample blend weights ``alphas`` ``[B, 3]`` (brightness, contrast, saturation).

    Each op blends the image towards a target, ``x + α (target − x)`` (``torch.lerp``): brightness towards black,
    contrast towards the image's mean gray level, saturation towards its per-pixel gray image (0.299 R + 0.587 G +
    0.114 B). With α ~ U(−v, v) the factor on ``x`` is 1 − α ∈ [1 − v, 1 + v]. No clamping, as in IDC. The three ops
    commute (each maps x to a combination of x, gray(x) and mean gray(x), and gray of a gray image is itself), so
    IDC's random order per image changes nothing but rounding; they are applied in one fixed order.
    """
    if x.shape[1] != 3:
        raise ValueError(f"colour jitter needs RGB images, got {x.shape[1]} channels")
    a = alphas.to(device=x.device, dtype=x.dtype)
    a_b, a_c, a_s = (a[:, k].view(-1, 1, 1, 1) for k in range(3))
    x = torch.lerp(x, torch.zeros_like(x), a_b)
    x = torch.lerp(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x), a_c)
    return torch.lerp(x, _gray(x).expand_as(x), a_s)


def color_jitter(
    x: torch.Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    *,
    generator: torch.Generator,
) -> torch.Tensor:
    """IDC's ColorJitter(0.4, 0.4, 0.4) on a batch of [0, 1] RGB images, per-sample weights.

    Draws α_brightness, α_contrast, α_saturation ~ U(−v, v) for each sample (that order, all of the first, then the
    second, then the third), then :func:`apply_color_jitter`. A strength of 0 gives weight 0, the identity.
    """
    generator = _check_generator(generator)
    b = x.shape[0]
    strength = torch.tensor([brightness, contrast, saturation], dtype=torch.float64)
    alphas = torch.stack([(2 * _rand(b, generator) - 1) for _ in range(3)], dim=1) * strength
    return apply_color_jitter(x, alphas)


def lighting_shift(alpha: torch.Tensor, eigval=IMAGENET_PCA_EIGVAL, eigvec=IMAGENET_PCA_EIGVEC) -> torch.Tensor:
    """Per-sample RGB offsets ``[B, 3]`` of AlexNet's PCA lighting: Σ_j eigvec[:, j] · α_j · eigval_j."""
    val = torch.as_tensor(eigval, dtype=alpha.dtype, device=alpha.device)
    vec = torch.as_tensor(eigvec, dtype=alpha.dtype, device=alpha.device)
    return (alpha * val) @ vec.T


def pca_lighting(
    x: torch.Tensor,
    alphastd: float = 0.1,
    *,
    generator: torch.Generator,
    eigval: tuple[float, ...] = IMAGENET_PCA_EIGVAL,
    eigvec: tuple[tuple[float, ...], ...] = IMAGENET_PCA_EIGVEC,
) -> torch.Tensor:
    """AlexNet-style PCA lighting noise (IDC's ``Lighting``): add one RGB offset per image, α ~ N(0, alphastd²).

    Applied to [0, 1] images before normalization, unclamped. α is drawn ``[B, 3]`` row by row from ``generator``.
    """
    generator = _check_generator(generator)
    if alphastd == 0:
        return x
    alpha = torch.randn(x.shape[0], 3, generator=generator, dtype=torch.float64) * alphastd
    shift = lighting_shift(alpha, eigval, eigvec).to(device=x.device, dtype=x.dtype)
    return x + shift.view(-1, 3, 1, 1)
