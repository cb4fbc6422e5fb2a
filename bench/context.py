"""What a method sees while it runs: data, sizes, the cell's seed, the device, and the cached base models."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import ortho_group
from torch import nn

from bench.cache import ArtifactCache
from bench.config import Profile
from bench.data import Dataset
from bench.kinds import ModelKindSpec, get_kind


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (Python's hash() is salted per process, this is not)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big") & 0x7FFFFFFF


def random_orthogonal(dim: int, seed: int) -> torch.Tensor:
    """A Haar-distributed random orthogonal matrix (a watermark's W, a thief's disguise R)."""
    return torch.as_tensor(ortho_group.rvs(dim, random_state=np.random.default_rng(seed)), dtype=torch.float32)


def innocent_seeds(profile: Profile) -> list[int]:
    """Seeds of the independently trained clean models that every key is checked against."""
    return [10_000 + i for i in range(profile.n_innocent)]


@dataclass(frozen=True)
class Context:
    data: Dataset
    profile: Profile
    seed: int
    kind_name: str
    device: torch.device
    cache: ArtifactCache
    defense: str = ""  # the defense whose cell this is (what a pirate imitates)

    @property
    def kind(self) -> ModelKindSpec:
        return get_kind(self.kind_name)

    def base_descriptor(self, seed: int) -> dict:
        return {"role": "base", "kind": self.kind_name, "kind_version": self.kind.version,
                "profile": self.profile.describe(for_models=True), "seed": seed}

    def base_model(self, seed: int | None = None) -> nn.Module:
        """The clean model of this kind trained with `seed` (default: the cell's seed), cached."""
        seed = self.seed if seed is None else seed
        model = self.cache.model(self.base_descriptor(seed), lambda: self.kind.train_base(self, seed))
        return model.to(self.device)

    def innocent_seeds(self) -> list[int]:
        return innocent_seeds(self.profile)

    def utility(self, model: nn.Module) -> float:
        return self.kind.utility(self, model.to(self.device).eval())
