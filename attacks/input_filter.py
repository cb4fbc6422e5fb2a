"""Evasion at the query side ("capsulation"): the thief serves the stolen model behind an input check that
sanitises what a normal user never sends — pixel values outside [0, 1] are clamped into range — so a
verification query built from out-of-range values (null embedding's ±λ pattern) is answered like a normal
one. In-range inputs pass unchanged, so the utility is the model's own. Strength `clamp`: the check clamps
every input. (An out-of-distribution detector fitted on the attacker's own data, with the share of normal
queries it may reject as the strength, is the same family's stronger variant; not implemented yet.)"""
from __future__ import annotations

from torch import nn

from bench.context import Context
from bench.protocols import MODEL_KINDS, AttackBase
from bench.registry import register_attack
from bench.served import serve


@register_attack
class InputFilter(AttackBase):
    name = "input_filter"
    family = "evasion"
    model_kinds = MODEL_KINDS
    strengths = ("clamp",)
    version = "1"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module:
        return serve(model, pre=[{"name": "clamp", "params": {"low": 0.0, "high": 1.0}}])
