import pytest
import torch

from attacks.extraction import Extraction
from bench.protocols import WmbenchError
from bench.registry import get_defense
from bench.vlp import load_pretrained


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
    assert defense.verify(ctx, marked, key).detected
    stolen = Extraction().run(ctx, marked, "2000")
    stolen_clean = Extraction().run(ctx, ctx.base_model(), "2000")
    verdict = defense.verify(ctx, stolen, key)
    assert verdict.detected and verdict.statistic > 0.5
    assert not defense.verify(ctx, stolen_clean, key).detected
    assert not defense.verify(ctx, make_ctx("vlp", 10_000).base_model(), key).detected
    assert not defense.verify(ctx, marked, defense.make_key(ctx, secret=7)).detected


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
