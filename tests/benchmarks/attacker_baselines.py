"""The attacker's own models, the baseline a theft must beat (docs/statistics.md, the removal rule): per model
kind and attacker data share, the utility of the owner's recipe trained from scratch on the attacker's data
(`KindBase.scratch`: the profile's `scratch_seeds` seeds). For encoders also what pretraining buys at all: the
linear probe of an untrained encoder and of the owner's trained one, with every labelled owner image (the
kind's utility) and with 10 labels per class. Models go to the artifact cache ($WMBENCH_CACHE). Run, e.g.:

    python tests/benchmarks/attacker_baselines.py --profile default --shares 0.01,0.05,0.1,0.25,0.5"""
from __future__ import annotations

import argparse
import dataclasses
import time
from statistics import mean

import torch
from threadpoolctl import threadpool_limits
from torch import nn

from bench.cache import ArtifactCache
from bench.config import get_profile
from bench.context import Context
from bench.datasets import load_dataset
from bench.kinds.encoder import LABELS_PER_CLASS


def probes(ctx: Context, encoder: nn.Module) -> tuple[float, float]:
    """Linear-probe accuracy of `encoder` on the test split, trained on every labelled owner image (the kind's
    utility) and on `LABELS_PER_CLASS` of them per class (its low-label utility)."""
    return ctx.utility(encoder), ctx.low_label_utility(encoder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--shares", default="0.01,0.05,0.1,0.25,0.5")
    parser.add_argument("--kinds", default="classifier,encoder,vlp")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = get_profile(args.profile)
    data = load_dataset(base.dataset, base.image_size, base.train_limit)
    cache, kinds = ArtifactCache(), args.kinds.split(",")
    with threadpool_limits(1):
        if "encoder" in kinds:
            ctx = Context(data, base, 0, "encoder", torch.device("cpu"), cache)
            for name, make in (("untrained", ctx.untrained_model), ("owner's trained", ctx.base_model)):
                scores = [probes(ctx, make(seed)) for seed in range(base.scratch_seeds)]
                print(f"encoder, {name} (seeds 0-{base.scratch_seeds - 1}): probe "
                      f"{mean(s[0] for s in scores):.3f} with {len(data.owner)} labels, "
                      f"{mean(s[1] for s in scores):.3f} with {LABELS_PER_CLASS} per class", flush=True)
        for share in map(float, args.shares.split(",")):
            profile = dataclasses.replace(base, attacker_data_share=share)
            narrowed = data.with_attacker_share(share)
            for kind in kinds:
                start = time.perf_counter()
                ctx = Context(narrowed, profile, 0, kind, torch.device("cpu"), cache)
                models = [ctx.clean_model(c) for c in ctx.kind.scratch(profile)]
                scores = [ctx.utility(m) for m in models]
                low = (f", {mean(probes(ctx, m)[1] for m in models):.3f} with {LABELS_PER_CLASS} labels per class"
                       if kind == "encoder" else "")
                print(f"share {share:.2f} ({len(narrowed.attacker)} images), {kind}: "
                      f"{', '.join(f'{s:.3f}' for s in scores)}; mean {mean(scores):.3f}{low} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
