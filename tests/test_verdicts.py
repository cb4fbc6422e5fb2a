"""Verdicts a paper can cite: false positives counted over distinct units, thresholds calibrated on
innocents they are not judged on, attack success needing removal *and* utility, threat models, and
numbers that do not depend on the machine's CPU kernels in portable mode."""
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from bench import registry
from bench.claims import Claim, survives
from bench.context import Clean
from bench.protocols import WmbenchError
from bench.report import summary_matrix, write_leaderboard
from bench.scoring import Calibration, Unit, in_sample_false_positive_rate, leaderboard
from bench.results import CellId, CellResult, Check, Prepared
from bench.runner import make_plan, run_matrix


def check(score: float, unit: str = "", detected: bool | None = None) -> Check:
    return Check(score > 0.5 if detected is None else detected, score, 0.5, 0.5, {}, unit)


def test_cross_fitted_calibration_is_not_optimistic_like_in_sample():
    rng = np.random.default_rng(0)
    pool = [Unit(f"m{i}", "model", float(s), False) for i, s in enumerate(rng.normal(size=40))]
    in_sample = in_sample_false_positive_rate(pool, fpr_target=0.01)
    cross_fitted = Calibration.cross_fitted(pool, fpr_target=0.01).false_positive_rate()
    assert in_sample == 0.0  # the threshold is the pool's own maximum: nothing above it, by construction
    assert cross_fitted > in_sample  # each half's maximum is exceeded by some unit of the other half
    calibration = Calibration.cross_fitted(pool, 0.01)
    fitted_on = [{u.name for u in pool} - {u.name for u in held} for held in calibration.held_out]
    assert all(not (names & {u.name for u in held}) for names, held in zip(fitted_on, calibration.held_out))


def prepared(seed: int, innocent_scores: list[float], wrong_scores: list[float], marked: float = 0.9,
             owner: float | None = 0.95) -> Prepared:
    """A seed's preparation; `owner` is the owner's score on its unattacked marked model (None: not recorded,
    as in runs before it was, whose `none` cells say it)."""
    innocent = [check(s, f"model {i}") for i, s in enumerate(innocent_scores)]
    wrong = [check(s, f"key {seed}-{j}") for j, s in enumerate(wrong_scores)]
    return Prepared("null_embedding", seed, 0.95, marked, innocent, wrong, 0.0,
                    owner_check=None if owner is None else check(owner))


def cell(seed: int, score: float, utility: float, matched: float = 0.0) -> CellResult:
    return CellResult(CellId("null_embedding", "pruning", "0.9", seed), "ok", utility_attacked=utility,
                      check=check(score), matched_innocent=check(matched))


def test_false_positives_count_distinct_units_not_repeated_checks():
    # the same 4 innocent models are checked with each of 3 seeds' keys: 4 units, not 12 checks
    preps = {("null_embedding", s): prepared(s, [0.1, 0.2, 0.9 if s == 2 else 0.3, 0.1], [0.0, 0.1]) for s in range(3)}
    cells = [cell(s, 0.95, 0.95) for s in range(3)]
    row = leaderboard(cells, preps, fpr_target=0.01).iloc[0]
    assert row.n_innocent_models == 4 and row.n_wrong_keys == 6 and row.n_attacked_clean == 3
    # one model flagged under one key (seed 2's): one unit of 4 + 6 + 3 = 13
    assert row.false_positive_rate == pytest.approx(1 / 13)
    from bench.scoring import wilson

    assert (row.fpr_ci_low, row.fpr_ci_high) == pytest.approx(wilson(1, 13))


def test_removal_needs_the_mark_gone_and_the_utility_kept():
    def row_of(cells: list[CellResult], n: int):
        preps = {("null_embedding", s): prepared(s, [0.1, 0.2, 0.3, 0.2], [0.1, 0.0, 0.2, 0.1]) for s in range(n)}
        return leaderboard(cells, preps, fpr_target=0.01, max_utility_drop=0.05).iloc[0]

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
    unknown = leaderboard(attacked, preps, fpr_target=0.01).iloc[0]  # no record of the unattacked model at all
    assert unknown.seeds_removed == 0 and unknown.attack_succeeded == "no: mark not detected before the attack"
    recorded = {k: dataclasses.replace(p, owner_check=check(0.95)) for k, p in preps.items()}
    assert leaderboard(attacked, recorded, fpr_target=0.01).iloc[0].attack_succeeded == "yes"
    marked_everywhere = [unattacked(s, 0.95) for s in range(10)]
    table = leaderboard(attacked + marked_everywhere, preps, fpr_target=0.01)
    assert table.set_index("attack").loc["pruning", "attack_succeeded"] == "yes"
    assert summary_matrix(table).set_index("defense").loc["null_embedding", "none"].startswith("verified")
    mostly_absent = [unattacked(0, 0.95)] + [unattacked(s, 0.05) for s in range(1, 10)]  # the mark took in seed 0
    table = leaderboard(attacked + mostly_absent, preps, fpr_target=0.01)
    row = table.set_index("attack").loc["pruning"]
    assert row.removal_rate == pytest.approx(0.1) and row.attack_succeeded == "no: mark not detected before the attack"
    verdict = survives(table.assign(model_kind="classifier"), Claim("survives pruning", "survives", ("pruning",)), 0.05)
    assert verdict.verdict.startswith("not tested")
    summary = summary_matrix(table).set_index("defense").loc["null_embedding"]
    assert summary["pruning"].startswith("not verified before") and summary["none"].startswith("not verified")
    half = [unattacked(s, 0.95 if s < 6 else 0.05) for s in range(10)]  # 6 of 10: undecided
    table = leaderboard(attacked + half, preps, fpr_target=0.01)
    summary = summary_matrix(table).set_index("defense").loc["null_embedding"]
    assert summary["none"].startswith("undecided (6/10)") and summary["pruning"].startswith("undecided (6/10)")
    assert survives(table, Claim("survives pruning", "survives", ("pruning",)), 0.05).verdict.startswith(
        "not tested (the owner's own unattacked model: undecided (6/10))")


def test_a_pretrained_vlp_source_takes_its_innocents_from_named_checkpoints_only():
    import dataclasses

    from bench.config import get_profile
    from bench.context import innocent_pool, innocent_pool_gap

    pretrained = dataclasses.replace(get_profile("default"), vlp="open_clip:ViT-B-32:/weights/owner.pt")
    assert innocent_pool(pretrained, "vlp") == [] and "no innocent checkpoints named" in innocent_pool_gap(pretrained, "vlp")
    named = dataclasses.replace(pretrained, vlp_innocents=("open_clip:ViT-B-32:/weights/other.pt",))
    assert [c.checkpoint for c in innocent_pool(named, "vlp")] == ["open_clip:ViT-B-32:/weights/other.pt"]
    assert len(innocent_pool(pretrained, "classifier")) == 20 and not innocent_pool_gap(pretrained, "classifier")
    # without innocents the rows say why instead of a false-positive rate
    preps = {("null_embedding", 0): dataclasses.replace(prepared(0, [], [0.1, 0.2]), innocent_gap="no checkpoints")}
    row = leaderboard([cell(0, 0.9, 0.95)], preps, fpr_target=0.01).iloc[0]
    assert row.fpr_note == "no checkpoints" and row.n_innocent_models == 0
    assert np.isnan(row.false_positive_rate) and np.isnan(row.false_positive_rate_calibrated)


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
    assert (summary.ran, summary.failed, summary.outside) == (0, 0, 5)
    import pandas as pd

    table = pd.read_csv(cfg.out / "leaderboard.csv")
    assert len(table) == 5 and table.status.str.startswith("n/a: outside the threat model").all()
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
