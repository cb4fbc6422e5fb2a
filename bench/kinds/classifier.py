"""The classifier kind: a CNN trained with cross-entropy; utility = held-out top-1 accuracy."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from bench.kinds.base import BASE_LR, KindBase, register_kind
from bench.kinds.models import architecture_for, create_model
from bench.training import predict, train_supervised

if TYPE_CHECKING:
    from bench.context import Context
    from bench.kinds.service import BlackBox


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


@register_kind
class ClassifierKind(KindBase):
    """A small CNN classifier trained with cross-entropy; utility = held-out top-1 accuracy."""

    name = "classifier"
    version = "1"

    def new(self, ctx: "Context") -> nn.Module:
        d = ctx.data
        return create_model(architecture_for(self.name, ctx.profile.classifier_arch), in_channels=d.channels,
                            num_classes=d.num_classes, width=ctx.profile.width)

    def train_base(self, ctx: "Context", seed: int, split: str = "owner") -> nn.Module:
        data = ctx.data.split(split)
        return self.train_on(ctx, data.x, data.y, seed, self.epochs_on(ctx, ctx.profile.classifier_epochs, split))

    def train_on(self, ctx: "Context", x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int | None = None) -> nn.Module:
        """The owner's clean recipe on images `x` with labels `y` (also how a test plants a backdoor), for
        `epochs` (default: the profile's)."""
        torch.manual_seed(seed)
        model = self.new(ctx).to(ctx.device)
        return train_supervised(model, x, y, epochs=epochs or ctx.profile.classifier_epochs, seed=seed,
                                lr=BASE_LR["classifier"], one_cycle=True)

    def utility(self, ctx: "Context", model: nn.Module) -> float:
        test = ctx.data.test
        return accuracy(predict(model, test.x), test.y)

    def query(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return predict(lambda b: F.softmax(model(b), dim=1), x)

    def adapt(self, ctx: "Context", model: nn.Module, *, epochs: int, lr: float, seed: int,
              params: list[nn.Parameter] | None = None) -> nn.Module:
        a = ctx.data.attacker
        return train_supervised(model, a.x, a.y, epochs=epochs, seed=seed, lr=lr, params=params)

    def student(self, ctx: "Context", service: "BlackBox") -> nn.Module:
        return self.new(ctx).to(ctx.device)

    def imitation_loss(self, student: nn.Module, x: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(student(x), dim=1), answers, reduction="batchmean")
