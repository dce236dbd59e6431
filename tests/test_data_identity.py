"""Data identity (fingerprints), the count warnings and the ``--ipc`` check.

The property the fingerprint exists for: the same files, read again or served from the tensor cache or copied
elsewhere with their mtimes, give the same fingerprint; a copy with other contents or other counts, another class
subset or another hold-out gives another.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch
from test_data import write_cifar10_folders, write_folder_split, write_imagenet, write_mnist

from ddbench.data import DATASETS, Dataset, DatasetError, check_ipc, cifar, load_dataset
from ddbench.data.catalog import CIFAR10_CLASSES
from ddbench.data.identity import fingerprint_files
from ddbench.data.source import TensorSource

# digits' seeded split (digits.py): train images per class, by hand from sklearn's class sizes
# [178, 182, 177, 183, 181, 182, 181, 179, 174, 180] minus round(0.3 * size) test images each.
DIGITS_TRAIN_PER_CLASS = [125, 127, 124, 128, 127, 127, 127, 125, 122, 126]


# -- fingerprint and identity -----------------------------------------------------------------------------------------
def test_same_files_same_fingerprint_also_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar10_folders(tmp_path)
    first = load_dataset("cifar10", data_root=tmp_path)
    assert len(first.fingerprint) == 16 and first.files_fingerprint

    def boom(*args: object) -> None:
        raise AssertionError("files read again although the cache is valid")

    monkeypatch.setattr(cifar, "load", boom)
    cached = load_dataset("cifar10", data_root=tmp_path)
    assert cached.fingerprint == first.fingerprint and cached.identity() == first.identity()
    assert first.identity() == {
        "dataset": "cifar10",
        "fingerprint": first.fingerprint,
        "root": str(tmp_path),
        "class_hash": first.class_hash,
        "num_classes": 10,
        "num_train": 30,
        "num_val": 0,
        "num_test": 20,
        "derivation": [],
    }


def test_a_copy_with_mtimes_keeps_the_fingerprint_other_contents_change_it(tmp_path: Path) -> None:
    write_cifar10_folders(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # copy2: sizes and mtimes kept, as cp -a / rsync -a do
    a = load_dataset("cifar10", data_root=tmp_path / "a")
    b = load_dataset("cifar10", data_root=tmp_path / "b")
    assert a.fingerprint == b.fingerprint and a.identity()["root"] != b.identity()["root"]
    # the same names, one image rewritten with other pixels
    write_folder_split(tmp_path / "b", "train", ("dog",), ["a.png"], seed=77)
    changed = load_dataset("cifar10", data_root=tmp_path / "b")
    assert changed.fingerprint != a.fingerprint
    assert (len(changed.train), len(changed.test)) == (len(a.train), len(a.test))  # counts alone would not tell
    # one image fewer
    (tmp_path / "b" / "test" / "cat" / "b.png").unlink()
    fewer = load_dataset("cifar10", data_root=tmp_path / "b")
    assert fewer.fingerprint not in (a.fingerprint, changed.fingerprint) and len(fewer.test) == 19


def test_two_mnist_copies_of_different_sizes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The issue's case: a run made on one MNIST copy must not be found again on a smaller copy."""
    write_mnist(tmp_path / "big" / "MNIST" / "raw", n_train=17, n_test=5)
    write_mnist(tmp_path / "small" / "MNIST" / "raw", n_train=5, n_test=5)
    with caplog.at_level(logging.WARNING, logger="ddbench.data.checks"):
        big = load_dataset("mnist", data_root=tmp_path / "big")
        small = load_dataset("mnist", data_root=tmp_path / "small")
    assert big.fingerprint != small.fingerprint
    assert (big.identity()["num_train"], small.identity()["num_train"]) == (17, 5)
    assert f"mnist: 17 train images at {tmp_path / 'big' / 'MNIST' / 'raw'}, but the release has 60000" in caplog.text
    assert f"mnist: 5 train images at {tmp_path / 'small' / 'MNIST' / 'raw'}, but the release has 60000" in caplog.text


def test_digits_fingerprint_is_stable_and_follows_content(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = load_dataset("digits")
    assert ds.files_fingerprint and load_dataset("digits").fingerprint == ds.fingerprint
    real = sklearn.datasets.load_digits

    def one_pixel_changed(*args: object, **kwargs: object) -> object:
        bunch = real(*args, **kwargs)
        bunch.images = bunch.images.copy()
        bunch.images[100, 3, 3] = 16 - bunch.images[100, 3, 3]
        return bunch

    monkeypatch.setattr(sklearn.datasets, "load_digits", one_pixel_changed)
    assert load_dataset("digits").fingerprint != ds.fingerprint


def test_derived_datasets_have_their_own_fingerprint() -> None:
    ds = load_dataset("digits")
    three = ds.with_num_classes(3)
    assert three.fingerprint != ds.fingerprint and three.files_fingerprint == ds.files_fingerprint
    assert load_dataset("digits", num_classes=3).fingerprint == three.fingerprint  # same command, same value
    assert three.identity()["derivation"] == ["num_classes=3"] and three.identity()["num_classes"] == 3
    held = ds.with_holdout(5, seed=0)
    assert held.fingerprint == ds.with_holdout(5, seed=0).fingerprint
    assert len({ds.fingerprint, held.fingerprint, ds.with_holdout(5, seed=1).fingerprint}) == 3
    assert held.identity()["num_val"] == 50 and held.identity()["num_train"] == len(ds.train) - 50


def test_hand_built_dataset_is_identified_by_its_tensors() -> None:
    spec = DATASETS.get("digits")
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 3])

    def built(pixels: torch.Tensor) -> Dataset:
        return Dataset(spec, TensorSource(pixels, y), TensorSource(pixels, y))

    other = x.clone()
    other[2, 0, 4, 4] = 1
    assert built(x).fingerprint == built(x.clone()).fingerprint
    assert built(x).fingerprint != built(other).fingerprint


def test_streaming_imagenet_fingerprint(tmp_path: Path) -> None:
    write_imagenet(tmp_path / "imagenet", ["n01000000", "n02000000"], sizes=((20, 20),))
    ds = load_dataset("imagenet-1k", data_root=tmp_path)
    again = load_dataset("imagenet-1k", data_root=tmp_path)
    assert ds.files_fingerprint and ds.fingerprint == again.fingerprint
    val = tmp_path / "imagenet" / "val" / "n02000000" / "ILSVRC2012_val_00000001.png"
    val.write_bytes(val.read_bytes() + b"\0")  # another size, as a re-encoded copy has
    assert load_dataset("imagenet-1k", data_root=tmp_path).fingerprint != ds.fingerprint


def test_sampled_stat_hashes_every_name(tmp_path: Path) -> None:
    """With a stat limit, unsampled files still count by name; sampled ones by size and mtime too."""
    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.bin"
        p.write_bytes(b"x" * (i + 1))
        os.utime(p, ns=(10**18, 10**18))
        paths.append(p)
    key = fingerprint_files(tmp_path, paths, stat_limit=3)  # stride 2: files 0, 2, 4 are stat'ed
    assert key != fingerprint_files(tmp_path, paths)  # full and sampled keys never collide
    paths[1].write_bytes(b"yy")  # unsampled, same size: not seen (the documented trade-off)
    os.utime(paths[1], ns=(10**18, 10**18))
    assert fingerprint_files(tmp_path, paths, stat_limit=3) == key
    paths[2].write_bytes(b"zzzz")  # sampled: seen
    assert fingerprint_files(tmp_path, paths, stat_limit=3) != key
    assert fingerprint_files(tmp_path, [*paths[:5], tmp_path / "0.bin"], stat_limit=3) != key  # a name changed


# -- counts against the spec ----------------------------------------------------------------------------------------
def test_counts_that_differ_from_the_spec_warn_with_both(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_cifar10_folders(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ddbench.data.checks"):
        load_dataset("cifar10", data_root=tmp_path)
        load_dataset("cifar10", data_root=tmp_path)  # from the cache: warned again
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    train = f"cifar10: 30 train images at {tmp_path}, but the release has 50000"
    test = f"cifar10: 20 test images at {tmp_path}, but the release has 10000"
    assert sum(m.startswith(train) for m in messages) == 2 and sum(m.startswith(test) for m in messages) == 2


def test_counts_that_match_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ddbench.data.checks"):
        ds = load_dataset("digits")
    assert (len(ds.train), len(ds.test)) == (ds.spec.num_train, ds.spec.num_test) == (1258, 539)
    assert not caplog.records


def test_every_spec_with_a_known_train_count_knows_its_test_count() -> None:
    expected = {"digits": 539, "mnist": 10000, "fashion-mnist": 10000, "cifar10": 10000, "cifar100": 10000}
    expected |= {"tiny-imagenet": 10000, "imagenet-1k": 50000}
    assert {n: DATASETS.get(n).num_test for n in expected} == expected
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        assert bool(spec.num_train) == bool(spec.num_test), name


# -- --ipc against the classes ------------------------------------------------------------------------------------
def test_check_ipc_short_classes() -> None:
    ds = load_dataset("digits")
    assert torch.bincount(ds.train.labels).tolist() == DIGITS_TRAIN_PER_CLASS
    assert check_ipc(ds, 122, allow_short_classes=False) == {"short_classes": {}}
    with pytest.raises(DatasetError) as err:
        check_ipc(ds, 123, allow_short_classes=False)
    assert str(err.value) == (
        "digits: --ipc 123 is more than the 122 train images of class '8'; pass --allow-short-classes to run with "
        "fewer images for those classes"
    )
    with pytest.raises(DatasetError, match=r"than the 122 train images of class '8' \(and 1 more class\);"):
        check_ipc(ds, 125, allow_short_classes=False)
    assert check_ipc(ds, 125, allow_short_classes=True) == {"short_classes": {"2": 124, "8": 122}}
    assert check_ipc(ds.with_num_classes(3), 125, allow_short_classes=True) == {"short_classes": {"2": 124}}


@pytest.mark.parametrize("ipc", [0, -3])
def test_check_ipc_must_be_positive(ipc: int) -> None:
    ds = load_dataset("digits")
    for allow in (False, True):
        with pytest.raises(DatasetError, match=rf"^--ipc must be at least 1, got {ipc}$"):
            check_ipc(ds, ipc, allow_short_classes=allow)


def test_check_ipc_names_a_class_without_images(tmp_path: Path) -> None:
    write_cifar10_folders(tmp_path)
    ds = load_dataset("cifar10", data_root=tmp_path)
    keep = torch.nonzero(ds.train.labels != CIFAR10_CLASSES.index("ship")).flatten()
    no_ships = Dataset(ds.spec, ds.train.subset(keep), ds.test)
    with pytest.raises(DatasetError, match=r"more than the 0 train images of class 'ship'"):
        check_ipc(no_ships, 1, allow_short_classes=False)
    assert check_ipc(no_ships, 3, allow_short_classes=True) == {"short_classes": {"ship": 0}}
    assert np.array_equal(torch.bincount(no_ships.train.labels, minlength=10).numpy(), [3] * 8 + [0, 3])
