"""VLPMarker — "Watermarking Vision-Language Pre-trained Models for Multi-modal Embedding-as-a-Service"
(Tang et al., arXiv 2311.05863).

Implemented:
- Injection by *embedding orthogonal transformation*: a per-user orthogonal matrix W (Haar-random,
  seeded by the owner's key) multiplies both the image and the text embeddings the service returns
  (`embedding @ W`, then L2-normalised, as in the released demo); the model's weights are untouched and,
  W being orthogonal, every cosine similarity — hence zero-shot accuracy — is preserved exactly.
- *Out-of-distribution trigger selection*: key-seeded candidate images that are not training data are
  ranked by the service's own zero-shot confidence (maximum softmax over the class prompts); the
  `n_triggers` least confident are the triggers. No training data is needed. Source of the candidates:
  procedural images (`bench.data.procedural_images`: gratings, smooth random fields, rectangles) drawn
  from the key — a source no thief queries (the extraction thief queries its own digits and crops of the
  photos shipped with scikit-learn), so the trigger distribution never leaks into a stealer's training set.
- *Collaborative verification* with EmbMarker's statistics (a trigger set against a benign set): the
  benign set is `n_triggers` further key-seeded procedural images that were not selected. Each trigger's
  target is its watermarked embedding W·e(t) (e = the clean service's embedding, kept in the key). For the
  suspect s: C_b = {cos(s(tᵢ), W·e(tᵢ))}, C_n = {cos(s(bᵢ), W·e(tᵢ))} (the same targets, met by benign
  images), L_b, L_n the squared L2 distances of the normalised embeddings; Δcos = mean C_b − mean C_n,
  Δl2 = mean L_b − mean L_n (negative when marked; −2·Δcos on unit vectors), and the two-sample
  Kolmogorov–Smirnov p-value between C_b and C_n (the embedding-distribution test). A copy of the marked
  service answers each trigger with its own target; any other model meets a trigger's target no more
  closely than a benign image does, whatever the anisotropy of its embedding space.
- Detection at the paper's rule needs both tests: the statistic is Δcos when the KS test rejects at `alpha`
  and 0 otherwise, thresholded at `delta_threshold`.
- Key-randomization test (the leaderboard's p-value, `bench.nulls`): the null keys keep the key's triggers,
  benign set and clean embeddings and draw another Haar-random W (`null_key`); the ranked statistic is the raw
  Δcos (`score_many`). W is drawn independently of the triggers, so on a service not derived from one marked
  with W, W is exchangeable with the null draws given the triggers, and the p-value is exact.

Reconstructed (the matrix generation and verification code were not released): the Haar sampling of W,
the MSP-based OOD criterion, the procedural trigger source, the benign set and the pairing of benign
images with trigger targets, the set sizes (64 each) and `delta_threshold`. The key carries W, the
triggers, the benign images and the triggers' clean embeddings e(t), so an auditor needs only the key
and the suspect."""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch
import torch.nn.functional as F
from scipy.stats import ks_2samp
from torch import nn

from bench.claims import Claim
from bench.context import Context, derive_seed, random_orthogonal
from bench.data import procedural_images
from bench.kinds.models import clone, output_transform
from bench.kinds.vlp import class_embeddings
from bench.protocols import DefenseBase, Key, Verification
from bench.registry import register_defense


@register_defense
class VLPMarker(DefenseBase):
    name = "vlpmarker"
    model_kind = "vlp"
    thief_access = "api"  # the transform W lives inside the service: a thief sees only its answers
    version = "2"
    n_triggers = 64
    n_candidates = 320  # procedural candidates drawn per key
    delta_threshold = 0.1
    alpha = 0.01
    cache_null_keys = False  # a null key is one Haar-random matrix
    claims = (  # the abstract's headline claims (Tang et al.)
        Claim("Minimal impact on model performance (zero-shot accuracy)", "utility"),
        Claim("Robust against model extraction attacks", "survives", ("extraction", "extraction_rotated")),
        Claim("One watermark per user: the owner's key identifies its own service", "identification"),
        Claim("High-quality verification: no false claims on other models", "false_positives"),
    )

    def select_triggers(self, ctx: Context, service: nn.Module, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The `n_triggers` candidates the service is least sure about (lowest zero-shot max-softmax), and
        `n_triggers` of the other candidates, drawn at random, as the benign set."""
        d = ctx.data
        candidates = procedural_images(self.n_candidates, d.image_size, d.channels, seed).to(ctx.device)
        with torch.no_grad():
            logits = 100 * service.encode_image(candidates) @ class_embeddings(service, d.class_names).T
        order = logits.softmax(1).max(1).values.argsort()
        rest = order[self.n_triggers:]
        benign = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))[: self.n_triggers]]
        return candidates[order[: self.n_triggers]], candidates[benign.to(candidates.device)]

    def make_key(self, ctx: Context, secret: int, model: nn.Module | None = None) -> Key:
        base = ctx.base_model() if model is None else model
        seed = derive_seed(self.name, secret)
        triggers, benign = self.select_triggers(ctx, base, seed)
        with torch.no_grad():
            original = base.encode_image(triggers)
        w = random_orthogonal(original.shape[1], seed)
        return Key(self.name, secret, {"n_triggers": self.n_triggers},
                   {"W": w, "triggers": triggers.cpu(), "benign": benign.cpu(), "original": original.cpu()})

    def watermark(self, ctx: Context, key: Key) -> nn.Module:
        return self.rewatermark(ctx, ctx.base_model(), key, budget=0)

    def rewatermark(self, ctx: Context, model: nn.Module, key: Key, budget: int) -> nn.Module:
        """Compose the service's output transform with the key's W (no training, so `budget` is unused)."""
        marked = clone(model)
        transform = output_transform(marked)
        transform.copy_(transform @ key.tensors["W"].to(transform.device))
        return marked

    def null_key(self, ctx: Context, key: Key, secret: int, model: nn.Module | None = None) -> Key:
        """The key's triggers, benign set and clean embeddings with another Haar-random W: W is drawn
        independently of the triggers, so given them the owner's W is exchangeable with any other."""
        w = random_orthogonal(key.tensors["W"].shape[0], derive_seed(self.name, "null", secret))
        return Key(self.name, secret, dict(key.params), {**key.tensors, "W": w})

    def score_many(self, ctx: Context, suspect: nn.Module, keys: Sequence[Key], floor: float = float("-inf")) -> list[float]:
        """Δcos per key (not gated by the KS test): the suspect embeds each distinct trigger and benign set
        once, and every key's W is applied to those embeddings."""
        embedded: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
        scores = []
        for key in keys:
            triggers = key.tensors["triggers"]
            tag = hashlib.sha256(triggers.numpy().tobytes() + key.tensors["benign"].numpy().tobytes()).digest()
            if tag not in embedded:
                with torch.no_grad():
                    embedded[tag] = (suspect.encode_image(triggers.to(ctx.device)),
                                     suspect.encode_image(key.tensors["benign"].to(ctx.device)))
            s_trigger, s_benign = embedded[tag]
            target = self.targets(ctx, key)
            scores.append(float((s_trigger * target).sum(1).mean() - (s_benign * target).sum(1).mean()))
        return scores

    @staticmethod
    def targets(ctx: Context, key: Key) -> torch.Tensor:
        """Each trigger's watermarked embedding W·e(t), normalised."""
        return F.normalize(key.tensors["original"].to(ctx.device) @ key.tensors["W"].to(ctx.device), dim=-1)

    def verify(self, ctx: Context, suspect: nn.Module, key: Key) -> Verification:
        target = self.targets(ctx, key)
        with torch.no_grad():
            s_trigger = suspect.encode_image(key.tensors["triggers"].to(ctx.device))
            s_benign = suspect.encode_image(key.tensors["benign"].to(ctx.device))
        cos_b, cos_n = (s_trigger * target).sum(1), (s_benign * target).sum(1)
        delta_cos = float(cos_b.mean() - cos_n.mean())
        delta_l2 = float((s_trigger - target).pow(2).sum(1).mean() - (s_benign - target).pow(2).sum(1).mean())
        p_value = float(ks_2samp(cos_b.cpu().numpy(), cos_n.cpu().numpy()).pvalue)
        statistic = delta_cos if p_value < self.alpha else 0.0
        return Verification(statistic > self.delta_threshold, statistic, self.delta_threshold, p_value,
                            {"delta_cos": delta_cos, "delta_l2": delta_l2, "cos_trigger": float(cos_b.mean()),
                             "cos_benign": float(cos_n.mean())})
