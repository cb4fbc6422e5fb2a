"""The attacks a reviewer expects, each doing what it says on a constructed case."""
import pytest
import torch
import torch.nn.functional as F

from bench import registry


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
    assert registry.get_attack("extraction>pruning:0.5").family == "extraction>pruning"
