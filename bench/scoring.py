"""The statistics under every verdict, a pure function of a run's stored results: the leaderboard table (one
row per defense × attack × strength over the seeds), Wilson intervals of rates, the calibrated thresholds,
the removal rule, and the rule that calls a verdict only where its interval decides. The text views, plots
and files built on the table are `bench.report`; publishing is `bench.publish`."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from statistics import mean, median, pstdev

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from bench.results import CellResult, Check, Prepared

CONFIDENCE = 0.95


def wilson(k: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a rate k/n."""
    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def decide(k: int, n: int) -> bool | None:
    """Whether an outcome seen in k of n seeds happens in most seeds: True when the 95 % Wilson interval of
    k/n lies wholly above ½, False when wholly below, None (undecided) when it straddles ½ or n = 0. At 10
    seeds 9/10 and 10/10 decide yes, 0/10 and 1/10 decide no; at 5 seeds only 5/5 and 0/5 decide; at 3
    seeds nothing decides."""
    if n == 0:
        return None
    low, high = wilson(k, n)
    return True if low > 0.5 else False if high < 0.5 else None


def undecided(k: int, n: int) -> str:
    """How a verdict its seeds do not decide reads: `undecided (k/n)`."""
    return f"undecided ({int(k)}/{int(n)})"


COLUMNS = [
    "defense", "model_kind", "attack", "family", "strength", "strength_rank", "status", "n_seeds", "utility_clean", "utility_clean_std", "utility_marked",
    "utility_marked_std", "utility_attacked", "utility_attacked_std", "attacker_data_share", "attacker_scratch_utility",
    "verification_rate", "verification_ci_low", "verification_ci_high", "auc",
    "verification_rate_calibrated", "threshold_calibrated",
    "false_positive_rate", "fpr_ci_low", "fpr_ci_high", "false_positive_rate_calibrated",
    "n_innocent_models", "n_wrong_keys", "n_attacked_clean", "fpr_note",
    "removal_rate", "theft_rate", "attack_succeeded", "removal_verdict", "threshold", "p_value_median",
    "identification_rate", "pirate_verification_rate", "pirate_clean_verification_rate", "ambiguity_rate",
    "seeds_detected_calibrated", "seeds_removed", "seeds_stolen", "seeds_identified", "seeds_pirate_verified", "seeds_inactive",
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
                max_utility_drop: float = 0.05, methods: dict | None = None,
                attacker_data_share: float = float("nan")) -> pd.DataFrame:
    """One row per (defense, attack, strength), aggregated over seeds; false positives over distinct units.
    `methods` (`registry.describe_methods`, as the run stored it) says each defense's kind and control flag
    and each attack's order of strengths; `attacker_data_share` is the run's (its profile's), shown in every
    row; the table depends on nothing else."""
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
        attack_meta = methods["attacks"].get(attack, {})
        order = attack_meta.get("strengths", [])
        row = {"defense": defense, "model_kind": defense_meta.get("model_kind", ""), "attack": attack,
               "family": attack_meta.get("family", ""), "strength": strength,
               "strength_rank": order.index(strength) if strength in order else len(order)}
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
            "attacker_data_share": attacker_data_share,
            "attacker_scratch_utility": _mean(p.attacker_scratch_utility for p in preps
                                              if p.attacker_scratch_utility is not None),
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
            seeded = [(r, prepared[(defense, r.cell.seed)]) for r in ok if (defense, r.cell.seed) in prepared]
            utility_kept = [r.utility_attacked >= p.utility_marked - max_utility_drop for r, p in seeded]
            # a seed without the attacker's own models' utility (a run before it was recorded, a pretrained VLP
            # source) has nothing to beat; with none in any seed, every removal counts as a theft
            own = [p.attacker_scratch_utility for _, p in seeded]
            beats_own = ([b is None or r.utility_attacked > b for (r, _), b in zip(seeded, own)]
                         if any(b is not None for b in own) else None)
            before = [unattacked.get((defense, r.cell.seed), float("nan")) for r in ok]
            threshold = float(np.mean(calibration.thresholds))
            row.update(removal(threshold, scores, utility_kept, before, beats_own) if attack != "none" else NO_ATTACK)
            row.update({
                "seeds_detected_calibrated": sum(s > threshold for s in scores),
                "threshold_calibrated": threshold,
                "verification_rate_calibrated": calibration.detection_rate(scores),
                "false_positive_rate_calibrated": calibration.false_positive_rate(matched),
            })
        if gap:  # no innocent models: no false-positive rate is claimed from keys and copies alone
            row.update({name: float("nan") for name in ("false_positive_rate", "fpr_ci_low", "fpr_ci_high",
                                                        "false_positive_rate_calibrated", "auc")})
        # an attack that left the model unchanged on purpose says why (`report["inactive"]`, e.g. Neural
        # Cleanse flagging no label): in every seed, that is the row's outcome, not "the mark was kept"
        inactive = [r.attack_report.get("inactive") for r in ok]
        row["seeds_inactive"] = sum(bool(i) for i in inactive) if attack != "none" else None
        if ok and all(inactive) and attack != "none":
            row.update({"attack_succeeded": f"no: {inactive[0]}", "removal_verdict": "kept"})
        if defense_meta.get("control", False):
            row.update({"removal_rate": float("nan"), "theft_rate": float("nan"),
                        "attack_succeeded": "n/a (control: no mark)", "removal_verdict": "", "seeds_removed": None,
                        "seeds_stolen": None})
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


NO_ATTACK = {"removal_rate": float("nan"), "theft_rate": float("nan"), "attack_succeeded": "no attack",
             "removal_verdict": "", "seeds_removed": None, "seeds_stolen": None}


NO_MARK = "no: mark not detected before the attack"
UNSURE_MARK = "no: mark detected before the attack only in"  # followed by `undecided (k/n)`
NOT_BETTER = "no better than its own model"  # a removal that leaves the thief no more than training its own


def removal(threshold: float, scores: list[float], utility_kept: list[bool], before: list[float],
            beats_own: list[bool] | None = None) -> dict:
    """The removal literature's rule of attack success, per seed: the attacked model is not detected at the
    calibrated `threshold` *and* keeps its utility — in a seed whose unattacked marked model was detected
    (score `before`; NaN where the run has no record of it: not detected), since an attack cannot remove
    a mark that was not there. A removal is a **theft** when it also pays: the attacked model's utility beats
    the attacker's own model, trained from scratch on its own data (`beats_own`; None: no baseline, every
    removal is a theft). The verdict over the seeds (`attack_succeeded`) is the theft's, called only where
    the 95 % Wilson interval of the seeds decides (`bench.scoring.decide`), otherwise `undecided (k/n)` with
    k the seeds stolen; a decided "no" says why: no mark before the attack, the mark kept, the utility lost,
    or no better than its own model. `removal_verdict` reads the removal alone and says, where the seeds
    decide a removal, whether it paid: `removed`, `removed, no better than its own model`, or `removed,
    undecided (k/n) whether better than its own model`."""
    if not scores:
        return {}
    n = len(scores)
    present = [b > threshold for b in before]
    gone = [p and s <= threshold for p, s in zip(present, scores)]
    removed_in = [g and kept for g, kept in zip(gone, utility_kept)]
    removed = sum(removed_in)
    stolen = removed if beats_own is None else sum(r and b for r, b in zip(removed_in, beats_own))
    was_removed, called, had_mark = decide(removed, n), decide(stolen, n), decide(sum(present), n)
    if called:
        verdict = "yes"
    elif called is None:
        verdict = undecided(stolen, n)
    elif was_removed is not False:  # the mark went, with utility kept, in enough seeds; the thief gained nothing
        verdict = f"no: {NOT_BETTER}"
    elif had_mark is False:
        verdict = NO_MARK
    elif had_mark is None:
        verdict = f"{UNSURE_MARK} {undecided(sum(present), n)}"
    else:
        verdict = "no: utility lost" if 2 * sum(gone) > sum(present) else "no: mark kept"
    if was_removed:
        decided = ("removed" if called else f"removed, {NOT_BETTER}" if called is False
                   else f"removed, {undecided(stolen, n)} whether better than its own model")
    else:
        decided = undecided(removed, n) if was_removed is None else "kept"
    return {"removal_rate": removed / n, "theft_rate": stolen / n, "attack_succeeded": verdict,
            "removal_verdict": decided, "seeds_removed": removed, "seeds_stolen": stolen}


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
