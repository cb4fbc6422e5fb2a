"""Verdicts a paper can cite: every check read by its key-randomization p-value at α (and beside it by the
paper's threshold), false accusation and key specificity in their own columns, owner and pirate judged by one
rule, attack success needing removal *and* utility, threat models, and numbers that do not depend on the
ambient kernel settings in portable mode."""
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from bench import registry
from bench.claims import Claim, claims_table, survives
from bench.context import Clean
from bench.protocols import WmbenchError
from bench.report import summary_matrix, write_leaderboard
from bench.scoring import leaderboard, wilson
from bench.results import CellId, CellResult, Check, Prepared
from bench.runner import make_plan, run_matrix

K = 99


def check(score: float, unit: str = "", detected: bool | None = None, p: float | None = None) -> Check:
    """A check whose paper verdict is `score > 0.5` (or `detected`) and whose key-randomization p-value is
    1/(K+1) for a score above 0.5 (or `p`), 0.5 otherwise."""
    p = (1 / (K + 1) if score > 0.5 else 0.5) if p is None else p
    exceed = round(p * (K + 1)) - 1
    return Check(score > 0.5 if detected is None else detected, score, 0.5, p, {}, unit, score, K, K, exceed)


def prepared(seed: int, innocent_scores: list[float], party_scores: list[float], marked: float = 0.9,
             owner: float | None = 0.95) -> Prepared:
    """A seed's preparation; `owner` is the owner's score on its unattacked marked model (None: not recorded,
    as in runs before it was, whose `none` cells say it)."""
    innocent = [check(s, f"model {i}") for i, s in enumerate(innocent_scores)]
    parties = [check(s, f"owner of seed {j}") for j, s in enumerate(party_scores)]
    return Prepared("null_embedding", seed, 0.95, marked, innocent, parties, 0.0,
                    owner_check=None if owner is None else check(owner))


def cell(seed: int, score: float, utility: float, matched: float = 0.0) -> CellResult:
    return CellResult(CellId("null_embedding", "pruning", "0.9", seed), "ok", utility_attacked=utility,
                      check=check(score), matched_innocent=check(matched))


def test_false_accusation_and_key_specificity_land_in_their_own_columns():
    # the same 4 innocent models are checked with each of 3 seeds' keys: 12 (model, key) pairs, plus the 3
    # attacked clean models; the other parties' keys on the marked models are another question
    preps = {("null_embedding", s): prepared(s, [0.1, 0.2, 0.9 if s == 2 else 0.3, 0.1], [0.0, 0.8 if s == 0 else 0.1])
             for s in range(3)}
    cells = [cell(s, 0.95, 0.95) for s in range(3)]
    row = leaderboard(cells, preps, alpha=0.01).iloc[0]
    assert row.n_innocent_models == 4 and row.n_innocent_pairs == 15 and row.n_attacked_clean == 3
    assert row.innocent_fpr_at_alpha == pytest.approx(1 / 15)  # one pair flagged (seed 2's key on one model)
    assert row.innocent_fpr_ci_high == pytest.approx(wilson(1, 15)[1])
    assert row.n_party_pairs == 6 and row.key_collision_rate == pytest.approx(1 / 6)
    assert row.false_positive_rate == pytest.approx(1 / 15)  # the paper's threshold on the same pairs
    assert (row.fpr_ci_low, row.fpr_ci_high) == pytest.approx(wilson(1, 15))


def test_p_values_and_the_papers_threshold_are_read_apart():
    """A suspect whose statistic passes the paper's threshold while its key does not beat its null keys is
    detected by one reading and not the other; each verdict column follows its own."""
    preps = {("null_embedding", s): prepared(s, [0.1], [0.1]) for s in range(10)}
    cells = [CellResult(CellId("null_embedding", "pruning", "0.9", s), "ok", utility_attacked=0.94,
                        check=check(0.9, p=0.2), matched_innocent=check(0.0)) for s in range(10)]
    row = leaderboard(cells, preps, alpha=0.01).iloc[0]
    assert row.tpr_at_alpha == 0 and row.verification_rate == 1 and row.p_value == pytest.approx(0.2)
    assert row.verdict_alpha == row.removal_verdict == "removed" and row.verdict_paper_threshold == "kept"
    paper = leaderboard(cells, preps, alpha=0.01, rule="paper").iloc[0]
    assert paper.removal_verdict == "kept" and paper.verdict_alpha == "removed" and paper.seeds_detected == 10
    assert leaderboard(cells, preps, alpha=0.25).iloc[0].removal_verdict == "kept"  # p = 0.2 ≤ 0.25


def test_owner_and_pirate_are_judged_by_one_rule():
    preps = {("null_embedding", s): prepared(s, [0.1], [0.1]) for s in range(10)}
    # the pirate's statistic clears the paper's threshold but not its own nulls; the owner's does both
    cells = [CellResult(CellId("null_embedding", "piracy", "12", s), "ok", utility_attacked=0.95, check=check(0.95),
                        pirate_check=check(0.9, p=0.3), matched_innocent=check(0.0)) for s in range(10)]
    at_alpha = leaderboard(cells, preps, alpha=0.01).iloc[0]
    assert at_alpha.seeds_detected == 10 and at_alpha.seeds_pirate_verified == 0 and at_alpha.ambiguity_rate == 0
    paper = leaderboard(cells, preps, alpha=0.01, rule="paper").iloc[0]
    assert paper.seeds_detected == 10 and paper.seeds_pirate_verified == 10 and paper.ambiguity_rate == 1
    # the same check given to owner and pirate gets the same reading
    same = [dataclasses.replace(c, pirate_check=c.check) for c in cells]
    row = leaderboard(same, preps, alpha=0.01).iloc[0]
    assert row.seeds_detected == row.seeds_pirate_verified == 10


def test_claims_mark_where_the_two_readings_differ():
    methods = {"defenses": {"null_embedding": {"model_kind": "classifier", "claims": [
        {"text": "survives pruning", "test": "survives", "attacks": ["pruning"]}]}}, "attacks": {}}
    preps = {("null_embedding", s): prepared(s, [0.1], [0.1]) for s in range(10)}
    cells = [CellResult(CellId("null_embedding", "pruning", "0.9", s), "ok", utility_attacked=0.94,
                        check=check(0.9, p=0.2), matched_innocent=check(0.0)) for s in range(10)]
    cells += [unattacked(s, 0.95) for s in range(10)]
    table = leaderboard(cells, preps, 0.01, methods=methods)
    paper = leaderboard(cells, preps, 0.01, methods=methods, rule="paper")
    claims = claims_table(table, 0.05, methods, paper).iloc[0]
    assert claims.verdict.startswith("fails") and claims.verdict_paper_threshold == "holds" and claims.differs == "yes"


def test_removal_needs_the_mark_gone_and_the_utility_kept():
    def row_of(cells: list[CellResult], n: int):
        preps = {("null_embedding", s): prepared(s, [0.1, 0.2, 0.3, 0.2], [0.1, 0.0, 0.2, 0.1]) for s in range(n)}
        return leaderboard(cells, preps, alpha=0.01, max_utility_drop=0.05).iloc[0]

    # 10 seeds: removed in 1 (undetected, utility kept), utility lost in 8, detected in 1: decided "no"
    mixed = row_of([cell(0, 0.05, 0.94)] + [cell(s, 0.05, 0.60) for s in range(1, 9)] + [cell(9, 0.95, 0.94)], 10)
    assert mixed.removal_rate == pytest.approx(0.1) and mixed.seeds_removed == 1
    assert mixed.attack_succeeded == "no: utility lost" and mixed.removal_verdict == "kept"
    kept = row_of([cell(s, 0.95, 0.94) for s in range(10)], 10)
    assert kept.removal_rate == 0 and kept.attack_succeeded == "no: mark kept" and kept.removal_verdict == "kept"
    removed = row_of([cell(s, 0.05, 0.93) for s in range(10)], 10)
    assert removed.removal_rate == 1 and removed.attack_succeeded == "yes" and removed.removal_verdict == "removed"
    # the boundaries of the 95 % interval at 10 seeds: 9/10 decides, 8/10 and 2/10 do not, 1/10 does
    nine = row_of([cell(s, 0.05, 0.93) for s in range(9)] + [cell(9, 0.95, 0.93)], 10)
    assert nine.attack_succeeded == "yes"
    eight = row_of([cell(s, 0.05, 0.93) for s in range(8)] + [cell(s, 0.95, 0.93) for s in (8, 9)], 10)
    assert eight.attack_succeeded == eight.removal_verdict == "undecided (8/10)"
    two = row_of([cell(s, 0.05, 0.93) for s in range(2)] + [cell(s, 0.95, 0.93) for s in range(2, 10)], 10)
    assert two.attack_succeeded == "undecided (2/10)"
    # 3 of 3 seeds never decide, 5 of 5 do
    assert row_of([cell(s, 0.05, 0.93) for s in range(3)], 3).attack_succeeded == "undecided (3/3)"
    assert row_of([cell(s, 0.05, 0.93) for s in range(5)], 5).attack_succeeded == "yes"
    assert row_of([cell(s, 0.05, 0.93) for s in range(4)] + [cell(4, 0.9, 0.9)], 5).attack_succeeded == "undecided (4/5)"


def unattacked(seed: int, score: float) -> CellResult:
    return CellResult(CellId("null_embedding", "none", "-", seed), "ok", utility_attacked=0.95, check=check(score),
                      matched_innocent=check(0.0))


def test_an_attack_cannot_remove_a_mark_that_was_not_there():
    """A seed whose owner's unattacked model is not detected counts as no removal; when the seeds decide that
    the mark was absent, the row says so instead of `yes`, and the papers' robustness claims are not judged
    from it; when they do not decide, the summary says `undecided before (k/n)`."""

    preps = {("null_embedding", s): prepared(s, [0.1, 0.2, 0.3, 0.2], [0.1, 0.0, 0.2, 0.1], owner=None)
             for s in range(10)}
    attacked = [cell(s, 0.05, 0.94) for s in range(10)]  # undetected after the attack, utility kept
    unknown = leaderboard(attacked, preps, alpha=0.01).iloc[0]  # no record of the unattacked model at all
    assert unknown.seeds_removed == 0 and unknown.attack_succeeded == "no: mark not detected before the attack"
    recorded = {k: dataclasses.replace(p, owner_check=check(0.95)) for k, p in preps.items()}
    assert leaderboard(attacked, recorded, alpha=0.01).iloc[0].attack_succeeded == "yes"
    marked_everywhere = [unattacked(s, 0.95) for s in range(10)]
    table = leaderboard(attacked + marked_everywhere, preps, alpha=0.01)
    assert table.set_index("attack").loc["pruning", "attack_succeeded"] == "yes"
    assert summary_matrix(table).set_index("defense").loc["null_embedding", "none"].startswith("verified")
    mostly_absent = [unattacked(0, 0.95)] + [unattacked(s, 0.05) for s in range(1, 10)]  # the mark took in seed 0
    table = leaderboard(attacked + mostly_absent, preps, alpha=0.01)
    row = table.set_index("attack").loc["pruning"]
    assert row.removal_rate == pytest.approx(0.1) and row.attack_succeeded == "no: mark not detected before the attack"
    verdict = survives(table.assign(model_kind="classifier"), Claim("survives pruning", "survives", ("pruning",)), 0.05)
    assert verdict.verdict.startswith("not tested")
    summary = summary_matrix(table).set_index("defense").loc["null_embedding"]
    assert summary["pruning"].startswith("not verified before") and summary["none"].startswith("not verified")
    half = [unattacked(s, 0.95 if s < 6 else 0.05) for s in range(10)]  # 6 of 10: undecided
    table = leaderboard(attacked + half, preps, alpha=0.01)
    summary = summary_matrix(table).set_index("defense").loc["null_embedding"]
    assert summary["none"].startswith("undecided (6/10)") and summary["pruning"].startswith("undecided (6/10)")
    assert survives(table, Claim("survives pruning", "survives", ("pruning",)), 0.05).verdict.startswith(
        "not tested (the owner's own unattacked model detected in 6/10 seeds)")


def test_a_pretrained_vlp_source_takes_its_innocents_from_named_checkpoints_only():
    import dataclasses

    from bench.config import get_profile
    from bench.context import innocent_pool, innocent_pool_gap

    pretrained = dataclasses.replace(get_profile("default"), vlp="open_clip:ViT-B-32:/weights/owner.pt")
    assert innocent_pool(pretrained, "vlp") == [] and "no innocent checkpoints named" in innocent_pool_gap(pretrained, "vlp")
    named = dataclasses.replace(pretrained, vlp_innocents=("open_clip:ViT-B-32:/weights/other.pt",))
    assert [c.checkpoint for c in innocent_pool(named, "vlp")] == ["open_clip:ViT-B-32:/weights/other.pt"]
    assert len(innocent_pool(pretrained, "classifier")) == 10 and not innocent_pool_gap(pretrained, "classifier")
    # without innocents the rows say why instead of a false-positive rate
    preps = {("null_embedding", 0): dataclasses.replace(prepared(0, [], [0.1, 0.2]), innocent_gap="no checkpoints")}
    row = leaderboard([cell(0, 0.9, 0.95)], preps, alpha=0.01).iloc[0]
    assert row.fpr_note == "no checkpoints" and row.n_innocent_models == 0
    assert np.isnan(row.false_positive_rate) and np.isnan(row.innocent_fpr_at_alpha)


def test_a_pool_holding_the_owners_weights_is_refused(run_config, monkeypatch):
    import bench.runner as runner

    # an "innocent" trained with the owner's own seed on the owner's split is the owner's clean model
    monkeypatch.setattr(runner, "innocent_pool", lambda profile, kind: [Clean(10_000), Clean(0)])
    cfg = run_config(defenses=["null_embedding"], attacks=["none"], profile="smoke")
    with pytest.raises(WmbenchError, match=r"innocent classifier model \(seed 0 on the owner split\) has the same "
                                           r"weights as the owner's clean model"):
        run_matrix(cfg, progress=False)


def test_a_pair_outside_the_threat_model_is_na_and_never_run(run_config, monkeypatch):
    from attacks.pruning import Pruning

    vlp, pruning = registry.get_defense("vlpmarker"), registry.get_attack("pruning")
    assert "needs the model's weights" in registry.threat_model_gap(vlp, pruning)
    assert not registry.threat_model_gap(vlp, registry.get_attack("extraction"))
    assert not registry.threat_model_gap(registry.get_defense("null_embedding"), pruning)
    monkeypatch.setattr(Pruning, "run", lambda *a: pytest.fail("an out-of-threat-model attack ran"))
    cfg = run_config(defenses=["vlpmarker"], attacks=["pruning"], profile="smoke")
    plan = make_plan(cfg)
    assert set(plan.outside) == set(plan.cells) and not plan.groups
    summary = run_matrix(cfg, progress=False)
    write_leaderboard(cfg.out, cfg.label)
    assert (summary.ran, summary.failed, summary.outside) == (0, 0, 4)
    import pandas as pd

    table = pd.read_csv(cfg.out / "leaderboard.csv")
    assert len(table) == 4 and table.status.str.startswith("n/a: outside the threat model").all()
    assert table.verification_rate.isna().all()


def run_portable_cell(tmp_path, name: str, ambient: dict) -> dict:
    out = tmp_path / name
    env = {**os.environ, **ambient}
    cmd = [sys.executable, "-m", "bench.cli", "run", "--profile", "smoke", "--defenses", "null_embedding",
           "--attacks", "fine_tuning", "--strengths", "all_layers", "--seeds", "1", "--workers", "1", "--portable",
           "--out", str(out), "--cache", str(tmp_path / f"cache-{name}"), "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with sqlite3.connect(out / "results.sqlite") as con:
        data = json.loads(con.execute("SELECT data FROM cells").fetchone()[0])
        prepared_row = json.loads(con.execute("SELECT data FROM prepared").fetchone()[0])
        environment = json.loads(con.execute("SELECT value FROM meta WHERE name='environment'").fetchone()[0])
    return {"utility": data["utility_attacked"], "check": data["check"], "matched": data["matched_innocent"],
            "marked": prepared_row["utility_marked"], "innocent": prepared_row["innocent_checks"],
            "environment": environment}


@pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64", reason="kernel pins are x86-64's")
def test_portable_mode_gives_identical_numbers_under_different_ambient_kernels(tmp_path):
    wide = run_portable_cell(tmp_path, "wide", {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "ALL"})
    narrow = run_portable_cell(tmp_path, "narrow", {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"})
    env = wide.pop("environment")
    assert narrow.pop("environment")["kernel_settings"] == env["kernel_settings"]
    assert env["portable"] and env["kernel_settings"]["ATEN_CPU_CAPABILITY"] == "avx2" and env["torch"]
    assert wide == narrow
