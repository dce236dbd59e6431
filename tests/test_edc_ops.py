"""EDC / RDED building blocks (spec ``edc.md`` §2–§4, §8, the unit checks of §10.4).

Every expected value is written out by hand, derived independently (closed forms, finite differences, the
existing SRe2L loss), or an invariant that a plausible mistake would break.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from ddbench.labels import ensemble_logits as ensemble_mean_logits
from ddbench.models import create_model
from ddbench.ops.augment import patch_shuffle, rand_augment, random_flip, random_resized_crop
from ddbench.ops.bn_stats import StatsRecorder, bn_matching_loss
from ddbench.ops.edc_matching import MomentumStats, layer_loss, statistics_loss
from ddbench.ops.edc_targets import ObserverTargets, real_targets
from ddbench.ops.flatness import FlatnessEMA, flatness_kl, same_views
from ddbench.ops.moments import patch_grid, patch_moments, to_patches
from ddbench.ops.rded import (
    cell_sizes,
    chunk_views,
    edc_code_images,
    pad_to,
    rded_images,
    select_patches,
    tile_consecutive,
    tile_mosaics,
)
from ddbench.protocol import Protocol
from ddbench.schedules import smoothing, smoothing_linear, ssrs


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TinyObserver(nn.Module):
    """conv → BN → ReLU → conv → BN → ReLU → pool → fc, with non-trivial running statistics."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, num_classes)
        g = _gen(7)
        for bn in (self.bn1, self.bn2):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _real_batches(n_batches: int = 3, batch: int = 6, num_classes: int = 3, size: int = 8, seed: int = 1):
    g = _gen(seed)
    return [
        (torch.randn(batch, 3, size, size, generator=g), torch.randint(0, num_classes, (batch,), generator=g))
        for _ in range(n_batches)
    ]


# ====================================================================================================================
# §4.1 smoothing schedules
# ====================================================================================================================
def test_smoothing_multiplier_values_and_protocol_agree():
    assert smoothing(0, 300, 2) == 1.0
    assert smoothing(150, 300, 2) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)), abs=1e-12)  # 0.853553
    assert smoothing(150, 300, 2) == pytest.approx(0.8536, abs=5e-5)
    assert smoothing(299, 300, 2) == pytest.approx(0.5026, abs=5e-5)
    # spec §4.1 reference rows at epochs 0, 75, 150, 225, 299 of 300
    epochs = (0, 75, 150, 225, 299)
    expected = {
        1.0: (1.0, 0.854, 0.5, 0.146, 0.0),
        1.5: (1.0, 0.933, 0.75, 0.5, 0.253),
        2.0: (1.0, 0.962, 0.854, 0.691, 0.503),
    }
    for zeta, row in expected.items():
        assert [round(smoothing(e, 300, zeta), 3) for e in epochs] == pytest.approx(row, abs=1.1e-3)
    # the Protocol field that exists today computes the same multiplier at every epoch
    proto = Protocol(epochs=300, schedule="smooth", smooth_zeta=2.0)
    assert all(proto.lr_factor(e) == smoothing(e, 300, 2.0) for e in range(300))


def test_smoothing_linear_variant():
    assert smoothing_linear(150, 300, 2) == 0.75
    assert smoothing_linear(299, 300, 2) == pytest.approx(0.5017, abs=5e-5)
    assert [round(smoothing_linear(e, 300, 2), 3) for e in (0, 75, 150, 225, 299)] == [1.0, 0.875, 0.75, 0.625, 0.502]
    proto = Protocol(epochs=300, schedule="smooth_linear", smooth_zeta=2.0)
    assert all(proto.lr_factor(e) == smoothing_linear(e, 300, 2.0) for e in range(300))


def test_ssrs_drop_at_five_sixths():
    assert ssrs(833, 1000, 2) == pytest.approx(0.6297, abs=5e-5)
    assert ssrs(834, 1000, 2) == pytest.approx(0.1045, abs=5e-5)
    assert all(ssrs(e, 1000, 2) == smoothing(e, 1000, 2) for e in range(834))
    tail = 0.5 * (1 + math.cos(5 * math.pi / 12))  # ½(1 + cos(5π/(6ζ))) at ζ = 2
    assert all(ssrs(e, 1000, 2) == pytest.approx(tail * (1 - e / 1000), abs=1e-12) for e in range(834, 1000))
    assert ssrs(833, 1000, 2) / ssrs(834, 1000, 2) > 6  # the deliberate ≈6× drop
    assert ssrs(5, 6, 2) == smoothing(5, 6, 2)  # i = 5N/6 exactly stays on the cosine
    with pytest.raises(ValueError, match="zeta"):
        ssrs(0, 10, 0.5)


# ====================================================================================================================
# §2.3 patch grid and moments
# ====================================================================================================================
def test_patch_grid_rounds_up_to_multiples_of_p():
    assert patch_grid(224, 224, 16) == (14, 14)  # 196 locations
    assert patch_grid(56, 56, 16) == (4, 4)  # resized to 64×64: 16 locations
    assert patch_grid(7, 7, 16) == (1, 1)  # smaller than p: one patch
    assert patch_grid(32, 32, 4) == (8, 8)  # 64 locations
    assert patch_grid(17, 32, 4) == (5, 8)
    h = torch.randn(2, 3, 6, 6, generator=_gen())
    resized = F.interpolate(h, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(to_patches(h, 4), to_patches(resized, 4))  # 6 → 8 before tiling


@pytest.mark.parametrize(("size", "patch", "first", "last"), [(32, 4, 64, 1), (224, 16, 196, 1)])
def test_patch_counts_at_hooks(size, patch, first, last):
    # ResNet-18: the first conv sees the image; layer4's convs see 4×4 (32 px) or 7×7 (224 px) maps, one patch.
    model = create_model("resnet18", num_classes=3, img_size=size, width_mult=0.25)
    x = torch.randn(2, 3, size, size, generator=_gen())
    targets = real_targets(model, [(x, torch.tensor([0, 1]))], 3, patch=patch)
    convs = [t for t in targets.layers.values() if t.kind == "conv"]
    assert convs[0].name == "conv1" and convs[0].glob.patch_mean.numel() == first
    assert targets.layers["layer4.1.conv2"].glob.patch_mean.numel() == last
    if size == 224:
        assert targets.layers["layer1.0.conv1"].glob.patch_var.numel() == 16  # 56×56 → 64×64
    assert all(t.glob.patch_mean is None for t in targets.layers.values() if t.kind == "bn")


def test_patch_moments_by_hand():
    # a 4×4 map of one channel, p = 2: four 2×2 patches with known values; two samples
    a = torch.tensor([[1.0, 1, 2, 4], [1, 1, 2, 4], [0, 0, 3, 3], [0, 0, 3, 5]])
    h = torch.stack([a, a + 1])[:, None]  # [2, 1, 4, 4]
    mean, var = patch_moments(h, 2)
    # location 0: {1}×4 and {2}×4 → mean 1.5, var 0.25; location 1: {2,4,2,4} and {3,5,3,5} → mean 3.5, var 1.25
    torch.testing.assert_close(mean, torch.tensor([1.5, 3.5, 0.5, 4.0]))
    torch.testing.assert_close(var, torch.tensor([0.25, 1.25, 0.25, 1.0]))
    per_mean, per_var = patch_moments(h, 2, torch.arange(2))
    torch.testing.assert_close(per_mean[0], torch.tensor([1.0, 3.0, 0.0, 3.5]))
    torch.testing.assert_close(per_var[1], torch.tensor([0.0, 1.0, 0.0, 0.75]))


# ====================================================================================================================
# §2.4 real-data targets
# ====================================================================================================================
def test_per_class_variance_is_within_image():
    # Per-image constant images: every within-image variance is 0, so the per-class (Form 2) variance targets at
    # the image-level conv hook are 0, while the pooled (Form 1) variance sees the spread between images.
    values = torch.tensor([0.0, 1.0, 2.0, 5.0, -1.0, 3.0])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    images = values.view(-1, 1, 1, 1).expand(6, 3, 8, 8).contiguous()
    targets = real_targets(TinyObserver(), [(images, labels)], 3, patch=4)
    conv1 = targets.layers["conv1"]
    assert torch.count_nonzero(conv1.per_class.var) == 0 and torch.count_nonzero(conv1.per_class.patch_var) == 0
    pooled = values.var(correction=0)
    torch.testing.assert_close(conv1.glob.var, pooled.expand(3))
    assert float(conv1.glob.var.min()) > 1.0
    torch.testing.assert_close(conv1.per_class.mean[:, 0], torch.tensor([0.5, 3.5, 1.0]))  # class means by hand
    torch.testing.assert_close(conv1.glob.patch_var, pooled.expand(4))  # 8×8 at p = 4: 2×2 locations


def test_real_targets_global_and_bn_targets():
    model = TinyObserver()
    model.train()
    before = model.bn1.running_mean.clone()
    batches = _real_batches(n_batches=2, batch=5) + _real_batches(n_batches=1, batch=2, seed=9)  # unequal sizes
    targets = real_targets(model, batches, 3, patch=4)
    assert model.training and torch.equal(model.bn1.running_mean, before)  # eval pass, mode restored
    assert list(targets.layers) == ["conv1", "bn1", "conv2", "bn2"] and targets.layers["conv1"].position == 0
    assert targets.num_images == 12 and targets.class_counts.sum() == 12
    # BN global targets: the running buffers, not recomputed
    assert torch.equal(targets.layers["bn2"].glob.var, model.bn2.running_var)
    # conv global targets: sample-weighted mean of per-batch pooled moments
    weighted = sum(x.shape[0] * x.mean((0, 2, 3)) for x, _ in batches) / 12
    torch.testing.assert_close(targets.layers["conv1"].glob.mean, weighted)
    v = sum(x.shape[0] * x.var((0, 2, 3), correction=0) for x, _ in batches) / 12
    torch.testing.assert_close(targets.layers["conv1"].glob.var, v)
    # per-class: class average of per-image channel means
    xs = torch.cat([x for x, _ in batches])
    ys = torch.cat([y for _, y in batches])
    for c in range(3):
        torch.testing.assert_close(targets.layers["conv1"].per_class.mean[c], xs[ys == c].mean((2, 3)).mean(0))
    # round trip through plain tensors (the artifact cache)
    back = ObserverTargets.from_state_dict(targets.state_dict())
    for name, layer in targets.layers.items():
        for (k, a), (k2, b) in zip(layer.per_class.items(), back.layers[name].per_class.items(), strict=True):
            assert k == k2 and torch.equal(a, b)


def test_real_targets_rejects_bad_labels_and_empty_input():
    with pytest.raises(ValueError, match="labels"):
        real_targets(TinyObserver(), [(torch.randn(2, 3, 8, 8), torch.tensor([0, 3]))], 3, patch=4)
    with pytest.raises(ValueError, match="no images"):
        real_targets(TinyObserver(), [], 3, patch=4)


# ====================================================================================================================
# §2.5 straight-through training momentum
# ====================================================================================================================
def test_momentum_start_value_default_and_compat():
    s1, s2 = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0])
    default = MomentumStats(0.8)
    assert torch.equal(default("k", s1), s1)  # first value = the batch statistic
    torch.testing.assert_close(default("k", s2), 0.8 * s1 + 0.2 * s2)
    compat = MomentumStats(0.8, compat_zero_init_ema=True)
    torch.testing.assert_close(compat("k", s1), 0.2 * s1)  # [C]: the EMA starts at 0
    torch.testing.assert_close(compat("k", s2), 0.8 * 0.2 * s1 + 0.2 * s2)
    default.reset()
    assert torch.equal(default("k", s2), s2)  # reset: starts again from the batch statistic
    assert torch.equal(MomentumStats(0.0)("k", s2), s2)  # m = 0 (ImageNet-10 script): plain statistic
    with pytest.raises(ValueError, match="changed shape"):
        default("k", torch.ones(3))


def test_straight_through_value_is_ema_gradient_is_batch_statistic():
    torch.manual_seed(0)
    x0 = torch.randn(4, 3, dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, dtype=torch.float64)

    def stat(z: torch.Tensor) -> torch.Tensor:  # a non-linear batch statistic
        return (z.square() + z).mean(0)

    ms = MomentumStats(0.8)
    ms("v", stat(x0))
    s_hat = ms("v", stat(x))
    expected = 0.8 * stat(x0) + (1 - 0.8) * stat(x).detach()
    assert torch.equal(s_hat.detach(), expected)  # forward: exactly the EMA
    loss = torch.linalg.vector_norm(target - s_hat)
    loss.backward()
    # backward: d loss/d ŝ (at the EMA value) chained through the *current* statistic with coefficient 1
    u = ((s_hat - target) / torch.linalg.vector_norm(s_hat - target)).detach()
    eps, fd = 1e-6, torch.zeros_like(x)
    for idx in range(x.numel()):
        e = torch.zeros(x.numel(), dtype=torch.float64)
        e[idx] = eps
        e = e.view_as(x)
        fd.view(-1)[idx] = (u @ stat(x.detach() + e) - u @ stat(x.detach() - e)) / (2 * eps)
    torch.testing.assert_close(x.grad, fd, rtol=1e-6, atol=1e-8)
    assert not torch.allclose(x.grad, 0.2 * fd)  # not the EMA's own derivative


# ====================================================================================================================
# §2.6 soft category-aware matching, §2.7 first-hook multiplier
# ====================================================================================================================
def _targets_and_records(labels: torch.Tensor, *, bn: bool = True, conv: bool = True, seed: int = 3):
    model = TinyObserver().eval()
    targets = real_targets(model, _real_batches(n_batches=4, batch=6), 3, patch=4, bn=bn, conv=conv)
    x = torch.randn(labels.numel(), 3, 8, 8, generator=_gen(seed), requires_grad=True)
    recorder = StatsRecorder(bn=bn, conv=conv, keep_inputs=True).attach(model)
    model(x)
    return model, targets, recorder.stats(None), x


def _norm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(a - b)


def test_alpha_one_is_the_global_bn_loss_of_sre2l():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    _, targets, records, _ = _targets_and_records(labels, conv=False)
    ours = statistics_loss(records, targets, labels, alpha=1.0, first_multiplier=10.0)
    ref = bn_matching_loss(records, lambda_mean=1.0, lambda_var=1.0, first_multiplier=10.0)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)


def test_alpha_one_with_conv_hooks_by_hand():
    labels = torch.tensor([0, 1, 2, 0])
    _, targets, records, _ = _targets_and_records(labels)
    ours = statistics_loss(records, targets, labels, alpha=1.0, first_multiplier=10.0, reduction="none")
    for i, r in enumerate(records):
        g = targets.layers[r.name].glob
        want = _norm(g.mean, r.mean) + _norm(g.var, r.var)
        if r.kind == "conv":
            pm, pv = patch_moments(r.input, 4)
            want = want + _norm(g.patch_mean, pm) + _norm(g.patch_var, pv)
        torch.testing.assert_close(ours[i], want * (10.0 if i == 0 else 1.0))
    assert records[0].name == "conv1"  # the ×10 goes to the image-level conv hook only, not also to bn1


@pytest.mark.parametrize("mode", ["aggregate", "per_class"])
def test_alpha_zero_single_class_batch_matches_that_class(mode):
    labels = torch.full((5,), 2)
    _, targets, records, _ = _targets_and_records(labels)
    ours = statistics_loss(records, targets, labels, alpha=0.0, category_mode=mode, reduction="none")
    for i, r in enumerate(records):
        t = targets.layers[r.name].per_class
        want = _norm(t.mean[2], r.mean) + _norm(t.var[2], r.var)
        if r.kind == "conv":
            pm, pv = patch_moments(r.input, 4)
            want = want + _norm(t.patch_mean[2], pm) + _norm(t.patch_var[2], pv)
        torch.testing.assert_close(ours[i], want * (10.0 if i == 0 else 1.0), rtol=1e-5, atol=1e-6)
    if mode == "aggregate":  # the aggregated target of a one-class batch is that class's target, exactly
        r, t = records[1], targets.layers[records[1].name].per_class
        one = layer_loss(r, targets.layers[r.name], labels, patch=4, alpha=0.0)
        assert torch.equal(one, _norm(t.mean[2], r.mean) + _norm(t.var[2], r.var))


def test_category_modes_differ_on_mixed_batches():
    labels = torch.tensor([0, 0, 0, 0, 1, 1])  # unbalanced: p_batch = (2/3, 1/3, 0)
    _, targets, records, _ = _targets_and_records(labels)
    r = records[1]  # bn1
    t = targets.layers[r.name].per_class
    agg = layer_loss(r, targets.layers[r.name], labels, patch=4, alpha=0.0, category_mode="aggregate")
    mixed_mean, mixed_var = (2 * t.mean[0] + t.mean[1]) / 3, (2 * t.var[0] + t.var[1]) / 3
    torch.testing.assert_close(agg, _norm(mixed_mean, r.mean) + _norm(mixed_var, r.var))
    per = layer_loss(r, targets.layers[r.name], labels, patch=4, alpha=0.0, category_mode="per_class")
    by_hand = 0
    for c, p in ((0, 2 / 3), (1, 1 / 3)):
        h = r.input[labels == c]
        m, v = h.mean((0, 2, 3)), h.var((0, 2, 3), correction=0)
        by_hand = by_hand + p * (_norm(t.mean[c], m) + _norm(t.var[c], v))
    torch.testing.assert_close(per, by_hand)
    assert not torch.allclose(agg, per)
    half = layer_loss(r, targets.layers[r.name], labels, patch=4, alpha=0.5)
    full = layer_loss(r, targets.layers[r.name], labels, patch=4, alpha=1.0)
    torch.testing.assert_close(half, 0.5 * full + 0.5 * agg)


def test_matching_loss_uses_momentum_and_needs_inputs():
    labels = torch.tensor([0, 1, 2])
    model, targets, records, x = _targets_and_records(labels)
    ms = MomentumStats(0.8)
    first = statistics_loss(records, targets, labels, momentum=ms)
    torch.testing.assert_close(first, statistics_loss(records, targets, labels))  # first call: ŝ = s
    assert len(ms) == 4 * 2 + 2 * 2  # (mean, var, patch mean, patch var) per conv, (mean, var) per BN
    first.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="category_mode"):  # checked even when α = 1 never reads it
        statistics_loss(records, targets, labels, alpha=1.0, category_mode="global")
    with StatsRecorder(bn=True, conv=True).attach(model) as rec:  # no keep_inputs
        model(torch.randn(3, 3, 8, 8))
        with pytest.raises(ValueError, match="keep_inputs"):
            statistics_loss(rec.stats(None), targets, labels)


# ====================================================================================================================
# §3 flatness regularisation
# ====================================================================================================================
def test_flatness_ema_images_closed_form():
    beta, steps = 0.99, 7
    g = _gen(5)
    x0 = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    xs = [torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(steps)]
    flat = FlatnessEMA(x0, beta)
    for x in xs:
        flat.update(x)
    closed = beta**steps * x0 + sum((1 - beta) * beta ** (steps - 1 - s) * xs[s] for s in range(steps))
    torch.testing.assert_close(flat.images, closed, rtol=1e-12, atol=1e-12)
    assert flat.steps == steps and not torch.equal(flat.images, x0)
    xs[0].add_(100.0)
    torch.testing.assert_close(flat.images, closed)  # the EMA holds its own copy


def test_flatness_kl_orders_and_reductions():
    g = _gen(2)
    cur = torch.randn(4, 5, generator=g, requires_grad=True)
    ema = torch.randn(4, 5, generator=g, requires_grad=True)
    p, q = F.softmax(cur / 4, 1), F.softmax(ema / 4, 1)
    paper = (p * (p.log() - q.log())).sum(1).mean()
    code = (q * (q.log() - p.log())).sum(1).mean()
    torch.testing.assert_close(flatness_kl(cur, ema, 4.0), paper)
    torch.testing.assert_close(flatness_kl(cur, ema, 4.0, order="code"), code)
    torch.testing.assert_close(flatness_kl(cur, ema, 4.0, order="code", reduction="mean"), code / 5)  # [C]: ÷ B·K
    with warnings.catch_warnings():  # torch warns that 'mean' is not the KL definition; it is [C]'s call
        warnings.simplefilter("ignore", UserWarning)
        code_call = F.kl_div(F.log_softmax(cur / 4, 1), F.softmax(ema / 4, 1), reduction="mean")
    torch.testing.assert_close(flatness_kl(cur, ema, 4.0, order="code", reduction="mean"), code_call)
    assert not torch.allclose(paper, code)
    assert float(flatness_kl(cur, cur.detach(), 4.0).detach()) == pytest.approx(0.0, abs=1e-7)
    flatness_kl(cur, ema, 4.0).backward()
    assert cur.grad is not None and ema.grad is None  # only the current images are optimised


def test_same_views_replays_the_crop():
    x = torch.rand(3, 3, 16, 16, generator=_gen(1))

    def aug(t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        t = random_resized_crop(t, 16, (0.5, 1.0), generator=g, same_on_batch=True)
        return random_flip(t, generator=g, same_on_batch=True)

    g = _gen(4)
    a, b = same_views(aug, [x, x + 1.0], g)
    torch.testing.assert_close(b, a + 1.0)  # identical boxes and flips (the crop is affine in the pixels)
    g_one = _gen(4)
    aug(x, g_one)
    assert torch.equal(g.get_state(), g_one.get_state())  # consumed like a single call
    c, _ = same_views(aug, [x, x], g)
    assert not torch.equal(c, a)  # the next iteration draws a new view


# ====================================================================================================================
# ensemble soft labels (§1 S4)
# ====================================================================================================================
def test_ensemble_label_is_mean_of_logits_not_probabilities():
    x = torch.randn(3, 4, generator=_gen(0))
    sharp, flat = nn.Linear(4, 5), nn.Linear(4, 5)
    with torch.no_grad():
        sharp.weight.copy_(torch.randn(5, 4, generator=_gen(1)) * 5)
        flat.weight.copy_(torch.randn(5, 4, generator=_gen(2)) * 0.2)
    out = ensemble_mean_logits([sharp, flat], x)
    torch.testing.assert_close(out, (sharp(x) + flat(x)) / 2)
    mean_probs = (F.softmax(sharp(x), 1) + F.softmax(flat(x), 1)) / 2
    assert (F.softmax(out, 1) - mean_probs).abs().max() > 1e-2
    assert torch.equal(ensemble_mean_logits([sharp], x), sharp(x))
    with pytest.raises(ValueError):
        ensemble_mean_logits([], x)


# ====================================================================================================================
# §8.1 RDED
# ====================================================================================================================
def test_rded_tiling_order():
    ipc, factor, side = 3, 2, 4
    patches = torch.arange(ipc * factor**2, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, side, side)
    mosaics = tile_mosaics(patches, ipc, factor, 2 * side)
    for j in range(ipc):  # image j holds ranks j, IPC + j, 2·IPC + j, 3·IPC + j in row-major cells
        cells = [
            mosaics[j, 0, r * side : (r + 1) * side, c * side : (c + 1) * side] for r in range(2) for c in range(2)
        ]
        assert [float(cell.unique()) for cell in cells] == [j, ipc + j, 2 * ipc + j, 3 * ipc + j]
    assert cell_sizes(9, 2) == [5, 4] and cell_sizes(224, 2) == [112, 112]
    odd = tile_mosaics(patches, ipc, factor, 9)  # the first row/column of cells is one pixel larger
    assert float(odd[0, 0, 4, 4]) == 0 and float(odd[0, 0, 5, 5]) == 3 * ipc


def test_edc_code_tiling_is_consecutive_not_interleaved():
    """§8.2 item 4: image i holds ranks 4i … 4i+3 (RDED's interleaving would give i, IPC + i, …)."""
    ipc, factor, side = 3, 2, 4
    patches = torch.arange(ipc * factor**2, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, side, side)
    mosaics = tile_consecutive(patches, ipc, factor, 2 * side)
    for i in range(ipc):
        cells = [
            mosaics[i, 0, r * side : (r + 1) * side, c * side : (c + 1) * side] for r in range(2) for c in range(2)
        ]
        assert [float(cell.unique()) for cell in cells] == [4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3]
    with pytest.raises(ValueError, match="ipc·factor²"):
        tile_consecutive(patches[:-1], ipc, factor, 2 * side)


def test_edc_code_views_share_one_box_and_flip_per_chunk_and_use_whole_chunks_only():
    """§8.2 item 3: every image of a chunk gets the same crop box and flip in a draw; a partial last chunk is unused."""
    ramp = torch.arange(16, dtype=torch.float32).view(1, 1, 1, 16).expand(1, 1, 16, 16)
    ramp = ramp + torch.arange(16, dtype=torch.float32).view(1, 1, 16, 1) * 16  # distinct value per pixel
    images = torch.cat([ramp + 1000 * k for k in range(10)])  # image k = the ramp shifted by 1000·k
    views, sources = chunk_views(images, 4, 3, generator=torch.Generator().manual_seed(0))
    assert views.shape == (2 * 3 * 4, 1, 16, 16)  # 10 // 4 = 2 whole chunks × 3 draws × 4 images; images 8, 9 unused
    assert sources.tolist() == [0, 1, 2, 3] * 3 + [4, 5, 6, 7] * 3
    draws = views.view(6, 4, 1, 16, 16) - 1000 * sources.view(6, 4, 1, 1, 1).float()
    for d in range(6):  # with the offset removed, the four views of a draw are the same crop of the same ramp
        torch.testing.assert_close(draws[d], draws[d, :1].expand_as(draws[d]), rtol=0, atol=1e-3)
    assert len({tuple(draws[d, 0].flatten()[:8].round().tolist()) for d in range(6)}) > 1  # draws differ
    few, src = chunk_views(images[:3], 4, 2, generator=torch.Generator().manual_seed(0))
    assert few.shape[0] == 6 and src.tolist() == [0, 1, 2, 0, 1, 2]  # fewer than a chunk: one chunk of all


def test_edc_code_images_preselect_the_most_confident_and_allow_several_patches_per_image():
    """§8.2 items 1–2, 4: with constant images and CE falling with brightness, the pre-selection keeps the brightest
    ``keep`` images, and the best patches may all come from one image (no one-patch-per-image rule)."""
    brightness = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7, 0.2])
    images = brightness.view(-1, 1, 1, 1).expand(-1, 3, 8, 8).contiguous()

    def score(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([10 * x.mean(dim=(1, 2, 3)), torch.zeros(x.shape[0])], dim=1)

    out = edc_code_images(images, 0, score, ipc=1, factor=2, generator=torch.Generator().manual_seed(0), keep=3,
                          chunk=64, num_crop=4)  # fmt: skip
    torch.testing.assert_close(out, torch.full((1, 3, 8, 8), 0.9))  # four views of the brightest image, one mosaic
    out = edc_code_images(images, 0, score, ipc=3, factor=1, generator=torch.Generator().manual_seed(0), keep=2,
                          chunk=64, num_crop=2)  # fmt: skip
    assert out.mean(dim=(1, 2, 3)).tolist() == pytest.approx([0.9, 0.9, 0.7])  # two patches of one image, then 0.7
    with pytest.raises(ValueError, match="views were drawn"):
        edc_code_images(images, 0, score, ipc=3, factor=2, generator=torch.Generator(), keep=2, chunk=64, num_crop=2)


def test_select_patches_keeps_one_patch_per_source_image():
    views = torch.arange(4 * 3, dtype=torch.float32).view(4, 3, 1, 1, 1)  # value = 3·image + view
    scores = torch.tensor([[0.1, 0.05, 0.2], [0.9, 0.8, 0.7], [0.3, 0.02, 0.5], [0.6, 0.4, 0.01]])
    patches, ce = select_patches(views, scores, 3)
    assert patches.flatten().tolist() == [11.0, 7.0, 1.0]  # best views of images 3, 2, 0, never two of one image
    torch.testing.assert_close(ce, torch.tensor([0.01, 0.02, 0.05]))
    with pytest.raises(ValueError, match="one patch per image"):
        select_patches(views, scores, 5)


def test_rded_images_picks_the_most_confident_sources():
    # Constant images: every view of image i is the constant b_i, and the scorer's CE for class 0 falls with
    # brightness, so the mosaics are built from the brightest ipc·f² images in rank order.
    brightness = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6])
    images = brightness.view(-1, 1, 1, 1).expand(-1, 3, 8, 8).contiguous()

    def score(x: torch.Tensor) -> torch.Tensor:  # logit of class 0 = 10 × mean pixel; class 1 fixed
        return torch.stack([10 * x.mean((1, 2, 3)), torch.zeros(x.shape[0])], 1)

    out = rded_images(images, 0, score, ipc=2, factor=2, generator=_gen(0))
    assert out.shape == (2, 3, 8, 8)
    ranked = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    for j in range(2):
        cells = [out[j, 0, r * 4 : (r + 1) * 4, c * 4 : (c + 1) * 4] for r in range(2) for c in range(2)]
        got = [float(cell.mean()) for cell in cells]
        assert got == pytest.approx([ranked[j], ranked[2 + j], ranked[4 + j], ranked[6 + j]], abs=1e-6)
    flat = rded_images(images, 0, score, ipc=3, factor=1, generator=_gen(0), antialias=False)
    assert [float(im.mean()) for im in flat] == pytest.approx([0.9, 0.8, 0.7], abs=1e-6)


def test_pad_to_is_centred_zero_padding():
    out = pad_to(torch.ones(1, 1, 2, 3), 5)
    assert out.shape == (1, 1, 5, 5) and float(out.sum()) == 6
    assert out[0, 0, 1:3, 1:4].eq(1).all()  # top/left get the smaller half


# ====================================================================================================================
# evaluation-side augmentations (§5, §8.1)
# ====================================================================================================================
def test_patch_shuffle_permutes_rows_and_columns_of_tiles():
    tiles = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    img = tiles.repeat_interleave(3, 0).repeat_interleave(3, 1)  # 6×6, four 3×3 tiles
    x = img.expand(64, 2, 6, 6).contiguous()
    out = patch_shuffle(x, 2, generator=_gen(0))
    allowed = {tuple(tiles[list(r)][:, list(c)].flatten().tolist()) for r in ((0, 1), (1, 0)) for c in ((0, 1), (1, 0))}
    seen = set()
    for o in out:
        assert torch.equal(o[0], o[1])  # channels move together
        layout = o[0, ::3, ::3]
        assert torch.equal(o[0], layout.repeat_interleave(3, 0).repeat_interleave(3, 1))  # tiles stay intact
        seen.add(tuple(layout.flatten().tolist()))
    assert seen == allowed  # row/column permutations only, each drawn per sample
    assert torch.equal(patch_shuffle(x, 2, generator=_gen(0)), out)
    assert torch.equal(patch_shuffle(x, 1, generator=_gen(0)), x)
    odd = torch.arange(5.0).expand(1, 1, 5, 5)
    assert sorted(patch_shuffle(odd, 2, generator=_gen(3))[0, 0, 0].tolist()) == [0, 1, 2, 3, 4]


def test_rand_augment_is_torchvision_per_sample():
    x = (torch.rand(6, 3, 16, 16, generator=_gen(0)) * 255).to(torch.uint8)
    same = x[:1].expand(6, -1, -1, -1).contiguous()
    out = rand_augment(same, generator=_gen(1))
    assert out.dtype == torch.uint8 and out.shape == same.shape
    assert len({o.numpy().tobytes() for o in out}) > 1  # per-sample op draws
    seeds = torch.randint(0, 2**62, (6,), generator=_gen(1)).tolist()
    ref = v2.RandAugment()
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)
        assert torch.equal(out[i], ref(same[i]))
    assert torch.equal(rand_augment(same, generator=_gen(1)), out)
    state = torch.random.get_rng_state()
    rand_augment(x.float() / 255, generator=_gen(2))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
