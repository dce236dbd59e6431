"""BN-statistics hooks and loss (spec sre2l-dwa §3.4–3.5, §11 "BN hook" and "Variance").

Expected values are computed by hand (explicit sums in float64 over the hooked layer inputs), never by calling the
code under test a second time.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ddbench.ops.bn_stats import StatsRecorder, bn_distances, bn_matching_loss, channel_moments, hookless_copy


def two_layer_net(seed: int = 0) -> nn.Sequential:
    """conv-BN-conv-BN with random weights and non-trivial running buffers, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for bn in (net[1], net[3]):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
    return net.eval()


def manual_moments(h: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and biased variance by explicit summation (float64)."""
    h = h.double()
    means, vars_ = [], []
    for c in range(h.shape[1]):
        vals = h[:, c].flatten().tolist()
        m = sum(vals) / len(vals)
        means.append(m)
        vars_.append(sum((v - m) ** 2 for v in vals) / len(vals))
    return means, vars_


def l2(a: list[float], b: list[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def test_loss_equals_hand_computation_on_two_layer_net() -> None:
    net = two_layer_net()
    x = torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the hooked inputs, computed by hand: input of bn1 is conv1(x), of bn2 is conv2(bn1(...))
        h1 = net[0](x)
        h2 = net[2](net[1](h1))
    lm, lv, first = 0.01, 0.11, 10.0
    expected = 0.0
    for h, bn, mult in ((h1, net[1], first), (h2, net[3], 1.0)):
        mu, var = manual_moments(h)
        expected += mult * (lm * l2(mu, bn.running_mean.tolist()) + lv * l2(var, bn.running_var.tolist()))
    with StatsRecorder().attach(net) as rec:
        net(x)
        loss = bn_matching_loss(rec.stats(), lambda_mean=lm, lambda_var=lv, first_multiplier=first)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_variance_is_biased_and_of_the_bn_input_not_output() -> None:
    net = two_layer_net()
    x = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(2))
    with StatsRecorder().attach(net) as rec:
        net(x)
        stats = rec.stats()
    h1 = net[0](x).detach()
    mu, var = manual_moments(h1)
    assert stats[0].mean.tolist() == pytest.approx(mu, rel=1e-5, abs=1e-6)
    assert stats[0].var.tolist() == pytest.approx(var, rel=1e-5)
    unbiased = h1.var(dim=(0, 2, 3), correction=1)
    assert not torch.allclose(stats[0].var, unbiased)


def test_loss_is_zero_when_batch_stats_equal_running_stats() -> None:
    net = two_layer_net()
    x = torch.randn(4, 2, 6, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        h1 = net[0](x)
        m1, v1 = manual_moments(h1)
        net[1].running_mean.copy_(torch.tensor(m1))
        net[1].running_var.copy_(torch.tensor(v1))
        h2 = net[2](net[1](h1))  # bn2's input depends on bn1's (new) running stats in eval mode
        m2, v2 = manual_moments(h2)
        net[3].running_mean.copy_(torch.tensor(m2))
        net[3].running_var.copy_(torch.tensor(v2))
    with StatsRecorder().attach(net) as rec:
        net(x)
        loss = bn_matching_loss(rec.stats(), lambda_mean=1.0, lambda_var=1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_mean_term_is_linear_not_quadratic_in_the_mean_difference() -> None:
    net = two_layer_net()
    x = torch.randn(4, 2, 6, 6, generator=torch.Generator().manual_seed(4))
    direction = torch.tensor([1.0, -2.0, 0.5])
    values = []
    with StatsRecorder().attach(net) as rec:
        net(x)
        stats = rec.stats()[:1]  # the first layer only
        mu, var = stats[0].mean.detach(), stats[0].var.detach()
        for a in (1.0, 2.0, 3.0):
            targets = {stats[0].name: (mu + a * direction, var)}
            values.append(bn_matching_loss(stats, lambda_mean=1.0, lambda_var=1.0, targets=targets).item())
    norm = direction.norm().item() * 10.0  # first-layer multiplier 10
    assert values == pytest.approx([norm, 2 * norm, 3 * norm], rel=1e-5)


def test_only_batchnorm2d_counted_20_in_resnet18_and_first_multiplier_hits_the_stem_only() -> None:
    from ddbench.models import create_model

    model = create_model("resnet18", num_classes=10, img_size=32).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with StatsRecorder().attach(model) as rec:
        assert rec.num_layers() == 20
        model(x)
        stats = rec.stats()
        assert len(stats) == 20 and stats[0].name == "bn1"
        assert [s.first for s in stats] == [True] + [False] * 19
        d_mean, d_var, _ = bn_distances(stats)
        plain = bn_matching_loss(stats, lambda_mean=0.3, lambda_var=0.7, first_multiplier=1.0)
        boosted = bn_matching_loss(stats, lambda_mean=0.3, lambda_var=0.7, first_multiplier=10.0)
    stem_term = 0.3 * d_mean[0] + 0.7 * d_var[0]
    assert (boosted - plain).item() == pytest.approx(9 * stem_term.item(), rel=1e-5)


def test_grouped_statistics_equal_separate_batches_and_grouped_loss_splits() -> None:
    net = two_layer_net()
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(3, 2, 5, 5, generator=g), torch.randn(2, 2, 5, 5, generator=g)
    losses_alone = []
    for part in (a, b):
        with StatsRecorder().attach(net) as rec:
            net(part)
            losses_alone.append(bn_matching_loss(rec.stats(), lambda_mean=0.5, lambda_var=0.2).item())
    with StatsRecorder().attach(net) as rec:
        rec.set_groups(torch.tensor([0, 0, 0, 1, 1]), 2)
        net(torch.cat([a, b]))
        per_group = bn_matching_loss(rec.stats(), lambda_mean=0.5, lambda_var=0.2, reduction="none")
    assert per_group.shape == (2,)
    assert per_group.tolist() == pytest.approx(losses_alone, rel=1e-5)
    # per-sample moments (EDC's per-class targets average these) with groups = arange(N)
    h = torch.randn(4, 3, 2, 2, generator=g)
    mean, var = channel_moments(h, torch.arange(4))
    assert torch.allclose(mean, h.mean((2, 3)), atol=1e-6)
    assert torch.allclose(var, h.var((2, 3), correction=0), atol=1e-6)


def test_recorder_lifecycle_disable_detach_and_several_models_in_turn() -> None:
    nets = [two_layer_net(0), two_layer_net(1)]
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(7))
    rec = StatsRecorder(conv=True)
    for net in nets:
        with rec.attach(net):
            with pytest.raises(RuntimeError):
                rec.attach(net)
            rec.enabled = False
            net(x)
            assert rec.stats(None) == []
            rec.enabled = True
            net(x)
            assert [s.kind for s in rec.stats(None)] == ["conv", "bn", "conv", "bn"]
            # the first conv hook sees the image itself (EDC's image-level statistics)
            assert torch.allclose(rec.stats("conv")[0].mean, x.mean((0, 2, 3)), atol=1e-6)
            assert rec.stats("bn")[0].module is net[1]
            with pytest.raises(KeyError):  # conv layers have no running buffers: targets are required
                bn_matching_loss(rec.stats("conv"), lambda_mean=1.0, lambda_var=1.0)
    assert all(not m._forward_hooks for net in nets for m in net.modules())


def test_hookless_copy_does_not_feed_the_originals_recorder() -> None:
    """A plain deepcopy would carry the closure hooks, so a forward on the copy would write into ``rec``."""
    net = two_layer_net()
    net.register_forward_pre_hook(lambda module, inputs: None)
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    with StatsRecorder().attach(net) as rec:
        clone = hookless_copy(net)
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in clone.modules())
        assert all(torch.equal(a, b) for a, b in zip(clone.state_dict().values(), net.state_dict().values()))
        clone(x)
        assert rec.stats() == []
        net(x)  # the original keeps its hooks
        assert len(rec.stats()) == 2


def test_loss_gradient_reaches_every_image_of_the_batch() -> None:
    net = two_layer_net()
    x = torch.randn(4, 2, 6, 6, generator=torch.Generator().manual_seed(8), requires_grad=True)
    with StatsRecorder().attach(net) as rec:
        net(x)
        bn_matching_loss(rec.stats(), lambda_mean=1.0, lambda_var=1.0).backward()
    assert all(x.grad[i].abs().sum() > 0 for i in range(4))
