"""Claims are judged from the rows: a verdict follows the numbers, and names the setting that decides it."""
import math

import pandas as pd

from bench.claims import Claim, claims_table, few_false_positives, piracy_resistant, survives
from bench.report import COLUMNS


def rows(*specs: dict) -> pd.DataFrame:
    out = []
    for spec in specs:
        row = {c: math.nan for c in COLUMNS}
        row.update({"defense": "vlpmarker", "status": "ok", "n_seeds": 3, "n_innocent_models": 20,
                    "n_wrong_keys": 60, "n_attacked_clean": 3, **spec})
        out.append(row)
    return pd.DataFrame(out, columns=COLUMNS)


def test_a_test_that_never_fires_has_no_false_positives_but_fails_its_claim():
    claim = Claim("no false claims", "false_positives")
    silent = rows({"attack": "none", "strength": "-", "false_positive_rate": 0.0, "false_positive_rate_calibrated": 0.0,
                   "verification_rate": 0.0, "verification_rate_calibrated": 0.0})
    assert few_false_positives(silent, claim, 0.05).verdict.startswith("fails")
    good = silent.assign(verification_rate=1.0, verification_rate_calibrated=1.0)
    assert few_false_positives(good, claim, 0.05).verdict == "holds"
    loose = good.assign(false_positive_rate=0.2, false_positive_rate_calibrated=0.01)
    assert few_false_positives(loose, claim, 0.05).verdict.startswith("partly")


def test_survival_is_judged_per_attack_at_the_attackers_best_setting_chains_included():
    claim = Claim("survives extraction", "survives", ("extraction",))
    table = rows({"attack": "extraction", "strength": "500", "removal_rate": 0.0, "utility_attacked": 0.3},
                 {"attack": "extraction", "strength": "8000", "removal_rate": 0.0, "utility_attacked": 0.9},
                 {"attack": "extraction:8000>pruning", "strength": "0.5", "removal_rate": 1.0, "utility_attacked": 0.9},
                 {"attack": "extraction_rotated", "strength": "8000", "removal_rate": 1.0, "utility_attacked": 0.9})
    judged = survives(table, claim, 0.05)
    assert judged.verdict == "partly (removed by extraction:8000>pruning 0.5)"  # extraction_rotated not named
    assert survives(table[table.attack == "extraction"], claim, 0.05).verdict == "holds"


def test_piracy_fails_where_the_pirate_verifies_with_utility_kept():
    claim = Claim("piracy resistant", "piracy")
    table = rows({"attack": "piracy", "strength": "2", "pirate_verification_rate": 1.0, "utility_attacked": 0.5,
                  "utility_marked": 0.95},
                 {"attack": "piracy", "strength": "12", "pirate_verification_rate": 1.0, "utility_attacked": 0.95,
                  "utility_marked": 0.95, "pirate_clean_verification_rate": 1.0})
    judged = piracy_resistant(table, claim, 0.05)
    assert judged.verdict == "partly (the pirate's mark verifies at 12)" and "1.00 on clean" in judged.measured


def test_claims_table_reads_each_defenses_declared_claims():
    table = rows({"attack": "none", "strength": "-", "utility_clean": 0.96, "utility_marked": 0.96,
                  "false_positive_rate": 0.0, "false_positive_rate_calibrated": 0.0, "verification_rate": 1.0,
                  "verification_rate_calibrated": 1.0, "identification_rate": 1.0})
    claims = claims_table(table, 0.05)
    assert len(claims) == 4 and set(claims.verdict) == {"holds", "not tested"}  # no extraction rows here
