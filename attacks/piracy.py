"""Piracy re-watermarking: a pirate holding the marked model (white-box) and its own data generates its
**own** key and embeds its own watermark into the already-marked model by the same scheme
(`Defense.rewatermark`: incremental training for null embedding and AWEncoder, its own orthogonal
transform on top for VLPMarker), so that it too can claim ownership. The pirate's key is made against the
model it holds (the marked one), never against the owner's clean model. Strength = the pirate's budget
in training epochs. A transform-based scheme (VLPMarker) needs no training: the pirate, who reaches only
the service's API, answers its own customers with the service's embeddings times its own orthogonal
transform; that is one attack, so it has one strength, `own_transform`, and needs only queries."""
from __future__ import annotations

from torch import nn

from bench import registry
from bench.context import Context, derive_seed
from bench.protocols import MODEL_KINDS, AttackOutput
from bench.registry import register_attack


@register_attack
class Piracy:
    name = "piracy"
    model_kinds = MODEL_KINDS
    strengths = ("2", "6", "12", "own_transform")
    version = "2"
    per_defense = True  # the pirate uses the scheme of the cell's defense
    TRANSFORM_KINDS = ("vlp",)  # kinds whose scheme is an output transform, embedded without training

    def strengths_for(self, kind: str) -> tuple[str, ...]:
        return ("own_transform",) if kind in self.TRANSFORM_KINDS else self.strengths[:-1]

    def needs_for(self, kind: str) -> str:
        return "queries" if kind in self.TRANSFORM_KINDS else "weights"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> AttackOutput:
        defense = registry.get_defense(ctx.defense)
        pirate_key = defense.make_key(ctx, derive_seed("pirate", ctx.seed), model=model)
        budget = 0 if strength == "own_transform" else int(strength)
        pirated = defense.rewatermark(ctx, model, pirate_key, budget=budget)
        return AttackOutput(pirated, pirate_key)
