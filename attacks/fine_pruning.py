"""Fine-pruning (Liu, Dolan-Gavitt, Garg, "Fine-Pruning: Defending Against Backdooring Attacks on Deep
Neural Networks", RAID 2018): prune the units of the last convolutional stage that stay dormant (lowest
mean activation) on the attacker's clean data, then fine-tune with the pruned units held at zero.
Strength = the fraction of units pruned; the fine-tune is `attack_epochs` epochs of the kind's own
objective on the attacker's data.

For the VLP service the thief holds leaked weights of the watermarked service, with the output transform
folded in as it is deployed; the image tower is a ViT, so the units are the hidden units of its last
transformer MLP, and the fine-tune is contrastive caption training on the attacker's digits."""
from __future__ import annotations

import torch
from torch import nn

from bench.context import Context, derive_seed
from bench.kinds.models import clone, prunable_units
from bench.protocols import AttackBase, AttackOutput
from bench.registry import register_attack
from bench.training import pruned


def mean_activations(ctx: Context, model: nn.Module, activation: nn.Module) -> torch.Tensor:
    """Mean activation of each unit (channel / hidden unit) over the attacker's clean data."""
    total, count = None, 0

    def record(module, inputs, output):
        nonlocal total, count
        units = output.transpose(0, 1).flatten(1) if output.dim() == 4 else output.flatten(0, -2).T
        total = units.sum(1) if total is None else total + units.sum(1)
        count += units.shape[1]

    handle = activation.register_forward_hook(record)
    try:
        ctx.kind.query(model, ctx.data.attacker.x)
    finally:
        handle.remove()
    return total / count


@register_attack
class FinePruning(AttackBase):
    name = "fine_pruning"
    family = "pruning"
    model_kinds = ("classifier", "encoder", "vlp")
    strengths = ("0.5", "0.8")
    version = "1"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> AttackOutput:
        model = clone(model).to(ctx.device).eval()
        layer, activation = prunable_units(model)
        means = mean_activations(ctx, model, activation)
        n_prune = round(float(strength) * len(means))
        dormant = means.argsort()[:n_prune]
        with pruned([(p, torch.ones_like(p).index_fill_(0, dormant, 0)) for p in (layer.weight, layer.bias)]):
            ctx.kind.adapt(ctx, model, epochs=ctx.profile.attack_epochs, lr=1e-3,
                           seed=derive_seed(self.name, strength, ctx.seed))
        return AttackOutput(model.eval(), report={"pruned_units": n_prune, "units": len(means),
                                                  "pruned": sorted(dormant.tolist())})
