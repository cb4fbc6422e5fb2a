"""Weight quantisation: every convolution and linear weight stored at lower precision and used as such —
`int8`: symmetric per-tensor 8-bit quantisation (255 levels, scale max|w| / 127), `fp16`: half precision.
No training: the thief ships a compressed copy and pays only the rounding error in utility."""
from __future__ import annotations

import torch
from torch import nn

from bench.context import Context
from bench.kinds.models import clone, layer_weights
from bench.protocols import MODEL_KINDS, AttackBase
from bench.registry import register_attack


@register_attack
class WeightQuantization(AttackBase):
    name = "weight_quantization"
    family = "quantization"
    model_kinds = MODEL_KINDS
    strengths = ("fp16", "int8")
    version = "1"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module:
        copy = clone(model)
        with torch.no_grad():
            for w in layer_weights(copy):
                if strength == "fp16":
                    w.copy_(w.half().float())
                else:
                    scale = w.abs().max().clamp(min=1e-12) / 127
                    w.copy_(torch.round(w / scale).clamp(-127, 127) * scale)
        return copy.eval()
