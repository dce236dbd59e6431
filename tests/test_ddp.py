"""DDP evaluation with gloo on CPU: two torchrun processes train the same student as one process with the same
global batch (instance-norm ConvNet, no augmentation, so the only difference is float rounding in the gradient
all-reduce), test counts are all-reduced, and ``torchrun -m ddbench eval`` records world size 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddbench.distributed import DistInfo, rank_seed
from ddbench.pixels import UInt8Space
from ddbench.protocol import Protocol
from ddbench.train import Trainer

SPACE = UInt8Space((0.5,), (0.25,))
PROTOCOL = Protocol(name="ddp", epochs=3, batch_size=10, aug=(), mix="none", optimizer="sgd", lr=0.05,
                    momentum=0.9, weight_decay=5e-4, label_mode="hard", loss="ce", eval_seeds=1,
                    test_every=0)  # fmt: skip


def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (20, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.arange(10).repeat(2)
    tx = torch.randint(0, 256, (37, 1, 8, 8), generator=g, dtype=torch.uint8)  # 37: uneven test slices
    ty = torch.randint(0, 10, (37,), generator=g)
    return x, y, tx, ty


def student() -> torch.nn.Module:
    from ddbench.models import create_model

    torch.manual_seed(11)
    return create_model("convnet", 10, 8, 1)


def train(dist: DistInfo | None) -> torch.nn.Module:
    x, y, _, _ = data()
    model = student()
    Trainer(PROTOCOL, space=SPACE, dist=dist).fit([model], x, y, generator=torch.Generator().manual_seed(0),
                                                  model_seeds=[5])  # fmt: skip
    return model


WORKER = """
import json, sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_ddp import data, train, SPACE
from ddbench.distributed import init_from_env, shutdown
from ddbench.train import evaluate_models
dist = init_from_env("cpu")
model = train(dist)
_, _, tx, ty = data()
shared = evaluate_models([model], (tx, ty), SPACE, "cpu", batch_size=8, dist=dist)[0]
alone = evaluate_models([model], (tx, ty), SPACE, "cpu", batch_size=8)[0]
if dist.rank == 0:
    torch.save(model.state_dict(), {out!r})
    json.dump({{"shared": shared, "alone": alone, "world": dist.world_size}}, open({out!r} + ".json", "w"))
shutdown(dist)
"""


def torchrun(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_shard_splits_a_global_batch_into_contiguous_rank_slices() -> None:
    idx = torch.arange(10, 20)
    parts = [DistInfo(r, 2).shard(idx) for r in range(2)]
    assert [p.tolist() for p in parts] == [list(range(10, 15)), list(range(15, 20))]
    assert DistInfo(0, 3).shard(torch.arange(7)).tolist() == [0, 1, 2]  # uneven: torch.tensor_split sizes 3, 2, 2
    assert DistInfo().shard(idx) is idx
    assert rank_seed(0, 0) != rank_seed(0, 1)  # two ranks never share an augmentation stream


def test_two_gloo_ranks_train_the_single_process_student(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent), out=str(out)))
    proc = torchrun([str(script)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_state = torch.load(out)
    single = train(None).state_dict()
    assert set(ddp_state) == set(single)
    for name, value in single.items():
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-4, atol=1e-5, msg=name)
    # the weights moved (3 epochs x 2 steps), so equality is not the initialisation's
    assert not torch.allclose(student().state_dict()["classifier.weight"], single["classifier.weight"])
    info = json.loads(Path(str(out) + ".json").read_text())
    assert info["world"] == 2
    assert info["shared"] == pytest.approx(info["alone"])  # all-reduced counts over 19 + 18 test images


def test_torchrun_ddbench_eval_records_world_size(tmp_path: Path) -> None:
    from ddbench.cli import main
    from ddbench.store import Store

    protocol = tmp_path / "noaug.toml"
    protocol.write_text('version = 1\ndescription = "ddp"\nepochs = 4\nbatch_size = 20\noptimizer = "sgd"\n'
                        'lr = 0.05\nmomentum = 0.9\naug = []\nmix = "none"\nlabel_mode = "hard"\nloss = "ce"\n'
                        'eval_seeds = 1\ntest_every = 0\n')  # fmt: skip
    assert main(["-q", "run", "--method", "random", "--dataset", "digits", "--ipc", "2", "--preset", "cpu",
                 "--device", "cpu", "--no-eval"]) == 0  # fmt: skip
    run_id = Store().runs()["run_id"].iloc[0]
    args = ["-m", "ddbench", "-q", "eval", run_id, "--archs", "convnet", "--protocol", str(protocol), "--seeds", "0",
            "--device", "cpu"]  # fmt: skip
    proc = torchrun(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = Store().evaluations(run_id=run_id)
    assert len(rows) == 1 and rows["error"].isna().all()
    assert json.loads(rows["extra_json"].iloc[0])["world_size"] == 2
    # one process, same global batch of 20 (one step per epoch): the same student up to rounding
    other = tmp_path / "single.sqlite"
    assert main(["-q", "eval", run_id, "--archs", "convnet", "--protocol", str(protocol), "--seeds", "0",
                 "--device", "cpu", "--store", str(other)]) == 0  # fmt: skip
    single = Store(other).evaluations(run_id=run_id)
    assert json.loads(single["extra_json"].iloc[0])["world_size"] == 1
    assert abs(float(single["top1"].iloc[0]) - float(rows["top1"].iloc[0])) <= 0.5
