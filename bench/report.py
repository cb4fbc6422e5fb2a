"""Leaderboard files derived from the results database: `leaderboard.csv`, `leaderboard.md` (tabulate)
and `leaderboard.png` (utility after attack against verification rate). Each file is written to a
temporary file and renamed, so a crash never leaves half of one."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean, median, pstdev

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from tabulate import tabulate

from bench import __version__
from bench.cache import atomic_write
from bench.results import CellResult, Check, Prepared, ResultsDB

COLUMNS = [
    "defense", "attack", "strength", "n_seeds", "utility_clean", "utility_clean_std", "utility_marked",
    "utility_marked_std", "utility_attacked", "utility_attacked_std", "verification_rate", "verification_ci_low", "verification_ci_high",
    "false_positive_rate", "fpr_ci_low", "fpr_ci_high", "n_innocent", "threshold", "p_value_median",
    "threshold_calibrated", "verification_rate_calibrated", "false_positive_rate_calibrated",
    "identification_rate", "pirate_verification_rate", "ambiguity_rate", "attack_report", "seconds", "status",
]


def wilson(k: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a rate k/n."""
    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def calibrated_threshold(innocent_scores: list[float], fpr_target: float) -> float:
    """The statistic's threshold that at most `fpr_target` of the innocent scores exceed. With fewer than
    1/fpr_target innocent scores this is their maximum: an empirical bound, not an exact 1 % point."""
    if not innocent_scores:
        return float("nan")
    return float(np.quantile(np.asarray(innocent_scores), 1 - fpr_target, method="higher"))


def _rate(checks: list[Check], threshold: float | None = None) -> tuple[int, int]:
    hits = sum((c.statistic > threshold) if threshold is not None else c.detected for c in checks)
    return int(hits), len(checks)


def leaderboard(cells: list[CellResult], prepared: dict[tuple[str, int], Prepared], fpr_target: float) -> pd.DataFrame:
    """One row per (defense, attack, strength), aggregated over seeds."""
    by_row: dict[tuple[str, str, str], list[CellResult]] = defaultdict(list)
    innocent_by_defense: dict[str, list[float]] = defaultdict(list)
    for c in cells:
        by_row[(c.cell.defense, c.cell.attack, c.cell.strength)].append(c)
        if c.matched_innocent is not None:
            innocent_by_defense[c.cell.defense].append(c.matched_innocent.statistic)
    for p in prepared.values():
        innocent_by_defense[p.defense].extend(ch.statistic for ch in p.innocent_checks)
    calibrated = {d: calibrated_threshold(s, fpr_target) for d, s in innocent_by_defense.items()}

    rows = []
    for (defense, attack, strength), results in sorted(by_row.items()):
        ok = [r for r in results if r.status == "ok"]
        preps = [prepared[(defense, r.cell.seed)] for r in ok if (defense, r.cell.seed) in prepared]
        checks = [r.check for r in ok]
        innocents = [ch for p in preps for ch in p.innocent_checks] + [r.matched_innocent for r in ok]
        k, n = _rate(checks)
        fk, fn = _rate(innocents)
        t_cal = calibrated.get(defense, float("nan"))
        pirates = [r.pirate_check for r in ok if r.pirate_check is not None]
        both = [r.check.detected and r.pirate_check.detected for r in ok if r.pirate_check is not None]
        failed = [r.status for r in results if r.status != "ok"]
        attacked = [r.utility_attacked for r in ok]
        rows.append({
            "defense": defense, "attack": attack, "strength": strength, "n_seeds": len(ok),
            "utility_clean": _mean(p.utility_clean for p in preps),
            "utility_clean_std": _std(p.utility_clean for p in preps),
            "utility_marked": _mean(p.utility_marked for p in preps),
            "utility_marked_std": _std(p.utility_marked for p in preps),
            "utility_attacked": _mean(attacked),
            "utility_attacked_std": _std(attacked),
            "verification_rate": k / n if n else float("nan"),
            "verification_ci_low": wilson(k, n)[0], "verification_ci_high": wilson(k, n)[1],
            "false_positive_rate": fk / fn if fn else float("nan"),
            "fpr_ci_low": wilson(fk, fn)[0], "fpr_ci_high": wilson(fk, fn)[1],
            "n_innocent": fn,
            "threshold": checks[0].threshold if checks else float("nan"),
            "p_value_median": median(c.p_value for c in checks) if checks else float("nan"),
            "threshold_calibrated": t_cal,
            "verification_rate_calibrated": _rate(checks, t_cal)[0] / n if n else float("nan"),
            "false_positive_rate_calibrated": _rate(innocents, t_cal)[0] / fn if fn else float("nan"),
            "identification_rate": _mean(r.identified for r in ok if r.identified is not None),
            "pirate_verification_rate": sum(c.detected for c in pirates) / len(pirates) if pirates else None,
            "ambiguity_rate": sum(both) / len(both) if both else None,
            "attack_report": summarize_reports([r.attack_report for r in ok]),
            "seconds": _mean(r.seconds for r in results),
            "status": "ok" if not failed else f"{failed[0]} ({len(failed)}/{len(results)} seeds)",
        })
    return pd.DataFrame(rows, columns=COLUMNS)


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
    parts += [f"--seeds {config.get('seeds', 3)}", f"--profile {config.get('profile', 'default')}"]
    parts += [f"--{name} {config[name]}" for name in ("vlp", "data") if config.get(name)]
    return " ".join(parts)


HOW_TO_READ = """\
How to read this: one row per (defense, attack, strength), over `n_seeds` seeds. `utility_*` are
held-out task scores in [0, 1] (classifier: top-1 accuracy; encoder: linear-probe accuracy; VLP:
zero-shot accuracy) of the clean model, the watermarked model and the attacked model, as mean ± std
over seeds; rates carry their 95 % Wilson interval in brackets (the CSV has them as separate columns).
`verification_rate` is the fraction of attacked models on which the owner's key verifies at the
method's own (paper) `threshold`; `false_positive_rate` is the same verdict on innocent models
(`n_innocent` checks: the key against independently trained clean models, wrong keys against the
marked model, and the same attack applied to the clean model).
`*_calibrated` use instead a threshold set from the innocent scores of the defense to a target
false-positive rate of {fpr:.0%} (with few innocents: their maximum). `pirate_verification_rate`:
a pirate's own key verifies on its pirated model; `ambiguity_rate`: both keys verify;
`identification_rate`: the owner's key scores above every other user's key on the suspect (user
identification); `attack_report`: what the attack itself found, averaged over seeds. `seconds`:
mean wall time of a cell (attacks and verifications; models taken from the cache when present).
"""


def write_leaderboard(out: Path, profile: str = "default", fpr_target: float | None = None) -> pd.DataFrame:
    out = Path(out)
    db = ResultsDB(out, profile)
    config = db.meta("config", {})
    fpr_target = fpr_target if fpr_target is not None else float(config.get("fpr_target", 0.01))
    table = leaderboard(db.cells(), db.prepared(), fpr_target)
    atomic_write(out / "leaderboard.csv", lambda p: table.to_csv(p, index=False, float_format="%.4f"))
    shown = _with_uncertainty(table)
    header = (f"# wmbench leaderboard (profile `{profile}`)\n\n" + HOW_TO_READ.format(fpr=fpr_target)
              + f"\nReproduce with wmbench {__version__}: `{reproduce_command(config)}`\n\n")
    atomic_write(out / "leaderboard.md",
                 lambda p: p.write_text(header + tabulate(shown, headers="keys", tablefmt="github",
                                                          showindex=False, floatfmt=".3f", missingval="") + "\n"))
    atomic_write(out / "leaderboard.png", lambda p: plot(table, p))
    return table


def _with_uncertainty(table: pd.DataFrame) -> pd.DataFrame:
    """The Markdown view: utilities as mean ± std, rates with their 95 % Wilson interval."""
    shown = table.copy()
    for name in ("utility_clean", "utility_marked", "utility_attacked"):
        shown[name] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(table[name], table[f"{name}_std"])]
    intervals = {"verification_rate": ("verification_ci_low", "verification_ci_high"),
                 "false_positive_rate": ("fpr_ci_low", "fpr_ci_high")}
    for name, (low, high) in intervals.items():
        shown[name] = [f"{r:.2f} [{lo:.2f}, {hi:.2f}]" for r, lo, hi in zip(table[name], table[low], table[high])]
    return shown.drop(columns=[c for pair in intervals.values() for c in pair]
                      + ["utility_clean_std", "utility_marked_std", "utility_attacked_std"])


def plot(table: pd.DataFrame, path: Path) -> None:
    """Per defense: utility after attack (x) against verification rate (y); one marker per attack,
    its strengths joined as a trade-off curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    defenses = sorted(table["defense"].unique()) or ["(none)"]
    attacks = sorted(table["attack"].unique())
    style = {a: (f"C{i % 10}", "osD^vP*Xh<>"[i % 11]) for i, a in enumerate(attacks)}  # one look per attack
    fig, axes = plt.subplots(1, len(defenses), figsize=(4.5 * len(defenses), 4), squeeze=False)
    for ax, defense in zip(axes[0], defenses):
        rows = table[table["defense"] == defense]
        for attack, group in rows.groupby("attack", sort=True):
            group = group.sort_values("strength", key=lambda col: col.map(_strength_order(attack)))
            color, marker = style[attack]
            ax.plot(group["utility_attacked"], group["verification_rate"], marker=marker, color=color,
                    label=attack, alpha=0.8)
        ax.set(title=defense, xlabel="utility after attack", ylabel="verification rate", ylim=(-0.05, 1.05))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def _strength_order(attack: str):
    """Position of each strength in the attack's own list (weak → strong), for joining the curve."""
    from bench import registry

    try:
        order = registry.get_attack(attack).strengths
    except Exception:  # an attack no longer registered: keep the table's order
        order = ()
    return lambda strength: order.index(strength) if strength in order else len(order)
