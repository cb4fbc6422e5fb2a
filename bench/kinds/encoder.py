"""The encoder kind: a CNN image encoder pretrained with SimCLR; utility = linear-probe accuracy."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from bench.data import SPLIT_SEED, stratified_subset
from bench.kinds.base import BASE_LR, KindBase, register_kind
from bench.kinds.contrastive import simclr_train
from bench.kinds.models import architecture_for, create_model
from bench.training import predict

if TYPE_CHECKING:
    from bench.context import Context
    from bench.kinds.service import BlackBox


LABELS_PER_CLASS = 10  # the low-label probe's labelled images per class


def linear_probe(train_feats: torch.Tensor, train_y: torch.Tensor, test_feats: torch.Tensor,
                 test_y: torch.Tensor) -> float:
    """Top-1 accuracy of a logistic-regression probe on standardised frozen features."""
    scaler = StandardScaler().fit(train_feats.cpu().numpy())
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(train_feats.cpu().numpy()), train_y.cpu().numpy())
    pred = probe.predict(scaler.transform(test_feats.cpu().numpy()))
    return float(np.mean(pred == test_y.cpu().numpy()))


@register_kind
class EncoderKind(KindBase):
    """A small CNN encoder pretrained with SimCLR on the owner's unlabelled images.

    Utility = linear-probe top-1 accuracy on the held-out test split, the probe trained on the
    owner's labelled split (the encoder itself never sees labels); low-label utility = the same probe trained
    on 10 labelled images per class."""

    name = "encoder"
    version = "1"

    def new(self, ctx: "Context") -> nn.Module:
        return create_model(architecture_for(self.name, ctx.profile.encoder_arch), in_channels=ctx.data.channels,
                            width=ctx.profile.width)

    def train_base(self, ctx: "Context", seed: int, split: str = "owner") -> nn.Module:
        torch.manual_seed(seed)
        encoder = self.new(ctx).to(ctx.device)
        return simclr_train(encoder, ctx.data.split(split).x, epochs=self.epochs_on(ctx, ctx.profile.encoder_epochs, split),
                            seed=seed, lr=BASE_LR["encoder"], one_cycle=True)

    def utility(self, ctx: "Context", model: nn.Module) -> float:
        d = ctx.data
        return linear_probe(predict(model, d.owner.x), d.owner.y, predict(model, d.test.x), d.test.y)

    def low_label_utility(self, ctx: "Context", model: nn.Module) -> float:
        """The linear probe trained on `LABELS_PER_CLASS` labelled owner images per class and read on the test
        split: `LABELS_PER_CLASS` × classes images drawn in the classes' proportions (exactly that many per class
        where the classes are balanced, as in the digits and Fashion-MNIST), seeded with the split seed, so the
        same images in every run."""
        d = ctx.data
        few = stratified_subset(d.owner, LABELS_PER_CLASS * d.num_classes, SPLIT_SEED)
        return linear_probe(predict(model, few.x), few.y, predict(model, d.test.x), d.test.y)

    def query(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return predict(model, x)

    def adapt(self, ctx: "Context", model: nn.Module, *, epochs: int, lr: float, seed: int,
              params: list[nn.Parameter] | None = None) -> nn.Module:
        return simclr_train(model, ctx.data.attacker.x, epochs=epochs, seed=seed, lr=lr, params=params)

    def student(self, ctx: "Context", service: "BlackBox") -> nn.Module:
        return self.new(ctx).to(ctx.device)

    def imitation_loss(self, student: nn.Module, x: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(student(x), answers)
