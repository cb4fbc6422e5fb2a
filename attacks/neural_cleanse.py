"""Neural Cleanse (Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural
Networks", IEEE S&P 2019), as a watermark-removal attack on classifiers.

1. Reverse engineering: for every label c, find the smallest trigger — a mask m ∈ [0,1]^{H×W} and a pattern
   p ∈ [0,1]^{C×H×W}, applied as (1−m)·x + m·p — that sends the attacker's clean images to c:
   minimise CE(f(x'), c) + λ‖m‖₁ with the paper's adaptive cost λ (starting at 1e-3, raised while the
   trigger reaches the target attack success of 99 %, lowered while it does not), keeping the smallest
   mask that reached the target, with early stopping (`reverse_trigger`). Each label's reversed trigger's
   attack success on the attacker's clean images is recorded, so a flagged label whose trigger does not work
   is visible. Rounds of 10 Adam steps of 64 images (the paper counts epochs), at most `cleanse_rounds`
   (20 in the default profile).
2. Detection: the anomaly index of each label's mask L1 norm, |L1 − median| / (1.4826 · MAD), counted
   only below the median; labels with index > 2 are flagged.
3. Mitigation by unlearning: fine-tune on the attacker's data where a fifth of each batch carries a
   reversed trigger of a flagged label, with the correct labels. Strength = unlearning epochs (1, 3, 6: one run
   of 6 epochs, the shorter budgets kept on the way; constant learning rate). When no
   label is flagged the model is returned unchanged (the detector found nothing to remove).

The per-label anomaly indices are recorded in the cell's attack report."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.cache import weights_digest
from bench.context import Context, derive_seed
from bench.kinds.models import clone
from bench.protocols import AttackBase, AttackOutput, Key
from bench.registry import register_attack
from bench.training import fit, predict, snapshots

MAD_CONSISTENCY = 1.4826


def reverse_trigger(model: nn.Module, x: torch.Tensor, label: int, *, seed: int, target_asr: float = 0.99,
                    init_cost: float = 1e-3, rounds: int = 20, steps_per_round: int = 10, patience: int = 2,
                    early_stop: int = 4) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The smallest (mask, pattern) found that makes `model` answer `label` on the images `x`, by the
    paper's search: minimise CE(f(x'), label) + cost·‖m‖₁ with Adam; after `patience` rounds at or above
    `target_asr` the cost is raised (×1.5), after `patience` rounds below it lowered (÷1.5^1.5); the
    smallest mask whose round reached `target_asr` is kept; the search stops when that mask has not shrunk
    by 1 % for `early_stop` rounds and the cost has been both raised and lowered (the paper's rule: a search
    that never raised its cost has not yet tried to shrink the mask). Returns the mask, the pattern and the reversed trigger's attack success
    on all of `x` (images not already of `label`)."""
    gen = torch.Generator().manual_seed(seed)
    mask_logit = torch.full((1, 1, *x.shape[-2:]), -2.0, device=x.device, requires_grad=True)
    pattern_logit = torch.randn((1, *x.shape[1:]), generator=gen).to(x.device).requires_grad_(True)
    opt = torch.optim.Adam([mask_logit, pattern_logit], lr=0.1, betas=(0.5, 0.9))
    target = torch.full((min(len(x), 64),), label, device=x.device)
    cost, above, below, stale, raised, lowered = init_cost, 0, 0, 0, False, False
    best_l1, best = float("inf"), None
    for _ in range(rounds):
        hits = 0
        for _ in range(steps_per_round):
            idx = torch.randint(0, len(x), (len(target),), generator=gen).to(x.device)
            mask, pattern = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
            logits = model((1 - mask) * x[idx] + mask * pattern)
            loss = F.cross_entropy(logits, target) + cost * mask.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            hits += int((logits.argmax(1) == label).sum())
        asr = hits / (steps_per_round * len(target))
        l1 = float(torch.sigmoid(mask_logit).detach().sum())
        if asr >= target_asr and l1 < best_l1:
            stale = 0 if l1 < 0.99 * best_l1 else stale + 1
            best_l1, best = l1, (torch.sigmoid(mask_logit).detach(), torch.sigmoid(pattern_logit).detach())
        elif best is not None:
            stale += 1
        if best is not None and stale >= early_stop and raised and lowered:
            break
        above, below = (above + 1, 0) if asr >= target_asr else (0, below + 1)
        if above >= patience:
            cost, above, raised = cost * 1.5, 0, True
        elif below >= patience:
            cost, below, lowered = cost / 1.5 ** 1.5, 0, True
    mask, pattern = best or (torch.sigmoid(mask_logit).detach(), torch.sigmoid(pattern_logit).detach())
    with torch.no_grad():
        others = x[predict(model, x).argmax(1) != label]
        stamped = (1 - mask) * others + mask * pattern
        success = float((predict(model, stamped).argmax(1) == label).float().mean()) if len(others) else 1.0
    return mask, pattern, success


def anomaly_indices(l1_norms: np.ndarray) -> np.ndarray:
    """Neural Cleanse's MAD-based anomaly index; only masks smaller than the median count as anomalous."""
    median = np.median(l1_norms)
    mad = MAD_CONSISTENCY * np.median(np.abs(l1_norms - median))
    return np.maximum(median - l1_norms, 0) / max(mad, 1e-12)


@register_attack
class NeuralCleanse(AttackBase):
    name = "neural_cleanse"
    family = "backdoor removal"
    model_kinds = ("classifier",)
    strengths = ("1", "3", "6")
    version = "5"
    flag_index = 2.0
    trigger_fraction = 0.2

    def detect(self, ctx: Context, model: nn.Module) -> Key:
        """Reverse-engineer every label's trigger and flag the anomalous ones. The findings are a forged
        trigger key per label, stored in a `Key` (params: flagged labels and anomaly indices; tensors: masks
        and patterns) and cached under the model's weights: every cell and strength that attacks the same
        model shares one detection."""
        desc = {"role": "neural_cleanse_detection", "version": self.version, "victim": weights_digest(model),
                "profile": ctx.profile.describe()}
        return ctx.cache.key(desc, lambda: self._detect(ctx, model))

    def _detect(self, ctx: Context, model: nn.Module) -> Key:
        for p in model.parameters():
            p.requires_grad_(False)
        x = ctx.data.attacker.x
        triggers = [reverse_trigger(model, x, c, seed=derive_seed(self.name, c), rounds=ctx.profile.cleanse_rounds)
                    for c in range(ctx.data.num_classes)]
        for p in model.parameters():
            p.requires_grad_(True)
        index = anomaly_indices(np.array([float(m.sum()) for m, _, _ in triggers]))
        flagged = [int(c) for c in np.flatnonzero(index > self.flag_index)]
        return Key(self.name, 0, {"flagged": flagged, "anomaly_index": [float(v) for v in index],
                                  "mask_l1": [float(m.sum()) for m, _, _ in triggers],
                                  "trigger_success": [success for _, _, success in triggers]},
                   {"masks": torch.cat([m for m, _, _ in triggers]),
                    "patterns": torch.cat([p for _, p, _ in triggers])})

    def prefix_family(self, strength: str) -> tuple[str, ...]:
        """Unlearning budgets are prefixes of one run (constant learning rate, seed independent of the budget)."""
        return self.strengths

    def run(self, ctx: Context, model: nn.Module, strength: str) -> AttackOutput:
        return self.run_prefixes(ctx, model, (strength,))[strength]

    def run_prefixes(self, ctx: Context, model: nn.Module, strengths: tuple[str, ...]) -> dict[str, AttackOutput]:
        """Detection once, then unlearning for each budget of `strengths` (ascending) by one run."""
        model = clone(model).to(ctx.device).eval()
        found = self.detect(ctx, model)
        flagged, index = found.params["flagged"], found.params["anomaly_index"]
        success = found.params["trigger_success"]
        report = {"n_flagged": len(flagged), "max_anomaly_index": max(index), "flagged": flagged,
                  "anomaly_index": [round(v, 4) for v in index], "mask_l1": found.params["mask_l1"],
                  "trigger_success": success,
                  "min_flagged_trigger_success": min((success[c] for c in flagged), default=float("nan"))}
        if not flagged:  # nothing to unlearn: the model comes back unchanged, an outcome of its own
            return {s: AttackOutput(model, report={**report, "inactive": "nothing flagged"}) for s in strengths}
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
        with snapshots(model, [int(s) for s in strengths]) as taken:
            fit(model.parameters(), unlearning_loss, len(a.y), epochs=int(strengths[-1]),
                seed=derive_seed(self.name, ctx.seed), lr=1e-3)
        return {s: AttackOutput(taken[int(s)], report=report) for s in strengths}
