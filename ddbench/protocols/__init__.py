"""Evaluation protocols shipped with ddbench: one versioned TOML file per protocol in this folder.

The registry maps a protocol id (the file stem) to its path; :mod:`ddbench.protocol` parses and validates it.
"""

from __future__ import annotations

from pathlib import Path

from ddbench.registry import Registry

PROTOCOL_DIR = Path(__file__).parent
PROTOCOLS: Registry[Path] = Registry("protocol")
for _path in sorted(PROTOCOL_DIR.glob("*.toml")):
    PROTOCOLS.register(_path.stem, _path, origin=str(_path.name))
