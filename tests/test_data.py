"""Dataset loaders on fixtures written here in each real on-disk format, plus the dataset-level operations.

Pixels are written losslessly (PNG, raw idx bytes, pickled arrays) so every check compares exact values.
"""

from __future__ import annotations

import gzip
import json
import logging
import pickle
import shutil
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch
from PIL import Image
from torchvision import transforms

from ddbench.data import (
    DATASETS,
    DatasetError,
    candidate_roots,
    cifar,
    diagnose,
    folder,
    idx,
    imagenet,
    load_dataset,
    tiny_imagenet,
)
from ddbench.data.catalog import CIFAR10_CLASSES, CIFAR100_CLASSES, IMAGENETTE_WNIDS, IMAGEWOOF_WNIDS
from ddbench.data.source import FileSource, SubsetSource, TensorSource


# -- writers for each format --------------------------------------------------------------------------------------
def pixels(n: int, size: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Random uint8 images NHWC (C omitted for 1 channel)."""
    shape = (n, size, size, channels) if channels > 1 else (n, size, size)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_image(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def write_idx(path: Path, arr: np.ndarray, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if compress else raw)


def write_pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)  # the releases are Python 2 pickles; protocol 2 is the closest


def write_folder_split(root: Path, split: str, classes: tuple[str, ...], names: list[str], seed: int) -> dict:
    """``root/split/<class>/<name>`` PNGs of 32×32 RGB; returns {relative path: (label, HWC pixels)}."""
    out = {}
    for label, cls in enumerate(classes):
        imgs = pixels(len(names), 32, seed=seed + label)
        for name, arr in zip(names, imgs):
            write_image(root / split / cls / name, arr)
            out[f"{split}/{cls}/{name}"] = (label, arr)
    return out


# -- idx: MNIST / Fashion-MNIST ------------------------------------------------------------------------------------
def write_mnist(raw: Path, n_train: int = 12, n_test: int = 5, dotted: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    data = {
        "train_x": pixels(n_train, 28, 1, seed=2),
        "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_x": pixels(n_test, 28, 1, seed=3),
        "test_y": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    sep = "." if dotted else "-"
    write_idx(raw / f"train-images{sep}idx3-ubyte.gz", data["train_x"], compress=True)
    write_idx(raw / f"train-labels{sep}idx1-ubyte.gz", data["train_y"], compress=True)
    write_idx(raw / f"t10k-images{sep}idx3-ubyte", data["test_x"], compress=False)  # plain and gz mixed
    write_idx(raw / f"t10k-labels{sep}idx1-ubyte", data["test_y"], compress=False)
    return data


@pytest.mark.parametrize("dotted", [False, True], ids=["distributed-names", "dotted-names"])
def test_mnist_idx_round_trip(tmp_path: Path, dotted: bool) -> None:
    data = write_mnist(tmp_path / "MNIST" / "raw", dotted=dotted)
    ds = load_dataset("mnist", data_root=tmp_path)
    assert ds.root == tmp_path / "MNIST" / "raw"  # torchvision's layout is probed under the data root
    assert ds.classes == tuple(str(i) for i in range(10))
    assert ds.train.all().dtype == torch.uint8 and ds.train.all().shape == (12, 1, 28, 28)
    assert torch.equal(ds.train.all()[:, 0], torch.from_numpy(data["train_x"]))
    assert torch.equal(ds.train.labels, torch.from_numpy(data["train_y"]).long())
    assert torch.equal(ds.test.all()[:, 0], torch.from_numpy(data["test_x"]))
    assert torch.equal(ds.test.labels, torch.from_numpy(data["test_y"]).long())


def test_fashion_mnist_found_in_system_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    data = write_mnist(system)
    monkeypatch.setitem(idx.SYSTEM_PATHS, "fashion-mnist", (system,))
    spec = DATASETS.get("fmnist")
    assert candidate_roots(spec, None) == [system]
    ds = load_dataset("fmnist")  # no --data-root: Debian's location is searched
    assert ds.id == "fashion-mnist" and ds.root == system
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert torch.equal(ds.test.all()[:, 0], torch.from_numpy(data["test_x"]))


def test_idx_bad_magic_names_file(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw)
    bad = raw / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"PK\x03\x04 not an idx file at all"))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\.gz is not an idx file: magic 504b0304"):
        load_dataset("mnist", data_root=tmp_path)


def test_idx_truncated_file(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    data = write_mnist(raw)
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte: header declares shape \(5, 28, 28\).*truncated"):
        idx.read_idx(path)
    assert idx.read_idx(raw / "train-images-idx3-ubyte.gz").shape == data["train_x"].shape


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8), compress=False)
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte: \(4,\) labels for 5 images"):
        load_dataset("mnist", data_root=tmp_path)


# -- CIFAR pickles -------------------------------------------------------------------------------------------------
def write_cifar10_pickles(root: Path, per_batch: int = 4) -> dict[str, np.ndarray]:
    d = root / "cifar-10-batches-py"
    xs, ys = [], []
    for i in range(1, 6):
        x = pixels(per_batch, 32, seed=10 + i).transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # R plane, G, B
        y = [int(v) for v in np.random.default_rng(i).integers(0, 10, per_batch)]
        names = [f"img_{i}_{k}.png".encode() for k in range(per_batch)]
        batch = {b"batch_label": f"training batch {i} of 5".encode(), b"labels": y, b"data": x, b"filenames": names}
        write_pickle(d / f"data_batch_{i}", batch)
        xs.append(x)
        ys += y
    tx = pixels(3, 32, seed=20).transpose(0, 3, 1, 2).reshape(3, 3072)
    ty = [3, 8, 0]
    write_pickle(d / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": ty, b"data": tx})
    names = [c.encode() for c in CIFAR10_CLASSES]
    write_pickle(d / "batches.meta", {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072})
    return {"train_x": np.concatenate(xs), "train_y": np.array(ys), "test_x": tx, "test_y": np.array(ty)}


def test_cifar10_pickles_exact(tmp_path: Path) -> None:
    data = write_cifar10_pickles(tmp_path)
    ds = load_dataset("cifar-10", data_root=tmp_path)
    assert ds.root == tmp_path / "cifar-10-batches-py"
    assert ds.classes == CIFAR10_CLASSES
    x = ds.train.all()
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8
    # row layout of the release: channel plane, then row, then column
    n, c, r, col = 13, 2, 5, 30
    assert int(x[n, c, r, col]) == int(data["train_x"][n, c * 1024 + r * 32 + col])
    assert torch.equal(x.reshape(20, 3072), torch.from_numpy(data["train_x"]))
    assert ds.train.labels.tolist() == data["train_y"].tolist()
    assert torch.equal(ds.test.all().reshape(3, 3072), torch.from_numpy(data["test_x"]))
    assert ds.test.labels.tolist() == [3, 8, 0]


def test_cifar100_reads_fine_labels(tmp_path: Path) -> None:
    d = tmp_path / "cifar-100-python"
    x = pixels(6, 32, seed=5).transpose(0, 3, 1, 2).reshape(6, 3072)
    fine, coarse = [0, 99, 42, 7, 7, 1], [4, 19, 5, 3, 3, 1]
    for split in ("train", "test"):
        write_pickle(
            d / split,
            {b"filenames": [b"a"] * 6, b"batch_label": split.encode(), b"fine_labels": fine, b"coarse_labels": coarse,
             b"data": x},
        )  # fmt: skip
    meta = {b"fine_label_names": [c.encode() for c in CIFAR100_CLASSES], b"coarse_label_names": [b"x"] * 20}
    write_pickle(d / "meta", meta)
    ds = load_dataset("cifar100", data_root=tmp_path)
    assert ds.num_classes == 100 and ds.classes[:4] == ("apple", "aquarium_fish", "baby", "bear")
    assert ds.classes[-1] == "worm" and list(ds.classes) == sorted(ds.classes)
    assert ds.train.labels.tolist() == fine and ds.test.labels.tolist() == fine
    assert torch.equal(ds.test.all().reshape(6, 3072), torch.from_numpy(x))


def test_cifar_pickle_with_other_classes_is_refused(tmp_path: Path) -> None:
    write_cifar10_pickles(tmp_path)
    meta = {b"label_names": [b"plane", b"car", *[c.encode() for c in CIFAR10_CLASSES[2:]]]}
    write_pickle(tmp_path / "cifar-10-batches-py" / "batches.meta", meta)
    with pytest.raises(DatasetError, match=r"batches\.meta lists classes plane, car, bird, cat .*expected cifar10's"):
        load_dataset("cifar10", data_root=tmp_path)


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_cifar_pickle_cannot_run_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cifar10_pickles(tmp_path)
    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_3", {b"data": _Evil(), b"labels": []})
    with pytest.raises(
        DatasetError,
        match=r"data_batch_3 is not a readable CIFAR pickle \(refusing to load (__builtin__|builtins)\.print",
    ):
        load_dataset("cifar10", data_root=tmp_path)
    assert "must never run" not in capsys.readouterr().out


def test_cifar_pickle_truncated(tmp_path: Path) -> None:
    write_cifar10_pickles(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(DatasetError, match=r"test_batch is not a readable CIFAR pickle"):
        load_dataset("cifar10", data_root=tmp_path)


# -- class folders (CIFAR folder layout, the shared folder module) ---------------------------------------------------
NAMES = ["b.png", "a.png", "c10.png"]  # written in this order; canonical order is sorted: a, b, c10


def write_cifar10_folders(root: Path) -> tuple[dict, dict]:
    return (
        write_folder_split(root, "train", CIFAR10_CLASSES, NAMES, seed=100),
        write_folder_split(root, "test", CIFAR10_CLASSES, NAMES[:2], seed=200),
    )


def test_cifar10_class_folders_order_and_pixels(tmp_path: Path) -> None:
    train, test = write_cifar10_folders(tmp_path)
    ds = load_dataset("cifar10", data_root=tmp_path)
    expected = [f"train/{c}/{n}" for c in CIFAR10_CLASSES for n in sorted(NAMES)]  # class by class, names sorted
    assert ds.train.labels.tolist() == [train[k][0] for k in expected]
    assert torch.equal(ds.train.all(), torch.stack([chw(train[k][1]) for k in expected]))
    expected_test = [f"test/{c}/{n}" for c in CIFAR10_CLASSES for n in ["a.png", "b.png"]]
    assert torch.equal(ds.test.all(), torch.stack([chw(test[k][1]) for k in expected_test]))
    assert ds.test.labels.tolist() == [i for i in range(10) for _ in range(2)]


def test_order_file_gives_the_official_interleaved_order(tmp_path: Path) -> None:
    _, test = write_cifar10_folders(tmp_path)
    order = ["test/cat/b.png", "test/ship/a.png", "test/ship/b.png", "test/airplane/a.png"]
    order += sorted(set(test) - set(order))
    (tmp_path / "test.order.txt").write_text("\n".join(order) + "\n")
    ds = load_dataset("cifar10", data_root=tmp_path)
    assert ds.test.labels.tolist()[:4] == [3, 8, 8, 0]
    assert ds.test.labels.tolist() == [test[k][0] for k in order]
    assert torch.equal(ds.test.all(), torch.stack([chw(test[k][1]) for k in order]))
    assert ds.train.labels.tolist() == sorted(ds.train.labels.tolist())  # no train.order.txt: default order


def test_order_file_must_cover_every_image(tmp_path: Path) -> None:
    write_cifar10_folders(tmp_path)
    (tmp_path / "test.order.txt").write_text("test/cat/b.png\ntest/cat/zzz.png\n")
    with pytest.raises(
        DatasetError, match=r"test\.order\.txt must list each of the 20 images.*1 unknown \(test/cat/zzz"
    ):
        load_dataset("cifar10", data_root=tmp_path)


def test_folder_with_wrong_class_names_names_the_difference(tmp_path: Path) -> None:
    write_cifar10_folders(tmp_path)
    (tmp_path / "train" / "airplane").rename(tmp_path / "train" / "plane")
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", data_root=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "looked in" not in msg  # not the generic message: the tree was found
    assert msg == (
        f"cifar10: found an incomplete copy: {tmp_path / 'train'}: missing class folders airplane; unexpected "
        f"folders plane (10 classes expected). {DATASETS.get('cifar10').how_to_get}"
    )


def test_folder_errors_empty_class_and_undecodable_image(tmp_path: Path) -> None:
    write_cifar10_folders(tmp_path)
    spec = DATASETS.get("cifar10")
    for f in (tmp_path / "test" / "dog").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match=r"test/dog holds no images"):
        cifar.load(tmp_path, spec, False)
    write_folder_split(tmp_path, "test", ("dog",), ["a.png"], seed=0)
    (tmp_path / "train" / "frog" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError, match=r"cannot decode image .*train/frog/a\.png"):
        cifar.load(tmp_path, spec, False)


def test_decode_files_parallel_matches_serial(tmp_path: Path) -> None:
    imgs = pixels(40, 16, seed=7)
    paths = [write_image(tmp_path / f"{i:03d}.png", a) for i, a in enumerate(imgs)]
    one = folder.decode_files(paths, 16, 3, threads=1)
    many = folder.decode_files(paths, 16, 3, threads=4)
    assert torch.equal(one, many) and torch.equal(one, torch.from_numpy(imgs).permute(0, 3, 1, 2))


# -- tensor cache ----------------------------------------------------------------------------------------------------
def test_second_load_hits_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_home: Path) -> None:
    write_cifar10_folders(tmp_path)
    first = load_dataset("cifar10", data_root=tmp_path)
    cached = [p for p in (_isolated_home / "datasets").glob("cifar10-*") if p.is_dir()]
    assert len(cached) == 1 and (cached[0] / "tensors.pt").is_file() and (cached[0] / "manifest.json").is_file()

    def boom(*args: object) -> None:
        raise AssertionError("format module read the files although the cache is valid")

    monkeypatch.setattr(cifar, "load", boom)
    second = load_dataset("cifar10", data_root=tmp_path)
    assert torch.equal(first.train.all(), second.train.all()) and torch.equal(first.test.all(), second.test.all())
    assert torch.equal(first.train.labels, second.train.labels) and second.classes == CIFAR10_CLASSES
    # an image rewritten in place (same name, same file list) changes the fingerprint: the files are read again
    write_folder_split(tmp_path, "test", ("cat",), ["a.png"], seed=9)
    with pytest.raises(AssertionError, match="format module read the files"):
        load_dataset("cifar10", data_root=tmp_path)


def test_corrupt_cache_is_rebuilt(tmp_path: Path, _isolated_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_cifar10_pickles(tmp_path)
    first = load_dataset("cifar10", data_root=tmp_path)
    (folder,) = (p for p in (_isolated_home / "datasets").glob("cifar10-*") if p.is_dir())
    cache = folder / "tensors.pt"
    blob = bytearray(cache.read_bytes())
    blob[len(blob) // 2] ^= 0x10  # a flipped bit would still load as a (different) training set: refused by sha256
    cache.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING, logger="ddbench.artifacts"):
        again = load_dataset("cifar10", data_root=tmp_path)
    assert "corrupt datasets artifact" in caplog.text and folder.name in caplog.text
    assert torch.equal(first.train.all(), again.train.all())
    blob = torch.load(cache, weights_only=True)  # rewritten, valid
    assert torch.equal(blob["test_x"], first.test.all())


# -- Tiny-ImageNet -----------------------------------------------------------------------------------------------------
def write_tiny(root: Path, wnids_file_order: list[str], per_class: int = 2, seed: int = 0) -> dict:
    """A tiny-imagenet-200 tree with PNG train images and val images, one val image grayscale JPEG."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(wnids_file_order) + "\n")
    canonical = sorted(wnids_file_order)
    truth: dict = {"train": {}, "val": []}
    for w in wnids_file_order:
        for k, arr in enumerate(pixels(per_class, 64, seed=seed + canonical.index(w))):
            name = f"train/{w}/images/{w}_{k}.png"
            write_image(root / name, arr)
            truth["train"][name] = (canonical.index(w), arr)
    lines = []
    for k, w in enumerate(reversed(wnids_file_order)):
        name = f"val_{k}.png"
        arr = pixels(1, 64, seed=1000 + k)[0]
        write_image(root / "val" / "images" / name, arr)
        lines.append(f"{name}\t{w}\t0\t0\t63\t63")
        truth["val"].append((canonical.index(w), arr))
    gray = np.full((64, 64), 77, np.uint8)
    write_image(root / "val" / "images" / "val_gray.JPEG", gray)
    lines.append(f"val_gray.JPEG\t{wnids_file_order[0]}\t1\t2\t3\t4")
    truth["val"].append((canonical.index(wnids_file_order[0]), None))
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return truth


def test_tiny_imagenet_sorted_wnids_not_file_order(tmp_path: Path) -> None:
    file_order = ["n09999999", "n01000000", "n05555555"]  # wnids.txt is not sorted, as in the release
    truth = write_tiny(tmp_path, file_order)
    spec = replace(DATASETS.get("tiny-imagenet"), classes=tuple(sorted(file_order)))
    splits = tiny_imagenet.load(tmp_path, spec, False)
    assert splits.classes == ("n01000000", "n05555555", "n09999999")
    x, y = splits.train.all(), splits.train.labels
    expected = sorted(truth["train"], key=lambda k: (truth["train"][k][0], k))
    assert y.tolist() == [0, 0, 1, 1, 2, 2] == [truth["train"][k][0] for k in expected]
    assert torch.equal(x, torch.stack([chw(truth["train"][k][1]) for k in expected]))
    # n09999999 is first in wnids.txt but label 2; its images come last
    assert torch.equal(x[4], chw(truth["train"]["train/n09999999/images/n09999999_0.png"][1]))
    # val follows val_annotations.txt and maps wnids through the sorted order
    vx, vy = splits.test.all(), splits.test.labels
    assert vy.tolist() == [lab for lab, _ in truth["val"]] == [1, 0, 2, 2]
    for i, (_, arr) in enumerate(truth["val"][:-1]):
        assert torch.equal(vx[i], chw(arr))
    gray = vx[-1]  # grayscale JPEG → 3 identical channels, value ≈ 77
    assert gray.shape == (3, 64, 64) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert abs(gray.float().mean().item() - 77) < 2


def test_tiny_imagenet_full_spec_via_load_dataset(tmp_path: Path) -> None:
    spec = DATASETS.get("tiny")
    release_order = list(spec.classes[1::2]) + list(spec.classes[0::2])  # any non-sorted order
    write_tiny(tmp_path / "tiny-imagenet-200", release_order, per_class=1)
    ds = load_dataset("tiny", data_root=tmp_path)
    assert ds.root == tmp_path / "tiny-imagenet-200"
    assert ds.classes == spec.classes and list(ds.classes) == sorted(ds.classes) and ds.num_classes == 200
    assert ds.train.labels.tolist() == list(range(200))
    index = {w: i for i, w in enumerate(spec.classes)}
    assert ds.test.labels.tolist() == [index[w] for w in reversed(release_order)] + [index[release_order[0]]]


def test_tiny_imagenet_malformed_annotations(tmp_path: Path) -> None:
    wnids = ["n01000000", "n02000000"]
    write_tiny(tmp_path, wnids)
    spec = replace(DATASETS.get("tiny"), classes=tuple(wnids))
    (tmp_path / "val" / "images" / "val_0.png").unlink()
    with pytest.raises(
        DatasetError, match=r"val_annotations\.txt must label every image .*1 listed but absent \(val_0"
    ):
        tiny_imagenet.load(tmp_path, spec, False)
    ann = tmp_path / "val" / "val_annotations.txt"
    ann.write_text("val_1.png\tn07777777\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match=r"val_annotations\.txt:1: expected '<image>\\t<one of the 2 wnids>"):
        tiny_imagenet.load(tmp_path, spec, False)


def test_tiny_imagenet_wnids_file_must_match(tmp_path: Path) -> None:
    write_tiny(tmp_path, ["n01000000", "n02000000"])
    (tmp_path / "wnids.txt").write_text("n01000000\nn03000000\n")
    spec = replace(DATASETS.get("tiny"), classes=("n01000000", "n02000000"))
    with pytest.raises(DatasetError, match=r"wnids\.txt lists 2 wnids .*differences: n02000000, n03000000"):
        tiny_imagenet.load(tmp_path, spec, False)


def test_tiny_imagenet_val_in_class_folders(tmp_path: Path) -> None:
    wnids = ["n02000000", "n01000000"]
    write_tiny(tmp_path, wnids)
    (tmp_path / "val" / "val_annotations.txt").unlink()
    for f in (tmp_path / "val" / "images").iterdir():
        f.unlink()
    (tmp_path / "val" / "images").rmdir()
    imgs = pixels(2, 64, seed=3)
    write_image(tmp_path / "val" / "n02000000" / "images" / "x.png", imgs[0])
    write_image(tmp_path / "val" / "n01000000" / "images" / "y.png", imgs[1])
    spec = replace(DATASETS.get("tiny"), classes=tuple(sorted(wnids)))
    splits = tiny_imagenet.load(tmp_path, spec, False)
    assert splits.test.labels.tolist() == [0, 1]
    assert torch.equal(splits.test.all(), torch.stack([chw(imgs[1]), chw(imgs[0])]))


# -- ImageNet-1K and subsets ---------------------------------------------------------------------------------------
def write_imagenet(root: Path, wnids: list[str], sizes: tuple[tuple[int, int], ...] = ((300, 200), (224, 224))) -> None:
    """Constant-colour images (their resize+crop is exactly known) of various sizes; val 1 per class."""
    for i, w in enumerate(wnids):
        for k, (wd, ht) in enumerate(sizes):
            arr = np.full((ht, wd, 3), (i * 7 % 256, k * 50, 200), np.uint8)
            write_image(root / "train" / w / f"{w}_{k}.png", arr)
        write_image(root / "val" / w / f"ILSVRC2012_val_{i:08d}.png", np.full((100, 150, 3), i, np.uint8))


def test_imagenet_1k_streams_sorted_wnids(tmp_path: Path) -> None:
    wnids = ["n04000000", "n01000000", "n02000000"]
    write_imagenet(tmp_path / "imagenet", wnids)
    exact = pixels(1, 224, seed=4)[0]
    write_image(tmp_path / "imagenet" / "train" / "n02000000" / "n02000000_9.png", exact)
    ds = load_dataset("imagenet", data_root=tmp_path)
    assert ds.classes == ("n01000000", "n02000000", "n04000000")
    assert isinstance(ds.train, FileSource) and isinstance(ds.test, FileSource)  # never fully loaded
    assert ds.train.labels.tolist() == [0, 0, 1, 1, 1, 2, 2] and ds.test.labels.tolist() == [0, 1, 2]
    batch = ds.train.load([0, 1, 4])
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == torch.uint8
    # n01000000 is wnids[1] → red channel 7; the 300×200 image is resized+cropped, a constant colour stays exact
    assert batch[0, :, 0, 0].tolist() == [7, 0, 200] and bool((batch[0] == batch[0, :, :1, :1]).all())
    assert torch.equal(batch[2], chw(exact))  # a 224×224 image passes through untouched
    # val: folder wnids[i] was filled with value i; sorted classes are wnids[1], wnids[2], wnids[0]
    assert ds.test.all()[:, :, 5, 5].tolist() == [[1, 1, 1], [2, 2, 2], [0, 0, 0]]


def test_imagenet_flat_val_is_explained(tmp_path: Path) -> None:
    write_imagenet(tmp_path, ["n01000000", "n02000000"])
    for w in ("n01000000", "n02000000"):
        for f in (tmp_path / "val" / w).iterdir():
            f.rename(tmp_path / "val" / f.name)
        (tmp_path / "val" / w).rmdir()
    with pytest.raises(DatasetError, match=r"val holds images directly but no class folders"):
        load_dataset("imagenet-1k", data_root=tmp_path)


def test_imagenette_from_full_imagenet_in_listed_order(tmp_path: Path) -> None:
    extra = ["n00000001", "n09999999"]
    write_imagenet(tmp_path / "ILSVRC2012", [*extra, *sorted(IMAGENETTE_WNIDS)], sizes=((40, 30),))
    ds = load_dataset("imagenette", data_root=tmp_path)
    assert ds.root == tmp_path / "ILSVRC2012"
    assert ds.classes == IMAGENETTE_WNIDS and ds.num_classes == 10 and ds.img_size == 224
    assert isinstance(ds.train, TensorSource)  # in memory, 224 px
    assert ds.train.labels.tolist() == list(range(10)) and ds.test.labels.tolist() == list(range(10))
    # label k is the k-th listed wnid; write_imagenet coloured folder i (sorted, after 2 extras) with red = 7*i
    sorted_pos = {w: i + 2 for i, w in enumerate(sorted(IMAGENETTE_WNIDS))}
    reds = [int(ds.train.all()[k, 0, 100, 100]) for k in range(10)]
    assert reds == [sorted_pos[w] * 7 % 256 for w in IMAGENETTE_WNIDS]
    assert [int(ds.test.all()[k, 1, 0, 0]) for k in range(10)] == [sorted_pos[w] for w in IMAGENETTE_WNIDS]


def test_imagewoof_from_release_folder(tmp_path: Path) -> None:
    write_imagenet(tmp_path / "imagewoof2", list(IMAGEWOOF_WNIDS), sizes=((50, 40), (40, 50)))
    ds = load_dataset("imagewoof", data_root=tmp_path)
    assert ds.root == tmp_path / "imagewoof2" and ds.classes == IMAGEWOOF_WNIDS
    assert ds.train.labels.tolist() == [k // 2 for k in range(20)]
    assert ds.train.all().shape == (20, 3, 224, 224)


def test_subset_missing_a_class_names_it(tmp_path: Path) -> None:
    write_imagenet(tmp_path / "imagewoof2", list(IMAGEWOOF_WNIDS[:9]), sizes=((20, 20),))
    with pytest.raises(
        DatasetError,
        match=rf"imagewoof: found an incomplete copy: {tmp_path / 'imagewoof2' / 'train'}: missing class folders "
        rf"{IMAGEWOOF_WNIDS[9]} \(10 classes expected\)",
    ):
        load_dataset("imagewoof", data_root=tmp_path)


# -- test geometry: the official Resize + CenterCrop, pixel for pixel, on real photos -----------------------------
SKLEARN_IMAGES = Path(sklearn.datasets.__file__).parent / "images"  # china.jpg, flower.jpg: 640×427 JPEG photos


def torchvision_test(path: Path, resize: int, crop: int) -> torch.Tensor:
    """The official evaluation transform (PIL, bilinear) as torchvision applies it, as uint8 CHW."""
    with Image.open(path) as im:
        out = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop)])(im.convert("RGB"))
    return chw(np.asarray(out))


def write_photo_tree(root: Path, wnids: tuple[str, ...]) -> tuple[Path, Path]:
    """``root/{train,val}/<wnid>/``: the landscape JPEG (bytes as shipped) under wnids[0], a portrait PNG (the
    other photo transposed, lossless) under wnids[1], a small constant image under every other wnid."""
    landscape = root / "val" / wnids[0] / "china.jpg"
    portrait = root / "val" / wnids[1] / "flower_portrait.png"
    for split in ("train", "val"):
        (root / split / wnids[0]).mkdir(parents=True, exist_ok=True)
        (root / split / wnids[0] / "china.jpg").write_bytes((SKLEARN_IMAGES / "china.jpg").read_bytes())
        with Image.open(SKLEARN_IMAGES / "flower.jpg") as im:
            write_image(root / split / wnids[1] / "flower_portrait.png", np.asarray(im).transpose(1, 0, 2))
        for w in wnids[2:]:
            write_image(root / split / w / "x.png", np.full((30, 40, 3), 9, np.uint8))
    return landscape, portrait


def test_imagenette_test_split_is_torchvision_resize_centercrop(tmp_path: Path) -> None:
    landscape, portrait = write_photo_tree(tmp_path / "imagenette2", IMAGENETTE_WNIDS)
    ds = load_dataset("imagenette", data_root=tmp_path)  # the real loader path: locate, scan, decode, cache
    assert ds.root == tmp_path / "imagenette2" and ds.spec.test_resize == 224
    with Image.open(portrait) as im:
        assert im.size == (427, 640)  # both orientations are exercised
    # label 0 is IMAGENETTE_WNIDS[0] (the landscape photo), label 1 the portrait one
    assert torch.equal(ds.test.all()[0], torchvision_test(landscape, 224, 224))  # IDC/Minimax: Resize(224)
    assert torch.equal(ds.test.all()[1], torchvision_test(portrait, 224, 224))
    # the train split keeps its geometry: short side to 224 with round(), crop offset floored
    with Image.open(landscape) as im:
        expected = np.asarray(im.convert("RGB").resize((336, 224), Image.BILINEAR).crop((56, 0, 280, 224)))
    assert torch.equal(ds.train.all()[0], chw(expected))
    assert not torch.equal(ds.train.all()[0], ds.test.all()[0])  # 336 vs torchvision's 335 columns: they differ


def test_mtt_128px_subsets_squash_both_splits_to_128(tmp_path: Path) -> None:
    """imagenette-128 (spec mtt §2): the whole photo resized to 128×128, aspect ratio ignored, train and test alike."""
    landscape, portrait = write_photo_tree(tmp_path / "imagenette2", IMAGENETTE_WNIDS)
    ds = load_dataset("imagenette-128", data_root=tmp_path)
    assert ds.classes == IMAGENETTE_WNIDS and ds.train.all().shape[1:] == (3, 128, 128)
    for path, k in ((landscape, 0), (portrait, 1)):
        with Image.open(path) as im:
            expected = chw(np.asarray(im.convert("RGB").resize((128, 128), Image.BILINEAR)))
        assert torch.equal(ds.test.all()[k], expected) and torch.equal(ds.train.all()[k], expected)
    short_side = folder.decode_files([landscape], 128, 3)[0]  # the other geometry keeps the aspect ratio
    assert not torch.equal(short_side, ds.train.all()[0])
    assert imagenet.fingerprint(ds.root, ds.spec) != imagenet.fingerprint(ds.root, replace(ds.spec, squash=False))


def test_test_resize_256_matches_the_imagenet_transform(tmp_path: Path) -> None:
    landscape, portrait = write_photo_tree(tmp_path, IMAGENETTE_WNIDS)
    spec = replace(DATASETS.get("imagenette"), test_resize=256)
    splits = imagenet.load(tmp_path, spec, False)
    assert torch.equal(splits.test.all()[0], torchvision_test(landscape, 256, 224))
    assert torch.equal(splits.test.all()[1], torchvision_test(portrait, 256, 224))
    assert not torch.equal(torchvision_test(landscape, 256, 224), torchvision_test(landscape, 224, 224))
    # and the old geometry (short side to 224 for every split) is not what the test split holds any more
    old = folder.decode_files([landscape], 224, 3)[0]
    assert not torch.equal(splits.test.all()[0], old)


def test_imagenet_1k_streamed_test_images_are_resize256_centercrop224(tmp_path: Path) -> None:
    wnids = ("n01000000", "n02000000")
    landscape, portrait = write_photo_tree(tmp_path / "imagenet", wnids)
    ds = load_dataset("imagenet-1k", data_root=tmp_path)
    assert isinstance(ds.test, FileSource) and ds.test.resize == 256 and ds.train.resize == 0
    assert torch.equal(ds.test.load([0])[0], torchvision_test(landscape, 256, 224))
    assert torch.equal(ds.test.load([1])[0], torchvision_test(portrait, 256, 224))
    assert torch.equal(ds.train.load([0])[0], folder.decode_files([landscape], 224, 3)[0])


def test_caches_of_the_old_test_geometry_are_not_reused(tmp_path: Path, _isolated_home: Path) -> None:
    write_photo_tree(tmp_path / "imagenette2", IMAGENETTE_WNIDS)
    spec = DATASETS.get("imagenette")
    root = tmp_path / "imagenette2"
    new_key = imagenet.fingerprint(root, spec)
    assert new_key != imagenet.fingerprint(root, replace(spec, test_resize=0))  # the key the old code used
    load_dataset("imagenette", data_root=tmp_path)
    (folder,) = (p for p in (_isolated_home / "datasets").iterdir() if p.is_dir())
    assert json.loads((folder / "manifest.json").read_text())["key"]["files"] == new_key


# -- missing data: every dataset says what, where and how ---------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in DATASETS.names() if n != "digits"])
def test_missing_dataset_message(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idx, "SYSTEM_PATHS", {})  # a machine with Debian's package must not find it here
    spec = DATASETS.get(name)
    with pytest.raises(DatasetError) as err:
        load_dataset(name, data_root=tmp_path)
    msg = str(err.value)
    module = {"idx": idx, "cifar": cifar, "tiny_imagenet": tiny_imagenet, "imagenet": imagenet}
    layout = module[spec.loader.rsplit(".", 1)[1]].LAYOUT
    assert msg == (
        f"{spec.id}: expected {layout}; looked in "
        + ", ".join(str(p) for p in [tmp_path, *(tmp_path / f for f in spec.folder_names)])
        + f". {spec.how_to_get}"
    )


# -- a layout found but incomplete: the error names the missing piece ---------------------------------------------
def incomplete_error(name: str, root: Path) -> str:
    """The one-line message of loading ``name`` from ``root``, which must be the partial-copy message."""
    with pytest.raises(DatasetError) as err:
        load_dataset(name, data_root=root)
    msg = str(err.value)
    assert "\n" not in msg and "looked in" not in msg
    prefix = f"{DATASETS.get(name).id}: found an incomplete copy: "
    suffix = f". {DATASETS.get(name).how_to_get}"
    assert msg.startswith(prefix) and msg.endswith(suffix), msg
    return msg[len(prefix) : -len(suffix)]


def test_cifar_pickles_without_test_batch(tmp_path: Path) -> None:
    write_cifar10_pickles(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    assert incomplete_error("cifar10", tmp_path) == (
        f"{tmp_path / 'cifar-10-batches-py'} holds CIFAR pickles (data_batch_1, data_batch_2, data_batch_3 "
        "(+3 more)) but not test_batch"
    )


def test_cifar100_pickles_without_meta(tmp_path: Path) -> None:
    d = tmp_path / "cifar-100-python"
    for split in ("train", "test"):
        write_pickle(d / split, {b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [0]})
    assert incomplete_error("cifar100", tmp_path) == f"{d} holds CIFAR pickles (train, test) but not meta"


def test_cifar_folders_without_test_or_train(tmp_path: Path) -> None:
    write_folder_split(tmp_path, "train", CIFAR10_CLASSES, ["a.png"], seed=0)
    assert (
        incomplete_error("cifar10", tmp_path) == f"{tmp_path} has train/ but no test/ or val/ folder (the test split)"
    )
    (tmp_path / "train").rename(tmp_path / "test")
    assert incomplete_error("cifar10", tmp_path) == f"{tmp_path} has test/ but no train/ folder"


def test_cifar_folders_missing_a_test_class(tmp_path: Path) -> None:
    write_cifar10_folders(tmp_path)
    for f in (tmp_path / "test" / "truck").iterdir():
        f.unlink()
    (tmp_path / "test" / "truck").rmdir()
    assert incomplete_error("cifar10", tmp_path) == (
        f"{tmp_path / 'test'}: missing class folders truck (10 classes expected)"
    )


def test_tiny_imagenet_partial_trees(tmp_path: Path) -> None:
    spec = DATASETS.get("tiny")
    root = tmp_path / "tiny-imagenet-200"
    write_tiny(root, list(spec.classes), per_class=1)
    shutil.rmtree(root / "val")
    assert incomplete_error("tiny", tmp_path) == (
        f"{root} has no val/ folder (val/images/*.JPEG labelled by val/val_annotations.txt, the test split)"
    )
    shutil.rmtree(root / "train" / spec.classes[7])
    assert incomplete_error("tiny", tmp_path) == (
        f"{root / 'train'}: missing class folders {spec.classes[7]} (200 classes expected)"
    )
    shutil.rmtree(root / "train")
    assert incomplete_error("tiny", tmp_path) == f"{root} has no train/ folder (train/<wnid>/images/*.JPEG)"


def test_imagenet_1k_partial_trees(tmp_path: Path) -> None:
    root = tmp_path / "ILSVRC2012"
    write_imagenet(root, ["n01000000", "n02000000"], sizes=((20, 20),))
    shutil.rmtree(root / "val")
    assert incomplete_error("imagenet-1k", tmp_path) == (
        f"{root} has train/<wnid>/ folders but no val/ folder (val/<wnid>/*.JPEG, the test split)"
    )
    write_imagenet(root, ["n01000000"], sizes=((20, 20),))
    shutil.rmtree(root / "train")
    assert incomplete_error("imagenet-1k", tmp_path) == f"{root} has val/ but no train/<wnid>/ folders"


def test_imagenet_subset_with_flat_val(tmp_path: Path) -> None:
    root = tmp_path / "imagenette2"
    write_imagenet(root, list(IMAGENETTE_WNIDS), sizes=((20, 20),))
    for w in IMAGENETTE_WNIDS:
        shutil.rmtree(root / "val" / w)
    write_image(root / "val" / "ILSVRC2012_val_00000001.JPEG", np.zeros((8, 8, 3), np.uint8))
    assert incomplete_error("imagenette", tmp_path).startswith(
        f"{root / 'val'} holds images directly but no class folders; expected one folder per class (n01440764"
    )


def test_idx_without_test_labels(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    assert incomplete_error("mnist", tmp_path) == (
        f"{raw} holds train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte but not "
        "t10k-labels-idx1-ubyte (each plain or .gz)"
    )


def test_partial_copy_does_not_hide_a_complete_one(tmp_path: Path) -> None:
    """A partial tree at an earlier candidate root is skipped when a later one is complete."""
    write_folder_split(tmp_path, "train", CIFAR10_CLASSES, ["a.png"], seed=0)  # <root>/train only: partial
    data = write_cifar10_pickles(tmp_path)  # <root>/cifar-10-batches-py: complete
    ds = load_dataset("cifar10", data_root=tmp_path)
    assert ds.root == tmp_path / "cifar-10-batches-py" and ds.test.labels.tolist() == data["test_y"].tolist()
    assert diagnose(DATASETS.get("cifar10"), tmp_path) == [
        f"{tmp_path} has train/ but no test/ or val/ folder (the test split)"
    ]


def test_unrelated_folders_are_not_partial_copies(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "train").mkdir()  # a train/ folder alone is a partial class-folder tree, but not Tiny or ImageNet
    write_image(tmp_path / "notes.png", np.zeros((4, 4, 3), np.uint8))
    assert folder.incomplete_folders(tmp_path / "docs", CIFAR10_CLASSES) is None
    for name in ("tiny", "imagenet-1k", "imagenette", "mnist"):
        assert diagnose(DATASETS.get(name), tmp_path) == [], name


# -- dataset operations ----------------------------------------------------------------------------------------------
def test_digits_embedded_default() -> None:
    ds = load_dataset("digits")
    assert len(ds.train) + len(ds.test) == 1797 and ds.num_classes == 10
    assert ds.train.all().shape[1:] == (1, 8, 8) and int(ds.train.all().max()) == 255
    all_labels = torch.cat([ds.train.labels, ds.test.labels])
    assert all_labels.bincount().tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert len(ds.test) == sum(round(n * 0.3) for n in all_labels.bincount().tolist())


def test_with_num_classes() -> None:
    ds = load_dataset("digits")
    sub = ds.with_num_classes(3)
    assert sub.classes == ("0", "1", "2") and sub.num_classes == 3 and sub.class_hash != ds.class_hash
    assert set(sub.train.labels.tolist()) == {0, 1, 2} and set(sub.test.labels.tolist()) == {0, 1, 2}
    assert len(sub.train) == int((ds.train.labels < 3).sum()) and len(sub.test) == int((ds.test.labels < 3).sum())
    assert torch.equal(sub.train.all(), ds.train.all()[ds.train.labels < 3])
    assert load_dataset("digits", num_classes=3).train.labels.tolist() == sub.train.labels.tolist()
    assert ds.with_num_classes(None) is ds and ds.with_num_classes(10) is ds
    for bad in (0, 11):
        with pytest.raises(DatasetError, match=r"--num-classes must be in 1\.\.10 for digits"):
            ds.with_num_classes(bad)


def test_with_class_range_relabels_and_keeps_the_images_of_its_classes() -> None:
    """A phase's classes 3..5 read as 0..2 with exactly their train and test images (Minimax phases, §7.2)."""
    ds = load_dataset("digits")
    part = ds.with_class_range(3, 6)
    assert part.classes == ("3", "4", "5") and part.num_classes == 3
    for local, c in enumerate((3, 4, 5)):
        assert torch.equal(part.train.load(torch.nonzero(part.train.labels == local).flatten()),
                           ds.train.load(ds.class_indices(c)))  # fmt: skip
        assert int((part.test.labels == local).sum()) == int((ds.test.labels == c).sum())
    assert set(part.train.labels.tolist()) == {0, 1, 2} and len(part.test) == int(
        ((ds.test.labels >= 3) & (ds.test.labels < 6)).sum()
    )
    assert part.fingerprint not in (ds.fingerprint, ds.with_num_classes(3).fingerprint)
    assert ds.with_num_classes(3).derivation == ("num_classes=3",)  # unchanged, so cached runs still match
    assert ds.with_class_range(0, 10) is ds
    for lo, hi in ((5, 11), (4, 4), (-1, 3)):
        with pytest.raises(DatasetError, match="class range"):
            ds.with_class_range(lo, hi)


def test_with_holdout_deterministic_and_disjoint() -> None:
    ds = load_dataset("digits")
    a, b, c = ds.with_holdout(5, seed=0), ds.with_holdout(5, seed=0), ds.with_holdout(5, seed=1)
    assert isinstance(a.val, SubsetSource) and isinstance(a.train, SubsetSource)
    assert torch.equal(a.val.indices, b.val.indices) and torch.equal(a.val.all(), b.val.all())
    assert not torch.equal(a.val.indices, c.val.indices)
    val, train = set(a.val.indices.tolist()), set(a.train.indices.tolist())
    assert not val & train and val | train == set(range(len(ds.train)))
    assert a.val.labels.bincount().tolist() == [5] * 10
    assert len(a.train) == len(ds.train) - 50 and a.test is ds.test
    with pytest.raises(DatasetError, match=r"digits: class 0 has \d+ images, cannot hold out 1000"):
        ds.with_holdout(1000)
