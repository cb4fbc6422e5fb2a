"""The baseline an encoder's utility is read against (the target: a SimCLR encoder's linear probe at
least 5 points above a random-init encoder's): the linear-probe accuracy of untrained encoders of a profile's
architecture, one per seed, on that profile's data. Run: python tests/benchmarks/random_encoder_probe.py
--profile standard --seeds 3 (the trained encoders' probe is the leaderboard's `utility_clean` of AWEncoder)."""
from __future__ import annotations

import argparse

import torch

from bench.cache import ArtifactCache
from bench.config import get_profile
from bench.context import Context
from bench.datasets import load_dataset


def random_init_probe(ctx: Context) -> float:
    """The linear-probe accuracy of an untrained encoder of the profile's architecture, seeded by the context."""
    return ctx.utility(ctx.untrained_model())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="standard")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    profile = get_profile(args.profile)
    data = load_dataset(profile.dataset, profile.image_size, profile.train_limit)
    scores = []
    for seed in range(args.seeds):
        scores.append(random_init_probe(Context(data, profile, seed, "encoder", torch.device("cpu"), ArtifactCache())))
        print(f"seed {seed}: random-init {profile.encoder_arch} linear probe {scores[-1]:.3f}", flush=True)
    print(f"mean {sum(scores) / len(scores):.3f} over {len(scores)} seeds ({args.profile}: {profile.dataset}, "
          f"{len(data.owner)} probe-training images, {len(data.test)} test images)")


if __name__ == "__main__":
    main()
