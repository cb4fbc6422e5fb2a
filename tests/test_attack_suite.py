"""The attacks a reviewer expects, each doing what it says on a constructed case."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from bench import registry
from bench.cache import weights_digest


def test_int8_quantization_leaves_each_weight_tensor_255_levels_and_fp16_half_precision(make_ctx):
    ctx = make_ctx("classifier", 0)
    model = ctx.base_model()
    attack = registry.get_attack("weight_quantization")
    int8 = attack.run(ctx, model, "int8")
    for (name, w), (_, w0) in zip(int8.named_parameters(), model.named_parameters()):
        if name.endswith("weight") and w.dim() > 1:
            assert 2 < len(torch.unique(w)) <= 255
            assert (w - w0).abs().max() <= w0.abs().max() / 127 / 2 + 1e-7  # at most half a step off
    fp16 = attack.run(ctx, model, "fp16")
    weights = [w for n, w in fp16.named_parameters() if n.endswith("weight") and w.dim() > 1]
    assert all(torch.equal(w, w.half().float()) for w in weights)
    assert not torch.equal(next(iter(model.parameters())), next(iter(int8.parameters())))  # the victim is a copy
    assert abs(ctx.utility(int8) - ctx.utility(model)) < 0.05


def test_the_cse_projection_removes_the_named_directions_and_permutation_keeps_similarities(make_ctx):
    ctx = make_ctx("vlp", 0)
    service = ctx.base_model()
    attack = registry.get_attack("embedding_transform")
    cse = attack.run(ctx, service, "cse3")
    directions = cse.post[0].directions
    x = ctx.data.test.x[:32]
    with torch.no_grad():
        assert directions.shape == (3, service.encode_image(x[:1]).shape[1])
    assert torch.allclose(directions @ directions.T, torch.eye(3), atol=1e-4)
    with torch.no_grad():
        out = cse.encode_image(x)
        assert (out @ directions.T).abs().max() < 1e-4  # nothing left along the removed directions
        assert torch.allclose(out.norm(dim=1), torch.ones(len(x)), atol=1e-4)
        permuted = attack.run(ctx, service, "permute").encode_image(x)
        original = service.encode_image(x)
        assert torch.allclose(permuted @ permuted.T, original @ original.T, atol=1e-5)
        assert not torch.allclose(permuted, original)
        noisy = attack.run(ctx, service, "noise0.05").encode_image(x)
        assert 0.5 < F.cosine_similarity(noisy, original).mean() < 0.999
    for strength in ("permute", "quantize8"):
        assert ctx.utility(attack.run(ctx, service, strength)) == pytest.approx(ctx.utility(service), abs=0.02)


def test_every_attack_names_its_family_and_the_list_has_at_least_twelve():
    names = [n for n in registry.attack_names() if ">" not in n]
    assert len(registry.attack_names()) >= 12
    families = {n: registry.get_attack(n).family for n in names}
    assert "other" not in families.values(), families
    assert families["input_filter"] == "evasion" and families["embedding_transform"] == "output transformation"
    assert families["weight_noise"] == families["model_merging"] == "weight-space"
    assert registry.get_attack("extraction>pruning:0.5").family == "extraction>pruning"


def test_weight_noise_adds_the_requested_relative_noise_to_every_weight_and_is_seeded(make_ctx):
    ctx = make_ctx("classifier", 0)
    model = ctx.base_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    attack = registry.get_attack("weight_noise")
    for strength in ("0.1", "0.5"):
        noisy = dict(attack.run(ctx, model, strength).named_parameters())
        for name, w in model.named_parameters():
            if name.endswith("weight"):  # every convolution and linear weight moves, biases stay
                assert not torch.equal(noisy[name], w), name
            else:
                assert torch.equal(noisy[name], w), name
        for name in ("neck.0.weight", "backbone.stages.2.0.weight"):  # the two largest layers
            ratio = ((noisy[name] - before[name]).std() / before[name].std()).item()
            assert ratio == pytest.approx(float(strength), rel=0.2), (name, strength, ratio)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # the victim is untouched
    again, other_seed = attack.run(ctx, model, "0.3"), attack.run(dataclasses.replace(ctx, seed=1), model, "0.3")
    first = attack.run(ctx, model, "0.3")
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters()))
    assert not torch.equal(first.neck[0].weight, other_seed.neck[0].weight)


def test_model_merging_averages_every_float_entry_with_the_attackers_own_model(make_ctx):
    ctx = make_ctx("classifier", 0)
    stolen = ctx.base_model()
    own = ctx.clean_model(ctx.kind.scratch(ctx.profile)[0])
    a, b = stolen.state_dict(), own.state_dict()
    assert not torch.allclose(a["head.weight"], b["head.weight"])  # two different models, so the average shows
    attack = registry.get_attack("model_merging")
    assert attack.strengths == ("0.9", "0.75") and attack.needs == "weights"
    for strength in attack.strengths:
        s = float(strength)
        merged = attack.run(ctx, stolen, strength)
        assert merged.spec == stolen.spec and not merged.training
        state = merged.state_dict()
        assert state.keys() == a.keys()
        for name, w in state.items():
            expected = s * a[name] + (1 - s) * b[name] if w.is_floating_point() else a[name]
            assert w.shape == a[name].shape and torch.allclose(w, expected, rtol=0, atol=1e-6), (strength, name)
        assert 0.2 < ctx.utility(merged) <= 1, strength
    assert all(torch.equal(stolen.state_dict()[n], t) for n, t in a.items())  # the victim is untouched


def test_model_merging_refuses_another_architecture_or_no_model_of_its_own(make_ctx):
    from attacks.model_merging import merged
    from bench.kinds.models import create_model
    from bench.protocols import WmbenchError

    ctx = make_ctx("classifier", 0)
    small = create_model("small_cnn", in_channels=1, num_classes=10)
    with pytest.raises(WmbenchError, match="differ in architecture"):
        merged(small, create_model("resnet_cnn", in_channels=1, num_classes=10), 0.5)
    with pytest.raises(WmbenchError, match="shape"):
        merged(small, create_model("small_cnn", in_channels=1, num_classes=10, width=8), 0.5)
    none_of_its_own = dataclasses.replace(ctx, profile=dataclasses.replace(ctx.profile, scratch_seeds=0))
    with pytest.raises(WmbenchError, match="attacker's own classifier model: the profile's scratch_seeds is 0"):
        registry.get_attack("model_merging").run(none_of_its_own, small, "0.5")


class _Opaque(torch.nn.Module):
    """A victim that answers queries but shows no weights: its model is hidden from `parameters()` and
    `state_dict()`, so whatever trains on it can only have used its answers."""

    def __init__(self, model):
        super().__init__()
        object.__setattr__(self, "_hidden", model)

    def forward(self, x):
        return self._hidden(x)


@pytest.mark.parametrize("kind", ["classifier", "encoder"])
def test_cross_architecture_extraction_trains_the_other_architecture_from_answers_alone(make_ctx, kind):
    from attacks.extraction import extract
    from attacks.extraction_cross import ARCHITECTURE_FIELD, other_architecture

    ctx = make_ctx(kind, 0)
    victim = ctx.base_model()
    field = ARCHITECTURE_FIELD[kind]
    theirs = other_architecture(kind, getattr(ctx.profile, field))
    assert theirs != victim.spec["name"] and theirs.startswith("resnet")
    opaque = _Opaque(victim)
    assert list(opaque.parameters()) == [] and opaque.state_dict() == {}
    thief = dataclasses.replace(ctx, profile=dataclasses.replace(ctx.profile, **{field: theirs},
                                                                 extraction_epochs=4))
    student = extract(thief, opaque, 1000, seed=3)
    assert student.spec["name"] == theirs
    chance = 1 / ctx.data.num_classes
    assert ctx.utility(student) > chance + 0.3  # it learnt the task from the victim's answers
    attack = registry.get_attack("extraction_cross")
    assert attack.family == "extraction" and attack.needs == "queries" and "vlp" not in attack.model_kinds


def test_overwriting_embeds_a_second_mark_of_the_same_scheme_into_a_copy(make_marked):
    defense, ctx, key, marked = make_marked("null_embedding", "classifier", 11)
    before = [p.detach().clone() for p in marked.parameters()]
    attack = registry.get_attack("overwriting")
    assert attack.family == "overwriting" and attack.per_defense and attack.strengths_for("classifier") == ("24",)
    outcome = attack.run(ctx, marked, "24")
    second = outcome.pirate_key
    pirated = ctx.attacked(registry.get_attack("piracy"), marked, "12")  # the same thief's run, kept after 12 epochs
    assert pirated.pirate_key.secret == second.secret and weights_digest(pirated.model) != weights_digest(outcome.model)
    assert second is not None and not defense.keys_collide(key, second)
    assert defense.verify(ctx, outcome.model, second).detected  # the overwriter's own mark took
    assert not defense.verify(ctx, marked, second).detected  # and was not there before
    assert all(torch.equal(a, b) for a, b in zip(before, marked.parameters()))  # the victim is a copy
    assert "vlp" not in attack.model_kinds
