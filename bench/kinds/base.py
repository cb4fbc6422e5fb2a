"""What a model kind is: the protocol every kind implements (how its clean base model is trained — the recipe
the owner and every independent innocent model share —, how utility is measured on held-out data, what a
black-box query of it returns), and the registry of kinds. Each kind is one module of this package
(`classifier.py`, `encoder.py`, `vlp.py`) that registers itself with `@register_kind` when imported."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from bench.plugins import Catalog
from bench.protocols import conform

if TYPE_CHECKING:
    from bench.context import Context
    from bench.kinds.service import BlackBox


@dataclass(frozen=True)
class Clean:
    """A clean model of a kind: trained by the owner's recipe with `seed` on one split of the data (`owner`;
    `independent`: data the owner never used; `attacker`: the attacker's share of it), or a pretrained
    `checkpoint` (`open_clip:<model>:<pretrained>`)."""

    seed: int
    split: str = "owner"
    checkpoint: str = ""

    @property
    def name(self) -> str:
        return self.checkpoint or f"seed {self.seed} on the {self.split} split"


class KindBase:
    """The optional members of a model kind, with their defaults."""

    def innocents(self, profile: Any) -> list[Clean]:
        """The innocent models every owner key of this kind is checked against: `n_innocent` independently
        trained clean models, every other one on the whole independent split (data the owner never used)."""
        return [Clean(10_000 + i, "independent" if i % 2 else "owner") for i in range(profile.n_innocent)]

    def scratch(self, profile: Any) -> list[Clean]:
        """The attacker's own models, the baseline a theft must beat: the owner's recipe trained from scratch on
        the attacker's data (`attacker_data_share` of the owner's size) with `scratch_seeds` seeds of its own."""
        return [Clean(20_000 + i, "attacker") for i in range(profile.scratch_seeds)]

    @staticmethod
    def epochs_on(ctx: "Context", epochs: int, split: str) -> int:
        """The epochs of the owner's recipe on `split`: as many optimisation steps as the owner's training takes
        on the attacker's data (its recipe's epochs times the owner's size over the attacker's), so that the
        attacker's own model is not short-trained as well as short of data; the recipe's `epochs` elsewhere."""
        if split != "attacker":
            return epochs
        return epochs * max(1, round(len(ctx.data.owner) / max(len(ctx.data.attacker), 1)))

    def innocent_gap(self, profile: Any) -> str:
        """Why this kind has no innocent models in `profile`."""
        return "n_innocent = 0"

    def low_label_utility(self, ctx: "Context", model: nn.Module) -> float | None:
        """Task quality on the held-out test split when the downstream task has only a few labels, in [0, 1]:
        what pretraining buys where labels are scarce (the encoder's linear probe on 10 labelled images per
        class); None: the kind has no such reading."""
        return None


class ModelKindSpec(Protocol):
    name: str
    version: str

    def new(self, ctx: "Context") -> nn.Module:
        """A fresh, untrained model of this kind (also what an extraction attacker trains)."""

    def train_base(self, ctx: "Context", seed: int, split: str = "owner") -> nn.Module:
        """The clean model the owner's recipe trains with this seed on this split of the data."""

    def utility(self, ctx: "Context", model: nn.Module) -> float:
        """Task quality on the held-out test split, in [0, 1]."""

    def query(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """What a black-box user of the deployed model receives for images `x`."""

    def adapt(self, ctx: "Context", model: nn.Module, *, epochs: int, lr: float, seed: int,
              params: list[nn.Parameter] | None = None) -> nn.Module:
        """Continue training `model` (or only `params`) on the attacker's own data with this kind's objective."""

    def student(self, ctx: "Context", service: "BlackBox") -> nn.Module:
        """A fresh model an extraction thief trains to imitate `service` (it may query the service)."""

    def imitation_loss(self, student: nn.Module, x: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        """How far the student's outputs on `x` are from the service's `answers`."""


KIND_GROUP = "wmbench.kinds"
KIND_MEMBERS = ("name", "version", "new", "train_base", "utility", "query", "adapt", "student", "imitation_loss")


def _check_kind(entry: object) -> ModelKindSpec:
    """A model kind (its class or an instance) checked against `ModelKindSpec`; stored as an instance."""
    return conform(entry if isinstance(entry, type) else type(entry), "model kind", KIND_MEMBERS, KindBase)()


# The kinds: every module of this package that defines one registers it (`@register_kind`); outside packages
# through the entry-point group `wmbench.kinds`, pointing at the kind's class.
KINDS: Catalog[ModelKindSpec] = Catalog("model kind", KIND_GROUP, ("bench.kinds",), _check_kind)

# Peak learning rates of the from-scratch recipes, all trained with the one-cycle schedule (`fit`): 15
# classifier epochs at 1e-2 reach the accuracy of 25 constant-rate epochs at 3e-3 (0.966 vs 0.971, mean of
# two seeds), 20 SimCLR epochs at 2e-3 that of 30 at 1e-3 (0.964 vs 0.972). CLIP trains at a constant rate
# (20 one-cycle epochs reach 0.78 zero-shot, constant-rate ones 0.95); its budget is the profile's clip_epochs.
BASE_LR = {"classifier": 1e-2, "encoder": 2e-3}


def register_kind(cls: type) -> type:
    return KINDS.register(cls)


def get_kind(name: str) -> ModelKindSpec:
    return KINDS.get(name)


def kind_names() -> list[str]:
    return KINDS.names()
