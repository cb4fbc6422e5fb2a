import numpy as np
import pytest
import torch

import defenses.awencoder as aw
from bench.registry import get_defense


@pytest.fixture(scope="module")
def setup(make_marked):
    return make_marked("awencoder", "encoder", 11)


def test_clean_encoder_beats_random_init_and_passes_the_floor(make_ctx):
    ctx = make_ctx("encoder", 0)
    torch.manual_seed(0)
    random_init = ctx.kind.new(ctx)
    clean = ctx.utility(ctx.base_model())
    assert clean >= 0.90 and clean > ctx.utility(random_init)


def test_delta_stays_within_epsilon(setup):
    defense, _, key, _ = setup
    assert key.tensors["delta"].abs().max() <= defense.epsilon + 1e-7


def test_marked_encoder_keeps_utility_and_verifies_white_box(setup, make_ctx):
    defense, ctx, key, marked = setup
    assert ctx.utility(marked) >= ctx.utility(ctx.base_model()) - 0.03
    own = defense.verify(ctx, marked, key)
    assert own.detected and own.p_value < 0.01
    assert not defense.verify(ctx, ctx.base_model(), key).detected
    assert not defense.verify(ctx, make_ctx("encoder", 10_000).base_model(), key).detected
    assert not defense.verify(ctx, marked, defense.make_key(ctx, secret=12)).detected


def test_black_box_verifies_marked_not_clean(setup):
    _, ctx, key, marked = setup
    blackbox = get_defense("awencoder_blackbox")
    assert blackbox.verify(ctx, marked, key).detected
    assert not blackbox.verify(ctx, ctx.base_model(), key).detected


def test_black_box_decides_from_predicted_labels_only(setup, monkeypatch):
    """The verdict depends on nothing but the deployed model's labels for x and x+δ."""
    _, ctx, key, marked = setup
    blackbox = get_defense("awencoder_blackbox")

    def fake_deploy(ctx_, encoder):
        def labels(images):  # answers 1 on marked images of the suspect, else 0
            is_marked = bool((images - ctx_.data.test.x).abs().amax() > 0) if images.shape == ctx_.data.test.x.shape else False
            return np.full(len(images), int(is_marked and encoder is marked))
        return labels, labels(ctx_.data.test.x)

    monkeypatch.setattr(aw, "deploy", fake_deploy)
    verdict = blackbox.verify(ctx, marked, key)
    assert verdict.detected and verdict.statistic == 1.0
    assert not blackbox.verify(ctx, ctx.base_model(), key).detected


def test_verify_command_accepts_the_black_box_variants_keys(setup, tmp_path, cache_dir):
    """The black-box variant shares the white-box scheme's keys (`scheme`), so an auditor can use them."""
    from bench.cache import save_model_file
    from bench.cli import main

    _, ctx, key, marked = setup
    key.save(tmp_path / "key.safetensors")
    save_model_file(marked, tmp_path / "marked.safetensors")
    assert main(["verify", "--defense", "awencoder_blackbox", "--key", str(tmp_path / "key.safetensors"),
                 "--model", str(tmp_path / "marked.safetensors"), "--device", "cpu", "--cache", cache_dir]) == 0
