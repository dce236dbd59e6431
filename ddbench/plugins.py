"""The method registry: built-in methods as lazy entries, third-party ones from the ``ddbench.methods`` group.

Built-ins live in the top-level ``methods/`` folder, installed as the ``ddbench_methods`` package, and use the
same contract as plugins. A third-party package declares, in its setup.cfg::

    [options.entry_points]
    ddbench.methods =
        mymethod = mypackage.method:MyMethod

A name collision between a plugin and a built-in (or two plugins) is an error, never a silent override.
"""

from __future__ import annotations

from typing import Any

from ddbench.registry import Registry

BUILTIN_METHODS = {
    "random": "ddbench_methods.random:Random",
    "herding": "ddbench_methods.herding:Herding",
    "kcenter": "ddbench_methods.kcenter:KCenter",
    "el2n": "ddbench_methods.el2n:EL2N",
    "sre2l": "ddbench_methods.sre2l:SRe2L",
    "dwa": "ddbench_methods.dwa:DWA",
    "mtt": "ddbench_methods.mtt:MTT",
    "edc": "ddbench_methods.edc:EDC",
    "rded": "ddbench_methods.rded:RDED",
    "minimax": "ddbench_methods.minimax:Minimax",
    "dit": "ddbench_methods.minimax:DiT",
    "minimax-finetune": "ddbench_methods.minimax:DiTFinetune",
}

METHODS: Registry[Any] = Registry("method", base_cls="ddbench.method:Method", entry_point_group="ddbench.methods")
for _name, _target in BUILTIN_METHODS.items():
    METHODS.register(_name, _target, origin="builtin")


def get_method(name: str) -> Any:
    """The method class registered as ``name`` (imports it on first use)."""
    return METHODS.get(name)


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.list(pattern)
