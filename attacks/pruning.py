"""Pruning attack: global unstructured magnitude pruning (the L1 criterion of torch.nn.utils.prune's
`global_unstructured`: the smallest |w| over every convolution and linear weight together) at the strength's
sparsity; `+ft` strengths then fine-tune the surviving weights for `attack_epochs` epochs on the attacker's
data with the mask held fixed. The masks are applied in place (bench.training.pruned), whatever the
weights' memory layout."""
from __future__ import annotations

import torch
from torch import nn

from bench.context import Context, derive_seed
from bench.kinds.models import clone, layer_weights
from bench.protocols import AttackBase
from bench.registry import register_attack
from bench.training import pruned


def magnitude_masks(weights: list[nn.Parameter], sparsity: float) -> list[torch.Tensor]:
    """0/1 masks that drop the round(sparsity · n) weights of smallest magnitude among all `weights`."""
    scores = torch.cat([w.detach().abs().reshape(-1) for w in weights])
    keep = torch.ones_like(scores)
    keep[torch.topk(scores, round(sparsity * len(scores)), largest=False).indices] = 0
    return [chunk.reshape(w.shape) for chunk, w in zip(keep.split([w.numel() for w in weights]), weights)]


@register_attack
class Pruning(AttackBase):
    name = "pruning"
    family = "pruning"
    model_kinds = ("classifier", "encoder", "vlp")
    strengths = ("0.5", "0.8", "0.9", "0.9+ft")
    version = "1"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module:
        sparsity = float(strength.removesuffix("+ft"))
        model = clone(model).to(ctx.device)
        weights = layer_weights(model)
        with pruned(list(zip(weights, magnitude_masks(weights, sparsity)))):
            if strength.endswith("+ft"):  # the surviving weights are fine-tuned, the pruned ones stay zero
                ctx.kind.adapt(ctx, model, epochs=ctx.profile.attack_epochs, lr=1e-3,
                               seed=derive_seed(self.name, strength, ctx.seed))
        return model.eval()
