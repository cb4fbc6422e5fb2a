"""Publishing a run: copying its database into a committed folder and writing the leaderboard there, merging
runs of one profile, and rewriting the README's generated blocks."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from bench.cache import atomic_write
from bench.claims import claims_table
from bench.protocols import WmbenchError
from bench.report import claims_markdown, stored_methods, summary_markdown, write_leaderboard
from bench.results import DB_NAME, ResultsDB


def publish(source: Path, target: Path, profile: str = "default", readme: Path | None = None,
            allow_unlocked: bool = False) -> pd.DataFrame:
    """Copy a finished run's database into the published folder (atomically) and write its leaderboard
    there: the only way `results/` changes. A run made outside the locked environment (its recorded packages
    differ from requirements.lock, or it recorded none) is refused unless `allow_unlocked`. With `readme`,
    its generated blocks of this profile (`<!-- PROFILE-summary:start -->` … and `PROFILE-claims`) are
    rewritten; other profiles' blocks stay."""
    source, target = Path(source), Path(target)
    if not (source / DB_NAME).is_file():
        raise WmbenchError(f"no results database in {source} (run `wmbench run --out {source}` first)")
    if source.resolve() == target.resolve():
        raise WmbenchError(f"publishing {source} onto itself")
    software = ResultsDB(source, profile).meta("software") or {}
    if not software.get("locked") and not allow_unlocked:
        why = ("; ".join(software.get("lock_mismatches", [])[:2]) or "no lock file beside its code"
               if software else "it recorded no package versions")
        raise WmbenchError(f"{source} was computed outside the locked environment ({why}); rerun it after "
                           f"`make install`, or publish it anyway with --allow-unlocked")
    atomic_write(target / DB_NAME, lambda p: shutil.copyfile(source / DB_NAME, p))
    loaded = write_leaderboard(target, profile)
    if readme is not None and Path(readme).is_file():
        claims = claims_table(loaded.table, loaded.drop, loaded.methods, loaded.paper_table)
        update_readme(Path(readme), {f"{profile}-summary": summary_markdown(loaded.table, loaded.drop, loaded.alpha),
                                     f"{profile}-claims": claims_markdown(claims)})
    return loaded.table


def merge_runs(sources: list[Path], target: Path, profile: str = "default") -> pd.DataFrame:
    """Combine the databases of several runs of the same profile (e.g. a plugin's run and the default one)
    into `target` and write its leaderboard. Runs of different profiles, or with different reading
    settings, are refused; a cell present in several runs is taken from the last one named."""
    if not sources:
        raise WmbenchError("--merge needs at least one run folder")
    dbs = []
    for source in map(Path, sources):
        if not (source / DB_NAME).is_file():
            raise WmbenchError(f"no results database in {source}")
        dbs.append((source, ResultsDB(source, profile)))
    first_source, first = dbs[0]
    settings = ("alpha", "max_utility_drop")
    for source, db in dbs[1:]:
        if db.meta(f"profile:{profile}") != first.meta(f"profile:{profile}"):
            raise WmbenchError(f"cannot merge {source} with {first_source}: they are runs of different "
                               f"'{profile}' profiles")
        for name in settings:
            if db.meta("config", {}).get(name) != first.meta("config", {}).get(name):
                raise WmbenchError(f"cannot merge {source} with {first_source}: different {name}")
    merged = ResultsDB(target, profile)
    config = dict(first.meta("config", {}))
    for field in ("defenses", "attacks"):
        names = [n for _, db in dbs for n in (db.meta("config", {}).get(field) or [])]
        config[field] = sorted(set(names)) or None
    merged.set_meta("config", config)
    merged.set_meta(f"profile:{profile}", first.meta(f"profile:{profile}"))
    merged.set_meta("environment", first.meta("environment"))
    merged.set_meta("software", first.meta("software"))
    methods = [stored_methods(db) for _, db in dbs]
    merged.set_meta("methods", {part: {name: m for each in methods for name, m in each[part].items()}
                                for part in ("defenses", "attacks")})
    merged.set_meta("merged_from", [str(source) for source, _ in dbs])
    for _, db in dbs:
        for prepared in db.prepared().values():
            merged.put_prepared(prepared)
        for cell in db.cells():
            merged.put_cell(cell)
    return write_leaderboard(target, profile).table


def update_readme(readme: Path, blocks: dict[str, str]) -> None:
    """Replace each generated block of the README (between `<!-- NAME:start -->` and `<!-- NAME:end -->`)
    with its new text; a block whose markers are missing is left out."""
    text = readme.read_text()
    for name, body in blocks.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if start not in text or end not in text:
            continue
        head, rest = text.split(start, 1)
        text = f"{head}{start}\n{body}{end}{rest.split(end, 1)[1]}"
    atomic_write(readme, lambda p: p.write_text(text))
