from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from ddbench.config import ConfigError, config_hash, load_toml, parse_overrides, resolve

PRESET = """
["*".common]
lr = 0.5

[cifar10.common]
iterations = 1000
lr = 0.25

[cifar10.ipc.50]
iterations = 2000

[cifar10.cpu.common]
iterations = 100

[cifar10.cpu.ipc.50]
batch = 8

["*".cpu.common]
lr = 0.3
"""


@dataclass(frozen=True)
class Cfg:
    iterations: int = 10
    lr: float = 0.1
    batch: int = 100
    init: Literal["noise", "real"] = "noise"
    jitter: tuple[int, ...] = (4, 4)
    teacher: str | None = None
    flags: tuple[str, ...] = field(default=())


def preset(tmp_path: Path, text: str = PRESET) -> tuple[dict, str]:
    path = tmp_path / "m.toml"
    path.write_text(text)
    return load_toml(path), str(path)


def test_precedence_defaults_preset_profile_file_set(tmp_path: Path) -> None:
    p, _ = preset(tmp_path)
    assert resolve(Cfg).config == Cfg()
    assert resolve(Cfg, preset=p, dataset="mnist").config.lr == 0.5  # "*" applies to every dataset
    paper = resolve(Cfg, preset=p, dataset="cifar10", ipc=10).config
    assert (paper.iterations, paper.lr, paper.batch) == (1000, 0.25, 100)
    assert resolve(Cfg, preset=p, dataset="cifar10", ipc=50).config.iterations == 2000
    cpu = resolve(Cfg, preset=p, dataset="cifar10", ipc=50, profile="cpu").config
    # profile layers override base layers; "*" profile sits below the dataset's own profile tables
    assert (cpu.iterations, cpu.batch, cpu.lr) == (100, 8, 0.3)
    user = tmp_path / "user.toml"
    user.write_text("iterations = 7\nlr = 0.01\n")
    r = resolve(Cfg, preset=p, dataset="cifar10", ipc=50, profile="cpu", config_file=user, overrides={"lr": 0.02})
    assert (r.config.iterations, r.config.lr) == (7, 0.02)
    assert [layer.source.split()[-1] for layer in r.layers][-2:] == [str(user).split()[-1], "--set"]


def test_none_never_overrides(tmp_path: Path) -> None:
    p, _ = preset(tmp_path)
    assert resolve(Cfg, preset=p, dataset="cifar10", overrides={"iterations": None}).config.iterations == 1000


def test_unknown_key_names_file_table_and_key(tmp_path: Path) -> None:
    p, src = preset(tmp_path, "[cifar10.common]\niteratons = 5\n")
    with pytest.raises(ConfigError) as info:
        resolve(Cfg, preset=p, preset_source=src, dataset="cifar10")
    msg = str(info.value)
    assert src in msg and "[cifar10.common]" in msg and "'iteratons'" in msg


def test_unknown_key_in_set_and_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--set: unknown key 'nope'"):
        resolve(Cfg, overrides={"nope": 1})
    user = tmp_path / "u.toml"
    user.write_text("bogus = 1\n")
    with pytest.raises(ConfigError, match=r"u.toml: unknown key 'bogus'"):
        resolve(Cfg, config_file=user)


def test_type_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"iterations: expected an integer, got 'many'"):
        resolve(Cfg, overrides={"iterations": "many"})
    with pytest.raises(ConfigError, match="init: 'zeros' is not one of 'noise', 'real'"):
        resolve(Cfg, overrides={"init": "zeros"})
    with pytest.raises(ConfigError, match=r"expected 2 values|expected a list"):
        resolve(Cfg, overrides={"jitter": 3})
    # int is accepted for float fields, float-with-integer-value for int fields
    cfg = resolve(Cfg, overrides={"lr": 1, "iterations": 3.0}).config
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.iterations == 3


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("x = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad)
    p, src = preset(tmp_path, "[cifar10.ipc.ten]\nlr = 1\n")
    with pytest.raises(ConfigError, match="integer ipc"):
        resolve(Cfg, preset=p, preset_source=src, dataset="cifar10", ipc=10)
    p, src = preset(tmp_path, "[cifar10.weird]\nlr = 1\n")
    with pytest.raises(ConfigError, match="neither 'common', 'ipc' nor a profile"):
        resolve(Cfg, preset=p, preset_source=src, dataset="cifar10")
    p, src = preset(tmp_path)
    with pytest.raises(ConfigError, match="no profile 'gpu'"):
        resolve(Cfg, preset=p, preset_source=src, dataset="cifar10", profile="gpu")


def test_parse_overrides() -> None:
    got = parse_overrides(["lr=0.1", "iterations=3", "init=real", "jitter=[1, 2]", "flag=true", "teacher-arch=x"])
    assert got == {"lr": 0.1, "iterations": 3, "init": "real", "jitter": [1, 2], "flag": True, "teacher_arch": "x"}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["lr"])


def test_hash_is_canonical_and_sensitive() -> None:
    a, b = Cfg(), Cfg(lr=0.1, iterations=10)
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(Cfg(lr=0.1000001))
    assert len(config_hash(a)) == 16
