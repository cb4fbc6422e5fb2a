"""SimCLR pretraining (Chen et al., 2020) of the image encoders: real per-sample augmentations from
kornia, NT-Xent on a throw-away projection head. Shared by the base encoder, AWEncoder's joint loss
and the attacker's continued contrastive training."""
from __future__ import annotations

from typing import Callable

import kornia.augmentation as K
import torch
from torch import nn

from bench.kinds.models import output_dim
from bench.training import fit, nt_xent


def augmentation(image_size: int) -> nn.Module:
    """Crops, small rotations, intensity changes and noise; no flips (digits are not mirror-symmetric)."""
    return nn.Sequential(
        K.RandomResizedCrop((image_size, image_size), scale=(0.6, 1.0), ratio=(0.8, 1.25)),
        K.RandomAffine(degrees=10, p=0.5),
        K.ColorJitter(brightness=0.3, contrast=0.3, p=0.8),
        K.RandomGaussianNoise(std=0.05, p=0.5),
    )


def projector(dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))


def simclr_train(
    encoder: nn.Module,
    x: torch.Tensor,
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    params: list[nn.Parameter] | None = None,
    extra_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    one_cycle: bool = False,
) -> nn.Module:
    """Train `encoder` (or only `params` of it) with NT-Xent on two augmented views of `x`;
    `extra_loss(indices)` is added to each batch's loss."""
    torch.manual_seed(seed)
    head = projector(output_dim(encoder)).to(x.device)
    augment = augmentation(x.shape[-1])
    encoder.train()

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        xb = x[idx]
        loss = nt_xent(head(encoder(augment(xb))), head(encoder(augment(xb))))
        return loss if extra_loss is None else loss + extra_loss(idx)

    trained = list(encoder.parameters()) if params is None else list(params)
    fit(trained + list(head.parameters()), batch_loss, len(x),
        epochs=epochs, seed=seed, lr=lr, batch_size=batch_size, one_cycle=one_cycle)
    return encoder.eval()
