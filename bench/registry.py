"""Registry of defenses and attacks, two `Catalog`s (bench.plugins): `@register_defense` / `@register_attack`
for in-tree methods, entry points (groups `wmbench.defenses`, `wmbench.attacks`) for outside packages, each
checked against the contract when it is registered or loaded (`bench.protocols.complete`); and attack chains
(`extraction>fine_tuning:all_layers`): attacks run one on the output of the other, named by a spec wherever an
attack name is accepted and registered with `register_chain`."""
from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from bench.plugins import Catalog
from bench.protocols import Attack, AttackBase, AttackOutput, Context, Defense, WmbenchError, complete

if TYPE_CHECKING:
    from torch import nn


DEFENSE_GROUP = "wmbench.defenses"
ATTACK_GROUP = "wmbench.attacks"

DEFENSES: Catalog[type] = Catalog("defense", DEFENSE_GROUP, ("defenses",), lambda cls: complete(cls, "defense"))
ATTACKS: Catalog[type] = Catalog("attack", ATTACK_GROUP, ("attacks",), lambda cls: complete(cls, "attack"))
_CHAINS: list[str] = []  # chain specs in the default matrix (registered in attacks/chains.py)
plugin_errors: list[str] = []  # the refusals of both catalogs' plugins, one line each

T = TypeVar("T", bound=type)


def register_defense(cls: T) -> T:
    return DEFENSES.register(cls)


def register_attack(cls: T) -> T:
    return ATTACKS.register(cls)


def register_chain(spec: str) -> str:
    """Put the chain `spec` into the default matrix (it is parsed, hence checked, when first used)."""
    if spec not in _CHAINS:
        _CHAINS.append(spec)
    return spec


def load_all() -> None:
    """Import the in-tree methods and the entry-point plugins (once)."""
    DEFENSES.names(), ATTACKS.names()
    plugin_errors[:] = DEFENSES.errors + ATTACKS.errors


def reload() -> None:
    """Forget entry-point plugins and load everything again (tests, after installing a plugin)."""
    DEFENSES.reload()
    ATTACKS.reload()
    load_all()


def defense_names() -> list[str]:
    load_all()
    return DEFENSES.names()


def attack_names() -> list[str]:
    """Every registered attack, then the registered chains (as specs)."""
    load_all()
    return ATTACKS.names() + list(_CHAINS)


def get_defense(name: str) -> Defense:
    return DEFENSES.get(name)()


def get_attack(name: str) -> Attack:
    """The attack `name`, or the `Chain` an attack spec with `>` describes."""
    if CHAIN_SEPARATOR in name:
        return Chain.parse(name)
    return ATTACKS.get(name)()


CHAIN_SEPARATOR, STRENGTH_SEPARATOR = ">", ":"


class Chain(AttackBase):
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
        self.per_defense = any(a.per_defense for a in [*(a for a, _ in stages), last])
        self.family = CHAIN_SEPARATOR.join(a.family for a in [*(a for a, _ in stages), last])

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
        return self.stages[0][0].needs_for(kind)

    def run(self, ctx: "Context", model: "nn.Module", strength: str) -> "nn.Module | AttackOutput":
        for attack, stage_strength in self.stages:
            model = ctx.attacked(attack, model, stage_strength).model
        return self.last.run(ctx, model, strength)


def compatible(defense: Defense, attack: Attack) -> bool:
    """An attack pairs with a defense when it applies to the kind of model the defense protects."""
    return defense.model_kind in attack.model_kinds


def strengths_for(attack: Attack, kind: str) -> tuple[str, ...]:
    """The attack's strengths for a model kind (`AttackBase.strengths_for`: all of them unless it narrows)."""
    return tuple(attack.strengths_for(kind))


def threat_model_gap(defense: Defense, attack: Attack) -> str:
    """Why `attack` lies outside the threat model of `defense` ('' when the pair is in it): an attack that
    needs the weights against a defense whose thief reaches only the service's API."""
    needs, reach = attack.needs_for(defense.model_kind), defense.thief_access
    if needs == "weights" and reach == "api":
        return f"outside the threat model: {attack.name} needs the model's weights, a thief of {defense.name} reaches only its API"
    return ""


def scheme(defense: Defense) -> str:
    """Defenses that differ only in how they verify share a `scheme`, hence keys and marked models."""
    return defense.scheme_name()


def describe_methods(defenses: list[str], attacks: list[str]) -> dict:
    """What rendering a leaderboard needs to know of each method, as data (stored in the run's database when
    it runs, so that re-rendering an old run never asks the live registry): a defense's model kind, control
    flag, scheme, version and claims; an attack's strengths in their order (weakest first), kinds, version."""
    out: dict = {"defenses": {}, "attacks": {}}
    for name in defenses:
        d = get_defense(name)
        out["defenses"][name] = {"model_kind": d.model_kind, "control": bool(d.control), "scheme": scheme(d),
                                 "version": d.version, "thief_access": d.thief_access,
                                 "claims": [{"text": c.text, "test": c.test, "attacks": list(c.attacks)}
                                            for c in d.claims]}
    for name in attacks:
        a = get_attack(name)
        out["attacks"][name] = {"strengths": list(a.strengths), "model_kinds": list(a.model_kinds),
                                "version": a.version, "family": a.family}
    return out
