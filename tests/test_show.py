"""``ddbench show``: grid geometry, class-per-row placement, de-normalisation, artifact discovery."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from ddbench.cli import main
from ddbench.cli.show_cmd import find_artifact, image_grid
from ddbench.distilled import DistilledSet
from ddbench.errors import UserError

K, IPC, H = 3, 4, 8


def _uint8_set() -> DistilledSet:
    # image i of class k is a flat value 10·k + i, except pixel (1, 2) of class 2 / image 3 = 200
    labels = torch.arange(K).repeat_interleave(IPC).flip(0)  # label order must not matter
    images = torch.zeros(K * IPC, 1, H, H, dtype=torch.uint8)
    seen = [0] * K
    for n, k in enumerate(labels.tolist()):
        images[n] = 10 * k + seen[k]
        if (k, seen[k]) == (2, 3):
            images[n, 0, 1, 2] = 200
        seen[k] += 1
    return DistilledSet(images=images, labels=labels, pixel_space="uint8")


def test_grid_geometry_and_pixels(tmp_path: Path) -> None:
    artifact = _uint8_set().save(tmp_path / "run" / "artifact")
    out = tmp_path / "grid.png"
    assert main(["-q", "show", str(tmp_path / "run"), "--out", str(out), "--scale", "2"]) == 0
    img = Image.open(out)
    cell, pad = H * 2, 2
    assert img.mode == "L"
    assert img.size == (IPC * (cell + pad) + pad, K * (cell + pad) + pad)
    for k in range(K):
        for i in range(IPC):
            x, y = pad + i * (cell + pad), pad + k * (cell + pad)
            assert img.getpixel((x + cell - 1, y)) == 10 * k + i, (k, i)
    x, y = pad + 3 * (cell + pad), pad + 2 * (cell + pad)
    assert img.getpixel((x + 2 * 2, y + 1 * 2)) == 200 and img.getpixel((x + 2 * 2 + 1, y + 1 * 2 + 1)) == 200
    assert img.getpixel((0, 0)) == 255  # white frame
    assert find_artifact(artifact) == artifact


def test_normalized_images_are_denormalized_with_meta(tmp_path: Path) -> None:
    mean, std = [0.5, 0.25, 0.0], [0.25, 0.5, 1.0]
    images = torch.zeros(2, 3, 4, 4)
    images[1, :, 0, 0] = torch.tensor([1.0, 0.5, 2.0])  # → 0.75, 0.5, 1.0 (clamped from 2.0)
    ds = DistilledSet(images, torch.tensor([0, 1]), pixel_space="normalized", meta={"mean": mean, "std": std})
    grid = image_grid(ds, scale=1, padding=0)
    assert grid.mode == "RGB" and grid.size == (4, 8)
    assert grid.getpixel((0, 4)) == (191, 128, 255)
    assert grid.getpixel((0, 0)) == (128, 64, 0)


def test_zca_images_are_shown_through_the_exact_inverse_whitening() -> None:
    """A ZCA set is displayed as the pixels it was whitened from, not de-normalised whitened values (issue 9)."""
    from ddbench.pixels import ZCASpace

    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (40, 3, 4, 4), generator=g, dtype=torch.uint8)
    zca = ZCASpace.fit(real, eps=0.1)
    shown = real[:2]
    ds = DistilledSet.in_space(zca.test_input(shown.float() / 255), torch.tensor([0, 1]), zca,
                               meta={"mean": [0.5] * 3, "std": [0.25] * 3})  # fmt: skip
    grid = image_grid(ds, scale=1, padding=0)
    assert grid.size == (4, 8)
    for k in range(2):
        for x in range(4):
            expect = tuple(int(v) for v in shown[k, :, 0, x])
            got = grid.getpixel((x, 4 * k))
            assert max(abs(a - b) for a, b in zip(got, expect)) <= 1, (k, x, got, expect)


def test_default_out_and_missing_artifact(tmp_path: Path) -> None:
    _uint8_set().save(tmp_path / "run" / "artifact")
    assert main(["-q", "show", str(tmp_path / "run")]) == 0
    assert Image.open(tmp_path / "run" / "grid.png").size[0] > 0
    with pytest.raises(UserError, match="no distilled set"):
        find_artifact(tmp_path)
    assert main(["-q", "show", str(tmp_path)]) == 2
