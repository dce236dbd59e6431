"""The import arrows point one way: no ddbench module imports a module of a higher layer (lazy imports included).

The layers are those of ``docs/design-notes.md``. ``if TYPE_CHECKING:`` imports are exempt: they are annotations,
not dependencies. The plugin contract (``ddbench.method``) must import no training code at all, checked in a
fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "ddbench"

LAYERS: list[tuple[str, ...]] = [
    (
        "ddbench",
        "ddbench.version",
        "ddbench.errors",
        "ddbench.config",
        "ddbench.registry",
        "ddbench.io",
        "ddbench.scores",
        "ddbench.distributed",
    ),
    ("ddbench.artifacts", "ddbench.data", "ddbench.models", "ddbench.ops.augment", "ddbench.schedules"),
    ("ddbench.pixels", "ddbench.labels", "ddbench.augmentations", "ddbench.protocol", "ddbench.protocols"),
    ("ddbench.distilled", "ddbench.method", "ddbench.train", "ddbench.store", "ddbench.ops", "ddbench.plugins"),
    ("ddbench.teachers", "ddbench.experts"),
    ("ddbench.evaluate", "ddbench.tables", "ddbench.references"),
    ("ddbench.pipeline", "ddbench.scoring", "ddbench.selection", "ddbench.verify", "ddbench.ddp", "ddbench.sweep"),
    ("ddbench.cli", "ddbench.__main__", "ddbench.report"),
]


def layer_of(module: str) -> int:
    best, level = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, level = len(name), i
    assert level is not None, f"{module} is in no layer; add it to LAYERS and docs/design-notes.md"
    return level


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _submodule(package: str, name: str) -> str:
    """``from package import name``: the submodule ``package.name`` when it is one, else ``package``."""
    base = ROOT.parent.joinpath(*f"{package}.{name}".split("."))
    return f"{package}.{name}" if base.with_suffix(".py").is_file() or base.is_dir() else package


def imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("ddbench")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ddbench"):
            out += [(_submodule(node.module, a.name), node.lineno) for a in node.names]
    return out


MODULES = sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_upward_imports(path: Path) -> None:
    me = module_name(path)
    mine = layer_of(me)
    bad = [(dep, line) for dep, line in imports(path) if not dep.startswith("ddbench_") and layer_of(dep) > mine]
    assert not bad, f"{me} (layer {mine}) imports upward: {bad}"


def test_the_plugin_contract_imports_no_training_code() -> None:
    code = (
        "import sys; import ddbench.method; print(' '.join(sorted(m for m in sys.modules if m.startswith('ddbench'))))"
    )
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    forbidden = {"ddbench.train", "ddbench.teachers", "ddbench.evaluate", "ddbench.pipeline", "ddbench.cli"}
    assert "ddbench.method" in loaded and not loaded & forbidden, loaded & forbidden
