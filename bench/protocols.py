"""The contract every method plugs into, in one place: `Defense`, `Attack` and the `Context` they run in, the
data they exchange, and base classes that give every optional member its documented default."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, Sequence, runtime_checkable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

MODEL_KINDS: tuple[str, ...] = ("classifier", "encoder", "vlp")  # see bench/kinds/


class WmbenchError(Exception):
    """An error the CLI reports as one line (bad input, missing file, failed plugin)."""


@dataclass
class Key:
    """An owner's watermark key: a secret plus whatever the defense derived from it.

    `params` must be JSON-serialisable; `tensors` hold derived arrays (trigger images, matrices,
    perturbations). Saved as one safetensors file whose metadata carries the rest.
    """

    defense: str
    secret: int
    params: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        meta = {"defense": self.defense, "secret": str(self.secret), "params": json.dumps(self.params)}
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        if not tensors:  # safetensors wants at least one entry to carry metadata reliably
            tensors = {"_empty": torch.zeros(1)}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> "Key":
        path = Path(path)
        if not path.is_file():
            raise WmbenchError(f"key file not found: {path}")
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
            tensors.pop("_empty", None)
            return cls(meta["defense"], int(meta["secret"]), json.loads(meta["params"]), tensors)
        except (SafetensorError, KeyError, ValueError, OSError) as e:
            raise WmbenchError(f"not a wmbench key file: {path} ({e.__class__.__name__})") from None


@dataclass(frozen=True)
class Verification:
    """Outcome of one ownership check: `detected` is the verdict at `threshold`."""

    detected: bool
    statistic: float
    threshold: float
    p_value: float
    details: dict[str, float] = field(default_factory=dict)


@dataclass
class AttackOutput:
    """What an attack hands back: the suspect model, and a pirate's own key when it forged one."""

    model: nn.Module
    pirate_key: Key | None = None
    report: dict[str, Any] = field(default_factory=dict)  # what the attack found (e.g. anomaly indices)


class Context(Protocol):
    """What a method sees while it runs (the runner's concrete one is `bench.context.Context`)."""

    data: Any  # `bench.data.Dataset`: splits `owner`, `independent`, `attacker` (the attacker's share of
    # `independent`), `test`, `verification`; image size, classes
    profile: Any  # `bench.config.Profile`: sizes and budgets
    seed: int  # the cell's owner seed
    kind_name: str  # the model kind of the cell's defense
    device: torch.device
    cache: Any  # `bench.cache.ArtifactCache`
    defense: str  # the cell's defense ('' outside a cell)

    @property
    def pirate(self) -> int:
        """The secret a pirate makes its own key from (drawn by the harness)."""

    @property
    def kind(self) -> Any:
        """The model kind's policy (`bench.kinds.base.ModelKindSpec`): recipe, utility, queries, adaptation."""

    def base_model(self, seed: int | None = None, split: str = "owner") -> nn.Module:
        """The clean model of this kind trained with `seed` (default: the cell's) on `split`, cached."""

    def utility(self, model: nn.Module) -> float:
        """Task quality of `model` on the held-out test split, in [0, 1]."""

    def attacked(self, attack: "Attack", victim: nn.Module, strength: str) -> "AttackOutput":
        """`attack` at `strength` on `victim`, cached under the victim's weights."""

    def null_keys(self, defense: "Defense", key: Key, model: nn.Module | None = None,
                  avoid: Key | None = None) -> Sequence[Key]:
        """The null keys of `key` (made for `model`, None: the owner's clean model), `profile.null_keys` of them
        in a fixed order, drawn lazily by `defense.null_key`; with `avoid`, none that `defense.keys_collide`
        with it."""


@runtime_checkable
class Defense(Protocol):
    """A watermarking scheme for one model kind. `DefenseBase` gives every optional member its default."""

    name: ClassVar[str]
    model_kind: ClassVar[str]
    version: ClassVar[str]  # bump when the method's code changes what it produces

    def make_key(self, ctx: Context, secret: int, model: nn.Module | None = None) -> Key:
        """Derive a key from `secret` for `model` (default: the owner's clean `ctx.base_model()`)."""

    def watermark(self, ctx: Context, key: Key) -> nn.Module:
        """Return the watermarked model for `key` (the cell's seed is `ctx.seed`)."""

    def verify(self, ctx: Context, suspect: nn.Module, key: Key) -> Verification:
        """Decide whether `suspect` carries the watermark of `key`."""

    def rewatermark(self, ctx: Context, model: nn.Module, key: Key, budget: int) -> nn.Module:
        """Embed `key` into an already trained `model` with the attacker's data and `budget` epochs
        (what a pirate does; a scheme that can only be embedded from scratch still says how it is tried).
        May train `model` itself: callers pass a copy of their own."""


@runtime_checkable
class Attack(Protocol):
    """A removal or forging attack with a strength knob. `AttackBase` gives every optional member its default."""

    name: ClassVar[str]
    model_kinds: ClassVar[tuple[str, ...]]
    strengths: ClassVar[tuple[str, ...]]  # weakest first
    version: ClassVar[str]

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module | AttackOutput:
        """Attack `model` at `strength` and return the suspect."""


# The members a plugin must define itself (the rest have defaults in the base classes below).
REQUIRED_MEMBERS: dict[str, tuple[str, ...]] = {
    "defense": ("name", "model_kind", "version", "make_key", "watermark", "verify", "rewatermark"),
    "attack": ("name", "model_kinds", "strengths", "version", "run"),
}


class DefenseBase:
    """The optional members of a defense, with their defaults (a subclass overrides what it needs).

    Threat model: `thief_access` says what a thief of the protected model can reach — "weights" (the model
    itself leaked or was sold) or "api" (only a deployed service's answers, e.g. an embedding service whose
    output transform stays inside it); an attack that needs more is outside the threat model (`n/a`)."""

    thief_access: ClassVar[str] = "weights"
    scheme: ClassVar[str | None] = None  # defenses that differ only in verification share a scheme (keys, marked models)
    control: ClassVar[bool] = False  # an unwatermarked control: its rows show what attacks cost, never a removal
    # The defense this one is another configuration of (e.g. another λ). A run that names no defenses gives a
    # variant only the `none` attack — whether its mark embeds, false accusations, key specificity — and the
    # whole attack matrix to the method's best configuration; `--defenses <variant>` runs it against every attack.
    variant_of: ClassVar[str] = ""
    claims: ClassVar[tuple[Any, ...]] = ()  # its paper's headline claims (`bench.claims.Claim`)
    # `keys_collide(owner, pirate) -> bool`: when a pirate's key would coincide with the owner's (the harness
    # then draws the pirate another secret); None: keys never collide, and no key is made to check. It may read
    # only what a key takes from its secret, not from the model it is made for: the harness checks a candidate
    # made for the owner's clean model.
    keys_collide: ClassVar[Callable[[Key, Key], bool] | None] = None
    cache_null_keys: ClassVar[bool] = True  # null keys go to the artifact cache (False: they cost microseconds to draw)

    @classmethod
    def scheme_name(cls) -> str:
        return cls.scheme or cls.name  # type: ignore[attr-defined]

    def score_many(self, ctx: Context, suspect: nn.Module, keys: Sequence[Key], floor: float = float("-inf")) -> list[float]:
        """The test statistic of each of `keys` on `suspect` (larger: more evidence of that key's mark): what the
        key-randomization test ranks (`bench.nulls`). A defense may answer -inf for a key whose statistic it
        proves to lie below `floor` without computing it. Default: `verify(...).statistic` per key."""
        return [self.verify(ctx, suspect, k).statistic for k in keys]  # type: ignore[attr-defined]

    def null_key(self, ctx: Context, key: Key, secret: int, model: nn.Module | None = None) -> Key:
        """Another key, drawn with `secret`, that is exchangeable with `key` on any suspect not derived from a
        model marked with `key` — the null of the key-randomization test. `model` is the model `key` was made
        for (None: the owner's clean model). Default: the defense's own key procedure with another secret on
        the same model, `make_key(ctx, secret, model)`."""
        return self.make_key(ctx, secret, model)  # type: ignore[attr-defined]


class AttackBase:
    """The optional members of an attack, with their defaults (a subclass overrides what it needs)."""

    needs: ClassVar[str] = "weights"  # what it needs of the victim: "weights" or "queries" (black-box answers)
    family: ClassVar[str] = "other"  # the family of attacks it belongs to (the leaderboard's breakdown)
    per_defense: ClassVar[bool] = False  # it uses the cell's defense (`ctx.defense`): results not shared across defenses

    def needs_for(self, kind: str) -> str:
        """What it needs against a model of `kind` (default: `needs` for every kind)."""
        return self.needs

    def strengths_for(self, kind: str) -> tuple[str, ...]:
        """Its strengths for a model of `kind` (default: all of `strengths`)."""
        return tuple(self.strengths)  # type: ignore[attr-defined]

    def prefix_family(self, strength: str) -> tuple[str, ...]:
        """Strengths computed by one run whose intermediate states are the weaker ones (epoch budgets as
        prefixes, ending with the one that runs longest); default: each strength alone."""
        return (strength,)

    def run_prefixes(self, ctx: Context, model: nn.Module, strengths: tuple[str, ...]) -> dict[str, "nn.Module | AttackOutput"]:
        """Run a prefix family at once: its outcome for each of `strengths` (needed where `prefix_family`
        returns more than one strength)."""
        return {s: self.run(ctx, model, s) for s in strengths}  # type: ignore[attr-defined]


def conform(cls: type, what: str, required: tuple[str, ...], base: type) -> type:
    """`cls` checked to define every `required` member, and given `base`'s defaults for the optional members
    it does not define (a plugin need not subclass the base). Raises WmbenchError naming what is missing."""
    missing = [m for m in required if not hasattr(cls, m)]
    if missing:
        raise WmbenchError(f"{what} plugin {cls.__module__}.{cls.__qualname__} lacks {', '.join(missing)}")
    if issubclass(cls, base):
        return cls
    return type(cls.__name__, (cls, base), {"__module__": cls.__module__, "__doc__": cls.__doc__})


def complete(cls: type, what: str) -> type:
    """A defense or attack class (`what`) checked against the contract and completed with its base's defaults."""
    return conform(cls, what, REQUIRED_MEMBERS[what], DefenseBase if what == "defense" else AttackBase)
