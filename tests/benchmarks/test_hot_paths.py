"""pytest-benchmark benchmarks of the hot paths. CI runs each once as a test (`--benchmark-disable` in
pyproject); `pytest tests/benchmarks --benchmark-enable` times them."""
import pytest
import torch

from bench.contrastive import simclr_train
from bench.registry import get_defense
from bench.report import write_leaderboard
from bench.runner import run_matrix
from bench.training import train_supervised
from bench.vlp import clip_train


def one_epoch(ctx):
    torch.manual_seed(0)
    model = ctx.kind.new(ctx)
    owner = ctx.data.owner
    return {
        "classifier": lambda: train_supervised(model, owner.x, owner.y, epochs=1, seed=0),
        "encoder": lambda: simclr_train(model, owner.x, epochs=1, seed=0),
        "vlp": lambda: clip_train(model, owner.x, owner.y, ctx.data.class_names, epochs=1, seed=0),
    }[ctx.kind_name]


@pytest.mark.parametrize("kind", ["classifier", "encoder", "vlp"])
def test_one_training_epoch_of_each_base_model(benchmark, make_ctx, kind):
    benchmark.pedantic(one_epoch(make_ctx(kind)), rounds=3, iterations=1)


def test_null_embedding_verification(benchmark, make_ctx):
    defense, ctx = get_defense("null_embedding"), make_ctx("classifier")
    key, model = defense.make_key(ctx, 1), ctx.base_model()
    verdict = benchmark(defense.verify, ctx, model, key)
    assert not verdict.detected


def test_leaderboard_build(benchmark, run_config):
    cfg = run_config(defenses=["null_embedding"], attacks=["none"])
    run_matrix(cfg, progress=False)
    table = benchmark(write_leaderboard, cfg.out)
    assert len(table) == 1
