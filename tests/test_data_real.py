"""Loaders on the real datasets in ../shared/data (or $DDBENCH_TEST_DATA); skipped where the data is absent.

The zips are extracted into a session-scoped scratch folder, in the layouts users have (CIFAR-10 as
``train/<class>/NNNN.jpg`` JPEG folders, Tiny-ImageNet-200 as released). CIFAR-10's official index order is
checked through the data's npz index (canonical index → JPEG name, exact labels, and some original pixels).

Cost: extracting a zip member and decoding it take about as long as each other, and other engineers' runs share
the 2 cores. So the ``data`` tests extract and decode the full test splits (20k images) but only the first few train
images of each class; the ``slow`` test at the end extracts and decodes all 90k train images. The scratch folder is
deleted at the end of the session, so no 100k-file tree is left for later pytest runs to clean up.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from conftest import shared_data
from PIL import Image

from ddbench.data import DATASETS, Dataset, cifar, folder, load_dataset, tiny_imagenet
from ddbench.data.catalog import CIFAR10_CLASSES

pytestmark = pytest.mark.data

DATA = shared_data()
CIFAR = DATA / "cifar10"
TINY = DATA / "tiny-imagenet-200"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
OFFICIAL_FIRST_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
TINY_CLASSES = DATASETS.get("tiny-imagenet").classes


def need(*paths: Path) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"real data not available: {', '.join(map(str, missing))}")


def first_per_folder(k: int) -> Callable[[list[str]], list[str]]:
    """Member filter: the first ``k`` files (sorted) of every folder."""

    def pick(names: list[str]) -> list[str]:
        seen: dict[PurePosixPath, int] = {}
        out = []
        for n in sorted(n for n in names if not n.endswith("/")):
            parent = PurePosixPath(n).parent
            if seen.setdefault(parent, 0) < k:
                seen[parent] += 1
                out.append(n)
        return out

    return pick


def extract(zip_path: Path, dest: Path, select: Callable[[list[str]], list[str]] | None = None) -> None:
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        zf.extractall(dest, select(names) if select else names)


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory:
    """A self-deleting folder, in RAM (/dev/shm) where there is one: creating and deleting tens of thousands of
    small files on the CI disk took longer than decoding them."""
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix=prefix, dir=where)


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    with scratch_dir("ddbench-realdata-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def session_home(scratch: Path) -> Iterator[Path]:
    """A DDBENCH_HOME for session-scoped loads (the autouse per-test home is not set up at session scope)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDBENCH_HOME", str(scratch / "home"))
        mp.delenv("DDBENCH_DATA", raising=False)
        yield scratch / "home"


@pytest.fixture(scope="session")
def cifar_index() -> dict[str, np.ndarray]:
    need(CIFAR / "cifar10_index_and_lossless_prefix.npz")
    with np.load(CIFAR / "cifar10_index_and_lossless_prefix.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="session")
def cifar_root(scratch: Path) -> Path:
    """The real CIFAR-10 JPEG folders: the whole test split, the first 5 train images per class."""
    need(CIFAR / "CIFAR-10-images-train.zip", CIFAR / "CIFAR-10-images-test.zip")
    root = scratch / "cifar10"
    extract(CIFAR / "CIFAR-10-images-test.zip", root)
    extract(CIFAR / "CIFAR-10-images-train.zip", root, first_per_folder(5))
    return root


@pytest.fixture(scope="session")
def cifar_test(cifar_root: Path, session_home: Path) -> Dataset:
    return load_dataset("cifar10", data_root=cifar_root)


@pytest.fixture(scope="session")
def tiny(scratch: Path, session_home: Path) -> Dataset:
    """Tiny-ImageNet-200 as released: the whole val split, the first 3 train images per class."""
    zips = TINY / "tiny-imagenet-200-val.zip", TINY / "tiny-imagenet-200-train-first200perclass.zip"
    need(*zips)
    extract(zips[0], scratch / "tiny")
    extract(zips[1], scratch / "tiny", first_per_folder(3))
    return load_dataset("tiny-imagenet", data_root=scratch / "tiny")  # found through the spec's folder name


# -- CIFAR-10 ----------------------------------------------------------------------------------------------------------
def test_cifar10_folders_counts_and_classes(cifar_test: Dataset) -> None:
    assert cifar_test.classes == CIFAR10_CLASSES
    assert cifar_test.test.all().shape == (10000, 3, 32, 32)
    assert cifar_test.test.labels.bincount().tolist() == [1000] * 10
    assert cifar_test.train.labels.tolist() == [c for c in range(10) for _ in range(5)]


def test_cifar10_folder_order_matches_official_labels_by_name(
    cifar_test: Dataset, cifar_root: Path, cifar_index: dict[str, np.ndarray]
) -> None:
    """Without an order file the folder order is class by class; the npz maps official indices to those files."""
    ds = cifar_test
    assert ds.test.labels.tolist() == sorted(ds.test.labels.tolist())
    paths = folder.scan_split(cifar_root, "test", CIFAR10_CLASSES).paths  # the loader's own order
    position = {p.relative_to(cifar_root).as_posix(): i for i, p in enumerate(paths)}
    first = [position[str(n)] for n in cifar_index["jpeg_name_test"][:10]]
    assert ds.test.labels[first].tolist() == OFFICIAL_FIRST_TEST_LABELS == cifar_index["y_test"][:10].tolist()
    # every official label agrees with the folder it was found in
    every = [position[str(n)] for n in cifar_index["jpeg_name_test"]]
    assert ds.test.labels[every].tolist() == cifar_index["y_test"].tolist()
    # decoded pixels are the right images in the right orientation: JPEG q75 vs the original pixels
    lossless = torch.from_numpy(cifar_index["x_test_lossless"]).permute(0, 3, 1, 2).float()
    loaded = ds.test.all()[[position[str(n)] for n in cifar_index["jpeg_name_test"][cifar_index["idx_test_lossless"]]]]
    mae = (loaded.float() - lossless).abs().mean(dim=(1, 2, 3))
    assert mae.mean() < 8 and mae.max() < 20  # README: 5.8 on average; a wrong image gives about 64
    assert (loaded.float() - lossless.flip(-1)).abs().mean() > 2 * mae.mean()  # mirrored would be caught


def test_cifar10_order_file_restores_official_order(
    cifar_root: Path, cifar_index: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """``test.order.txt`` written from the npz gives the pickles' order: first labels 3 8 8 0 6 6 1 6 3 1."""
    root = tmp_path / "cifar10"
    root.mkdir()
    for split in ("train", "test"):
        (root / split).symlink_to(cifar_root / split, target_is_directory=True)
    (root / "test.order.txt").write_text("\n".join(map(str, cifar_index["jpeg_name_test"])) + "\n")
    ds = load_dataset("cifar10", data_root=root)
    assert ds.test.labels[:10].tolist() == OFFICIAL_FIRST_TEST_LABELS
    assert ds.test.labels.tolist() == cifar_index["y_test"].tolist()
    lossless = torch.from_numpy(cifar_index["x_test_lossless"]).permute(0, 3, 1, 2).float()
    mae = (ds.test.all()[cifar_index["idx_test_lossless"]].float() - lossless).abs().mean()
    assert mae < 8


def test_cifar10_official_meta_pickle() -> None:
    """The real Python 2 pickle goes through the numpy-only unpickler."""
    need(CIFAR / "batches.meta")
    meta = cifar.read_pickle(CIFAR / "batches.meta")
    assert meta["label_names"] == list(CIFAR10_CLASSES)  # Python 2 str values arrive as str
    assert meta["num_cases_per_batch"] == 10000


# -- Tiny-ImageNet ----------------------------------------------------------------------------------------------------
def test_tiny_imagenet_counts_and_sorted_classes(tiny: Dataset) -> None:
    assert tiny.classes == TINY_CLASSES and tiny.num_classes == 200
    listed = (TINY / "wnids.txt").read_text().split()
    assert listed != sorted(listed) and list(tiny.classes) == sorted(listed)  # the pitfall is real and handled
    assert tiny.test.all().shape == (10000, 3, 64, 64)
    assert tiny.test.labels.bincount().tolist() == [50] * 200
    assert tiny.train.labels.tolist() == [c for c in range(200) for _ in range(3)]


def test_tiny_imagenet_val_labels_and_grayscale(tiny: Dataset) -> None:
    assert tiny.root is not None
    lines = (tiny.root / "val" / "val_annotations.txt").read_text().splitlines()
    index = {w: i for i, w in enumerate(tiny.classes)}
    assert tiny.test.labels.tolist() == [index[ln.split("\t")[1]] for ln in lines]
    names = [ln.split("\t")[0] for ln in lines]
    gray = next(i for i, n in enumerate(names) if Image.open(tiny.root / "val" / "images" / n).mode == "L")
    img = tiny.test.all()[gray]
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    with Image.open(tiny.root / "val" / "images" / names[gray]) as im:
        assert torch.equal(img[0], torch.from_numpy(np.array(im)))


# -- identity and counts on the real copies ---------------------------------------------------------------------------
def test_cifar10_fingerprint_same_from_cache_other_for_a_smaller_copy(
    cifar_test: Dataset,
    cifar_root: Path,
    session_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with monkeypatch.context() as mp, caplog.at_level(logging.WARNING, logger="ddbench.data.checks"):
        mp.setenv("DDBENCH_HOME", str(session_home))  # where the session fixture's load left its tensor cache
        mp.setattr(cifar, "load", None)  # so the files cannot be decoded again: the cache must serve them
        again = load_dataset("cifar10", data_root=cifar_root)
    assert again.fingerprint == cifar_test.fingerprint and again.identity() == cifar_test.identity()
    assert f"cifar10: 50 train images at {cifar_root}, but the release has 50000" in caplog.text
    assert "test images" not in caplog.text  # the full 10,000-image test split matches the spec
    smaller = tmp_path / "cifar10"
    shutil.copytree(cifar_root / "train", smaller / "train")
    shutil.copytree(cifar_root / "test", smaller / "test")
    (smaller / "test" / "cat" / "0000.jpg").unlink()
    other = load_dataset("cifar10", data_root=smaller)
    assert other.fingerprint != cifar_test.fingerprint and other.identity()["num_test"] == 9999


def test_tiny_imagenet_partial_copy_warns_and_is_identified(
    tiny: Dataset, session_home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert tiny.root is not None
    monkeypatch.setenv("DDBENCH_HOME", str(session_home))
    monkeypatch.setattr(tiny_imagenet, "load", None)
    with caplog.at_level(logging.WARNING, logger="ddbench.data.checks"):
        again = load_dataset("tiny-imagenet", data_root=tiny.root.parent)
    assert again.fingerprint == tiny.fingerprint
    assert f"tiny-imagenet: 600 train images at {tiny.root}, but the release has 100000" in caplog.text
    assert tiny.identity()["num_train"] == 600 and tiny.identity()["num_test"] == 10000


# -- Fashion-MNIST (Debian's dataset-fashion-mnist) -------------------------------------------------------------------
def test_fashion_mnist_debian_package() -> None:
    need(FASHION_MNIST / "train-images-idx3-ubyte.gz")
    ds = load_dataset("fashion-mnist")
    assert ds.root == FASHION_MNIST
    assert ds.train.labels.bincount().tolist() == [6000] * 10 and ds.test.labels.bincount().tolist() == [1000] * 10
    assert ds.test.labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    mean = ds.train.all().float().mean() / 255
    assert abs(mean.item() - ds.spec.mean[0]) < 1e-3


# -- full train splits (slow: extracts and decodes 90k JPEGs) ---------------------------------------------------------
@pytest.mark.slow
def test_full_train_splits() -> None:
    need(CIFAR / "CIFAR-10-images-train.zip", TINY / "tiny-imagenet-200-train-first200perclass.zip")
    with scratch_dir("ddbench-realdata-full-") as d:
        root = Path(d)
        for z in (CIFAR / "CIFAR-10-images-train.zip", CIFAR / "CIFAR-10-images-test.zip"):
            extract(z, root / "cifar10")
        for z in (TINY / "tiny-imagenet-200-train-first200perclass.zip", TINY / "tiny-imagenet-200-val.zip"):
            extract(z, root / "tiny")
        cifar10 = load_dataset("cifar10", data_root=root / "cifar10")
        assert cifar10.train.all().shape == (50000, 3, 32, 32)
        assert cifar10.train.labels.bincount().tolist() == [5000] * 10
        mean = cifar10.train.all().float().mean(dim=(0, 2, 3)) / 255
        assert torch.allclose(mean, torch.tensor(cifar10.spec.mean), atol=0.01)  # the spec's statistics fit
        tiny = load_dataset("tiny-imagenet", data_root=root / "tiny")
        assert tiny.train.all().shape == (40000, 3, 64, 64)
        assert tiny.train.labels.bincount().tolist() == [200] * 200  # the shared copy: first 200 of 500 per class
        mean = tiny.train.all().float().mean(dim=(0, 2, 3)) / 255
        assert torch.allclose(mean, torch.tensor(tiny.spec.mean), atol=0.02)
