"""Piracy re-watermarking: a pirate holding the marked model (white-box) and its own data generates its
**own** key and embeds its own watermark into the already-marked model by the same scheme
(`Defense.rewatermark`: incremental training for null embedding and AWEncoder, its own orthogonal
transform on top for VLPMarker), so that it too can claim ownership. The pirate's key is made against the
model it holds (the marked one), never against the owner's clean model. Strength = the pirate's budget:
`E` trains E epochs on all of its own data (the attacker's split, half as many images as the owner's
training set), `E@P%` trains E epochs on P % of the owner's training-set size drawn from its own data (the
paper's axis of the pirate's data: 5, 10, 25 %). A transform-based scheme (VLPMarker) needs no training: the pirate, who reaches only
the service's API, answers its own customers with the service's embeddings times its own orthogonal
transform; that is one attack, so it has one strength, `own_transform`, and needs only queries."""
from __future__ import annotations

import dataclasses

from torch import nn

from bench import registry
from bench.context import Context, derive_seed
from bench.protocols import MODEL_KINDS, AttackOutput
from bench.registry import register_attack


@register_attack
class Piracy:
    name = "piracy"
    model_kinds = MODEL_KINDS
    strengths = ("2", "6", "12", "12@5%", "12@10%", "12@25%", "own_transform")
    version = "3"
    per_defense = True  # the pirate uses the scheme of the cell's defense
    TRANSFORM_KINDS = ("vlp",)  # kinds whose scheme is an output transform, embedded without training

    def strengths_for(self, kind: str) -> tuple[str, ...]:
        return ("own_transform",) if kind in self.TRANSFORM_KINDS else self.strengths[:-1]

    def needs_for(self, kind: str) -> str:
        return "queries" if kind in self.TRANSFORM_KINDS else "weights"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> AttackOutput:
        defense = registry.get_defense(ctx.defense)
        pirate_key = defense.make_key(ctx, derive_seed("pirate", ctx.seed), model=model)
        if strength == "own_transform":
            budget = 0
        else:
            epochs, _, share = strength.partition("@")
            budget = int(epochs)
            if share:
                n = round(float(share.removesuffix("%")) / 100 * len(ctx.data.owner))
                own = ctx.data.attacker.sample(n, derive_seed(self.name, strength, ctx.seed))
                ctx = dataclasses.replace(ctx, data=dataclasses.replace(ctx.data, attacker=own))
        pirated = defense.rewatermark(ctx, model, pirate_key, budget=budget)
        return AttackOutput(pirated, pirate_key)
