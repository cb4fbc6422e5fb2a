"""Model extraction: the thief queries the deployed model as a black box and trains a fresh model of
its own to reproduce the answers (EmbMarker's stealer: a backbone trained with MSE on the normalised
returned embeddings; for classifiers, distillation of the returned probabilities; for encoders,
regression of the returned features).

Queries: the attacker's own digits under random augmentations (crops, rotations, intensity, noise) and,
for a quarter of the budget, random crops of public photos (the shipped sample photos, a seed of the
thief's own; never the procedural images VLPMarker draws its triggers from). Strength = query budget
(images). The student trains a fixed number of epochs over its queries (`extraction_epochs`), so a larger
budget also buys more optimisation steps, as for a thief who pays per query and trains to convergence. `extraction_rotated` then multiplies the stolen model's
outputs by a random orthogonal matrix: a disguise that keeps every similarity, hence the thief's
utility (embedding kinds only). Both attacks start from the same stolen model, which is cached under the
victim's weights and trained once."""
from __future__ import annotations

import torch
from torch import nn

from bench.cache import weights_digest
from bench.context import Context, derive_seed, random_orthogonal
from bench.data import sample_photo_crops
from bench.kinds.contrastive import augmentation
from bench.kinds.models import output_transform
from bench.kinds.service import BlackBox
from bench.protocols import AttackBase
from bench.registry import register_attack
from bench.training import fit

BATCH = 64
STUDENT_LR = 3e-3  # peak rate of the student's one-cycle schedule (it trains from scratch, like the owners' recipes)


def queries(ctx: Context, budget: int, seed: int) -> torch.Tensor:
    d = ctx.data
    n_photos = budget // 4
    torch.manual_seed(seed)
    augment = augmentation(d.image_size)
    digits = d.attacker.x[torch.randint(0, len(d.attacker), (budget - n_photos,))]
    with torch.no_grad():
        digits = augment(digits).clamp(0, 1)
    photos = sample_photo_crops(n_photos, d.image_size, d.channels, seed).to(ctx.device)
    return torch.cat([digits, photos])


def extract(ctx: Context, victim: nn.Module, budget: int, seed: int) -> nn.Module:
    service = BlackBox(victim, ctx.kind)
    x = queries(ctx, budget, seed)
    answers = service.images(x)
    student = ctx.kind.student(ctx, service)
    student.train()
    fit(student.parameters(), lambda i: ctx.kind.imitation_loss(student, x[i], answers[i]), budget,
        epochs=ctx.profile.extraction_epochs, seed=seed, batch_size=BATCH, lr=STUDENT_LR, one_cycle=True)
    return student.eval()


def stolen_model(ctx: Context, victim: nn.Module, budget: int) -> nn.Module:
    """The thief's student for this victim, budget and cell seed (trained once, then loaded); its architecture
    is the profile's for the kind (`extraction_cross` hands in a context whose profile names another)."""
    seed = derive_seed(Extraction.name, str(budget), ctx.seed)
    desc = {"role": "stolen", "version": Extraction.version, "victim": weights_digest(victim), "budget": budget,
            "seed": seed, "profile": ctx.profile.describe()}
    return ctx.cache.model(desc, lambda: extract(ctx, victim, budget, seed)).to(ctx.device)


@register_attack
class Extraction(AttackBase):
    name = "extraction"
    family = "extraction"
    model_kinds = ("classifier", "encoder", "vlp")
    strengths = ("8000",)
    needs = "queries"
    version = "2"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module:
        return stolen_model(ctx, model, int(strength))


@register_attack
class RotatedExtraction(AttackBase):
    name = "extraction_rotated"
    family = "extraction"
    model_kinds = ("encoder", "vlp")
    strengths = Extraction.strengths
    needs = "queries"
    version = "1"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module:
        stolen = stolen_model(ctx, model, int(strength))
        transform = output_transform(stolen)
        rotation = random_orthogonal(transform.shape[0],
                                     derive_seed(self.name, derive_seed(Extraction.name, strength, ctx.seed)))
        transform.copy_(transform @ rotation.to(transform.device))
        return stolen
