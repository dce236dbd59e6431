from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ddbench.registry import Registry, RegistryError


class Base:
    pass


class Impl(Base):
    pass


def test_lazy_entry_is_imported_on_first_get_only() -> None:
    reg: Registry = Registry("thing")
    reg.register("od", "collections:OrderedDict")
    assert not reg._entries["od"].loaded  # nothing imported by registering
    from collections import OrderedDict

    assert reg.get("od") is OrderedDict
    assert reg._entries["od"].loaded


def test_lazy_import_does_not_happen_at_registration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "boom_mod.py").write_text("raise RuntimeError('imported too early')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("thing")
    reg.register("boom", "boom_mod:X")
    assert "boom" in reg.names()
    with pytest.raises(RegistryError, match="could not be loaded"):
        reg.get("boom")


def test_duplicate_name_and_alias_raise() -> None:
    reg: Registry = Registry("method")
    reg.register("a", Impl, aliases=("alpha",))
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a", Impl)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("b", Impl, aliases=("alpha",))


def test_unknown_name_suggests_and_lists() -> None:
    reg: Registry = Registry("method")
    for name in ("sre2l", "dwa", "random"):
        reg.register(name, Impl)
    with pytest.raises(RegistryError) as info:
        reg.get("sre21")
    msg = str(info.value)
    assert "did you mean 'sre2l'" in msg and "known: dwa, random, sre2l" in msg
    assert "\n" not in msg


def test_alias_and_dash_underscore_spelling() -> None:
    reg: Registry = Registry("dataset")
    reg.register("tiny-imagenet", 1, aliases=("tiny",))
    assert reg.get("tiny_imagenet") == 1
    assert reg.get("tiny") == 1
    assert reg.canonical("tiny_imagenet") == "tiny-imagenet"


def test_list_filters_like_timm() -> None:
    reg: Registry = Registry("arch")
    for name in ("resnet18", "resnet101", "resnet50", "vgg11_bn", "convnet"):
        reg.register(name, object())
    assert reg.list("res*") == ["resnet18", "resnet50", "resnet101"]  # natural sort
    assert reg.list("*", exclude="res*") == ["convnet", "vgg11_bn"]
    assert reg.list(["vgg*", "conv*"]) == ["convnet", "vgg11_bn"]


def test_base_class_check_including_lazy_base() -> None:
    reg: Registry = Registry("method", base_cls=f"{__name__}:Base")
    reg.register("ok", Impl)
    reg.register("bad", "collections:OrderedDict")
    assert reg.get("ok") is Impl
    with pytest.raises(RegistryError, match="not a Base"):
        reg.get("bad")


def test_entry_point_from_a_throwaway_installed_distribution(tmp_path: Path) -> None:
    """A real distribution installed in a scratch site dir registers a method via `ddbench.methods`."""
    site = tmp_path / "site"
    pkg = site / "ddbench_toy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            from ddbench.method import Method
            from dataclasses import dataclass

            @dataclass(frozen=True)
            class ToyConfig:
                k: int = 1

            class Toy(Method):
                name = "toy"
                version = 3
                Config = ToyConfig
                def distill(self, ctx):
                    raise NotImplementedError
            """
        )
    )
    dist = site / "ddbench_toy-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ddbench-toy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ddbench.methods]\ntoy = ddbench_toy:Toy\n")
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(site)!r})
        from ddbench.plugins import METHODS
        cls = METHODS.get("toy")
        print(cls.version, METHODS.origin("toy"))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["3", "entry-point", "ddbench-toy", "0.1"]


def test_entry_point_colliding_with_builtin_raises(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist = site / "evil-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ddbench.methods]\ndwa = evil:DWA\n")
    code = f"import sys; sys.path.insert(0, {str(site)!r}); from ddbench.plugins import METHODS; METHODS.names()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "method 'dwa' is already registered (by builtin)" in proc.stderr
