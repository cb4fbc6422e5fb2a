"""Input transformations before the stolen model (the input-preprocessing family of removal attacks, as in
the Watermark-Robustness-Toolbox): every query is quantised to 8 bits (`quantize8`, which also clamps it into
[0, 1]), blurred with a Gaussian of σ = 1 pixel (`blur1`), JPEG-compressed at quality 50
(`jpeg50`, which also clamps and rounds to 8 bits, as saving an image file does) or given additive Gaussian
noise of σ = 0.1 (`noise0.1`, not clamped, so it tests the noise alone; the noise of each query is drawn from
the cell's seed and the query) before the model sees it. No training; the thief pays in utility where the
transformation hurts normal inputs."""
from __future__ import annotations

from torch import nn

from bench.context import Context, derive_seed
from bench.protocols import MODEL_KINDS, AttackBase
from bench.registry import register_attack
from bench.served import serve

TRANSFORMS = {"quantize8": {"name": "quantize", "params": {"levels": 256}},
              "blur1": {"name": "gaussian_blur", "params": {"sigma": 1.0}},
              "jpeg50": {"name": "jpeg", "params": {"quality": 50}},
              "noise0.1": {"name": "gaussian_noise", "params": {"std": 0.1}}}
SEEDED = ("gaussian_noise",)  # transforms that draw random numbers take the cell's seed


@register_attack
class InputTransform(AttackBase):
    name = "input_transform"
    family = "input transformation"
    model_kinds = MODEL_KINDS
    strengths = tuple(TRANSFORMS)
    version = "1"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module:
        step = TRANSFORMS[strength]
        if step["name"] in SEEDED:
            step = {**step, "params": {**step["params"], "seed": derive_seed(self.name, strength, ctx.seed)}}
        return serve(model, pre=[step])
