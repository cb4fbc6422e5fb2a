"""What longer training buys the models under the marks, and what it costs (docs/performance.md, "What the
budget buys"): per model kind and epoch budget of a profile's from-scratch recipe, the clean model's utility
(for encoders also the low-label probe, 10 labels per class, and an untrained encoder's, initialised with the
same seed) and the seconds one model takes on one thread, kernels pinned as in portable mode. Models go to the
artifact cache ($WMBENCH_CACHE; the portable one, shared with awencoder_keys.py). Run, e.g.:

    python tests/benchmarks/model_epochs.py --profile standard --kind encoder --epochs 12,24,48 --seeds 0,1
        [--width 32] [--train-limit 36000]"""
from __future__ import annotations

import argparse
import dataclasses
import time
from statistics import mean

import torch
from threadpoolctl import threadpool_limits

from bench.config import RunConfig
from bench.context import Context
from bench.datasets import load_dataset
from bench.portable import pin_kernels
from bench.runner import workbench

EPOCH_FIELDS = {"classifier": "classifier_epochs", "encoder": "encoder_epochs", "vlp": "clip_epochs"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="standard")
    parser.add_argument("--kind", default="classifier", choices=sorted(EPOCH_FIELDS))
    parser.add_argument("--epochs", default="15,30", help="epoch budgets of the kind's clean recipe")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--train-limit", type=int, help="training images of a dataset with a test set (default: "
                                                          "the profile's train_limit)")
    parser.add_argument("--width", type=int, help="the CNNs' width (default: the profile's)")
    args = parser.parse_args()
    pin_kernels()
    torch.set_num_threads(1)
    wb = workbench(RunConfig(profile=args.profile, workers=1, portable=True))  # the portable cache of a run
    base, data, cache = wb.profile, wb.data, wb.cache
    if args.width is not None:
        base = dataclasses.replace(base, width=args.width)
    if args.train_limit is not None:
        base = dataclasses.replace(base, train_limit=args.train_limit)
        data = load_dataset(base.dataset, base.image_size, base.train_limit)
    seeds = [int(s) for s in args.seeds.split(",")]
    with threadpool_limits(1):
        if args.kind == "encoder":
            ctx = Context(data, base, 0, "encoder", torch.device("cpu"), cache)
            untrained = [ctx.low_label_utility(ctx.untrained_model(seed)) for seed in seeds]
            print(f"encoder untrained: low-label {mean(untrained):.3f} "
                  f"({', '.join(f'{u:.3f}' for u in untrained)})", flush=True)
        for epochs in map(int, args.epochs.split(",")):
            profile = dataclasses.replace(base, **{EPOCH_FIELDS[args.kind]: epochs})
            rows = []
            for seed in seeds:
                ctx = Context(data, profile, seed, args.kind, torch.device("cpu"), cache)
                start = time.perf_counter()
                model = ctx.base_model()
                seconds = time.perf_counter() - start
                low = ctx.low_label_utility(model) if args.kind == "encoder" else None
                rows.append((ctx.utility(model), low, seconds))
                print(f"{args.kind} {epochs} epochs seed {seed}: utility {rows[-1][0]:.3f}"
                      + (f", low-label {low:.3f}" if low is not None else "") + f" ({seconds:.0f} s)", flush=True)
            low_mean = (f", low-label {mean(r[1] for r in rows):.3f}" if args.kind == "encoder" else "")
            print(f"== {args.kind} {epochs} epochs: utility {mean(r[0] for r in rows):.3f}{low_mean}, "
                  f"{mean(r[2] for r in rows):.0f} s a model ({len(data.owner)} training images)", flush=True)


if __name__ == "__main__":
    main()
