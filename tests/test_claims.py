"""Claims are judged from the rows: a verdict follows the numbers, names the setting that decides it, and is
called only where the seeds' interval decides — every branch of every judge, boundaries included."""
import math

import pandas as pd
import pytest

from bench import registry
from bench.claims import (JUDGES, Claim, Judge, claims_table, few_false_positives, identifies_users, piracy_resistant,
                          survives, utility_kept)
from bench.report import summary_matrix
from bench.scoring import COLUMNS


def rows(*specs: dict) -> pd.DataFrame:
    out = []
    for spec in specs:
        row = {c: math.nan for c in COLUMNS}
        row.update({"defense": "vlpmarker", "status": "ok", "n_seeds": 10, "n_innocent_models": 20,
                    "n_innocent_pairs": 100, "n_attacked_clean": 20, "reading": "alpha", "alpha": 0.01,
                    "null_units": 99, **spec})
        out.append(row)
    return pd.DataFrame(out, columns=COLUMNS)


NONE = {"attack": "none", "strength": "-", "attack_succeeded": "no attack", "seeds_detected": 10,
        "verification_rate": 1.0, "tpr_at_alpha": 1.0, "false_positive_rate": 0.0, "fpr_ci_low": 0.0,
        "fpr_ci_high": 0.037, "innocent_fpr_at_alpha": 0.0, "innocent_fpr_ci_high": 0.037, "utility_attacked": 0.96}


def test_false_positives_hold_fail_partly_and_wait_for_the_seeds():
    claim = Claim("no false claims", "false_positives")
    good = rows(NONE)
    assert few_false_positives(good, claim, 0.05).verdict == "holds"
    silent = rows({**NONE, "seeds_detected": 0, "verification_rate": 0.0})
    assert few_false_positives(silent, claim, 0.05).verdict.startswith("fails (the test does not verify")
    unsure = rows({**NONE, "seeds_detected": 7})
    assert few_false_positives(unsure, claim, 0.05).verdict == "undecided (the owner's own model detected in 7/10 seeds)"
    # the paper's threshold flags many pairs; the reading at α does not: each reading judges by its own rate
    loose = {**NONE, "false_positive_rate": 0.2, "fpr_ci_low": 0.14, "fpr_ci_high": 0.28}
    assert few_false_positives(rows(loose), claim, 0.05).verdict == "holds"
    assert few_false_positives(rows({**loose, "reading": "paper"}), claim, 0.05).verdict == "fails"
    bad = rows({**NONE, "innocent_fpr_at_alpha": 0.2, "innocent_fpr_ci_high": 0.29})
    assert few_false_positives(bad, claim, 0.05).verdict == "fails"
    straddles = rows({**NONE, "innocent_fpr_at_alpha": 0.05, "innocent_fpr_ci_high": 0.11})
    assert few_false_positives(straddles, claim, 0.05).verdict == "undecided (undecided (5/100) innocent pairs flagged)"
    assert few_false_positives(rows({**NONE, "attack": "pruning"}), claim, 0.05).verdict == "not tested"


def test_utility_holds_within_a_point_partly_within_the_allowance_else_fails():
    claim = Claim("keeps utility", "utility")
    judged = {change: utility_kept(rows({**NONE, "utility_clean": 0.96, "utility_marked": 0.96 + change}), claim,
                                   0.05).verdict for change in (0.0, -0.009, -0.02, -0.049, -0.06)}
    assert judged[0.0] == judged[-0.009] == "holds"
    assert judged[-0.02] == judged[-0.049] == "partly"
    assert judged[-0.06].startswith("fails")


def test_survival_is_judged_per_attack_at_the_attackers_best_setting_chains_included():
    claim = Claim("survives extraction", "survives", ("extraction",))
    table = rows(NONE,
                 {"attack": "extraction", "strength": "500", "removal_rate": 0.0, "seeds_removed": 0,
                  "utility_attacked": 0.3},
                 {"attack": "extraction", "strength": "8000", "removal_rate": 0.0, "seeds_removed": 0,
                  "utility_attacked": 0.9},
                 {"attack": "extraction:8000>pruning", "strength": "0.5", "removal_rate": 1.0, "seeds_removed": 10,
                  "utility_attacked": 0.9},
                 {"attack": "extraction_rotated", "strength": "8000", "removal_rate": 1.0, "seeds_removed": 10,
                  "utility_attacked": 0.9})
    judged = survives(table, claim, 0.05)
    assert judged.verdict == "partly (removed by extraction:8000>pruning 0.5)"  # extraction_rotated not named
    only_extraction = table[table.attack.isin(["none", "extraction"])]
    assert survives(only_extraction, claim, 0.05).verdict == "holds"
    every = table.assign(attack=table.attack.replace({"extraction": "extraction:8000>pruning"}))
    every = every[every.attack != "extraction_rotated"]
    assert survives(every, claim, 0.05).verdict.startswith("fails (removed by")
    # 9/10 removes, 8/10 does not decide
    nine = table.assign(seeds_removed=table.seeds_removed.replace({10: 9}))
    assert survives(nine, claim, 0.05).verdict.startswith("partly (removed by extraction:8000>pruning")
    eight = table.assign(seeds_removed=table.seeds_removed.replace({10: 8}), removal_rate=table.removal_rate * 0.8)
    assert survives(eight, claim, 0.05).verdict == "undecided (extraction:8000>pruning 0.5 8/10)"
    assert survives(table[table.attack == "none"], claim, 0.05).verdict == "not tested"


def test_piracy_fails_where_the_pirate_verifies_with_utility_kept_and_waits_for_the_seeds():
    claim = Claim("piracy resistant", "piracy")
    weak = {"attack": "piracy", "strength": "2", "seeds_pirate_verified": 10, "pirate_verification_rate": 1.0,
            "utility_attacked": 0.5, "utility_marked": 0.95}
    strong = {"attack": "piracy", "strength": "12", "seeds_pirate_verified": 10, "pirate_verification_rate": 1.0,
              "utility_attacked": 0.95, "utility_marked": 0.95, "pirate_clean_verification_rate": 1.0}
    judged = piracy_resistant(rows(weak, strong), claim, 0.05)
    assert judged.verdict == "partly (the pirate's mark verifies at 12)" and "1.00 on clean" in judged.measured
    assert piracy_resistant(rows({**weak, "utility_attacked": 0.95}, strong), claim, 0.05).verdict.startswith("fails")
    none_forged = rows({**weak, "seeds_pirate_verified": 0}, {**strong, "seeds_pirate_verified": 1})
    assert piracy_resistant(none_forged, claim, 0.05).verdict == "holds"
    unsure = rows({**weak, "seeds_pirate_verified": 0}, {**strong, "seeds_pirate_verified": 7})
    assert piracy_resistant(unsure, claim, 0.05).verdict == "undecided (12 7/10)"
    assert piracy_resistant(rows(NONE), claim, 0.05).verdict == "not tested"


def test_identification_holds_fails_or_waits_for_the_seeds():
    claim = Claim("identifies", "identification")
    verdicts = {k: identifies_users(rows({**NONE, "seeds_identified": k}), claim, 0.05).verdict for k in (10, 9, 8, 2, 1)}
    assert verdicts == {10: "holds", 9: "holds", 8: "undecided (8/10)", 2: "undecided (2/10)", 1: "fails"}


def test_claims_table_reports_a_claim_it_cannot_judge_instead_of_dropping_it(monkeypatch):
    table = rows({**NONE, "utility_clean": 0.96, "utility_marked": 0.96, "seeds_identified": 10})
    methods = registry.describe_methods(["vlpmarker"], [])
    claims = claims_table(table, 0.05, methods)
    assert len(claims) == 4 and set(claims.verdict) == {"holds", "not tested"}  # no extraction rows here

    def broken(rows, claim, drop):
        raise KeyError("a column this judge needs")

    monkeypatch.setitem(JUDGES._entries, "identification", Judge("identification", broken))
    claims = claims_table(table, 0.05, methods)
    assert len(claims) == 4
    assert claims.verdict.str.startswith("error while judging (KeyError").sum() == 1
    unknown = claims_table(table.assign(defense="a_defense_no_longer_registered"), 0.05, methods)
    assert len(unknown) == 1 and unknown.verdict[0].startswith("not judged (the run recorded no description")


def test_the_summary_calls_the_none_column_only_where_the_seeds_decide():
    defense = registry.get_defense("vlpmarker").name
    for k, expected in ((10, "verified"), (9, "verified"), (8, "undecided (8/10)"), (1, "not verified")):
        cell = summary_matrix(rows({**NONE, "defense": defense, "seeds_detected": k})).loc[0, "none"]
        assert cell.startswith(expected), (k, cell)


@pytest.mark.parametrize("removed,expected", [(10, "removed"), (9, "removed"), (8, "undecided (8/10)"),
                                              (1, "kept")])
def test_the_summary_cell_of_an_attack_follows_the_rows_decided_verdict(removed, expected):
    from bench.scoring import removal

    verdict = removal([True] * 10, [False] * removed + [True] * (10 - removed), [True] * 10)
    table = rows(NONE, {"attack": "pruning", "strength": "0.9", "utility_attacked": 0.9, "tpr_at_alpha": 0.5, **verdict})
    assert summary_matrix(table).loc[0, "pruning"].startswith(expected)


def test_the_worst_case_is_the_removal_that_leaves_the_thief_the_most_utility():
    from bench.report import worst_case
    from bench.scoring import removal

    def row(attack, family, strength, removed, utility):
        verdict = removal([True] * 10, [False] * removed + [True] * (10 - removed), [True] * 10)
        return {"attack": attack, "family": family, "strength": strength, "utility_attacked": utility, **verdict}

    table = rows(NONE, row("pruning", "pruning", "0.9", 10, 0.80), row("fine_tuning", "fine-tuning", "all", 10, 0.93),
                 row("extraction", "extraction", "8000", 2, 0.95))
    worst = worst_case(table).iloc[0]
    assert worst["worst case"] == "removed by fine_tuning all (utility 0.93)"
    assert worst["extraction"].startswith("undecided (2/10)") and worst["pruning"].startswith("removed")
    kept = worst_case(rows(NONE, row("pruning", "pruning", "0.9", 0, 0.9), row("piracy", "piracy", "2", 6, 0.9)))
    assert kept.iloc[0]["worst case"].startswith("no attack removes it as the seeds decide; closest piracy 2")
    assert "1 settings undecided" in kept.iloc[0]["worst case"]


def test_an_attack_that_did_nothing_reads_as_its_own_outcome_not_as_a_kept_mark():
    """Neural Cleanse that flags no label returns the model unchanged: the row says `nothing flagged`."""
    import dataclasses

    from bench.results import CellId, CellResult, Check, Prepared
    from bench.scoring import leaderboard

    def check(score):
        return Check(score > 0.5, score, 0.5, 0.01 if score > 0.5 else 0.5, {}, "", score, 99, 99, 0)

    preps = {("null_embedding", s): Prepared("null_embedding", s, 0.95, 0.95, [check(0.1)], [check(0.1)], 0.0,
                                             owner_check=check(0.9)) for s in range(10)}
    silent = [CellResult(CellId("null_embedding", "neural_cleanse", "1", s), "ok", utility_attacked=0.95,
                         check=check(0.9), attack_report={"n_flagged": 0, "inactive": "nothing flagged"})
              for s in range(10)]
    row = leaderboard(silent, preps, alpha=0.01).iloc[0]
    assert row.attack_succeeded == "no: nothing flagged" and row.seeds_inactive == 10
    assert summary_matrix(row.to_frame().T.assign(n_seeds=10)).iloc[0]["neural_cleanse"].startswith("nothing flagged")
    flagged = [dataclasses.replace(c, attack_report={"n_flagged": 1}) for c in silent]
    assert leaderboard(flagged, preps, alpha=0.01).iloc[0].attack_succeeded == "no: mark kept"


def test_survival_of_an_attack_that_did_nothing_is_not_tested():
    claim = Claim("survives Neural Cleanse", "survives", ("neural_cleanse",))
    idle = rows(NONE, {"attack": "neural_cleanse", "strength": "1", "removal_rate": 0.0, "seeds_removed": 0,
                       "utility_attacked": 0.95, "attack_succeeded": "no: nothing flagged"})
    judged = survives(idle, claim, 0.05)
    assert judged.verdict == "not tested (the attacks left the model unchanged)" and "nothing flagged" in judged.measured
    acted = idle.assign(attack_succeeded=idle.attack_succeeded.replace({"no: nothing flagged": "no: mark kept"}))
    assert survives(acted, claim, 0.05).verdict == "holds"


def test_a_defense_given_only_the_no_attack_row_says_so_for_its_attack_claims():
    methods = {"defenses": {"vlpmarker": {"claims": [
        {"text": "keeps utility", "test": "utility", "attacks": []},
        {"text": "survives extraction", "test": "survives", "attacks": ["extraction"]}]}}}
    table = rows({**NONE, "utility_clean": 0.96, "utility_marked": 0.96})
    judged = claims_table(table, 0.05, methods).set_index("claim")
    assert judged.loc["keeps utility", "verdict"] == "holds"
    assert judged.loc["survives extraction", "verdict"] == "not tested"
    assert "only the no-attack row" in judged.loc["survives extraction", "measured"]
    with_attacks = rows({**NONE, "utility_clean": 0.96, "utility_marked": 0.96}, {"attack": "pruning", "strength": "0.5"})
    assert claims_table(with_attacks, 0.05, methods).set_index("claim").loc["survives extraction", "measured"] == (
        "no finished row in this run")
