"""Model merging: the thief averages the stolen model's weights with those of its own model of the same kind
— the attacker's first from-scratch model (`ModelKindSpec.scratch`: the owner's recipe trained on the
attacker's data) —, hoping the average keeps the stolen model's utility and dilutes its watermark. The
strength is the stolen model's weight s in the average: every floating-point parameter and buffer (batch-norm
running statistics, an output transform) becomes s·w_stolen + (1−s)·w_own; integer buffers (batch norm's
step counter) are the stolen model's. No training: the thief needs only a model it already has."""
from __future__ import annotations

import torch
from torch import nn

from bench.context import Context
from bench.kinds.models import clone
from bench.protocols import MODEL_KINDS, AttackBase, WmbenchError
from bench.registry import register_attack


def merged(stolen: nn.Module, own: nn.Module, weight: float) -> nn.Module:
    """A copy of `stolen` with every floating-point entry of its state `weight`·stolen + (1 − weight)·own;
    raises WmbenchError unless both have the same entries of the same shapes."""
    copy = clone(stolen)
    state, other = copy.state_dict(), own.state_dict()
    if state.keys() != other.keys():
        differ = sorted(state.keys() ^ other.keys())
        raise WmbenchError(f"model_merging: the stolen model and the attacker's own model differ in architecture "
                           f"({len(differ)} entries in only one of them, e.g. {differ[0]})")
    for name, tensor in state.items():
        if tensor.shape != other[name].shape:
            raise WmbenchError(f"model_merging: '{name}' has shape {tuple(tensor.shape)} in the stolen model and "
                               f"{tuple(other[name].shape)} in the attacker's own model")
    with torch.no_grad():
        for name, tensor in state.items():  # the state's tensors share storage with the copy's parameters
            if tensor.is_floating_point():
                theirs = other[name].to(device=tensor.device, dtype=tensor.dtype)
                tensor.copy_(weight * tensor + (1 - weight) * theirs)
    return copy


@register_attack
class ModelMerging(AttackBase):
    name = "model_merging"
    family = "weight-space"
    model_kinds = MODEL_KINDS
    strengths = ("0.9", "0.75")  # the stolen model's weight in the average: 0.9 keeps the most of it
    version = "1"

    def run(self, ctx: Context, model: nn.Module, strength: str) -> nn.Module:
        own = ctx.kind.scratch(ctx.profile)
        if not own:
            reason = ("the profile's scratch_seeds is 0" if ctx.profile.scratch_seeds == 0 else
                      "this kind trains none from scratch here (a pretrained source has no recipe to train)")
            raise WmbenchError(f"model_merging needs the attacker's own {ctx.kind_name} model: {reason}")
        return merged(model, ctx.clean_model(own[0]), float(strength)).eval()
