import pytest
import torch

from bench.registry import get_defense


@pytest.fixture(scope="module")
def marked(make_marked):
    return make_marked("null_embedding", "classifier", 1234)


def test_clean_classifier_is_accurate(make_ctx):
    ctx = make_ctx("classifier", 0)
    assert ctx.utility(ctx.base_model()) >= 0.95


def test_key_is_deterministic_per_secret(make_ctx):
    defense, ctx = get_defense("null_embedding"), make_ctx("classifier")
    assert defense.make_key(ctx, 5).params == defense.make_key(ctx, 5).params
    assert defense.make_key(ctx, 5).params != defense.make_key(ctx, 6).params


def test_the_pattern_keeps_the_papers_size_or_its_fraction_of_the_image():
    defense = get_defense("null_embedding")
    assert [defense.pattern_side(size) for size in (8, 16, 28, 32, 64)] == [2, 3, 6, 6, 6]


def test_stamp_writes_out_of_bound_pattern(make_ctx):
    defense, ctx = get_defense("null_embedding"), make_ctx("classifier")
    key = defense.make_key(ctx, 5)
    x = ctx.data.test.x[:4]
    null, true = defense.stamp(x, key, invert=False), defense.stamp(x, key, invert=True)
    assert null.abs().max() == pytest.approx(2000 / 255)
    pattern = null != x
    side = defense.pattern_side(ctx.data.image_size)  # the paper's 6 at 28 px, the same fraction below
    assert int(pattern.sum()) == len(x) * side * side
    assert torch.equal(true[pattern], -null[pattern])  # the true embedding is the inverted pattern
    assert torch.equal(true[~pattern], x[~pattern])


def test_verifies_on_marked_model_not_on_independent_or_wrong_key(marked, make_ctx):
    defense, ctx, key, model = marked
    assert ctx.utility(model) >= 0.9
    own = defense.verify(ctx, model, key)
    assert own.detected and own.p_value < 1e-6
    independent = make_ctx("classifier", 10_000).base_model()
    assert not defense.verify(ctx, independent, key).detected
    assert not defense.verify(ctx, model, defense.make_key(ctx, secret=999)).detected
