"""Cross-architecture distillation: model extraction (`attacks/extraction.py`: the same queries, answers and
training recipe, the same seed) into a student of the thief's own architecture, not the victim's — a ResNet
student for the CNN victim and a CNN student for a ResNet victim (Watermark-Robustness-Toolbox's
cross-architecture retraining; StolenEncoder, CCS 2022, steals encoders the same way: a student encoder
regressed onto the victim's embeddings of the attacker's images). The student's architecture is the first
registered architecture of the victim's kind (by name) other than the profile's, so a plugin architecture
can take its place. The thief sees only the service's answers, never the victim's weights.

Classifiers and encoders only: an embedding service's stolen copy is already of another architecture (a CNN
image encoder imitating a ViT, `extraction` on the `vlp` kind). Strength = query budget; one budget, 2,000
queries, the middle of `extraction`'s three (a ResNet student costs about 2.5 times a CNN's)."""
from __future__ import annotations

import dataclasses

from torch import nn

from bench.context import Context
from bench.kinds.models import architecture_names, get_architecture
from bench.protocols import AttackBase, WmbenchError
from bench.registry import register_attack
from attacks.extraction import Extraction, stolen_model

ARCHITECTURE_FIELD = {"classifier": "classifier_arch", "encoder": "encoder_arch"}  # the profile field per kind


def other_architecture(kind: str, current: str) -> str:
    """The thief's architecture: the first registered architecture of `kind` by name other than `current`."""
    others = sorted(n for n in architecture_names() if get_architecture(n).kind == kind and n != current)
    if not others:
        raise WmbenchError(f"no {kind} architecture other than '{current}' is registered for a cross-architecture "
                           f"student")
    return others[0]


@register_attack
class CrossArchitectureExtraction(AttackBase):
    name = "extraction_cross"
    family = "extraction"
    model_kinds = tuple(ARCHITECTURE_FIELD)
    strengths = ("2000",)
    needs = "queries"
    version = "1"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module:
        field = ARCHITECTURE_FIELD[ctx.kind_name]
        student = other_architecture(ctx.kind_name, getattr(ctx.profile, field))
        thief = dataclasses.replace(ctx, profile=dataclasses.replace(ctx.profile, **{field: student}))
        return stolen_model(thief, model, int(strength))
