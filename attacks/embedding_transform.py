"""Output transformations of an embedding service: a reseller queries the service (or its stolen copy) and
answers its own customers with transformed embeddings. `noise0.05`: Gaussian noise of σ = 0.05 per dimension,
renormalised; `quantize8`: every dimension quantised to 8 bits; `cse3`: the top 3 principal directions of the
service's embeddings of the attacker's own images removed (WARDEN's CSE attack on embedding watermarks, ACL
2024), renormalised; `permute`: the dimensions reordered by a random permutation of the reseller's own (a
disguise that keeps every similarity, like `extraction_rotated`). Each is the victim served behind a
post-processing step (`bench.served.serve`); a VLP service's image and text embeddings pass it alike, so the
zero-shot utility pays only for what the step destroys."""
from __future__ import annotations

import torch
from torch import nn

from bench.context import Context, derive_seed
from bench.protocols import AttackBase
from bench.registry import register_attack
from bench.served import serve

CSE_IMAGES = 512  # the attacker's images whose embeddings the principal directions are fitted on


@register_attack
class EmbeddingTransform(AttackBase):
    name = "embedding_transform"
    family = "output transformation"
    model_kinds = ("encoder", "vlp")
    strengths = ("noise0.05", "quantize8", "cse3", "permute")
    needs = "queries"
    version = "1"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module:
        seed = derive_seed(self.name, strength, ctx.seed)
        a = ctx.data.attacker
        answers = ctx.kind.query(model, a.x[:CSE_IMAGES])  # what the reseller bought
        dim = answers.shape[1]
        if strength == "noise0.05":
            return serve(model, post=[{"name": "embedding_noise", "params": {"std": 0.05, "seed": seed}}])
        if strength == "quantize8":
            return serve(model, post=[{"name": "embedding_quantize", "params": {"levels": 256}}])
        if strength == "cse3":
            centred = answers - answers.mean(0, keepdim=True)
            directions = torch.linalg.svd(centred, full_matrices=False).Vh[:3]
            return serve(model, post=[{"name": "project_out", "params": {"k": 3, "dim": dim}}],
                         post_state={"0.directions": directions})
        order = torch.randperm(dim, generator=torch.Generator().manual_seed(seed))
        return serve(model, post=[{"name": "permute", "params": {"dim": dim}}], post_state={"0.order": order})
