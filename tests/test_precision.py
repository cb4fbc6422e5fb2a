"""Mixed precision: training loops run under bfloat16 autocast only where asked, weights stay float32."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from bench.config import get_profile
from bench.datasets.digits import load_digits
from bench.kinds.models import create_model
from bench.runner import training_dtype
from bench.training import fit, mixed_precision


def train_and_watch(dtype):
    torch.manual_seed(0)
    model = create_model("small_cnn", in_channels=1, num_classes=10, width=8)
    seen = []
    model.head.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    owner = load_digits().owner
    x, y = owner.x[:256], owner.y[:256]
    with mixed_precision(dtype):
        fit(model.parameters(), lambda i: F.cross_entropy(model(x[i]), y[i]), 256, epochs=25, seed=0, lr=3e-3)
    with torch.no_grad():
        loss = float(F.cross_entropy(model(x), y))
    return model, set(seen[:-1]), seen[-1], loss


def test_bfloat16_autocast_trains_inside_the_block_only():
    model, during, after, loss = train_and_watch(torch.bfloat16)
    assert during == {torch.bfloat16}  # the training forward passes ran in bfloat16 …
    assert after == torch.float32  # … evaluation after the block in float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert loss < 0.5  # it still learns the digits (chance is ln 10 ≈ 2.3)


def test_full_precision_by_default():
    _, during, _, _ = train_and_watch(None)
    assert during == {torch.float32}


def test_only_cuda_runs_of_a_mixed_precision_profile_use_bfloat16():
    assert get_profile("gpu").mixed_precision and not get_profile("default").mixed_precision
    assert training_dtype(get_profile("gpu"), torch.device("cpu")) is None
    assert training_dtype(get_profile("default"), torch.device("cpu")) is None


def tiny_digits():
    """The digits cut to a few images per split: what the bfloat16 test trains on (code paths, not science)."""
    from bench.data import stratified_subset

    d = load_digits(get_profile("default").image_size)
    cut = lambda split, n: stratified_subset(split, n, seed=0)  # noqa: E731
    return dataclasses.replace(d, owner=cut(d.owner, 120), independent=cut(d.independent, 60),
                               test=cut(d.test, 60), attacker=cut(d.independent, 30))


@pytest.mark.parametrize("defense_name", ["null_embedding", "awencoder", "vlpmarker"])
def test_every_method_trains_under_bfloat16_autocast(tmp_path, defense_name):
    """What the `gpu` profile does on CUDA, tried on CPU (whose autocast also runs bfloat16): every base
    recipe, watermark and attack of a defense's kind trains without a dtype error and leaves float32 models
    with finite outputs. Budgets are cut to an epoch, the data to a few images per split, each attack runs at
    its strongest setting: this checks the code paths, not the science."""
    from bench import registry
    from bench.cache import ArtifactCache
    from bench.context import Context

    tiny = dataclasses.replace(get_profile("default"), classifier_epochs=1, encoder_epochs=1, clip_epochs=1,
                               embed_epochs=1, attack_epochs=1, extraction_epochs=1, cleanse_rounds=1)
    data = tiny_digits()
    x = data.test.x[:8]
    defense = registry.get_defense(defense_name)
    ctx = Context(data, tiny, 0, defense.model_kind, torch.device("cpu"), ArtifactCache(tmp_path), defense_name)
    tried = []
    with mixed_precision(torch.bfloat16):
        key = defense.make_key(ctx, 1)
        marked = defense.watermark(ctx, key)
        for attack in map(registry.get_attack, registry.attack_names()):
            if not registry.compatible(defense, attack):
                continue
            out = attack.run(ctx, marked, registry.strengths_for(attack, defense.model_kind)[-1])
            model = getattr(out, "model", out)
            assert all(p.dtype == torch.float32 for p in model.parameters()), attack.name
            with torch.no_grad():
                y = model.encode_image(x) if hasattr(model, "encode_image") else model(x)
            assert y.dtype == torch.float32 and torch.isfinite(y).all(), attack.name
            defense.verify(ctx, model, key)
            tried.append(attack.name)
    assert len(tried) >= 8  # most of the suite's attacks apply to every kind
