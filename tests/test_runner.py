import sqlite3

import pandas as pd
import pytest

from bench import registry
from bench.report import write_leaderboard
from bench.protocols import WmbenchError
from bench.scoring import COLUMNS
from bench.results import CellId, ResultsDB
from bench import runner
from bench.runner import make_plan, run_cell, run_matrix

REQUIRED = ["defense", "attack", "strength", "n_seeds", "utility_clean", "utility_marked", "utility_attacked",
            "verification_rate", "false_positive_rate", "p_value", "tpr_at_alpha", "alpha", "null_units",
            "innocent_fpr_at_alpha", "key_collision_rate", "verdict_alpha", "verdict_paper_threshold", "seconds", "status"]


def test_plan_expands_compatible_pairs(run_config):
    plan = make_plan(run_config(defenses=["null_embedding"], attacks=["none", "pruning"], seeds=2))
    assert len(plan.cells) == 2 * (1 + 4)
    assert CellId("null_embedding", "pruning", "0.9", 1) in plan.cells
    assert not plan.outside
    # the innocent pool: 10 classifiers, every other one on the independent split (data the owner never used)
    assert len(plan.innocents) == 10
    assert sum(c.split == "independent" for _, c in plan.innocents) == 5


def test_a_variant_meets_only_the_no_attack_row_unless_the_run_names_it(run_config):
    variant = registry.get_defense("null_embedding_lam100")
    assert variant.variant_of == "null_embedding" and not registry.get_defense("null_embedding").variant_of
    everything = make_plan(run_config(attacks=["none", "pruning"]))
    assert {c.attack for c in everything.cells if c.defense == "null_embedding_lam100"} == {"none"}
    assert {c.attack for c in everything.cells if c.defense == "null_embedding"} == {"none", "pruning"}
    named = make_plan(run_config(defenses=["null_embedding_lam100"], attacks=["none", "pruning"]))
    assert {c.attack for c in named.cells} == {"none", "pruning"}


def test_the_control_defense_runs_only_in_the_clean_control_seeds(run_config):
    """The control defense's marked model is the clean model: past the profile's `clean_control_seeds` its
    cells would attack clean models no watermarked cell's control shares, so the plan leaves them out."""
    assert registry.get_defense("none").control and not registry.get_defense("null_embedding").control
    plan = make_plan(run_config(defenses=["none", "null_embedding"], attacks=["pruning"], strengths=["0.5"], seeds=5))
    seeds = {d: sorted(c.seed for c in plan.cells if c.defense == d) for d in ("none", "null_embedding")}
    assert seeds == {"none": [0, 1, 2], "null_embedding": [0, 1, 2, 3, 4]}
    assert len(plan.owners) == 5  # the watermarked defense still needs every seed's clean model
    fewer = make_plan(run_config(defenses=["none"], attacks=["pruning"], strengths=["0.5"], seeds=2))
    assert sorted(c.seed for c in fewer.cells) == [0, 1]


def test_innocent_models_differ_from_each_other_and_from_the_owners(tmp_path):
    """What the pool is for: models whose weights differ from one another's and from every owner's clean
    model, and from the attacker's own (smoke budgets: 4 innocents, 2 owners, 3 of the attacker's)."""
    from bench.cache import weights_digest
    from bench.config import RunConfig
    from bench.runner import workbench

    cfg = RunConfig(profile="smoke", defenses=["none"], attacks=["none"], seeds=2, out=tmp_path / "out",
                    cache=tmp_path / "cache", device="cpu", workers=1)
    plan = make_plan(cfg)
    digests = {weights_digest(workbench(cfg).context(kind, 0).clean_model(clean)) for kind, clean in plan.bases}
    assert (len(plan.owners), len(plan.innocents), len(plan.scratch)) == (2, 4, 3) and len(digests) == 9


def test_unknown_names_are_errors(run_config):
    with pytest.raises(WmbenchError, match="unknown defense 'nope'"):
        make_plan(run_config(defenses=["nope"]))


def test_matrix_writes_leaderboard_and_resumes(run_config, capsys):
    cfg = run_config(defenses=["null_embedding"], attacks=["none", "pruning"])
    first = run_matrix(cfg)
    write_leaderboard(cfg.out, cfg.label)
    assert (first.ran, first.failed) == (5, 0)
    # every wave reports each finished task: the clean models, the prepared (defense, seed), the cells
    lines = capsys.readouterr().out.splitlines()
    # the owner's, 10 innocents' and the attacker's 3 own classifiers
    assert sum(line.startswith("classifier seed ") and ": built (" in line for line in lines) == 1 + 10 + 3
    prepared = [line for line in lines if ": prepared" in line]
    assert len(prepared) == 1 and prepared[0].startswith("null_embedding seed 0: prepared owner detected=True p=0.01 (")
    assert sum(line.startswith("null_embedding × ") for line in lines) == 5
    table = pd.read_csv(cfg.out / "leaderboard.csv")
    assert list(table.columns) == COLUMNS and set(REQUIRED) <= set(table.columns)
    none_row = table[table.attack == "none"].iloc[0]
    assert none_row.verification_rate == 1.0 and none_row.auc == 1.0
    assert (none_row.n_innocent_models, none_row.n_innocent_pairs, none_row.n_attacked_clean) == (10, 11, 1)
    assert none_row.false_positive_rate <= 0.1 and none_row.attack_succeeded == "no attack"
    assert none_row.tpr_at_alpha == 1.0 and none_row.null_units == 99 and none_row.p_value == pytest.approx(0.01)
    assert none_row.innocent_fpr_at_alpha <= 0.1 and none_row.verdict_alpha == "undecided (1/1)"
    assert table[["verification_rate", "false_positive_rate"]].apply(lambda c: c.between(0, 1)).all().all()
    summary, rest = (cfg.out / "leaderboard.md").read_text().split("## The papers' claims")
    claims, rows = rest.split("## Every row")
    assert summary.count("| null_embedding") == 2 and rows.count("| null_embedding") == 5  # worst case, matrix
    assert claims.count("| null_embedding") == len(registry.get_defense("null_embedding").claims)
    assert (cfg.out / "leaderboard.png").stat().st_size > 1000
    second = run_matrix(cfg, progress=False)
    assert (second.ran, second.reused) == (0, 5)
    with sqlite3.connect(cfg.out / "results.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 5


def test_cell_is_deterministic_for_a_seed(run_config, tmp_path):
    cell = CellId("null_embedding", "pruning", "0.9+ft", 0)
    a = run_cell(run_config(), cell)
    b = run_cell(run_config(cache=tmp_path / "fresh"), cell)  # rebuilt from scratch: marked model and attack
    assert a.status == b.status == "ok"
    assert (a.utility_attacked, a.check, a.matched_innocent) == (b.utility_attacked, b.check, b.matched_innocent)


def test_failing_attack_fails_its_cell_only(run_config, monkeypatch):
    from attacks.pruning import Pruning

    def explode(self, ctx, model, strength):
        if strength == "0.5":
            raise RuntimeError("boom")
        return model

    monkeypatch.setattr(Pruning, "run", explode)
    monkeypatch.setattr(Pruning, "version", "exploding")  # new cache addresses: the attack really runs
    cfg = run_config(defenses=["null_embedding"], attacks=["pruning"])
    summary = run_matrix(cfg, progress=False)
    assert summary.failed == 1
    status = {r.cell.strength: r.status for r in ResultsDB(cfg.out, "default").cells()}
    assert status["0.5"] == "failed: RuntimeError: boom"
    assert status["0.9"] == "ok"


def test_ray_executor_runs_the_matrix_on_a_local_cluster(run_config):
    pytest.importorskip("ray", reason="Ray is the optional extra wmbench[ray]; not installed here")
    from bench.executors import make_executor

    cfg = run_config(defenses=["null_embedding"], attacks=["none"])
    summary = run_matrix(cfg, make_executor("ray", 2), progress=False)
    assert (summary.ran, summary.failed) == (1, 0)


def test_the_clean_control_runs_only_in_the_profiles_first_seeds(run_config, monkeypatch):
    """Each attack also runs on the owner's clean model as an innocent control, in the first
    `clean_control_seeds` seeds only; later seeds record no control and the row counts only those it has."""
    import dataclasses

    import pandas as pd

    from bench import config

    monkeypatch.setitem(config.PROFILES, "smoke", dataclasses.replace(config.PROFILES["smoke"], clean_control_seeds=1))
    cfg = run_config(defenses=["null_embedding"], attacks=["pruning"], strengths=["0.5"], profile="smoke", seeds=2)
    run_matrix(cfg, progress=False)
    write_leaderboard(cfg.out, cfg.label)
    cells = {r.cell.seed: r for r in ResultsDB(cfg.out, "smoke").cells()}
    assert cells[0].matched_innocent is not None and cells[1].matched_innocent is None
    row = pd.read_csv(cfg.out / "leaderboard.csv").iloc[0]
    assert row.n_seeds == 2 and row.n_attacked_clean == 1


# --- the prepare-and-cells stream --------------------------------------------------------------------------


def stream(schedule: runner._Schedule, done: list) -> list:
    """Draw the schedule's tasks one at a time as a lazy executor does, after each draw handling the outcomes
    in `done` (a group name: its preparing has finished; ("failed", group): it failed); the drawn tasks, named."""
    names, tasks = [], schedule.tasks()
    for event in [None, *done]:
        if event is not None and event[0] == "failed":
            schedule.dropped.add(event[1])
            del schedule.started[event[1]]
        elif event is not None:
            del schedule.started[event]
        task = next(tasks, None)
        if task is None:
            break
        names.append(task[2:] if task[0] is runner.prepare else (task[2].defense, task[2].seed, task[2].strength))
    return names


def test_a_cell_is_drawn_once_its_group_is_prepared_before_cells_of_groups_still_preparing(run_config):
    cfg = run_config(defenses=["null_embedding"], attacks=["pruning"])
    groups = [("null_embedding", 0), ("null_embedding", 1), ("null_embedding", 2)]
    cells = [CellId("null_embedding", "pruning", s, seed) for s in ("0.5", "0.8") for seed in range(3)]
    a, b, c = groups
    # the three groups are handed out first; then seed 2 (prepared first) gives its cells before seed 0's, and
    # with nothing prepared the group whose preparing began first goes on
    assert stream(runner._Schedule(cfg, groups, cells), [None, None, c, None, None, a, None, b, None]) == [
        a, b, c, ("null_embedding", 2, "0.5"), ("null_embedding", 2, "0.8"), ("null_embedding", 0, "0.5"),
        ("null_embedding", 0, "0.8"), ("null_embedding", 1, "0.5"), ("null_embedding", 1, "0.8")]
    # a group whose preparing failed gives no cell; a group prepared in an earlier run is ready at once
    assert stream(runner._Schedule(cfg, [a, b], cells), [None, ("failed", a), None, None, None]) == [
        a, b, ("null_embedding", 2, "0.5"), ("null_embedding", 2, "0.8"), ("null_embedding", 1, "0.5"),
        ("null_embedding", 1, "0.8")]


class ScriptedExecutor:
    """Draws every task of a map at once (as the Ray executor does) and returns the outcomes in the order of that
    map's script: ("prepare", seed, outcome: an exception or None for the prepared row) and ("cell", seed,
    strength) for a cell that comes back "ok"."""

    def __init__(self, prepared: dict, *scripts: list):
        self.prepared, self.scripts = prepared, list(scripts)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def map(self, fn, tasks):
        from bench.results import CellResult

        tasks, script = list(tasks), self.scripts.pop(0)
        assert len(tasks) == len(script)
        for what, seed, x in script:
            if what == "prepare":
                args = next(t for t in tasks if t[0] is runner.prepare and t[3] == seed)
                yield args, x if x is not None else (self.prepared[seed], "digest")
            else:
                args = next(t for t in tasks if t[0] is run_cell and (t[2].seed, t[2].strength) == (seed, x))
                yield args, CellResult(args[2], "ok", seconds=1.0)


def test_cells_are_stored_only_after_their_group_is_prepared_and_fail_with_it(run_config):
    """A cell back before its group's prepared row is held until that row is stored; a group whose preparing
    fails stores every cell as failed with its reason, even one that comes back after; a preparing whose worker
    died is redone once, after the stream, with its cells."""
    from concurrent.futures.process import BrokenProcessPool

    from bench.results import Prepared

    cfg = run_config(defenses=["null_embedding"], attacks=["pruning"], seeds=3)
    groups = [("null_embedding", seed) for seed in range(3)]
    cells = [CellId("null_embedding", "pruning", s, seed) for seed in range(3) for s in ("0.5", "0.8")]
    prepared = {seed: Prepared("null_embedding", seed, 0.9, 0.9, [], [], 2.0) for seed in range(3)}
    db, log = ResultsDB(cfg.out, cfg.label), []
    put_cell, put_prepared = db.put_cell, db.put_prepared
    db.put_cell = lambda r: (log.append((r.cell.seed, r.cell.strength, r.status)), put_cell(r))
    db.put_prepared = lambda p: (log.append((p.seed, "prepared")), put_prepared(p))
    executor = ScriptedExecutor(prepared, [
        ("cell", 0, "0.5"), ("prepare", 0, None), ("cell", 0, "0.8"), ("cell", 1, "0.5"),
        ("prepare", 1, RuntimeError("embedding diverged")), ("cell", 1, "0.8"), ("prepare", 2, BrokenProcessPool()),
        ("cell", 2, "0.5"), ("cell", 2, "0.8"),
    ], [("prepare", 2, None), ("cell", 2, "0.5"), ("cell", 2, "0.8")])
    timing = runner._prepare_and_run_cells(cfg, db, executor, groups, cells, {}, progress=False)
    failed = "failed: RuntimeError: embedding diverged"
    assert log == [(0, "prepared"), (0, "0.5", "ok"), (0, "0.8", "ok"), (1, "0.5", failed), (1, "0.8", failed),
                   (2, "prepared"), (2, "0.5", "ok"), (2, "0.8", "ok")]
    assert [(t.wave, t.tasks, t.task_s) for t in timing] == [("prepare", 3, 4.0), ("cells", 8, 8.0),
                                                             ("prepare + cells", 11, 12.0)]
