"""Neural Cleanse (Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural
Networks", IEEE S&P 2019), as a watermark-removal attack on classifiers.

1. Reverse engineering: for every label c, find the smallest trigger — a mask m ∈ [0,1]^{H×W} and a pattern
   p ∈ [0,1]^{C×H×W}, applied as (1−m)·x + m·p — that sends the attacker's clean images to c:
   minimise CE(f(x'), c) + λ‖m‖₁ (Adam, 100 steps of 64 images, λ = 0.05; the paper tunes λ per label on the fly,
   a fixed λ is our simplification).
2. Detection: the anomaly index of each label's mask L1 norm, |L1 − median| / (1.4826 · MAD), counted
   only below the median; labels with index > 2 are flagged.
3. Mitigation by unlearning: fine-tune on the attacker's data where a fifth of each batch carries a
   reversed trigger of a flagged label, with the correct labels. Strength = unlearning epochs. When no
   label is flagged the model is returned unchanged (the detector found nothing to remove).

The per-label anomaly indices are recorded in the cell's attack report."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.cache import weights_digest
from bench.context import Context, derive_seed
from bench.models import clone
from bench.protocols import AttackOutput, Key
from bench.registry import register_attack
from bench.training import fit

MAD_CONSISTENCY = 1.4826


def reverse_trigger(model: nn.Module, x: torch.Tensor, label: int, *, steps: int, lam: float, seed: int):
    """The smallest (mask, pattern) found that makes `model` answer `label` on the images `x`."""
    gen = torch.Generator().manual_seed(seed)
    mask_logit = torch.full((1, 1, *x.shape[-2:]), -2.0, device=x.device, requires_grad=True)
    pattern_logit = torch.randn((1, *x.shape[1:]), generator=gen).to(x.device).requires_grad_(True)
    opt = torch.optim.Adam([mask_logit, pattern_logit], lr=0.1)
    target = torch.full((min(len(x), 64),), label, device=x.device)
    for step in range(steps):
        idx = torch.randint(0, len(x), (len(target),), generator=gen).to(x.device)
        mask, pattern = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
        loss = F.cross_entropy(model((1 - mask) * x[idx] + mask * pattern), target) + lam * mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.sigmoid(mask_logit).detach(), torch.sigmoid(pattern_logit).detach()


def anomaly_indices(l1_norms: np.ndarray) -> np.ndarray:
    """Neural Cleanse's MAD-based anomaly index; only masks smaller than the median count as anomalous."""
    median = np.median(l1_norms)
    mad = MAD_CONSISTENCY * np.median(np.abs(l1_norms - median))
    return np.maximum(median - l1_norms, 0) / max(mad, 1e-12)


@register_attack
class NeuralCleanse:
    name = "neural_cleanse"
    model_kinds = ("classifier",)
    strengths = ("1", "3", "6")
    version = "1"
    steps = 100
    lam = 0.05
    flag_index = 2.0
    trigger_fraction = 0.2

    def detect(self, ctx: Context, model: nn.Module) -> Key:
        """Reverse-engineer every label's trigger and flag the anomalous ones. The findings are a forged
        trigger key per label, stored in a `Key` (params: flagged labels and anomaly indices; tensors: masks
        and patterns) and cached under the model's weights: every cell and strength that attacks the same
        model shares one detection."""
        desc = {"role": "neural_cleanse_detection", "version": self.version, "victim": weights_digest(model),
                "profile": ctx.profile.describe(), "steps": self.steps, "lam": self.lam}
        return ctx.cache.key(desc, lambda: self._detect(ctx, model))

    def _detect(self, ctx: Context, model: nn.Module) -> Key:
        for p in model.parameters():
            p.requires_grad_(False)
        x = ctx.data.attacker.x
        triggers = [reverse_trigger(model, x, c, steps=self.steps, lam=self.lam, seed=derive_seed(self.name, c))
                    for c in range(ctx.data.num_classes)]
        for p in model.parameters():
            p.requires_grad_(True)
        index = anomaly_indices(np.array([float(m.sum()) for m, _ in triggers]))
        flagged = [int(c) for c in np.flatnonzero(index > self.flag_index)]
        return Key(self.name, 0, {"flagged": flagged, "anomaly_index": [float(v) for v in index]},
                   {"masks": torch.cat([m for m, _ in triggers]), "patterns": torch.cat([p for _, p in triggers])})

    def run(self, ctx: Context, model: nn.Module, strength: str) -> AttackOutput:
        model = clone(model).to(ctx.device).eval()
        found = self.detect(ctx, model)
        flagged, index = found.params["flagged"], found.params["anomaly_index"]
        report = {"n_flagged": len(flagged), "max_anomaly_index": max(index), "flagged": flagged,
                  "anomaly_index": [round(v, 4) for v in index]}
        if not flagged:
            return AttackOutput(model, report=report)
        a = ctx.data.attacker
        masks = found.tensors["masks"][flagged].to(ctx.device)
        patterns = found.tensors["patterns"][flagged].to(ctx.device)

        def unlearning_loss(i: torch.Tensor) -> torch.Tensor:
            xb = a.x[i].clone()
            n = max(1, int(self.trigger_fraction * len(i)))
            pick = torch.randint(0, len(flagged), (n,), device=xb.device)
            xb[:n] = (1 - masks[pick]) * xb[:n] + masks[pick] * patterns[pick]
            return F.cross_entropy(model(xb), a.y[i])

        model.train()
        fit(model.parameters(), unlearning_loss, len(a.y), epochs=int(strength),
            seed=derive_seed(self.name, strength, ctx.seed), lr=1e-3)
        return AttackOutput(model.eval(), report=report)
