"""Whether AWEncoder's owner key stands out on its own marked encoder: per seed, the owner's white-box gain and
black-box flip rate against those of null keys made by the same procedure on the owner's clean encoder (the
key-randomization test's null, docs/statistics.md), and the marked encoder's utility. Models and keys go to the
artifact cache ($WMBENCH_CACHE; the portable one, so a `make bench` or `make standard` cache is reused). Run, e.g.:

    python tests/benchmarks/awencoder_keys.py --seeds 0,1,2,3,4 --null-keys 99 [--profile standard]
        [--support 0.25] [--epsilon 0.2] [--encoder-epochs 48] [--score-images 128,2000]"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from bench import registry
from bench.config import RunConfig
from bench.portable import pin_kernels
from bench.runner import owner_secret, workbench
from defenses import awencoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--null-keys", type=int, default=99)
    parser.add_argument("--support", type=float, help="δ's support fraction (default: the defense's)")
    parser.add_argument("--epsilon", type=float, help="δ's bound ‖δ‖∞ (default: the defense's)")
    parser.add_argument("--profile", default="default", help="the profile whose data and budgets to use")
    parser.add_argument("--score-images", default=str(awencoder.SCORE_IMAGES),
                        help="held-out images each key is scored on, one or more counts (default: the defenses')")
    parser.add_argument("--encoder-epochs", type=int, help="the clean encoder's SimCLR epochs (default: the profile's)")
    args = parser.parse_args()
    pin_kernels()
    torch.set_num_threads(1)
    white, black = registry.get_defense("awencoder"), registry.get_defense("awencoder_blackbox")
    if args.support is not None:
        type(white).support_fraction = args.support
    if args.epsilon is not None:
        type(white).epsilon = args.epsilon
    wb = workbench(RunConfig(profile=args.profile, workers=1, portable=True))
    if args.encoder_epochs is not None:
        wb.profile = dataclasses.replace(wb.profile, encoder_epochs=args.encoder_epochs)
    with threadpool_limits(1):
        for seed in map(int, args.seeds.split(",")):
            start = time.perf_counter()
            ctx = wb.context("encoder", seed, "awencoder")
            key = white.make_key(ctx, owner_secret(seed))
            marked = white.watermark(ctx, key)
            nulls = [white.make_key(ctx, 10_000 + j) for j in range(args.null_keys)]
            for images, defense in itertools.product(map(int, args.score_images.split(",")), (white, black)):
                awencoder.SCORE_IMAGES = images  # what score_many reads
                own = defense.score_many(ctx, marked, [key])[0]
                null = np.array(defense.score_many(ctx, marked, nulls))
                print(f"seed {seed} {defense.name} on {images} images: owner {own:.3f}, null keys max "
                      f"{null.max():.3f} mean {null.mean():.3f}, {int((null >= own).sum())} of {len(null)} reach "
                      f"the owner", flush=True)
            print(f"seed {seed}: utility {ctx.utility(marked):.3f} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
