"""Score formulas against hand-computed values, the unit fix, seed pairing, and the cached real reference."""

from __future__ import annotations

import itertools
import math

import pytest

from ddbench import scores
from ddbench.scores import compute_scores, normalize


def test_normalisation_maps_minus_one_one_onto_zero_one() -> None:
    assert normalize(-1.0) == pytest.approx(0.0, abs=1e-12)
    assert normalize(1.0) == pytest.approx(1.0)
    # N(0) = (1 − 1/e)/(e − 1/e) = (e − 1)/(e² − 1) = 1/(e + 1)
    assert normalize(0.0) == pytest.approx(1.0 / (math.e + 1.0))
    xs = [i / 10 for i in range(-10, 11)]
    assert all(normalize(a) < normalize(b) for a, b in itertools.pairwise(xs))


def test_unit_fix_hlr_of_30_points_is_0_30_in_the_formula() -> None:
    # real 80 %, synthetic with hard labels 50 %: HLR = 30 points = 0.30; syn 42 % vs random 40 %: IOR = 0.02
    out = compute_scores({"syn_hard": {0: 50.0}, "syn": {0: 42.0}, "rand": {0: 40.0}}, real=80.0)
    assert out["hlr"].per_seed[0] == pytest.approx(30.0)
    assert out["ior"].per_seed[0] == pytest.approx(2.0)
    alpha = 0.5 * 0.02 - 0.5 * 0.30  # = −0.14
    assert out["lrs"].per_seed[0] == pytest.approx((math.exp(alpha) - math.exp(-1)) / (math.e - math.exp(-1)))
    assert out["lrs"].per_seed[0] == pytest.approx(0.21336, abs=1e-5)
    assert 0.0 <= out["lrs"].mean <= 1.0
    # DD-Ranking's code feeds the points themselves: α = −14, a negative "score" outside [0, 1]
    assert scores.lrs(30.0, 2.0) == pytest.approx(-0.15652, abs=1e-5)


def test_ars_and_seed_pairing_mean_std() -> None:
    acc = {
        "syn": {0: 42.0, 1: 44.0, 2: 50.0},
        "rand": {0: 40.0, 1: 40.0},  # seed 2 has no random row: it pairs with nothing
        "syn_noaug": {0: 30.0, 1: 30.0},
        "rand_noaug": {0: 20.0, 1: 24.0},
    }
    out = compute_scores(acc, real=None)
    assert set(out) == {"ior", "ars"}  # no reference, no hard-label row: no HLR or LRS
    ior = out["ior"]
    assert ior.per_seed == pytest.approx({0: 2.0, 1: 4.0})
    assert ior.mean == pytest.approx(3.0) and ior.std == pytest.approx(1.0)  # population std over seeds
    # β seed 0 = 0.5·0.02 + 0.5·0.10 = 0.06; seed 1 = 0.5·0.04 + 0.5·0.06 = 0.05
    assert out["ars"].per_seed[0] == pytest.approx(normalize(0.06))
    assert out["ars"].per_seed[1] == pytest.approx(normalize(0.05))
    assert out["ars"].inputs[1] == {"syn": 44.0, "rand": 40.0, "syn_noaug": 30.0, "rand_noaug": 24.0}
    assert ior.text() == "3.0±1.0" and out["ars"].record()["unit"] == "score in [0, 1]"


def test_weights_and_bad_accuracies() -> None:
    assert scores.lrs(0.3, 0.1, w=1.0) == pytest.approx(normalize(0.1))
    assert scores.lrs(0.3, 0.1, w=0.0) == pytest.approx(normalize(-0.3))
    assert scores.ars(0.1, -0.1, gamma=0.25) == pytest.approx(normalize(0.025 - 0.075))
    with pytest.raises(ValueError, match="not a percentage"):
        compute_scores({"syn": {0: 142.0}, "rand": {0: 40.0}}, real=None)


def test_real_reference_is_a_cached_artifact_trained_once(monkeypatch) -> None:
    from ddbench.data import load_dataset
    from ddbench.references import real_reference

    ds = load_dataset("digits")
    ref = real_reference(ds, "convnet", profile="cpu")
    assert ref.arch == "convnet" and ref.recipe == "default" and ref.width_mult == 1.0
    assert 80.0 < ref.top1[0] <= 100.0  # a convnet on all 1258 digits; chance is 10 %
    import ddbench.train as train

    monkeypatch.setattr(train.Trainer, "fit", lambda *a, **k: pytest.fail("the reference was retrained"))
    again = real_reference(ds, "convnet", profile="cpu")
    assert again.top1 == ref.top1 and again.ids == ref.ids
