"""The measurement scripts that docs/methods.md and docs/performance.md quote (tests/benchmarks/*.py) still run
with today's API: each at the smoke profile's budgets, with the options the docs use, printing the lines the
docs read."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def script(name: str, *args: str, cache: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "benchmarks" / name), *args], cwd=ROOT,
                          env={**os.environ, "WMBENCH_CACHE": cache}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def test_model_epochs_reports_each_budget(cache_dir):
    out = script("model_epochs.py", "--profile", "smoke", "--kind", "encoder", "--epochs", "1,2", "--seeds", "0",
                 "--width", "16", cache=cache_dir)
    assert re.search(r"^encoder untrained: low-label 0\.\d{3}", out, re.MULTILINE), out
    summaries = re.findall(r"^== encoder (\d+) epochs: utility (0\.\d{3}|1\.000), low-label (0\.\d{3}|1\.000), "
                           r"\d+ s a model \((\d+) training images\)$", out, re.MULTILINE)
    assert [s[0] for s in summaries] == ["1", "2"], out
    assert all(int(s[3]) > 0 for s in summaries)


def test_awencoder_keys_scores_on_each_sample_size(cache_dir):
    out = script("awencoder_keys.py", "--profile", "smoke", "--seeds", "0", "--null-keys", "3",
                 "--score-images", "16,64", "--encoder-epochs", "1", "--epsilon", "0.2", cache=cache_dir)
    rows = re.findall(r"^seed 0 (awencoder|awencoder_blackbox) on (\d+) images: owner -?\d\.\d{3}, null keys max "
                      r"-?\d\.\d{3} mean -?\d\.\d{3}, (\d) of 3 reach the owner$", out, re.MULTILINE)
    assert [(r[0], r[1]) for r in rows] == [("awencoder", "16"), ("awencoder_blackbox", "16"),
                                           ("awencoder", "64"), ("awencoder_blackbox", "64")], out
    assert re.search(r"^seed 0: utility 0\.\d{3} \(\d+ s\)$", out, re.MULTILINE), out
