"""Overwriting: the thief embeds a second watermark of the same scheme into the marked model with its own
secret and its own data, to wash out the owner's (the Watermark-Robustness-Toolbox's overwriting attack).
The procedure is the pirate's (`Defense.rewatermark` on the attacker's data, `attacks/piracy.py`), with the
secret the harness draws for the cell's thief; what differs is the question and the budget. Piracy asks
whether a forged claim verifies beside the owner's; overwriting asks whether the owner's mark survives a
second one embedded for twice piracy's largest budget, 24 epochs (its row still shows whether the
overwriter's own mark verifies). Schemes whose mark is an output transform (VLPMarker) have no weights to
overwrite: the thief only reaches the service's answers, and a second transform on top is `piracy`'s
`own_transform`; so `classifier` and `encoder` only."""
from __future__ import annotations

from torch import nn

from bench.context import Context
from bench.protocols import AttackOutput
from bench.registry import register_attack
from attacks.piracy import Piracy


@register_attack
class Overwriting(Piracy):
    name = "overwriting"
    family = "overwriting"
    model_kinds = ("classifier", "encoder")
    strengths = ("24",)
    version = "1"
    EPOCH_BUDGETS = ("24",)
    TRANSFORM_KINDS = ()

    def strengths_for(self, kind: str) -> tuple[str, ...]:
        return self.strengths

    def run(self, ctx: Context, model: nn.Module, strength: str) -> AttackOutput:
        return self.run_prefixes(ctx, model, (strength,))[strength]
