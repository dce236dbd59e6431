"""Teachers: cache hits, one training under concurrency, corruption, class order, imports, ImageNet weights.

Most tests replace the training loop (``load_protocol`` as ``ddbench.teachers`` imported it, and its own
``fit_teacher`` and ``evaluate_models``, the student loop and accuracy pass it calls) with a fake that counts
trainings, because what is tested here is the caching around it; ``test_two_processes_train_once`` runs the real
loop (convnet on digits).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import ddbench.teachers as teachers_module
from ddbench.config import ConfigError
from ddbench.data import load_dataset
from ddbench.data.dataset import Dataset
from ddbench.errors import UserError
from ddbench.models import ARCHS
from ddbench.teachers import (
    DATASET_RECIPES,
    TeacherSpec,
    get_teacher,
    import_teacher,
    load_teacher,
    recipe_path,
    teacher_dir,
)

ARCH = "tiny_linear_for_teacher_tests"
REPO = Path(__file__).resolve().parents[1]


class TinyNet(nn.Module):
    """Flatten + BN + linear: has parameters and buffers, builds in microseconds."""

    def __init__(self, num_classes: int, img_size: int, in_chans: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_chans * img_size * img_size)
        self.fc = nn.Linear(in_chans * img_size * img_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(x.flatten(1)))


def tiny_net(num_classes: int, img_size: int = 32, in_chans: int = 3) -> nn.Module:
    return TinyNet(num_classes, img_size, in_chans)


if ARCH not in ARCHS:
    ARCHS.register(ARCH, tiny_net, origin="tests")

FAKE_LOOP = """
import os, time
from types import SimpleNamespace
from pathlib import Path

import torch

from ddbench.config import config_hash


def load_protocol(path, profile="paper"):
    return SimpleNamespace(hash=config_hash([Path(path).read_text(), profile]), version=1, epochs=1, name="fake")


def fit_teacher(model, images, labels, protocol, dataset, generator, device, progress=None, stage="teacher"):
    log = Path(os.environ["DDBENCH_HOME"]) / "trainings.log"
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    time.sleep(float(os.environ.get("FAKE_TRAIN_SLEEP", "0")))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator))


def evaluate_models(models, source, space, device, batch_size=256):
    return [(50.0, 90.0) for _ in models]
"""


#: The names in ddbench.teachers' namespace the fake replaces.
FAKED = ("load_protocol", "fit_teacher", "evaluate_models")


def _fake_module() -> types.ModuleType:
    module = types.ModuleType("fake_training_loop")
    exec(compile(FAKE_LOOP, "fake_training_loop", "exec"), module.__dict__)
    return module


@pytest.fixture
def fake_eval(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Swap the fakes in where ddbench.teachers looks its training loop up (its module globals).

    Returns ``ddbench.teachers`` itself, so a test that ``monkeypatch.setattr(fake_eval, name, ...)`` replaces the
    function the teachers code calls next.
    """
    module = _fake_module()
    for name in FAKED:
        monkeypatch.setattr(teachers_module, name, getattr(module, name))
    return teachers_module


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-recipe.toml"
    path.write_text("# read only by the fake load_protocol\nepochs = 1\n")
    return path


def trainings() -> int:
    log = Path(os.environ["DDBENCH_HOME"]) / "trainings.log"
    return len(log.read_text().split()) if log.is_file() else 0


def test_trains_once_then_hits_cache(fake_eval, digits: Dataset, recipe: Path, monkeypatch) -> None:
    spec = TeacherSpec(arch=ARCH, recipe=str(recipe), seed=3)
    t1 = get_teacher(digits, spec)
    assert trainings() == 1
    assert t1.path is not None and (t1.path / "model.pt").is_file() and (t1.path / "manifest.json").is_file()
    assert t1.path.parent == teacher_dir("digits")
    assert t1.id == t1.path.name and t1.id.startswith(f"{ARCH}-{digits.class_hash}-") and t1.id.endswith("-s3")
    assert not t1.model.training and not any(p.requires_grad for p in t1.model.parameters())
    assert t1.accuracy["test_top1"] == 50.0 and "train_top1" in t1.accuracy
    import json

    manifest = json.loads((t1.path / "manifest.json").read_text())
    meta, key = manifest["meta"], manifest["key"]
    assert manifest["key_hash"] in t1.id and key["recipe_hash"] == t1.recipe["hash"] and key["seed"] == 3
    assert key["data"]["class_hash"] == digits.class_hash  # the data identity is part of the key
    assert t1.recipe["path"] == str(recipe)
    assert meta["classes"] == list(digits.classes) and meta["seed"] == 3 and meta["ddbench_version"]
    assert meta["torch_version"] == torch.__version__ and meta["wall_time_s"] >= 0
    assert manifest["files"]["model.pt"]["sha256"] == t1.sha256

    monkeypatch.setattr(fake_eval, "fit_teacher", lambda *a, **k: pytest.fail("cache hit expected, trained"))
    t2 = get_teacher(digits, spec)
    assert (t2.id, t2.sha256) == (t1.id, t1.sha256)
    assert all(torch.equal(a, b) for a, b in zip(t1.model.state_dict().values(), t2.model.state_dict().values()))
    assert not t2.model.training and not any(p.requires_grad for p in t2.model.parameters())
    # another seed, profile or class subset is another teacher
    monkeypatch.setattr(fake_eval, "fit_teacher", _fake_module().fit_teacher)
    assert get_teacher(digits, dataclasses.replace(spec, seed=4)).id != t1.id
    assert get_teacher(digits, spec, profile="cpu").id != t1.id
    assert get_teacher(digits.with_num_classes(5), spec).id != t1.id
    assert trainings() == 4


def test_recipe_width_mult_builds_narrow_teacher_and_reloads_it(fake_eval, digits, recipe, monkeypatch) -> None:
    plain = fake_eval.load_protocol
    monkeypatch.setattr(fake_eval, "load_protocol", lambda *a, **k: types.SimpleNamespace(**{
        **vars(plain(*a, **k)), "width_mult": 0.25}))  # fmt: skip
    t = get_teacher(digits, TeacherSpec(arch="convnet_bn", recipe=str(recipe)))
    assert t.id.startswith(f"convnet_bnx0.25-{digits.class_hash}-") and t.model.width == 32
    import json

    assert json.loads((t.path / "manifest.json").read_text())["meta"]["width_mult"] == 0.25
    again = load_teacher(t.id, digits)  # rebuilt at the recorded width, or the state dict would not fit
    assert again.model.width == 32 and again.sha256 == t.sha256


def test_refresh_retrains(fake_eval, digits: Dataset, recipe: Path) -> None:
    spec = TeacherSpec(arch=ARCH, recipe=str(recipe))
    first = get_teacher(digits, spec)
    second = get_teacher(digits, spec, refresh=True)
    assert trainings() == 2 and first.id == second.id
    assert first.sha256 == second.sha256  # init and data order are seeded from the spec, so retraining repeats


def test_corrupt_weights_are_retrained(fake_eval, digits: Dataset, recipe: Path, caplog) -> None:
    spec = TeacherSpec(arch=ARCH, recipe=str(recipe))
    teacher = get_teacher(digits, spec)
    weights = teacher.path / "model.pt"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    with caplog.at_level(logging.WARNING, logger="ddbench.teachers"):
        again = get_teacher(digits, spec)
    assert trainings() == 2
    assert "corrupt teacher" in caplog.text and teacher.id in caplog.text
    assert again.id == teacher.id
    assert load_teacher(again.id, digits).sha256 == again.sha256  # the rewritten files verify


def test_unreadable_metadata_is_retrained(fake_eval, digits: Dataset, recipe: Path) -> None:
    spec = TeacherSpec(arch=ARCH, recipe=str(recipe))
    teacher = get_teacher(digits, spec)
    (teacher.path / "manifest.json").write_text("{not json")
    get_teacher(digits, spec)
    assert trainings() == 2


def test_class_order_mismatch_is_one_line_error(fake_eval, digits: Dataset, recipe: Path) -> None:
    teacher = get_teacher(digits, TeacherSpec(arch=ARCH, recipe=str(recipe)))
    reordered = Dataset(dataclasses.replace(digits.spec, classes=digits.classes[::-1]), digits.train, digits.test)
    with pytest.raises(UserError, match="class order") as info:
        load_teacher(teacher.path, reordered)
    assert "\n" not in str(info.value)


def test_import_round_trip_with_module_prefix(fake_eval, digits: Dataset, tmp_path: Path, monkeypatch) -> None:
    source = tiny_net(10, 8, 1)
    with torch.no_grad():
        source.fc.weight.normal_()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": state, "epoch": 99, "args": argparse.Namespace(lr=0.2)}, ckpt)  # torchvision-script layout

    teacher = import_teacher(digits, ARCH, ckpt, class_names=list(digits.classes))
    assert teacher.id.startswith(f"{ARCH}-{digits.class_hash}-import{teacher.recipe['checkpoint_sha256'][:16]}-")
    assert teacher.accuracy["test_top1"] == 50.0
    for key, value in source.state_dict().items():
        assert torch.equal(teacher.model.state_dict()[key], value), key
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
    assert load_teacher(teacher.id, digits).sha256 == teacher.sha256
    # importing the same file again reuses the import (no second accuracy pass)
    monkeypatch.setattr(fake_eval, "evaluate_models", lambda *a, **k: pytest.fail("re-measured a cached import"))
    assert import_teacher(digits, ARCH, ckpt).id == teacher.id
    # a raw state dict under "state_dict" works too
    raw = tmp_path / "raw.pt"
    torch.save({"state_dict": source.state_dict()}, raw)
    monkeypatch.setattr(fake_eval, "evaluate_models", _fake_module().evaluate_models)
    assert import_teacher(digits, ARCH, raw).sha256 == teacher.sha256  # same weights, same canonical file


def test_import_refusals_are_one_line(fake_eval, digits: Dataset, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pth"
    torch.save(tiny_net(10, 8, 1).state_dict(), ckpt)
    with pytest.raises(UserError, match="class order"):
        import_teacher(digits, ARCH, ckpt, class_names=[str(i) for i in reversed(range(10))])
    wrong = tmp_path / "wrong.pth"
    torch.save(tiny_net(7, 8, 1).state_dict(), wrong)
    with pytest.raises(UserError, match="do not fit"):
        import_teacher(digits, ARCH, wrong)
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": tiny_net(10, 8, 1)}, pickled)  # a whole pickled module: refused, never unpickled
    with pytest.raises(UserError, match="weights-only"):
        import_teacher(digits, ARCH, pickled)
    with pytest.raises(UserError, match="does not exist"):
        import_teacher(digits, ARCH, tmp_path / "missing.pth")


def test_imagenet_resnet18_needs_hub_cache(fake_eval, digits: Dataset, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    fake_in1k = Dataset(dataclasses.replace(digits.spec, id="imagenet-1k"), digits.train, digits.test)
    with pytest.raises(UserError, match="--checkpoint") as info:
        get_teacher(fake_in1k, TeacherSpec(arch="resnet18"))
    assert str(tmp_path / "torch-home") in str(info.value)


def test_recipe_selection() -> None:
    assert DATASET_RECIPES["cifar10"] == DATASET_RECIPES["cifar100"] == "cifar"
    assert DATASET_RECIPES["tiny-imagenet"] == "tiny"
    with pytest.raises(ConfigError, match="no teacher recipe 'nope'"):
        recipe_path("cifar10", "nope")
    for dataset, name in (("cifar10", "cifar"), ("tiny-imagenet", "tiny"), ("mnist", "default")):
        try:
            assert recipe_path(dataset).name == f"{name}.toml"
        except ConfigError as exc:  # recipes not shipped yet: the error names the file it wanted
            assert f"{name}.toml" in str(exc)


REAL_RECIPE = """\
version = 1
description = "test: one epoch of the real loop"
epochs = 1
batch_size = 128
lr = 0.05
aug = ["crop_pad"]
label_mode = "hard"
loss = "ce"
eval_seeds = 1
"""

CHILD = """
import os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
import ddbench.teachers as teachers
from ddbench.data import load_dataset
from ddbench.teachers import TeacherSpec, get_teacher

real = teachers.fit_teacher
def counted(*args, **kwargs):
    with open(Path(os.environ["DDBENCH_HOME"]) / "trainings.log", "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    return real(*args, **kwargs)
teachers.fit_teacher = counted

ds = load_dataset("digits")
home = Path(os.environ["DDBENCH_HOME"])
(home / f"ready{sys.argv[1]}").touch()
deadline = time.time() + 120
while not all((home / f"ready{i}").exists() for i in range(2)) and time.time() < deadline:
    time.sleep(0.01)
t = get_teacher(ds, TeacherSpec(arch="convnet", recipe=sys.argv[2]))
print(t.id, t.sha256, t.accuracy["test_top1"])
"""


def test_two_processes_train_once(digits: Dataset, tmp_path: Path) -> None:
    """Two processes ask for the same teacher at the same moment: one trains it (real loop, convnet on digits),
    the other waits on the lock and loads the result."""
    pytest.importorskip("ddbench.train")
    recipe = tmp_path / "one-epoch.toml"
    recipe.write_text(REAL_RECIPE)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    procs = [
        subprocess.Popen([sys.executable, str(script), str(i), str(recipe)], stdout=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert trainings() == 1
    assert outs[0] == outs[1] and len(outs[0].split()) == 3
    assert float(outs[0].split()[2]) > 30.0  # one epoch already beats chance (10%) by far
    teacher = load_teacher(outs[0].split()[0], digits)
    assert teacher.arch == "convnet" and teacher.recipe["epochs"] == 1


def test_cli_trains_then_imports(fake_eval, recipe: Path, tmp_path: Path, capsys) -> None:
    from ddbench.cli import main
    from ddbench.store import Store

    args = ["-q", "teacher", "--dataset", "digits", "--arch", ARCH, "--recipe", str(recipe), "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    (teacher_id,) = [p.name for p in teacher_dir("digits").iterdir() if p.is_dir()]
    assert teacher_id in out and "test accuracy" in out and "top-1 50.00%" in out
    assert list(Store().teachers()["teacher_id"]) == [teacher_id]
    assert main(args) == 0 and trainings() == 1  # second call is a cache hit
    ckpt = tmp_path / "ckpt.pth"
    torch.save(tiny_net(10, 8, 1).state_dict(), ckpt)
    assert main(["-q", "teacher", "--dataset", "digits", "--arch", ARCH, "--checkpoint", str(ckpt)]) == 0
    assert "-import" in capsys.readouterr().out
    assert len(Store().teachers()) == 2
    assert main(["-q", "teacher", "--dataset", "digits", "--arch", ARCH, "--checkpoint", str(tmp_path / "no.pt")]) == 2
