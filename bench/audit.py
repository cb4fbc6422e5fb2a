"""`wmbench reproduce`: a reviewer's audit of a published leaderboard. It recomputes chosen cells from scratch in
a fresh artifact cache, with the published run's profile, seeds and kernel setting, and compares every stored
field of each cell but its timings and memory with the published database; and likewise the prepared row of
each (defense, seed) those cells belong to (utilities before any attack, the low-label readings, the owner's key
on its marked model and on every innocent model, every other party's key on the marked model)."""
from __future__ import annotations

import math
import random
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.config import RunConfig
from bench.executors import LocalExecutor, SerialExecutor
from bench.lockfile import code_version, lock_status
from bench.portable import pin_kernels
from bench.protocols import WmbenchError
from bench.results import DB_NAME, CellId, CellResult, Prepared, ResultsDB
from bench.runner import prepare, run_cell

# Fields of a record that describe the machine's run, not the method's result.
UNCOMPARED = ("seconds", "peak_rss_mb", "peak_gpu_mb", "device", "traceback")


@dataclass
class Audit:
    """One recomputed record against its published one."""

    name: str  # what was recomputed, as the report line names it
    differences: list[str] = field(default_factory=list)  # 'field: published X, recomputed Y'

    @property
    def identical(self) -> bool:
        return not self.differences

    def line(self) -> str:
        return f"{self.name}: identical" if self.identical else f"{self.name}: differs — {'; '.join(self.differences)}"


def cell_name(cell: CellId) -> str:
    return f"{cell.defense} × {cell.attack}[{cell.strength}] seed {cell.seed}"


def prepared_name(defense: str, seed: int) -> str:
    return f"{defense} seed {seed} (prepared: before any attack)"


def published_config(folder: Path) -> tuple[dict, str]:
    """The run configuration recorded in a published folder, and its profile label."""
    if not (folder / DB_NAME).is_file():
        raise WmbenchError(f"no results database in {folder} (a published folder holds results.sqlite)")
    config = ResultsDB(folder, "default").meta("config")
    if not config or "profile" not in config:
        raise WmbenchError(f"{folder / DB_NAME} records no run configuration; it cannot be reproduced")
    label = RunConfig(profile=config["profile"], vlp=config.get("vlp"), data=config.get("data"),
                      attacker_share=config.get("attacker_share"), out=folder).label
    return config, label


def differences(published: Any, recomputed: Any, path: str = "") -> list[str]:
    """Every leaf where two stored values differ (floats bit for bit; NaN equals NaN)."""
    if isinstance(published, dict) and isinstance(recomputed, dict):
        out = []
        for name in sorted(published.keys() | recomputed.keys()):
            if not path and name in UNCOMPARED:
                continue
            out += differences(published.get(name), recomputed.get(name), f"{path}.{name}" if path else name)
        return out
    if isinstance(published, list) and isinstance(recomputed, list):
        if len(published) != len(recomputed):
            return [f"{path}: published {len(published)} entries, recomputed {len(recomputed)}"]
        return [d for i, (a, b) in enumerate(zip(published, recomputed)) for d in differences(a, b, f"{path}[{i}]")]
    same = (published == recomputed or (isinstance(published, float) and isinstance(recomputed, float)
                                        and math.isnan(published) and math.isnan(recomputed)))
    return [] if same else [f"{path}: published {published!r}, recomputed {recomputed!r}"]


def stored(result: CellResult | Prepared) -> dict:
    """A record as the database stores it (JSON round trip: tuples become lists, keys strings)."""
    import json

    return json.loads(json.dumps(asdict(result)))


def compared(published: dict, recomputed: dict) -> tuple[list[str], set[str], set[str]]:
    """The differences between two stored records over the fields both hold; the fields only the recomputed one
    holds (the published run predates them) and those only the published one holds (this code no longer records
    them): neither side has anything to compare with."""
    both = published.keys() & recomputed.keys()
    kept = lambda record: {k: v for k, v in record.items() if k in both}  # noqa: E731
    return (differences(kept(published), kept(recomputed)), set(recomputed) - both - set(UNCOMPARED),
            set(published) - both - set(UNCOMPARED))


def select(cells: list[CellResult], sample: int | None, defenses: list[str], attacks: list[str],
           seed: int = 0) -> list[CellResult]:
    """The finished cells to recompute: those of the named defenses and attacks, then `sample` of them drawn
    with a fixed seed (all when `sample` is None)."""
    chosen = [c for c in cells if c.status == "ok" and (not defenses or c.cell.defense in defenses)
              and (not attacks or c.cell.attack in attacks)]
    if not chosen:
        raise WmbenchError("no finished cell of the published run matches --defenses/--attacks")
    if sample is not None:
        if sample <= 0:
            raise WmbenchError(f"--sample must be a positive integer, got {sample}")
        chosen = sorted(random.Random(seed).sample(chosen, min(sample, len(chosen))),
                        key=lambda c: (c.cell.defense, c.cell.attack, c.cell.strength, c.cell.seed))
    return chosen


def provenance_notes(db: ResultsDB) -> list[str]:
    """How this checkout differs from what the published run recorded (code commit, lock), as notes."""
    software = db.meta("software") or {}
    notes = []
    recorded_commit = (software.get("code") or {}).get("commit")
    commit = code_version()["commit"]
    if recorded_commit and commit and recorded_commit != commit:
        notes.append(f"the run was made with code {recorded_commit[:10]}, this checkout is {commit[:10]}")
    status = lock_status()
    if software.get("lock_sha256") and status.lock_sha256 != software["lock_sha256"]:
        notes.append("the run's requirements.lock differs from this checkout's")
    if not status.locked:
        notes.append("the installed packages are not the lock's (run `make install`)")
    return notes


def reproduce(folder: Path, *, sample: int | None = None, defenses: list[str] = (), attacks: list[str] = (),
              cache: Path | None = None, workers: int = 1,
              prepared: bool = True) -> tuple[list[Audit], list[Audit], list[str]]:
    """Recompute the selected cells of the published run in `folder` from scratch (in `cache`, by default a
    new temporary folder) and compare them with the published ones; with `prepared`, first recompute and compare
    the prepared row of every (defense, seed) the cells belong to — which trains every seed's clean model and the
    innocent pool of the kind, so even one cell's audit costs about a bases wave of its kind. Returns the cells'
    audits in the cells' order, the prepared rows' by defense and seed, and provenance notes."""
    folder = Path(folder)
    config, label = published_config(folder)
    db = ResultsDB(folder, label)
    chosen = select(db.cells(), sample, list(defenses), list(attacks))
    groups = sorted({(c.cell.defense, c.cell.seed) for c in chosen}) if prepared else []
    published_groups = {(d["defense"], d["seed"]): d for d in db.prepared_records()} if prepared else {}
    if missing := [g for g in groups if g not in published_groups]:
        raise WmbenchError(f"{folder / DB_NAME} holds no prepared row for {missing[0][0]} seed {missing[0][1]}; "
                           f"audit its cells alone with --cells-only")
    portable = bool((db.meta("environment") or {}).get("portable"))
    profile = db.meta(f"profile:{label}") or {}
    with tempfile.TemporaryDirectory(prefix="wmbench-reproduce-") as scratch:
        cfg = RunConfig(defenses=sorted({c.cell.defense for c in chosen}), attacks=sorted({c.cell.attack for c in chosen}),
                        seeds=config.get("seeds"), out=Path(scratch) / "run", profile=config["profile"],
                        vlp=config.get("vlp"), data=config.get("data"), attacker_share=config.get("attacker_share"),
                        vlp_innocents=list(profile.get("vlp_innocents", ())),
                        cache=cache or Path(scratch) / "cache",
                        device="cpu", workers=workers, portable=portable,
                        alpha=config.get("alpha"),
                        max_utility_drop=config.get("max_utility_drop", 0.05))
        if portable:
            pin_kernels()
        executor = LocalExecutor(workers) if portable or workers > 1 else SerialExecutor()
        # a prepared row checks every other seed's owner's key: it is recomputed with the seeds it was made with
        # (a run resumed with more seeds keeps the rows it had)
        prepare_tasks = [(replace(cfg, seeds=len(published_groups[g].get("party_checks", [])) + 1), *g)
                         for g in groups]
        recorded = {CellId(**d["cell"]): d for d in db.cell_records()}
        cell_audits, prepared_audits, unrecorded, dropped = {}, {}, set(), set()
        with executor:
            for (_, defense, seed), outcome in executor.map(prepare, prepare_tasks):
                if isinstance(outcome, tuple):
                    diff, new, gone = compared(published_groups[(defense, seed)], stored(outcome[0]))
                    unrecorded |= {f"prepared.{name}" for name in new}
                    dropped |= {f"prepared.{name}" for name in gone}
                else:
                    diff = [f"recomputation failed: {outcome!r}"[:300]]
                prepared_audits[(defense, seed)] = Audit(prepared_name(defense, seed), diff)
            for (_, cell), outcome in executor.map(run_cell, [(cfg, c.cell) for c in chosen]):
                if not isinstance(outcome, CellResult):
                    outcome = CellResult(cell, f"failed: worker: {outcome!r}"[:300])
                diff, new, gone = compared(recorded[cell], stored(outcome))
                unrecorded, dropped = unrecorded | new, dropped | gone
                cell_audits[cell] = Audit(cell_name(cell), diff)
    notes = (provenance_notes(db)
             + ([f"not compared, the published run did not record them: {', '.join(sorted(unrecorded))}"]
                if unrecorded else [])
             + ([f"not compared, this code no longer records them: {', '.join(sorted(dropped))}"]
                if dropped else []))
    return [cell_audits[c.cell] for c in chosen], [prepared_audits[g] for g in groups], notes
