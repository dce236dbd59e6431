"""A typed registry with lazy entries, entry-point discovery and helpful errors.

One class serves methods, datasets, architectures and protocols. Built-in entries are registered as
``"module:attr"`` strings and imported on first use, so ``ddbench list`` never imports torch-heavy plugins.
Third-party methods arrive through the ``ddbench.methods`` entry-point group. Collisions raise (as in
lm-evaluation-harness, mmengine and torchvision): a silently overwritten method would make a table lie.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RegistryError(KeyError):
    """Raised for unknown or duplicate names; ``str()`` is a one-line message meant for users."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass
class _Entry:
    name: str
    target: Any  # the object, a "module:attr" string, or an importlib.metadata.EntryPoint
    origin: str  # "builtin", "entry-point <dist> <version>", or "module.attr"
    loaded: bool = False


def _natural_key(name: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _import_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Name → object mapping for one kind of thing.

    Args:
        kind: what the registry holds, used in messages ("method", "dataset", ...).
        base_cls: if given, a loaded entry must be a subclass (or instance) of it; a ``"module:attr"`` string
            defers the import of the base class to the first load (keeps ``ddbench list`` free of torch).
        entry_point_group: importlib.metadata group scanned once, lazily, on the first lookup.
    """

    def __init__(self, kind: str, base_cls: type | str | None = None, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.base_cls = base_cls
        self.entry_point_group = entry_point_group
        self._entries: dict[str, _Entry] = {}
        self._aliases: dict[str, str] = {}
        self._lock = threading.RLock()
        self._entry_points_loaded = entry_point_group is None

    # -- registration -------------------------------------------------------------------------------------------
    def register(
        self, name: str, target: Any = None, *, aliases: tuple[str, ...] = (), origin: str | None = None
    ) -> Any:
        """Register ``target`` under ``name``; without a target, return a decorator.

        ``target`` may be the object itself or a lazy ``"module:attr"`` string. A name or alias already taken
        raises :class:`RegistryError`.
        """
        if target is None:

            def decorator(obj: Any) -> Any:
                self.register(name, obj, aliases=aliases, origin=origin)
                return obj

            return decorator
        with self._lock:
            for key in (name, *aliases):
                if key in self._entries or key in self._aliases:
                    prior = self._entries.get(self._aliases.get(key, key))
                    where = prior.origin if prior else "an alias"
                    raise RegistryError(f"{self.kind} {key!r} is already registered (by {where}); pick another name")
            if origin is None:
                origin = target if isinstance(target, str) else f"{getattr(target, '__module__', '?')}"
            self._entries[name] = _Entry(
                name, target, origin, loaded=not isinstance(target, (str, metadata.EntryPoint))
            )
            for alias in aliases:
                self._aliases[alias] = name
        return target

    def load_entry_points(self) -> None:
        """Scan the entry-point group once and add each entry as a lazy placeholder."""
        with self._lock:
            if self._entry_points_loaded:
                return
            self._entry_points_loaded = True
            for ep in metadata.entry_points(group=self.entry_point_group):
                dist = getattr(ep, "dist", None)
                origin = f"entry-point {dist.name} {dist.version}" if dist is not None else f"entry-point {ep.value}"
                self.register(ep.name, ep, origin=origin)

    # -- lookup -------------------------------------------------------------------------------------------------
    def canonical(self, name: str) -> str:
        """Resolve aliases and the ``_``/``-`` spelling variants to the registered name, or raise."""
        self.load_entry_points()
        for key in (name, name.replace("_", "-"), name.replace("-", "_"), name.lower()):
            if key in self._entries:
                return key
            if key in self._aliases:
                return self._aliases[key]
        raise RegistryError(self._unknown_message(name))

    def _unknown_message(self, name: str) -> str:
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        return f"unknown {self.kind} {name!r}; {hint}known: {', '.join(names)}"

    def get(self, name: str) -> T:
        """Return the registered object, importing it on first use."""
        key = self.canonical(name)
        with self._lock:
            entry = self._entries[key]
            if not entry.loaded:
                target = entry.target
                try:
                    entry.target = target.load() if isinstance(target, metadata.EntryPoint) else _import_target(target)
                except Exception as exc:
                    raise RegistryError(f"{self.kind} {key!r} could not be loaded from {entry.origin}: {exc}") from exc
                entry.loaded = True
                self._check_type(key, entry.target)
            return entry.target

    def _check_type(self, key: str, obj: Any) -> None:
        if self.base_cls is None:
            return
        base = _import_target(self.base_cls) if isinstance(self.base_cls, str) else self.base_cls
        ok = isinstance(obj, base) or (isinstance(obj, type) and issubclass(obj, base))
        if not ok:
            raise RegistryError(f"{self.kind} {key!r} is {obj!r}, not a {base.__name__}")

    def origin(self, name: str) -> str:
        """Where an entry came from (module path or providing distribution), for provenance records."""
        return self._entries[self.canonical(name)].origin

    def target(self, name: str) -> str:
        """The lazy target string (``"module:attr"``) or the loaded object's qualified name, without importing."""
        entry = self._entries[self.canonical(name)]
        t = entry.target
        if isinstance(t, str):
            return t
        if isinstance(t, metadata.EntryPoint):
            return t.value
        return f"{getattr(t, '__module__', '?')}:{getattr(t, '__qualname__', type(t).__name__)}"

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.canonical(name)
        except RegistryError:
            return False
        return True

    def names(self) -> list[str]:
        self.load_entry_points()
        return sorted(self._entries, key=_natural_key)

    def list(self, pattern: str | list[str] = "*", exclude: str | list[str] = ()) -> list[str]:
        """Names matching fnmatch pattern(s), minus exclusions, in natural sort order (like timm's list_models)."""
        include = [pattern] if isinstance(pattern, str) else list(pattern)
        excl = [exclude] if isinstance(exclude, str) else list(exclude)
        return [
            n
            for n in self.names()
            if any(fnmatch.fnmatchcase(n, p) for p in include) and not any(fnmatch.fnmatchcase(n, e) for e in excl)
        ]

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self.get(name)

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def lazy(target: str) -> Callable[..., Any]:
    """A callable that imports ``"module:attr"`` on first call; handy for factory tables."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return _import_target(target)(*args, **kwargs)

    return call
