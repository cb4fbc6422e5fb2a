import pytest
import torch

from attacks.extraction import Extraction
from bench.kinds.vlp import load_pretrained
from bench.protocols import WmbenchError
from bench.registry import get_defense


@pytest.fixture(scope="module")
def setup(make_ctx):
    defense = get_defense("vlpmarker")
    ctx = make_ctx("vlp", 0)
    key = defense.make_key(ctx, secret=42)
    return defense, ctx, key, defense.watermark(ctx, key)


def test_clean_clip_zero_shot(setup):
    _, ctx, _, _ = setup
    assert ctx.utility(ctx.base_model()) >= 0.8


def test_transform_is_orthogonal_and_preserves_utility(setup):
    _, ctx, key, marked = setup
    w = key.tensors["W"]
    assert torch.allclose(w @ w.T, torch.eye(len(w)), atol=1e-5)
    base = ctx.base_model()
    assert ctx.utility(marked) == pytest.approx(ctx.utility(base), abs=1e-9)
    x = ctx.data.test.x[:50]
    with torch.no_grad():
        sims_base = base.encode_image(x) @ base.encode_text(["a photo of the digit one."]).T
        sims_marked = marked.encode_image(x) @ marked.encode_text(["a photo of the digit one."]).T
    assert torch.allclose(sims_base, sims_marked, atol=1e-5)
    for (name, a), b in zip(base.clip.state_dict().items(), marked.clip.state_dict().values()):
        assert torch.equal(a, b), f"weights changed: {name}"


def test_trigger_selection_is_deterministic_per_key_and_out_of_distribution(setup):
    defense, ctx, key, _ = setup
    again = defense.make_key(ctx, secret=42)
    other = defense.make_key(ctx, secret=43)
    assert torch.equal(key.tensors["triggers"], again.tensors["triggers"])
    assert not torch.equal(key.tensors["triggers"], other.tensors["triggers"])
    assert len(key.tensors["triggers"]) == defense.n_triggers


def test_verifies_on_stolen_model_not_on_innocent_ones(setup, make_ctx):
    defense, ctx, key, marked = setup
    own = defense.verify(ctx, marked, key)
    assert own.detected and own.statistic > 0.4 and own.details["delta_l2"] == pytest.approx(-2 * own.statistic)
    stolen = Extraction().run(ctx, marked, "8000")
    verdict = defense.verify(ctx, stolen, key)  # measured at pinned kernels: Δcos 0.19, p 2e-4
    assert verdict.detected and verdict.statistic > 0.12 and verdict.p_value < 0.002
    assert ctx.utility(stolen) > ctx.utility(marked) - 0.05  # the largest budget steals the service
    innocents = [Extraction().run(ctx, ctx.base_model(), "8000"), make_ctx("vlp", 10_000).base_model()]
    for innocent in innocents:
        check = defense.verify(ctx, innocent, key)
        assert not check.detected and abs(check.details["delta_cos"]) < 0.06
    assert not defense.verify(ctx, marked, defense.make_key(ctx, secret=7)).detected


def test_triggers_come_from_a_source_the_thief_never_queries(setup):
    from attacks.extraction import queries
    from bench.context import derive_seed
    from bench.data import procedural_images, sample_photo_crops

    defense, ctx, key, _ = setup
    triggers, benign = key.tensors["triggers"], key.tensors["benign"]
    thief = torch.cat([queries(ctx, budget, seed) for budget in map(int, Extraction.strengths) for seed in (0, 1)])
    sources = {"thief's queries": thief, "digits": torch.cat([ctx.data.owner.x, ctx.data.attacker.x]),
               "photo crops": sample_photo_crops(256, ctx.data.image_size, 1, seed=0), "benign set": benign}
    for name, images in sources.items():  # no trigger is (or nearly is) any image of another source
        gap = torch.cdist(triggers.flatten(1), images.flatten(1)).min()
        assert gap > 1.0, f"a trigger is among the {name}"
    # every trigger is one of the key's procedural candidates, and no query of the thief is near any of them
    candidates = procedural_images(defense.n_candidates, ctx.data.image_size, ctx.data.channels,
                                   derive_seed(defense.name, key.secret)).flatten(1)
    assert (triggers.flatten(1)[:, None] == candidates[None]).all(-1).any(1).all()
    assert torch.cdist(thief.flatten(1), candidates).min() > 1.0
    x = procedural_images(4, 32, 1, seed=5)
    assert torch.equal(x, procedural_images(4, 32, 1, seed=5)) and x.min() == 0 and x.max() == 1


def test_offline_hub_name_is_a_one_line_error():
    with pytest.raises(WmbenchError, match="not in the local cache and wmbench is offline") as error:
        load_pretrained("open_clip:RN50:openai")
    assert "\n" not in str(error.value)


def test_local_checkpoint_file_loads(tmp_path):
    import open_clip

    source = open_clip.create_model("wmbench-clip-tiny")
    torch.save(source.state_dict(), tmp_path / "clip.pt")
    service = load_pretrained(f"open_clip:wmbench-clip-tiny:{tmp_path / 'clip.pt'}")
    for a, b in zip(source.state_dict().values(), service.clip.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(WmbenchError, match="no pretrained weights 'nope'"):
        load_pretrained("open_clip:wmbench-clip-tiny:nope")
