"""Registry of defenses and attacks: `@register_defense` / `@register_attack` for in-tree methods,
Python entry points (groups `wmbench.defenses`, `wmbench.attacks`) for outside packages."""
from __future__ import annotations

import importlib
import pkgutil
import warnings
from importlib import metadata
from typing import Callable, TypeVar

from bench.protocols import Attack, Defense, WmbenchError

DEFENSE_GROUP = "wmbench.defenses"
ATTACK_GROUP = "wmbench.attacks"

_DEFENSES: dict[str, type] = {}
_ATTACKS: dict[str, type] = {}
_plugins: set[tuple[str, str]] = set()  # (group, name) added from entry points
_loaded = False
plugin_errors: list[str] = []

T = TypeVar("T", bound=type)


def _register(table: dict[str, type], what: str) -> Callable[[T], T]:
    def decorator(cls: T) -> T:
        name = cls.name
        if name in table and table[name] is not cls:
            raise WmbenchError(f"{what} '{name}' is registered twice ({table[name].__module__}, {cls.__module__})")
        table[name] = cls
        return cls

    return decorator


register_defense = _register(_DEFENSES, "defense")
register_attack = _register(_ATTACKS, "attack")


def _import_package(package: str) -> None:
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{package}.{info.name}")


DEFENSE_MEMBERS = ("name", "model_kind", "version", "make_key", "watermark", "verify")
ATTACK_MEMBERS = ("name", "model_kinds", "strengths", "version", "run")


def _load_entry_points(group: str, table: dict[str, type], members: tuple[str, ...]) -> None:
    for ep in metadata.entry_points(group=group):
        try:
            cls = ep.load()
            if not isinstance(cls, type) or not hasattr(cls, "name"):
                raise TypeError(f"{ep.value} is not a class with a `name`")
            missing = [m for m in members if not hasattr(cls, m)]
            if missing:
                raise TypeError(f"lacks {', '.join(sorted(missing))}")
            if cls.name not in table:
                table[cls.name] = cls
                _plugins.add((group, cls.name))
        except Exception as e:  # a broken plugin must not take the rest down
            msg = f"plugin '{ep.name}' ({group}) failed to load: {e.__class__.__name__}: {e}"
            plugin_errors.append(msg)
            warnings.warn(msg, stacklevel=2)


def load_all() -> None:
    """Import the in-tree methods and the entry-point plugins (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    _import_package("defenses")
    _import_package("attacks")
    _load_entry_points(DEFENSE_GROUP, _DEFENSES, DEFENSE_MEMBERS)
    _load_entry_points(ATTACK_GROUP, _ATTACKS, ATTACK_MEMBERS)


def reload() -> None:
    """Forget entry-point plugins and load everything again (tests, after installing a plugin)."""
    global _loaded
    _loaded = False
    for group, name in _plugins:
        (_DEFENSES if group == DEFENSE_GROUP else _ATTACKS).pop(name, None)
    _plugins.clear()
    plugin_errors.clear()
    load_all()


def defense_names() -> list[str]:
    load_all()
    return sorted(_DEFENSES)


def attack_names() -> list[str]:
    load_all()
    return sorted(_ATTACKS)


def _get(table: dict[str, type], what: str, name: str):
    load_all()
    if name not in table:
        raise WmbenchError(f"unknown {what} '{name}'; valid: {', '.join(sorted(table))}")
    return table[name]()


def get_defense(name: str) -> Defense:
    return _get(_DEFENSES, "defense", name)


def get_attack(name: str) -> Attack:
    return _get(_ATTACKS, "attack", name)


def compatible(defense: Defense, attack: Attack) -> bool:
    """An attack pairs with a defense when it applies to the kind of model the defense protects."""
    return defense.model_kind in attack.model_kinds


def strengths_for(attack: Attack, kind: str) -> tuple[str, ...]:
    """The attack's strengths for a model kind: `attack.strengths_for(kind)` when the attack narrows
    them per kind, else all of `attack.strengths`."""
    narrow = getattr(attack, "strengths_for", None)
    return tuple(narrow(kind)) if narrow is not None else tuple(attack.strengths)


def threat_model_gap(defense: Defense, attack: Attack) -> str:
    """Why `attack` lies outside the threat model of `defense` ('' when the pair is in it): an attack that
    needs the weights against a defense whose thief reaches only the service's API."""
    kind = defense.model_kind
    needs_for = getattr(attack, "needs_for", None)
    needs = needs_for(kind) if needs_for is not None else getattr(attack, "needs", "weights")
    reach = getattr(defense, "thief_access", "weights")
    if needs == "weights" and reach == "api":
        return f"outside the threat model: {attack.name} needs the model's weights, a thief of {defense.name} reaches only its API"
    return ""


def scheme(defense: Defense) -> str:
    """Defenses that differ only in how they verify share a `scheme`, hence keys and marked models."""
    return getattr(defense, "scheme", defense.name)
