"""The text views, plots and files of a run's leaderboard, read from its database alone (the table itself is
`bench.scoring.leaderboard`): `leaderboard.csv`, `leaderboard.md` (tabulate: the summary matrix, the papers'
claims judged from the rows, every row), `claims.csv`, `leaderboard.png` (utility after attack against
verification rate), and on request LaTeX tables. Each file is written to a temporary file and renamed, so a
crash never leaves half of one."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench import __version__
from bench.cache import atomic_write
from bench.claims import claims_table, owner_verified
from bench.kinds.encoder import LABELS_PER_CLASS
from bench.results import ResultsDB
from bench.nulls import check_alpha
from bench.scoring import NO_MARK, UNSURE_MARK, UNTESTED, WORTH_GAIN, leaderboard, undecided


def reproduce_command(config: dict) -> str:
    parts = ["wmbench run"]
    for name in ("defenses", "attacks", "strengths"):
        if config.get(name):
            parts.append(f"--{name} {','.join(config[name])}")
    parts += [f"--seeds {config.get('seeds')}", f"--profile {config.get('profile', 'default')}"]
    parts += [f"--{name} {config[name]}" for name in ("vlp", "data") if config.get(name)]
    if config.get("attacker_share") is not None:
        parts.append(f"--attacker-share {config['attacker_share']:g}")
    return " ".join(parts)


HOW_TO_READ = """\
How to read this: one row per (defense, attack, strength), over `n_seeds` seeds. `utility_*` are
held-out task scores in [0, 1] (classifier: top-1 accuracy; encoder: linear-probe accuracy; VLP:
zero-shot accuracy) of the clean, the watermarked and the attacked model, as mean ± std over seeds;
rates carry their 95 % Wilson interval in brackets (the CSV has them as separate columns).

- Every check is a key-randomization test (docs/statistics.md): the key's statistic on the suspect ranked
  among `null_units` = K null keys drawn by the defense's own key procedure, p = (1 + #nulls ≥ it)/(K + 1),
  valid when the suspect was not derived from the key's marked model (conservative with ties); a key is
  detected when p ≤ α = {alpha:g}.
  `p_value`: the median over seeds of the owner's check; `tpr_at_alpha`: the fraction of seeds detected.
  `verification_rate` is the same check by the method's own rule at its paper's `threshold`.
- False accusation: `innocent_fpr_at_alpha` is the fraction of (innocent model, owner's key) pairs detected
  at α (`innocent_fpr_ci_high`: the upper end of its interval; `false_positive_rate`: the same pairs at the
  paper's threshold) over `n_innocent_pairs` pairs: `n_innocent_models` clean models of the kind trained
  independently by the owner's recipe (every other one on the whole independent split, data the owner never used),
  each checked with every seed's owner key, and `n_attacked_clean` clean models put through the row's attack.
  Key specificity: `key_collision_rate` is the fraction of (another party's key, the owner's marked model)
  pairs detected, over `n_party_pairs` (each other seed's owner is a party; its key is tested against its own
  null keys). `auc`: the owner's statistic on the attacked models against the innocent pairs'.
- Attack success (the removal literature's rule, one rule for owner and pirate): `removal_rate` is the fraction
  of seeds whose unattacked marked model is detected and whose attacked model is *not* detected, **and** keeps
  its utility (`utility_attacked ≥ utility_marked − {drop}`); `seeds_removed` counts them. A removal is a theft
  (`theft_rate`, `seeds_stolen`) when the attacked model's utility also beats `attacker_scratch_utility`, the
  mean utility of the attacker's own models (the owner's recipe trained from scratch on the attacker's data,
  `attacker_data_share` of the owner's training-set size): a thief who gets no more than that gained nothing by
  stealing. Verdicts are called only where the 95 % Wilson interval of the seeds lies wholly above or below ½
  (at 10 seeds: 9 or 10 of 10 decide yes, 0 or 1 decide no; at 5 seeds only 5/5 and 0/5; at 3 seeds nothing),
  otherwise they read `undecided (k/n)`. `removal_verdict` (= `verdict_alpha`): `removed` (a theft), `removed,
  no better than its own model`, `removed, undecided (k/n) whether better than its own model`, `kept` or
  `undecided (k/n)`; `verdict_paper_threshold`: the same rule at the paper's threshold; `attack_succeeded`, the
  theft's verdict: `yes`, or why not (`no: mark kept`, `no: utility lost`, `no: no better than its own model`,
  `no: mark not detected before the attack`), or `undecided (k/n)` (k seeds stolen). The
  `none` row is no attack: its verdicts say whether the owner's key detects its own model, `seeds_detected`
  in how many seeds. Rows whose `status` is `n/a` lie outside the threat model and are not run.
- Encoder rows also carry the low-label utility (`utility_low_label_clean`, `utility_low_label_marked`,
  `utility_low_label`: the linear probe trained on {labels} labelled images per class) and an untrained encoder's
  (`utility_low_label_untrained`, the reference); `worth_protecting`: whether the marked encoder beats it by
  at least {gain:g} in most seeds, as the seeds decide.
- `pirate_verification_rate`: a pirate's own key (tested against null keys drawn for the model it held)
  detected on its pirated model; `pirate_clean_verification_rate`: the same pirate on the *clean* model
  (piracy resistance is the contrast); `ambiguity_rate`: owner's and pirate's keys both detected;
  `identification_rate`: the owner's key scores above all K null keys (p = 1/(K + 1)); `attack_report`: what
  the attack itself found, averaged over seeds; `seconds`: mean wall time of a cell.
"""

# The Markdown table's columns (the CSV has every column of COLUMNS).
SHOWN = ["defense", "attack", "strength", "n_seeds", "utility_marked", "utility_attacked", "p_value", "tpr_at_alpha",
         "verification_rate", "innocent_fpr_at_alpha", "key_collision_rate", "removal_rate", "attack_succeeded",
         "verdict_paper_threshold", "identification_rate", "pirate_verification_rate",
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


@dataclass(frozen=True)
class Loaded:
    """A run's leaderboard table and what its views read beside it, from its database alone."""

    table: pd.DataFrame
    db: ResultsDB
    config: dict
    alpha: float  # the run's own level unless the caller named one
    drop: float  # the run's utility allowance
    methods: dict  # the methods' stored metadata (`stored_methods`)
    paper_table: pd.DataFrame  # the same table read at the papers' thresholds (`leaderboard(rule="paper")`)

    @property
    def level_note(self) -> str:
        """A line for a table read at a coarser level than the run's own ("" otherwise): the run's tests stopped
        once their p-values could not reach its α (`bench.nulls.stop_count`), so their verdicts at a coarser
        level stay valid but can differ from a run made at that level."""
        own = run_alpha(self.config)
        if self.alpha <= own:
            return ""
        return (f"Read at α = {self.alpha:g}, coarser than the run's own α = {own:g}: its key-randomization tests "
                f"stopped once their p-value could not reach {own:g}, so these verdicts are valid at {self.alpha:g} "
                f"but can differ from those of a run made at {self.alpha:g}.")


def load_table(out: Path, profile: str = "default", alpha: float | None = None) -> Loaded:
    """The leaderboard table of the run in `out` and what the views need beside it. An `alpha` finer than the
    run's null keys resolve is refused in one line."""
    db = ResultsDB(Path(out), profile)
    config = db.meta("config", {})
    null_keys = (db.meta(f"profile:{profile}") or {}).get("null_keys")
    if alpha is not None and null_keys:
        check_alpha(alpha, int(null_keys))
    alpha = run_alpha(config) if alpha is None else alpha
    drop, methods = utility_drop(config), stored_methods(db)
    cells, prepared = db.cells(), db.prepared()
    share = attacker_data_share(db.meta(f"profile:{profile}"))
    return Loaded(leaderboard(cells, prepared, alpha, drop, methods, attacker_data_share=share), db, config, alpha,
                  drop, methods, leaderboard(cells, prepared, alpha, drop, methods, "paper", share))


def write_leaderboard(out: Path, profile: str = "default", alpha: float | None = None) -> Loaded:
    """Write the run's leaderboard files in `out` (CSV, Markdown, plot, claims); returns what they were made of."""
    out = Path(out)
    loaded = load_table(out, profile, alpha)
    table, db, config, alpha, drop = loaded.table, loaded.db, loaded.config, loaded.alpha, loaded.drop
    atomic_write(out / "leaderboard.csv", lambda p: table.to_csv(p, index=False, float_format="%.4f"))
    claims = claims_table(table, drop, loaded.methods, loaded.paper_table)
    atomic_write(out / "claims.csv", lambda p: claims.to_csv(p, index=False))
    shown = _with_uncertainty(table)[SHOWN]
    header = (f"# wmbench leaderboard (profile `{profile}`)\n\n{setting_line(db.meta(f'profile:{profile}'))}\n\n"
              + f"## Summary\n\n{summary_markdown(table, drop, alpha)}\n"
              + f"## The papers' claims\n\n{claims_markdown(claims)}\n"
              + "## Every row\n\n" + HOW_TO_READ.format(alpha=alpha, drop=drop, gain=WORTH_GAIN, labels=LABELS_PER_CLASS)
              + (f"\n{loaded.level_note}\n" if loaded.level_note else "")
              + f"\n{reproducibility_line(db.meta('environment'))}\n\n{software_line(db.meta('software'))}\n"
              + f"\nReproduce with wmbench {__version__}: `{reproduce_command(config)}`\n\n")
    atomic_write(out / "leaderboard.md",
                 lambda p: p.write_text(header + tabulate(shown, headers="keys", tablefmt="github",
                                                          showindex=False, floatfmt=".3f", missingval="") + "\n"))
    atomic_write(out / "leaderboard.png", lambda p: plot(table, p))
    return loaded


def summary_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Defense × attack, one cell each: the attacker's best setting of that attack (highest `theft_rate`, then
    `removal_rate`, then lowest detection at α, then highest utility after) with its outcome; `n/a` outside the
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
        number = lambda column: pd.to_numeric(group[column], errors="coerce")  # noqa: E731 (object columns of a hand-built table)
        best = group.assign(_t=number("theft_rate").fillna(-1), _r=number("removal_rate").fillna(-1),
                            _d=-number("tpr_at_alpha").fillna(1))
        best = best.sort_values(["_t", "_r", "_d", "utility_attacked"], ascending=False, kind="stable").iloc[0]
        outcome = summary_outcome(best)
        cells[defense][attack] = (f"{outcome} ({best['strength']}: detected {best['tpr_at_alpha']:.2f}, "
                                  f"utility {best['utility_attacked']:.2f})")
    attacks = sorted(table["attack"].unique())
    return pd.DataFrame([{"defense": d, **{a: cells[d].get(a, "") for a in attacks}} for d in sorted(cells)])


def summary_outcome(best: pd.Series) -> str:
    """A summary cell's outcome, from its row's verdict (called only where the seeds decide)."""
    verdict = str(best["attack_succeeded"])
    if verdict == "no attack":  # the unattacked model: does the owner's key verify at all?
        verified = owner_verified(best)
        if pd.isna(best["seeds_detected"]):
            return "untested"
        return ("verified" if verified else "not verified" if verified is False
                else undecided(best["seeds_detected"], best["n_seeds"]))
    if str(best["removal_verdict"]).startswith("removed, "):  # removed, but the theft did not (surely) pay
        return str(best["removal_verdict"])
    if verdict == UNTESTED:
        return "untested"
    if verdict.startswith(UNSURE_MARK):
        return "undecided before " + verdict[len(UNSURE_MARK):].strip().removeprefix("undecided ")
    if verdict.startswith("undecided"):
        return verdict
    if verdict.startswith("no: ") and verdict not in (NO_MARK, "no: mark kept", "no: utility lost"):
        return verdict.removeprefix("no: ")  # the attack did nothing, and says why (e.g. nothing flagged)
    return {"yes": "removed", "no: mark kept": "kept", "no: utility lost": "utility lost",
            NO_MARK: "not verified before"}.get(verdict, "control")


def run_alpha(config: dict) -> float:
    """The level the run's verdicts are read at (`alpha`; databases written before it was recorded: 0.01)."""
    return float(config.get("alpha") or 0.01)


def utility_drop(config: dict) -> float:
    """The run's `max_utility_drop` (databases written before it was recorded: the default 0.05)."""
    return float(config.get("max_utility_drop", 0.05))


def attacker_data_share(profile: dict | None) -> float:
    """The run's attacker data share, from its stored profile (runs before it was recorded attacked with the
    whole independent split: 0.50; no stored profile: NaN)."""
    return float("nan") if not profile else float(profile.get("attacker_data_share", 0.5))


def worst_case(table: pd.DataFrame) -> pd.DataFrame:
    """Per defense, its worst case over every attack, as RobustBench reports robustness against its strongest
    attack: among the settings that steal the model (the mark removed with utility kept, above the
    attacker's own model's, as the seeds decide), the one that leaves the thief the most utility; else a
    removal the seeds decide that does not (surely) pay, the one leaving the most utility; else the setting
    closest to a theft (most seeds stolen, then removed) and whether any is undecided; then the outcome per
    attack family (the family's best setting for the thief)."""
    out = []
    ran = table[(table["n_seeds"] > 0) & (table["attack"] != "none")]
    for defense, rows in ran.groupby("defense", sort=True):
        if rows["attack_succeeded"].astype(str).str.startswith("n/a (control").all():
            continue
        verdicts = rows["removal_verdict"].astype(str)
        removed, unpaid = rows[verdicts == "removed"], rows[verdicts.str.startswith("removed, ")]
        if (verdicts == UNTESTED).all():  # a run from before the key-randomization test
            out.append({"defense": defense, "worst case": UNTESTED})
            continue
        if not removed.empty:
            best = removed.sort_values("utility_attacked", ascending=False, kind="stable").iloc[0]
            worst = f"removed by {best['attack']} {best['strength']} (utility {best['utility_attacked']:.2f})"
        elif not unpaid.empty:
            best = unpaid.sort_values("utility_attacked", ascending=False, kind="stable").iloc[0]
            worst = (f"no theft pays as the seeds decide; removed by {best['attack']} {best['strength']} (utility "
                     f"{best['utility_attacked']:.2f}, its own model {best['attacker_scratch_utility']:.2f}): "
                     f"{best['removal_verdict'].removeprefix('removed, ')}")
        else:
            best = rows.sort_values(["theft_rate", "removal_rate", "utility_attacked"], ascending=False,
                                    kind="stable").iloc[0]
            unsure = rows["removal_verdict"].astype(str).str.startswith("undecided").sum()
            worst = (f"no attack removes it as the seeds decide; closest {best['attack']} {best['strength']} "
                     f"({summary_outcome(best)})" + (f"; {unsure} settings undecided" if unsure else ""))
        families = {}
        for family, group in rows.groupby("family", sort=True):
            top = group.assign(_t=group["theft_rate"].fillna(-1), _r=group["removal_rate"].fillna(-1)).sort_values(
                ["_t", "_r", "utility_attacked"], ascending=False, kind="stable").iloc[0]
            families[family or "other"] = f"{summary_outcome(top)} ({top['attack']} {top['strength']})"
        out.append({"defense": defense, "worst case": worst, **families})
    return pd.DataFrame(out).fillna("")


def summary_markdown(table: pd.DataFrame, drop: float, alpha: float) -> str:
    """The screen-sized view: each defense's worst case and its family breakdown, how to read the summary
    matrix, and the matrix."""
    if table.empty:
        return ""
    worst = worst_case(table)
    head = ""
    if not worst.empty:
        head = ("Worst case per defense (the strongest attack tried: a theft the seeds decide — the mark removed "
                "with utility kept and above the attacker's own model's — leaving the thief the most utility), "
                "then the outcome per attack family:\n\n"
                + tabulate(worst, headers="keys", tablefmt="github", showindex=False) + "\n\n")
    body = tabulate(summary_matrix(table), headers="keys", tablefmt="github", showindex=False)
    return f"{head}{summary_legend(drop, alpha)}\n\n{body}\n{pretraining_markdown(table)}"


def pretraining(table: pd.DataFrame) -> pd.DataFrame:
    """Per defense whose kind has a low-label utility (the encoder's probe on `LABELS_PER_CLASS` labels per class), what its
    recipe's pretraining buys: the clean and marked models' low-label utility against an untrained model's
    of the kind (the reference row), and whether the marked model is worth protecting as the seeds decide."""
    rows = table[table["worth_protecting"].fillna("").astype(str) != ""]
    # one row per defense: its unattacked row where the run has one (every seed's preparation), else its
    # row over the most seeds
    rows = rows.assign(_attacked=rows["attack"] != "none").sort_values(
        ["defense", "_attacked", "n_seeds"], ascending=[True, True, False], kind="stable").drop_duplicates("defense")
    columns = ["defense", "utility_low_label_clean", "utility_low_label_marked", "utility_low_label_untrained",
               "worth_protecting"]
    return rows[columns].reset_index(drop=True)


PRETRAINING_LEGEND = (f"What pretraining buys (low-label utility: the linear probe trained on {LABELS_PER_CLASS} labelled images per "
                      f"class; `untrained`: a model of the kind at its random initialisation, one per seed). A marked "
                      f"model is `worth_protecting` where its low-label utility beats the untrained model's by at "
                      f"least {WORTH_GAIN:g} in a seed, as the seeds decide.")


def pretraining_markdown(table: pd.DataFrame) -> str:
    """The pretraining table with how to read it; '' when no defense's kind has a low-label utility."""
    rows = pretraining(table)
    if rows.empty:
        return ""
    return (f"\n{PRETRAINING_LEGEND}\n\n"
            + tabulate(rows, headers="keys", tablefmt="github", showindex=False, floatfmt=".3f") + "\n")


def summary_legend(drop: float, alpha: float) -> str:
    """How to read a cell of the summary matrix."""
    return ("Each cell: the attacker's best setting of that attack and its outcome over the seeds, called only "
            "where the 95 % Wilson interval of the seeds lies wholly above or below ½ — `removed` (the owner's key "
            f"is no longer detected by its key-randomization test at α = {alpha:g}, utility falls by at most {drop:g} "
            "and beats the attacker's own model, the owner's recipe trained from scratch on the attacker's data: a "
            "theft that pays), `removed, no better than its own model` (the mark went with utility kept, but the "
            "thief gets no more than from training its own model; `removed, undecided (k/n) whether better than "
            "its own model`: better in k of n seeds), `kept` (the mark is still detected), `utility lost` (the "
            "mark went, but so did the utility), `not verified before` (the owner's own unattacked model is not "
            "detected: there is no mark to remove, no verdict); otherwise `undecided (k/n)`: stolen in k of n "
            "seeds (`undecided before (k/n)`: the owner's unattacked model detected in k of n). `detected` is the "
            "detection rate at α, `utility` the utility after the attack. `n/a`: outside the threat model. "
            "`control`: the unwatermarked control. Column `none`: whether the owner's key is detected on its own "
            "unattacked model at α (`undecided (k/n)`: in k of n seeds).")


CLAIMS_LEGEND = ("Each paper's headline claims, judged from the rows named: `holds`, `partly` or `fails`, with the "
                 "setting that decides it, or `not tested` with the reason (bench/claims.py says how each kind of "
                 "claim is judged). `verdict` reads every check by its key-randomization test at α; "
                 "`verdict_paper_threshold` by the paper's own threshold; `differs` marks the claims where the two "
                 "readings disagree.")


def claims_markdown(claims: pd.DataFrame) -> str:
    if claims.empty:
        return "No defense in this run declares its paper's claims.\n"
    return f"{CLAIMS_LEGEND}\n\n{tabulate(claims, headers='keys', tablefmt='github', showindex=False)}\n"


def write_latex(out: Path, profile: str = "default", alpha: float | None = None) -> list[Path]:
    """The summary matrix and the claims table as LaTeX `booktabs` tables (`summary.tex`, `claims.tex`)."""
    out = Path(out)
    loaded = load_table(out, profile, alpha)
    table = loaded.table
    tables = {"summary.tex": (summary_matrix(table), "Defense $\\times$ attack: the attacker's best setting and its outcome."),
              "claims.tex": (claims_table(table, loaded.drop, loaded.methods, loaded.paper_table),
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
            f"per label; {profile['n_innocent']} innocent models per kind, {profile['null_keys']} null keys per test. "
            + attacker_line(profile))


def attacker_line(profile: dict) -> str:
    """What the attacker holds and what a theft must beat (the split rule, bench/data.py)."""
    share = attacker_data_share(profile)
    held = ("the whole independent split" if share >= 0.5 else
            f"{100 * share:g} % of the owner's training-set size, a stratified subset (split seed) of the independent split")
    own = (f"{profile['scratch_seeds']} seeds of the owner's recipe trained from scratch on its data"
           if "scratch_seeds" in profile else "none recorded, so every removal counts")
    return (f"Attacker's data (`attacker_data_share` {share:.2f}): {held} — the independent split is data the owner "
            f"never used, on all of which the innocent models train and from which piracy's `12@P%` draws its own "
            f"P %; a theft must beat the attacker's own models ({own}).")


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
    generation = f" ({env['cpu_generation']})" if env.get("cpu_generation") else ""
    machine = f"{env.get('cpu_model', '?')}{generation}, torch {env.get('torch', '?')}"
    if env.get("portable"):
        return (f"Reproducibility: portable mode — CPU kernels pinned to {env.get('pinned')} in every process, so "
                f"a rerun on the same kind of CPU with the same package versions gives the same numbers "
                f"(`wmbench reproduce`); another CPU vendor's kernels can train different models "
                f"(this run: {machine}).")
    return (f"Reproducibility: ambient CPU kernels ({env.get('cpu_capability', '?')}) on {machine}: the same "
            f"command gives the same numbers on this machine; on another CPU training can diverge (run with "
            f"`--portable` to pin the kernels' instruction set).")


def _with_uncertainty(table: pd.DataFrame) -> pd.DataFrame:
    """The Markdown view: utilities as mean ± std, rates with their 95 % Wilson interval."""
    shown = table.copy()
    for name in ("utility_clean", "utility_marked", "utility_attacked"):
        shown[name] = [f"{m:.3f} ± {s:.3f}" if m == m else "" for m, s in zip(table[name], table[f"{name}_std"])]
    intervals = {"verification_rate": ("verification_ci_low", "verification_ci_high"),
                 "tpr_at_alpha": ("tpr_ci_low", "tpr_ci_high")}
    for name, (low, high) in intervals.items():
        shown[name] = [f"{r:.2f} [{lo:.2f}, {hi:.2f}]" if r == r else ""
                       for r, lo, hi in zip(table[name], table[low], table[high])]
    return shown


def plot(table: pd.DataFrame, path: Path) -> None:
    """Per defense: utility after attack (x) against the detection rate at α (y), in one figure."""
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
        ax.plot(group["utility_attacked"], group["tpr_at_alpha"], marker=marker, color=color, label=attack,
                alpha=0.8, linestyle="-" if joined else "none")
    ax.set(title=defense, xlabel="utility after attack", ylabel="detected at α (key-randomization test)",
           ylim=(-0.05, 1.05))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
