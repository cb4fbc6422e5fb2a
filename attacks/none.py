"""Control attack: the suspect is the marked model itself (verification rate without any attack)."""
from __future__ import annotations

from torch import nn

from bench.context import Context
from bench.protocols import AttackBase, MODEL_KINDS
from bench.registry import register_attack


@register_attack
class NoAttack(AttackBase):
    name = "none"
    family = "no attack"
    model_kinds = MODEL_KINDS
    strengths = ("-",)
    needs = "queries"
    version = "1"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module:
        return model
