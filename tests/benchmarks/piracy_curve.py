"""Piracy as a curve: the pirate's data share against null embedding's λ. Per λ (the `null_embedding`
configurations), share of the owner's training-set size and owner seed, a pirate embeds its own mark for 12
epochs (the matrix's `piracy` attack at strength `12@P%`: its own key, its own secret, P % of the owner's size drawn
from data the owner never used) into three models: the owner's marked model, the owner's clean model, and a model
the pirate trained itself (the attacker's own from-scratch model, `KindBase.scratch`). The pirate's mark
"verifies" where its key-randomization test gives p ≤ α against K null keys made for the model it held (the
matrix's reading). The script prints, per λ and model, the seeds verified at each share and the smallest share
verifying in every seed. Marked and clean models come from the run's artifact cache ($WMBENCH_CACHE; a
`make bench` leaves them there), pirated ones go to it. Run, e.g.:

    python tests/benchmarks/piracy_curve.py --seeds 10 --shares 1,5,10,25,50"""
from __future__ import annotations

import argparse
import time

import torch
from threadpoolctl import threadpool_limits

from bench.config import RunConfig
from bench.kinds.base import Clean
from bench.nulls import key_randomization
from bench.portable import pin_kernels
from bench.registry import get_attack, get_defense
from bench.runner import workbench

CONFIGURATIONS = ("null_embedding", "null_embedding_lam100", "null_embedding_lam1000")
HOSTS = ("marked", "clean", "own")  # the model the pirate embeds its mark into
EPOCHS = 12


def curve(defense_name: str, seeds: int, shares: list[int], profile: str = "default",
          cache: str | None = None) -> dict[str, dict[int, int]]:
    """Per host model and share (percent), the number of owner seeds in which the pirate's mark verifies."""
    cfg = RunConfig(defenses=[defense_name], attacks=["piracy"], seeds=seeds, workers=1, portable=True,
                    profile=profile, cache=cache)
    wb, defense, piracy = workbench(cfg), get_defense(defense_name), get_attack("piracy")
    verified = {host: dict.fromkeys(shares, 0) for host in HOSTS}
    for seed in range(seeds):
        ctx = wb.context(defense.model_kind, seed, defense_name)
        marked, key = wb.marked(defense, ctx)
        own = ctx.kind.scratch(ctx.profile)
        hosts = {"marked": marked, "clean": ctx.base_model(),
                 "own": ctx.clean_model(own[seed % len(own)]) if own else None}
        for host, model in hosts.items():
            if model is None:
                continue
            for share in shares:
                outcome = ctx.attacked(piracy, model, f"{EPOCHS}@{share}%")
                pirate = outcome.pirate_key
                test = key_randomization(defense, ctx, outcome.model, pirate,
                                         ctx.null_keys(defense, pirate, model, avoid=key), cfg.level)
                verified[host][share] += test.p_value <= cfg.level
    return verified


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--shares", default="1,5,10,25,50", help="percent of the owner's training-set size")
    parser.add_argument("--defenses", default=",".join(CONFIGURATIONS))
    parser.add_argument("--profile", default="default")
    args = parser.parse_args()
    shares = sorted(int(s) for s in args.shares.split(","))
    pin_kernels()
    torch.set_num_threads(1)
    header = "| configuration | λ | pirate's mark in | " + " | ".join(f"{s} %" for s in shares) + " | smallest share, every seed |"
    print(header, "|" + "---|" * (header.count("|") - 1), sep="\n")
    with threadpool_limits(1):
        for name in args.defenses.split(","):
            start = time.perf_counter()
            verified = curve(name, args.seeds, shares, args.profile)
            for host in HOSTS:
                counts = verified[host]
                smallest = next((f"{s} %" for s in shares if counts[s] == args.seeds), "none tried")
                print(f"| {name} | {get_defense(name).lam:.3g} | {host} | "
                      + " | ".join(f"{counts[s]}/{args.seeds}" for s in shares) + f" | {smallest} |")
            print(f"<!-- {name}: {time.perf_counter() - start:.0f} s -->")


if __name__ == "__main__":
    main()
