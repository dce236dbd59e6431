"""scikit-learn's handwritten digits: the embedded default dataset (no download, no data root).

1,797 8×8 grayscale images with values 0–16, rescaled to uint8 0–255. sklearn ships no split, so ddbench
fixes one: a seeded, class-stratified 70/30 train/test split (seed 0; 1,258 train and 539 test images).

There are no files to fingerprint, so the splits are identified by their content (images, labels and which image
went to which split): a scikit-learn release that changed the data or a change of the split gives another
fingerprint. The module has no pre-load ``fingerprint`` on purpose: with nothing to key a cache on before loading,
and loading taking milliseconds, digits is never cached.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ddbench.data.dataset import Splits
from ddbench.data.identity import fingerprint_sources
from ddbench.data.source import TensorSource
from ddbench.data.spec import DatasetSpec

NEEDS_NO_ROOT = True
LAYOUT = "scikit-learn's bundled digits data"
SPLIT_SEED = 0
TEST_FRACTION = 0.3


def detect(path: Path, spec: DatasetSpec) -> bool:
    return False


def load(root: Path | None, spec: DatasetSpec, download: bool) -> Splits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [N,1,8,8]
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    test_mask = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_mask[idx[: round(len(idx) * TEST_FRACTION)]] = True
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    train = TensorSource(tx[~torch.from_numpy(test_mask)], ty[~torch.from_numpy(test_mask)])
    test = TensorSource(tx[torch.from_numpy(test_mask)], ty[torch.from_numpy(test_mask)])
    return Splits(train, test, tuple(str(c) for c in range(10)), fingerprint_sources((train, test), "digits"))
