"""Catalogs of named entries described as data — datasets, architectures — the timm / open_clip way: the
in-tree modules register theirs when first asked for, outside packages through an entry-point group whose
entries point at an object of the catalog's entry type. A broken plugin warns; it never takes the rest down."""
from __future__ import annotations

import importlib
import pkgutil
import warnings
from importlib import metadata
from typing import Generic, TypeVar

from bench.protocols import WmbenchError

T = TypeVar("T")


class Catalog(Generic[T]):
    def __init__(self, what: str, group: str, modules: tuple[str, ...], entry_type: type):
        self.what, self.group, self.modules, self.entry_type = what, group, modules, entry_type
        self._entries: dict[str, T] = {}
        self._plugins: set[str] = set()  # names added from entry points
        self._loaded = False

    def register(self, entry: T) -> T:
        """Add an in-tree entry (its `name` must be new)."""
        name = entry.name  # type: ignore[attr-defined]
        if name in self._entries and self._entries[name] is not entry:
            raise WmbenchError(f"{self.what} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for name in self.modules:  # a package: every module in it
            module = importlib.import_module(name)
            for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
                importlib.import_module(f"{name}.{info.name}")
        for ep in metadata.entry_points(group=self.group):
            try:
                entry = ep.load()
                if not isinstance(entry, self.entry_type):
                    raise TypeError(f"{ep.value} is not a {self.entry_type.__module__}.{self.entry_type.__name__}")
                if entry.name not in self._entries:
                    self._entries[entry.name] = entry
                    self._plugins.add(entry.name)
            except Exception as e:
                warnings.warn(f"plugin '{ep.name}' ({self.group}) failed to load: {e.__class__.__name__}: {e}",
                              stacklevel=2)

    def reload(self) -> None:
        """Forget the entry-point plugins and load everything again (tests, after installing a plugin)."""
        self._loaded = False
        for name in self._plugins:
            self._entries.pop(name, None)
        self._plugins.clear()
        self._load()

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise WmbenchError(f"unknown {self.what} '{name}'; valid: {', '.join(sorted(self._entries))}")
        return self._entries[name]
