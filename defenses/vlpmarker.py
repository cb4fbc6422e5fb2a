"""VLPMarker — "Watermarking Vision-Language Pre-trained Models for Multi-modal Embedding-as-a-Service"
(Tang et al., arXiv 2311.05863).

Implemented:
- Injection by *embedding orthogonal transformation*: a per-user orthogonal matrix W (Haar-random,
  seeded by the owner's key) multiplies both the image and the text embeddings the service returns
  (`embedding @ W`, then L2-normalised, as in the released demo); the model's weights are untouched and,
  W being orthogonal, every cosine similarity — hence zero-shot accuracy — is preserved exactly.
- *Out-of-distribution trigger selection*: candidate images that are not training data (random crops of
  the photos shipped with scikit-learn, drawn with a key-derived seed, plus uniform noise) are ranked by
  the service's own zero-shot confidence (maximum softmax over the class prompts); the least confident
  are the triggers. No training data is needed.
- *Collaborative verification*: (1) trigger test — is the suspect's embedding s(t) of each trigger closer
  to the watermarked W·e(t) than to the original e(t)? Δcos = mean cos(s, We) − mean cos(s, e) and
  Δl2 = mean ‖s − e‖ − mean ‖s − We‖ (EmbMarker's statistics, positive when the mark is present);
  (2) distribution test — two-sample Kolmogorov–Smirnov test between the two cosine distributions.
  Detected only when Δcos > 0.1 *and* p < 0.01 (the KS test alone fires on unrelated models whose
  distributions merely differ).

Reconstructed (the matrix generation and verification code were not released): the Haar sampling of W,
the MSP-based OOD criterion, the number of triggers (64) and both thresholds. The key carries W, the
triggers and their original embeddings e(t), so an auditor needs only the key and the suspect.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.stats import ks_2samp
from torch import nn

from bench.context import Context, derive_seed, random_orthogonal
from bench.data import sample_photo_crops
from bench.models import clone
from bench.protocols import Key, Verification
from bench.registry import register_defense
from bench.vlp import class_embeddings


@register_defense
class VLPMarker:
    name = "vlpmarker"
    model_kind = "vlp"
    thief_access = "api"  # the transform W lives inside the service: a thief sees only its answers
    version = "1"
    n_triggers = 64
    n_candidates = 320
    delta_threshold = 0.1
    alpha = 0.01

    def select_triggers(self, ctx: Context, service: nn.Module, seed: int) -> torch.Tensor:
        """The `n_triggers` candidates the service is least sure about (lowest zero-shot max-softmax)."""
        d = ctx.data
        n_noise = self.n_candidates // 5
        gen = torch.Generator().manual_seed(seed)
        candidates = torch.cat([
            sample_photo_crops(self.n_candidates - n_noise, d.image_size, d.channels, seed),
            torch.rand(n_noise, d.channels, d.image_size, d.image_size, generator=gen),
        ]).to(ctx.device)
        with torch.no_grad():
            logits = 100 * service.encode_image(candidates) @ class_embeddings(service, d.class_names).T
        confidence = logits.softmax(1).max(1).values
        return candidates[confidence.argsort()[: self.n_triggers]]

    def make_key(self, ctx: Context, secret: int, model: nn.Module | None = None) -> Key:
        base = ctx.base_model() if model is None else model
        seed = derive_seed(self.name, secret)
        triggers = self.select_triggers(ctx, base, seed)
        with torch.no_grad():
            original = base.encode_image(triggers)
        w = random_orthogonal(original.shape[1], seed)
        return Key(self.name, secret, {"n_triggers": self.n_triggers},
                   {"W": w, "triggers": triggers.cpu(), "original": original.cpu()})

    def watermark(self, ctx: Context, key: Key) -> nn.Module:
        return self.rewatermark(ctx, ctx.base_model(), key, budget=0)

    def rewatermark(self, ctx: Context, model: nn.Module, key: Key, budget: int) -> nn.Module:
        """Compose the service's output transform with the key's W (no training, so `budget` is unused)."""
        marked = clone(model)
        marked.transform.copy_(marked.transform @ key.tensors["W"].to(marked.transform.device))
        return marked

    def verify(self, ctx: Context, suspect: nn.Module, key: Key) -> Verification:
        triggers = key.tensors["triggers"].to(ctx.device)
        original = key.tensors["original"].to(ctx.device)
        marked = F.normalize(original @ key.tensors["W"].to(ctx.device), dim=-1)
        with torch.no_grad():
            s = suspect.encode_image(triggers)
        cos_w, cos_o = (s * marked).sum(1), (s * original).sum(1)
        delta_cos = float(cos_w.mean() - cos_o.mean())
        delta_l2 = float((s - original).norm(dim=1).mean() - (s - marked).norm(dim=1).mean())
        p_value = float(ks_2samp(cos_w.cpu().numpy(), cos_o.cpu().numpy()).pvalue)
        detected = delta_cos > self.delta_threshold and p_value < self.alpha
        return Verification(detected, delta_cos, self.delta_threshold, p_value,
                            {"delta_l2": delta_l2, "cos_marked": float(cos_w.mean()), "cos_original": float(cos_o.mean())})
