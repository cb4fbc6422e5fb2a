"""Results as data: one row per evaluated cell and per prepared (defense, seed), in SQLite under the
output folder, written as each finishes. A cell is stored exactly once (re-runs replace it). One run at a
time writes into an output folder (`exclusive_run`); a disk that refuses a write is one error
(`StorageError`), and SQLite's transactions leave nothing half-written."""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from bench.cache import StorageError
from bench.nulls import KeyTest
from bench.protocols import Verification, WmbenchError

DB_NAME = "results.sqlite"
RUN_LOCK = ".wmbench-run.lock"  # held by the run writing into the folder
# SQLite's result codes (and their extended forms) for a database the disk or the system refuses to write
_REFUSED = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PERM", "SQLITE_BUSY")


@contextmanager
def exclusive_run(out: Path) -> Iterator[None]:
    """Hold the output folder `out` for one run: a second run into it is refused in one line (it would
    compute the same pending cells again). Taking the lock is the run's first write there, so an output
    folder that cannot be written is reported here, in one line too."""
    out = Path(out)
    lock = FileLock(out / RUN_LOCK, timeout=0)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        raise WmbenchError(f"another `wmbench run` is writing into {out}; wait for it to finish, or use another "
                           f"--out") from None
    except OSError as e:
        raise StorageError(f"cannot write into {out}: {e.strerror or e}") from e
    try:
        yield
    finally:
        lock.release()


@dataclass(frozen=True)
class CellId:
    defense: str
    attack: str
    strength: str
    seed: int


@dataclass
class Check:
    """One key checked on one suspect, flattened for storage: the defense's own verification (`detected` at
    its paper's `threshold` on `statistic`; its own test's p-value in `details["paper_p"]`) and the
    key-randomization test (`p_value`, from the key's `score` against `null_size` null keys, `null_exceed` of
    the `null_scored` scored reaching it; `null_size` 0: a run from before the test, no p-value)."""

    detected: bool
    statistic: float
    threshold: float
    p_value: float
    details: dict[str, float] = field(default_factory=dict)
    unit: str = ""  # the innocent unit checked (a model's name, or the party whose key it is)
    score: float = float("nan")
    null_size: int = 0
    null_scored: int = 0
    null_exceed: int = 0

    @classmethod
    def of(cls, v: Verification, test: KeyTest, unit: str = "") -> "Check":
        return cls(bool(v.detected), float(v.statistic), float(v.threshold), float(test.p_value),
                   {**v.details, "paper_p": float(v.p_value)}, unit, float(test.score), test.null_size, test.scored,
                   test.exceed)

    @property
    def tested(self) -> bool:
        """Whether it carries a key-randomization p-value."""
        return self.null_size > 0

    @property
    def identified(self) -> bool:
        """The key scored above every one of its null keys (p = 1 / (K + 1))."""
        return self.tested and self.null_exceed == 0 and self.null_scored == self.null_size

    def at(self, alpha: float) -> bool:
        """Detected by the key-randomization test at level `alpha` (False without a test)."""
        return self.tested and self.p_value <= alpha


@dataclass
class Prepared:
    """What is measured once per (defense, seed): utilities before any attack, and the checks no attack
    changes: the owner's key on each innocent model of the kind (`innocent_checks`, unit = the model: false
    accusation) and each other party's key on the marked model (`party_checks`, unit = the party: key
    specificity)."""

    defense: str
    seed: int
    utility_clean: float
    utility_marked: float
    innocent_checks: list[Check]
    party_checks: list[Check]
    seconds: float
    innocent_gap: str = ""  # why the kind has no innocent models in this run ('' when it has)
    owner_check: Check | None = None  # the owner's key on its own unattacked marked model
    attacker_scratch_utility: float | None = None  # mean utility of the attacker's own models (None: no baseline)
    # the kind's low-label utility (`KindBase.low_label_utility`; None: the kind has none, or an older run) of
    # the clean and the marked model, and of an untrained model of the kind initialised with the seed
    utility_low_label_clean: float | None = None
    utility_low_label_marked: float | None = None
    utility_low_label_untrained: float | None = None


@dataclass
class CellResult:
    cell: CellId
    status: str  # "ok", "failed: <reason>" or "n/a: <reason>" (outside the threat model: not run)
    utility_attacked: float | None = None
    utility_low_label: float | None = None  # the attacked model's low-label utility (None: the kind has none)
    check: Check | None = None
    matched_innocent: Check | None = None  # the same attack run on the clean base model, verified with the key
    pirate_check: Check | None = None  # the pirate's own key verified on the pirated model
    pirate_clean_check: Check | None = None  # the same pirate's key on the pirated *clean* model (the contrast)
    identified: bool | None = None  # the owner's key scores above every one of its null keys on the suspect
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float = 0.0
    device: str = "cpu"
    attack_report: dict[str, Any] = field(default_factory=dict)
    traceback: str = ""


def _check(d: dict | None) -> Check | None:
    return None if d is None else Check(**d)


class ResultsDB:
    def __init__(self, out: Path, profile: str):
        self.path = Path(out) / DB_NAME
        self.profile = profile
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot write into {self.path.parent}: {e.strerror or e}") from e
        with self._connection() as con:
            con.execute("CREATE TABLE IF NOT EXISTS cells (defense TEXT, attack TEXT, strength TEXT, seed INTEGER,"
                        " profile TEXT, status TEXT, data TEXT, PRIMARY KEY (defense, attack, strength, seed, profile))")
            con.execute("CREATE TABLE IF NOT EXISTS prepared (defense TEXT, seed INTEGER, profile TEXT, data TEXT,"
                        " PRIMARY KEY (defense, seed, profile))")
            con.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection whose statements commit together, closed afterwards. A database the disk refuses to
        write (full, read-only) raises StorageError, one that is not a database WmbenchError; SQLite rolls
        the failed transaction back."""
        try:
            with closing(self._connect()) as con, con:
                yield con
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and getattr(e, "sqlite_errorname", "").startswith(_REFUSED):
                raise StorageError(f"cannot write {self.path}: {e}") from e
            if getattr(e, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
                raise WmbenchError(f"{self.path} is not a readable results database: {e}") from e
            raise

    def put_cell(self, r: CellResult) -> None:
        c = r.cell
        with self._connection() as con:
            con.execute("INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?)",
                        (c.defense, c.attack, c.strength, c.seed, self.profile, r.status, json.dumps(asdict(r))))

    def put_prepared(self, p: Prepared) -> None:
        with self._connection() as con:
            con.execute("INSERT OR REPLACE INTO prepared VALUES (?,?,?,?)",
                        (p.defense, p.seed, self.profile, json.dumps(asdict(p))))

    def set_meta(self, name: str, value: Any) -> None:
        with self._connection() as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (name, json.dumps(value)))

    def meta(self, name: str, default: Any = None) -> Any:
        with self._connection() as con:
            row = con.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return default if row is None else json.loads(row[0])

    def cell_records(self) -> list[dict[str, Any]]:
        """The cells' stored records as written (JSON objects, in cell order): a record of a run made before a
        field existed lacks that field."""
        with self._connection() as con:
            rows = con.execute("SELECT data FROM cells WHERE profile=? ORDER BY defense, attack, strength, seed",
                               (self.profile,)).fetchall()
        return [json.loads(data) for (data,) in rows]

    def cells(self) -> list[CellResult]:
        out = []
        for d in self.cell_records():
            d["cell"] = CellId(**d["cell"])
            for name in ("check", "matched_innocent", "pirate_check", "pirate_clean_check"):
                d[name] = _check(d.get(name))
            out.append(CellResult(**d))
        return out

    def prepared_records(self) -> list[dict[str, Any]]:
        """The prepared rows' stored records as written (JSON objects, by defense and seed)."""
        with self._connection() as con:
            rows = con.execute("SELECT data FROM prepared WHERE profile=? ORDER BY defense, seed",
                               (self.profile,)).fetchall()
        return [json.loads(data) for (data,) in rows]

    def prepared(self) -> dict[tuple[str, int], Prepared]:
        out = {}
        for d in self.prepared_records():
            d["innocent_checks"] = [Check(**c) for c in d["innocent_checks"]]
            # runs from before the key-randomization test checked decoy keys instead of parties: not carried over
            d["party_checks"] = [Check(**c) for c in d.pop("party_checks", [])]
            d.pop("wrong_key_checks", None)
            d["owner_check"] = _check(d.get("owner_check"))
            out[(d["defense"], d["seed"])] = Prepared(**d)
        return out

    def done(self) -> set[CellId]:
        """Cells that finished ok or were found outside the threat model (failed cells are tried again)."""
        with self._connection() as con:
            rows = con.execute("SELECT defense, attack, strength, seed FROM cells WHERE profile=? AND "
                               "(status='ok' OR status LIKE 'n/a%')", (self.profile,)).fetchall()
        return {CellId(*r) for r in rows}
