"""Crash safety, resumption and bad input, end to end through the CLI where it matters."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from bench.cli import main
from bench.protocols import WmbenchError
from bench.report import write_leaderboard
from bench.runner import run_matrix


def count_cells(db) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_kill_9_mid_matrix_then_rerun_finishes_each_cell_once(cache_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench.cli", "run", "--defenses", "null_embedding", "--attacks",
           "neural_cleanse,fine_tuning", "--seeds", "1", "--out", str(out), "--cache", cache_dir,
           "--workers", "1", "--device", "cpu", "--quiet"]
    total = 3 + 4
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while count_cells(out / "results.sqlite") < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = count_cells(out / "results.sqlite")
    assert 1 <= killed_at < total
    assert not list(out.glob(".*.tmp"))  # nothing half-written is left behind
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{total - killed_at} cells run, {killed_at} reused" in rerun.stdout
    with sqlite3.connect(out / "results.sqlite") as con:
        rows = con.execute("SELECT defense, attack, strength, seed, COUNT(*), status FROM cells "
                           "GROUP BY defense, attack, strength, seed").fetchall()
    assert len(rows) == total and all(r[4] == 1 and r[5] == "ok" for r in rows)
    assert len(pd.read_csv(out / "leaderboard.csv")) == total


def test_a_crash_while_writing_the_csv_keeps_the_old_file(run_config, monkeypatch):
    cfg = run_config(defenses=["null_embedding"], attacks=["none"])
    run_matrix(cfg, progress=False)
    write_leaderboard(cfg.out, cfg.label)
    before = (cfg.out / "leaderboard.csv").read_text()

    def crash(self, path, **kw):
        with open(path, "w") as f:
            f.write("defense,attack\nhalf")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", crash)
    with pytest.raises(KeyboardInterrupt):
        write_leaderboard(cfg.out)
    assert (cfg.out / "leaderboard.csv").read_text() == before
    assert not list(cfg.out.glob(".*.tmp"))


def test_a_strength_the_attack_does_not_offer(capsys):
    assert main(["run", "--attacks", "pruning", "--strengths", "0.33"]) == 2
    err = capsys.readouterr().err
    assert "no selected attack offers strength '0.33'" in err and "0.9+ft" in err


def test_model_file_of_the_wrong_kind(make_ctx, tmp_path, capsys):
    from bench.cache import save_model_file
    from bench.registry import get_defense

    ctx = make_ctx("classifier", 0)
    get_defense("awencoder")  # registry loaded
    save_model_file(ctx.base_model(), tmp_path / "classifier.safetensors")
    key = get_defense("null_embedding").make_key(ctx, 1)
    key.save(tmp_path / "key.safetensors")
    assert main(["verify", "--defense", "null_embedding", "--key", str(tmp_path / "key.safetensors"),
                 "--model", str(tmp_path / "classifier.safetensors"), "--device", "cpu"]) == 0
    assert main(["verify", "--defense", "vlpmarker", "--key", str(tmp_path / "key.safetensors"),
                 "--model", str(tmp_path / "classifier.safetensors")]) == 2
    assert "belongs to defense 'null_embedding'" in capsys.readouterr().err


def test_results_read_at_another_level_are_not_resumed(run_config):
    from bench.runner import run_matrix

    cfg = run_config(defenses=["none"], attacks=["none"])
    assert run_matrix(cfg, progress=False).failed == 0
    with pytest.raises(WmbenchError, match=r"holds tests read at α = 0.01, not --alpha 0.05"):
        run_matrix(run_config(defenses=["none"], attacks=["none"], alpha=0.05), progress=False)


def test_results_of_a_changed_profile_are_not_resumed(run_config, monkeypatch):
    import dataclasses

    from bench import config
    from bench.runner import run_matrix

    cfg = run_config(defenses=["none"], attacks=["none"])
    assert run_matrix(cfg, progress=False).failed == 0
    changed = dataclasses.replace(config.PROFILES["default"], attack_epochs=99)
    monkeypatch.setitem(config.PROFILES, "default", changed)
    with pytest.raises(WmbenchError, match=r"different 'default' profile \(changed: attack_epochs\)"):
        run_matrix(cfg, progress=False)
