"""Real CIFAR-10 (cpu presets): IOR and LRS of SRe2L and DWA, and whether random ≥ SRe2L under SRe2L's own recipe.

DD-Ranking's README figure (landscape §7 F) puts random real images ≈7 points above SRe2L at ImageNet-1K ipc10
under SRe2L's soft-label recipe. This test runs ``ddbench score`` (the pipeline, ordinary rows) for both methods at
CIFAR-10 ipc10 under each method's own protocol (``sre2l-cifar@cpu``, ``dwa-cifar@cpu``) and prints HLR/IOR/LRS
with their inputs and the random-vs-SRe2L comparison; it asserts only what must hold (the scores are computed from
finite rows and LRS lies in [0, 1]). Set ``DDBENCH_TEST_HOME`` to keep the teacher, runs and rows between
invocations.

One ResNet-18 student (the methods' paper student; its real reference is the cpu teacher artifact, already
cached) and one evaluation seed unless ``DDBENCH_SCORES_ARCH`` / ``DDBENCH_SCORES_SEEDS`` (comma-separated) say
otherwise: a full-width ResNet-18 student of 100 epochs costs ~16 CPU-minutes at 32 px (measured: one ``hard@cpu``
row, 1424 s beside two other jobs), and each seed needs 6 of them (syn hard, syn and random under each recipe, for
2 methods). Cost on 2 cores: the cpu teacher (~50 min, shared with ``test_sre2l_dwa.py``), two recovers, 6
students per seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import cifar10_root

pytestmark = [pytest.mark.data, pytest.mark.slow]
ARCH = os.environ.get("DDBENCH_SCORES_ARCH", "resnet18")
SEEDS = [int(x) for x in os.environ.get("DDBENCH_SCORES_SEEDS", "0").split(",")]


def test_cifar10_scores_of_sre2l_and_dwa(tmp_path: Path, monkeypatch) -> None:
    from ddbench.pipeline import RunRequest, distill, prepare, record_run
    from ddbench.scoring import ScoreRequest, score_run
    from ddbench.store import Store

    if os.environ.get("DDBENCH_TEST_HOME"):
        monkeypatch.setenv("DDBENCH_HOME", os.environ["DDBENCH_TEST_HOME"])
    root = cifar10_root(Path(os.environ.get("DDBENCH_TEST_HOME") or tmp_path))
    store = Store()
    report = {}
    for method, recipe in (("sre2l", "sre2l-cifar"), ("dwa", "dwa-cifar")):
        state = prepare(RunRequest(method=method, dataset="cifar10", ipc=10, profile="cpu", data_root=str(root)))
        distilled = distill(state)
        record_run(state, distilled, store)
        (res,) = score_run(state, distilled, ScoreRequest(archs=[ARCH], recipe=recipe, seeds=SEEDS, ars=False), store)
        assert {"hlr", "ior", "lrs"} <= set(res.scores)
        assert 0.0 <= res.scores["lrs"].mean <= 1.0
        report[method] = {name: (s.text(), s.inputs) for name, s in res.scores.items()}
    print(f"CIFAR-10 ipc10 cpu presets, {ARCH} student: {report}")
    sre2l_ior = float(report["sre2l"]["ior"][0].split("±")[0])
    print(f"random >= SRe2L under sre2l-cifar@cpu: {sre2l_ior <= 0} (IOR {sre2l_ior:+.1f} points)")
