"""The static site, opened from disk in a real headless browser (Debian's chromium + chromium-driver)."""
import math
import shutil

import pandas as pd
import pytest

from bench.protocols import WmbenchError
from bench.publish import merge_runs
from bench.report import summary_matrix, write_latex
from bench.scoring import COLUMNS
from bench.site import outcome, render_site

DEFENSES, ATTACKS = ("null_embedding", "vlpmarker"), ("none", "pruning", "extraction:8000>fine_tuning")


METHODS = {"defenses": {d: {"model_kind": "", "control": False, "claims": []} for d in DEFENSES}, "attacks": {}}


def synthetic_table() -> pd.DataFrame:
    """A leaderboard of made-up numbers with every column (the page's behaviour, not its science, is tested)."""
    rows = []
    for d in DEFENSES:
        for a in ATTACKS:
            strengths = {"none": ["-"], "pruning": ["0.2", "0.5", "0.9"], "extraction:8000>fine_tuning": ["all_layers"]}[a]
            for i, s in enumerate(strengths):
                row = {c: math.nan for c in COLUMNS}
                outside = d == "vlpmarker" and a == "pruning"
                row.update(defense=d, model_kind={"null_embedding": "classifier", "vlpmarker": "vlp"}[d], attack=a,
                           strength=s, strength_rank=i, n_seeds=0 if outside else 10, seeds_detected=10,
                           seeds_removed=0 if i < 2 else 10,
                           status="n/a: outside the threat model" if outside else "ok",
                           attack_succeeded="" if outside else ("yes" if i == 2 else "no: mark kept"),
                           utility_attacked=0.9 - 0.1 * i + 0.01 * len(rows), verification_rate=1.0 - 0.4 * i,
                           tpr_at_alpha=1.0 - 0.4 * i, removal_rate=0.0 if i < 2 else 1.0,
                           utility_clean=0.95, utility_marked=0.94, false_positive_rate=0.0,
                           innocent_fpr_at_alpha=0.01, n_innocent_models=20, n_innocent_pairs=200,
                           n_attacked_clean=3, identification_rate=1.0)
                rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def test_summary_cells_take_their_outcome_class():
    assert [outcome(t) for t in ("removed (x)", "kept (x)", "utility lost (x)", "control (x)", "n/a", "",
                                 "verified (x)", "not verified (x)", "not verified before (x)", "undecided (3/10)",
                                 "undecided before (4/10)")] == \
        ["removed", "kept", "utility-lost", "control", "na", "empty", "kept", "removed", "na", "undecided",
         "undecided"]


def test_site_is_self_contained(tmp_path):
    index = render_site(synthetic_table(), tmp_path / "site", profile="test", drop=0.05, alpha=0.01, reproducibility="r",
                        methods=METHODS)
    html = index.read_text()
    assert "http://" not in html and "https://" not in html  # nothing from the network
    assert {p.name for p in (tmp_path / "site").iterdir()} >= {"index.html", "wmbench.js", "style.css", "plots"}
    assert len(list((tmp_path / "site" / "plots").glob("*.png"))) == len(DEFENSES)


def test_the_pretraining_table_appears_only_where_a_kind_has_a_low_label_utility(tmp_path):
    plain = render_site(synthetic_table(), tmp_path / "plain", profile="test", drop=0.05, alpha=0.01,
                        reproducibility="r", methods=METHODS).read_text()
    assert 'id="pretraining"' not in plain
    table = synthetic_table()
    none = (table["defense"] == "null_embedding") & (table["attack"] == "none")
    table.loc[none, ["utility_low_label_clean", "utility_low_label_marked", "utility_low_label_untrained"]] = \
        [0.881, 0.872, 0.863]
    table["worth_protecting"] = table["worth_protecting"].astype(object)
    table.loc[none, "worth_protecting"] = "undecided (3/10)"
    html = render_site(table, tmp_path / "low", profile="test", drop=0.05, alpha=0.01, reproducibility="r",
                       methods=METHODS).read_text()
    section = html[html.index('<table id="pretraining">'):]
    section = section[:section.index("</table>")]
    assert [cell in section for cell in ("null_embedding", "0.881", "0.872", "0.863", "undecided (3/10)")] == [True] * 5
    assert "vlpmarker" not in section


@pytest.fixture(scope="module")
def driver():
    pytest.importorskip("selenium", reason="selenium is the test extra's browser driver")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium chromium-driver; .ci/run does)")
    from bench.site import browser

    with browser() as d:
        yield d


def _column(driver, name: str) -> list[str]:
    return [td.text for td in driver.find_elements("css selector", f"#rows tbody tr:not([hidden]) td[data-column='{name}']")]


def test_the_page_works_in_a_real_browser(driver, tmp_path):
    from selenium.webdriver.support.ui import Select

    table = synthetic_table()
    index = render_site(table, tmp_path / "run" / "site", profile="test", drop=0.05, alpha=0.01, reproducibility="r",
                        methods=METHODS)
    driver.get(index.resolve().as_uri())
    # the summary matrix: one cell per (defense, attack)
    cells = driver.find_elements("css selector", "#summary td[data-attack]")
    pairs = {(c.get_attribute("data-defense"), c.get_attribute("data-attack")) for c in cells}
    assert len(cells) == len(pairs) == len(DEFENSES) * len(ATTACKS)
    assert len(summary_matrix(table)) == len(DEFENSES)
    assert driver.find_elements("css selector", "#summary td.outcome-na")  # the pair outside the threat model
    # sorting by a column reorders the rows (ascending, then descending on a second click)
    before = _column(driver, "utility_attacked")
    header = driver.find_element("css selector", "#rows th[data-column='utility_attacked']")
    header.click()
    ascending = _column(driver, "utility_attacked")
    assert ascending == sorted(ascending, key=float) and ascending != before
    header.click()
    assert _column(driver, "utility_attacked") == ascending[::-1]
    # filtering by a defense leaves only its rows
    Select(driver.find_element("id", "filter-defense")).select_by_visible_text("vlpmarker")
    shown = _column(driver, "defense")
    assert shown and set(shown) == {"vlpmarker"} and len(shown) == (table.defense == "vlpmarker").sum()
    Select(driver.find_element("id", "filter-model_kind")).select_by_visible_text("vlp")
    assert len(_column(driver, "defense")) == len(shown)
    # no console errors, and a screenshot under the run folder
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    png = tmp_path / "run" / "site" / "screenshot.png"
    driver.save_screenshot(str(png))
    assert png.stat().st_size > 10_000


def _run_folder(path, profile_description: dict, cells: list[tuple[str, str]]):
    from bench.results import CellId, CellResult, ResultsDB

    db = ResultsDB(path, "default")
    db.set_meta("profile:default", profile_description)
    db.set_meta("config", {"defenses": sorted({d for d, _ in cells}), "attacks": sorted({a for _, a in cells}),
                           "alpha": 0.01, "max_utility_drop": 0.05})
    for defense, attack in cells:
        db.put_cell(CellResult(CellId(defense, attack, "1", 0), "failed: synthetic"))
    return path


def test_merge_combines_runs_and_refuses_other_profiles(tmp_path):
    a = _run_folder(tmp_path / "a", {"clip_epochs": 40}, [("none", "pruning")])
    b = _run_folder(tmp_path / "b", {"clip_epochs": 40}, [("none", "blur_plugin")])
    merged = merge_runs([a, b], tmp_path / "merged")
    assert set(merged.attack) == {"pruning", "blur_plugin"}
    other = _run_folder(tmp_path / "c", {"clip_epochs": 2}, [("none", "pruning")])
    with pytest.raises(WmbenchError, match="different 'default' profiles"):
        merge_runs([a, other], tmp_path / "refused")


def test_latex_tables_use_booktabs(tmp_path):
    folder = _run_folder(tmp_path / "run", {"clip_epochs": 40}, [("none", "pruning")])
    for path in write_latex(folder):
        text = path.read_text()
        assert "\\toprule" in text and "\\midrule" in text and "\\bottomrule" in text


@pytest.mark.parametrize("folder, profile", [("results", "default"), ("results/standard", "standard")])
def test_a_published_leaderboard_is_rebuilt_from_its_database_alone(folder, profile, tmp_path, monkeypatch):
    """Re-rendering a published database gives its files byte for byte, also after a defense's claims and an
    attack's strengths change in the source: what rendering needs of the methods is stored in the database."""
    from pathlib import Path

    from attacks.pruning import Pruning
    from bench.report import write_leaderboard
    from defenses.null_embedding import NullEmbedding

    published = Path(__file__).resolve().parents[1] / folder
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copyfile(published / "results.sqlite", copy / "results.sqlite")
    write_leaderboard(copy, profile)
    first = {name: (copy / name).read_bytes() for name in ("leaderboard.csv", "leaderboard.md", "claims.csv")}
    monkeypatch.setattr(NullEmbedding, "claims", ())
    monkeypatch.setattr(Pruning, "strengths", tuple(reversed(Pruning.strengths)))
    write_leaderboard(copy, profile)
    assert {name: (copy / name).read_bytes() for name in first} == first
    assert all((published / name).read_bytes() == data for name, data in first.items()), "publish again"
