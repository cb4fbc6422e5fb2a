"""An attacker for whom stealing pays: the attacker holds a share of the owner's data size drawn from the
independent split (the innocents keep all of it), and a removal counts as a theft only if the stolen model
beats the attacker's own model trained from scratch on that data. Fast: nothing here trains a model."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from bench.claims import Claim, survives
from bench.config import ATTACKER_SHARES, RunConfig, get_profile
from bench.context import Context
from bench.data import Dataset, Split, split_three_ways, stratified_subset
from bench.datasets.digits import load_digits
from bench.kinds.base import get_kind
from bench.protocols import WmbenchError
from bench.report import summary_matrix, worst_case
from bench.results import CellId, CellResult, Check, Prepared, ResultsDB
from bench.scoring import COLUMNS, leaderboard


def indexed_dataset(n: int = 2000) -> Dataset:
    """A dataset of 16×16 "images" each filled with its own index, so splits can be compared as sets of indices."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 16, 16)
    y = torch.as_tensor(np.random.default_rng(0).choice(10, n, p=np.linspace(1, 3, 10) / 20))  # unequal classes
    owner, independent, test = split_three_ways(x, y)
    return Dataset("indexed", owner, independent, test, tuple(str(c) for c in range(10)))


def ids(split: Split) -> set[int]:
    return set(split.x[:, 0, 0, 0].long().tolist())


@pytest.mark.parametrize("share", ATTACKER_SHARES)
def test_the_share_gives_its_size_stratified_inside_the_independent_split(share):
    d = indexed_dataset()
    narrowed = d.with_attacker_share(share)
    attacker = narrowed.attacker
    assert len(attacker) == min(round(share * len(d.owner)), len(d.independent))
    assert ids(attacker) <= ids(d.independent) and not ids(attacker) & (ids(d.owner) | ids(d.test))
    assert len(ids(attacker)) == len(attacker)  # drawn without replacement
    # stratified: each class holds its share of the images, to within one image
    counts = np.bincount(attacker.y.numpy(), minlength=10)
    expected = len(attacker) * np.bincount(d.independent.y.numpy(), minlength=10) / len(d.independent)
    assert np.all(np.abs(counts - expected) < 1)
    # seeded by the split seed alone: the same images every time; the innocents' split stays whole
    assert torch.equal(d.with_attacker_share(share).attacker.x, attacker.x)
    assert narrowed.independent is d.independent and narrowed.split("independent") is d.independent
    assert narrowed.split("attacker") is attacker


def test_the_whole_independent_split_at_half_and_a_loader_leaves_it_whole():
    d = load_digits(16)
    assert d.attacker is d.independent  # a loader's dataset: no share applied yet
    assert (len(d.owner), len(d.independent)) == (898, 449)
    assert d.with_attacker_share(0.5).attacker is d.independent  # 0.50 of 898 = 449: all of it
    assert len(d.with_attacker_share(0.10).attacker) == 90 and len(d.with_attacker_share(0.01).attacker) == 9
    assert d.to("cpu").attacker is not None and d.with_attacker_share(0.05).to("cpu").attacker.x.shape[0] == 45
    with pytest.raises(WmbenchError, match="unknown data split 'thief'; valid: owner, independent, attacker, test"):
        d.split("thief")


def test_fewer_images_than_classes_still_draws_one_per_class_at_most():
    d = indexed_dataset()
    few = stratified_subset(d.independent, 7, seed=0)
    assert len(few) == 7 and len(set(few.y.tolist())) == 7


def test_a_run_attacks_with_its_share_and_trains_innocents_on_the_whole_independent_split(tmp_path):
    from bench.runner import make_plan, workbench

    cfg = RunConfig(profile="smoke", defenses=["none"], attacks=["none"], seeds=1, out=tmp_path / "out",
                    cache=tmp_path / "cache", device="cpu", workers=1, attacker_share=0.05)
    data = workbench(cfg).data
    assert len(data.attacker) == round(0.05 * len(data.owner)) and len(data.independent) == 449
    plan = make_plan(cfg)
    assert {c.split for _, c in plan.innocents} == {"owner", "independent"}
    assert [c.split for _, c in plan.scratch] == ["attacker"] * get_profile("smoke").scratch_seeds
    assert set(plan.scratch) <= set(plan.bases)  # built by the bases wave, in parallel with the others
    assert len({c.seed for _, c in plan.bases}) == len(plan.bases)  # the attacker's seeds are its own


def test_the_share_retrains_attacks_and_the_attackers_models_but_no_owner_model():
    from bench.registry import get_attack

    profiles = {share: dataclasses.replace(get_profile("default"), attacker_data_share=share) for share in (0.1, 0.25)}
    ctxs = {share: Context(load_digits(16), p, 0, "classifier", torch.device("cpu"), None)
            for share, p in profiles.items()}
    low, high = ctxs[0.1], ctxs[0.25]
    assert low.base_descriptor(0) == high.base_descriptor(0)  # clean, and so keyed and marked, models
    assert low.base_descriptor(10_001, "independent") == high.base_descriptor(10_001, "independent")  # innocents
    assert low.base_descriptor(20_000, "attacker") != high.base_descriptor(20_000, "attacker")  # the attacker's own
    attack = get_attack("fine_tuning")
    assert low._attacked_descriptors(attack, "w", "all_layers") != high._attacked_descriptors(attack, "w", "all_layers")


def test_a_pretrained_vlp_source_has_no_scratch_baseline():
    profile = dataclasses.replace(get_profile("default"), vlp="open_clip:ViT-B-32:laion2b_s34b_b79k")
    assert get_kind("vlp").scratch(profile) == []
    assert len(get_kind("vlp").scratch(get_profile("default"))) == 3


def test_piracy_with_its_own_share_draws_from_the_whole_independent_split(monkeypatch):
    """`12@P%` names its own share of the owner's size and draws it from the independent split, whatever the
    run's attacker share; the plain epoch budgets use the attacker's data."""
    from bench.registry import get_attack, get_defense

    seen = {}
    defense = type(get_defense("null_embedding"))
    monkeypatch.setattr(defense, "rewatermark", lambda self, ctx, model, key, budget: seen.update(data=ctx.data))
    profile = dataclasses.replace(get_profile("default"), attacker_data_share=0.05)
    data = indexed_dataset().with_attacker_share(0.05)
    ctx = Context(data, profile, 0, "classifier", torch.device("cpu"), None, defense="null_embedding")
    piracy, model = get_attack("piracy"), get_kind("classifier").new(ctx)
    piracy.run(ctx, model, "12@25%")
    assert len(seen["data"].attacker) == round(0.25 * len(data.owner)) > len(data.attacker)
    assert ids(seen["data"].attacker) <= ids(data.independent)
    piracy.run(ctx, model, "12")
    assert seen["data"].attacker is data.attacker


@pytest.mark.parametrize("args, message", [
    (["run", "--attacker-share", "0.3"], "--attacker-share must be one of 0.01, 0.05, 0.10, 0.25, 0.50"),
    (["run", "--attacker-share", "0"], "--attacker-share must be one of"),
    (["status", "--attacker-share", "1"], "--attacker-share must be one of"),
])
def test_an_invalid_share_is_one_line_and_exit_2(args, message, capsys):
    from bench.cli import main

    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_an_invalid_share_in_a_config_file_or_profile_is_one_line(tmp_path, capsys):
    from bench.cli import main

    config = tmp_path / "run.toml"
    config.write_text("attacker_share = 0.2\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "--attacker-share must be one of" in capsys.readouterr().err
    with pytest.raises(WmbenchError, match="profile 'odd': attacker_data_share must be one of"):
        dataclasses.replace(get_profile("default"), name="odd", attacker_data_share=0.3)


def test_the_share_is_part_of_the_runs_label_and_overrides_the_profile():
    assert RunConfig().label == "default" and RunConfig().resolved_profile().attacker_data_share == 0.10
    shared = RunConfig(attacker_share=0.25)
    assert shared.label == "default+attacker_share=0.25" and shared.resolved_profile().attacker_data_share == 0.25
    assert RunConfig(attacker_share=0.5, data="digits").label == "default+data=digits+attacker_share=0.5"


# --- the removal rule: removed, or removed and no better than the attacker's own model ---------------------


def check(score: float) -> Check:
    """A check detected both ways (p = 1/(K + 1), above the paper's threshold) when `score` > 0.5."""
    return Check(score > 0.5, score, 0.5, 0.01 if score > 0.5 else 0.5, {}, "", score, 99, 99, 0 if score > 0.5 else 49)


def prepared(seed: int, own: float | None) -> Prepared:
    """A seed's preparation: marked utility 0.90 (so an attacked model keeps its utility at ≥ 0.85), the
    owner's unattacked model detected, and the attacker's own models' mean utility `own`."""
    return Prepared("null_embedding", seed, 0.95, 0.90, [check(s) for s in (0.1, 0.2, 0.3, 0.2)],
                    [check(s) for s in (0.1, 0.0, 0.2, 0.1)], 0.0, owner_check=check(0.95),
                    attacker_scratch_utility=own)


def removed_cell(seed: int, utility: float) -> CellResult:
    """An attacked model whose mark is gone (score 0.05), with utility `utility`."""
    return CellResult(CellId("null_embedding", "fine_tuning", "all_layers", seed), "ok", utility_attacked=utility,
                      check=check(0.05), matched_innocent=check(0.0))


def row_of(utilities: list[float], own: float | None) -> pd.Series:
    preps = {("null_embedding", s): prepared(s, own) for s in range(len(utilities))}
    cells = [removed_cell(s, u) for s, u in enumerate(utilities)]
    return leaderboard(cells, preps, alpha=0.01, max_utility_drop=0.05, attacker_data_share=0.1).iloc[0]


def test_a_removal_is_a_theft_only_when_it_beats_the_attackers_own_model():
    stolen = row_of([0.88] * 10, own=0.80)
    assert (stolen.attack_succeeded, stolen.removal_verdict) == ("yes", "removed")
    assert (stolen.seeds_removed, stolen.seeds_stolen, stolen.theft_rate) == (10, 10, 1.0)
    assert (stolen.attacker_scratch_utility, stolen.attacker_data_share) == (0.80, 0.1)
    futile = row_of([0.88] * 10, own=0.89)  # utility kept (≥ 0.85), yet below what the thief trains itself
    assert futile.removal_verdict == "removed, no better than its own model"
    assert futile.attack_succeeded == "no: no better than its own model"
    assert (futile.seeds_removed, futile.seeds_stolen, futile.removal_rate) == (10, 0, 1.0)
    tied = row_of([0.88] * 10, own=0.88)  # beating it means strictly above
    assert tied.attack_succeeded == "no: no better than its own model"
    mixed = row_of([0.88] * 5 + [0.86] * 5, own=0.87)  # removed in all 10, better than its own in 5
    assert mixed.removal_verdict == "removed, undecided (5/10) whether better than its own model"
    assert mixed.attack_succeeded == "undecided (5/10)"


def test_without_a_baseline_every_removal_counts_as_before():
    old = row_of([0.88] * 10, own=None)  # a run before the baseline was recorded, or a pretrained VLP source
    assert (old.attack_succeeded, old.removal_verdict, old.seeds_stolen) == ("yes", "removed", 10)
    assert pd.isna(old.attacker_scratch_utility)
    lost = row_of([0.60] * 10, own=0.50)  # the utility allowance still applies first
    assert (lost.attack_succeeded, lost.removal_verdict, lost.seeds_stolen) == ("no: utility lost", "kept", 0)


def test_the_summary_and_the_worst_case_tell_the_two_readings_apart():
    def table(own: float) -> pd.DataFrame:
        preps = {("null_embedding", s): prepared(s, own) for s in range(10)}
        cells = [removed_cell(s, 0.88) for s in range(10)]
        cells += [dataclasses.replace(c, cell=dataclasses.replace(c.cell, attack="none", strength="-"),
                                      check=check(0.95)) for c in cells]
        return leaderboard(cells, preps, alpha=0.01, attacker_data_share=0.1)

    futile = table(own=0.89)
    assert summary_matrix(futile).iloc[0]["fine_tuning"].startswith("removed, no better than its own model (")
    assert worst_case(futile).iloc[0]["worst case"] == (
        "no theft pays as the seeds decide; removed by fine_tuning all_layers (utility 0.88, its own model 0.89): "
        "no better than its own model")
    from bench.site import outcome

    assert outcome(summary_matrix(futile).iloc[0]["fine_tuning"]) == "unpaid"  # the site's colour: not a theft
    stolen = table(own=0.80)
    assert summary_matrix(stolen).iloc[0]["fine_tuning"].startswith("removed (all_layers")
    assert worst_case(stolen).iloc[0]["worst case"] == "removed by fine_tuning all_layers (utility 0.88)"
    assert outcome(summary_matrix(stolen).iloc[0]["fine_tuning"]) == "removed"


# --- what pretraining buys: the low-label probe against an untrained encoder ---------------------------------


def test_the_low_label_probe_trains_on_ten_labels_per_class(monkeypatch):
    from bench.kinds import encoder as encoder_kind

    ctx = Context(load_digits(16), get_profile("default"), 0, "encoder", torch.device("cpu"), None)
    seen = []
    real = encoder_kind.linear_probe
    monkeypatch.setattr(encoder_kind, "linear_probe", lambda f, y, tf, ty: seen.append(y) or real(f, y, tf, ty))
    model = ctx.kind.new(ctx)
    low = ctx.low_label_utility(model)
    assert torch.bincount(seen[0]).tolist() == [10] * 10  # 10 labelled images of each class …
    again = ctx.low_label_utility(model)
    assert torch.equal(seen[1], seen[0]) and low == again  # … the same ones every time
    assert 0.1 < low < ctx.utility(model)  # fewer labels, a weaker probe (untrained: about 0.87 against 0.96)
    assert Context(load_digits(16), get_profile("default"), 0, "classifier", torch.device("cpu"),
                   None).low_label_utility(model) is None  # a kind without the reading


def test_the_untrained_reference_is_seeded_and_leaves_the_random_state_alone():
    ctx = Context(load_digits(16), get_profile("default"), 3, "encoder", torch.device("cpu"), None)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    untrained = ctx.untrained_model()
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(3)
    fresh = ctx.kind.new(ctx)  # what the seed's initialisation gives
    assert all(torch.equal(a, b) for a, b in zip(untrained.state_dict().values(), fresh.state_dict().values()))
    other = ctx.untrained_model(seed=4)
    assert not torch.equal(next(iter(other.parameters())), next(iter(untrained.parameters())))


def test_a_run_records_the_low_label_utilities_of_encoders_only(run_config):
    from bench.runner import run_matrix

    cfg = run_config(defenses=["awencoder", "null_embedding"], attacks=["pruning"], strengths=["0.5"],
                     profile="smoke")
    run_matrix(cfg, progress=False)
    db = ResultsDB(cfg.out, cfg.label)
    encoder, classifier = db.prepared()[("awencoder", 0)], db.prepared()[("null_embedding", 0)]
    lows = (encoder.utility_low_label_clean, encoder.utility_low_label_marked, encoder.utility_low_label_untrained)
    assert all(0.1 < u < 1 for u in lows), lows
    assert (classifier.utility_low_label_clean, classifier.utility_low_label_marked,
            classifier.utility_low_label_untrained) == (None, None, None)
    cells = {c.cell.defense: c for c in db.cells()}
    assert 0.1 < cells["awencoder"].utility_low_label < 1 and cells["null_embedding"].utility_low_label is None


def low_label_row(gains: list[float]) -> pd.Series:
    """The `none` row of ten seeds whose marked encoder's low-label utility beats an untrained one's by `gains`."""
    preps = {("awencoder", s): dataclasses.replace(prepared(s, 0.9), defense="awencoder",
                                                   utility_low_label_clean=0.86 + g, utility_low_label_marked=0.85 + g,
                                                   utility_low_label_untrained=0.85)
             for s, g in enumerate(gains)}
    cells = [CellResult(CellId("awencoder", "none", "-", s), "ok", utility_attacked=0.9, utility_low_label=0.85 + g,
                        check=check(0.95)) for s, g in enumerate(gains)]
    return leaderboard(cells, preps, alpha=0.01, attacker_data_share=0.1).iloc[0]


def test_worth_protecting_is_called_where_the_seeds_decide():
    worth = low_label_row([0.06] * 10)
    assert worth.worth_protecting == "yes"
    assert (worth.utility_low_label_marked, worth.utility_low_label_untrained) == pytest.approx((0.91, 0.85))
    assert worth.utility_low_label == pytest.approx(0.91) and worth.utility_low_label_clean == pytest.approx(0.92)
    assert low_label_row([0.02] * 9 + [0.06]).worth_protecting == "no"  # within the seeds' spread: not worth it
    assert low_label_row([0.06] * 6 + [0.0] * 4).worth_protecting == "undecided (6/10)"
    assert row_of([0.88] * 10, own=0.8).worth_protecting == ""  # a classifier: no low-label reading


def test_the_pretraining_table_shows_the_untrained_reference():
    from bench.report import pretraining, summary_markdown

    table = pd.DataFrame([low_label_row([0.02] * 10)])
    rows = pretraining(table)
    assert rows.to_dict("records") == [{"defense": "awencoder", "utility_low_label_clean": pytest.approx(0.88),
                                        "utility_low_label_marked": pytest.approx(0.87),
                                        "utility_low_label_untrained": pytest.approx(0.85), "worth_protecting": "no"}]
    assert "| awencoder | 0.880 | 0.870 | 0.850 | no |" in " ".join(summary_markdown(table, 0.05, 0.01).split())
    classifier = pd.DataFrame([row_of([0.88] * 10, own=0.8)])
    assert pretraining(classifier).empty and "What pretraining buys" not in summary_markdown(classifier, 0.05, 0.01)


# --- the claims use the strict reading ----------------------------------------------------------------------


def claim_rows(seeds_stolen: int) -> pd.DataFrame:
    base = {c: float("nan") for c in COLUMNS}
    base.update({"defense": "null_embedding", "status": "ok", "n_seeds": 10})
    none = {**base, "attack": "none", "strength": "-", "attack_succeeded": "no attack", "seeds_detected": 10}
    attacked = {**base, "attack": "fine_tuning", "strength": "all_layers", "removal_rate": 1.0, "seeds_removed": 10,
                "theft_rate": seeds_stolen / 10, "seeds_stolen": seeds_stolen, "attacker_scratch_utility": 0.89,
                "tpr_at_alpha": 0.0, "utility_attacked": 0.88}
    return pd.DataFrame([none, attacked], columns=COLUMNS)


def test_a_claim_to_survive_fails_only_on_successful_thefts():
    claim = Claim("survives fine-tuning", "survives", ("fine_tuning",))
    futile = survives(claim_rows(seeds_stolen=0), claim, 0.05)
    assert futile.verdict == "holds"
    assert "removed in 10/10 seeds, stolen in 0/10 (its own model 0.89)" in futile.measured
    assert survives(claim_rows(seeds_stolen=10), claim, 0.05).verdict == "fails (removed by fine_tuning all_layers)"
    assert survives(claim_rows(seeds_stolen=6), claim, 0.05).verdict == "undecided (fine_tuning all_layers 6/10)"


def test_the_piracy_curve_counts_seeds_per_host_and_share(tmp_path):
    """tests/benchmarks/piracy_curve.py runs the matrix's piracy at `12@P%` on the marked, the clean and the
    pirate's own model and counts the seeds in which the pirate's mark verifies (smoke budgets: plumbing only)."""
    from benchmarks.piracy_curve import HOSTS, curve

    counts = curve("null_embedding", 1, [50], profile="smoke", cache=str(tmp_path / "cache"))
    assert set(counts) == set(HOSTS) and all(set(c) == {50} and c[50] in (0, 1) for c in counts.values())
