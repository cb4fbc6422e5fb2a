"""What a method sees while it runs: data, sizes, the cell's seed, the device, and the cached base models."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import ortho_group
from torch import nn

from bench import registry
from bench.cache import ArtifactCache, weights_digest
from bench.config import Profile
from bench.data import Dataset
from bench.kinds import models as _architectures  # noqa: F401  (how the cache rebuilds the models it stores)
from bench.kinds.base import Clean, ModelKindSpec, get_kind
from bench.protocols import Attack, AttackOutput


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
            desc["attacker_data_share"] = self.profile.attacker_data_share
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
        return float(np.mean([self.utility(self.clean_model(c)) for c in models])) if models else None

    def utility(self, model: nn.Module) -> float:
        return self.kind.utility(self, model.to(self.device).eval())

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
