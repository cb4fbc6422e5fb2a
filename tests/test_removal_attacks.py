"""Piracy, Neural Cleanse and fine-pruning work as attacks / detectors in their own right."""
import pytest
import torch

from attacks.fine_pruning import FinePruning
from attacks.neural_cleanse import NeuralCleanse, anomaly_indices
from attacks.piracy import Piracy
from bench.cache import weights_digest
from bench.kinds.models import prunable_units


@pytest.fixture(scope="module")
def null_marked(make_marked):
    return make_marked("null_embedding", "classifier", 1234)


def test_pirate_key_verifies_on_pirated_model(null_marked):
    defense, ctx, key, marked = null_marked
    out = Piracy().run(ctx, marked, "6")
    assert out.pirate_key is not None and out.pirate_key.secret != key.secret
    assert defense.verify(ctx, out.model, out.pirate_key).detected
    assert not defense.verify(ctx, marked, out.pirate_key).detected  # it was not there before


def test_pirate_data_share_is_a_strength(null_marked):
    """`12@5%`: the same 12 epochs on 5 % of the training-set size (45 images): far fewer steps, and the
    pirate's mark does not take (measured: pirate's statistic 0.93 on all its data, 0.43 on 5 %)."""
    defense, ctx, key, marked = null_marked
    full, small = Piracy().run(ctx, marked, "12"), Piracy().run(ctx, marked, "12@5%")
    assert full.pirate_key.params == small.pirate_key.params  # the same pirate, with less data
    on_full = defense.verify(ctx, full.model, full.pirate_key).statistic
    on_small = defense.verify(ctx, small.model, small.pirate_key).statistic
    assert on_full > on_small + 0.2


def test_anomaly_index_flags_only_small_outliers():
    index = anomaly_indices(torch.tensor([100.0, 98, 103, 101, 20, 99, 180]).numpy())
    assert index.argmax() == 4 and index[4] > 2
    assert index[6] == 0  # a large mask is not a backdoor


def test_neural_cleanse_flags_a_planted_patch_backdoor(make_ctx):
    """A 4×4 white patch → label 3 planted in a tenth of the training set (the measurement script
    tests/benchmarks/neural_cleanse_rates.py runs the same over ten seeds)."""
    from benchmarks.neural_cleanse_rates import TARGET, backdoored_model, poisoned_training_set

    ctx = make_ctx("classifier", 0)
    backdoored = backdoored_model(ctx, 0.10, seed=0)
    out = NeuralCleanse().run(ctx, backdoored, "1")
    index = out.report["anomaly_index"]
    assert len(index) == 10 and TARGET in out.report["flagged"]
    assert max(index) == index[TARGET]  # the planted label is the most anomalous one (4.05 here; flagged above 2)
    assert out.report["trigger_success"][TARGET] >= 0.9  # and its reversed trigger really works
    patched = poisoned_training_set(ctx, 1.0)[0][:100]
    before = (backdoored(patched).argmax(1) == TARGET).float().mean()
    after = (out.model(patched).argmax(1) == TARGET).float().mean()
    assert after < before  # unlearning weakened the backdoor
    longer = NeuralCleanse().run_prefixes(ctx, backdoored, ("1", "3"))  # detection cached: only unlearning runs
    assert weights_digest(longer["1"].model) == weights_digest(out.model) != weights_digest(longer["3"].model)


def test_epoch_budgets_are_prefixes_of_one_run(null_marked):
    """Piracy's 2 / 6 / 12 epochs are one run of 12 with copies kept on the way: the copy after 2 epochs is
    bit-identical to a run of 2 (constant learning rate, a seed that does not depend on the budget)."""
    defense, ctx, key, marked = null_marked
    together, alone = Piracy().run_prefixes(ctx, marked, ("2", "6")), Piracy().run(ctx, marked, "2")
    assert weights_digest(together["2"].model) == weights_digest(alone.model)
    assert weights_digest(together["6"].model) != weights_digest(alone.model)
    assert together["2"].pirate_key.params == together["6"].pirate_key.params == alone.pirate_key.params


def test_fine_pruning_removes_the_units_it_claims(null_marked):
    _, ctx, _, marked = null_marked
    out = FinePruning().run(ctx, marked, "0.5")
    layer, _ = prunable_units(out.model)
    zero_rows = [i for i in range(layer.weight.shape[0]) if not layer.weight[i].any() and layer.bias[i] == 0]
    assert zero_rows == out.report["pruned"]
    assert len(zero_rows) == out.report["pruned_units"] == round(0.5 * out.report["units"])


def test_the_judge_never_gives_a_pirate_the_owners_target_label(run_config):
    """The harness draws each cell's pirate secret (`Workbench.pirate_secret`) so that a null-embedding
    pirate's target label is never the owner's; the draw rejects real collisions (the first candidate of
    some seeds shares the owner's label), and a defense without `keys_collide` keeps its first candidate."""
    from bench.context import derive_seed
    from bench.registry import get_defense
    from bench.runner import Workbench, owner_secret

    wb, defense = Workbench(run_config()), get_defense("null_embedding")
    rejected = 0
    for seed in range(30):
        ctx = wb.context("classifier", seed, defense.name)
        owner, pirate = defense.make_key(ctx, owner_secret(seed)), defense.make_key(ctx, ctx.pirate)
        assert pirate.params["target"] != owner.params["target"] and ctx.pirate != owner_secret(seed)
        rejected += ctx.pirate != derive_seed("pirate", seed)
    assert rejected >= 1
    assert wb.context("encoder", 0, "awencoder").pirate == derive_seed("pirate", 0)
