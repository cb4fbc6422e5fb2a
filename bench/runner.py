"""The runner: expands defenses × attacks × strengths × seeds into cells, builds every model once through
the artifact cache, verifies, and stores each cell's result as soon as it finishes.

Work is spread over the executor's workers in two streams: first the clean base models (the owners', the
independent innocents' and the attacker's own), then, per (defense, seed), the key, the marked model and the
checks no attack changes ("prepare"), followed by the cells (attack the marked model, attack the clean model
too, verify both), each cell drawn once its (defense, seed) is prepared or, at the end of preparing, while
its checks are made."""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import resource
import signal
import threading
import time
import traceback
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import torch
from threadpoolctl import threadpool_limits
from torch import nn

from bench import registry
from bench.cache import ArtifactCache, StorageError, default_cache_dir, weights_digest
from bench.config import Profile, RunConfig
from bench.context import Clean, Context, derive_seed, innocent_pool, innocent_pool_gap
from bench.datasets import load_dataset
from bench.executors import Executor, LocalExecutor, SerialExecutor, make_executor
from bench.kinds.base import get_kind
from bench.kinds.models import architecture_for
from bench.lockfile import environment_record
from bench.nulls import check_alpha, key_randomization
from bench.portable import PINNED_ISA, environment, pin_kernels
from bench.protocols import Defense, Key, WmbenchError
from bench.results import CellId, CellResult, Check, Prepared, ResultsDB, exclusive_run
from bench.training import mixed_precision


T = TypeVar("T")


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise WmbenchError("--device cuda asked for, but torch sees no CUDA device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def training_dtype(profile: Profile, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training loops: bfloat16 where the profile asks for mixed precision and the
    device is a CUDA GPU that supports it (no loss scaling needed), else None (float32)."""
    if profile.mixed_precision and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def owner_secret(seed: int) -> int:
    return derive_seed("owner", seed)


@dataclass(frozen=True)
class Plan:
    cells: list[CellId]  # every cell of the selection, those outside the threat model included
    outside: dict[CellId, str]  # cells outside the threat model, with the reason (reported n/a, never run)
    groups: list[tuple[str, int]]  # (defense, seed) pairs that the runnable cells need
    owners: list[tuple[str, Clean]]  # (model kind, clean model) the owners' clean models
    innocents: list[tuple[str, Clean]]  # (model kind, clean model) the innocent pool of each kind used
    scratch: list[tuple[str, Clean]] = field(default_factory=list)  # (model kind, clean model) the attacker's own

    @property
    def bases(self) -> list[tuple[str, Clean]]:
        return self.owners + self.innocents + self.scratch


def make_plan(cfg: RunConfig) -> Plan:
    """Every compatible (defense, attack, strength, seed) cell of the config; unknown names are errors."""
    defenses = [registry.get_defense(n) for n in (cfg.defenses or registry.defense_names())]
    attacks = [registry.get_attack(n) for n in (cfg.attacks or registry.attack_names())]
    offered = {s for a in attacks for s in a.strengths}
    unknown = [s for s in cfg.strengths if s not in offered]
    if unknown:
        raise WmbenchError(f"no selected attack offers strength '{unknown[0]}'; offered: {', '.join(sorted(offered))}")
    profile = cfg.resolved_profile()
    cells, outside = [], {}
    for d in defenses:
        # a control defense's marked model is the clean model, so its cells past the profile's
        # `clean_control_seeds` would attack clean models that no other cell's control shares
        seeds = range(min(cfg.n_seeds, max(1, profile.clean_control_seeds)) if d.control else cfg.n_seeds)
        for a in attacks:
            if not registry.compatible(d, a) or (d.variant_of and not cfg.defenses and a.name != "none"):
                continue
            gap = registry.threat_model_gap(d, a)
            for s in registry.strengths_for(a, d.model_kind):
                if cfg.strengths and s not in cfg.strengths:
                    continue
                for seed in seeds:
                    cells.append(CellId(d.name, a.name, s, seed))
                    if gap:
                        outside[cells[-1]] = gap
    if not cells:
        raise WmbenchError("no compatible (defense, attack) pair in this selection; see `wmbench list`")
    groups = sorted({(c.defense, c.seed) for c in cells if c not in outside})
    check_alpha(cfg.level, profile.null_keys)
    for kind, architecture in (("classifier", profile.classifier_arch), ("encoder", profile.encoder_arch)):
        architecture_for(kind, architecture)  # a profile naming a wrong architecture fails here, in one line
    used = [registry.get_defense(d) for d in sorted({d for d, _ in groups})]
    kinds = sorted({d.model_kind for d in used})
    owners = [(k, Clean(s)) for k in kinds for s in range(cfg.n_seeds)]
    innocents = [(k, c) for k in kinds for c in innocent_pool(profile, k)]
    scratch = [(k, c) for k in kinds for c in get_kind(k).scratch(profile)]
    return Plan(cells, outside, groups, owners, innocents, scratch)


class Workbench:
    """Per-process access to data, contexts and cached artifacts for one run configuration."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.profile = cfg.resolved_profile()
        self.device = resolve_device(cfg.device)
        self.autocast_dtype = training_dtype(self.profile, self.device)
        data = load_dataset(self.profile.dataset, self.profile.image_size, self.profile.train_limit)
        self.data = data.with_attacker_share(self.profile.attacker_data_share).to(self.device)
        root = cfg.cache or default_cache_dir()  # models trained with pinned kernels are kept apart
        self.cache = ArtifactCache(root / f"portable-{PINNED_ISA.lower()}" if cfg.portable else root)

    def context(self, kind: str, seed: int, defense: str = "") -> Context:
        ctx = Context(self.data, self.profile, seed, kind, self.device, self.cache, defense)
        return dataclasses.replace(ctx, pirate_secret=self.pirate_secret(ctx)) if defense else ctx

    def pirate_secret(self, ctx: Context) -> int:
        """The judge's draw of a pirate's secret for a cell: the first of a seeded sequence whose key does not
        collide with the owner's by the defense's optional `keys_collide(owner, pirate)`. The experiment's
        side, as in the null-embedding paper's piracy experiments (the pirate's target is another label);
        the pirate's code only ever sees the secret it gets."""
        defense = registry.get_defense(ctx.defense)
        candidates = itertools.chain([derive_seed("pirate", ctx.seed)],
                                     (derive_seed("pirate", ctx.seed, i) for i in itertools.count(1)))
        collide = defense.keys_collide
        if collide is None:
            return next(candidates)
        owner = self.key(defense, ctx, owner_secret(ctx.seed))[0]
        return next(s for s in candidates if not collide(owner, defense.make_key(ctx, s)))

    def key(self, defense: Defense, ctx: Context, secret: int) -> tuple[Key, dict]:
        desc = {"role": "key", "defense": registry.scheme(defense), "version": defense.version, "secret": secret,
                "base": ctx.base_descriptor(ctx.seed)}
        return self.cache.key(desc, lambda: defense.make_key(ctx, secret)), desc

    def marked(self, defense: Defense, ctx: Context) -> tuple[nn.Module, Key]:
        key, key_desc = self.key(defense, ctx, owner_secret(ctx.seed))
        desc = {"role": "marked", "defense": registry.scheme(defense), "version": defense.version, "key": key_desc}
        model = self.cache.model(desc, lambda: defense.watermark(ctx, key))
        return model.to(self.device), key


_workbenches: dict[str, Workbench] = {}


def workbench(cfg: RunConfig) -> Workbench:
    """This process's workbench for `cfg` (data and device set up once per process)."""
    key = repr(cfg)
    if key not in _workbenches:
        _workbenches.clear()
        _workbenches[key] = Workbench(cfg)
    return _workbenches[key]


def runner_task(task: Callable[..., T]) -> Callable[..., T]:
    """Run a task (first argument: the run's config) with one torch thread, one BLAS/OpenMP thread for
    numpy, scipy and scikit-learn, and the run's training precision, whoever calls it: CPU float results
    depend on the thread count, so this keeps every number independent of the executor and of the number of
    workers. The BLAS limit also matters for speed: with one worker per core, a linear probe whose BLAS
    spawns a thread per core runs 30× slower (10 s against 0.3 s on 4,000 features, oversubscribed)."""

    @functools.wraps(task)
    def run(cfg: RunConfig, *args):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with threadpool_limits(1), mixed_precision(workbench(cfg).autocast_dtype):
                return task(cfg, *args)
        finally:
            torch.set_num_threads(threads)

    return run


@runner_task
def worker_environment(cfg: RunConfig) -> dict:
    """Versions, kernel settings and CPU of a worker (what its float results depend on)."""
    return environment(cfg.portable)


@runner_task
def build_base(cfg: RunConfig, kind: str, clean: Clean) -> tuple[float, str]:
    """Train (or load) one clean model; returns the seconds it took and its weights digest."""
    start = time.perf_counter()
    model = workbench(cfg).context(kind, clean.seed).clean_model(clean)
    return time.perf_counter() - start, weights_digest(model)


def failure_reason(e: BaseException) -> str:
    """One line naming what failed: the exception's type and message, at most 300 characters."""
    return f"{e.__class__.__name__}: {e}".replace("\n", " ")[:300]


def checked(defense: Defense, ctx: Context, suspect: nn.Module, key: Key, nulls: Sequence[Key], alpha: float,
            unit: str = "") -> Check:
    """`key` checked on `suspect` both ways: the defense's own verification at its paper's threshold, and the
    key-randomization test against `nulls` read at level `alpha` (`bench.nulls`)."""
    return Check.of(defense.verify(ctx, suspect, key), key_randomization(defense, ctx, suspect, key, nulls, alpha), unit)


@runner_task
def prepare(cfg: RunConfig, defense_name: str, seed: int) -> tuple[Prepared, str]:
    """Key, marked model, utilities before attack, and the checks of one (defense, seed) that no attack
    changes: the owner's key on its marked model, on every innocent model (false accusation), and every other
    seed's owner's key on this marked model (key specificity: a party's key, made by the same procedure on its
    own model, tested against its own null keys); also the marked model's weights digest."""
    start = time.perf_counter()
    wb = workbench(cfg)
    defense = registry.get_defense(defense_name)
    ctx = wb.context(defense.model_kind, seed, defense_name)
    marked, key = wb.marked(defense, ctx)
    nulls = ctx.null_keys(defense, key)
    innocent = [checked(defense, ctx, ctx.clean_model(c), key, nulls, cfg.level, unit=c.name) for c in ctx.innocents()]
    parties = []
    for other in range(cfg.n_seeds):
        if other != seed:
            party = wb.context(defense.model_kind, other, defense_name)
            party_key = wb.key(defense, party, owner_secret(other))[0]
            parties.append(checked(defense, party, marked, party_key, party.null_keys(defense, party_key), cfg.level,
                                   unit=f"owner of seed {other}"))
    low_label = ctx.low_label_utility(marked)  # None: the kind has no low-label utility, and needs no reference
    prepared = Prepared(defense_name, seed, ctx.utility(ctx.base_model()), ctx.utility(marked), innocent, parties,
                        time.perf_counter() - start, innocent_pool_gap(ctx.profile, ctx.kind_name),
                        owner_check=checked(defense, ctx, marked, key, nulls, cfg.level),
                        attacker_scratch_utility=ctx.attacker_scratch_utility(),
                        utility_low_label_clean=ctx.low_label_utility(ctx.base_model()),
                        utility_low_label_marked=low_label,
                        utility_low_label_untrained=None if low_label is None else ctx.low_label_utility(
                            ctx.untrained_model()))
    return prepared, weights_digest(marked)


def check_innocents_are_distinct(innocent: dict[tuple[str, Clean], str], owned: dict[str, str]) -> None:
    """Refuse a run in which an innocent model holds the same weights as an owner's clean or marked model
    (`owned`: digest → what it is): it would count the owner's own model as innocent."""
    for (kind, clean), d in sorted(innocent.items(), key=lambda item: (item[0][0], item[0][1].name)):
        if d in owned:
            raise WmbenchError(f"innocent {kind} model ({clean.name}) has the same weights as {owned[d]}; "
                               f"an innocent pool must not contain the owner's models")


@runner_task
def run_cell(cfg: RunConfig, cell: CellId) -> CellResult:
    """Attack the marked model (and, as an innocent control, the clean one) and verify; never raises."""
    start = time.perf_counter()
    wb = workbench(cfg)
    if wb.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        defense, attack = registry.get_defense(cell.defense), registry.get_attack(cell.attack)
        ctx = wb.context(defense.model_kind, cell.seed, cell.defense)
        marked, key = wb.marked(defense, ctx)
        outcome = ctx.attacked(attack, marked, cell.strength)
        # the same attack on the owner's clean model, an innocent control, in the first seeds only (the
        # profile's `clean_control_seeds`): it doubles an attack's cost wherever no other cell shares it
        controlled = cell.seed < wb.profile.clean_control_seeds
        clean_outcome = ctx.attacked(attack, ctx.base_model(), cell.strength) if controlled else None
        # a pirate made its key for the model it held: its null keys are drawn for that model, under the same
        # constraint as its secret (never colliding with the owner's key); on a suspect that carries a pirate's
        # mark, the owner's null keys are drawn under that constraint too, so that no null key shares the
        # pirate's mark (the owner's key never does)
        pirate, clean_pirate = outcome.pirate_key, None if clean_outcome is None else clean_outcome.pirate_key
        collide = defense.keys_collide
        if collide is not None and any(p is not None and collide(key, p) for p in (pirate, clean_pirate)):
            raise WmbenchError("the pirate's key collides with the owner's: the harness's draw of its secret "
                               "(Workbench.pirate_secret) and the key it made disagree")
        result = CellResult(
            cell, "ok",
            utility_attacked=ctx.utility(outcome.model),
            utility_low_label=ctx.low_label_utility(outcome.model),
            check=checked(defense, ctx, outcome.model, key, ctx.null_keys(defense, key, avoid=pirate), cfg.level),
            matched_innocent=None if clean_outcome is None else checked(
                defense, ctx, clean_outcome.model, key, ctx.null_keys(defense, key, avoid=clean_pirate), cfg.level),
            pirate_check=None if pirate is None else checked(
                defense, ctx, outcome.model, pirate, ctx.null_keys(defense, pirate, marked, avoid=key), cfg.level),
            pirate_clean_check=None if clean_pirate is None else checked(
                defense, ctx, clean_outcome.model, clean_pirate,
                ctx.null_keys(defense, clean_pirate, ctx.base_model(), avoid=key), cfg.level),
            attack_report=outcome.report,
        )
        result.identified = result.check.identified
    except StorageError:  # the disk refused a write: not the method's fault, it stops the run in one line
        raise
    except Exception as e:  # a failing method fails its cell, not the matrix
        result = CellResult(cell, f"failed: {failure_reason(e)}", traceback=traceback.format_exc())
    result.seconds = time.perf_counter() - start
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if wb.device.type == "cuda":
        result.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20
    result.device = wb.device.type
    return result


@dataclass
class WaveTiming:
    """One wave of a run: how long it took, and how much work its tasks did (summed task seconds). With
    `workers` workers, task_s / (wall_s · workers) is how busy they were. "prepare" and "cells" overlap (a cell
    starts once its group is prepared, or while its checks run), so their wall times add up to at least that of
    "prepare + cells", the two together."""

    wave: str  # "bases", "prepare" (until the last group is prepared), "cells" (from the first), "prepare + cells"
    tasks: int
    wall_s: float
    task_s: float


@dataclass
class Summary:
    ran: int  # cells evaluated by this call
    reused: int  # cells already done by an earlier call
    failed: int  # cells of the plan whose status is not ok
    seconds: float
    timing: list[WaveTiming] = field(default_factory=list)
    outside: int = 0  # cells outside the threat model (recorded n/a, not run)


class _Interrupt:
    """Ctrl-C during a run: the first press stops handing out tasks, so the run ends once the tasks in
    flight are done (each stored as it finishes); a second press stops it at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        os.write(2, b"\nwmbench: stopping after the cells in flight (Ctrl-C again to stop now)\n")

    def until_requested(self, tasks: Iterable[T]) -> Iterator[T]:
        for task in tasks:
            if self.requested:
                return
            yield task


_interrupt = _Interrupt()  # the running run's


def _wave(executor: Executor, task: Callable[..., Any], tasks: Iterable[tuple]) -> Iterator[tuple[tuple, Any]]:
    """`executor.map(task, tasks)`, handing out no new task after Ctrl-C. A task whose disk refused a write
    stops the run with that one-line error (it is no method's failure, and every later task would hit it)."""
    for args, outcome in executor.map(task, _interrupt.until_requested(tasks)):
        if isinstance(outcome, StorageError):
            raise outcome
        yield args, outcome


@contextmanager
def _exclusive_and_interruptible(out: Path) -> Iterator[_Interrupt]:
    """Hold the output folder `out` (a second run into it is refused in one line) and let Ctrl-C stop the
    handing out of tasks, so the run ends after the cells in flight; the caller then raises KeyboardInterrupt
    (the CLI says how to resume)."""
    global _interrupt
    _interrupt = interrupt = _Interrupt()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupt) if in_main_thread else None
    try:
        with exclusive_run(out):
            yield interrupt
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        _interrupt = _Interrupt()


def run_matrix(cfg: RunConfig, executor: Executor | None = None, progress: bool = True) -> Summary:
    """Evaluate every pending cell of `cfg` into `cfg.out` (its results database; the leaderboard files are the
    caller's to render from it, `bench.report.write_leaderboard`)."""
    plan = make_plan(cfg)  # bad input is refused before the output folder is touched
    with _exclusive_and_interruptible(cfg.out) as interrupt:
        summary = _run_plan(cfg, plan, executor, progress)
    if interrupt.requested:
        raise KeyboardInterrupt
    return summary


def _run_plan(cfg: RunConfig, plan: Plan, executor: Executor | None, progress: bool) -> Summary:
    """`run_matrix`'s work, with the output folder held."""
    start = time.perf_counter()
    db = ResultsDB(cfg.out, cfg.label)
    _check_same_profile(db, cfg)
    _check_same_level(db, cfg)
    _check_same_software(db)
    methods = db.meta("methods") or {"defenses": {}, "attacks": {}}
    described = registry.describe_methods(sorted({c.defense for c in plan.cells}), sorted({c.attack for c in plan.cells}))
    db.set_meta("methods", {part: {**methods[part], **described[part]} for part in ("defenses", "attacks")})
    db.set_meta("config", {"defenses": cfg.defenses, "attacks": cfg.attacks, "strengths": cfg.strengths,
                           "seeds": cfg.n_seeds, "profile": cfg.profile, "vlp": cfg.vlp, "data": cfg.data,
                           "attacker_share": cfg.attacker_share,
                           "alpha": cfg.level, "max_utility_drop": cfg.max_utility_drop})
    finished = db.done()
    for cell, reason in plan.outside.items():
        if cell not in finished:
            db.put_cell(CellResult(cell, f"n/a: {reason}"))
    pending = [c for c in plan.cells if c not in finished and c not in plan.outside]
    groups = sorted({(c.defense, c.seed) for c in pending})
    prepared = db.prepared()
    todo_groups = [g for g in groups if g not in prepared]
    kinds = {registry.get_defense(d).model_kind for d, _ in todo_groups + [(c.defense, 0) for c in pending]}
    bases = [b for b in plan.bases if b[0] in kinds]
    if pending:  # data that cannot be found is one error here, not a failure in every cell
        profile = cfg.resolved_profile()
        load_dataset(profile.dataset, profile.image_size, profile.train_limit)
    if cfg.portable:
        pin_kernels()  # inherited by the spawned workers, which import torch after this
        if executor is None or isinstance(executor, SerialExecutor):
            executor = LocalExecutor(cfg.workers)  # even with one worker: this process's torch is loaded
        elif not isinstance(executor, LocalExecutor):
            raise WmbenchError("--portable needs the local executor's worker processes")
    executor = executor or make_executor("local", cfg.workers)
    timing = []
    with executor:
        for _, env in executor.map(worker_environment, [(cfg,)]):
            if isinstance(env, dict):
                db.set_meta("environment", env)
        wave_start, task_s = time.perf_counter(), 0.0
        digests: dict[tuple[str, Clean], str] = {}
        built = _wave(executor, build_base, [(cfg, k, c) for k, c in bases])
        for (_, kind, clean), outcome in _with_progress(built, len(bases), "bases", progress, _base_line):
            if isinstance(outcome, tuple):  # a base that fails to build fails the groups that need it, below
                task_s += outcome[0]
                digests[(kind, clean)] = outcome[1]
        owned = {d: f"the owner's clean model ({c.name})" for (k, c), d in digests.items() if (k, c) in plan.owners}
        innocent = {b: d for b, d in digests.items() if b in plan.innocents}
        check_innocents_are_distinct(innocent, owned)
        timing.append(WaveTiming("bases", len(bases), time.perf_counter() - wave_start, task_s))
        timing += _prepare_and_run_cells(cfg, db, executor, todo_groups, pending, innocent, progress)
    status = {r.cell: r.status for r in db.cells()}
    failed = sum(1 for c in plan.cells if c not in plan.outside and status.get(c) != "ok")
    summary = Summary(len(pending), len(plan.cells) - len(plan.outside) - len(pending), failed,
                      time.perf_counter() - start, timing, len(plan.outside))
    if pending:  # the timing log of the runs that did work, newest last
        log = db.meta("run_timings", [])[-19:]
        db.set_meta("run_timings", log + [{"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                           "workers": cfg.workers, "cells_run": len(pending),
                                           "wall_s": summary.seconds, "waves": [asdict(t) for t in timing]}])
    return summary


def _call(task: Callable[..., T], *args: Any) -> T:
    """One task of a mixed stream: `task(*args)` (a module-level task, so it travels to a worker by name)."""
    return task(*args)


class _Schedule:
    """The prepare-and-cells stream of a run: every (defense, seed) to prepare first, in order, then the cells,
    each drawn when a worker frees up: first a cell whose group is prepared (in this run or an earlier one), else
    one of the group whose preparing began first, which waits in its worker for the marked model the cache is
    building, then attacks it while the group's checks run. A lazy executor (the local one) draws after handling
    every outcome so far, so it never draws a cell of a group in `dropped` (its preparing failed, or is to be
    redone); an eager one (Ray) draws everything at once, and the caller drops those cells' results."""

    def __init__(self, cfg: RunConfig, groups: list[tuple[str, int]], cells: list[CellId]):
        self.cfg, self.groups, self.cells = cfg, groups, list(cells)
        self.started = {g: i for i, g in enumerate(groups)}  # groups still being prepared, in hand-out order
        self.dropped: set[tuple[str, int]] = set()
        self.first_cell_at: float | None = None

    def tasks(self) -> Iterator[tuple]:
        for defense, seed in self.groups:
            yield prepare, self.cfg, defense, seed
        while True:
            self.cells = [c for c in self.cells if (c.defense, c.seed) not in self.dropped]
            if not self.cells:
                return
            i = min(range(len(self.cells)),
                    key=lambda j: (self.started.get((self.cells[j].defense, self.cells[j].seed), -1), j))
            if self.first_cell_at is None:
                self.first_cell_at = time.perf_counter()
            yield run_cell, self.cfg, self.cells.pop(i)


def _prepare_and_run_cells(cfg: RunConfig, db: ResultsDB, executor: Executor, groups: list[tuple[str, int]],
                           cells: list[CellId], innocent: dict[tuple[str, Clean], str],
                           progress: bool) -> list[WaveTiming]:
    """Prepare every (defense, seed) of `groups` and run `cells`, in one stream over the workers (`_Schedule`):
    a cell starts once its group is prepared, or while its group's checks run, instead of after the last group.
    A cell's result is stored once its group's preparing has succeeded; if that fails, every cell of the group
    is stored as failed with its reason. A preparing whose worker died (BrokenProcessPool: a crash in another
    task can take the pool down with it) is redone once, with its group's cells, after the stream. Returns the
    timing of the prepare wave (until the last group is prepared), of the cells (from the first one drawn; a
    cell's seconds include its wait for the marked model) and of both together."""
    from tqdm import tqdm

    start = time.perf_counter()
    prepare_s = cells_s = 0.0
    prepared_at, ran, first_cell_at = start, 0, None
    bar = tqdm(total=len(groups) + len(cells), desc="prepare and cells", unit="task", disable=not progress,
               leave=False)
    todo, redo = (groups, cells), True
    while True:
        schedule, held, again = _Schedule(cfg, *todo), {}, []
        for args, outcome in _wave(executor, _call, schedule.tasks()):
            bar.update()
            if args[0] is prepare:
                group = args[2:]
                del schedule.started[group]
                prepared_at = time.perf_counter()
                if isinstance(outcome, BaseException):
                    schedule.dropped.add(group)
                    held.pop(group, None)
                    if redo and isinstance(outcome, BrokenProcessPool):
                        bar.write(f"{group[0]} seed {group[1]}: its worker died; it will be prepared again")
                        again.append(group)
                        continue
                    bar.write(_prepared_line((args[1:], outcome)))
                    for c in todo[1]:
                        if (c.defense, c.seed) == group:
                            db.put_cell(CellResult(c, f"failed: {failure_reason(outcome)}"))
                    continue
                bar.write(_prepared_line((args[1:], outcome)))
                prepared_group, marked_digest = outcome
                check_innocents_are_distinct(innocent,
                                             {marked_digest: f"the marked {group[0]} model of seed {group[1]}"})
                db.put_prepared(prepared_group)
                prepare_s += prepared_group.seconds
                for result in held.pop(group, []):
                    db.put_cell(result)
                continue
            result = (outcome if isinstance(outcome, CellResult)
                      else CellResult(args[2], f"failed: worker: {outcome!r}"[:300]))
            bar.write(_cell_line(result))
            cells_s, ran = cells_s + (result.seconds or 0.0), ran + 1
            group = (result.cell.defense, result.cell.seed)
            if group in schedule.dropped:
                continue  # stored as failed with its group's reason, or run again with its group
            if group in schedule.started:
                held.setdefault(group, []).append(result)
            else:
                db.put_cell(result)
        assert not held, f"cells held for groups whose preparing never reported: {sorted(held)}"
        first_cell_at = first_cell_at or schedule.first_cell_at
        if not again or _interrupt.requested:
            break
        todo, redo = (again, [c for c in cells if (c.defense, c.seed) in again]), False
    bar.close()
    end = time.perf_counter()
    return [WaveTiming("prepare", len(groups), prepared_at - start, prepare_s),
            WaveTiming("cells", ran, end - (first_cell_at or end), cells_s),
            WaveTiming("prepare + cells", len(groups) + ran, end - start, prepare_s + cells_s)]


def _changed_keys(recorded: dict, current: dict, most: int | None = None) -> str:
    """The keys whose values differ between two records, for a refusal's one line (the first `most`)."""
    changed = sorted(k for k in recorded.keys() | current.keys() if recorded.get(k) != current.get(k))
    return ", ".join(changed[:most]) + (", …" if most is not None and len(changed) > most else "")


def _check_same_profile(db: ResultsDB, cfg: RunConfig) -> None:
    """Refuse to resume into results made with a different definition of the same-named profile: its
    finished cells would be reused as if they were current."""
    current = json.loads(json.dumps(cfg.resolved_profile().describe()))  # as stored: tuples become lists
    recorded = db.meta(f"profile:{cfg.label}")
    if recorded is not None and recorded != current:
        raise WmbenchError(f"{db.path} holds results of a different '{cfg.label}' profile (changed: "
                           f"{_changed_keys(recorded, current)}); use another --out, or delete that database to "
                           f"start over")
    db.set_meta(f"profile:{cfg.label}", current)


def _check_same_level(db: ResultsDB, cfg: RunConfig) -> None:
    """Refuse to resume, at another level α, results whose key-randomization tests were read at α: each test
    stops once its p-value cannot reach its run's α (`bench.nulls.stop_count`), so the two would mix."""
    recorded = (db.meta("config") or {}).get("alpha")
    if recorded is not None and float(recorded) != cfg.level and (db.done() or db.prepared()):
        raise WmbenchError(f"{db.path} holds tests read at α = {float(recorded):g}, not --alpha {cfg.level:g} (a test "
                           f"stops once its p-value cannot reach its run's α); use another --out, or read this run at "
                           f"another level with `wmbench report --alpha`")


def _check_same_software(db: ResultsDB) -> None:
    """Record the run's software (code commit, lock hash, installed versions) on its first call, and refuse to
    resume it with other package versions: its finished cells would mix with cells computed differently."""
    current = environment_record()
    recorded = db.meta("software")
    if recorded is not None and recorded.get("packages") != current["packages"]:
        raise WmbenchError(f"{db.path} holds results computed with other package versions (changed: "
                           f"{_changed_keys(recorded.get('packages', {}), current['packages'], most=5)}); use another "
                           f"--out, or delete that database to start over")
    if recorded is None:
        db.set_meta("software", current)


def _with_progress(outcomes: Iterable[T], total: int, wave: str, progress: bool,
                   line: Callable[[T], str]) -> Iterator[T]:
    """The outcomes of a wave as they arrive, under a progress bar named after the wave, with a line each."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=wave, unit="task", disable=not progress, leave=False)
    for outcome in outcomes:
        bar.write(line(outcome))
        bar.update()
        yield outcome
    bar.close()


def _base_line(outcome: tuple[tuple, Any]) -> str:
    (_, kind, clean), built = outcome
    done = f"built ({built[0]:.1f}s)" if isinstance(built, tuple) else f"failed: {failure_reason(built)}"
    return f"{kind} {clean.name}: {done}"


def _prepared_line(outcome: tuple[tuple, Any]) -> str:
    (_, defense, seed), made = outcome
    if isinstance(made, BaseException):
        return f"{defense} seed {seed}: failed: {failure_reason(made)}"
    owner = made[0].owner_check
    verdict = "" if owner is None else f" owner detected={owner.detected} p={owner.p_value:.3g}"
    return f"{defense} seed {seed}: prepared{verdict} ({made[0].seconds:.1f}s)"


def _cell_line(r: CellResult) -> str:
    c = r.cell
    verdict = "" if r.check is None else f" detected={r.check.detected} stat={r.check.statistic:.3f}"
    return f"{c.defense} × {c.attack}[{c.strength}] seed {c.seed}: {r.status}{verdict} ({r.seconds:.1f}s)"
