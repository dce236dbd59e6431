"""The cross-run artifact cache and the shards built on it: keys, verification, rebuilds, locks, hygiene."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddbench.artifacts import ArtifactCache, CorruptArtifactError
from ddbench.data import load_dataset
from ddbench.method import DistillContext


def counting_build(counter: list[int], payload: bytes = b"hello"):
    def build(tmp: Path) -> dict:
        counter.append(1)
        (tmp / "data.bin").write_bytes(payload)
        return {"note": "built"}

    return build


def test_key_is_canonical_and_names_the_folder(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    a = cache.path("experts", {"b": 1, "a": [1, 2]}, name="convnet")
    assert a == cache.path("experts", {"a": [1, 2], "b": 1}, name="convnet")  # key order does not matter
    assert a != cache.path("experts", {"a": [1, 2], "b": 2}, name="convnet")
    assert a.parent == tmp_path / "experts" and a.name.startswith("convnet-")
    assert cache.path("teachers/x", {"k": 1}, name="arch-{hash}-s0").name == f"arch-{cache.key_hash({'k': 1})}-s0"
    with pytest.raises(ValueError):
        cache.key_hash({"lr": float("nan")})  # a key that cannot be hashed canonically is refused


def test_built_once_then_loaded_with_provenance(tmp_path: Path) -> None:
    cache, n = ArtifactCache(tmp_path), []
    art = cache.get_or_build("stats", {"observer": "t1"}, counting_build(n))
    again = cache.get_or_build("stats", {"observer": "t1"}, counting_build(n))
    assert len(n) == 1 and again.path == art.path and again.meta["note"] == "built"
    manifest = json.loads((art.path / "manifest.json").read_text())
    assert manifest["key"] == {"observer": "t1"} and manifest["files"]["data.bin"]["bytes"] == 5
    prov = manifest["provenance"]
    assert prov["pid"] == os.getpid() and prov["wall_time_s"] >= 0 and prov["peak_mem_mb"] > 0
    assert prov["torch_version"] == torch.__version__ and prov["ddbench_version"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_changed_bytes_are_rebuilt_never_used(tmp_path: Path, damage: str, caplog) -> None:
    cache, n = ArtifactCache(tmp_path), []
    art = cache.get_or_build("stats", {"k": 1}, counting_build(n))
    f = art.path / "data.bin"
    if damage == "flip":
        f.write_bytes(b"jello")  # same size, one byte different
    elif damage == "truncate":
        f.write_bytes(b"hel")
    elif damage == "delete":
        f.unlink()
    else:
        (art.path / "manifest.json").write_text("{")
    with caplog.at_level(logging.WARNING, logger="ddbench.artifacts"):
        assert cache.lookup("stats", {"k": 1}) is None
        again = cache.get_or_build("stats", {"k": 1}, counting_build(n))
    assert len(n) == 2 and (again.path / "data.bin").read_bytes() == b"hello"
    assert "corrupt stats artifact" in caplog.text and "rebuilt, never used" in caplog.text


def test_tensor_artifact_with_wrong_keys_is_recomputed(tmp_path: Path) -> None:
    cache, n = ArtifactCache(tmp_path), []

    def compute():
        n.append(1)
        return {"mean": torch.arange(3.0)}

    tensors, art = cache.get_or_build_tensors("stats", {"k": 1}, compute)
    assert torch.equal(tensors["mean"], torch.arange(3.0))
    # a file that loads but holds {} (and a manifest "fixed" to its sha256) still fails the recorded-keys check
    torch.save({}, art.path / "tensors.pt")
    manifest = json.loads((art.path / "manifest.json").read_text())
    from ddbench.io import sha256_file

    manifest["files"]["tensors.pt"] = {
        "sha256": sha256_file(art.path / "tensors.pt"),
        "bytes": (art.path / "tensors.pt").stat().st_size,
    }
    (art.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptArtifactError, match="holds keys"):
        cache.lookup("stats", {"k": 1}).tensors()
    tensors, _ = cache.get_or_build_tensors("stats", {"k": 1}, compute)
    assert len(n) == 2 and torch.equal(tensors["mean"], torch.arange(3.0))


def test_a_failed_build_leaves_nothing_and_stale_temporaries_are_cleaned(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    folder = cache.path("stats", {"k": 1})

    def boom(tmp: Path) -> dict:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        cache.get_or_build("stats", {"k": 1}, boom)
    assert not folder.exists() and not list(folder.parent.glob(".*.tmp"))
    stale = folder.parent / f".{folder.name}.abc123.tmp"  # what a SIGKILL mid-build leaves behind
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x")
    cache.get_or_build("stats", {"k": 1}, counting_build([]))
    assert not stale.exists() and (folder / "data.bin").is_file()


def test_files_keep_the_users_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        art = ArtifactCache(tmp_path).get_or_build("stats", {"k": 1}, counting_build([]))
    finally:
        os.umask(old)
    assert stat.S_IMODE((art.path / "data.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE((art.path / "manifest.json").stat().st_mode) == 0o644
    assert stat.S_IMODE(art.path.stat().st_mode) == 0o755


def test_try_build_skips_a_key_another_process_holds(tmp_path: Path) -> None:
    from ddbench.io import lock

    cache, n = ArtifactCache(tmp_path), []
    folder = cache.path("stats", {"k": 1})
    with lock(folder):
        assert cache.try_build("stats", {"k": 1}, counting_build(n)) is None  # held: skipped, not waited on
    assert cache.try_build("stats", {"k": 1}, counting_build(n)) is not None and len(n) == 1


# -- shards -----------------------------------------------------------------------------------------------------------
def ctx_for(tmp_path: Path) -> DistillContext:
    return DistillContext(load_dataset("digits"), [], 1, torch.device("cpu"), 0, tmp_path / "run")


def test_shard_bit_flip_and_empty_dict_are_recomputed_with_a_warning(tmp_path: Path, caplog) -> None:
    ctx, n = ctx_for(tmp_path), []

    def compute():
        n.append(1)
        return {"x": torch.arange(6).reshape(2, 3)}

    first = ctx.shard("ipc0000", compute)
    folder = next(p for p in (tmp_path / "run" / "shards").glob("ipc0000-*") if p.is_dir())
    blob = bytearray((folder / "tensors.pt").read_bytes())
    blob[-30] ^= 0xFF  # flip bits inside the finished shard
    (folder / "tensors.pt").write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING):
        second = ctx.shard("ipc0000", compute)
    assert len(n) == 2 and torch.equal(first["x"], second["x"]) and "corrupt" in caplog.text
    torch.save({}, folder / "tensors.pt")
    assert torch.equal(ctx.shards([("ipc0000", compute)])[0]["x"], first["x"]) and len(n) == 3


SHARER = r"""
import os, sys, time
from pathlib import Path
import torch
from ddbench.data import load_dataset
from ddbench.method import DistillContext

log = Path(sys.argv[1])
home = Path(os.environ["DDBENCH_HOME"])
(home / f"ready{sys.argv[2]}").touch()
while not all((home / f"ready{i}").exists() for i in range(2)):
    time.sleep(0.01)
ctx = DistillContext(load_dataset("digits"), [], 8, torch.device("cpu"), 0, home / "run")

def compute(i):
    with log.open("a") as fh:
        fh.write(f"{i} {os.getpid()}\n")
    time.sleep(0.4)
    return {"x": torch.full((3,), float(i))}

out = ctx.shards([(f"ipc{i:04d}", lambda i=i: compute(i)) for i in range(8)])
print(" ".join(str(int(o["x"][0])) for o in out))
"""


def test_two_processes_fill_one_runs_shards_without_recomputing(tmp_path: Path) -> None:
    script, log = tmp_path / "sharer.py", tmp_path / "computed.log"
    script.write_text(SHARER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(log), str(i)], stdout=subprocess.PIPE, text=True,
                              env=env) for i in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == ["0 1 2 3 4 5 6 7"] * 2  # both see every shard, in order
    lines = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(i) for i, _ in lines) == list(range(8))  # each shard computed exactly once
    builders = {pid for _, pid in lines}
    assert len(builders) == 2  # and the work was shared
    manifests = [
        json.loads(p.read_text()) for p in (Path(os.environ["DDBENCH_HOME"]) / "run" / "shards").glob("*/manifest.json")
    ]
    assert {str(m["provenance"]["pid"]) for m in manifests} == builders  # the manifests say who built what
