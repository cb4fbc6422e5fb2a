"""The papers' headline claims, judged from the leaderboard's own rows (so no number about them is typed by hand).

A defense lists its paper's claims as `claims` (optional member, a tuple of `Claim`); each names the test
that judges it and, where the test needs them, the attacks whose rows bear on it. A test reads the
leaderboard table (`bench.scoring.leaderboard`) and returns the measured numbers and a verdict — `holds`,
`partly` or `fails` — with the setting it holds or fails under. A verdict that rests on what happens "in most
seeds" is called only where the seeds' 95 % Wilson interval decides (`bench.scoring.decide`); otherwise it
reads `undecided (k/n)`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from bench import registry
from bench.plugins import Catalog, instance_of
from bench.scoring import decide, undecided, wilson


@dataclass(frozen=True)
class Claim:
    """One headline claim of a paper: its words, the test that judges it, the attacks it is about."""

    text: str
    test: str  # a key of JUDGES
    attacks: tuple[str, ...] = ()  # for `survives`: the attacks (and the chains that start with one of them)


@dataclass(frozen=True)
class Judgement:
    rows: str  # which leaderboard rows were read
    measured: str
    verdict: str  # "holds", "partly" or "fails", then the setting


JudgeFn = Callable[[pd.DataFrame, Claim, float], Judgement]


@dataclass(frozen=True)
class Judge:
    """A kind of claim and the test that judges it from a defense's leaderboard rows."""

    name: str
    test: JudgeFn

    def __call__(self, rows: pd.DataFrame, claim: Claim, drop: float) -> Judgement:
        return self.test(rows, claim, drop)


# The judges: this module's, and outside packages' through the entry-point group `wmbench.judges` (a `Judge`).
JUDGES: Catalog[Judge] = Catalog("claim judge", "wmbench.judges", ("bench.claims",), instance_of(Judge))


def judge(name: str) -> Callable[[JudgeFn], JudgeFn]:
    def register(fn: JudgeFn) -> JudgeFn:
        JUDGES.register(Judge(name, fn))
        return fn

    return register


def _ran(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"]


def _none_row(rows: pd.DataFrame) -> pd.Series | None:
    none = _ran(rows[rows["attack"] == "none"])
    return None if none.empty else none.iloc[0]


def owner_verified(none_row: pd.Series) -> bool | None:
    """Whether the owner's key detects its own unattacked model in most seeds (by the row's reading: the
    key-randomization test at α, or the paper's threshold), as the seeds decide (None: undecided or untested)
    — the rule the summary's `none` column, the robustness claims and the false-positive claim share."""
    if pd.isna(none_row["seeds_detected"]):
        return None
    return decide(int(none_row["seeds_detected"]), int(none_row["n_seeds"]))


def _owner_counts(none_row: pd.Series) -> str:
    if pd.isna(none_row["seeds_detected"]):
        return "untested"
    return f"{int(none_row['seeds_detected'])}/{int(none_row['n_seeds'])}"


NOT_RUN = Judgement("—", "no finished row in this run", "not tested")
NONE_ONLY = Judgement("—", "the run gave this defense only the no-attack row (a variant of a defense: `--defenses <its "
                           "name>` runs it against every attack)", "not tested")


@judge("utility")
def utility_kept(rows: pd.DataFrame, claim: Claim, drop: float) -> Judgement:
    """Marked utility against clean: holds within 1 point, partly within the run's utility allowance."""
    row = _none_row(rows)
    if row is None:
        return NOT_RUN
    change = row["utility_marked"] - row["utility_clean"]
    measured = f"utility {row['utility_clean']:.3f} → {row['utility_marked']:.3f} ({100 * change:+.1f} points)"
    verdict = "holds" if change >= -0.01 else "partly" if change >= -drop else f"fails (more than {drop:g} lost)"
    return Judgement("none", measured, verdict)


@judge("survives")
def survives(rows: pd.DataFrame, claim: Claim, drop: float) -> Judgement:
    """Per attack, the attacker's best setting (highest theft rate, then removal rate): holds when no attack
    steals the model in most seeds, fails when every attack does, partly otherwise; not tested when the
    owner's own unattacked model is not detected in most seeds (no mark to survive). The strict reading: a
    theft is a removal (the mark gone, utility kept) that beats the attacker's own model trained from scratch
    on its data (`seeds_stolen`); a removal that leaves the thief no better off fails no claim."""
    prefixes = tuple(f"{a}{registry.STRENGTH_SEPARATOR}" for a in claim.attacks)
    picked = _ran(rows[rows["attack"].isin(claim.attacks) | rows["attack"].str.startswith(prefixes)])
    if picked.empty:
        return NOT_RUN
    none = _none_row(rows)
    if none is not None and owner_verified(none) is not True:  # no mark there to survive, or not known
        verified = owner_verified(none)
        return Judgement("none", f"owner's unattacked model detected in {_owner_counts(none)} seeds",
                         "not tested (the mark is not detected on the owner's own unattacked model)"
                         if verified is False else
                         f"not tested (the owner's own unattacked model detected in {_owner_counts(none)} seeds)")
    idle = [a for a, g in picked.groupby("attack", sort=True)
            if g["attack_succeeded"].astype(str).str.startswith("no: nothing").all()]
    if idle and len(idle) == picked["attack"].nunique():  # every attack left the model unchanged
        return Judgement(", ".join(idle), "; ".join(f"{a}: {picked[picked.attack == a].iloc[0]['attack_succeeded'][4:]}"
                                                   for a in idle),
                         "not tested (the attacks left the model unchanged)")
    parts, removed_by, unsure = [], [], []
    for attack, group in picked.groupby("attack", sort=True):
        group = group.assign(_t=group["theft_rate"].fillna(group["removal_rate"]))
        best = group.sort_values(["_t", "removal_rate", "utility_attacked"], ascending=False, kind="stable").iloc[0]
        removed, n_seeds = int(best["seeds_removed"]), int(best["n_seeds"])
        k = removed if pd.isna(best["seeds_stolen"]) else int(best["seeds_stolen"])  # no theft count: every removal
        own = best["attacker_scratch_utility"]
        parts.append(f"{attack} {best['strength']}: removed in {removed}/{n_seeds} seeds"
                     + ("" if pd.isna(own) else f", stolen in {k}/{n_seeds} (its own model {own:.2f})")
                     + f", utility {best['utility_attacked']:.2f}")
        called = decide(k, n_seeds)
        if called:
            removed_by.append(f"{attack} {best['strength']}")
        elif called is None:
            unsure.append(f"{attack} {best['strength']} {k}/{n_seeds}")
    n = picked["attack"].nunique()
    if len(removed_by) == n:
        verdict = f"fails (removed by {', '.join(removed_by)})"
    elif removed_by:
        verdict = f"partly (removed by {', '.join(removed_by)})"
    elif unsure:
        verdict = f"undecided ({'; '.join(unsure)})"
    else:
        verdict = "holds"
    return Judgement(", ".join(sorted(picked["attack"].unique())), "; ".join(parts), verdict)


@judge("piracy")
def piracy_resistant(rows: pd.DataFrame, claim: Claim, drop: float) -> Judgement:
    """Holds when at no piracy setting the pirate's own key verifies on the marked model in most seeds while
    the model keeps its utility; the pirate's success on the clean model is shown beside it (the contrast
    the claim is about)."""
    picked = _ran(rows[rows["attack"] == "piracy"])
    if picked.empty:
        return NOT_RUN
    parts, forged, unsure = [], [], []
    for _, row in picked.iterrows():
        clean = row.get("pirate_clean_verification_rate")
        k, n = int(row["seeds_pirate_verified"]), int(row["n_seeds"])
        parts.append(f"{row['strength']}: pirate verifies on marked in {k}/{n}"
                     + ("" if pd.isna(clean) else f" ({clean:.2f} on clean)")
                     + f", utility {row['utility_attacked']:.2f}")
        kept = row["utility_attacked"] >= row["utility_marked"] - drop
        called = decide(k, n)
        if called and kept:
            forged.append(str(row["strength"]))
        elif called is None and kept:
            unsure.append(f"{row['strength']} {k}/{n}")
    if forged:
        verdict = (f"fails (the pirate's mark verifies at {', '.join(forged)})" if len(forged) == len(picked)
                   else f"partly (the pirate's mark verifies at {', '.join(forged)})")
    else:
        verdict = f"undecided ({'; '.join(unsure)})" if unsure else "holds"
    return Judgement("piracy", "; ".join(parts), verdict)


FPR_BOUND = 0.05  # the false-positive claims hold when the upper end of the rate's interval lies at or below this


def _false_positives(row: pd.Series) -> tuple[float, float, float, str]:
    """The innocent pairs' flagged rate, its Wilson interval and the reading, by the row's reading."""
    if row["reading"] == "paper":
        return row["false_positive_rate"], row["fpr_ci_low"], row["fpr_ci_high"], "at the paper's threshold"
    return row["innocent_fpr_at_alpha"], float("nan"), row["innocent_fpr_ci_high"], f"at α = {row['alpha']:g}"


@judge("false_positives")
def few_false_positives(rows: pd.DataFrame, claim: Claim, drop: float) -> Judgement:
    """Holds when the owner's key verifies its own unattacked model in most seeds and the upper end of the 95 %
    Wilson interval of the (innocent model, owner's key) pairs flagged lies at or below 0.05; fails when its
    lower end lies above; a test that does not verify the owner's own model fails, whatever its false-positive
    rate."""
    row = _none_row(rows)
    if row is None:
        return NOT_RUN
    rate, low, high, reading = _false_positives(row)
    if pd.isna(rate):
        return Judgement("none", "no innocent pair checked", "not tested")
    pairs = int(row["n_innocent_pairs"])
    measured = f"{rate:.3f} of {pairs} innocent pairs flagged {reading} (≤ {high:.3f}); owner's model detected in {_owner_counts(row)} seeds"
    verified = owner_verified(row)
    if verified is False:
        return Judgement("none", measured, "fails (the test does not verify the owner's own model)")
    if verified is None:
        return Judgement("none", measured, f"undecided (the owner's own model detected in {_owner_counts(row)} seeds)")
    if high <= FPR_BOUND:
        verdict = "holds"
    elif low > FPR_BOUND or (pd.isna(low) and wilson(round(rate * pairs), pairs)[0] > FPR_BOUND):
        verdict = "fails"
    else:
        verdict = f"undecided ({undecided(round(rate * pairs), pairs)} innocent pairs flagged)"
    return Judgement("none", measured, verdict)


@judge("identification")
def identifies_users(rows: pd.DataFrame, claim: Claim, drop: float) -> Judgement:
    """Holds when the owner's key outscores all K null keys (other keys its procedure could have drawn) on the
    owner's model in most seeds, as the seeds decide."""
    row = _none_row(rows)
    if row is None:
        return NOT_RUN
    if pd.isna(row["seeds_identified"]):
        return Judgement("none", "no key-randomization test in this run", "not tested")
    k, n = int(row["seeds_identified"]), int(row["n_seeds"])
    called = decide(k, n)
    return Judgement("none", f"identified in {k}/{n} seeds against {int(row['null_units'])} null keys",
                     "holds" if called else "fails" if called is False else undecided(k, n))


CLAIM_COLUMNS = ["defense", "claim", "rows", "measured", "verdict", "verdict_paper_threshold", "differs"]


def claims_table(table: pd.DataFrame, drop: float, methods: dict, paper_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every claim of every defense in `table`, as the run stored them in `methods`
    (`registry.describe_methods`), judged from `table` (read at α) and from `paper_table` (the same rows read at
    the papers' thresholds, when given): `differs` marks a claim whose two verdicts disagree."""
    out = []
    for defense in sorted(table["defense"].unique()):
        if defense not in methods["defenses"]:  # a run that recorded nothing of this defense
            out.append({"defense": defense, "claim": "(its paper's claims)", "rows": "—", "measured": "—",
                        "verdict": "not judged (the run recorded no description of this defense)",
                        "verdict_paper_threshold": "", "differs": ""})
            continue
        claims = [Claim(c["text"], c["test"], tuple(c["attacks"])) for c in methods["defenses"][defense]["claims"]]
        only_none = set(table.loc[table["defense"] == defense, "attack"]) == {"none"}
        for claim in claims:
            j = _judged(table[table["defense"] == defense], claim, drop)
            if j is NOT_RUN and only_none:
                j = NONE_ONLY
            paper = None if paper_table is None else _judged(paper_table[paper_table["defense"] == defense], claim, drop)
            out.append({"defense": defense, "claim": claim.text, "rows": j.rows, "measured": j.measured,
                        "verdict": j.verdict, "verdict_paper_threshold": "" if paper is None else paper.verdict,
                        "differs": "" if paper is None or _word(paper.verdict) == _word(j.verdict) else "yes"})
    return pd.DataFrame(out, columns=CLAIM_COLUMNS)


def _judged(rows: pd.DataFrame, claim: Claim, drop: float) -> Judgement:
    try:
        return JUDGES.get(claim.test)(rows, claim, drop)
    except Exception as e:  # reported in the table, never dropped
        return Judgement("—", "—", f"error while judging ({e.__class__.__name__}: {e})")


def _word(verdict: str) -> str:
    """A verdict's outcome without its setting (`fails (removed by …)` → `fails`)."""
    return verdict.split(" (")[0]
