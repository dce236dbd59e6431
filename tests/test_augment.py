"""Batched tensor augmentation: hand-checked cases, invariants, determinism and gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ddbench.ops import augment as A


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def distinct_batch(b: int = 6, c: int = 3, s: int = 16) -> torch.Tensor:
    """Images whose pixels are all different, so any geometric change is visible."""
    return torch.arange(b * c * s * s, dtype=torch.float32).view(b, c, s, s) / (b * c * s * s)


# -- random resized crop ----------------------------------------------------------------------------------------------
def test_rrc_equals_crop_then_interpolate_for_its_box():
    x = torch.randn(3, 3, 20, 24, dtype=torch.float64)
    for seed in range(20):
        boxes = A.rrc_boxes(1, 20, 24, generator=gen(seed))
        top, left, h, w = boxes[0].tolist()
        crop = x[..., top : top + h, left : left + w]
        for size in (20, 7, (12, 30)):
            ref = F.interpolate(crop, size=size, mode="bilinear", align_corners=False)
            torch.testing.assert_close(A.resized_crop(x, boxes, size), ref, atol=1e-9, rtol=0)


def test_rrc_boxes_follow_torchvision_bounds():
    boxes = A.rrc_boxes(2000, 32, 32, scale=(0.08, 1.0), generator=gen(1))
    top, left, h, w = boxes.unbind(1)
    assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 32).all() and (left + w <= 32).all()
    area = (h * w).float() / 1024
    assert area.min() >= 0.05 and area.max() <= 1.0  # rounding can push slightly below 0.08
    aspect = w.float() / h.float()
    assert aspect.min() > 0.5 and aspect.max() < 2.0


def test_rrc_full_box_is_identity():
    x = torch.randn(2, 3, 16, 16)
    out = A.random_resized_crop(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=gen(), same_on_batch=False)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_rrc_same_on_batch_shares_the_box():
    # identical images in the batch → identical outputs iff the box is shared
    x = torch.randn(1, 3, 16, 16).expand(8, -1, -1, -1).contiguous()
    shared = A.random_resized_crop(x, 16, generator=gen(2), same_on_batch=True)
    assert all(torch.equal(shared[0], shared[i]) for i in range(8))
    per_sample = A.random_resized_crop(x, 16, generator=gen(2), same_on_batch=False)
    assert not all(torch.equal(per_sample[0], per_sample[i]) for i in range(8))


def test_rrc_deterministic_and_differentiable():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    a = A.random_resized_crop(x, 8, generator=gen(5), same_on_batch=False)
    b = A.random_resized_crop(x, 8, generator=gen(5), same_on_batch=False)
    assert torch.equal(a, b) and a.shape == (4, 3, 8, 8)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_rrc_gradcheck_float64():
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[1, 0, 4, 5], [0, 2, 6, 3]])
    assert torch.autograd.gradcheck(lambda t: A.resized_crop(t, boxes, 5), (x,))


def test_generator_is_required():
    with pytest.raises(TypeError):
        A.random_flip(torch.zeros(1, 1, 2, 2), generator=None, same_on_batch=True)  # type: ignore[arg-type]


# -- flip -----------------------------------------------------------------------------------------------------------
def test_flip_per_sample_and_shared():
    x = distinct_batch(64)
    out = A.random_flip(x, generator=gen(3), same_on_batch=False)
    flipped = torch.tensor([torch.equal(out[i], x[i].flip(-1)) for i in range(64)])
    kept = torch.tensor([torch.equal(out[i], x[i]) for i in range(64)])
    assert (flipped ^ kept).all() and 10 < flipped.sum() < 54
    for seed in range(6):
        out = A.random_flip(x, generator=gen(seed), same_on_batch=True)
        assert torch.equal(out, x) or torch.equal(out, x.flip(-1))


def test_flip_gradient():
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    w = torch.randn(4, 3, 5, 5)
    (A.random_flip(x, generator=gen(), same_on_batch=False, p=1.0) * w).sum().backward()
    torch.testing.assert_close(x.grad, w.flip(-1))


# -- roll -----------------------------------------------------------------------------------------------------------
def test_roll_hand_checked_4x4():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    expected = torch.tensor([[14, 15, 12, 13], [2, 3, 0, 1], [6, 7, 4, 5], [10, 11, 8, 9]], dtype=torch.float32)
    assert torch.equal(torch.roll(x, shifts=(1, 2), dims=(-2, -1))[0, 0], expected)
    # find a seed that draws (1, 2) and check random_roll reproduces torch.roll exactly
    for seed in range(500):
        dy, dx = torch.randint(0, 5, (2,), generator=gen(seed)).tolist()
        if (dy, dx) == (1, 2):
            assert torch.equal(A.random_roll(x, 4, generator=gen(seed))[0, 0], expected)
            return
    pytest.fail("no seed drew (1, 2)")


@pytest.mark.parametrize("symmetric", [False, True])
def test_roll_shift_range(symmetric):
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, 10, 10] = 1  # a single marked pixel reveals the shift
    seen = set()
    for seed in range(300):
        out = A.random_roll(x, 4, generator=gen(seed), symmetric=symmetric)
        r, c = (int(v) for v in torch.nonzero(out[0, 0])[0])
        seen.add((r - 10, c - 10))
    lo = -4 if symmetric else 0
    assert {d for pair in seen for d in pair} == set(range(lo, 5))  # every value in range, nothing outside


def test_roll_one_shift_for_batch_and_gradient():
    x = distinct_batch(5).requires_grad_()
    out = A.random_roll(x, 4, generator=gen(7))
    shifts = set()
    for i in range(5):
        hits = [
            (dy, dx) for dy in range(5) for dx in range(5) if torch.equal(out[i], torch.roll(x[i], (dy, dx), (-2, -1)))
        ]
        shifts.add(tuple(hits))
    assert len(shifts) == 1
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


# -- padded crop ----------------------------------------------------------------------------------------------------
def test_crop_pad_windows_of_padded_image():
    x = distinct_batch(16, s=8)
    out = A.random_crop_pad(x, 8, 2, generator=gen(4))
    xp = F.pad(x, (2, 2, 2, 2))
    offsets = []
    for i in range(16):
        hit = [(t, c) for t in range(5) for c in range(5) if torch.equal(out[i], xp[i, :, t : t + 8, c : c + 8])]
        assert len(hit) == 1
        offsets.append(hit[0])
    assert len(set(offsets)) > 3  # per-sample offsets


# -- mixing ---------------------------------------------------------------------------------------------------------
def test_mixup_convex_combination():
    x = torch.randn(8, 3, 4, 4)
    y = torch.softmax(torch.randn(8, 5), 1)
    m = A.mixup(x, y, 0.8, generator=gen(1))
    assert 0 <= m.lam <= 1 and sorted(m.perm.tolist()) == list(range(8))
    torch.testing.assert_close(m.x, m.lam * x + (1 - m.lam) * x[m.perm])
    torch.testing.assert_close(m.y.sum(1), torch.ones(8))
    assert m.x.min() >= torch.minimum(x, x[m.perm]).min() - 1e-6


def test_mixup_lambda_distribution_mean():
    lams = [A.mixup(torch.zeros(2, 1, 1, 1), None, 0.8, generator=gen(s)).lam for s in range(400)]
    assert abs(sum(lams) / len(lams) - 0.5) < 0.05  # Beta(a, a) has mean 1/2


@pytest.mark.parametrize("pairing", ["perm", "roll"])
def test_cutmix_lambda_is_kept_area(pairing):
    for seed in range(30):
        x = torch.zeros(6, 1, 12, 10)
        x += torch.arange(6.0).view(6, 1, 1, 1)  # image i is constant i
        m = A.cutmix(x, 1.0, generator=gen(seed), pairing=pairing)
        kept = (m.x == x).float().mean(dim=(1, 2, 3))
        same_pair = m.perm == torch.arange(6)
        expected = torch.where(same_pair, torch.ones(6), torch.full((6,), m.lam))
        torch.testing.assert_close(kept, expected)
        y1, y2, x1, x2 = m.box
        assert m.lam == pytest.approx(1 - (y2 - y1) * (x2 - x1) / 120)
    if pairing == "roll":
        assert m.perm.tolist() == [5, 0, 1, 2, 3, 4]


def test_mix_targets_soft():
    y = torch.eye(3)
    out = A.mix_targets(y, torch.tensor([1, 2, 0]), 0.25)
    torch.testing.assert_close(out[0], torch.tensor([0.25, 0.75, 0.0]))


def test_mixing_is_deterministic():
    x = torch.randn(5, 3, 8, 8)
    a, b = A.cutmix(x, 1.0, generator=gen(9)), A.cutmix(x, 1.0, generator=gen(9))
    assert torch.equal(a.x, b.x) and a.lam == b.lam and a.box == b.box


# -- DSA ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", A.DSA_FAMILIES)
def test_dsa_family_differentiable(family):
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)

    def f(t: torch.Tensor) -> torch.Tensor:
        return A.dsa(t, family, generator=gen(3))

    assert f(x).shape == x.shape
    assert torch.autograd.gradcheck(f, (x,))


def test_dsa_single_mode_one_family_per_sample_params():
    x = torch.randn(1, 3, 32, 32).expand(16, -1, -1, -1).contiguous()
    out = A.dsa(x, "scale", generator=gen(0))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 16  # per-sample parameters
    # the single mode applies exactly one family: replaying the family choice reproduces the output
    g = gen(11)
    choice = A.DSA_FAMILIES[int(torch.randint(0, 6, (1,), generator=g))]
    torch.testing.assert_close(A.dsa(x, generator=gen(11)), A._DSA_FNS[choice](x, g, A.DSAParams()))


def test_dsa_crop_and_cutout_sizes():
    ones = torch.ones(64, 1, 32, 32)
    cut = A.dsa(ones, "cutout", generator=gen(0))
    zeroed = (cut == 0).sum(dim=(1, 2, 3))
    assert zeroed.max() == 16 * 16 and zeroed.min() >= 8 * 8  # clipped at the borders
    shifted = A.dsa(ones, "crop", generator=gen(0))
    rows_zero = (shifted[:, 0] == 0).all(dim=2).sum(1)
    assert rows_zero.max() == 4  # translations up to 4 px at 32 px
    assert A.dsa(torch.ones(64, 1, 64, 64), "cutout", generator=gen(1)).eq(0).sum(dim=(1, 2, 3)).max() == 32 * 32


def test_dsa_rotate_small_angle_keeps_centre():
    x = torch.randn(4, 3, 33, 33)
    out = A.dsa(x, "rotate", generator=gen(2))
    torch.testing.assert_close(out[..., 16, 16], x[..., 16, 16], atol=1e-5, rtol=0)  # rotation about the centre
    assert math.isclose(A.DSAParams().rotate_deg, 15.0)


def test_dsa_unknown_family():
    with pytest.raises(ValueError, match="unknown"):
        A.dsa(torch.zeros(1, 1, 4, 4), "color_blur", generator=gen())


def test_augment_output_on_input_device_and_dtype():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for out in (
        A.random_resized_crop(x, 8, generator=gen(), same_on_batch=False),
        A.random_crop_pad(x, 8, 2, generator=gen()),
        A.dsa(x, generator=gen()),
        A.cutmix(x, 1.0, generator=gen()).x,
    ):
        assert out.device == x.device and out.dtype == x.dtype
