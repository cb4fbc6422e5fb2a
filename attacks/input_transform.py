"""Input transformations before the stolen model (the input-preprocessing family of removal attacks, as in
the Watermark-Robustness-Toolbox): every query is quantised to 8 bits (`quantize8`, which also clamps it into
[0, 1]) or blurred with a Gaussian of σ = 0.5 or 1 pixel (`blur0.5`, `blur1`) before the model sees it. No
training; the thief pays in utility where the transformation hurts normal inputs."""
from __future__ import annotations

from torch import nn

from bench.context import Context
from bench.protocols import MODEL_KINDS, AttackBase
from bench.registry import register_attack
from bench.served import serve

TRANSFORMS = {"quantize8": {"name": "quantize", "params": {"levels": 256}},
              "blur0.5": {"name": "gaussian_blur", "params": {"sigma": 0.5}},
              "blur1": {"name": "gaussian_blur", "params": {"sigma": 1.0}}}


@register_attack
class InputTransform(AttackBase):
    name = "input_transform"
    family = "input transformation"
    model_kinds = MODEL_KINDS
    strengths = tuple(TRANSFORMS)
    version = "1"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module:
        return serve(model, pre=[TRANSFORMS[strength]])
