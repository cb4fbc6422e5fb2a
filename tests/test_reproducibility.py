"""A rerun reproduces the table: the installed environment is the lock's, each run records its software,
publishing refuses a run made outside the lock, and `wmbench reproduce` recomputes published cells and names
every field that differs."""
import json
import sqlite3

import pytest

from bench.audit import differences, reproduce
from bench.report import write_leaderboard
from bench.cli import main
from bench.lockfile import LOCK_FILE, lock_status, read_lock
from bench.portable import cpu_generation, cpuinfo
from bench.report import reproducibility_line
from bench.results import ResultsDB
from bench.runner import run_matrix


def test_the_installed_environment_is_exactly_the_lock():
    """`make install` (what `make test` runs first) installs requirements.lock: every pin that applies to this
    interpreter and platform is installed at its locked version."""
    pins = read_lock()
    assert len(pins) > 20 and {"torch", "numpy", "scipy", "open-clip-torch"} <= {p.name for p in pins}
    assert all(line.startswith("    --hash=sha256:") for line in LOCK_FILE.read_text().splitlines()
               if line.strip().startswith("--hash"))
    status = lock_status()
    assert status.locked, f"installed packages differ from requirements.lock: {status.mismatches}"


def test_lock_status_names_a_package_whose_version_differs(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("numpy==1.0.0 \\\n    --hash=sha256:00\nwin-only==2.0 ; sys_platform == 'nonexistent' \\\n"
                    "    --hash=sha256:11\n")
    status = lock_status(lock, installed={"numpy": "2.0.0"})
    assert not status.locked and status.mismatches == ["numpy: lock 1.0.0, installed 2.0.0"]
    assert lock_status(lock, installed={"numpy": "1.0.0"}).locked  # the other pin does not apply here
    assert lock_status(tmp_path / "missing.lock").lock_sha256 is None


@pytest.fixture
def tiny_run(run_config):
    cfg = run_config(defenses=["null_embedding"], attacks=["pruning"], strengths=["0.5"], profile="smoke")
    run_matrix(cfg, progress=False)
    write_leaderboard(cfg.out, cfg.label)
    return cfg


def test_a_run_records_its_software_and_the_header_names_it(tiny_run):
    software = ResultsDB(tiny_run.out, "smoke").meta("software")
    assert software["lock_sha256"] == lock_status().lock_sha256 and "torch" in software["packages"]
    assert len(software["code"]["commit"]) in (0, 40)
    text = (tiny_run.out / "leaderboard.md").read_text()
    assert f"torch {software['packages']['torch']}" in text and "numpy" in text
    assert ("the locked environment (requirements.lock sha256 " + software["lock_sha256"][:12]) in text


def test_the_cpu_generation_is_read_by_exact_field_name_and_named_in_the_header(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nmodel\t\t: 2\ncpu family\t: 26\n")
    assert cpuinfo("model", str(info)) == "2" and cpuinfo("model name", str(info)) == "AMD EPYC"
    assert cpu_generation(str(info)) == "family 26 model 2"
    assert cpu_generation(str(tmp_path / "absent")) == ""
    env = {"portable": True, "pinned": "AVX2", "cpu_model": "AMD EPYC", "torch": "2.14.1"}
    assert "(this run: AMD EPYC (family 26 model 2), torch 2.14.1)" in reproducibility_line(
        {**env, "cpu_generation": "family 26 model 2"})
    assert "(this run: AMD EPYC, torch 2.14.1)" in reproducibility_line(env)  # runs that did not record it


def test_a_run_is_not_resumed_with_other_package_versions(tiny_run, capsys):
    db = ResultsDB(tiny_run.out, "smoke")
    software = db.meta("software")
    db.set_meta("software", {**software, "packages": {**software["packages"], "torch": "0.0.1"}})
    from bench.protocols import WmbenchError

    with pytest.raises(WmbenchError, match=r"other package versions \(changed: torch\)"):
        run_matrix(tiny_run, progress=False)


def test_publish_refuses_a_run_made_outside_the_lock_unless_told(tiny_run, tmp_path, capsys):
    db = ResultsDB(tiny_run.out, "smoke")
    software = db.meta("software")
    db.set_meta("software", {**software, "locked": False, "lock_mismatches": ["torch: lock 2.14.1, installed 9"]})
    target = tmp_path / "published"
    assert main(["publish", "--from", str(tiny_run.out), "--to", str(target), "--profile", "smoke",
                 "--readme", str(tmp_path / "none.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert "outside the locked environment (torch: lock 2.14.1, installed 9)" in err and len(err.splitlines()) == 1
    assert not target.exists()
    assert main(["publish", "--from", str(tiny_run.out), "--to", str(target), "--profile", "smoke",
                 "--readme", str(tmp_path / "none.md"), "--allow-unlocked"]) == 0


def test_reproduce_says_identical_and_names_a_tampered_field(tiny_run, tmp_path, capsys):
    db = ResultsDB(tiny_run.out, "smoke")
    db.set_meta("software", {**db.meta("software"), "locked": True})
    published = tmp_path / "published"
    assert main(["publish", "--from", str(tiny_run.out), "--to", str(published), "--profile", "smoke",
                 "--readme", str(tmp_path / "none.md")]) == 0
    audits, prepared, _ = reproduce(published, cache=tmp_path / "fresh-cache", workers=1)
    assert [a.line() for a in audits] == ["null_embedding × pruning[0.5] seed 0: identical"]
    assert [a.line() for a in prepared] == ["null_embedding seed 0 (prepared: before any attack): identical"]
    assert any((tmp_path / "fresh-cache").rglob("*.safetensors"))  # recomputed, not read from the run's cache

    with sqlite3.connect(published / "results.sqlite") as con:
        (data,) = con.execute("SELECT data FROM cells WHERE attack='pruning'").fetchone()
        cell = json.loads(data)
        true_utility, acc_null = cell["utility_attacked"], cell["check"]["details"]["acc_null"]
        cell["utility_attacked"] = 0.123
        cell["check"]["details"]["acc_null"] = -1.0
        con.execute("UPDATE cells SET data=? WHERE attack='pruning'", (json.dumps(cell),))
        (data,) = con.execute("SELECT data FROM prepared WHERE defense='null_embedding'").fetchone()
        row = json.loads(data)
        true_fpr_p = row["innocent_checks"][0]["p_value"]
        row["innocent_checks"][0]["p_value"] = 0.5
        con.execute("UPDATE prepared SET data=? WHERE defense='null_embedding'", (json.dumps(row),))
    capsys.readouterr()
    reproduce_cli = ["reproduce", str(published), "--cache", str(tmp_path / "fresh-cache"), "--workers", "1"]
    assert main(reproduce_cli) == 1
    out = capsys.readouterr().out
    assert f"utility_attacked: published 0.123, recomputed {true_utility!r}" in out
    assert "check.details.acc_null: published -1.0" in out
    assert f"innocent_checks[0].p_value: published 0.5, recomputed {true_fpr_p!r}" in out
    assert "0 of 1 cells identical, 1 differ; 0 of 1 prepared rows identical, 1 differ" in out
    assert main(reproduce_cli + ["--cells-only"]) == 1
    assert "prepared" not in capsys.readouterr().out
    with sqlite3.connect(published / "results.sqlite") as con:  # only the prepared row differs now
        cell["utility_attacked"], cell["check"]["details"]["acc_null"] = true_utility, acc_null
        con.execute("UPDATE cells SET data=? WHERE attack='pruning'", (json.dumps(cell),))
    assert main(reproduce_cli) == 1 and main(reproduce_cli + ["--cells-only"]) == 0
    assert "1 of 1 cells identical" in capsys.readouterr().out
    with sqlite3.connect(published / "results.sqlite") as con:  # a run made before a field existed, or after one went
        del cell["utility_low_label"]
        con.execute("UPDATE cells SET data=? WHERE attack='pruning'", (json.dumps(cell),))
        row["innocent_checks"][0]["p_value"] = true_fpr_p
        del row["utility_low_label_untrained"]
        row["retired_field"] = 1
        con.execute("UPDATE prepared SET data=? WHERE defense='null_embedding'", (json.dumps(row),))
    audits, prepared, notes = reproduce(published, cache=tmp_path / "fresh-cache", workers=1)
    assert [a.identical for a in audits + prepared] == [True, True]
    assert ("not compared, the published run did not record them: prepared.utility_low_label_untrained, "
            "utility_low_label") in notes
    assert "not compared, this code no longer records them: prepared.retired_field" in notes
    assert main(["reproduce", str(tmp_path / "nothing")]) == 2
    assert main(["reproduce", str(published), "--defenses", "vlpmarker"]) == 2
    assert "no finished cell" in capsys.readouterr().err


def test_differences_compare_every_stored_leaf_but_timings():
    a = {"utility_attacked": 0.5, "seconds": 1.0, "check": {"statistic": float("nan"), "details": {"x": [1, 2]}}}
    b = {"utility_attacked": 0.5, "seconds": 9.0, "check": {"statistic": float("nan"), "details": {"x": [1, 3]}}}
    assert differences(a, b) == ["check.details.x[1]: published 2, recomputed 3"]
    assert differences(a, a) == []
    assert differences({"party_checks": [1, 2]}, {"party_checks": [1]}) == [
        "party_checks: published 2 entries, recomputed 1"]


def test_the_kernel_fingerprint_is_the_same_on_a_second_call():
    """tests/benchmarks/kernel_fingerprint.py digests each kernel family's output; on one machine, with the pins
    the tests run under, the digests repeat, so a digest that differs between two machines is the machines'."""
    from benchmarks.kernel_fingerprint import kernels

    first = kernels()
    assert {"matmul (BLAS sgemm)", "QR (LAPACK)", "conv2d weight grad (oneDNN)"} <= set(first)
    assert kernels() == first
    # distinct outputs, distinct digests; a convolution with oneDNN off may take the same path as with it on
    families = [value for name, value in first.items() if "(native)" not in name]
    assert len(set(families)) == len(families)
