"""The static site of a leaderboard: one self-contained folder (`site/`: index.html, its script and style, one
plot per defense) that opens from disk, needs no server and loads nothing from the network. The page is
rendered with jinja2 from `bench/site_template/`; sorting and filtering are plain JavaScript shipped beside it.
`screenshot` opens a page in headless Chromium (Debian's `chromium` and `chromium-driver`, driven by selenium)."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd

from bench.cache import atomic_write
from bench.claims import CLAIM_COLUMNS, claims_table
from bench.protocols import WmbenchError
from bench.report import (CLAIMS_LEGEND, PRETRAINING_LEGEND, SHOWN, attack_styles, draw_defense, load_table,
                          pretraining, reproducibility_line,
                          software_line, summary_legend, summary_matrix, worst_case)

TEMPLATE = Path(__file__).parent / "site_template"
ASSETS = ("wmbench.js", "style.css")
# first matching prefix wins: a removal that did not (surely) pay is told apart from a theft
OUTCOMES = {"removed, ": "unpaid", "no better than its own model": "unpaid",
            "removed": "removed", "kept": "kept", "utility lost": "utility-lost", "control": "control", "n/a": "na",
            "failed": "failed", "verified": "kept", "not verified before": "na", "not verified": "removed",
            "undecided": "undecided", "untested": "na"}
FILTERS = ("defense", "attack", "model_kind")


def write_site(out: Path, profile: str = "default", alpha: float | None = None) -> Path:
    """The site of the run (or published) folder `out`, written to `out/site/` (read at `alpha`, default the
    run's own); returns its index.html."""
    out = Path(out)
    loaded = load_table(out, profile, alpha)
    db = loaded.db
    return render_site(loaded.table, out / "site", profile=profile, drop=loaded.drop, alpha=loaded.alpha,
                       methods=loaded.methods, paper_table=loaded.paper_table, reproducibility=reproducibility_line(db.meta("environment")) + " "
                       + software_line(db.meta("software")))


def outcome(text: str) -> str:
    """The CSS class of a summary cell: the outcome its text starts with."""
    for prefix, name in OUTCOMES.items():
        if text.startswith(prefix):
            return name
    return "empty"


def _shown(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3f}"
    return "" if value is None else str(value)


def render_site(table: pd.DataFrame, folder: Path, *, profile: str, drop: float, alpha: float, reproducibility: str,
                methods: dict, paper_table: pd.DataFrame | None = None) -> Path:
    import jinja2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    matrix, worst, pretrained = summary_matrix(table), worst_case(table), pretraining(table)
    attacks = [c for c in matrix.columns if c != "defense"]
    summary = [{"defense": r["defense"], "cells": [{"attack": a, "text": r[a], "outcome": outcome(r[a])} for a in attacks]}
               for _, r in matrix.iterrows()]
    style = attack_styles(table)
    plots = []
    for defense in sorted(table["defense"].unique()):
        fig, ax = plt.subplots(figsize=(5, 4))
        draw_defense(ax, table[table["defense"] == defense], defense, style)
        fig.tight_layout()
        name = f"plots/{defense}.png"
        atomic_write(folder / name, lambda p, f=fig: f.savefig(p, format="png", dpi=90))
        plt.close(fig)
        plots.append({"defense": defense, "file": name})
    rows = table
    columns = ["model_kind"] + SHOWN
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(rows[c])]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    page = env.get_template("index.html.j2").render(
        profile=profile, reproducibility=reproducibility, summary_legend=summary_legend(drop, alpha).replace("`", ""),
        attacks=attacks, summary=summary, claims_legend=CLAIMS_LEGEND.replace("`", ""),
        worst=worst.to_dict("records"), worst_columns=list(worst.columns), outcome=outcome,
        pretraining_legend=PRETRAINING_LEGEND.replace("`", ""), pretraining_columns=list(pretrained.columns),
        pretraining=[{c: _shown(v) for c, v in r.items()} for r in pretrained.to_dict("records")],
        claim_columns=CLAIM_COLUMNS, claims=claims_table(table, drop, methods, paper_table).to_dict("records"), plots=plots,
        filters={f: sorted(rows[f].astype(str).unique()) for f in FILTERS}, columns=columns, numeric=numeric,
        rows=[{c: _shown(r[c]) for c in columns} for _, r in rows.iterrows()])
    atomic_write(folder / "index.html", lambda p: p.write_text(page))
    for asset in ASSETS:
        atomic_write(folder / asset, lambda p, a=asset: shutil.copyfile(TEMPLATE / a, p))
    return folder / "index.html"


CHROMIUM, CHROMEDRIVER = "chromium", "chromedriver"


def browser():
    """Headless Chromium driven by selenium, from the system's packages (nothing downloaded)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise WmbenchError("selenium is not installed (pip install selenium, or the project's test extra)") from None
    binary, driver = shutil.which(CHROMIUM), shutil.which(CHROMEDRIVER)
    if not binary or not driver:
        raise WmbenchError("headless Chromium not found: install Debian's chromium and chromium-driver packages")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1600,1200"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def screenshot(index: Path, png: Path) -> Path:
    """Open the page from disk in headless Chromium and save what it shows."""
    with browser() as driver:
        driver.get(Path(index).resolve().as_uri())
        driver.save_screenshot(str(png))
    return png
