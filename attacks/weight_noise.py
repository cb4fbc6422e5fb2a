"""Weight noise: Gaussian noise added to every convolution and linear weight, its standard deviation the
strength times that weight tensor's own standard deviation, seeded by the attack, the strength and the cell.
No training: the thief perturbs the weights it holds and pays only the noise's cost in utility; scaling by
each tensor's spread makes one strength mean the same in every layer and architecture."""
from __future__ import annotations

import torch
from torch import nn

from bench.context import Context, derive_seed
from bench.kinds.models import clone, layer_weights
from bench.protocols import MODEL_KINDS, AttackBase
from bench.registry import register_attack


@register_attack
class WeightNoise(AttackBase):
    name = "weight_noise"
    family = "weight-space"
    model_kinds = MODEL_KINDS
    strengths = ("0.3", "0.5")  # σ relative to each weight tensor's standard deviation
    version = "1"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module:
        relative = float(strength)
        gen = torch.Generator().manual_seed(derive_seed(self.name, strength, ctx.seed))
        noisy = clone(model)
        with torch.no_grad():
            for w in layer_weights(noisy):
                sigma = w.std(correction=0) * relative
                w.add_(sigma * torch.randn(w.shape, generator=gen).to(device=w.device, dtype=w.dtype))
        return noisy.eval()
