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


def _whole_independent_split(ctx):
    """`ctx` with the attacker holding the whole independent split (449 digits: 225 held out to set the
    threshold, enough for a 1 % share)."""
    return dataclasses.replace(ctx, data=dataclasses.replace(ctx.data, attacker=ctx.data.independent))


def test_the_ood_filter_rejects_about_its_share_of_normal_queries(make_ctx):
    ctx = _whole_independent_split(make_ctx("classifier", 0))
    attack, model = registry.get_attack("input_filter"), ctx.base_model()
    assert attack.strengths == ("clamp", "ood1", "ood5")
    rates = {}
    for strength, share in (("ood1", 0.01), ("ood5", 0.05)):
        outcome = attack.run(ctx, model, strength)
        report = outcome.report
        assert share - 0.01 <= report["rejected_normal"] <= share  # the held-out half: the conformal rank
        assert abs(report["rejected_test"] - share) <= 0.025, report  # images the fit never saw
        with torch.no_grad():
            measured = outcome.model.pre[0].rejects(ctx.data.test.x).float().mean().item()
        assert measured == report["rejected_test"]
        rates[strength] = measured
    assert rates["ood1"] < rates["ood5"]


def test_the_ood_filter_answers_out_of_range_and_unfamiliar_queries_with_the_mean_image(make_ctx):
    from bench.data import procedural_images

    ctx = make_ctx("classifier", 0)
    model = ctx.base_model()
    filtered = registry.get_attack("input_filter").run(ctx, model, "ood1").model
    check = filtered.pre[0]
    mean_image = check.mean.view(1, *ctx.data.test.x.shape[1:])
    null = registry.get_defense("null_embedding")
    x = ctx.data.test.x[:64]
    stamped = null.stamp(x, null.make_key(ctx, secret=1234), invert=False)  # ±7.8 on a 3×3 patch
    unfamiliar = procedural_images(64, ctx.data.image_size, ctx.data.channels, seed=5)  # VLPMarker's trigger source
    tiny_excursion = x.clone()
    tiny_excursion[:, :, 0, 0] = -1e-3
    with torch.no_grad():
        for queries in (stamped, unfamiliar, tiny_excursion):
            assert check.rejects(queries).all()
            assert torch.equal(check(queries), mean_image.expand_as(queries))
            assert torch.equal(filtered(queries), model(mean_image.expand_as(queries)))  # one answer for all
            assert torch.allclose(filtered(queries), model(mean_image).expand(len(queries), -1), atol=1e-5)
        assert not torch.equal(filtered(stamped), model(stamped.clamp(0, 1)))  # not merely clamped


def test_the_ood_filter_passes_accepted_queries_unchanged(make_ctx):
    ctx = make_ctx("classifier", 0)
    model = ctx.base_model()
    filtered = registry.get_attack("input_filter").run(ctx, model, "ood5").model
    x = ctx.data.test.x
    with torch.no_grad():
        accepted = ~filtered.pre[0].rejects(x)
        assert 0.9 < accepted.float().mean() < 1.0  # most normal queries pass, and some are rejected
        answers = filtered(x)
        assert torch.equal(answers[accepted], model(x)[accepted])
        assert not torch.equal(answers[~accepted], model(x)[~accepted])


def test_an_ood_filtered_model_is_cached_and_rebuilt_from_its_recipe(make_ctx, tmp_path):
    ctx = dataclasses.replace(make_ctx("classifier", 0), cache=ArtifactCache(tmp_path))
    attack = registry.get_attack("input_filter")
    first = attack.run(ctx, ctx.base_model(), "ood5")  # the filter as the attack built it
    ctx.attacked(attack, ctx.base_model(), "ood5")  # stored
    again = dataclasses.replace(ctx, cache=ArtifactCache(tmp_path)).attacked(attack, ctx.base_model(), "ood5")
    assert isinstance(again.model, Served) and again.model.spec == first.model.spec
    assert [s["name"] for s in again.model.spec["kwargs"]["pre"]] == ["ood_filter"]
    assert again.report == first.report and set(again.report) == {"rejected_normal", "rejected_test", "threshold"}
    x = torch.cat([ctx.data.test.x, torch.rand(8, 1, 16, 16) * 3 - 1])  # normal and out-of-range queries
    with torch.no_grad():
        rejected = first.model.pre[0].rejects(x)
        assert 8 < rejected.sum() < len(x) - 8  # normal queries rejected too, so the threshold matters
        assert torch.equal(again.model.pre[0].rejects(x), rejected)
        assert torch.equal(first.model(x), again.model(x))
    assert weights_digest(again.model) == weights_digest(first.model)


def test_the_ood_filter_takes_null_embeddings_mark_at_a_small_cost(make_marked):
    defense, ctx, key, marked = make_marked("null_embedding", "classifier", 1234)
    assert defense.verify(ctx, marked, key).detected
    filtered = registry.get_attack("input_filter").run(ctx, marked, "ood1").model
    assert not defense.verify(ctx, filtered, key).detected
    assert ctx.utility(marked) - 0.05 <= ctx.utility(filtered) < ctx.utility(marked)


def test_jpeg_compresses_each_image_to_eight_bit_values_close_to_the_input():
    jpeg = get_transform("jpeg").build(quality=50)
    ramp = torch.linspace(0, 1, 16).repeat(16, 1)
    smooth = torch.stack([ramp, ramp.T, 1 - ramp]).unsqueeze(1)  # three different smooth images
    out = jpeg(smooth)
    assert out.shape == smooth.shape and 0 <= out.min() and out.max() <= 1
    assert torch.allclose(out * 255, torch.round(out * 255), atol=1e-4)  # decoded 8-bit values
    assert 0 < (out - smooth).abs().mean() < 0.05  # lossy, yet close on a smooth image
    wild = smooth.clone()
    wild[:, :, :3, :3] = 1000.0
    assert jpeg(wild).max() <= 1  # an image file holds no value outside [0, 1]
    assert torch.equal(jpeg(smooth[1:2]), out[1:2])  # each image on its own
    assert get_transform("jpeg").build(quality=95)(smooth).sub(smooth).abs().mean() < (out - smooth).abs().mean()


def test_additive_noise_has_its_standard_deviation_is_not_clamped_and_depends_only_on_the_query():
    noise = get_transform("gaussian_noise").build(std=0.1, seed=7)
    x = torch.rand(64, 1, 16, 16)
    y = noise(x)
    assert (y - x).std().item() == pytest.approx(0.1, rel=0.05)
    assert y.min() < 0 or y.max() > 1  # not clamped: the noise alone is what is tested
    assert torch.equal(noise(x[5:9]), y[5:9])  # a query's noise does not depend on its batch
    assert not torch.allclose(y[0] - x[0], y[1] - x[1])  # nor repeat across queries
    assert not torch.equal(get_transform("gaussian_noise").build(std=0.1, seed=8)(x), y)
