"""CUDA checks (marker ``gpu``): the harness on a GPU gives the CPU's numbers up to float noise, AMP runs bf16
forwards with fp32 weights, channels-last is numerically equivalent, and lockstep students stay independent.

They run in ``scripts/gpu_check.sh`` (``pytest -m gpu``) and skip without CUDA.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddbench.labels import TeacherLabels, build_label_mode
from ddbench.pixels import UInt8Space
from ddbench.protocol import Protocol
from ddbench.train import Trainer, evaluate_models

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SPACE = UInt8Space((0.5,), (0.25,))


class Net(nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(F.relu(self.bn(self.conv(x))).mean((2, 3))))


def seeded(seed: int, **kw) -> Net:
    torch.manual_seed(seed)
    return Net(**kw)


def data(n: int = 64):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(n) % 4


def fit(models, device, teacher=None, **kw):
    x, y = data()
    soft = {"label_mode": "teacher", "loss": "kl", "temperature": 4.0} if teacher is not None else {}
    p = Protocol(
        name="g", epochs=3, batch_size=16, lr=0.05, aug=("crop_pad", "flip"), mix="mixup", eval_seeds=1, **soft
    )
    labels = TeacherLabels([teacher.to(device).eval()]) if teacher is not None else build_label_mode("hard")
    return Trainer(p, space=SPACE, labels=labels, device=device, **kw).fit(
        models, x, y, generator=torch.Generator().manual_seed(1), model_seeds=list(range(len(models)))
    )


def test_cuda_training_matches_cpu() -> None:
    cpu, gpu = seeded(0), seeded(0)
    fit([cpu], "cpu", teacher=seeded(9))
    fit([gpu], "cuda", teacher=seeded(9))
    for (name, a), b in zip(cpu.state_dict().items(), gpu.state_dict().values()):
        torch.testing.assert_close(a, b.cpu(), atol=2e-4, rtol=2e-3, msg=name)


def test_cuda_amp_is_bf16_forward_fp32_weights_and_close() -> None:
    ref, amp = seeded(0), seeded(0)
    dtypes: list[torch.dtype] = []
    amp.conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    fit([ref], "cuda")
    fit([amp], "cuda", amp=True, channels_last=True)
    assert set(dtypes) == {torch.bfloat16}
    assert all(w.dtype == torch.float32 for w in amp.state_dict().values() if w.is_floating_point())
    moved = (ref.fc.weight - seeded(0).fc.weight.cuda()).abs().max().item()
    assert (ref.fc.weight - amp.fc.weight).abs().max().item() < 0.2 * moved


def test_cuda_lockstep_equals_one_by_one_with_dropout() -> None:
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    lock = [seeded(1, dropout=0.3), seeded(2, dropout=0.3)]
    fit(lock, "cuda")
    alone = [seeded(1, dropout=0.3), seeded(2, dropout=0.3)]
    for i, m in enumerate(alone):
        x, y = data()
        p = Protocol(name="g", epochs=3, batch_size=16, lr=0.05, aug=("crop_pad", "flip"), mix="mixup", eval_seeds=1)
        Trainer(p, space=SPACE, device="cuda").fit(
            [m], x, y, generator=torch.Generator().manual_seed(1), model_seeds=[i]
        )
    for a, b in zip(lock, alone):
        for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(wa, wb), name


def test_cuda_accuracy_pass_counts_like_cpu() -> None:
    x, y = data(200)
    model = seeded(3).eval()
    cpu = evaluate_models([model], (x, y), SPACE, "cpu", batch_size=64)
    gpu = evaluate_models([model.cuda()], (x, y), SPACE, "cuda", batch_size=64)
    assert cpu == pytest.approx(gpu, abs=1.0)  # at most 2 of 200 images flip on float noise
