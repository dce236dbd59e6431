"""Deterministic memory accounting for autograd: the bytes of the tensors a graph keeps for its backward.

Used by ``tests/test_mtt_ops.py`` and ``tests/benchmarks/test_bench_mtt.py`` to show how an unroll's memory
grows with the number of inner steps. Why saved tensors and not a process-level number: on the CPU, ``ru_maxrss``
only ever rises (one number per process, so every case would need its own subprocess) and allocator caching blurs
it, while the saved tensors are exactly what grows with N in MTT's full unroll (activations and first-order
gradient graphs kept for the double backward, spec mtt §8.1) and what TESLA frees after each step. The count is a
function of shapes and graph structure only, so it is the same on every run and machine. It does not include
transient buffers inside one kernel or tensors the caller keeps itself (TESLA's stored θ̂_n).
"""

from __future__ import annotations

import weakref

import torch


class _Packed:
    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


class SavedTensorMeter:
    """Context manager tracking the live bytes of distinct storages saved by autograd, and their peak.

    A storage saved by several nodes (a parameter used twice, a view of the flat θ) counts once while any of its
    savers is alive; it is released when the last graph node holding it is freed (after a backward without
    ``retain_graph``, or when the graph is dropped).
    """

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self._live: dict[tuple[int, str], list[int]] = {}

    def _pack(self, t: torch.Tensor) -> _Packed:
        storage = t.untyped_storage()
        key = (storage.data_ptr(), str(t.device))
        entry = self._live.get(key)
        if entry is None:
            self._live[key] = [1, storage.nbytes()]
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        else:
            entry[0] += 1
        packed = _Packed(t)
        weakref.finalize(packed, self._release, key)
        return packed

    @staticmethod
    def _unpack(packed: _Packed) -> torch.Tensor:
        return packed.tensor

    def _release(self, key: tuple[int, str]) -> None:
        entry = self._live[key]
        entry[0] -= 1
        if entry[0] == 0:
            del self._live[key]
            self.current -= entry[1]

    def __enter__(self) -> SavedTensorMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
