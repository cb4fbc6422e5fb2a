"""Pruning attack: global unstructured magnitude pruning (torch.nn.utils.prune) of every convolution and
linear weight at the strength's sparsity; `+ft` strengths then fine-tune the surviving weights for
`attack_epochs` epochs on the attacker's data with the mask held fixed."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from bench.context import Context, derive_seed
from bench.models import clone
from bench.registry import register_attack
from bench.training import pruned


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@register_attack
class Pruning:
    name = "pruning"
    model_kinds = ("classifier", "encoder", "vlp")
    strengths = ("0.2", "0.5", "0.8", "0.9", "0.9+ft")
    version = "1"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module:
        sparsity = float(strength.removesuffix("+ft"))
        model = clone(model).to(ctx.device)
        params = prunable(model)
        channels_last = [m for m, _ in params if m.weight.dim() == 4 and not m.weight.is_contiguous()]
        for module in channels_last:  # torch's global pruning flattens the weights with .view
            module.weight.data = module.weight.data.contiguous()
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
        masks = [module.weight_mask.clone() for module, _ in params]
        for module, name in params:
            prune.remove(module, name)
        for module in channels_last:
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
        if strength.endswith("+ft"):  # the surviving weights are fine-tuned, the pruned ones stay zero
            with pruned([(module.weight, keep) for (module, _), keep in zip(params, masks)]):
                ctx.kind.adapt(ctx, model, epochs=ctx.profile.attack_epochs, lr=1e-3,
                               seed=derive_seed(self.name, strength, ctx.seed))
        return model.eval()
