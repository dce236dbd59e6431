"""Pixel spaces: ZCA (kornia semantics, round trip, spectrum), the spaces' test transforms, artifact round trips,
and a ZCA set scored on a test set whitened by the same transform."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ddbench.data.source import TensorSource
from ddbench.distilled import DistilledSet
from ddbench.evaluate import evaluate
from ddbench.pixels import PIXEL_SPACES, NormalizedSpace, UInt8Space, ZCASpace, fit_zca
from ddbench.protocol import Protocol


def images(n: int = 200, c: int = 3, side: int = 4, seed: int = 0) -> torch.Tensor:
    """Correlated uint8 images (a smooth base plus noise), so ZCA has a non-trivial covariance to undo."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, side, side, generator=g)
    x = 0.6 * base + 0.4 * torch.rand(n, c, side, side, generator=g)
    return (x * 255).round().to(torch.uint8)


def test_zca_round_trip_recovers_the_input() -> None:
    x = images()
    zca = ZCASpace.fit(x, eps=0.1)
    x01 = x.float() / 255
    z = zca.test_input(x01)
    assert z.shape == x.shape and not torch.allclose(z, x01, atol=1e-2)
    torch.testing.assert_close(zca.to_pixels(z), x01, atol=1e-4, rtol=0)


def test_whitened_train_data_has_spectrum_lambda_over_lambda_plus_eps() -> None:
    x = images(n=300)
    eps = 0.1
    zca = ZCASpace.fit(x, eps=eps)
    flat = (x.double() / 255).reshape(len(x), -1)
    lam = torch.linalg.eigvalsh(torch.cov(flat.T))  # unbiased, as kornia
    z = zca.test_input(x.float() / 255).double().reshape(len(x), -1)
    got = torch.linalg.eigvalsh(torch.cov(z.T))
    torch.testing.assert_close(got, (lam / (lam + eps)).sort().values, atol=2e-5, rtol=1e-4)
    assert got.max() < 1  # eps regularises: nothing is whitened to unit variance


def test_zca_equals_kornia_zca_whitening() -> None:
    kornia = pytest.importorskip("kornia")
    x = images(n=150)
    x01 = x.float() / 255
    ours = ZCASpace.fit(x, eps=0.1).test_input(x01)
    ref = kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True).fit(x01)
    torch.testing.assert_close(ours, ref(x01), atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(ref.inverse_transform(ref(x01)), x01, atol=1e-4, rtol=0)


def test_fit_zca_is_cached_per_data_and_eps() -> None:
    from ddbench.data import load_dataset

    ds = load_dataset("digits")
    a = fit_zca(ds, eps=0.1)
    b = fit_zca(ds, eps=0.1)
    c = fit_zca(ds, eps=0.5)
    assert torch.equal(a.state()["W"], b.state()["W"]) and not torch.equal(a.state()["W"], c.state()["W"])
    assert a.params() == {"eps": 0.1, "fit_images": len(ds.train)}


def test_uint8_and_normalized_spaces_are_inverse_of_their_test_transform() -> None:
    x01 = torch.rand(5, 3, 4, 4)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    for space in (UInt8Space(mean, std), NormalizedSpace(mean, std)):
        stored = space.from_unit(x01)
        torch.testing.assert_close(space.to_unit(stored), x01, atol=1 / 255 + 1e-6, rtol=0)
    expected = (x01 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(NormalizedSpace(mean, std).test_input(x01), expected)
    with pytest.raises(ValueError, match=r"needs torch\.uint8"):
        UInt8Space.check(torch.rand(2, 3, 4, 4))


def test_zca_state_travels_in_the_artifact(tmp_path) -> None:
    x = images()
    zca = ZCASpace.fit(x, eps=0.1)
    d = DistilledSet.in_space(zca.test_input(x[:4].float() / 255), torch.tensor([0, 1, 0, 1]), zca)
    back = DistilledSet.load(d.save(tmp_path / "zca"))
    assert back.pixel_space == "zca" and back.pixel_params == {"eps": 0.1, "fit_images": 200}
    restored = back.space((0.5,) * 3, (0.25,) * 3)
    for name, tensor in zca.state().items():
        assert torch.equal(restored.state()[name], tensor), name
    torch.testing.assert_close(restored.to_pixels(back.images), x[:4].float() / 255, atol=1e-4, rtol=0)


class Probe(nn.Module):
    """A linear read-out of one pixel coordinate, frozen at init: its accuracy shows what space it was fed."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(()))  # trained, but a constant offset cannot change the sign test

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)[:, 0]  # first coordinate of the model input
        return torch.stack([-v, v], 1) + 0 * self.scale


def test_zca_set_is_scored_on_a_test_set_whitened_the_same_way(monkeypatch) -> None:
    """Class is the sign of the first *whitened* coordinate. Raw pixels (all positive) would put every test image in
    class 1, so the score is 100% only if the evaluator applies the set's own transform to the test images."""
    import ddbench.models

    # 1×1×2 images; whitening: z = (x − 0.5) @ diag(−1, 1): class 0 ⇔ x₀ > 0.5
    mean = torch.tensor([0.5, 0.5])
    w = torch.diag(torch.tensor([-1.0, 1.0]))
    zca = ZCASpace((0.0,), (1.0,), {"mean": mean, "W": w, "W_inv": w}, {"eps": 0.0})
    g = torch.Generator().manual_seed(0)
    x01 = torch.rand(40, 1, 1, 2, generator=g)
    labels = (x01[:, 0, 0, 0] < 0.5).long()  # class 1 ⇔ whitened coordinate > 0
    test = TensorSource((x01 * 255).round().to(torch.uint8), labels)
    dataset = type(
        "D", (), {"classes": ("a", "b"), "test": test, "spec": type("S", (), {"mean": (0.0,), "std": (1.0,)})()}
    )()
    distilled = DistilledSet.in_space(zca.test_input(x01[:4]), labels[:4], zca)
    monkeypatch.setattr(ddbench.models, "create_model", lambda *a, **k: Probe(2))
    protocol = Protocol(name="probe", epochs=1, batch_size=4, aug=(), lr=1e-3, eval_seeds=1)
    (whitened,) = evaluate(distilled, dataset, ["probe"], protocol, seed=0)
    raw = DistilledSet(distilled.images, distilled.labels, "normalized", meta={"mean": [0.0], "std": [1.0]})
    (unwhitened,) = evaluate(raw, dataset, ["probe"], protocol, seed=0)
    assert whitened.top1 == 100.0
    assert math.isclose(unwhitened.top1, 100.0 * float((labels == 1).float().mean()), abs_tol=1e-3)  # all "class 1"


class Scaled(NormalizedSpace):
    """A plugin pixel space defined in a test file: normalized images stored ×2."""

    name = "scaled-test"

    def test_input(self, x01: torch.Tensor) -> torch.Tensor:
        return 2 * super().test_input(x01)

    def from_unit(self, x01: torch.Tensor) -> torch.Tensor:
        return self.test_input(x01)

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        return super().to_pixels(images / 2)


def test_a_new_pixel_space_plugs_in_without_harness_edits(tmp_path) -> None:
    if "scaled-test" not in PIXEL_SPACES:
        PIXEL_SPACES.register("scaled-test", Scaled, origin="tests")
    space = Scaled((0.5,), (0.25,))
    x01 = torch.rand(4, 1, 2, 2)
    d = DistilledSet.in_space(space.from_unit(x01), torch.arange(4) % 2, space, meta={"mean": [0.5], "std": [0.25]})
    back = DistilledSet.load(d.save(tmp_path / "s"))
    assert back.pixel_space == "scaled-test"
    torch.testing.assert_close(back.space().to_unit(back.images), x01)
    with pytest.raises(ValueError, match="unknown pixel_space"):
        DistilledSet(torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), "nonexistent")
