"""How often Neural Cleanse flags a planted backdoor, and how often it flags a clean model (docs/methods.md
reports the rates). Per seed: a classifier trained by the default clean recipe on the owner's digits with a
4×4 white patch → label 3 planted in `--poison` of them, and a clean classifier of the same seed; both go
through Neural Cleanse's detection. Run: python tests/benchmarks/neural_cleanse_rates.py --seeds 10
(`--dataset fashion_mnist --train-limit 6000`: on real data, a stratified subset of its training set;
`--arch resnet_cnn`: another classifier architecture; `--patch 2`: a 2×2 square, the paper's 4×4-on-28×28
fraction of the default's 16×16 image)."""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from attacks.neural_cleanse import NeuralCleanse
from bench.cache import ArtifactCache
from bench.config import get_profile
from bench.context import Context
from bench.datasets import load_dataset

TARGET = 3


def poisoned_training_set(ctx: Context, fraction: float, patch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    owner = ctx.data.owner
    x, y = owner.x.clone(), owner.y.clone()
    n = int(len(x) * fraction)
    x[:n, :, -2 - patch:-2, -2 - patch:-2] = 1.0
    y[:n] = TARGET
    return x, y


def backdoored_model(ctx: Context, fraction: float, seed: int, patch: int = 4) -> torch.nn.Module:
    """The clean recipe (bench.kinds) on the poisoned set, cached."""
    x, y = poisoned_training_set(ctx, fraction, patch)
    return ctx.cache.model({"test": "planted_backdoor", "fraction": fraction, "seed": seed,
                            **({"patch": patch} if patch != 4 else {}),
                            "profile": ctx.profile.describe(for_models=True)},
                           lambda: ctx.kind.train_on(ctx, x, y, seed))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--poison", type=float, default=0.10)
    parser.add_argument("--cache", default="/tmp/wmbench-nc-rates")
    parser.add_argument("--dataset", default="digits", help="a dataset spec of bench.datasets")
    parser.add_argument("--train-limit", type=int, default=0, help="training images of datasets with a test set")
    parser.add_argument("--patch", type=int, default=4, help="side of the white square planted (pixels)")
    parser.add_argument("--arch", default="small_cnn", help="a registered classifier architecture")
    args = parser.parse_args()
    profile = dataclasses.replace(get_profile("default"), dataset=args.dataset, train_limit=args.train_limit,
                                  classifier_arch=args.arch)
    data = load_dataset(args.dataset, profile.image_size, args.train_limit)
    torch.set_num_threads(1)
    cache, nc = ArtifactCache(args.cache), NeuralCleanse()
    hits = clean_flags = smallest = 0
    for seed in range(args.seeds):
        ctx = Context(data, profile, seed, "classifier", torch.device("cpu"), cache)
        start = time.perf_counter()
        found = nc.detect(ctx, backdoored_model(ctx, args.poison, seed, args.patch)).params
        clean = nc.detect(ctx, ctx.base_model(seed)).params
        hits += TARGET in found["flagged"]
        smallest += min(range(len(found["mask_l1"])), key=found["mask_l1"].__getitem__) == TARGET
        clean_flags += bool(clean["flagged"])
        print(f"seed {seed}: backdoored flagged {found['flagged']} (index of {TARGET}: "
              f"{found['anomaly_index'][TARGET]:.2f}, its trigger's success {found['trigger_success'][TARGET]:.2f}); "
              f"clean flagged {clean['flagged']} (max index {max(clean['anomaly_index']):.2f}) "
              f"[{time.perf_counter() - start:.0f} s]", flush=True)
    print(f"planted {args.patch}×{args.patch} backdoor at {args.poison:.0%} flagged at its target in {hits}/{args.seeds} seeds; "
          f"clean models flagged in {clean_flags}/{args.seeds}; the planted label's reversed mask is the smallest "
          f"in {smallest}/{args.seeds}")


if __name__ == "__main__":
    main()
