"""Piracy, Neural Cleanse and fine-pruning work as attacks / detectors in their own right."""
import pytest
import torch

from attacks.fine_pruning import FinePruning
from attacks.neural_cleanse import NeuralCleanse, anomaly_indices
from attacks.piracy import Piracy
from bench.training import train_supervised


@pytest.fixture(scope="module")
def null_marked(make_marked):
    return make_marked("null_embedding", "classifier", 1234)


def test_pirate_key_verifies_on_pirated_model(null_marked):
    defense, ctx, key, marked = null_marked
    out = Piracy().run(ctx, marked, "6")
    assert out.pirate_key is not None and out.pirate_key.secret != key.secret
    assert defense.verify(ctx, out.model, out.pirate_key).detected
    assert not defense.verify(ctx, marked, out.pirate_key).detected  # it was not there before


def test_anomaly_index_flags_only_small_outliers():
    index = anomaly_indices(torch.tensor([100.0, 98, 103, 101, 20, 99, 180]).numpy())
    assert index.argmax() == 4 and index[4] > 2
    assert index[6] == 0  # a large mask is not a backdoor


def test_neural_cleanse_flags_a_planted_patch_backdoor(make_ctx):
    ctx = make_ctx("classifier", 0)
    owner = ctx.data.owner
    x, y = owner.x.clone(), owner.y.clone()
    # a fifth of the training set poisoned with an ordinary in-range 4×4 white patch → label 3. (With a
    # tenth, the reversed triggers of this 1-channel 32×32 data are all 40–90 pixels and label 3's does not
    # stand out: small natural triggers exist for every digit, so Neural Cleanse's margin here is thin.)
    n = len(x) // 5
    x[:n, :, -6:-2, -6:-2] = 1.0
    y[:n] = 3

    def train():
        torch.manual_seed(0)
        return train_supervised(ctx.kind.new(ctx), x, y, epochs=25, seed=0, lr=3e-3)

    backdoored = ctx.cache.model({"test": "planted_backdoor", "poisoned": n}, train)
    out = NeuralCleanse().run(ctx, backdoored, "1")
    assert 3 in out.report["flagged"]
    assert max(out.report["anomaly_index"]) == out.report["anomaly_index"][3]
    assert len(out.report["anomaly_index"]) == 10
    patched = x[:50]
    before = (backdoored(patched).argmax(1) == 3).float().mean()
    after = (out.model(patched).argmax(1) == 3).float().mean()
    assert after < before  # unlearning weakened the backdoor


def test_fine_pruning_removes_the_units_it_claims(null_marked):
    _, ctx, _, marked = null_marked
    out = FinePruning().run(ctx, marked, "0.5")
    layer, _ = out.model.last_stage_units()
    zero_rows = [i for i in range(layer.weight.shape[0]) if not layer.weight[i].any() and layer.bias[i] == 0]
    assert zero_rows == out.report["pruned"]
    assert len(zero_rows) == out.report["pruned_units"] == round(0.5 * out.report["units"])
