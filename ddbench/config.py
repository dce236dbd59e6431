"""Frozen dataclass configs, TOML presets, precedence, the canonical hash and derived seeds.

Defaults live in code (a frozen dataclass per method or protocol); reproduction values live in data
(``methods/configs/<method>.toml``). A preset file is organised by dataset::

    ["*".common]            # every dataset
    [cifar10.common]        # this dataset, every ipc
    [cifar10.ipc.50]        # this dataset, ipc 50
    [cifar10.cpu.common]    # profile "cpu" overlays the tables above ...
    [cifar10.cpu.ipc.50]    # ... and its own ipc tables

Precedence, lowest first: dataclass defaults < ``*`` common < dataset common < dataset ipc < profile layers
(same order) < ``--config FILE`` (flat keys) < ``--set key=value``. ``None`` values never override (timm).
The profile ``paper`` is the base tables themselves. An unknown key anywhere is an error naming the file,
the table and the key, because a typo that silently does nothing is how published numbers go wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_PROFILE = "paper"


class ConfigError(ValueError):
    """A config problem; the message names the source, the table and the key."""


@dataclass(frozen=True)
class Layer:
    """One source of values, kept for the resolved-config report (which layer set which key)."""

    source: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Resolved:
    """A resolved config and the layers that produced it."""

    config: Any
    layers: tuple[Layer, ...]

    @property
    def hash(self) -> str:
        return config_hash(self.config)


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, tuples as lists) used for hashing and storage."""

    def default(o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return dataclasses.asdict(o)
        if isinstance(o, Path):
            return str(o)
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        raise TypeError(f"not JSON-serialisable for hashing: {type(o).__name__}")

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=default, allow_nan=False)


def config_hash(obj: Any, length: int = 16) -> str:
    """sha256 of :func:`canonical_json`, truncated; the cache key of whatever the config determines."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed derived from ``seed`` and any keys, stable across processes and platforms."""
    text = ":".join([str(seed), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


# -- typing ---------------------------------------------------------------------------------------------------------
def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's init fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a TOML/CLI value to the annotated type, or raise ConfigError saying what was expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: cannot be {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [coerce(v, args[0], where) for v in value]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            items = [coerce(v, a, where) for v, a in zip(value, args)]
        else:
            items = [coerce(v, args[0], where) for v in value] if args else list(value)
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value as a TOML literal (``3``, ``0.1``, ``true``, ``[1, 2]``), else keep the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=0.1", "aug=crop"]`` → ``{"lr": 0.1, "aug": "crop"}``; a missing ``=`` is an error."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set iterations=200")
        parsed = parse_value(value.strip())
        if isinstance(parsed, float) and not math.isfinite(parsed):
            raise ConfigError(f"--set {key.strip()}={value.strip()}: expected a finite number")
        out[key.strip().replace("-", "_")] = parsed
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file with a one-line error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 TOML") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from exc


# -- presets --------------------------------------------------------------------------------------------------------
def _dataset_layers(section: Mapping[str, Any], ipc: int | None, where: str) -> list[Layer]:
    layers = []
    if "common" in section:
        layers.append(Layer(f"{where}.common", section["common"]))
    ipc_tables = section.get("ipc", {})
    if not isinstance(ipc_tables, Mapping) or any(not k.isdigit() for k in ipc_tables):
        raise ConfigError(f"{where}.ipc: sub-tables must be named by an integer ipc, e.g. [{where}.ipc.10]")
    if ipc is not None and str(ipc) in ipc_tables:
        layers.append(Layer(f"{where}.ipc.{ipc}", ipc_tables[str(ipc)]))
    return layers


def preset_layers(
    preset: Mapping[str, Any], source: str, dataset: str | None, ipc: int | None, profile: str = BASE_PROFILE
) -> list[Layer]:
    """The ordered layers a preset file contributes for (dataset, ipc, profile)."""
    for ds_key, section in preset.items():
        if not isinstance(section, Mapping):
            raise ConfigError(f"{source}: top-level key {ds_key!r} must be a dataset table like [{ds_key}.common]")
        for key, sub in section.items():
            if key not in ("common", "ipc") and not (isinstance(sub, Mapping) and set(sub) <= {"common", "ipc"}):
                raise ConfigError(
                    f"{source}: [{ds_key}.{key}] is neither 'common', 'ipc' nor a profile with common/ipc tables"
                )
    scopes = ["*"] + ([dataset] if dataset else [])
    layers: list[Layer] = []
    for scope in scopes:
        if scope in preset:
            layers += _dataset_layers(preset[scope], ipc, f"{source} [{scope}")
    if profile != BASE_PROFILE:
        for scope in scopes:
            if scope in preset and profile in preset[scope]:
                layers += _dataset_layers(preset[scope][profile], ipc, f"{source} [{scope}.{profile}")
    return [Layer(layer.source + "]", layer.values) for layer in layers]


def profiles_in(preset: Mapping[str, Any]) -> set[str]:
    """Profile names a preset defines (always includes ``paper``)."""
    found = {BASE_PROFILE}
    for section in preset.values():
        found.update(k for k in section if k not in ("common", "ipc"))
    return found


def resolve(
    cls: type,
    *,
    preset: Mapping[str, Any] | None = None,
    preset_source: str = "preset",
    dataset: str | None = None,
    ipc: int | None = None,
    profile: str = BASE_PROFILE,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Resolved:
    """Merge defaults < preset layers < config file < overrides into an instance of ``cls``.

    Args:
        cls: a dataclass (usually frozen) whose fields are the allowed keys.
        preset: parsed preset TOML (see module docstring) or None.
        preset_source: name of the preset in messages (its path).
        dataset, ipc, profile: select the preset layers.
        config_file: a TOML of flat ``key = value`` pairs (``--config``).
        overrides: ``--set`` values, already parsed.
        extra: values the harness fixes (e.g. ``num_classes``) applied between preset and user layers.
    """
    if profile != BASE_PROFILE and preset is not None and profile not in profiles_in(preset):
        raise ConfigError(
            f"{preset_source}: no profile {profile!r}; available: {', '.join(sorted(profiles_in(preset)))}"
        )
    layers: list[Layer] = []
    if preset is not None:
        layers += preset_layers(preset, preset_source, dataset, ipc, profile)
    if extra:
        layers.append(Layer("harness", extra))
    if config_file is not None:
        layers.append(Layer(str(config_file), load_toml(config_file)))
    if overrides:
        layers.append(Layer("--set", overrides))
    types_ = field_types(cls)
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.values.items():
            if key not in types_:
                raise ConfigError(f"{layer.source}: unknown key {key!r} for {cls.__name__}; known: {', '.join(types_)}")
            if value is None:
                continue
            merged[key] = coerce(value, types_[key], f"{layer.source}: {key}")
    try:
        instance = cls(**merged)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from exc
    return Resolved(instance, tuple(layers))


def from_dict(cls: type, values: Mapping[str, Any], source: str) -> Any:
    """Build ``cls`` from a flat mapping with the same unknown-key and type checks as :func:`resolve`."""
    types_ = field_types(cls)
    unknown = [k for k in values if k not in types_]
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} for {cls.__name__}; known: {', '.join(types_)}")
    kwargs = {k: coerce(v, types_[k], f"{source}: {k}") for k, v in values.items() if v is not None}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from exc
