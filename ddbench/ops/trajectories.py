"""Expert trajectories: the file format, the recorder, and how MTT picks an expert and a start epoch.

Implements spec mtt §4 (what an expert trajectory holds), §5.2 items 1-2 (which expert and which start epoch an
iteration uses) and §10 (one file per expert; the official layout as an optional export), for Cazenavette et al.,
"Dataset Distillation by Matching Training Trajectories" (CVPR 2022).

**File format** (one file per expert, ``torch.load(weights_only=True)``-safe): a dict with ``format``,
``version``, ``names`` and ``shapes`` (the :class:`~ddbench.ops.flat_params.ParamLayout`, so a trajectory is
checked against the model it is matched on) and ``snapshots``, a float32 ``[E+1, P]`` tensor: row 0 is the
initialisation, row e the parameters after epoch e, each flat in ``named_parameters`` order. The official code
stores, per expert, a list of E+1 lists of per-layer tensors (same order) and flattens them at use; one
contiguous tensor is the same numbers, loads in one read and slices without copies.

**Expert order** (:class:`ExpertOrder`). The official distiller shuffles its ``replay_buffer_{n}.pt`` files
(10 experts each), shuffles the experts of the loaded file, consumes them one per iteration without replacement,
then loads the next file (its experts reshuffled); when all files are used up the file order is reshuffled.
In ddbench every expert is its own artifact, so the files are emulated: expert k belongs to group k // 10, the
groups play the files (the last group may be shorter, because ddbench keeps every expert, spec §10), and the same
two-level shuffle runs over them. ``group_size = num_experts`` is the single-file case (``--max_files 1``): one
permutation of all experts, reshuffled after each pass; ``load_all=True`` is ``--load_all`` (uniform with
replacement). Permutations come from a ``torch.Generator`` instead of Python's global ``random`` (spec §9.2): the
same distribution, a reproducible stream.

**Start epoch** (:class:`StartEpochSampler`): s ~ U{0, …, T⁺−1} (numpy's ``randint(0, T⁺)`` in the official
code); the target is θ*_{s+M}, so a run whose largest start index would overrun the trajectory
(T⁺−1+M > E) is refused before it starts (spec §4, issue #4).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ddbench.io import atomic_file
from ddbench.ops.flat_params import ParamLayout

__all__ = [
    "FORMAT",
    "ExpertOrder",
    "ExpertTrajectory",
    "StartEpochSampler",
    "TrajectoryRecorder",
    "check_start_window",
    "export_replay_buffers",
    "import_replay_buffer",
]

logger = logging.getLogger(__name__)

FORMAT = "ddbench.expert-trajectory"
VERSION = 1


@dataclass(frozen=True)
class ExpertTrajectory:
    """One expert's parameters at initialisation and after each of E epochs.

    Attributes:
        snapshots: float32 ``[E+1, P]``; row e is θ*_e, flat in ``layout`` order.
        layout: the parameter names and shapes of the network that produced it.
    """

    snapshots: torch.Tensor
    layout: ParamLayout

    def __post_init__(self) -> None:
        s = self.snapshots
        if s.ndim != 2 or s.shape[0] < 2 or s.shape[1] != self.layout.num_params:
            raise ValueError(f"snapshots must be [E+1 ≥ 2, P={self.layout.num_params}], got {tuple(s.shape)}")
        if s.dtype != torch.float32:
            raise ValueError(f"snapshots are stored as float32, got {s.dtype}")

    @property
    def num_epochs(self) -> int:
        """E (the trajectory has E+1 snapshots)."""
        return self.snapshots.shape[0] - 1

    def segment(self, start_epoch: int, expert_epochs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(θ*_s, θ*_{s+M}) for s = ``start_epoch``, M = ``expert_epochs`` (views, no copy).

        Raises:
            IndexError: the segment does not lie inside the trajectory.
        """
        end = start_epoch + expert_epochs
        if start_epoch < 0 or expert_epochs < 1 or end > self.num_epochs:
            raise IndexError(f"segment {start_epoch}→{end} outside a trajectory of {self.num_epochs} epochs")
        return self.snapshots[start_epoch], self.snapshots[end]

    def check_model(self, model: nn.Module) -> None:
        """Raise ValueError if ``model``'s ``named_parameters`` differ from the trajectory's layout."""
        self.layout.check(model)

    def save(self, path: str | Path) -> Path:
        """Write the trajectory atomically to ``path``."""
        path = Path(path)
        blob = {"format": FORMAT, "version": VERSION, **self.layout.to_dict(), "snapshots": self.snapshots.cpu()}
        with atomic_file(path) as tmp:
            torch.save(blob, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ExpertTrajectory:
        """Read a file written by :meth:`save` (``weights_only`` loading, onto the CPU).

        Raises:
            ValueError: not an expert-trajectory file, or a newer format version.
        """
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ValueError(f"{path} is not a ddbench expert-trajectory file")
        if blob.get("version") != VERSION:
            raise ValueError(f"{path}: trajectory format version {blob.get('version')}, this ddbench reads {VERSION}")
        return cls(blob["snapshots"], ParamLayout.from_dict(blob))


class TrajectoryRecorder:
    """Collects a training network's flat parameters, one snapshot per call (the expert loop's epoch callback).

    Call :meth:`record` once before training (θ*_0, the initialisation) and once after every epoch; each call
    copies the parameters to a float32 CPU vector, as the official buffer does.

    Args:
        model: the network being trained; its layout is fixed at construction and checked at every call.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layout = ParamLayout.of(model)
        self._rows: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self._rows)

    def record(self, model: nn.Module) -> None:
        """Append ``model``'s current parameters."""
        self._rows.append(self.layout.flatten_model(model).to(device="cpu", dtype=torch.float32))

    def trajectory(self) -> ExpertTrajectory:
        """The snapshots so far as one trajectory (needs at least two)."""
        if len(self._rows) < 2:
            raise ValueError(f"a trajectory needs the init and ≥ 1 epoch, have {len(self._rows)} snapshot(s)")
        return ExpertTrajectory(torch.stack(self._rows), self.layout)


def check_start_window(max_start_epoch: int, expert_epochs: int, num_epochs: int) -> None:
    """Refuse a start window whose largest target θ*_{T⁺−1+M} lies beyond the trajectory (T⁺−1+M > E).

    Raises:
        ValueError: T⁺ < 1, M < 1, or T⁺−1+M > E, with the numbers and the fix.
    """
    if max_start_epoch < 1 or expert_epochs < 1:
        raise ValueError(f"need max_start_epoch ≥ 1 and expert_epochs ≥ 1, got {max_start_epoch}, {expert_epochs}")
    if max_start_epoch - 1 + expert_epochs > num_epochs:
        raise ValueError(
            f"max_start_epoch={max_start_epoch} with expert_epochs={expert_epochs} needs targets up to epoch "
            f"{max_start_epoch - 1 + expert_epochs}, but the experts were trained for {num_epochs} epochs: train "
            f"experts for ≥ {max_start_epoch - 1 + expert_epochs} epochs or lower max_start_epoch to "
            f"≤ {num_epochs - expert_epochs + 1}"
        )


class StartEpochSampler:
    """s ~ U{0, …, T⁺−1}, checked at construction against the experts' length (spec §5.2 item 2).

    Args:
        max_start_epoch: T⁺ (exclusive upper bound of s).
        expert_epochs: M.
        num_epochs: E, the experts' training epochs.
        generator: source of the draws.
    """

    def __init__(self, max_start_epoch: int, expert_epochs: int, num_epochs: int, generator: torch.Generator) -> None:
        check_start_window(max_start_epoch, expert_epochs, num_epochs)
        if not isinstance(generator, torch.Generator):
            raise TypeError("StartEpochSampler takes an explicit torch.Generator")
        self.max_start_epoch, self.expert_epochs, self.generator = max_start_epoch, expert_epochs, generator

    def sample(self) -> int:
        """The next start epoch."""
        return int(torch.randint(0, self.max_start_epoch, (1,), generator=self.generator))


class ExpertOrder:
    """Which expert each distillation iteration uses, in the official consumption order (module docstring).

    Args:
        num_experts: number of available experts (indices 0 … num_experts−1).
        generator: source of the shuffles (or of the draws, with ``load_all``).
        group_size: experts per emulated ``replay_buffer_{n}.pt`` file (the official ``save_interval``, 10).
        load_all: draw uniformly with replacement instead (``--load_all``).
    """

    def __init__(
        self, num_experts: int, generator: torch.Generator, *, group_size: int = 10, load_all: bool = False
    ) -> None:
        if num_experts < 1 or group_size < 1:
            raise ValueError(f"need num_experts ≥ 1 and group_size ≥ 1, got {num_experts}, {group_size}")
        if not isinstance(generator, torch.Generator):
            raise TypeError("ExpertOrder takes an explicit torch.Generator")
        self.num_experts, self.generator, self.load_all = num_experts, generator, load_all
        self.groups = [list(range(k, min(k + group_size, num_experts))) for k in range(0, num_experts, group_size)]
        self._group_order = self._perm(len(self.groups))
        self._group_pos = 0
        self._members = self._load(self._group_order[0])
        self._member_pos = 0

    def _perm(self, n: int) -> list[int]:
        return torch.randperm(n, generator=self.generator).tolist()

    def _load(self, group: int) -> list[int]:
        members = self.groups[group]
        return [members[j] for j in self._perm(len(members))]

    def next(self) -> int:
        """The expert index for the next iteration."""
        if self.load_all:
            return int(torch.randint(0, self.num_experts, (1,), generator=self.generator))
        expert = self._members[self._member_pos]
        self._member_pos += 1
        if self._member_pos == len(self._members):  # file used up: next file, reshuffling the files after the last
            self._member_pos = 0
            self._group_pos += 1
            if self._group_pos == len(self.groups):
                self._group_pos = 0
                self._group_order = self._perm(len(self.groups))
            self._members = self._load(self._group_order[self._group_pos])
        return expert


def _as_layer_lists(trajectory: ExpertTrajectory) -> list[list[torch.Tensor]]:
    # views of the snapshot tensor: torch.save writes their shared storage once
    return [list(trajectory.layout.unflatten(row).values()) for row in trajectory.snapshots]


def export_replay_buffers(
    trajectories: Sequence[ExpertTrajectory], directory: str | Path, *, save_interval: int = 10
) -> list[Path]:
    """Write trajectories in the official layout: ``replay_buffer_{n}.pt`` files of ``save_interval`` experts.

    Each file is a list of trajectories; each trajectory a list of E+1 per-epoch lists of per-layer float32
    tensors in ``parameters()`` order (what the official ``buffer.py`` writes and ``distill.py`` reads). Unlike
    ``buffer.py``, the last partial group **is written** (12 experts give files of 10 and 2), so no expert is
    lost (spec §4, §10). The folder name the official code expects (``{dataset}[_NO_ZCA]/{model}``) is the
    caller's choice of ``directory``.

    Raises:
        ValueError: no trajectories, or trajectories with different layouts.
    """
    if not trajectories:
        raise ValueError("nothing to export")
    if save_interval < 1:
        raise ValueError(f"save_interval must be ≥ 1, got {save_interval}")
    for t in trajectories[1:]:
        trajectories[0].layout.check(t.layout)
    directory = Path(directory)
    paths = []
    for n, k in enumerate(range(0, len(trajectories), save_interval)):
        path = directory / f"replay_buffer_{n}.pt"
        with atomic_file(path) as tmp:
            torch.save([_as_layer_lists(t) for t in trajectories[k : k + save_interval]], tmp)
        paths.append(path)
    logger.info("exported %d trajectories to %d replay-buffer files in %s", len(trajectories), len(paths), directory)
    return paths


def import_replay_buffer(path: str | Path, layout: ParamLayout) -> list[ExpertTrajectory]:
    """Read an official ``replay_buffer_{n}.pt`` (``weights_only``) into trajectories of ``layout``.

    Raises:
        ValueError: a snapshot whose layer shapes differ from ``layout``.
    """
    buffer = torch.load(path, map_location="cpu", weights_only=True)
    out = []
    for trajectory in buffer:
        rows = [layout.flatten(list(snapshot)).to(torch.float32) for snapshot in trajectory]
        out.append(ExpertTrajectory(torch.stack(rows), layout))
    return out
