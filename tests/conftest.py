"""Shared fixtures: every test gets its own DDBENCH_HOME, and no test sees a user's DDBENCH_DATA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """Real datasets for `data`-marked tests: $DDBENCH_TEST_DATA or ../shared/data beside the repo."""
    return Path(os.environ.get("DDBENCH_TEST_DATA") or REPO.parent / "shared" / "data")


def cifar10_root(dest: Path) -> Path:
    """The real CIFAR-10 JPEG folders (train and test zips of ``shared_data()/cifar10``) unpacked under ``dest``.

    Unpacked once: a folder already there is reused (a kill mid-way leaves only a temporary folder behind). Skips
    the calling test when the zips are absent.
    """
    import shutil
    import zipfile

    src = shared_data() / "cifar10"
    zips = sorted(src.glob("CIFAR-10-images-*.zip")) if src.is_dir() else []
    if len(zips) < 2:
        pytest.skip(f"no CIFAR-10 zips under {src}")
    root = dest / "cifar10"
    if not root.is_dir():
        partial = dest / ".cifar10.partial"
        shutil.rmtree(partial, ignore_errors=True)
        for z in zips:
            with zipfile.ZipFile(z) as zf:
                zf.extractall(partial)
        partial.rename(root)
    return root


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("ddbench-home")
    monkeypatch.setenv("DDBENCH_HOME", str(home))
    monkeypatch.delenv("DDBENCH_DATA", raising=False)
    return home


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    # Test tensors are small: one intra-op thread avoids the oversubscription stalls measured on shared 2-core
    # machines (BatchNorm 35x slower with 2 threads under load), and leaves a core for subprocess tests.
    torch.set_num_threads(1)
