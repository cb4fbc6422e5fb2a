"""Control defense: the clean classifier, no watermark. Its verifier never claims ownership, so its rows
show what each attack costs in utility on an unprotected model."""
from __future__ import annotations

from torch import nn

from bench.context import Context
from bench.protocols import DefenseBase, Key, Verification
from bench.registry import register_defense


@register_defense
class NoDefense(DefenseBase):
    name = "none"
    model_kind = "classifier"
    version = "1"
    control = True  # no mark: its rows show what attacks cost, never whether one "removed" anything

    def make_key(self, ctx: Context, secret: int, model: nn.Module | None = None) -> Key:
        return Key(self.name, secret)

    def watermark(self, ctx: Context, key: Key) -> nn.Module:
        return ctx.base_model()

    def verify(self, ctx: Context, suspect: nn.Module, key: Key) -> Verification:
        return Verification(detected=False, statistic=0.0, threshold=1.0, p_value=1.0)

    def rewatermark(self, ctx: Context, model: nn.Module, key: Key, budget: int) -> nn.Module:
        return model
