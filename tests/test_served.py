"""Suspects of any shape: an attack may return its victim behind pre- or post-processing, and the harness
stores, rebuilds, verifies and measures it like any model."""
import dataclasses

import pytest
import torch

from bench import registry
from bench.cache import ArtifactCache, weights_digest
from bench.served import Served, get_transform, serve


def test_the_clamp_filter_passes_in_range_inputs_and_removes_out_of_range_values(make_ctx):
    model = make_ctx("classifier", 0).base_model()
    filtered = registry.get_attack("input_filter").run(make_ctx("classifier", 0), model, "clamp")
    x = torch.rand(8, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(filtered(x), model(x))  # what a normal user sends is answered as before
        wild = x.clone()
        wild[:, :, :3, :3] = 1000.0
        assert torch.equal(filtered(wild), model(wild.clamp(0, 1)))  # out-of-range values never reach the model
        assert not torch.allclose(filtered(wild), model(wild))
    assert weights_digest(filtered) != weights_digest(model)  # a different suspect, with its own recipe


def test_input_transforms_do_what_they_say():
    x = torch.rand(2, 1, 16, 16)
    q = get_transform("quantize").build(levels=256)(x)
    assert len(torch.unique(torch.round(q * 255))) <= 256 and torch.allclose(q, torch.round(x * 255) / 255)
    constant = torch.full((1, 1, 8, 8), 0.3)
    assert torch.allclose(get_transform("gaussian_blur").build(sigma=1.0)(constant), constant)  # blur keeps flat
    spike = torch.zeros(1, 1, 9, 9)
    spike[0, 0, 4, 4] = 1.0
    blurred = get_transform("gaussian_blur").build(sigma=1.0)(spike)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5) and blurred[0, 0, 4, 4] < 0.5


def test_a_served_model_is_cached_and_rebuilt_from_its_recipe(make_ctx, tmp_path):
    ctx = dataclasses.replace(make_ctx("classifier", 0), cache=ArtifactCache(tmp_path))
    attack = registry.get_attack("input_transform")
    first = ctx.attacked(attack, ctx.base_model(), "blur1").model
    again = dataclasses.replace(ctx, cache=ArtifactCache(tmp_path)).attacked(attack, ctx.base_model(), "blur1").model
    assert isinstance(again, Served) and again.spec == first.spec
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(first(x), again(x))
    twice = serve(first, pre=[{"name": "clamp"}])  # a served model served again keeps its own steps inside
    assert [s["name"] for s in twice.spec["kwargs"]["pre"]] == ["clamp", "gaussian_blur"]


def test_the_clamp_filter_takes_null_embeddings_mark_at_no_cost(make_marked):
    """Null embedding's verification queries carry ±λ pixels; behind an input check they are ordinary
    images, so the mark no longer verifies while the model's answers to normal inputs are unchanged."""
    defense, ctx, key, marked = make_marked("null_embedding", "classifier", 1234)
    assert defense.verify(ctx, marked, key).detected
    filtered = registry.get_attack("input_filter").run(ctx, marked, "clamp")
    assert not defense.verify(ctx, filtered, key).detected
    assert ctx.utility(filtered) == ctx.utility(marked)


def test_a_served_vlp_service_answers_image_and_text_queries(make_ctx):
    ctx = make_ctx("vlp", 0)
    service = ctx.base_model()
    blurred = serve(service, pre=[{"name": "gaussian_blur", "params": {"sigma": 0.5}}])
    x = torch.rand(3, ctx.data.channels, 16, 16)
    with torch.no_grad():
        assert torch.equal(blurred.encode_text(["a photo of a 1"]), service.encode_text(["a photo of a 1"]))
        assert blurred.encode_image(x).shape == service.encode_image(x).shape
        assert not torch.equal(blurred.encode_image(x), service.encode_image(x))
    assert 0.0 < ctx.utility(blurred) <= 1.0
