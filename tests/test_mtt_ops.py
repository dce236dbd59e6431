"""MTT building blocks (spec mtt §12): the unrolled matching loss and its gradients, TESLA, trajectories, DSA.

Every check is against something computed independently: exact values the loss must take, central finite
differences, an ``nn.Module`` + ``torch.optim.SGD`` re-run of the same inner steps, parameter counts worked out
from the layer shapes, file round trips, and the official samplers' combinatorics.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from saved_tensors import SavedTensorMeter

from ddbench.models import create_model
from ddbench.ops import augment as A
from ddbench.ops.flat_params import ParamLayout
from ddbench.ops.trajectories import (
    ExpertOrder,
    ExpertTrajectory,
    StartEpochSampler,
    TrajectoryRecorder,
    check_start_window,
    export_replay_buffers,
    import_replay_buffer,
)
from ddbench.ops.unroll import FunctionalStudent, MinibatchQueue, match_trajectory

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_convnet(seed: int = 0, in_chans: int = 1, width: int = 4, classes: int = 3, img: int = 8) -> torch.nn.Module:
    """ConvNet at 8 px (depth 2, instance norm), initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create_model("convnet", classes, img_size=img, in_chans=in_chans, width=width)


class Problem:
    """A tiny float64 MTT iteration: 6 synthetic images of 3 classes, an expert segment from real SGD steps."""

    def __init__(self, seed: int = 0, in_chans: int = 1, dtype: torch.dtype = F64) -> None:
        model = tiny_convnet(seed, in_chans).to(dtype)
        self.student = FunctionalStudent(model)
        g = gen(seed + 100)
        self.images = torch.randn(6, in_chans, 8, 8, generator=g, dtype=dtype)
        self.labels = torch.arange(3).repeat_interleave(2)
        self.start = self.student.layout.flatten_model(model)
        # θ_target: the same network after 3 SGD steps on other ("real") images, so the target is a realistic one
        real, real_y = torch.randn(12, in_chans, 8, 8, generator=g, dtype=dtype), torch.arange(3).repeat(4)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(real), real_y).backward()
            opt.step()
        self.target = self.student.layout.flatten_model(model)
        self.model = model

    def batches(self, n_steps: int, batch: int = 3, seed: int = 1) -> list[torch.Tensor]:
        return MinibatchQueue(len(self.images), batch, gen(seed)).take(n_steps)

    def run(self, n_steps: int, *, lr: float = 0.05, mode: str = "full", augment=None, images=None, **kw):
        """(result, dL/dX̃, dL/dα̃) for one unroll."""
        x = (self.images if images is None else images).clone().requires_grad_(True)
        syn_lr = torch.tensor(lr, dtype=x.dtype, requires_grad=True)
        result = match_trajectory(
            self.student,
            x,
            self.labels,
            syn_lr,
            self.start,
            self.target,
            self.batches(n_steps),
            augment=augment,
            generator=gen(7) if augment is not None else None,
            grad_mode=mode,
            **kw,
        )
        return result, x.grad, syn_lr.grad

    def loss(self, n_steps: int, images: torch.Tensor, lr: float) -> float:
        """L only (no gradients requested), for finite differences."""
        syn_lr = torch.tensor(lr, dtype=images.dtype)
        return float(
            match_trajectory(
                self.student, images, self.labels, syn_lr, self.start, self.target, self.batches(n_steps)
            ).loss
        )


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# -- flat parameters and the functional student -----------------------------------------------------------------------
def test_convnet3_cifar10_parameter_count():
    # conv 3→128 (3·128·9 + 128), GN affine 2·128, two convs 128→128 (128·128·9 + 128) with GN, linear 2048→10
    by_hand = (3 * 128 * 9 + 128) + 2 * (128 * 128 * 9 + 128) + 3 * 256 + (2048 * 10 + 10)
    assert by_hand == 320_010
    assert ParamLayout.of(create_model("convnet", 10, 32, 3)).num_params == by_hand
    assert ParamLayout.of(create_model("convnet", 10, 32, 3, width=32)).num_params == 24_714  # spec §11 CPU width


def test_flat_order_is_named_parameters_order():
    model = tiny_convnet(in_chans=3)
    layout = ParamLayout.of(model)
    flat = layout.flatten_model(model)
    offset = 0
    for name, p in model.named_parameters():  # walk the vector by hand
        assert torch.equal(flat[offset : offset + p.numel()].view_as(p), p.detach()), name
        offset += p.numel()
    assert offset == flat.numel() == layout.num_params
    assert torch.equal(flat, torch.nn.utils.parameters_to_vector(model.parameters()))
    assert all(torch.equal(v, p) for v, (_, p) in zip(layout.unflatten(flat).values(), model.named_parameters()))


def test_functional_student_equals_module_forward():
    model = tiny_convnet(in_chans=3).double()
    student = FunctionalStudent(model)
    flat = torch.randn(student.num_params, generator=gen(3), dtype=F64)
    torch.nn.utils.vector_to_parameters(flat, model.parameters())  # torch's own order, independent of ParamLayout
    x = torch.randn(4, 3, 8, 8, generator=gen(4), dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(student(flat, x), model(x), rtol=0, atol=1e-12)


def test_layout_check_names_the_mismatch():
    layout = ParamLayout.of(tiny_convnet(width=4))
    with pytest.raises(ValueError, match=r"features\.0\.weight"):
        layout.check(tiny_convnet(width=5))
    with pytest.raises(ValueError, match="parameters"):
        layout.check(create_model("convnet", 3, img_size=32, in_chans=1, width=4))  # depth 3: more parameters


# -- minibatch queue --------------------------------------------------------------------------------------------------
def test_queue_pops_chunks_from_the_end_of_the_permutation():
    perm = torch.randperm(10, generator=gen(5))
    chunks = list(perm.split(4))  # sizes 4, 4, 2: the short one is popped first
    queue = MinibatchQueue(10, 4, gen(5))
    popped = queue.take(3)
    assert [c.tolist() for c in popped] == [c.tolist() for c in reversed(chunks)]
    assert len(popped[0]) == 2


def test_queue_covers_each_index_once_per_permutation():
    queue = MinibatchQueue(10, 3, gen(6))
    first = torch.cat(queue.take(4))  # 3+3+3+1 = one permutation
    second = torch.cat(queue.take(4))
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(10))
    assert not torch.equal(first, second)  # a fresh permutation when the queue runs dry


# -- matching loss ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["full", "tesla"])
def test_loss_is_exactly_one_at_zero_step_size(mode):
    p = Problem()
    result, _, _ = p.run(4, lr=0.0, mode=mode)
    assert result.loss.item() == 1.0
    assert result.start_dist == pytest.approx(float((p.start - p.target).pow(2).sum()), rel=1e-15)


@pytest.mark.parametrize("mode", ["full", "tesla"])
def test_loss_is_zero_when_the_target_is_the_same_unroll(mode):
    # θ_target = θ_start after the same N plain-SGD steps on the same batches, run on the nn.Module itself
    p, lr, n = Problem(), 0.05, 4
    model = tiny_convnet().double()
    torch.nn.utils.vector_to_parameters(p.start.clone(), model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for idx in p.batches(n):
        opt.zero_grad()
        F.cross_entropy(model(p.images[idx]), p.labels[idx]).backward()
        opt.step()
    p.target = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    result, _, _ = p.run(n, lr=lr, mode=mode)
    assert result.loss.item() < 1e-24  # 0 up to float64 round-off (TESLA forms θ_start − α̃Σg in one sum)
    assert p.run(n, lr=lr * 1.01, mode=mode)[0].loss.item() > 1e-8  # and not zero for another step size


def test_unnormalised_loss_is_the_numerator():
    p = Problem()
    ratio, _, _ = p.run(3)
    plain, _, _ = p.run(3, normalize="none")
    assert plain.loss.item() == pytest.approx(ratio.param_dist, rel=1e-14)
    assert ratio.loss.item() == pytest.approx(ratio.param_dist / ratio.start_dist, rel=1e-14)


def test_full_gradients_match_central_finite_differences():
    p, n, lr, eps = Problem(), 3, 0.05, 1e-6
    _, grad_x, grad_lr = p.run(n, lr=lr)
    fd = torch.zeros_like(p.images)
    flat = fd.view(-1)
    for i in range(flat.numel()):
        bump = torch.zeros_like(p.images).view(-1)
        bump[i] = eps
        bump = bump.view_as(p.images)
        flat[i] = (p.loss(n, p.images + bump, lr) - p.loss(n, p.images - bump, lr)) / (2 * eps)
    assert rel_err(grad_x, fd) < 1e-5
    fd_lr = (p.loss(n, p.images, lr + eps) - p.loss(n, p.images, lr - eps)) / (2 * eps)
    assert abs(grad_lr.item() - fd_lr) / abs(fd_lr) < 1e-5


@pytest.mark.parametrize("augment", [None, A.dsa], ids=["plain", "dsa"])
def test_tesla_equals_full_at_one_step(augment):
    # with DSA on, this also proves TESLA's replayed augmentation is the batch the first sweep used
    p = Problem(in_chans=3)
    full, gx_full, glr_full = p.run(1, mode="full", augment=augment)
    tesla, gx_tesla, glr_tesla = p.run(1, mode="tesla", augment=augment)
    assert rel_err(gx_tesla, gx_full) < 1e-10
    assert abs(glr_tesla.item() - glr_full.item()) / abs(glr_full.item()) < 1e-10
    assert tesla.loss.item() == pytest.approx(full.loss.item(), rel=1e-12)


@pytest.mark.parametrize("augment", [None, A.dsa], ids=["plain", "dsa"])
def test_tesla_is_a_positive_cosine_approximation_for_several_steps(augment):
    p = Problem(in_chans=3)
    full, gx_full, _ = p.run(6, mode="full", augment=augment)
    tesla, gx_tesla, _ = p.run(6, mode="tesla", augment=augment)
    assert tesla.loss.item() == pytest.approx(full.loss.item(), rel=1e-10)  # same θ̂_N, only the gradient differs
    assert F.cosine_similarity(gx_tesla.flatten(), gx_full.flatten(), dim=0) > 0


def test_tesla_saved_memory_does_not_grow_with_steps():
    p = Problem(in_chans=3)
    peaks = {}
    for mode in ("full", "tesla"):
        for n in (2, 8):
            with SavedTensorMeter() as meter:
                p.run(n, mode=mode)
            assert meter.current == 0  # every graph was freed
            peaks[mode, n] = meter.peak
    assert peaks["tesla", 8] == peaks["tesla", 2]
    assert peaks["full", 8] > 3.5 * peaks["full", 2]  # linear in N (4× the steps)
    assert peaks["tesla", 2] < peaks["full", 2]


def test_gradients_accumulate_like_backward():
    p = Problem()
    x = p.images.clone().requires_grad_(True)
    syn_lr = torch.tensor(0.05, dtype=F64, requires_grad=True)
    for _ in range(2):
        match_trajectory(p.student, x, p.labels, syn_lr, p.start, p.target, p.batches(2))
    _, once, once_lr = p.run(2)
    torch.testing.assert_close(x.grad, 2 * once, rtol=1e-12, atol=0)
    torch.testing.assert_close(syn_lr.grad, 2 * once_lr, rtol=1e-12, atol=0)


def test_match_trajectory_refuses_bad_input():
    p = Problem()
    syn_lr = torch.tensor(0.05, dtype=F64)
    with pytest.raises(ValueError, match="undefined"):
        match_trajectory(p.student, p.images, p.labels, syn_lr, p.start, p.start.clone(), p.batches(1))
    with pytest.raises(TypeError, match="Generator"):
        match_trajectory(p.student, p.images, p.labels, syn_lr, p.start, p.target, p.batches(1), augment=A.dsa)
    with pytest.raises(ValueError, match="grad_mode"):
        match_trajectory(p.student, p.images, p.labels, syn_lr, p.start, p.target, p.batches(1), grad_mode="x")
    with pytest.raises(ValueError, match="N ≥ 1"):
        match_trajectory(p.student, p.images, p.labels, syn_lr, p.start, p.target, [])


# -- start epoch and expert order -------------------------------------------------------------------------------------
def test_start_epoch_sampler_covers_exactly_the_window():
    sampler = StartEpochSampler(5, 2, 6, gen(8))  # T⁺−1+M = 6 = E: the largest allowed window
    draws = {sampler.sample() for _ in range(500)}
    assert draws == {0, 1, 2, 3, 4}


def test_start_window_overrunning_the_experts_is_refused():
    with pytest.raises(ValueError, match="trained for 5 epochs"):
        StartEpochSampler(5, 2, 5, gen())
    with pytest.raises(ValueError):
        check_start_window(0, 2, 50)
    check_start_window(49, 2, 50)  # 48 + 2 = 50: fits


def test_expert_order_consumes_files_without_replacement_and_reshuffles():
    order = ExpertOrder(23, gen(9), group_size=10)
    assert [len(g) for g in order.groups] == [10, 10, 3]  # the last partial group is kept
    passes = [[order.next() for _ in range(23)] for _ in range(3)]
    group_of = {e: k for k, g in enumerate(order.groups) for e in g}
    for sequence in passes:
        assert sorted(sequence) == list(range(23))  # each expert once per pass
        blocks, pos = [], 0
        while pos < 23:  # consecutive experts come from one file until it is used up
            size = len(order.groups[group_of[sequence[pos]]])
            blocks.append(sequence[pos : pos + size])
            pos += size
        assert all(len({group_of[e] for e in block}) == 1 for block in blocks)
        assert len(blocks) == 3
    assert len({tuple(s) for s in passes}) == 3  # reshuffled between passes


def test_expert_order_single_file_and_load_all():
    order = ExpertOrder(5, gen(10), group_size=5)
    assert sorted(order.next() for _ in range(5)) == list(range(5))
    order = ExpertOrder(5, gen(11), load_all=True)
    draws = [order.next() for _ in range(50)]
    assert set(draws) == set(range(5)) and len(draws) > len(set(draws))  # with replacement


# -- trajectory files -------------------------------------------------------------------------------------------------
def _expert(seed: int = 0, epochs: int = 3, width: int = 4) -> tuple[torch.nn.Module, ExpertTrajectory]:
    model = tiny_convnet(seed, in_chans=3, width=width)
    recorder = TrajectoryRecorder(model)
    recorder.record(model)
    g = gen(seed)
    x, y = torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        recorder.record(model)
    return model, recorder.trajectory()


def test_trajectory_round_trip_is_lossless(tmp_path):
    model, traj = _expert(epochs=3)
    assert traj.snapshots.shape == (4, ParamLayout.of(model).num_params)  # E+1 rows
    assert torch.equal(traj.snapshots[-1], torch.nn.utils.parameters_to_vector(model.parameters()).detach())
    assert not torch.equal(traj.snapshots[0], traj.snapshots[-1])
    path = traj.save(tmp_path / "expert-0.pt")
    loaded = ExpertTrajectory.load(path)
    assert torch.equal(loaded.snapshots, traj.snapshots) and loaded.snapshots.dtype == torch.float32
    assert loaded.layout == traj.layout
    assert list(loaded.layout.names) == [n for n, _ in model.named_parameters()]
    loaded.check_model(model)
    with pytest.raises(ValueError):
        loaded.check_model(tiny_convnet(in_chans=3, width=5))
    start, target = loaded.segment(1, 2)
    assert torch.equal(start, traj.snapshots[1]) and torch.equal(target, traj.snapshots[3])
    with pytest.raises(IndexError):
        loaded.segment(2, 2)


def test_trajectory_load_refuses_other_files(tmp_path):
    torch.save({"snapshots": torch.zeros(2, 3)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a ddbench"):
        ExpertTrajectory.load(tmp_path / "x.pt")


def test_replay_buffer_export_keeps_the_last_partial_file(tmp_path):
    model, _ = _expert()
    trajectories = [_expert(seed=k, epochs=2)[1] for k in range(12)]
    paths = export_replay_buffers(trajectories, tmp_path, save_interval=10)
    assert [p.name for p in paths] == ["replay_buffer_0.pt", "replay_buffer_1.pt"]
    raw = torch.load(paths[1], weights_only=True)
    assert len(torch.load(paths[0], weights_only=True)) == 10 and len(raw) == 2
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert len(raw[0]) == 3 and [tuple(t.shape) for t in raw[0][1]] == shapes  # E+1 lists of per-layer tensors
    assert torch.equal(torch.cat([t.flatten() for t in raw[1][2]]), trajectories[11].snapshots[2])
    layout = ParamLayout.of(model)
    back = import_replay_buffer(paths[0], layout) + import_replay_buffer(paths[1], layout)
    assert all(torch.equal(a.snapshots, b.snapshots) for a, b in zip(back, trajectories, strict=True))


# -- DSA conformance beyond tests/test_augment.py (spec §3, §12 item 5) ----------------------------------------------
def _impulse(n: int, size: int) -> torch.Tensor:
    x = torch.zeros(n, 1, size, size)
    x[:, 0, size // 2, size // 2] = 1
    return x


@pytest.mark.parametrize(("size", "shift"), [(28, 4), (32, 4), (64, 8)])  # int(0.125·size + 0.5)
def test_dsa_crop_translates_by_every_integer_up_to_the_ratio(size, shift):
    out = A.dsa(_impulse(1000, size), "crop", generator=gen(12))
    where = [torch.nonzero(o[0] == 1) for o in out]
    moves = {(int(w[0, 0]) - size // 2, int(w[0, 1]) - size // 2) for w in where if len(w)}
    assert {d for m in moves for d in m} == set(range(-shift, shift + 1))


def test_dsa_cutout_centre_takes_all_size_plus_one_positions():
    ones = torch.ones(3000, 1, 32, 32)
    out = A.dsa(ones, "cutout", generator=gen(13))
    rows = (out[:, 0] == 0).any(dim=2)  # [B, 32] rows touched by the square
    centres = set()
    for r in rows:
        idx = torch.nonzero(r).flatten()
        first, last = int(idx[0]), int(idx[-1])
        centres.add(first + 8 if first > 0 else last + 1 - 8)  # side 16: rows c−8 … c+7, clipped
    assert centres == set(range(33))


@pytest.mark.parametrize("family", ["color", "crop", "cutout", "flip", "scale", "rotate"])
def test_dsa_parameters_are_drawn_per_sample(family):
    # 32 copies of one image: batch-shared parameters would give one distinct output
    x = torch.randn(1, 3, 32, 32, generator=gen(14)).expand(32, -1, -1, -1).contiguous()
    out = A.dsa(x, family, generator=gen(15))
    distinct = len({tuple(o.flatten().tolist()) for o in out})
    if family == "flip":
        assert distinct == 2  # both outcomes inside one batch
    elif family in ("crop", "cutout"):
        assert distinct >= 16  # 81 shifts / 33² positions: a few repeats by chance
    else:
        assert distinct == 32  # continuous parameters


def test_dsa_color_steps_and_ranges_by_hand():
    # R = g + d, G = g − d, B = g: the per-pixel channel mean is g, the deviation ±d. Brightness β shifts g,
    # saturation s scales d, contrast c scales everything about the image mean, so per sample
    # mean_c(out) = c·(g − ḡ) + ḡ + β and (R − mean_c)(out) = c·s·d, which regression recovers.
    g_ = torch.randn(16, 16, generator=gen(16), dtype=F64)
    d = torch.randn(16, 16, generator=gen(17), dtype=F64)
    x = torch.stack([g_ + d, g_ - d, g_])[None].expand(400, -1, -1, -1)
    out = A.dsa(x, "color", generator=gen(18))
    m = out.mean(dim=1)  # [B, H, W]
    gc = g_ - g_.mean()
    c = ((m - m.mean(dim=(1, 2), keepdim=True)) * gc).sum(dim=(1, 2)) / (gc * gc).sum()
    beta = m.mean(dim=(1, 2)) - g_.mean()
    cs = ((out[:, 0] - m) * d).sum(dim=(1, 2)) / (d * d).sum()
    s = cs / c
    resid = out[:, 0] - m - cs[:, None, None] * d
    assert resid.abs().max() < 1e-10  # the saturation step is exactly a scaling of the deviation
    for values, lo, hi in ((beta, -0.5, 0.5), (s, 0.0, 2.0), (c, 0.5, 1.5)):
        assert values.min() >= lo - 1e-9 and values.max() <= hi + 1e-9
        assert values.min() < lo + 0.05 and values.max() > hi - 0.05  # the whole range is used
