"""Fine-tuning attack: the thief continues training the stolen model on its own data.

Regimes (the strength), all on the attacker's split with the model kind's own objective (cross-entropy
for classifiers, SimCLR's NT-Xent for encoders), `attack_epochs` epochs:
- `last_layer`: only the last layer is trained (lr 1e-3);
- `all_layers`: every layer (lr 1e-3);
- `reinit_last`: the last layer re-initialised, then every layer (lr 1e-3);
- `large_lr`: every layer at lr 1e-2 (the regime that removed null embedding in a reimplementation, at a
  large cost in accuracy);
On a VLP the weights a thief can train are those of the copy it stole (chains such as
`extraction>fine_tuning`; the service's own weights are outside its threat model), and only the regimes
without a head apply there (`all_layers`, `large_lr`; objective: `bench.kinds.vlp.VlpKind.adapt`).
- `supervised` (encoders only): supervised fine-tuning of the whole encoder under a new linear head
  trained with cross-entropy on the attacker's labels (the transfer-learning recipe); the head is dropped.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.context import Context, derive_seed
from bench.kinds.models import clone, last_layer, output_dim
from bench.protocols import AttackBase
from bench.registry import register_attack
from bench.training import fit


@register_attack
class FineTuning(AttackBase):
    name = "fine_tuning"
    family = "fine-tuning"
    model_kinds = ("classifier", "encoder", "vlp")
    strengths = ("last_layer", "all_layers", "reinit_last", "large_lr", "supervised")
    version = "1"

    def strengths_for(self, kind: str) -> tuple[str, ...]:
        return {"encoder": self.strengths, "vlp": ("all_layers", "large_lr")}.get(kind, self.strengths[:-1])

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module:
        model = clone(model).to(ctx.device)
        seed = derive_seed(self.name, strength, ctx.seed)
        epochs = ctx.profile.attack_epochs
        torch.manual_seed(seed)
        if strength == "supervised":
            return self._supervised(ctx, model, epochs, seed)
        if strength == "reinit_last":
            last_layer(model).reset_parameters()
        params = list(last_layer(model).parameters()) if strength == "last_layer" else list(model.parameters())
        lr = 1e-2 if strength == "large_lr" else 1e-3
        return ctx.kind.adapt(ctx, model, epochs=epochs, lr=lr, seed=seed, params=params)

    @staticmethod
    def _supervised(ctx: Context, encoder: nn.Module, epochs: int, seed: int) -> nn.Module:
        a = ctx.data.attacker
        head = nn.Linear(output_dim(encoder), ctx.data.num_classes).to(ctx.device)
        encoder.train()
        fit(list(encoder.parameters()) + list(head.parameters()),
            lambda i: F.cross_entropy(head(encoder(a.x[i])), a.y[i]), len(a.y), epochs=epochs, seed=seed, lr=1e-3)
        return encoder.eval()
