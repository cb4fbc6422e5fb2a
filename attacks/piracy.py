"""Piracy re-watermarking: a pirate holding the marked model (white-box) and its own data generates its
**own** key and embeds its own watermark into the already-marked model by the same scheme
(`Defense.rewatermark`: incremental training for null embedding and AWEncoder, its own orthogonal
transform on top for VLPMarker), so that it too can claim ownership. The pirate's key is made against the
model it holds (the marked one), never against the owner's clean model; its secret is its own (`ctx.pirate`),
drawn by the harness so that its key never collides with the owner's (for null embedding: the pirate's target
label is never the owner's, as in the paper's experiments) — the pirate's code never sees the owner's key.
Strength = the pirate's budget: `E` trains E epochs on the attacker's data (`ctx.data.attacker`, the run's
`attacker_data_share` of the owner's training-set size, as every other attack); `E@P%` names its own share:
E epochs on P % of the owner's training-set size, drawn (seeded by the cell) from the whole independent split
(`ctx.data.independent`, data the owner never used), whatever the run's attacker share — so the paper's axis
of the pirate's data means the same in every run (the paper's 5, 10 and 25 %: the default matrix runs 25 %,
the largest, beside the run's own share). A transform-based scheme (VLPMarker) needs
no training: the pirate, who reaches only the service's API, answers its own customers with the service's
embeddings times its own orthogonal transform; that is one attack, so it has one strength, `own_transform`,
and needs only queries."""
from __future__ import annotations

import dataclasses

from torch import nn

from bench import registry
from bench.context import Context, derive_seed
from bench.kinds.models import clone
from bench.protocols import AttackBase, MODEL_KINDS, AttackOutput
from bench.registry import register_attack
from bench.training import snapshots


@register_attack
class Piracy(AttackBase):
    name = "piracy"
    family = "piracy"
    model_kinds = MODEL_KINDS
    strengths = ("2", "12", "12@25%", "own_transform")
    version = "4"
    per_defense = True  # the pirate uses the scheme of the cell's defense
    EPOCH_BUDGETS = ("2", "12", "24")  # one run; 24 is `overwriting`'s budget, not a piracy strength
    TRANSFORM_KINDS = ("vlp",)  # kinds whose scheme is an output transform, embedded without training

    def strengths_for(self, kind: str) -> tuple[str, ...]:
        return ("own_transform",) if kind in self.TRANSFORM_KINDS else self.strengths[:-1]

    def needs_for(self, kind: str) -> str:
        return "queries" if kind in self.TRANSFORM_KINDS else "weights"

    def prefix_family(self, strength: str) -> tuple[str, ...]:
        """Budgets of whole epochs on all the pirate's data are prefixes of one run (a constant learning rate
        and a seed of the pirate's key, not of the budget): 24 epochs are trained once, 2 and 12 kept on the way
        (24 is `overwriting`'s budget)."""
        return self.EPOCH_BUDGETS if strength in self.EPOCH_BUDGETS else (strength,)

    def run(self, ctx: Context, model: nn.Module, strength: str) -> AttackOutput:
        return self.run_prefixes(ctx, model, (strength,))[strength]

    def run_prefixes(self, ctx: Context, model: nn.Module, strengths: tuple[str, ...]) -> dict[str, AttackOutput]:
        """Each strength of `strengths` (ascending; all but the last must be whole-epoch budgets), by one run."""
        defense = registry.get_defense(ctx.defense)
        pirate_key = defense.make_key(ctx, ctx.pirate, model=model)
        last = strengths[-1]
        if last == "own_transform":
            return {last: AttackOutput(defense.rewatermark(ctx, clone(model), pirate_key, budget=0), pirate_key)}
        share = last.partition("@")[2]
        if share:
            n = round(float(share.removesuffix("%")) / 100 * len(ctx.data.owner))
            own = ctx.data.independent.sample(n, derive_seed(self.name, last, ctx.seed))
            ctx = dataclasses.replace(ctx, data=dataclasses.replace(ctx.data, attacker=own))
        budgets, victim = {s: int(s.partition("@")[0]) for s in strengths}, clone(model)
        with snapshots(victim, budgets.values()) as taken:
            defense.rewatermark(ctx, victim, pirate_key, budget=budgets[last])
        return {s: AttackOutput(taken[budget], pirate_key) for s, budget in budgets.items()}
