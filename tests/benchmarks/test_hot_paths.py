"""pytest-benchmark benchmarks of the hot paths. CI runs each once as a test (`--benchmark-disable` in
pyproject), except the whole training recipes; `pytest tests/benchmarks --benchmark-enable` times them all."""
import dataclasses

import pytest
import torch

from bench.data import Split
from bench.kinds.contrastive import simclr_train
from bench.kinds.vlp import clip_train
from bench.nulls import key_randomization
from bench.registry import get_defense
from bench.report import write_leaderboard
from bench.runner import run_matrix
from bench.training import train_supervised


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


@pytest.mark.parametrize("kind", ["classifier", "encoder", "vlp"])
def test_one_training_step_of_each_base_model(benchmark, make_ctx, kind):
    """One optimiser step on one batch (the unit every recipe repeats)."""
    ctx = make_ctx(kind)
    batch = {"classifier": 64, "encoder": 128, "vlp": 128}[kind]
    small = dataclasses.replace(ctx, data=dataclasses.replace(
        ctx.data, owner=Split(ctx.data.owner.x[:batch], ctx.data.owner.y[:batch])))
    benchmark.pedantic(one_epoch(small), rounds=5, iterations=1)


def base_recipe(make_ctx, kind):
    ctx = make_ctx(kind)
    return ctx, lambda: ctx.kind.train_base(ctx, seed=0)


def watermark_recipe(make_ctx, defense_name):
    defense = get_defense(defense_name)
    ctx = dataclasses.replace(make_ctx(defense.model_kind), defense=defense_name)
    key = defense.make_key(ctx, secret=5)
    return ctx, lambda: defense.watermark(ctx, key)


RECIPES = {"classifier base": (base_recipe, "classifier", 0.9), "encoder base": (base_recipe, "encoder", 0.9),
           "CLIP base": (base_recipe, "vlp", 0.8), "null embedding": (watermark_recipe, "null_embedding", 0.9),
           "AWEncoder embedding": (watermark_recipe, "awencoder", 0.9)}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_wall_time_of_each_training_recipe(benchmark, make_ctx, recipe):
    """Each recipe of the default profile once, whole (its wall time is what the matrix pays per model), and
    the model it makes is still useful. Two minutes in all, so only when timing (`--benchmark-enable`): every
    recipe is trained, and its model tested, by the other tests anyway."""
    if benchmark.disabled:
        pytest.skip("the recipes' wall times are measured with --benchmark-enable")
    make, what, floor = RECIPES[recipe]
    ctx, train = make(make_ctx, what)
    model = benchmark.pedantic(train, rounds=1, iterations=1)
    assert ctx.utility(model) >= floor


def test_null_embedding_verification(benchmark, make_ctx):
    defense, ctx = get_defense("null_embedding"), make_ctx("classifier")
    key, model = defense.make_key(ctx, 1), ctx.base_model()
    verdict = benchmark(defense.verify, ctx, model, key)
    assert not verdict.detected


def test_leaderboard_build(benchmark, run_config):
    cfg = run_config(defenses=["null_embedding"], attacks=["none"])
    run_matrix(cfg, progress=False)
    loaded = benchmark(write_leaderboard, cfg.out)
    assert len(loaded.table) == 1


@pytest.mark.parametrize("defense_name", ["null_embedding", "vlpmarker", "awencoder", "awencoder_blackbox"])
def test_a_key_randomization_test_on_an_innocent_model(benchmark, make_ctx, defense_name):
    """The owner's key against its null keys on an independent model (sequential stopping ends it early; the
    null keys are made on first use and shared by every later suspect)."""
    defense = get_defense(defense_name)
    ctx = dataclasses.replace(make_ctx(defense.model_kind), defense=defense_name)
    key, suspect = defense.make_key(ctx, 1), ctx.base_model(seed=10_001)
    nulls = ctx.null_keys(defense, key)
    test = benchmark(key_randomization, defense, ctx, suspect, key, nulls, ctx.profile.alpha)
    assert test.p_value > 0.01


@pytest.mark.parametrize("defense_name", ["null_embedding", "vlpmarker"])
def test_scoring_all_null_keys_of_a_key(benchmark, make_ctx, defense_name):
    """The expensive case: a suspect whose key beats every null key needs all K of them scored."""
    defense = get_defense(defense_name)
    ctx = dataclasses.replace(make_ctx(defense.model_kind), defense=defense_name)
    key = defense.make_key(ctx, 1)
    nulls = list(ctx.null_keys(defense, key))
    scores = benchmark(defense.score_many, ctx, ctx.base_model(), nulls)
    assert len(scores) == len(nulls) == ctx.profile.null_keys


def test_making_an_awencoder_key(benchmark, make_ctx):
    """One key by the owner's procedure (PGD on 64 owner images): what each of AWEncoder's 99 null keys costs."""
    defense = get_defense("awencoder")
    ctx = make_ctx("encoder")
    key = benchmark.pedantic(defense.make_key, (ctx, 11), rounds=1, iterations=1)
    assert key.params["pgd_steps"] > 10 and float(key.tensors["delta"].abs().max()) <= defense.epsilon + 1e-6


def test_making_the_null_keys_of_a_vlpmarker_key(benchmark, make_ctx):
    defense = get_defense("vlpmarker")
    ctx = make_ctx("vlp")
    key = defense.make_key(ctx, 1)
    made = benchmark(lambda: [defense.null_key(ctx, key, j) for j in range(ctx.profile.null_keys)])
    assert len({float(k.tensors["W"][0, 0]) for k in made}) == len(made)


def test_verifying_a_served_model(benchmark, make_ctx):
    """A suspect served behind an input check: the wrapper's overhead on a verification."""
    from bench.registry import get_attack

    defense, ctx = get_defense("null_embedding"), make_ctx("classifier")
    key = defense.make_key(ctx, 1)
    filtered = get_attack("input_filter").run(ctx, ctx.base_model(), "clamp")
    verdict = benchmark(defense.verify, ctx, filtered, key)
    assert not verdict.detected


@pytest.mark.parametrize("strength", ["cse3", "permute"])
def test_an_embedding_resellers_transform(benchmark, make_ctx, strength):
    """The attack's inner loop: the reseller's queries and its fitted post-processing step."""
    from bench.registry import get_attack

    ctx = make_ctx("vlp")
    service = ctx.base_model()
    served = benchmark(get_attack("embedding_transform").run, ctx, service, strength)
    assert served.spec["kwargs"]["post"][0]["name"] in ("project_out", "permute")


def test_a_null_embedding_key_test_on_its_marked_model(benchmark, make_marked):
    """The common cell: the owner's key beats every null key, whose first 16 stamped images go through in one
    forward pass and prove each one short of the key's statistic."""
    defense, ctx, key, marked = make_marked("null_embedding", "classifier", 5)
    nulls = ctx.null_keys(defense, key)
    test = benchmark(key_randomization, defense, ctx, marked, key, nulls, ctx.profile.alpha)
    assert test.smallest


@pytest.mark.parametrize("strength", ["jpeg50", "noise0.1"])
def test_verifying_a_model_behind_an_input_transform(benchmark, make_ctx, strength):
    """JPEG and additive noise run on every verification query: their overhead on a verification."""
    from bench.registry import get_attack

    defense, ctx = get_defense("null_embedding"), make_ctx("classifier")
    served = get_attack("input_transform").run(ctx, ctx.base_model(), strength)
    verdict = benchmark(defense.verify, ctx, served, defense.make_key(ctx, 1))
    assert not verdict.detected
