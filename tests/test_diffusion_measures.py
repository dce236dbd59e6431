"""The generation measures of Minimax's acceptance (spec ``minimax.md`` §9.2 (a), (b)) on hand-computed cases."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from ddbench.ops.diffusion import measures as MS


def img(*values: int) -> torch.Tensor:
    """A 1×1×len(values) uint8 image."""
    return torch.tensor(values, dtype=torch.uint8).view(1, 1, len(values))


def stack(*images: torch.Tensor) -> torch.Tensor:
    return torch.stack(images)


def test_signed_maps_uint8_onto_the_diffusion_pixel_range():
    x = MS.signed(stack(img(0, 255), img(255, 0)))
    assert torch.equal(x, torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))


def test_mean_off_diagonal_cosine_leaves_out_self_similarity():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # pairwise cosines 0, 1/√2, 1/√2
    assert MS.mean_off_diagonal_cosine(x) == pytest.approx(2 / (3 * math.sqrt(2)))
    with pytest.raises(ValueError, match="at least 2"):
        MS.mean_off_diagonal_cosine(x[:1])


def test_within_class_cosine_weights_classes_equally_and_can_be_centred():
    # class 0: three identical images (cos 1); class 1: two opposite images (cos -1).
    images = stack(img(255, 0), img(255, 0), img(255, 0), img(255, 255), img(0, 0))
    labels = torch.tensor([0, 0, 0, 1, 1])
    assert MS.within_class_cosine(images, labels) == pytest.approx(0.0)  # pooled pairs would give (6 - 2) / 8
    # [1, 1] and [1, -1] are orthogonal; minus the centre [0, 1] they are [1, 0] and [1, -2]: cos 1/√5
    pair, one = stack(img(255, 255), img(255, 0)), torch.tensor([0, 0])
    assert MS.within_class_cosine(pair, one) == pytest.approx(0.0)
    assert MS.within_class_cosine(pair, one, torch.tensor([0.0, 1.0])) == pytest.approx(1 / math.sqrt(5))


class FakeSplit:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def load(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx]


def fake_dataset(real: torch.Tensor, real_labels: torch.Tensor) -> SimpleNamespace:
    return SimpleNamespace(
        train=FakeSplit(real, real_labels), class_indices=lambda c: (real_labels == c).nonzero().flatten()
    )


def test_real_cosines_look_only_at_the_images_own_class():
    real = stack(img(255, 0), img(0, 255), img(255, 255))
    dataset = fake_dataset(real, torch.tensor([0, 0, 1]))
    gen = stack(img(255, 255), img(255, 0), img(0, 0))
    labels = torch.tensor([0, 0, 1])
    # nearest: class 0: [1, 1] is orthogonal to both real images (max 0), [1, -1] equals one (1) → 0.5;
    # class 1: [-1, -1] against [1, 1] → -1. A pooled real set would give class 0's [1, 1] a match of 1.
    # mean over all of a class's real images: [1, 1] → (0 + 0) / 2, [1, -1] → (1 - 1) / 2, so class 0 → 0; class 1 → -1
    # farthest: [1, 1] → min(0, 0), [1, -1] → min(1, -1), so class 0 → -0.5; class 1 → -1
    assert MS.real_cosines(gen, labels, dataset) == pytest.approx({"nearest": -0.25, "mean": -0.5, "farthest": -0.75})


def test_generation_measures_centres_on_the_mean_real_image():
    real = stack(img(255, 255), img(255, 0))  # signed [1, 1], [1, -1]: mean [1, 0]
    dataset = fake_dataset(real, torch.tensor([0, 0]))
    torch.testing.assert_close(MS.real_centre(dataset), torch.tensor([1.0, 0.0]))
    # the generation is the real set: raw cosine 0, centred [0, 1] vs [0, -1] → -1, each image its own nearest → 1
    got = MS.generation_measures(real, torch.tensor([0, 0]), dataset)
    # farthest: [1, 1] against {[1, 1], [1, -1]} → min(1, 0) = 0, likewise [1, -1]
    expected = {"within_cos": 0.0, "within_cos_centred": -1.0, "nearest_real_cos": 1.0, "mean_real_cos": 0.5,
                "farthest_real_cos": 0.0}  # fmt: skip
    assert got == pytest.approx(expected)
