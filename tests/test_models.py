"""The model zoo: every registered architecture at every registered dataset's native size, plus exact shapes.

Parametrized over the architecture registry (like timm's ``test_models.py``) × the distinct native
``(img_size, channels)`` of the dataset registry. Sizes up to 64 px run by default with batch 2; 224-px cases are
marked ``slow``. Parameter counts are asserted against numbers derived independently (arithmetic written out
in the test, or an upstream torchvision/timm model), not against values printed by this code.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from ddbench.data import DATASETS
from ddbench.models import ARCHS, create_model
from ddbench.models._layers import TokenBatchNorm, norm2d
from ddbench.models._stems import convnet_depth, resolve_stem, vgg_pool_plan, vit_patch_size

NUM_CLASSES = 7  # deliberately no model's default
BATCH = 2


def _native_sizes() -> list[tuple[int, int]]:
    specs = (DATASETS.get(name) for name in DATASETS.names())
    return sorted({(spec.img_size, spec.channels) for spec in specs})


SIZES = _native_sizes()
# Built-in architectures only: other test modules register tiny test architectures in the same registry.
BUILTIN_ARCHS = [name for name in ARCHS.names() if ARCHS.origin(name) == "builtin"]
#: Architectures that exist only from some input size on (ConvNet-6 pools six times: 64 px and up).
MIN_SIZE = {"convnet_d6": 64}
CASES = [
    pytest.param(arch, size, chans, id=f"{arch}-{size}px-{chans}ch", marks=[pytest.mark.slow] if size > 64 else [])
    for arch in BUILTIN_ARCHS
    for size, chans in SIZES
    if size >= MIN_SIZE.get(arch, 0)
]

# Spatial side of forward_features at each small native size (token count for the ViT); these encode the
# small-input rules of ddbench.models._stems, family by family.
FINAL_MAP = {
    "resnet18": {8: 1, 28: 4, 32: 4, 64: 8},
    "resnet50": {8: 1, 28: 4, 32: 4, 64: 8},
    "resnet101": {8: 1, 28: 4, 32: 4, 64: 8},
    "mobilenetv2": {8: 1, 28: 4, 32: 4, 64: 8},
    "efficientnet_b0": {8: 1, 28: 4, 32: 4, 64: 8},
    "shufflenetv2": {8: 1, 28: 4, 32: 4, 64: 8},
    "vgg11_bn": {8: 1, 28: 1, 32: 1, 64: 2},
    "vgg16_bn": {8: 1, 28: 1, 32: 1, 64: 2},
    "convnet": {8: 2, 28: 4, 32: 4, 64: 4},
    "convnet_bn": {8: 2, 28: 4, 32: 4, 64: 4},
    "resnet_ap10": {8: 1, 28: 3, 32: 4, 64: 8},
    "deit_tiny_bn": {8: 1 + 4 * 4, 28: 1 + 7 * 7, 32: 1 + 8 * 8, 64: 1 + 8 * 8},
    # EDC observers: WRN keeps its CIFAR total stride 4; ConvNet D1/D2 have a fixed depth
    "wrn16_2": {8: 2, 28: 7, 32: 8, 64: 16},
    "alexnet": {8: 1, 28: 4, 32: 4, 64: 8},
    "mobilenetv2_050": {8: 1, 28: 4, 32: 4, 64: 8},
    "shufflenetv2_x0_5": {8: 1, 28: 4, 32: 4, 64: 8},
    "convnet_d1": {8: 4, 28: 16, 32: 16, 64: 32},
    "convnet_d2": {8: 2, 28: 8, 32: 8, 64: 16},
    "convnet_w32": {8: 2, 28: 4, 32: 4, 64: 4},
    # IDC / Minimax students: ConvNet-6 (1×1 at 64 px, 3×3 at 224) and ResNet-18 with instance norm
    "convnet_d6": {64: 1},
    "resnet18_in": {8: 1, 28: 4, 32: 4, 64: 8},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run this module single-threaded, restoring the setting afterwards.

    The test machines' cores are shared: with other jobs running, two OpenMP threads that wait on each other at
    every barrier were measured 5-10× slower than one thread for these small-batch passes.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _input(size: int, chans: int) -> torch.Tensor:
    return torch.randn(BATCH, chans, size, size, generator=torch.Generator().manual_seed(0))


def test_native_sizes_cover_the_catalog():
    assert {(8, 1), (28, 1), (32, 3), (64, 3)} <= set(SIZES)


def test_every_arch_is_covered_by_the_final_map_table():
    assert set(FINAL_MAP) == set(BUILTIN_ARCHS)
    assert len(BUILTIN_ARCHS) == 21


@pytest.mark.parametrize("size", [8, 28, 32])
def test_convnet_d6_refuses_inputs_it_would_pool_below_one_pixel(size):
    with pytest.raises(ValueError, match="depth 6 pools"):
        create_model("convnet_d6", num_classes=NUM_CLASSES, img_size=size)


def test_resnet18_in_has_instance_norm_where_resnet18_has_batchnorm():
    bn = [type(m) for m in create_model("resnet18", 10, 32).modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    inorm = create_model("resnet18_in", 10, 32)
    gn = [m for m in inorm.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert len(gn) == len(bn) == 20 and all(isinstance(m, nn.GroupNorm) and m.num_groups == m.num_channels for m in gn)


@pytest.mark.parametrize(("arch", "size", "chans"), CASES)
def test_forward_backward_features(arch, size, chans):
    """Train-mode forward through the feature contract, backward, shapes, finiteness, final map size."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes=NUM_CLASSES, img_size=size, in_chans=chans).train()
    assert model.ddbench_arch == arch
    feats = model.forward_features(_input(size, chans))
    pooled = model.forward_head(feats, pre_logits=True)
    out = model.forward_head(feats)
    assert pooled.shape == (BATCH, model.num_features)
    assert out.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(out).all() and torch.isfinite(pooled).all()
    if size in FINAL_MAP[arch]:
        expected = FINAL_MAP[arch][size]
        got = feats.shape[1] if feats.ndim == 3 else feats.shape[-1]
        assert got == expected, f"{arch} at {size}px: final map/tokens {tuple(feats.shape)}, expected {expected}"
        if feats.ndim == 4:
            assert feats.shape[-2] == feats.shape[-1]
    out.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"


# forward(x) == forward_head(forward_features(x)) does not depend on the input size within a variant, so it is
# checked at the cheapest low-res size of each channel count (8 px 1-channel, 32 px 3-channel) and, slow, at 224.
EVAL_CASES = [c for c in CASES if c.values[1] in (8, 32) or c.values[1] > 64]


@pytest.mark.parametrize(("arch", "size", "chans"), EVAL_CASES)
def test_forward_is_head_of_features(arch, size, chans):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=NUM_CLASSES, img_size=size, in_chans=chans).eval()
    x = _input(size, chans)
    with torch.no_grad():
        logits = model(x)
        relogits = model.forward_head(model.forward_features(x))
    assert logits.shape == (BATCH, NUM_CLASSES)
    torch.testing.assert_close(relogits, logits, rtol=0, atol=0)


# -- exact parameter counts ---------------------------------------------------------------------------------------


def test_convnet_mtt_cifar10_parameter_count():
    # conv 3→128 (+bias), 2× conv 128→128 (+bias), 3 GroupNorm affines, Linear(4·4·128 → 10)
    derived = (3 * 9 * 128 + 128) + 2 * (128 * 9 * 128 + 128) + 3 * 2 * 128 + (2048 * 10 + 10)
    model = create_model("convnet", num_classes=10, img_size=32)
    assert derived == 320_010
    assert _n_params(model) == derived
    assert model.depth == 3 and model.width == 128
    assert all(m.num_groups == m.num_channels == 128 for m in model.modules() if isinstance(m, nn.GroupNorm))


def test_convnet_depth3_tiny_parameter_count():
    model = create_model("convnet", num_classes=200, img_size=64, depth=3)
    assert _n_params(model) == 1_938_120  # specs/mtt.md §1: 8·8·128 = 8192 features
    assert model.num_features == 8192


def test_convnet_default_tiny_is_d4():
    model = create_model("convnet", num_classes=200, img_size=64)
    assert model.depth == 4
    assert _n_params(model) == 857_160  # specs/mtt.md §1, ConvNetD4 on Tiny-ImageNet


def test_convnet_mnist_pads_first_conv_to_32():
    model = create_model("convnet", num_classes=10, img_size=28, in_chans=1)
    assert model.features[0].padding == (3, 3)
    derived = (1 * 9 * 128 + 128) + 2 * (128 * 9 * 128 + 128) + 3 * 2 * 128 + (2048 * 10 + 10)
    assert _n_params(model) == derived == 317_706


def test_convnet_bn_and_none_norms():
    bn = create_model("convnet_bn", num_classes=10, img_size=32)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 3
    assert not any(isinstance(m, nn.GroupNorm) for m in bn.modules())
    plain = create_model("convnet", num_classes=10, img_size=32, norm="none")
    assert _n_params(plain) == 320_010 - 3 * 2 * 128
    assert isinstance(plain.features[1], nn.ReLU)  # upstream layout: no norm layer at all


def test_convnet_instance_norm_has_no_train_eval_difference():
    model = create_model("convnet", num_classes=10, img_size=32)
    x = _input(32, 3)
    with torch.no_grad():
        torch.testing.assert_close(model.train()(x), model.eval()(x))


def test_resnet18_imagenet_is_torchvision():
    torch.manual_seed(0)
    ours = create_model("resnet18", num_classes=1000, img_size=224)
    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    assert _n_params(ours) == 11_689_512
    assert ours.stem == "imagenet"
    assert (ours.conv1.kernel_size, ours.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(ours.maxpool, nn.MaxPool2d)
    ref_sd = ref.state_dict()
    assert list(ours.state_dict()) == list(ref_sd)
    assert all(torch.equal(v, ref_sd[k]) for k, v in ours.state_dict().items())


def test_resnet18_lowres_parameter_count():
    # torchvision ResNet-18 (1000 classes) minus the 7×7→3×3 stem saving and the 1000→10 classifier saving.
    stem_saving = (7 * 7 - 3 * 3) * 3 * 64
    fc_saving = (512 + 1) * (1000 - 10)
    derived = 11_689_512 - stem_saving - fc_saving
    assert derived == 11_173_962
    assert _n_params(create_model("resnet18", num_classes=10, img_size=32)) == derived


@pytest.mark.parametrize("width_mult", [0.25, 0.5, 1.0])
def test_resnet18_width_mult_parameter_count(width_mult):
    # Base width w, stages (w, 2w, 4w, 8w), 3×3 stem, 10 classes, counted by hand per stage:
    # 3×3 convs and 1×1 shortcuts give (36 + 128 + 512 + 2048)·w² weights; stem conv 27w, BN affine 150w,
    # classifier 80w + 10 (w = 64 gives 11,173,962, the full network above).
    w = round(64 * width_mult)
    model = create_model("resnet18", num_classes=10, img_size=32, width_mult=width_mult)
    assert _n_params(model) == 2724 * w * w + 257 * w + 10
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 20 and next(n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)) == "bn1"
    assert model.num_features == 8 * w and all(torch.equal(b.weight, torch.ones_like(b.weight)) for b in bns)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_width_mult_convnet_and_unsupported_archs():
    assert create_model("convnet_bn", num_classes=10, img_size=32, width_mult=0.25).width == 32
    assert create_model("convnet", num_classes=10, img_size=32, width=64, width_mult=0.25).width == 64  # explicit
    with pytest.raises(ValueError, match="vgg11_bn has no width option"):
        create_model("vgg11_bn", num_classes=10, img_size=32, width_mult=0.5)


@pytest.mark.parametrize("size", [32, 224])
def test_resnet18_has_20_batchnorms_with_stem_first(size):
    model = create_model("resnet18", num_classes=10, img_size=size)
    bns = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 20
    assert bns[0] == "bn1"


@pytest.mark.parametrize(
    ("size", "stem"), [(8, "lowres"), (32, "lowres"), (64, "lowres"), (65, "imagenet"), (224, "imagenet")]
)
def test_resnet_stem_selected_from_img_size(size, stem):
    model = create_model("resnet18", num_classes=10, img_size=size)
    assert model.stem == stem
    lowres = stem == "lowres"
    assert model.conv1.kernel_size == ((3, 3) if lowres else (7, 7))
    assert model.conv1.stride == ((1, 1) if lowres else (2, 2))
    assert model.conv1.bias is None
    assert isinstance(model.maxpool, nn.Identity if lowres else nn.MaxPool2d)


def test_resnet_stem_override_and_in_chans():
    model = create_model("resnet50", num_classes=10, img_size=224, in_chans=1, stem="lowres")
    assert model.stem == "lowres" and model.conv1.in_channels == 1 and model.conv1.kernel_size == (3, 3)
    model = create_model("resnet18", num_classes=10, img_size=28, in_chans=1, stem="imagenet")
    assert model.conv1.in_channels == 1 and model.conv1.kernel_size == (7, 7)


def test_resnet18_lowres_matches_sre2l_surgery():
    """Our construction-time variant equals torchvision resnet18 patched the SRe2L/DWA way (same weights)."""
    ref = torchvision.models.resnet18(num_classes=10)
    ref.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    ref.maxpool = nn.Identity()
    ours = create_model("resnet18", num_classes=10, img_size=32)
    ours.load_state_dict(ref.state_dict())  # strict: identical names and shapes
    x = _input(32, 3)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x))


def test_resnet_forward_features_is_layer4_output():
    model = create_model("resnet18", num_classes=10, img_size=32).eval()
    seen = {}
    model.layer4.register_forward_hook(lambda mod, inp, out: seen.setdefault("layer4", out))
    x = _input(32, 3)
    with torch.no_grad():
        model(x)
        feats = model.forward_features(x)
    torch.testing.assert_close(feats, seen["layer4"])
    assert (feats >= 0).all()  # after the final ReLU
    assert feats.shape == (BATCH, 512, 4, 4)


def test_deit_tiny_bn_has_no_layernorm_and_bn_in_every_mlp():
    model = create_model("deit_tiny_bn", num_classes=10, img_size=32)
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    assert len(model.blocks) == 12 and model.num_features == 192 and model.blocks[0].attn.num_heads == 3
    for block in model.blocks:
        assert isinstance(block.norm1, TokenBatchNorm) and isinstance(block.norm2, TokenBatchNorm)
        assert isinstance(block.mlp.norm, nn.BatchNorm1d) and block.mlp.norm.num_features == 4 * 192
    assert isinstance(model.norm, TokenBatchNorm)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 12 * 3 + 1
    assert model.patch_embed.patch_size == (4, 4)


def test_deit_tiny_bn_parameter_count():
    # Same parameters as timm's LayerNorm DeiT-Tiny (LN and BN both hold weight+bias per channel), plus one
    # BatchNorm(768) per block.
    ref = _n_params(timm.create_model("deit_tiny_patch16_224", pretrained=False))
    model = create_model("deit_tiny_bn", num_classes=1000, img_size=224)
    assert model.patch_embed.patch_size == (16, 16)
    assert _n_params(model) == ref + 12 * 2 * 768 == 5_717_416 + 18_432


def test_token_batchnorm_is_batchnorm_over_tokens():
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(1))
    ours, ref = TokenBatchNorm(8), nn.BatchNorm1d(8)
    expected = ref(x.transpose(1, 2)).transpose(1, 2)  # BN1d over (B, C, N): statistics over B·N
    torch.testing.assert_close(ours(x), expected)
    torch.testing.assert_close(ours.running_var, ref.running_var)


def test_resnet_ap10_parameter_counts():
    def block(cin, cout, strided):  # two bias-free 3×3 convs + 2 norms (+ 1×1 projection + norm)
        n = cin * 9 * cout + cout * 9 * cout + 2 * 2 * cout
        return n + (cin * cout + 2 * cout if strided else 0)

    small = 3 * 9 * 32 + 2 * 32 + block(32, 32, False) + block(32, 64, True) + block(64, 128, True)
    small += block(128, 256, True) + 256 * 10 + 10
    large = 3 * 49 * 64 + 2 * 64 + block(64, 64, False) + block(64, 128, True) + block(128, 256, True)
    large += block(256, 512, True) + 512 * 1000 + 1000
    model = create_model("resnet_ap10", num_classes=10, img_size=32)
    assert model.stem == "lowres" and _n_params(model) == small == 1_228_970
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # instance norm by default
    assert not any(isinstance(m, nn.Conv2d) and m.stride != (1, 1) for m in model.modules())  # pooling only
    big = create_model("resnet_ap10", num_classes=1000, img_size=224)
    assert big.stem == "imagenet" and _n_params(big) == large == 5_418_792


def test_vgg_cifar_parameter_counts():
    # kuangliu/DWA CIFAR VGG-16: 13 conv(+bias) + 13 BN + Linear(512, 10).
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    cins = [3, *widths[:-1]]
    derived = sum(ci * 9 * co + co + 2 * co for ci, co in zip(cins, widths)) + 512 * 10 + 10
    model = create_model("vgg16_bn", num_classes=10, img_size=32)
    assert _n_params(model) == derived == 14_728_266
    assert isinstance(model.classifier, nn.Linear)


def test_vgg_drops_pools_below_one_pixel():
    model = create_model("vgg11_bn", num_classes=10, img_size=8, in_chans=1)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 3
    assert sum(isinstance(m, nn.MaxPool2d) for m in create_model("vgg11_bn", 10, img_size=32).features) == 5


@pytest.mark.slow
def test_vgg11_bn_imagenet_loads_torchvision_weights():
    ref = torchvision.models.vgg11_bn()
    ours = create_model("vgg11_bn", num_classes=1000, img_size=224)
    assert _n_params(ours) == _n_params(ref) == 132_868_840
    ours.load_state_dict(ref.state_dict())
    x = _input(224, 3)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x))


def test_shufflenetv2_imagenet_loads_torchvision_weights():
    ref = torchvision.models.shufflenet_v2_x1_0()
    ours = create_model("shufflenetv2", num_classes=1000, img_size=224)
    assert _n_params(ours) == _n_params(ref) == 2_278_604
    ours.load_state_dict(ref.state_dict())
    x = _input(96, 3)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x))
    low = create_model("shufflenetv2", num_classes=10, img_size=32)
    assert low.conv1[0].stride == (1, 1) and isinstance(low.maxpool, nn.Identity)


@pytest.mark.parametrize(
    ("arch", "timm_name"), [("mobilenetv2", "mobilenetv2_100"), ("efficientnet_b0", "efficientnet_b0")]
)
def test_timm_families_keep_timm_parameters(arch, timm_name):
    ref = _n_params(timm.create_model(timm_name, pretrained=False, num_classes=10))
    big = create_model(arch, num_classes=10, img_size=224)
    small = create_model(arch, num_classes=10, img_size=32)
    assert _n_params(big) == _n_params(small) == ref
    assert big.conv_stem.stride == (2, 2) and small.conv_stem.stride == (1, 1)
    assert small.stem == "lowres" and big.stem == "imagenet"
    assert [i["reduction"] for i in small.feature_info][-1] == 8
    assert [i["reduction"] for i in big.feature_info][-1] == 32


# -- size rules ----------------------------------------------------------------------------------------------------


def test_size_rules():
    assert {s: resolve_stem("auto", s) for s in (8, 28, 32, 64, 65, 224)} == {
        8: "lowres", 28: "lowres", 32: "lowres", 64: "lowres", 65: "imagenet", 224: "imagenet",
    }  # fmt: skip
    assert resolve_stem("imagenet", 32) == "imagenet"
    with pytest.raises(ValueError, match="unknown stem"):
        resolve_stem("tiny", 32)
    assert {s: vit_patch_size(s) for s in (8, 28, 32, 64, 96, 128, 224)} == {
        8: 2, 28: 4, 32: 4, 64: 8, 96: 16, 128: 16, 224: 16,
    }  # fmt: skip
    assert {s: convnet_depth(s) for s in (8, 28, 32, 64, 128, 224)} == {8: 2, 28: 3, 32: 3, 64: 4, 128: 5, 224: 5}
    assert vgg_pool_plan(8) == [True, True, True, False, False]
    assert vgg_pool_plan(28) == [True, True, True, True, False]
    assert all(vgg_pool_plan(224))
    for size in (8, 28, 30, 32, 64, 100, 224):
        assert size % vit_patch_size(size) == 0


def test_norm2d_names():
    gn = norm2d("instance", 16)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 16 and gn.affine
    assert isinstance(norm2d("batch", 16), nn.BatchNorm2d)
    assert isinstance(norm2d("none", 16), nn.Identity)
    with pytest.raises(ValueError, match="unknown norm"):
        norm2d("layer", 16)


# -- EDC observers (spec edc.md §6) --------------------------------------------------------------------------------


def test_wrn16_2_parameter_count():
    # Pre-activation BasicBlocks, two per group, widths 32/64/128 after a 16-channel stem; counted by hand:
    # per block BN(c_in) + 3×3 c_in→c_out + BN(c_out) + 3×3 c_out→c_out (+ 1×1 projection when the width changes).
    def block(cin, cout):
        return 2 * cin + cin * 9 * cout + 2 * cout + cout * 9 * cout + (cin * cout if cin != cout else 0)

    body = block(16, 32) + block(32, 32) + block(32, 64) + block(64, 64) + block(64, 128) + block(128, 128)
    derived = 3 * 9 * 16 + body + 2 * 128 + (128 * 100 + 100)
    model = create_model("wrn16_2", num_classes=100, img_size=32)
    assert _n_params(model) == derived == 703_284  # CRD / RepDistiller report WRN-16-2 as 0.70 M on CIFAR-100
    assert model.stem == "lowres" and model.num_features == 128
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13
    big = create_model("wrn16_2", num_classes=100, img_size=224)
    assert big.stem == "imagenet" and big.conv1.stride == (2, 2) and isinstance(big.maxpool, nn.MaxPool2d)


def test_alexnet_small_is_the_dc_benchmark_alexnet():
    model = create_model("alexnet", num_classes=10, img_size=32)
    convs = [(3, 128, 5), (128, 192, 5), (192, 256, 3), (256, 192, 3), (192, 192, 3)]
    derived = sum(ci * k * k * co + co for ci, co, k in convs) + 192 * 4 * 4 * 10 + 10
    assert _n_params(model) == derived == 1_872_202
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in model.modules())  # conv hooks only
    mnist = create_model("alexnet", num_classes=10, img_size=28, in_chans=1)
    assert mnist.features[0].padding == (4, 4) and mnist.num_features == 3072  # DC pads MNIST to 32


def test_alexnet_imagenet_loads_torchvision_weights():
    ref = torchvision.models.alexnet()
    ours = create_model("alexnet", num_classes=1000, img_size=224)
    assert _n_params(ours) == _n_params(ref) == 61_100_840
    ours.load_state_dict(ref.state_dict())
    x = _input(96, 3)  # the adaptive pool makes any size above ~63 px valid; 96 keeps this test cheap
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x))
    assert ours.num_features == 4096


def test_mobilenetv2_050_is_torchvision_half_width():
    # torchvision's width_mult=0.5 MobileNetV2 and timm's mobilenetv2_050 are the same network (1,968,680 params)
    ref = _n_params(torchvision.models.mobilenet_v2(width_mult=0.5))
    assert ref == _n_params(timm.create_model("mobilenetv2_050", pretrained=False)) == 1_968_680
    big = create_model("mobilenetv2_050", num_classes=1000, img_size=224)
    small = create_model("mobilenetv2_050", num_classes=1000, img_size=32)
    assert _n_params(big) == _n_params(small) == ref
    assert big.conv_stem.stride == (2, 2) and small.conv_stem.stride == (1, 1)
    assert small.conv_stem.out_channels == 16 and small.num_features == 1280


def test_shufflenetv2_x0_5_loads_torchvision_weights():
    ref = torchvision.models.shufflenet_v2_x0_5()
    ours = create_model("shufflenetv2_x0_5", num_classes=1000, img_size=224)
    assert _n_params(ours) == _n_params(ref) == 1_366_792
    ours.load_state_dict(ref.state_dict())
    x = _input(96, 3)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x))
    low = create_model("shufflenetv2_x0_5", num_classes=10, img_size=32)
    assert low.conv1[0].stride == (1, 1) and isinstance(low.maxpool, nn.Identity)


def test_edc_convnet_variants():
    d1 = create_model("convnet_d1", num_classes=10, img_size=32)
    d2 = create_model("convnet_d2", num_classes=10, img_size=32)
    w32 = create_model("convnet_w32", num_classes=10, img_size=32)
    assert (d1.depth, d1.width, d2.depth, d2.width, w32.depth, w32.width) == (1, 128, 2, 128, 3, 32)
    assert _n_params(d1) == (3 * 9 * 128 + 128) + 2 * 128 + 16 * 16 * 128 * 10 + 10
    assert _n_params(d2) == (3 * 9 * 128 + 128) + (128 * 9 * 128 + 128) + 2 * 2 * 128 + 8 * 8 * 128 * 10 + 10
    assert _n_params(w32) == (3 * 9 * 32 + 32) + 2 * (32 * 9 * 32 + 32) + 3 * 2 * 32 + 4 * 4 * 32 * 10 + 10
    assert create_model("convnet_d1", num_classes=10, img_size=64).depth == 1  # fixed, not from the size rule
    for m in (d1, d2, w32):
        assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())


def test_convnet_d6_at_224_has_the_idc_feature_width():
    """Spec minimax.md §5: six blocks of width 128 end at 3×3 at 224 px, so the classifier reads 1152 features."""
    model = create_model("convnet_d6", num_classes=10, img_size=224)
    convs = 3 * 9 * 128 + 128 + 5 * (128 * 9 * 128 + 128)
    assert model.num_features == 1152
    assert _n_params(model) == convs + 6 * 2 * 128 + 1152 * 10 + 10 == 754_570
