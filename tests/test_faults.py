"""Faults survived, one test each: a task that raises, a worker killed mid-cell, a kill -9 at several points
followed by a rerun, a full or unwritable disk, two runs on one output folder, Ctrl-C. Every run uses the
`smoke` profile, a handful of cells and its own cache folder; processes meet through files and events,
never through a sleep that hopes for an overlap."""
from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import faultkit
import pytest

from bench import runner
from bench.cli import main
from bench.config import RunConfig
from bench.executors import LocalExecutor
from bench.kinds.base import get_kind
from bench.results import DB_NAME, ResultsDB

FAULTKIT = Path(faultkit.__file__)
SELECTION = ["--defenses", "null_embedding", "--attacks", "pruning", "--strengths", "0.5,0.8,0.9", "--seeds", "1"]
CELLS = 3
RUN_ONLY = ("seconds", "peak_rss_mb", "peak_gpu_mb", "device", "traceback")  # what a rerun may change


def run_args(tmp_path: Path, *selection: str, workers: int = 1) -> list[str]:
    return ["run", "--profile", "smoke", *(selection or SELECTION), "--out", str(tmp_path / "out"),
            "--cache", str(tmp_path / "cache"), "--workers", str(workers), "--device", "cpu", "--quiet"]


def config(tmp_path: Path, **kw) -> RunConfig:
    return RunConfig(**{"profile": "smoke", "seeds": 1, "out": tmp_path / "out", "cache": tmp_path / "cache",
                        "device": "cpu", "workers": 1, **kw})


def numbers(out: Path) -> dict:
    """Every stored cell's results, without what legitimately differs between runs (timings, memory)."""
    return {r.cell: {k: v for k, v in asdict(r).items() if k not in RUN_ONLY} for r in ResultsDB(out, "smoke").cells()}


def row_counts(out: Path) -> list[int]:
    with sqlite3.connect(out / DB_NAME) as con:
        return [n for (n,) in con.execute("SELECT COUNT(*) FROM cells GROUP BY defense, attack, strength, seed")]


def leftovers(*folders: Path) -> list[Path]:
    """Temporary files, and cache data files without a sidecar: what a half-finished write leaves."""
    found = []
    for folder in folders:
        found += list(folder.rglob("*.tmp"))
        found += [p for p in folder.rglob("*.safetensors") if not p.with_suffix(".json").exists()]
    return found


_children: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_child_outlives_its_test():
    yield
    while _children:
        child = _children.pop()
        if child.poll() is None:  # a test that failed before its child finished
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def start_driver(tmp_path: Path, point: str, args: list[str]) -> tuple[subprocess.Popen, Path]:
    """`wmbench` in a child process (its own process group) that pauses at `point` (tests/faultkit.py)."""
    handshake = tmp_path / f"handshake-{point.replace(':', '-')}"
    handshake.mkdir()
    with open(handshake / "stdout", "w") as stdout, open(handshake / "stderr", "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(FAULTKIT), "--pause", point, "--handshake", str(handshake),
                                 "--", *args], start_new_session=True, stdout=stdout, stderr=stderr, cwd=tmp_path)
    _children.append(proc)
    return proc, handshake


def finish(proc: subprocess.Popen, handshake: Path) -> tuple[str, str]:
    """Wait for the child; its stdout and stderr."""
    proc.wait(timeout=300)
    return (handshake / "stdout").read_text(), (handshake / "stderr").read_text()


def wait_until_paused(proc: subprocess.Popen, handshake: Path, name: str = "paused") -> None:
    faultkit.wait_for(lambda: (handshake / name).exists() or proc.poll() is not None, f"{name} from the child")
    if proc.poll() is not None:
        out, err = finish(proc, handshake)
        pytest.fail(f"the child ended (rc {proc.returncode}) before its pause point:\n{out}\n{err}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The selection's numbers from one uninterrupted run in a fresh cache."""
    root = tmp_path_factory.mktemp("reference")
    summary = runner.run_matrix(config(root, defenses=["null_embedding"], attacks=["pruning"],
                                       strengths=["0.5", "0.8", "0.9"]), progress=False)
    assert (summary.ran, summary.failed) == (CELLS, 0)
    return numbers(root / "out")


# --- a task that raises ---------------------------------------------------------------------------------


def test_a_prepare_step_that_raises_fails_its_groups_cells_and_the_rest_go_on(tmp_path, monkeypatch, capsys):
    """`wmbench run` exits 1 with the failed count, the other group's cells are done, and the rerun (the
    fault gone) redoes exactly the failed cells."""
    from defenses.null_embedding import NullEmbedding

    real = NullEmbedding.watermark

    def watermark(self, ctx, key):
        if ctx.seed == 1:
            raise RuntimeError("embedding diverged")
        return real(self, ctx, key)

    monkeypatch.setattr(NullEmbedding, "watermark", watermark)
    args = run_args(tmp_path, "--defenses", "null_embedding", "--attacks", "pruning", "--strengths", "0.5,0.8",
                    "--seeds", "2")
    assert main(args) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("4 cells run, 0 reused") and ", 2 failed" in last
    status = {(r.cell.seed, r.cell.strength): r.status for r in ResultsDB(tmp_path / "out", "smoke").cells()}
    assert status == {(0, "0.5"): "ok", (0, "0.8"): "ok", (1, "0.5"): "failed: RuntimeError: embedding diverged",
                      (1, "0.8"): "failed: RuntimeError: embedding diverged"}
    monkeypatch.setattr(NullEmbedding, "watermark", real)
    assert main(args) == 0
    assert "2 cells run, 2 reused" in capsys.readouterr().out
    assert row_counts(tmp_path / "out") == [1] * 4


def test_a_base_model_that_cannot_be_built_fails_the_groups_that_need_it(tmp_path, monkeypatch):
    kind = type(get_kind("classifier"))
    real = kind.train_base

    def train_base(self, ctx, seed, split="owner"):
        if seed == 1:
            raise RuntimeError("out of data")
        return real(self, ctx, seed, split)

    monkeypatch.setattr(kind, "train_base", train_base)
    summary = runner.run_matrix(config(tmp_path, defenses=["none"], attacks=["none"], seeds=2), progress=False)
    assert (summary.ran, summary.failed) == (2, 1)
    status = {r.cell.seed: r.status for r in ResultsDB(tmp_path / "out", "smoke").cells()}
    assert status == {0: "ok", 1: "failed: RuntimeError: out of data"}


def test_an_innocent_pool_holding_the_owners_weights_is_refused(tmp_path, monkeypatch, capsys):
    """An innocent model that is secretly the owner's clean model (trained with the owner's seed), or a
    'marked' model that is an innocent one, would count the owner's own model as innocent: refused."""
    kind = type(get_kind("classifier"))
    real = kind.train_base
    monkeypatch.setattr(kind, "train_base", lambda self, ctx, seed, split="owner":
                        real(self, ctx, 0 if seed == 10_002 else seed, split))
    args = run_args(tmp_path, "--defenses", "none", "--attacks", "none", "--seeds", "1")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("innocent classifier model (seed 10002 on the owner split) has the same weights "
                                     "as the owner's clean model (seed 0 on the owner split)") in err
    assert not (tmp_path / "out" / "leaderboard.csv").exists()

    monkeypatch.setattr(kind, "train_base", real)
    from defenses.none import NoDefense

    monkeypatch.setattr(NoDefense, "watermark", lambda self, ctx, key: ctx.base_model(10_001, "independent"))
    assert main(run_args(tmp_path / "marked", "--defenses", "none", "--attacks", "none", "--seeds", "1")) == 2
    assert "the same weights as the marked none model of seed 0" in capsys.readouterr().err


# --- a worker killed mid-cell ------------------------------------------------------------------------------


def test_a_worker_killed_mid_cell_fails_that_cell_the_run_goes_on_and_a_rerun_completes_it(tmp_path, monkeypatch,
                                                                                            reference):
    monkeypatch.setattr(runner, "run_cell", faultkit.DieOn("0.8"))
    cfg = config(tmp_path, defenses=["null_embedding"], attacks=["pruning"], strengths=["0.5", "0.8", "0.9"])
    summary = runner.run_matrix(cfg, LocalExecutor(1), progress=False)
    assert (summary.ran, summary.failed) == (CELLS, 1)
    status = {r.cell.strength: r.status for r in ResultsDB(cfg.out, "smoke").cells()}
    assert status["0.5"] == status["0.9"] == "ok" and status["0.8"].startswith("failed: worker: BrokenProcessPool")
    monkeypatch.undo()
    rerun = runner.run_matrix(cfg, progress=False)
    assert (rerun.ran, rerun.reused, rerun.failed) == (1, 2, 0)
    assert numbers(cfg.out) == reference and row_counts(cfg.out) == [1] * CELLS


def test_two_workers_overlap_preparing_and_cells_and_give_the_one_worker_numbers(tmp_path, reference):
    """With two workers the second takes a cell while the first prepares its group: the cell waits in the cache
    for the marked model, and its result is held until the group is prepared. The numbers are the one-worker
    run's, and the timing table shows the overlap: the two waves' wall times add up to more than the whole
    exactly when the first cell was drawn before the last group was prepared."""
    cfg = config(tmp_path, defenses=["null_embedding"], attacks=["pruning"], strengths=["0.5", "0.8", "0.9"],
                 workers=2)
    summary = runner.run_matrix(cfg, LocalExecutor(2), progress=False)
    assert (summary.ran, summary.failed) == (CELLS, 0)
    assert numbers(cfg.out) == reference and row_counts(cfg.out) == [1] * CELLS
    wall = {t.wave: t.wall_s for t in summary.timing}
    assert wall["prepare"] + wall["cells"] > wall["prepare + cells"], summary.timing


# --- kill -9, then a rerun ----------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["cell:2", "cache:3", "sidecar:3", "record:2"])
def test_kill_9_then_a_rerun_finishes_with_no_duplicate_no_orphan_and_the_same_numbers(point, tmp_path, capsys,
                                                                                       reference):
    """Killed at the start of a cell, while a cache entry is written (its data file, its sidecar), while an
    attack record is written: the rerun computes only the cells not stored, warns about nothing (no entry
    was left half-written), leaves no temporary file, stores each cell once, with the numbers of an
    uninterrupted run."""
    args = run_args(tmp_path)
    proc, handshake = start_driver(tmp_path, point, args)
    wait_until_paused(proc, handshake)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if point != "cell:2":
        assert list((tmp_path / "cache").rglob("*.tmp")), "the kill left no temporary file to clean up"
    stored = len(numbers(tmp_path / "out"))
    assert stored == (1 if point == "cell:2" else 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(args) == 0
    assert f"{CELLS - stored} cells run, {stored} reused" in capsys.readouterr().out
    assert not [str(w.message) for w in caught if "corrupt" in str(w.message)]
    assert not leftovers(tmp_path / "out", tmp_path / "cache")
    assert numbers(tmp_path / "out") == reference and row_counts(tmp_path / "out") == [1] * CELLS


def test_kill_9_while_publishing_then_publishing_again(tmp_path, reference):
    source, target = tmp_path / "out", tmp_path / "published"
    assert main(run_args(tmp_path)) == 0
    publish = ["publish", "--from", str(source), "--to", str(target), "--profile", "smoke", "--allow-unlocked",
               "--readme", str(tmp_path / "README.md")]  # no README there: the repository's is never touched
    proc, handshake = start_driver(tmp_path, "publish:1", publish)
    wait_until_paused(proc, handshake)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(target.glob(".leaderboard.md.*.tmp"))
    assert main(publish) == 0
    assert main(["publish", "--from", str(source), "--to", str(tmp_path / "uninterrupted"), "--profile", "smoke",
                 "--allow-unlocked", "--readme", str(tmp_path / "README.md")]) == 0
    assert not leftovers(target)
    files = sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "uninterrupted") for p in (tmp_path / "uninterrupted").rglob("*")
                           if p.is_file())
    for name in ("leaderboard.csv", "claims.csv"):
        assert (target / name).read_text() == (tmp_path / "uninterrupted" / name).read_text()
    assert numbers(target) == reference


# --- a full or unwritable disk ------------------------------------------------------------------------------


def test_a_full_disk_stops_the_run_in_one_line_leaving_nothing_half_written(tmp_path, monkeypatch, capsys,
                                                                           reference):
    """The disk fills while attacked models are stored: one line, exit 2, no temporary file, no cache entry
    without its sidecar, no cell recorded failed for it; once there is room, the rerun finishes the run."""
    from safetensors import SafetensorError

    from bench import cache

    assert main(run_args(tmp_path, "--defenses", "null_embedding", "--attacks", "none", "--seeds", "1")) == 0
    real, saved = cache.save_file, []

    def save_file(tensors, path, metadata=None):
        if saved:  # the disk is full from the second model on: a part of the file, then safetensors' own error
            Path(path).write_bytes(b"\0" * 64)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        saved.append(path)
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(cache, "save_file", save_file)
    capsys.readouterr()
    assert main(run_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wmbench: error: cannot write ") and "No space left" in err
    assert not leftovers(tmp_path / "out", tmp_path / "cache")
    assert all(r.status == "ok" for r in ResultsDB(tmp_path / "out", "smoke").cells())
    monkeypatch.setattr(cache, "save_file", real)
    assert main(run_args(tmp_path)) == 0
    assert {c: n for c, n in numbers(tmp_path / "out").items() if c.attack == "pruning"} == reference


def test_a_full_disk_under_the_results_database_is_one_line(tmp_path, monkeypatch, capsys):
    """SQLite reports the disk full (its page limit reached) while cells are stored: one line, exit 2, the
    database intact and holding only whole cells."""
    assert main(run_args(tmp_path, "--defenses", "none", "--attacks", "none", "--seeds", "1")) == 0
    con = sqlite3.connect(tmp_path / "out" / DB_NAME)
    con.execute("PRAGMA page_size = 512")  # packed into pages smaller than a cell: a new cell needs new pages
    con.execute("VACUUM")
    con.close()
    real_connect, real_put_cell, full = ResultsDB._connect, ResultsDB.put_cell, []

    def connect(self):
        con = real_connect(self)
        if full:
            con.execute("PRAGMA max_page_count = 1")  # never below the current size: no page may be added
        return con

    def put_cell(self, result):  # the disk fills as the cells are stored
        full.append(result.cell)
        return real_put_cell(self, result)

    monkeypatch.setattr(ResultsDB, "_connect", connect)
    monkeypatch.setattr(ResultsDB, "put_cell", put_cell)
    capsys.readouterr()
    assert main(run_args(tmp_path, "--defenses", "none", "--attacks", "pruning", "--seeds", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "database or disk is full" in err
    monkeypatch.undo()
    with sqlite3.connect(tmp_path / "out" / DB_NAME) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    stored = [r for r in ResultsDB(tmp_path / "out", "smoke").cells() if r.cell.attack == "pruning"]
    assert [r.cell for r in stored] == full[:-1] and len(full) < 5  # the run stopped at the cell it could not store
    assert all(r.status == "ok" and r.check is not None for r in stored)
    assert main(run_args(tmp_path, "--defenses", "none", "--attacks", "pruning", "--seeds", "1")) == 0


@pytest.mark.parametrize("folder", ["out", "cache"])
def test_an_unwritable_folder_is_one_line_and_nothing_is_written(folder, tmp_path, monkeypatch, capsys):
    """As root, permissions do not stop writes, so there the system's refusal is simulated at the calls that
    create files and folders under it."""
    unwritable = tmp_path / folder
    unwritable.mkdir()
    if os.geteuid() != 0:
        unwritable.chmod(0o555)
    else:
        real_open, real_mkdir = os.open, os.mkdir

        def refuse(call):
            def refused(path, *args, **kwargs):
                if Path(path).resolve().is_relative_to(unwritable.resolve()) and Path(path) != unwritable:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return call(path, *args, **kwargs)
            return refused

        monkeypatch.setattr(os, "open", refuse(real_open))
        monkeypatch.setattr(os, "mkdir", refuse(real_mkdir))
    try:
        assert main(run_args(tmp_path, "--defenses", "none", "--attacks", "none", "--seeds", "1")) == 2
    finally:
        unwritable.chmod(0o755)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied" in err and str(unwritable) in err
    assert not list(unwritable.iterdir())


# --- two runs, Ctrl-C -------------------------------------------------------------------------------------


def test_a_second_run_on_the_same_output_folder_is_refused_and_no_cell_is_computed_twice(tmp_path, capsys):
    args = run_args(tmp_path)
    first, handshake = start_driver(tmp_path, "cell:1", args)
    wait_until_paused(first, handshake)  # the first run holds the folder, inside its first cell
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another `wmbench run` is writing into" in err
    (handshake / "go").touch()
    out, err = finish(first, handshake)
    assert first.returncode == 0, err
    assert f"{CELLS} cells run, 0 reused" in out
    assert row_counts(tmp_path / "out") == [1] * CELLS


def test_ctrl_c_stops_after_the_cells_in_flight_and_says_how_to_resume(tmp_path, reference):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while two workers each run a cell:
    both cells finish and are stored, no further cell starts, the run says how to resume; the rerun does
    the rest."""
    selection = ("--defenses", "null_embedding", "--attacks", "pruning", "--strengths", "0.5,0.8,0.9,0.9+ft",
                 "--seeds", "1")
    args = run_args(tmp_path, *selection, workers=2)
    proc, handshake = start_driver(tmp_path, "each-cell", args)
    for strength in ("0.5", "0.8"):
        wait_until_paused(proc, handshake, f"started-{strength}")
    os.killpg(proc.pid, signal.SIGINT)
    faultkit.wait_for(lambda: "stopping after the cells in flight" in (handshake / "stderr").read_text()
                      or proc.poll() is not None, "the run to take the Ctrl-C", timeout=60)
    (handshake / "go").touch()  # only now may the cells in flight finish
    out, err = finish(proc, handshake)
    assert proc.returncode == 130, err
    assert "stopping after the cells in flight" in err and "run the same command again to resume" in err
    assert not list(handshake.glob("started-0.9*"))
    done = numbers(tmp_path / "out")
    assert sorted(c.strength for c in done) == ["0.5", "0.8"] and all(n["status"] == "ok" for n in done.values())
    assert main(run_args(tmp_path, *selection)) == 0
    assert sorted(c.strength for c in numbers(tmp_path / "out")) == ["0.5", "0.8", "0.9", "0.9+ft"]
    assert {c: n for c, n in numbers(tmp_path / "out").items() if c.strength != "0.9+ft"} == reference
