"""The one kind of registry wmbench has: a `Catalog` of named entries — defenses, attacks, model kinds, claim
judges, datasets, architectures, transforms — the timm / open_clip way. In-tree modules register theirs (a
decorator calling `Catalog.register`) when the catalog is first asked for; outside packages through the
catalog's entry-point group. Every entry, in-tree or plugin, passes the catalog's `check` (the contract of
its kind) before it is stored; a plugin that fails it is refused in one line and never takes the rest down."""
from __future__ import annotations

import importlib
import pkgutil
import warnings
from importlib import metadata
from typing import Any, Callable, Generic, TypeVar

from bench.protocols import WmbenchError

T = TypeVar("T")


def instance_of(entry_type: type) -> Callable[[Any], Any]:
    """A check that accepts instances of `entry_type` (the catalogs of data entries)."""

    def check(entry: Any) -> Any:
        if not isinstance(entry, entry_type):
            raise WmbenchError(f"{entry!r} is not a {entry_type.__module__}.{entry_type.__name__}")
        return entry

    return check


class Catalog(Generic[T]):
    """Named entries of one kind. `modules`: in-tree modules (or packages: every module in them) imported
    on first use, which register theirs; `group`: the entry-point group of outside packages; `check`:
    validates an entry and returns what is stored (raises WmbenchError naming what is wrong)."""

    def __init__(self, what: str, group: str, modules: tuple[str, ...], check: Callable[[Any], T],
                 errors: list[str] | None = None):
        self.what, self.group, self.modules, self.check = what, group, modules, check
        self.errors = [] if errors is None else errors  # refusals of plugins, one line each
        self._entries: dict[str, T] = {}
        self._sources: dict[str, Any] = {}  # what was registered under each name, before the check
        self._plugins: set[str] = set()  # names added from entry points
        self._loaded = False

    def register(self, entry: Any) -> Any:
        """Add an in-tree entry (its `name` must be new); returns it unchanged (usable as a decorator)."""
        name = entry.name
        if name in self._entries and self._sources[name] is not entry:
            raise WmbenchError(f"{self.what} '{name}' is registered twice ({self._sources[name]!r}, {entry!r})")
        self._entries[name], self._sources[name] = self.check(entry), entry
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
                if not hasattr(entry, "name"):
                    raise WmbenchError(f"{ep.value} has no `name`")
                checked = self.check(entry)
                if entry.name in self._entries and self._sources[entry.name] is not entry:
                    raise WmbenchError(f"the name is taken: {self.what} '{entry.name}' is already registered "
                                       f"({self._sources[entry.name]!r}); rename the plugin's")
                self._entries[entry.name], self._sources[entry.name] = checked, entry
                self._plugins.add(entry.name)
            except Exception as e:
                detail = str(e) if isinstance(e, WmbenchError) else f"{e.__class__.__name__}: {e}"
                message = f"plugin '{ep.name}' ({self.group}) refused: {detail}"
                self.errors.append(message)
                warnings.warn(message, stacklevel=2)

    def reload(self) -> None:
        """Forget the entry-point plugins and load everything again (tests, after installing a plugin)."""
        self._loaded = False
        for name in self._plugins:
            self._entries.pop(name, None)
            self._sources.pop(name, None)
        self._plugins.clear()
        self.errors.clear()
        self._load()

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise WmbenchError(f"unknown {self.what} '{name}'; valid: {', '.join(sorted(self._entries))}")
        return self._entries[name]
