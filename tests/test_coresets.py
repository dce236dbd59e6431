"""Coreset baselines: greedy k-center on a hand-made 2-D set, its 2-approximation, EL2N by hand, both on digits."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from ddbench_methods.el2n import el2n_scores, rank
from ddbench_methods.kcenter import k_center_greedy

from ddbench.plugins import list_methods


def test_k_center_picks_the_greedy_farthest_points_on_a_hand_made_set() -> None:
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [0.0, 5.0], [9.0, 1.0], [5.0, 5.0]])
    # from (0,0): farthest is (10,0) at 10; then nearest-center distances are (1,0):1, (0,5):5, (9,1):√2,
    # (5,5):min(√50, √50)=7.07 → (5,5); then (0,5): min(5, 5) = 5 beats (1,0): 1 and (9,1): √2 → (0,5)
    assert k_center_greedy(pts, 4, first=0).tolist() == [0, 2, 5, 3]
    assert k_center_greedy(pts, 2, first=2).tolist() == [2, 3]  # from (10,0): (0,5) at √125 is farthest
    assert k_center_greedy(pts, 10, first=1).numel() == 6  # never more than the points, never a repeat
    tie = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    assert k_center_greedy(tie, 2, first=0).tolist() == [0, 1]  # equal distances: the lower index


def _radius(pts: torch.Tensor, centers: list[int]) -> float:
    return float(torch.cdist(pts, pts[centers]).min(dim=1).values.max())


def test_k_center_greedy_is_within_twice_the_optimal_radius() -> None:
    g = torch.Generator().manual_seed(0)
    for trial in range(5):
        pts = torch.randn(9, 2, generator=g)
        best = min(_radius(pts, list(c)) for c in itertools.combinations(range(9), 3))
        greedy = _radius(pts, k_center_greedy(pts, 3, first=trial).tolist())
        assert best <= greedy <= 2 * best + 1e-6


def test_el2n_scores_by_hand_and_ranking() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    # [.5, .5] vs onehot(0): ‖(−.5, .5)‖ = √.5; [.75, .25] vs onehot(1): ‖(.75, −.75)‖ = .75·√2
    assert el2n_scores(logits, torch.tensor([0, 1])).tolist() == pytest.approx([math.sqrt(0.5), 0.75 * math.sqrt(2)])
    s = torch.tensor([0.2, 0.9, 0.5, 0.9, 0.1])
    assert rank(s, 3, hardest=True).tolist() == [1, 3, 2] and rank(s, 2, hardest=False).tolist() == [4, 0]


def test_kcenter_and_el2n_on_digits_are_registered_seeded_and_balanced() -> None:
    from ddbench.pipeline import RunRequest, distill, prepare

    assert {"kcenter", "el2n", "herding", "random"} <= set(list_methods())
    state = prepare(RunRequest(method="kcenter", dataset="digits", ipc=3, profile="cpu"))
    first = distill(state)
    assert torch.bincount(first.labels).tolist() == [3] * 10
    indices = first.meta["train_indices"]
    assert all(len(set(v)) == 3 for v in indices.values())
    from ddbench.ops.features import train_outputs

    c = 4
    idx = state.dataset.class_indices(c)
    feats = train_outputs(state.teachers[0].model, state.dataset, idx)
    start = idx.tolist().index(indices[str(c)][0])
    assert idx[k_center_greedy(feats, 3, start)].tolist() == indices[str(c)]  # the recorded pick is the greedy one

    el2n = prepare(RunRequest(method="el2n", dataset="digits", ipc=2, profile="cpu", overrides={"models": 2}))
    picked = distill(el2n)
    assert [t.spec.recipe for t in el2n.teachers] == ["el2n", "el2n"] and len({t.id for t in el2n.teachers}) == 2
    for cls, scores in picked.meta["el2n_scores"].items():
        assert scores == sorted(scores, reverse=True) and len(picked.meta["train_indices"][cls]) == 2
