"""What a method sees while it runs: data, sizes, the cell's seed, the device, and the cached base models."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import ortho_group
from torch import nn

from bench import registry
from bench.cache import ArtifactCache, Memo, weights_digest
from bench.config import Profile
from bench.data import Dataset
from bench.kinds import models as _architectures  # noqa: F401  (how the cache rebuilds the models it stores)
from bench.kinds.base import Clean, ModelKindSpec, get_kind
from bench.protocols import Attack, AttackOutput, Defense, Key


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (Python's hash() is salted per process, this is not)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big") & 0x7FFFFFFF


def random_orthogonal(dim: int, seed: int) -> torch.Tensor:
    """A Haar-distributed random orthogonal matrix (a watermark's W, a thief's disguise R)."""
    return torch.as_tensor(ortho_group.rvs(dim, random_state=np.random.default_rng(seed)), dtype=torch.float32)


def innocent_pool(profile: Profile, kind: str) -> list[Clean]:
    """The innocent models of a kind that every owner key is checked against (the kind's own policy,
    `ModelKindSpec.innocents`)."""
    return get_kind(kind).innocents(profile)


def innocent_pool_gap(profile: Profile, kind: str) -> str:
    """Why a kind has no innocent models in this profile ('' when it has them)."""
    return "" if innocent_pool(profile, kind) else get_kind(kind).innocent_gap(profile)


class NullKeys(Sequence[Key]):
    """The null keys of one key for a key-randomization test (`bench.nulls`): `size` keys in a fixed order,
    drawn by the defense's `null_key` for the model the key was made for, with secrets derived from the
    scheme, the key's secret and the position; made when first asked for, kept for the process, and in the artifact cache where the defense
    says they are worth storing. With `avoid`, candidates that collide with that key (`keys_collide`) are
    skipped — the same constraint the harness puts on a pirate's secret, so the pirate's key and its nulls are
    drawn alike."""

    def __init__(self, ctx: "Context", defense: Defense, key: Key, model: nn.Module | None, avoid: Key | None):
        self.ctx, self.defense, self.key, self.model, self.avoid = ctx, defense, key, model, avoid
        self.size = ctx.profile.null_keys
        reference = ctx.base_descriptor(ctx.seed) if model is None else {"weights": weights_digest(model)}
        self.descriptor = {"role": "null key", "defense": registry.scheme(defense), "version": defense.version,
                           "of": key.secret, "reference": reference}
        self.made: list[Key] = []
        self.candidates = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i):  # type: ignore[override]
        positions = range(self.size)[i]  # an index or a slice of the K positions (IndexError beyond them)
        self._make(max(positions, default=-1) + 1 if isinstance(positions, range) else positions + 1)
        return [self.made[j] for j in positions] if isinstance(positions, range) else self.made[positions]

    def _make(self, n: int) -> None:
        collide = self.defense.keys_collide if self.avoid is not None else None
        while len(self.made) < n:
            secret = derive_seed("null key", self.descriptor["defense"], self.key.secret, self.candidates)
            self.candidates += 1
            draw = lambda s=secret: self.defense.null_key(self.ctx, self.key, s, self.model)  # noqa: E731
            if self.defense.cache_null_keys:
                null = self.ctx.cache.key({**self.descriptor, "secret": secret}, draw)
            else:
                null = draw()
            if collide is None or not collide(self.avoid, null):
                self.made.append(null)


_scratch_utilities = Memo(8)  # per (kind, data, profile): the same for every defense and seed of a run
_null_sets = Memo(64)  # a process's null keys per (scheme, key, reference model, avoided key, profile)


@dataclass(frozen=True)
class Context:
    data: Dataset
    profile: Profile
    seed: int
    kind_name: str
    device: torch.device
    cache: ArtifactCache
    defense: str = ""  # the defense whose cell this is (what a pirate imitates)
    pirate_secret: int | None = None  # the pirate's own secret, as the harness drew it (see `pirate`)

    @property
    def pirate(self) -> int:
        """The secret a pirate makes its own key from: the one the harness drew for this cell
        (`bench.runner.Workbench.context`: the experiment's judge never lets a pirate's key coincide with the
        owner's, e.g. share its target label), else one derived from the seed."""
        return derive_seed("pirate", self.seed) if self.pirate_secret is None else self.pirate_secret

    @property
    def kind(self) -> ModelKindSpec:
        return get_kind(self.kind_name)

    def base_descriptor(self, seed: int, split: str = "owner") -> dict:
        desc = {"role": "base", "kind": self.kind_name, "kind_version": self.kind.version,
                "profile": self.profile.describe(for_models=True), "seed": seed, "split": split}
        if split == "attacker":  # its images depend on the share, which model descriptors otherwise leave out
            desc.update(attacker_data_share=self.profile.attacker_data_share, steps="the owner's")
        return desc

    def base_model(self, seed: int | None = None, split: str = "owner") -> nn.Module:
        """The clean model of this kind trained with `seed` (default: the cell's seed) on `split`, cached."""
        seed = self.seed if seed is None else seed
        model = self.cache.model(self.base_descriptor(seed, split), lambda: self.kind.train_base(self, seed, split))
        return model.to(self.device)

    def clean_model(self, clean: Clean) -> nn.Module:
        """A clean model of this kind: trained here (cached), or a named pretrained checkpoint."""
        if not clean.checkpoint:
            return self.base_model(clean.seed, clean.split)
        from bench.kinds.vlp import load_pretrained

        desc = {"role": "checkpoint", "kind": self.kind_name, "checkpoint": clean.checkpoint}
        return self.cache.model(desc, lambda: load_pretrained(clean.checkpoint)).to(self.device)

    def innocents(self) -> list[Clean]:
        return innocent_pool(self.profile, self.kind_name)

    def attacker_scratch_utility(self) -> float | None:
        """The mean utility of the attacker's own models (the kind's `scratch` policy: the owner's recipe from
        scratch on the attacker's data), the utility a theft must beat; None where the kind has none."""
        models = self.kind.scratch(self.profile)
        if not models:
            return None
        return _scratch_utilities((self.kind_name, self.data.name, repr(self.profile)),
                                  lambda: float(np.mean([self.utility(self.clean_model(c)) for c in models])))

    def utility(self, model: nn.Module) -> float:
        return self.kind.utility(self, model.to(self.device).eval())

    def low_label_utility(self, model: nn.Module) -> float | None:
        """The kind's utility with only a few labels (`KindBase.low_label_utility`); None where it has none."""
        return self.kind.low_label_utility(self, model.to(self.device).eval())

    def untrained_model(self, seed: int | None = None) -> nn.Module:
        """A fresh model of this kind at its random initialisation with `seed` (default: the cell's), on the
        device: the reference a recipe's pretraining is read against. The global random state (CPU, and the
        device's on CUDA) is left as it was."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed if seed is None else seed)
            return self.kind.new(self).to(self.device)

    def null_keys(self, defense: Defense, key: Key, model: nn.Module | None = None,
                  avoid: Key | None = None) -> NullKeys:
        """The null keys of `key`, made for `model` (None: the owner's clean model of this seed); see `NullKeys`.
        `avoid` matters only to a defense whose keys can collide (`keys_collide`); elsewhere it is dropped."""
        avoid = avoid if defense.keys_collide is not None else None
        made = NullKeys(self, defense, key, model, avoid)
        memo = (json.dumps(made.descriptor, sort_keys=True, default=str), None if avoid is None else avoid.secret,
                repr(self.profile))
        return _null_sets(memo, lambda: made)

    def attacked(self, attack: Attack, victim: nn.Module, strength: str) -> AttackOutput:
        """`attack` at `strength` on `victim`, cached under the victim's weights: every cell whose victim
        holds the same weights (the clean model of every defense of a kind; the control defense's "marked"
        model, which is the clean one; the first stages of attack chains) shares one run. An attack that
        declares `per_defense = True` (it uses the cell's defense, as a pirate does) is also keyed by the scheme.
        An attack with epoch budgets that are prefixes of one run (optional `prefix_family(strength)` and
        `run_prefixes(ctx, model, strengths)`) computes the whole family the first time one of them is asked for."""
        family = attack.prefix_family(strength)
        victim_digest = weights_digest(victim)
        descs = {s: self._attacked_descriptors(attack, victim_digest, s) for s in family}
        cached = self._cached_attack(*descs[strength])
        if cached is not None:
            return cached
        with self.cache.building(descs[family[-1]][2]):  # one lock per family
            cached = self._cached_attack(*descs[strength])  # another worker ran it meanwhile
            if cached is not None:
                return cached
            if len(family) > 1:
                outcomes = attack.run_prefixes(self, victim, family)
            else:
                outcomes = {strength: attack.run(self, victim, strength)}
            for s, outcome in outcomes.items():
                self._store_attack(outcome if isinstance(outcome, AttackOutput) else AttackOutput(outcome), *descs[s])
        return self._cached_attack(*descs[strength])

    def _attacked_descriptors(self, attack: Attack, victim_digest: str, strength: str) -> tuple[dict, dict, dict]:
        """Cache descriptors of an attack's outcome: its model, its pirate key, its record."""
        desc = {"role": "attacked", "attack": attack.name, "version": attack.version, "strength": strength,
                "victim": victim_digest, "profile": self.profile.describe(), "seed": self.seed}
        if attack.per_defense:
            desc["scheme"] = registry.scheme(registry.get_defense(self.defense))
            desc["pirate_secret"] = self.pirate
        return desc, {**desc, "role": "pirate_key"}, {**desc, "role": "attack_record"}

    def _store_attack(self, outcome: AttackOutput, desc: dict, pirate_desc: dict, record_desc: dict) -> None:
        self.cache.model(desc, lambda: outcome.model)
        if outcome.pirate_key is not None:
            self.cache.key(pirate_desc, lambda: outcome.pirate_key)
        # written last: a crash before this point leaves no record, so the attack runs again
        self.cache.record(record_desc, {"pirate_key": outcome.pirate_key is not None, "report": outcome.report})

    def _cached_attack(self, desc: dict, pirate_desc: dict, record_desc: dict) -> AttackOutput | None:
        record = self.cache.record(record_desc)
        if record is None:
            return None
        model = self.cache.load_model(desc)
        key = self.cache.load_key(pirate_desc) if record["pirate_key"] else None
        if model is None or (key is None and record["pirate_key"]):
            return None
        return AttackOutput(model.to(self.device), key, record["report"])
