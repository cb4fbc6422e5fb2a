"""Leaderboard files derived from the results database: `leaderboard.csv`, `leaderboard.md` (tabulate: the
summary matrix, the papers' claims judged from the rows, every row), `claims.csv`, `leaderboard.png`
(utility after attack against verification rate), and on request LaTeX tables and the static site. Each
file is written to a temporary file and renamed, so a crash never leaves half of one."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, median, pstdev

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench import __version__
from bench.cache import atomic_write
from bench.claims import claims_table, owner_verified
from bench.results import CellResult, Check, Prepared, ResultsDB
from bench.scoring import decide, undecided, wilson

COLUMNS = [
    "defense", "model_kind", "attack", "family", "strength", "strength_rank", "status", "n_seeds", "utility_clean", "utility_clean_std", "utility_marked",
    "utility_marked_std", "utility_attacked", "utility_attacked_std",
    "verification_rate", "verification_ci_low", "verification_ci_high", "auc",
    "verification_rate_calibrated", "threshold_calibrated",
    "false_positive_rate", "fpr_ci_low", "fpr_ci_high", "false_positive_rate_calibrated",
    "n_innocent_models", "n_wrong_keys", "n_attacked_clean", "fpr_note",
    "removal_rate", "attack_succeeded", "removal_verdict", "threshold", "p_value_median",
    "identification_rate", "pirate_verification_rate", "pirate_clean_verification_rate", "ambiguity_rate",
    "seeds_detected_calibrated", "seeds_removed", "seeds_identified", "seeds_pirate_verified",
    "attack_report", "seconds",
]


def calibrated_threshold(innocent_scores: list[float], fpr_target: float) -> float:
    """The statistic's threshold that at most `fpr_target` of the innocent scores exceed. With fewer than
    1/fpr_target innocent scores this is their maximum: an empirical bound, not an exact 1 % point."""
    if not innocent_scores:
        return float("nan")
    return float(np.quantile(np.asarray(innocent_scores), 1 - fpr_target, method="higher"))


@dataclass(frozen=True)
class Unit:
    """One innocent unit: a distinct model or key, with its score (for a model checked with several owners'
    keys, the largest: the unit counts as a false positive if any check flags it)."""

    name: str
    kind: str  # "model", "wrong key" or "attacked clean"
    score: float
    flagged: bool  # at the method's own threshold
    seed: int = -1  # the owner seed a wrong key or an attacked clean model belongs to (-1: every seed)


def units(checks: list[Check], kind: str, seed: int = -1) -> list[Unit]:
    """Merge repeated checks of the same unit (same `Check.unit`) into one unit."""
    by_name: dict[str, list[Check]] = defaultdict(list)
    for i, c in enumerate(checks):
        by_name[c.unit or f"{kind} {i}"].append(c)
    return [Unit(name, kind, max(c.statistic for c in cs), any(c.detected for c in cs), seed)
            for name, cs in sorted(by_name.items())]


def halves(pool: list[Unit]) -> tuple[list[Unit], list[Unit]]:
    """A fixed split of the calibration pool into two halves, alternating within each kind of unit."""
    a: list[Unit] = []
    b: list[Unit] = []
    for kind in sorted({u.kind for u in pool}):
        for i, u in enumerate(sorted((u for u in pool if u.kind == kind), key=lambda u: u.name)):
            (a if i % 2 == 0 else b).append(u)
    return a, b


@dataclass(frozen=True)
class Calibration:
    """Thresholds calibrated on one half of the innocent pool, each judged on the other half (cross-fitted)."""

    thresholds: tuple[float, float]
    held_out: tuple[list[Unit], list[Unit]]  # the half each threshold was NOT fitted on

    @classmethod
    def cross_fitted(cls, pool: list[Unit], fpr_target: float) -> "Calibration":
        a, b = halves(pool)
        return cls((calibrated_threshold([u.score for u in a], fpr_target),
                    calibrated_threshold([u.score for u in b], fpr_target)), (b, a))

    def detection_rate(self, scores: list[float]) -> float:
        """Mean over the two thresholds of the fraction of `scores` above it."""
        if not scores:
            return float("nan")
        return float(np.mean([np.mean([s > t for s in scores]) for t in self.thresholds]))

    def false_positive_rate(self, extra: list[Unit] = ()) -> float:
        """Mean over the two thresholds of the fraction flagged among the held-out half plus `extra` units
        (innocents never used for calibration, such as the attacked clean models of a row)."""
        rates = [np.mean([u.score > t for u in held + list(extra)]) for t, held in zip(self.thresholds, self.held_out)
                 if held or extra]
        return float(np.mean(rates)) if rates else float("nan")


def in_sample_false_positive_rate(pool: list[Unit], fpr_target: float) -> float:
    """The optimistic number cross-fitting avoids: threshold fitted and judged on the same innocents."""
    t = calibrated_threshold([u.score for u in pool], fpr_target)
    return float(np.mean([u.score > t for u in pool]))


def auc(positive: list[float], negative: list[float]) -> float:
    """Area under the ROC curve of scores of marked models (positive) against innocent ones (ties count ½)."""
    if not positive or not negative:
        return float("nan")
    p, n = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float(np.mean((p > n) + 0.5 * (p == n)))


def innocent_pool(prepared: list[Prepared]) -> list[Unit]:
    """The calibration pool of a defense: its innocent models (each once, over every owner's key) and its
    wrong keys (distinct per seed)."""
    models = units([c for p in prepared for c in p.innocent_checks], "model")
    keys = [u for p in prepared for u in units(p.wrong_key_checks, "wrong key", p.seed)]
    return models + keys


def leaderboard(cells: list[CellResult], prepared: dict[tuple[str, int], Prepared], fpr_target: float,
                max_utility_drop: float = 0.05, methods: dict | None = None) -> pd.DataFrame:
    """One row per (defense, attack, strength), aggregated over seeds; false positives over distinct units.
    `methods` (`registry.describe_methods`, as the run stored it) says each defense's kind and control flag
    and each attack's order of strengths; the table depends on nothing else."""
    methods = methods or {"defenses": {}, "attacks": {}}
    by_row: dict[tuple[str, str, str], list[CellResult]] = defaultdict(list)
    for c in cells:
        by_row[(c.cell.defense, c.cell.attack, c.cell.strength)].append(c)
    pools = {d: innocent_pool([p for (dd, _), p in sorted(prepared.items()) if dd == d])
             for d in {d for d, _ in prepared}}
    calibrations = {d: Calibration.cross_fitted(pool, fpr_target) for d, pool in pools.items()}
    # the owner's key on its own unattacked marked model, per (defense, seed): recorded with the seed's
    # preparation (older runs: their `none` cell); NaN where neither exists, which counts as not detected
    unattacked = {(c.cell.defense, c.cell.seed): c.check.statistic for c in cells
                  if c.cell.attack == "none" and c.status == "ok"}
    unattacked.update({key: p.owner_check.statistic for key, p in prepared.items() if p.owner_check is not None})

    rows = []
    for (defense, attack, strength), results in sorted(by_row.items()):
        defense_meta = methods["defenses"].get(defense, {})
        order = methods["attacks"].get(attack, {}).get("strengths", [])
        attack_meta = methods["attacks"].get(attack, {})
        row = {"defense": defense, "model_kind": defense_meta.get("model_kind", ""), "attack": attack,
               "family": attack_meta.get("family", ""), "strength": strength, "strength_rank": order.index(strength) if strength in order else len(order)}
        outside = [r.status for r in results if r.status.startswith("n/a")]
        if outside:
            rows.append({**row, "status": outside[0], "n_seeds": 0})
            continue
        ok = [r for r in results if r.status == "ok"]
        preps = [prepared[(defense, r.cell.seed)] for r in ok if (defense, r.cell.seed) in prepared]
        checks = [r.check for r in ok]
        scores = [c.statistic for c in checks]
        pool = pools.get(defense, [])
        matched = [u for r in ok if r.matched_innocent is not None
                   for u in units([r.matched_innocent], "attacked clean", r.cell.seed)]
        seeds = {p.seed for p in preps}
        row_units = [u for u in pool if u.seed < 0 or u.seed in seeds] + matched
        k, n = _rate(checks)
        fk, fn = sum(u.flagged for u in row_units), len(row_units)
        calibration = calibrations.get(defense)
        gap = next((p.innocent_gap for p in preps if p.innocent_gap), "")
        pirates = [r.pirate_check for r in ok if r.pirate_check is not None]
        pirates_clean = [r.pirate_clean_check for r in ok if r.pirate_clean_check is not None]
        both = [r.check.detected and r.pirate_check.detected for r in ok if r.pirate_check is not None]
        failed = [r.status for r in results if r.status != "ok"]
        attacked = [r.utility_attacked for r in ok]
        row.update({
            "status": "ok" if not failed else f"{failed[0]} ({len(failed)}/{len(results)} seeds)",
            "n_seeds": len(ok),
            "utility_clean": _mean(p.utility_clean for p in preps),
            "utility_clean_std": _std(p.utility_clean for p in preps),
            "utility_marked": _mean(p.utility_marked for p in preps),
            "utility_marked_std": _std(p.utility_marked for p in preps),
            "utility_attacked": _mean(attacked),
            "utility_attacked_std": _std(attacked),
            "verification_rate": k / n if n else float("nan"),
            "verification_ci_low": wilson(k, n)[0], "verification_ci_high": wilson(k, n)[1],
            "auc": auc(scores, [u.score for u in pool] + [u.score for u in matched]),
            "false_positive_rate": fk / fn if fn else float("nan"),
            "fpr_ci_low": wilson(fk, fn)[0], "fpr_ci_high": wilson(fk, fn)[1],
            "n_innocent_models": sum(u.kind == "model" for u in row_units),
            "n_wrong_keys": sum(u.kind == "wrong key" for u in row_units),
            "n_attacked_clean": len(matched),
            "fpr_note": gap,
            "threshold": checks[0].threshold if checks else float("nan"),
            "p_value_median": median(c.p_value for c in checks) if checks else float("nan"),
            "identification_rate": _mean(r.identified for r in ok if r.identified is not None),
            "pirate_verification_rate": sum(c.detected for c in pirates) / len(pirates) if pirates else None,
            "pirate_clean_verification_rate": (sum(c.detected for c in pirates_clean) / len(pirates_clean)
                                               if pirates_clean else None),
            "ambiguity_rate": sum(both) / len(both) if both else None,
            "seeds_identified": sum(bool(r.identified) for r in ok),
            "seeds_pirate_verified": sum(c.detected for c in pirates) if pirates else None,
            "attack_report": summarize_reports([r.attack_report for r in ok]),
            "seconds": _mean(r.seconds for r in results),
        })
        if calibration is not None and pool:
            utility_kept = [r.utility_attacked >= prepared[(defense, r.cell.seed)].utility_marked - max_utility_drop
                            for r in ok if (defense, r.cell.seed) in prepared]
            before = [unattacked.get((defense, r.cell.seed), float("nan")) for r in ok]
            threshold = float(np.mean(calibration.thresholds))
            row.update(removal(threshold, scores, utility_kept, before) if attack != "none" else NO_ATTACK)
            row.update({
                "seeds_detected_calibrated": sum(s > threshold for s in scores),
                "threshold_calibrated": threshold,
                "verification_rate_calibrated": calibration.detection_rate(scores),
                "false_positive_rate_calibrated": calibration.false_positive_rate(matched),
            })
        if gap:  # no innocent models: no false-positive rate is claimed from keys and copies alone
            row.update({name: float("nan") for name in ("false_positive_rate", "fpr_ci_low", "fpr_ci_high",
                                                        "false_positive_rate_calibrated", "auc")})
        if defense_meta.get("control", False):
            row.update({"removal_rate": float("nan"), "attack_succeeded": "n/a (control: no mark)",
                        "removal_verdict": "", "seeds_removed": None})
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


NO_ATTACK = {"removal_rate": float("nan"), "attack_succeeded": "no attack", "removal_verdict": "",
             "seeds_removed": None}


NO_MARK = "no: mark not detected before the attack"
UNSURE_MARK = "no: mark detected before the attack only in"  # followed by `undecided (k/n)`


def removal(threshold: float, scores: list[float], utility_kept: list[bool], before: list[float]) -> dict:
    """The removal literature's rule of attack success, per seed: the attacked model is not detected at the
    calibrated `threshold` *and* keeps its utility — in a seed whose unattacked marked model was detected
    (score `before`; NaN where the run has no record of it: not detected), since an attack cannot remove
    a mark that was not there. The verdict over the seeds is called only where the 95 % Wilson interval of
    the seeds' removals decides (`bench.scoring.decide`), otherwise it reads `undecided (k/n)`; a decided
    "no" says why: no mark before the attack, the mark kept, or the utility lost."""
    if not scores:
        return {}
    n = len(scores)
    present = [b > threshold for b in before]
    gone = [p and s <= threshold for p, s in zip(present, scores)]
    removed = sum(g and kept for g, kept in zip(gone, utility_kept))
    called, had_mark = decide(removed, n), decide(sum(present), n)
    if called:
        verdict, decided = "yes", "removed"
    elif called is None:
        verdict = decided = undecided(removed, n)
    else:
        decided = "kept"
        if had_mark is False:
            verdict = NO_MARK
        elif had_mark is None:
            verdict = f"{UNSURE_MARK} {undecided(sum(present), n)}"
        else:
            verdict = "no: utility lost" if 2 * sum(gone) > sum(present) else "no: mark kept"
    return {"removal_rate": removed / n, "attack_succeeded": verdict, "removal_verdict": decided,
            "seeds_removed": removed}


def _rate(checks: list[Check]) -> tuple[int, int]:
    return int(sum(c.detected for c in checks)), len(checks)


def summarize_reports(reports: list[dict]) -> str:
    """Mean over seeds of each numeric scalar an attack reported (lists stay in the database)."""
    names = sorted({k for r in reports for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return "; ".join(f"{k}={mean(r[k] for r in reports if k in r):.3g}" for k in names)


def _mean(values) -> float:
    values = list(values)
    return mean(values) if values else float("nan")


def _std(values) -> float:
    """Population standard deviation over seeds (0 for one seed)."""
    values = list(values)
    return pstdev(values) if values else float("nan")


def reproduce_command(config: dict) -> str:
    parts = ["wmbench run"]
    for name in ("defenses", "attacks", "strengths"):
        if config.get(name):
            parts.append(f"--{name} {','.join(config[name])}")
    parts += [f"--seeds {config.get('seeds')}", f"--profile {config.get('profile', 'default')}"]
    parts += [f"--{name} {config[name]}" for name in ("vlp", "data") if config.get(name)]
    return " ".join(parts)


HOW_TO_READ = """\
How to read this: one row per (defense, attack, strength), over `n_seeds` seeds. `utility_*` are
held-out task scores in [0, 1] (classifier: top-1 accuracy; encoder: linear-probe accuracy; VLP:
zero-shot accuracy) of the clean, the watermarked and the attacked model, as mean ± std over seeds;
rates carry their 95 % Wilson interval in brackets (the CSV has them as separate columns).

- `verification_rate`: fraction of attacked models on which the owner's key verifies at the method's own
  (paper) `threshold`. `false_positive_rate`: the same verdict on innocent **units**, each counted once:
  `n_innocent_models` distinct clean models of the kind (independently trained by the owner's recipe, every
  other one on the attacker's split, data the owner never used; a model checked with every seed's owner
  key counts as one unit, flagged if any check flags it), `n_wrong_keys` distinct other users' keys on the
  marked model, and `n_attacked_clean` clean models put through the same attack (the owner's clean
  models of the profile's first `clean_control_seeds` seeds). The interval is over
  those units, never over repeated checks.
- Calibrated columns (method): the innocent models and wrong keys of a defense form its calibration pool,
  split into two fixed halves. A threshold on the statistic (oriented: larger = more evidence of the
  mark) is set on each half to a target false-positive rate of {fpr:.0%} (with fewer than 1/target
  units: the half's maximum) and judged on the *other* half plus the attacked clean models
  (`false_positive_rate_calibrated`, cross-fitted: the two halves swapped, averaged); never on the units
  it was fitted on. `verification_rate_calibrated` is the detection rate of the attacked models at those
  two thresholds (averaged), `threshold_calibrated` their mean. `auc`: area under the ROC curve of the
  attacked models' scores against every innocent unit's.
- Attack success (the removal literature's rule): `removal_rate` is the fraction of seeds where the
  attacked model is *not* detected at the calibrated threshold **and** keeps its utility
  (`utility_attacked ≥ utility_marked − {drop}`), in a seed whose unattacked marked model *is* detected (an
  attack cannot remove a mark that was not there), at the calibrated threshold `threshold_calibrated`;
  `seeds_removed` counts those seeds. Verdicts are called only where the 95 % Wilson interval of the seeds
  lies wholly above or below ½ (at 10 seeds: 9 or 10 of 10 decide yes, 0 or 1 decide no; at 5 seeds only
  5/5 and 0/5; at 3 seeds nothing), otherwise they read `undecided (k/n)`. `removal_verdict`: `removed`,
  `kept` or `undecided (k/n)`; `attack_succeeded`: `yes`, or why not (`no: mark kept`, `no: utility lost`,
  `no: mark not detected before the attack`), or `undecided (k/n)`. The `none` row is no attack:
  `attack_succeeded` says `no attack` and its removal columns are empty; `seeds_detected_calibrated` counts
  the seeds whose model is detected at the calibrated threshold. Rows whose `status` is `n/a` lie outside the
  threat model (what the attack needs, the defense's thief cannot reach) and are not run.
- `pirate_verification_rate`: a pirate's own key verifies on its pirated model (the marked one);
  `pirate_clean_verification_rate`: the same pirate on the *clean* model (piracy resistance is the contrast
  between the two); `ambiguity_rate`: owner's and pirate's keys both verify; `identification_rate`: the owner's
  key scores above every other user's key on the suspect (`seeds_identified`, `seeds_pirate_verified`: counts);
  `attack_report`: what the attack itself found, averaged over seeds; `seconds`: mean wall time of a cell.
"""

# The Markdown table's columns (the CSV has every column of COLUMNS).
SHOWN = ["defense", "attack", "strength", "n_seeds", "utility_marked", "utility_attacked", "verification_rate",
         "auc", "verification_rate_calibrated", "false_positive_rate", "false_positive_rate_calibrated",
         "removal_rate", "attack_succeeded", "identification_rate", "pirate_verification_rate",
         "pirate_clean_verification_rate", "status"]


def stored_methods(db: ResultsDB) -> dict:
    """The methods' metadata the run stored (`registry.describe_methods`). A database written before runs
    stored it gets the live registry's description of its methods once, stored in it, so that every later
    rendering reads the database alone."""
    methods = db.meta("methods")
    if methods is None:
        from bench import registry

        cells = db.cells()
        defenses = sorted({c.cell.defense for c in cells} & set(registry.defense_names()))
        attacks = sorted(a for a in {c.cell.attack for c in cells} if _registered_attack(a))
        methods = registry.describe_methods(defenses, attacks)
        db.set_meta("methods", methods)
    return methods


def _registered_attack(name: str) -> bool:
    from bench import registry

    try:
        registry.get_attack(name)
    except Exception:  # an attack (or a chain of attacks) no longer registered
        return False
    return True


def load_table(out: Path, profile: str = "default", fpr_target: float | None = None
               ) -> tuple[pd.DataFrame, ResultsDB, float]:
    """The leaderboard table of the run in `out`, its database, and the run's utility allowance (the run's
    own calibration target unless `fpr_target` is given)."""
    db = ResultsDB(Path(out), profile)
    config = db.meta("config", {})
    fpr_target = run_fpr_target(config) if fpr_target is None else fpr_target
    drop = utility_drop(config)
    return leaderboard(db.cells(), db.prepared(), fpr_target, drop, stored_methods(db)), db, drop


def write_leaderboard(out: Path, profile: str = "default", fpr_target: float | None = None) -> pd.DataFrame:
    out = Path(out)
    table, db, drop = load_table(out, profile, fpr_target)
    config = db.meta("config", {})
    fpr_target = run_fpr_target(config) if fpr_target is None else fpr_target
    atomic_write(out / "leaderboard.csv", lambda p: table.to_csv(p, index=False, float_format="%.4f"))
    claims = claims_table(table, drop, stored_methods(db))
    atomic_write(out / "claims.csv", lambda p: claims.to_csv(p, index=False))
    shown = _with_uncertainty(table)[SHOWN]
    header = (f"# wmbench leaderboard (profile `{profile}`)\n\n{setting_line(db.meta(f'profile:{profile}'))}\n\n"
              + f"## Summary\n\n{summary_markdown(table, drop)}\n"
              + f"## The papers' claims\n\n{claims_markdown(claims)}\n"
              + "## Every row\n\n" + HOW_TO_READ.format(fpr=fpr_target, drop=drop)
              + f"\n{reproducibility_line(db.meta('environment'))}\n\n{software_line(db.meta('software'))}\n"
              + f"\nReproduce with wmbench {__version__}: `{reproduce_command(config)}`\n\n")
    atomic_write(out / "leaderboard.md",
                 lambda p: p.write_text(header + tabulate(shown, headers="keys", tablefmt="github",
                                                          showindex=False, floatfmt=".3f", missingval="") + "\n"))
    atomic_write(out / "leaderboard.png", lambda p: plot(table, p))
    return table


def summary_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Defense × attack, one cell each: the attacker's best setting of that attack (highest `removal_rate`,
    then lowest calibrated detection, then highest utility after) with its outcome; `n/a` outside the
    threat model."""
    cells: dict[str, dict[str, str]] = defaultdict(dict)
    for (defense, attack), group in table.groupby(["defense", "attack"], sort=True):
        if group["status"].str.startswith("n/a").all():
            cells[defense][attack] = "n/a"
            continue
        group = group[group["n_seeds"] > 0]
        if group.empty:  # every cell of the pair failed
            cells[defense][attack] = "failed"
            continue
        best = group.assign(_r=group["removal_rate"].fillna(-1), _d=-group["verification_rate_calibrated"].fillna(1))
        best = best.sort_values(["_r", "_d", "utility_attacked"], ascending=False, kind="stable").iloc[0]
        outcome = summary_outcome(best)
        cells[defense][attack] = (f"{outcome} ({best['strength']}: detected {best['verification_rate_calibrated']:.2f}, "
                                  f"utility {best['utility_attacked']:.2f})")
    attacks = sorted(table["attack"].unique())
    return pd.DataFrame([{"defense": d, **{a: cells[d].get(a, "") for a in attacks}} for d in sorted(cells)])


def summary_outcome(best: pd.Series) -> str:
    """A summary cell's outcome, from its row's verdict (called only where the seeds decide)."""
    verdict = str(best["attack_succeeded"])
    if verdict == "no attack":  # the unattacked model: does the owner's key verify at all?
        verified = owner_verified(best)
        return ("verified" if verified else "not verified" if verified is False
                else undecided(best["seeds_detected_calibrated"], best["n_seeds"]))
    if verdict.startswith(UNSURE_MARK):
        return "undecided before " + verdict[len(UNSURE_MARK):].strip().removeprefix("undecided ")
    if verdict.startswith("undecided"):
        return verdict
    return {"yes": "removed", "no: mark kept": "kept", "no: utility lost": "utility lost",
            NO_MARK: "not verified before"}.get(verdict, "control")


def run_fpr_target(config: dict) -> float:
    """The run's calibration target (`fpr_target`; databases written before it was recorded: 0.01)."""
    return float(config.get("fpr_target", 0.01))


def utility_drop(config: dict) -> float:
    """The run's `max_utility_drop` (databases written before it was recorded: the default 0.05)."""
    return float(config.get("max_utility_drop", 0.05))


def summary_markdown(table: pd.DataFrame, drop: float) -> str:
    """The screen-sized view: how to read the summary matrix, and the matrix."""
    if table.empty:
        return ""
    body = tabulate(summary_matrix(table), headers="keys", tablefmt="github", showindex=False)
    return f"{summary_legend(drop)}\n\n{body}\n"


def summary_legend(drop: float) -> str:
    """How to read a cell of the summary matrix."""
    return ("Each cell: the attacker's best setting of that attack and its outcome over the seeds, called only "
            "where the 95 % Wilson interval of the seeds lies wholly above or below ½ — `removed` (the mark is "
            f"not detected at the calibrated threshold and utility falls by at most {drop:g}), `kept` (the mark "
            "is still detected), `utility lost` (the mark went, but so did the utility), `not verified before` "
            "(the owner's own unattacked model is not detected: there is no mark to remove, no verdict); "
            "otherwise `undecided (k/n)`: removed in k of n seeds (`undecided before (k/n)`: the owner's "
            "unattacked model detected in k of n). `detected` is the calibrated detection rate, `utility` the "
            "utility after the attack. `n/a`: outside the threat model. `control`: the unwatermarked control. "
            "Column `none`: whether the owner's key verifies on its own unattacked model at the calibrated "
            "threshold (`undecided (k/n)`: in k of n seeds).")


CLAIMS_LEGEND = ("Each paper's headline claims, judged from the rows named: `holds`, `partly` or `fails`, with the "
                 "setting that decides it, or `not tested` with the reason (bench/claims.py says how each kind of "
                 "claim is judged).")


def claims_markdown(claims: pd.DataFrame) -> str:
    if claims.empty:
        return "No defense in this run declares its paper's claims.\n"
    return f"{CLAIMS_LEGEND}\n\n{tabulate(claims, headers='keys', tablefmt='github', showindex=False)}\n"


def write_latex(out: Path, profile: str = "default") -> list[Path]:
    """The summary matrix and the claims table as LaTeX `booktabs` tables (`summary.tex`, `claims.tex`)."""
    out = Path(out)
    table, db, drop = load_table(out, profile)
    tables = {"summary.tex": (summary_matrix(table), "Defense $\\times$ attack: the attacker's best setting and its outcome."),
              "claims.tex": (claims_table(table, drop, stored_methods(db)),
                             "The papers' headline claims, judged from the leaderboard.")}
    written = []
    for name, (frame, caption) in tables.items():
        latex = frame.to_latex(index=False, escape=True, caption=caption, label=f"tab:wmbench-{name[:-4]}")
        atomic_write(out / name, lambda p, text=latex: p.write_text(text))
        written.append(out / name)
    return written


def setting_line(profile: dict | None) -> str:
    """The data, its size and the training budgets the run's profile used (what every verdict holds under)."""
    if not profile:
        return "Setting: no profile recorded for this run."
    profile = defaultdict(lambda: "?", profile)  # a run recorded by an older version may lack a field
    subset = (f"a stratified subset of {profile['train_limit']:,} training images" if profile.get("train_limit")
              else "all its training images")
    return (f"Setting: dataset `{profile['dataset']}` at {profile['image_size']}×{profile['image_size']}, {subset} "
            f"(split as the dataset's `wmbench list` entry says); architectures `{profile['classifier_arch']}`, "
            f"`{profile['encoder_arch']}`, `{profile['vlp']}` (width {profile['width']}); epochs: classifier "
            f"{profile['classifier_epochs']}, SimCLR encoder {profile['encoder_epochs']}, CLIP {profile['clip_epochs']}, "
            f"watermark embedding {profile['embed_epochs']}, attacker's training {profile['attack_epochs']}, "
            f"extraction student {profile['extraction_epochs']}; Neural Cleanse ≤ {profile['cleanse_rounds']} rounds "
            f"per label; {profile['n_innocent']} innocent models per kind, {profile['n_wrong_keys']} wrong keys.")


def software_line(software: dict | None) -> str:
    """The software a run computed with: the code's commit, the lock's hash and whether the installed packages
    were the lock's, and the versions of the packages that compute the numbers."""
    from bench.lockfile import NUMERIC_PACKAGES

    if not software:
        return "Software: no package versions recorded for this run."
    code = software.get("code", {})
    commit = (code.get("commit") or "?")[:10] + (" with local changes" if code.get("dirty") else "")
    packages = software.get("packages", {})
    versions = ", ".join(f"{name} {packages[name]}" for name in NUMERIC_PACKAGES if name in packages)
    lock = software.get("lock_sha256")
    locked = (f"the locked environment (requirements.lock sha256 {lock[:12]})" if software.get("locked") else
              f"packages that differ from requirements.lock ({'; '.join(software.get('lock_mismatches', [])[:3])})"
              if lock else "no lock file beside the code")
    return f"Software: code {commit}, {locked}; {versions}."


def reproducibility_line(env: dict | None) -> str:
    """What the run's metadata says about bit-reproducibility (bench.portable)."""
    if not env:
        return "Reproducibility: no machine metadata recorded for this run."
    machine = f"{env.get('cpu_model', '?')}, torch {env.get('torch', '?')}"
    if env.get("portable"):
        return (f"Reproducibility: portable mode — CPU kernels pinned to {env.get('pinned')} in every process, so "
                f"the numbers are bit-identical on any x86-64 machine with that instruction set and the same package "
                f"versions (this run: {machine}).")
    return (f"Reproducibility: ambient CPU kernels ({env.get('cpu_capability', '?')}) on {machine}: the same "
            f"command gives the same numbers on this machine; on another CPU training can diverge (run with "
            f"`--portable` for bit-identical numbers across machines).")


def _with_uncertainty(table: pd.DataFrame) -> pd.DataFrame:
    """The Markdown view: utilities as mean ± std, rates with their 95 % Wilson interval."""
    shown = table.copy()
    for name in ("utility_clean", "utility_marked", "utility_attacked"):
        shown[name] = [f"{m:.3f} ± {s:.3f}" if m == m else "" for m, s in zip(table[name], table[f"{name}_std"])]
    intervals = {"verification_rate": ("verification_ci_low", "verification_ci_high"),
                 "false_positive_rate": ("fpr_ci_low", "fpr_ci_high")}
    for name, (low, high) in intervals.items():
        shown[name] = [f"{r:.2f} [{lo:.2f}, {hi:.2f}]" if r == r else ""
                       for r, lo, hi in zip(table[name], table[low], table[high])]
    return shown


def plot(table: pd.DataFrame, path: Path) -> None:
    """Per defense: utility after attack (x) against verification rate (y), in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    defenses = sorted(table["defense"].unique()) or ["(none)"]
    style = attack_styles(table)
    fig, axes = plt.subplots(1, len(defenses), figsize=(4.5 * len(defenses), 4), squeeze=False)
    for ax, defense in zip(axes[0], defenses):
        draw_defense(ax, table[table["defense"] == defense], defense, style)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def attack_styles(table: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """One colour and marker per attack, the same in every plot of a table."""
    return {a: (f"C{i % 10}", "osD^vP*Xh<>"[i % 11]) for i, a in enumerate(sorted(table["attack"].unique()))}


def _numeric(strengths) -> bool:
    try:
        [float(s) for s in strengths]
    except ValueError:
        return False
    return True


def draw_defense(ax, rows: pd.DataFrame, defense: str, style: dict[str, tuple[str, str]]) -> None:
    """One marker per attack setting; the settings of an attack whose strengths are all numbers (sparsity,
    query budget, epochs) are joined in their order, categorical ones (regimes, chains) are not."""
    for attack, group in rows[rows["status"] == "ok"].groupby("attack", sort=True):
        group = group.sort_values("strength_rank", kind="stable")
        color, marker = style[attack]
        joined = _numeric(group["strength"]) and len(group) > 1
        ax.plot(group["utility_attacked"], group["verification_rate"], marker=marker, color=color, label=attack,
                alpha=0.8, linestyle="-" if joined else "none")
    ax.set(title=defense, xlabel="utility after attack", ylabel="verification rate", ylim=(-0.05, 1.05))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def publish(source: Path, target: Path, profile: str = "default", readme: Path | None = None,
            allow_unlocked: bool = False) -> pd.DataFrame:
    """Copy a finished run's database into the published folder (atomically) and write its leaderboard
    there: the only way `results/` changes. A run made outside the locked environment (its recorded packages
    differ from requirements.lock, or it recorded none) is refused unless `allow_unlocked`. With `readme`,
    its generated blocks of this profile (`<!-- PROFILE-summary:start -->` … and `PROFILE-claims`) are
    rewritten; other profiles' blocks stay."""
    import shutil

    from bench.protocols import WmbenchError
    from bench.results import DB_NAME

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
    table = write_leaderboard(target, profile)
    if readme is not None and Path(readme).is_file():
        db = ResultsDB(target, profile)
        drop = utility_drop(db.meta("config", {}))
        update_readme(Path(readme), {f"{profile}-summary": summary_markdown(table, drop),
                                     f"{profile}-claims": claims_markdown(claims_table(table, drop, stored_methods(db)))})
    return table


def merge_runs(sources: list[Path], target: Path, profile: str = "default") -> pd.DataFrame:
    """Combine the databases of several runs of the same profile (e.g. a plugin's run and the default one)
    into `target` and write its leaderboard. Runs of different profiles, or with different calibration
    settings, are refused; a cell present in several runs is taken from the last one named."""
    from bench.protocols import WmbenchError
    from bench.results import DB_NAME

    if not sources:
        raise WmbenchError("--merge needs at least one run folder")
    dbs = []
    for source in map(Path, sources):
        if not (source / DB_NAME).is_file():
            raise WmbenchError(f"no results database in {source}")
        dbs.append((source, ResultsDB(source, profile)))
    first_source, first = dbs[0]
    settings = ("fpr_target", "max_utility_drop")
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
    return write_leaderboard(target, profile)


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
