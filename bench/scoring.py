"""The statistics under every verdict, a pure function of a run's stored results: the leaderboard table (one
row per defense × attack × strength over the seeds; every check read by its key-randomization p-value at α
and by the paper's threshold), Wilson intervals of rates, the removal rule, and the rule that calls a verdict
only where its interval decides. The text views, plots
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
    "defense", "model_kind", "attack", "family", "strength", "strength_rank", "status", "n_seeds", "utility_clean",
    "utility_clean_std", "utility_marked", "utility_marked_std", "utility_attacked", "utility_attacked_std",
    "attacker_data_share", "attacker_scratch_utility",
    "utility_low_label_clean", "utility_low_label_marked", "utility_low_label", "utility_low_label_untrained",
    "worth_protecting",
    "reading", "alpha", "null_units", "p_value", "tpr_at_alpha", "tpr_ci_low", "tpr_ci_high",
    "verification_rate", "verification_ci_low", "verification_ci_high", "threshold", "auc",
    "innocent_fpr_at_alpha", "innocent_fpr_ci_high", "false_positive_rate", "fpr_ci_low", "fpr_ci_high",
    "n_innocent_pairs", "n_innocent_models", "n_attacked_clean", "fpr_note",
    "key_collision_rate", "key_collision_ci_high", "n_party_pairs",
    "removal_rate", "theft_rate", "attack_succeeded", "removal_verdict", "verdict_alpha", "verdict_paper_threshold",
    "identification_rate", "pirate_verification_rate", "pirate_clean_verification_rate", "ambiguity_rate",
    "seeds_detected", "seeds_removed", "seeds_stolen", "seeds_identified", "seeds_pirate_verified", "seeds_inactive",
    "attack_report", "seconds",
]

UNTESTED = "untested (no key-randomization test in this run)"

# How far above an untrained model of its kind a marked model's low-label utility must lie, in a seed, for
# pretraining to have bought something worth protecting (`worth_protecting`).
WORTH_GAIN = 0.05


def worth_protecting(preps: list[Prepared]) -> str:
    """Whether the marked model is worth protecting, as the seeds decide: in a seed, its low-label utility beats
    an untrained model's of the kind by at least `WORTH_GAIN`; `yes`, `no` or `undecided (k/n)`, '' where the
    kind has no low-label utility."""
    pairs = [(p.utility_low_label_marked, p.utility_low_label_untrained) for p in preps]
    pairs = [(m, u) for m, u in pairs if m is not None and u is not None]
    if not pairs:
        return ""
    k = sum(m - u >= WORTH_GAIN - 1e-9 for m, u in pairs)
    called = decide(k, len(pairs))
    return "yes" if called else "no" if called is False else undecided(k, len(pairs))


def auc(positive: list[float], negative: list[float]) -> float:
    """Area under the ROC curve of scores of marked models (positive) against innocent ones (ties count ½)."""
    if not positive or not negative:
        return float("nan")
    p, n = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float(np.mean((p > n) + 0.5 * (p == n)))


@dataclass(frozen=True)
class Reading:
    """How a check counts as a detection: by its key-randomization p-value at `alpha` ("alpha"), or by the
    defense's own rule at its paper's threshold ("paper")."""

    rule: str
    alpha: float

    def hit(self, c: Check | None) -> bool:
        if c is None:
            return False
        return c.detected if self.rule == "paper" else c.at(self.alpha)

    def counts(self, checks: list[Check]) -> tuple[int, int]:
        """How many of `checks` it flags, out of how many it can read (the alpha rule needs a p-value)."""
        readable = [c for c in checks if self.rule == "paper" or c.tested]
        return sum(self.hit(c) for c in readable), len(readable)


def detection_verdict(k: int, n: int) -> str:
    """Whether the key verifies its model in most seeds: `detected`, `not detected` or `undecided (k/n)`."""
    called = decide(k, n)
    return "detected" if called else "not detected" if called is False else undecided(k, n)


def leaderboard(cells: list[CellResult], prepared: dict[tuple[str, int], Prepared], alpha: float,
                max_utility_drop: float = 0.05, methods: dict | None = None, rule: str = "alpha",
                attacker_data_share: float = float("nan")) -> pd.DataFrame:
    """One row per (defense, attack, strength), aggregated over seeds. Every check is read two ways: by the
    key-randomization test at level `alpha` (`p_value ≤ alpha`) and by the defense's own rule at its paper's
    threshold: `rule` picks the one the rates, counts and verdicts use ("alpha" or "paper"); the other's
    verdict stands beside it (`verdict_alpha`, `verdict_paper_threshold`). `methods`
    (`registry.describe_methods`, as the run stored it) says each defense's kind and control flag and each
    attack's order of strengths; `attacker_data_share` is the run's (its profile's), shown in every row; the
    table depends on nothing else."""
    read, at_alpha, paper = Reading(rule, alpha), Reading("alpha", alpha), Reading("paper", alpha)
    methods = methods or {"defenses": {}, "attacks": {}}
    by_row: dict[tuple[str, str, str], list[CellResult]] = defaultdict(list)
    for c in cells:
        by_row[(c.cell.defense, c.cell.attack, c.cell.strength)].append(c)
    # the owner's key on its own unattacked marked model, per (defense, seed): recorded with the seed's
    # preparation (older runs: their `none` cell); a seed with neither record counts as not detected
    unattacked = {(c.cell.defense, c.cell.seed): c.check for c in cells
                  if c.cell.attack == "none" and c.status == "ok"}
    unattacked.update({key: p.owner_check for key, p in prepared.items() if p.owner_check is not None})

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
        tested = bool(checks) and all(c.tested for c in checks)
        readable = tested or rule == "paper"
        matched = [r.matched_innocent for r in ok if r.matched_innocent is not None]
        innocent = [c for p in preps for c in p.innocent_checks] + matched
        parties = [c for p in preps for c in p.party_checks]
        k, n = paper.counts(checks)
        ka, na = at_alpha.counts(checks)
        kr, nr = read.counts(checks)
        fk, fn = paper.counts(innocent)
        fka, fna = at_alpha.counts(innocent)
        ck, cn = read.counts(parties)
        gap = next((p.innocent_gap for p in preps if p.innocent_gap), "")
        pirates = [r.pirate_check for r in ok if r.pirate_check is not None]
        pirates_clean = [r.pirate_clean_check for r in ok if r.pirate_clean_check is not None]
        both = [read.hit(r.check) and read.hit(r.pirate_check) for r in ok if r.pirate_check is not None]
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
            "attacker_scratch_utility": _known_mean(p.attacker_scratch_utility for p in preps),
            "utility_low_label_clean": _known_mean(p.utility_low_label_clean for p in preps),
            "utility_low_label_marked": _known_mean(p.utility_low_label_marked for p in preps),
            "utility_low_label": _known_mean(r.utility_low_label for r in ok),
            "utility_low_label_untrained": _known_mean(p.utility_low_label_untrained for p in preps),
            "worth_protecting": worth_protecting(preps),
            "reading": rule,
            "alpha": alpha,
            "null_units": max((c.null_size for c in checks), default=0) or float("nan"),
            "p_value": median(c.p_value for c in checks) if tested else float("nan"),
            "tpr_at_alpha": ka / na if na else float("nan"),
            "tpr_ci_low": wilson(ka, na)[0], "tpr_ci_high": wilson(ka, na)[1],
            "verification_rate": k / n if n else float("nan"),
            "verification_ci_low": wilson(k, n)[0], "verification_ci_high": wilson(k, n)[1],
            "threshold": checks[0].threshold if checks else float("nan"),
            "auc": auc([c.statistic for c in checks], [c.statistic for c in innocent]),
            "innocent_fpr_at_alpha": fka / fna if fna else float("nan"),
            "innocent_fpr_ci_high": wilson(fka, fna)[1],
            "false_positive_rate": fk / fn if fn else float("nan"),
            "fpr_ci_low": wilson(fk, fn)[0], "fpr_ci_high": wilson(fk, fn)[1],
            "n_innocent_pairs": fna if rule == "alpha" and fna else fn,
            "n_innocent_models": len({c.unit for p in preps for c in p.innocent_checks}),
            "n_attacked_clean": len(matched),
            "fpr_note": gap,
            "key_collision_rate": ck / cn if cn else float("nan"),
            "key_collision_ci_high": wilson(ck, cn)[1],
            "n_party_pairs": cn,
            "identification_rate": _mean(c.identified for c in checks) if tested else float("nan"),
            "pirate_verification_rate": read.counts(pirates)[0] / len(pirates) if pirates else None,
            "pirate_clean_verification_rate": (read.counts(pirates_clean)[0] / len(pirates_clean)
                                               if pirates_clean else None),
            "ambiguity_rate": sum(both) / len(both) if both else None,
            "seeds_detected": kr if readable else None,
            "seeds_identified": sum(c.identified for c in checks) if tested else None,
            "seeds_pirate_verified": read.counts(pirates)[0] if pirates else None,
            "attack_report": summarize_reports([r.attack_report for r in ok]),
            "seconds": _mean(r.seconds for r in results),
        })
        if checks:
            seeded = [(r, prepared.get((defense, r.cell.seed))) for r in ok]
            kept = [p is not None and r.utility_attacked >= p.utility_marked - max_utility_drop for r, p in seeded]
            # a seed without the attacker's own models' utility (a run before it was recorded, a pretrained VLP
            # source) has nothing to beat; with none in any seed, every removal counts as a theft
            own = [None if p is None else p.attacker_scratch_utility for _, p in seeded]
            beats_own = ([b is None or r.utility_attacked > b for (r, _), b in zip(seeded, own)]
                         if any(b is not None for b in own) else None)
            before = [unattacked.get((defense, r.cell.seed)) for r in ok]
            by = {r: ([r.hit(b) for b in before], [r.hit(c) for c in checks]) for r in (read, at_alpha, paper)}
            if attack == "none":
                row.update(NO_ATTACK)
                row["verdict_paper_threshold"] = detection_verdict(k, n)
                row["verdict_alpha"] = detection_verdict(ka, na) if tested else UNTESTED
            else:
                row["verdict_paper_threshold"] = removal(*by[paper], kept, beats_own)["removal_verdict"]
                row["verdict_alpha"] = removal(*by[at_alpha], kept, beats_own)["removal_verdict"] if tested else UNTESTED
                row.update(removal(*by[read], kept, beats_own) if readable else
                           {"removal_rate": float("nan"), "theft_rate": float("nan"), "attack_succeeded": UNTESTED,
                            "removal_verdict": UNTESTED, "seeds_removed": None, "seeds_stolen": None})
        if gap:  # no innocent models: no false-positive rate is claimed from copies alone
            row.update({name: float("nan") for name in ("false_positive_rate", "fpr_ci_low", "fpr_ci_high",
                                                        "innocent_fpr_at_alpha", "innocent_fpr_ci_high", "auc")})
        # an attack that left the model unchanged on purpose says why (`report["inactive"]`, e.g. Neural
        # Cleanse flagging no label): in every seed, that is the row's outcome, not "the mark was kept"
        inactive = [r.attack_report.get("inactive") for r in ok]
        row["seeds_inactive"] = sum(bool(i) for i in inactive) if attack != "none" else None
        if ok and all(inactive) and attack != "none":
            row.update({"attack_succeeded": f"no: {inactive[0]}", "removal_verdict": "kept", "verdict_alpha": "kept",
                        "verdict_paper_threshold": "kept"})
        if defense_meta.get("control", False):
            row.update({"removal_rate": float("nan"), "theft_rate": float("nan"),
                        "attack_succeeded": "n/a (control: no mark)", "removal_verdict": "", "verdict_alpha": "",
                        "verdict_paper_threshold": "", "seeds_removed": None, "seeds_stolen": None})
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


NO_ATTACK = {"removal_rate": float("nan"), "theft_rate": float("nan"), "attack_succeeded": "no attack",
             "removal_verdict": "", "seeds_removed": None, "seeds_stolen": None}


NO_MARK = "no: mark not detected before the attack"
UNSURE_MARK = "no: mark detected before the attack only in"  # followed by `undecided (k/n)`
NOT_BETTER = "no better than its own model"  # a removal that leaves the thief no more than training its own


def removal(present: list[bool], detected: list[bool], utility_kept: list[bool],
            beats_own: list[bool] | None = None) -> dict:
    """The removal literature's rule of attack success, per seed: the attacked model is not detected *and*
    keeps its utility — in a seed whose unattacked marked model was detected (`present`), since an attack
    cannot remove a mark that was not there. Owner and pirate, before and after, are judged by one rule of
    detection (the caller's: the key-randomization test at α, or the paper's threshold). A removal is a
    **theft** when it also pays: the attacked model's utility beats the attacker's own model, trained from
    scratch on its own data (`beats_own`; None: no baseline, every removal is a theft). The verdict over the
    seeds (`attack_succeeded`) is the theft's, called only where the 95 % Wilson interval of the seeds decides
    (`decide`), otherwise `undecided (k/n)` with k the seeds stolen; a decided "no" says why: no mark before
    the attack, the mark kept, the utility lost, or no better than its own model. `removal_verdict` reads the
    removal alone and says, where the seeds decide a removal, whether it paid: `removed`, `removed, no better
    than its own model`, or `removed, undecided (k/n) whether better than its own model`."""
    n = len(detected)
    if not n:
        return {}
    gone = [p and not d for p, d in zip(present, detected)]
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


def summarize_reports(reports: list[dict]) -> str:
    """Mean over seeds of each numeric scalar an attack reported (lists stay in the database)."""
    names = sorted({k for r in reports for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return "; ".join(f"{k}={mean(r[k] for r in reports if k in r):.3g}" for k in names)


def _mean(values) -> float:
    values = list(values)
    return mean(values) if values else float("nan")


def _known_mean(values) -> float:
    """The mean of the values that are not None (NaN when none is)."""
    return _mean(v for v in values if v is not None)


def _std(values) -> float:
    """Population standard deviation over seeds (0 for one seed)."""
    values = list(values)
    return pstdev(values) if values else float("nan")
