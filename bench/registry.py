"""Registry of defenses and attacks: `@register_defense` / `@register_attack` for in-tree methods,
Python entry points (groups `wmbench.defenses`, `wmbench.attacks`) for outside packages, and attack
chains (`extraction>fine_tuning:all_layers`): attacks run one on the output of the other, named by a spec
wherever an attack name is accepted and registered with `register_chain`."""
from __future__ import annotations

import importlib
import pkgutil
import warnings
from importlib import metadata
from typing import TYPE_CHECKING, Callable, TypeVar

from bench.protocols import Attack, AttackOutput, Defense, WmbenchError

if TYPE_CHECKING:
    from torch import nn

    from bench.context import Context

DEFENSE_GROUP = "wmbench.defenses"
ATTACK_GROUP = "wmbench.attacks"

_DEFENSES: dict[str, type] = {}
_ATTACKS: dict[str, type] = {}
_CHAINS: list[str] = []  # chain specs in the default matrix (registered in attacks/chains.py)
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


def register_chain(spec: str) -> str:
    """Put the chain `spec` into the default matrix (it is parsed, hence checked, when first used)."""
    if spec not in _CHAINS:
        _CHAINS.append(spec)
    return spec


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
    """Every registered attack, then the registered chains (as specs)."""
    load_all()
    return sorted(_ATTACKS) + list(_CHAINS)


def _get(table: dict[str, type], what: str, name: str):
    load_all()
    if name not in table:
        raise WmbenchError(f"unknown {what} '{name}'; valid: {', '.join(sorted(table))}")
    return table[name]()


def get_defense(name: str) -> Defense:
    return _get(_DEFENSES, "defense", name)


def get_attack(name: str) -> Attack:
    """The attack `name`, or the `Chain` an attack spec with `>` describes."""
    if CHAIN_SEPARATOR in name:
        return Chain.parse(name)
    return _get(_ATTACKS, "attack", name)


CHAIN_SEPARATOR, STRENGTH_SEPARATOR = ">", ":"


class Chain:
    """Attacks applied in turn, each to the previous one's output: `extraction>fine_tuning:all_layers` is
    the thief's fine-tuning of the copy it stole. Every stage but the last runs at one strength (given
    after `:`, or the attack's strongest, its last listed) and is cached like any attack on its victim, so
    chains that share a first stage build it once; the chain's strengths are the last stage's (or the one
    given). A chain applies to the model kinds of all its stages, needs what its first stage needs (later
    stages act on the thief's own copy), and returns the last stage's pirate key and report."""

    def __init__(self, stages: list[tuple[Attack, str]], last: Attack, strengths: tuple[str, ...]):
        self.stages, self.last = stages, last
        self.name = CHAIN_SEPARATOR.join([f"{a.name}{STRENGTH_SEPARATOR}{s}" for a, s in stages] + [last.name])
        self.model_kinds = tuple(k for k in last.model_kinds
                                 if all(k in a.model_kinds and s in strengths_for(a, k) for a, s in stages))
        self.strengths = strengths
        self.version = "+".join([a.version for a, _ in stages] + [last.version])
        self.per_defense = any(getattr(a, "per_defense", False) for a in [*(a for a, _ in stages), last])

    @classmethod
    def parse(cls, spec: str) -> "Chain":
        parts = spec.split(CHAIN_SEPARATOR)
        if len(parts) < 2 or not all(parts):
            raise WmbenchError(f"attack chain '{spec}' needs attack names on both sides of '{CHAIN_SEPARATOR}'")
        staged = []
        for part in parts:
            name, _, strength = part.partition(STRENGTH_SEPARATOR)
            attack = get_attack(name)
            if strength and strength not in attack.strengths:
                raise WmbenchError(f"attack '{name}' in chain '{spec}' has no strength '{strength}'; valid: "
                                   f"{', '.join(attack.strengths)}")
            staged.append((attack, strength))
        *stages, (last, last_strength) = staged
        return cls([(a, s or a.strengths[-1]) for a, s in stages], last,
                   (last_strength,) if last_strength else tuple(last.strengths))

    def strengths_for(self, kind: str) -> tuple[str, ...]:
        return tuple(s for s in strengths_for(self.last, kind) if s in self.strengths)

    def needs_for(self, kind: str) -> str:
        first = self.stages[0][0]
        needs_for = getattr(first, "needs_for", None)
        return needs_for(kind) if needs_for is not None else getattr(first, "needs", "weights")

    def run(self, ctx: "Context", model: "nn.Module", strength: str) -> "nn.Module | AttackOutput":
        for attack, stage_strength in self.stages:
            model = ctx.attacked(attack, model, stage_strength).model
        return self.last.run(ctx, model, strength)


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
