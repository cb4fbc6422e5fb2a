"""Evasion at the query side ("capsulation"): the thief serves the stolen model behind an input check that
recognises what a normal user never sends and answers it otherwise, so a verification query never reaches
the model as the verifier built it. The strengths, weakest first:

- `clamp`: every input is clamped into [0, 1], so a query built from out-of-range values (null embedding's ±λ
  pattern) reaches the model as an ordinary image. In-range inputs pass unchanged: the utility is the model's.
- `ood1`, `ood5`: an out-of-distribution filter (`bench.served.OODFilter`) that may reject 1 % / 5 % of
  normal queries. It is fitted on the attacker's own images only, never the owner's data, keys or the
  verification split: half of them (a split seeded by the cell) give the per-pixel mean and standard
  deviation (floored at one 8-bit grey level, 1/255, so a pixel constant in those images still has a finite
  z-score), and an input's score is its mean squared z-score over the pixels — a diagonal Gaussian model of
  the attacker's images. The other half sets the threshold by the split-conformal rule: the k-th smallest of
  their n scores with k = ⌈(n + 1)(1 − share)⌉, which rejects a fresh normal query with probability at most
  `share`; with fewer than 1/share − 1 held-out images no order statistic promises that, and the threshold is
  their largest score, which rejects about 1/(n + 1) (at the default 90 attacker images, n = 45: `ood1`
  rejects about 2 % of normal queries in expectation, `ood5` about 4 %). Any input with a value outside
  [0, 1] is rejected too, so the filter subsumes the clamp. A rejected input is answered as the attacker's
  mean image: the model's answer to it is one fixed, uninformative answer that carries nothing of the query
  (a clamp or blur of the query would still pass part of a trigger through). The cost is measured: the report
  gives the rejected share of the held-out half (`rejected_normal`, at most `share` by construction) and of the
  test split (`rejected_test`, images the fit never saw), and the threshold."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from bench.context import Context, derive_seed
from bench.protocols import MODEL_KINDS, AttackBase, AttackOutput, WmbenchError
from bench.registry import register_attack
from bench.served import OODFilter, serve

SHARES = {"ood1": 0.01, "ood5": 0.05}  # the share of normal queries each filter may reject
STD_FLOOR = 1 / 255  # one 8-bit grey level: the least a pixel is assumed to vary
DECIMALS = 6  # the fitted statistics' precision in the recipe (JSON)


def fit_ood_filter(images: torch.Tensor, share: float, seed: int) -> tuple[dict[str, Any], torch.Tensor]:
    """The `ood_filter` parameters fitted on `images` (N, C, H, W) for a rejection share `share`: statistics
    from half of them (drawn with `seed`), the threshold from the other half (see the module's docstring).
    Returns the parameters and the held-out half."""
    n = len(images)
    if n < 4:
        raise WmbenchError(f"input_filter: the attacker holds {n} images; fitting its filter takes at least 4")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(images.device)
    fit, held = images[order[: n // 2]], images[order[n // 2 :]]
    mean = [round(v, DECIMALS) for v in fit.mean(0).flatten().tolist()]
    std = [round(v, DECIMALS) for v in fit.std(0).flatten().clamp(min=STD_FLOOR).tolist()]
    with torch.no_grad():
        scores = OODFilter(mean, std, threshold=0.0).to(images.device).score(held).sort().values
    k = min(len(held), math.ceil((len(held) + 1) * (1 - share)))
    return {"mean": mean, "std": std, "threshold": float(scores[k - 1])}, held


@register_attack
class InputFilter(AttackBase):
    name = "input_filter"
    family = "evasion"
    model_kinds = MODEL_KINDS
    strengths = ("clamp", *SHARES)
    version = "1"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module | AttackOutput:
        if strength == "clamp":
            return serve(model, pre=[{"name": "clamp", "params": {"low": 0.0, "high": 1.0}}])
        params, held = fit_ood_filter(ctx.data.attacker.x, SHARES[strength], derive_seed(self.name, ctx.seed))
        served = serve(model, pre=[{"name": "ood_filter", "params": params}])
        check = served.pre[0]
        with torch.no_grad():
            report = {"rejected_normal": check.rejects(held).float().mean().item(),
                      "rejected_test": check.rejects(ctx.data.test.x).float().mean().item(),
                      "threshold": params["threshold"]}
        return AttackOutput(served, report=report)
