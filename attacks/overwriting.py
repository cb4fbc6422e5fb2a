"""Overwriting: the thief embeds a second watermark of the same scheme into the marked model with its own
secret and its own data, to wash out the owner's (the Watermark-Robustness-Toolbox's overwriting attack).
The procedure is the pirate's (`Defense.rewatermark` on the attacker's data, `attacks/piracy.py`), with the
secret the harness draws for the cell's thief, for twice piracy's largest budget: 24 epochs, the end of the
same run whose copies after 2 and 12 epochs are piracy's budgets (one run serves both attacks). What differs
is the question: piracy asks whether a forged claim verifies beside the owner's, overwriting whether the
owner's mark survives a second one embedded for longer (its row still shows whether the second mark
verifies). Schemes whose mark is an output transform (VLPMarker) have no weights to overwrite: the thief
only reaches the service's answers, and a second transform on top is `piracy`'s `own_transform`; so
`classifier` and `encoder` only."""
from __future__ import annotations

from torch import nn

from bench import registry
from bench.context import Context
from bench.protocols import AttackBase, AttackOutput
from bench.registry import register_attack


@register_attack
class Overwriting(AttackBase):
    name = "overwriting"
    family = "overwriting"
    model_kinds = ("classifier", "encoder")
    strengths = ("24",)  # epochs: one of piracy's epoch budgets (`Piracy.EPOCH_BUDGETS`), not among its strengths
    version = "1"
    per_defense = True  # the thief uses the scheme of the cell's defense

    def run(self, ctx: Context, model: nn.Module, strength: str) -> AttackOutput:
        return ctx.attacked(registry.get_attack("piracy"), model, strength)
