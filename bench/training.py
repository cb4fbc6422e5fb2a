"""Training loops shared by every method: one seeded mini-batch loop, and the losses built on it."""
from __future__ import annotations

import copy
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn



def clone(model: nn.Module) -> nn.Module:
    """An independent copy that keeps the recipe (`spec`)."""
    twin = copy.deepcopy(model)
    twin.spec = copy.deepcopy(model.spec)
    return twin


_autocast_dtype: ContextVar[torch.dtype | None] = ContextVar("wmbench_autocast_dtype", default=None)
_epoch_hook: ContextVar[Callable[[int], None] | None] = ContextVar("wmbench_epoch_hook", default=None)


@contextmanager
def mixed_precision(dtype: torch.dtype | None) -> Iterator[None]:
    """Inside this block every `fit` computes its forward passes and losses under autocast in `dtype`
    (bfloat16: no loss scaling needed); gradients, optimiser state and weights stay float32. `None` keeps
    full precision. Only training loops are affected: verification always runs in float32."""
    token = _autocast_dtype.set(dtype)
    try:
        yield
    finally:
        _autocast_dtype.reset(token)


@contextmanager
def snapshots(model: nn.Module, epochs: Iterable[int]) -> Iterator[dict[int, nn.Module]]:
    """Copies of `model` (evaluation mode) taken after each of `epochs` epochs of the `fit` that trains it
    inside the block: one run of the longest budget gives every shorter budget of the same recipe (prefix
    sharing). Exact where nothing in the run depends on its total length: a constant learning rate, and a
    seed that does not depend on the budget (`fit` without `one_cycle`); callers state that they qualify.
    When nothing inside the block trains (a scheme that embeds without training), every copy is the model
    as it stands at the end of the block."""
    wanted, taken = set(epochs), {}
    trained = False

    def take(epoch: int) -> None:
        nonlocal trained
        trained = True
        if epoch in wanted:
            taken[epoch] = clone(model).eval()

    token = _epoch_hook.set(take)
    try:
        yield taken
    finally:
        _epoch_hook.reset(token)
    if not trained:
        taken.update({epoch: clone(model).eval() for epoch in wanted})


@contextmanager
def pruned(masks: list[tuple[nn.Parameter, torch.Tensor]]) -> Iterator[None]:
    """Zero each parameter where its mask is 0 and hold those entries at zero while training inside the
    block (their gradients are masked, so Adam never moves them). A hook on the parameter, not torch's
    pruning re-parametrisation: attention layers read their weights directly."""
    with torch.no_grad():
        for param, keep in masks:
            param.mul_(keep)
    handles = [param.register_hook(lambda grad, keep=keep: grad * keep) for param, keep in masks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def fit(
    params: Iterable[nn.Parameter],
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    one_cycle: bool = False,
) -> None:
    """Minimise `batch_loss(indices)` over shuffled index batches of range(n) (seeded, so reproducible).

    `one_cycle`: the learning rate warms up to `lr` over the first 25 % of the steps and anneals (cosine) to
    lr/1000 (Smith's one-cycle policy, as in the CIFAR-10 speed-run recipes); the recipes that train a model
    from scratch use it to reach the same utility in half the epochs. Otherwise `lr` is constant (attackers'
    fine-tuning), and so is it in a run of at most 4 steps, too short for the schedule's warm-up.

    The global torch RNG is seeded too, so random augmentations inside `batch_loss` replay exactly.
    Adam uses torch's fused implementation: the same update in one kernel, a quarter less time per CLIP
    training step on a CPU core, where most of the update is the text tower's 3.2 M-entry token table.
    """
    params = [p for p in params if p.requires_grad]
    if epochs <= 0 or not params:
        return
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr, fused=True)
    steps = epochs * -(-n // batch_size)
    # OneCycleLR divides by its warm-up's length, pct_start · steps − 1: it needs more than 4 steps (the smoke
    # profile's 2 epochs on the attacker's 90 images are 4)
    one_cycle = one_cycle and steps > 4
    schedule = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25,
                                                    cycle_momentum=False, div_factor=25, final_div_factor=40)
                if one_cycle else None)
    if one_cycle and _epoch_hook.get() is not None:
        raise ValueError("a one-cycle schedule depends on the run's length: its epochs are not prefixes of a longer run")
    dtype, epoch_done = _autocast_dtype.get(), _epoch_hook.get() or (lambda epoch: None)
    autocast = torch.autocast(params[0].device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
    for epoch in range(epochs):
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            with autocast:
                loss = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if schedule is not None:
                schedule.step()
        epoch_done(epoch + 1)


def train_supervised(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int, lr: float = 1e-3,
                     params: Iterable[nn.Parameter] | None = None, batch_size: int = 64,
                     one_cycle: bool = False) -> nn.Module:
    """Cross-entropy training of a classifier on (x, y)."""
    model.train()
    fit(model.parameters() if params is None else params, lambda i: F.cross_entropy(model(x[i]), y[i]), len(y),
        epochs=epochs, seed=seed, lr=lr, batch_size=batch_size, one_cycle=one_cycle)
    return model.eval()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy over a batch of positive pairs (z1[i], z2[i])."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = len(z1)
    sim.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


@torch.no_grad()
def predict(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Apply `fn` to `x` in batches without gradients."""
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
