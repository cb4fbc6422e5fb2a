import json

import pytest
import torch

from bench.cache import ArtifactCache, digest, load_model_file, save_model_file
from bench.kinds.models import create_model
from bench.protocols import Key, WmbenchError


def small():
    torch.manual_seed(0)
    return create_model("small_cnn", in_channels=1, num_classes=10, width=4)


def test_model_is_built_once_then_reused(tmp_path):
    cache = ArtifactCache(tmp_path)
    desc = {"role": "test", "n": 1}
    first = cache.model(desc, small)
    second = cache.model(desc, lambda: pytest.fail("rebuilt a cached model"))
    assert cache.builds == 1 and cache.hits == 1
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_descriptor_changes_change_the_address():
    assert digest({"seed": 0}) != digest({"seed": 1})
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})


def test_corrupt_file_is_rebuilt_with_a_warning(tmp_path):
    cache = ArtifactCache(tmp_path)
    desc = {"role": "test", "n": 2}
    cache.model(desc, small)
    data = next(tmp_path.rglob("*.safetensors"))
    data.write_bytes(data.read_bytes()[: len(data.read_bytes()) // 2])  # truncated
    with pytest.warns(UserWarning, match="corrupt"):
        cache.model(desc, small)
    assert cache.builds == 2
    sidecar = json.loads(next(tmp_path.rglob("*.json")).read_text())
    assert sidecar["spec"]["name"] == "small_cnn"


def test_key_round_trip(tmp_path):
    key = Key("null_embedding", 7, {"bits": [[1, 0]], "target": 3}, {"trigger": torch.ones(2, 3)})
    key.save(tmp_path / "k.safetensors")
    back = Key.load(tmp_path / "k.safetensors")
    assert (back.defense, back.secret, back.params) == (key.defense, key.secret, key.params)
    assert torch.equal(back.tensors["trigger"], key.tensors["trigger"])


def test_missing_and_foreign_files_are_clear_errors(tmp_path):
    with pytest.raises(WmbenchError, match="not found"):
        Key.load(tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(WmbenchError, match="not a wmbench model file"):
        load_model_file(tmp_path / "junk.safetensors")


def test_model_file_round_trip(tmp_path):
    model = small()
    save_model_file(model, tmp_path / "m.safetensors")
    back = load_model_file(tmp_path / "m.safetensors")
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(model(x), back(x))


def test_concurrent_builders_build_once(tmp_path):
    """Two workers asking for the same missing artifact at once: one builds, the other waits and loads."""
    import threading
    import time

    cache_a, cache_b = ArtifactCache(tmp_path), ArtifactCache(tmp_path)  # as two processes would hold
    calls = []

    def slow_build():
        calls.append(1)
        time.sleep(0.5)
        return small()

    results = {}
    threads = [threading.Thread(target=lambda c=c, n=n: results.__setitem__(n, c.model({"role": "race"}, slow_build)))
               for n, c in (("a", cache_a), ("b", cache_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and cache_a.builds + cache_b.builds == 1
    assert torch.equal(results["a"].head.weight, results["b"].head.weight)


def test_weights_digest_follows_the_weights_not_the_object():
    from bench.cache import weights_digest
    from bench.kinds.models import clone

    model = small()
    twin = clone(model)
    assert weights_digest(model) == weights_digest(twin)
    with torch.no_grad():
        twin.head.bias[0] += 1e-6
    assert weights_digest(model) != weights_digest(twin)


def test_attack_budgets_do_not_address_clean_models(make_ctx):
    """Changing what only attacks read keeps every clean (and so every marked) model; a training budget of
    the models themselves does not."""
    import dataclasses

    ctx = make_ctx("classifier", 0)
    base = ctx.base_descriptor(0)
    cheaper_attacks = dataclasses.replace(ctx, profile=dataclasses.replace(ctx.profile, attack_epochs=1,
                                                                           extraction_epochs=2))
    longer_training = dataclasses.replace(ctx, profile=dataclasses.replace(ctx.profile, classifier_epochs=1))
    assert digest(cheaper_attacks.base_descriptor(0)) == digest(base)
    assert digest(longer_training.base_descriptor(0)) != digest(base)
