"""The small contracts every method plugs into: `Defense`, `Attack`, and the data they exchange."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

if TYPE_CHECKING:
    from bench.context import Context

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


@runtime_checkable
class Defense(Protocol):
    """A watermarking scheme for one model kind."""

    name: ClassVar[str]
    model_kind: ClassVar[str]
    version: ClassVar[str]  # bump when the method's code changes what it produces

    def make_key(self, ctx: "Context", secret: int, model: nn.Module | None = None) -> Key:
        """Derive a key from `secret` for `model` (default: the owner's clean `ctx.base_model()`)."""

    def watermark(self, ctx: "Context", key: Key) -> nn.Module:
        """Return the watermarked model for `key` (the cell's seed is `ctx.seed`)."""

    def verify(self, ctx: "Context", suspect: nn.Module, key: Key) -> Verification:
        """Decide whether `suspect` carries the watermark of `key`."""

    def rewatermark(self, ctx: "Context", model: nn.Module, key: Key, budget: int) -> nn.Module:
        """Embed `key` into an already trained `model` with the attacker's data and `budget` epochs
        (what a pirate does; a scheme that can only be embedded from scratch still says how it is tried).
        May train `model` itself: callers pass a copy of their own."""


@runtime_checkable
class Attack(Protocol):
    """A removal or forging attack with a strength knob."""

    name: ClassVar[str]
    model_kinds: ClassVar[tuple[str, ...]]
    strengths: ClassVar[tuple[str, ...]]
    version: ClassVar[str]

    def run(self, ctx: "Context", model: nn.Module, strength: str) -> nn.Module | AttackOutput:
        """Attack `model` at `strength` and return the suspect."""

# Threat models. `Defense.thief_access` says what a thief of the protected model can reach: "weights" (the
# model itself leaked or was sold: the default) or "api" (only the answers of a deployed service, e.g. an
# embedding service whose output transform stays inside it). `Attack.needs` says what the attack needs:
# "weights" (the default) or "queries" (black-box answers); `Attack.needs_for(kind)` may say it per model kind.
# A pair whose attack needs more than the defense's thief can reach is outside the threat model: reported
# `n/a`, never run (bench.registry.threat_model_gap).
#
# Optional members, looked up with getattr: `Attack.strengths_for(kind)` narrows the strengths for one
# model kind; `Attack.per_defense = True` says the attack uses the cell's defense (`ctx.defense`), so its
# results are not shared between defenses; `Defense.scheme` names the scheme whose keys and marked models a
# verification variant shares; `Defense.keys_collide(owner, pirate)` says when a pirate's key would coincide with
# the owner's (the harness then draws the pirate another secret, bench.runner.Workbench.pirate_secret); `Defense.claims` lists its paper's headline claims (bench/claims.py).
