"""The scorecard: built from recorded results only; a missing record or table is a flagged row, never a crash."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.table import Table

from slampaper import scorecard
from slampaper.results import Recorder


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SLAMLIB_CACHE", str(tmp_path_factory.getbasetemp() / "slamlib-cache"))


def _rows(table, **match):
    selected = [row for row in table if all(str(row[key]) == value for key, value in match.items())]
    assert selected, f"no row with {match}"
    return selected


def _row(table, quantity):
    (row,) = _rows(table, quantity=quantity)
    return row


def _scatter_table(labels, scatter_low, scatter_high):
    snr = np.array([12.5, 30.0, 50.0, 70.0, 90.0, 110.0])
    table = Table({"snr_low": snr - 5, "snr_high": snr + 5, "snr_center": snr})
    for label, low, high in zip(labels, scatter_low, scatter_high):
        table[f"{label}_bias"] = np.zeros(snr.size)
        table[f"{label}_scatter"] = np.geomspace(low, high, snr.size)
        table[f"{label}_err_median"] = 0.5 * np.geomspace(low, high, snr.size)
    return table


def _record_lasp_test(directory, data_source="mock", *, skip=()):
    recorder = Recorder("lasp_test", parameters={"profile": "smoke"}, data_source=data_source, output_dir=directory)
    values = {
        "cv_scatter.teff.high_snr": (60.0, "K", 50.0), "cv_scatter.logg.high_snr": (0.1, "dex", 0.09),
        "cv_scatter.feh.high_snr": (0.08, "dex", 0.07), "cv_bias.teff.high_snr": (5.0, "K", None),
        "cv_bias.logg.high_snr": (0.05, "dex", None), "cv_bias.feh.high_snr": (-0.01, "dex", None),
        "formal_error.teff.high_snr": (30.0, "K", None), "formal_error.logg.high_snr": (0.2, "dex", None),
        "formal_error.feh.high_snr": (0.02, "dex", None), "fraction_pixels_slam_better": (0.8, "", None),
        "median_cv_mse.slam": (0.1, "", None), "median_cv_mse.cannon": (0.2, "", None),
    }
    for key, (value, unit, paper) in values.items():
        if key not in skip:
            recorder.record(key, value, unit=unit, paper=paper)
    recorder.save_table(_scatter_table(["teff", "logg", "feh"], [400.0, 0.5, 0.4], [60.0, 0.1, 0.08]), "scatter_by_snr",
                        caption="per S/N bin")
    return recorder


def test_empty_directory_gives_every_row_missing_with_the_paper_values(tmp_path):
    table = scorecard.build_scorecard(tmp_path)
    assert table.colnames == scorecard.SCORECARD_COLUMNS
    assert len(table) > 40 and set(table["status"]) == {"missing"}
    assert all(value is None for value in table["holds"])
    assert _row(table, "CV scatter of Teff at S/N_g > 100")["paper"] == 50.0
    assert _row(table, "CV scatter of [N/M] at S/N_g ≈ 100")["paper"] == pytest.approx(0.106)
    assert "chapter not run" in _row(table, "CV scatter of Teff at S/N_g > 100")["note"]
    assert scorecard.scorecard_summary(table)["claims_judged"] == 0
    assert "missing" in scorecard.scorecard_html(table)
    assert len(scorecard.build_scorecard(tmp_path / "does-not-exist")) == len(table)


def test_rows_from_records_and_tables_with_ratio_verdict_and_data_source(tmp_path):
    _record_lasp_test(tmp_path, skip=("cv_bias.feh.high_snr",))
    cod = Recorder("cod", parameters={"profile": "smoke"}, data_source="mock", output_dir=tmp_path)
    cod.record("cod_share.teff.balmer", 0.7)
    cod.record("cod_share.logg.mgb_wings", 0.3)
    cod.record("cod_share.teff.mgb_wings", 0.4)
    cod.record("cod_sum_max_deviation", 1e-16)
    table = scorecard.build_scorecard(tmp_path)

    teff = _row(table, "CV scatter of Teff at S/N_g > 100")
    assert teff["status"] == "ok" and teff["ours"] == 60.0 and teff["paper"] == 50.0 and teff["unit"] == "K"
    # a quoted number has a verdict too: 60 K is within a factor 1.5 of 50 K
    assert teff["ratio"] == pytest.approx(1.2) and teff["holds"] is True and teff["criterion"] == "within a factor 1.5"
    assert teff["data_source"] == "mock" and teff["mock"]
    assert _row(table, "fraction of pixels where SLAM's CV MSE < The Cannon's")["holds"] is True
    assert _row(table, "median CV MSE per pixel, SLAM / The Cannon")["ours"] == pytest.approx(0.5)
    # formal errors below the scatter: Teff 30/60 holds, log g 0.2/0.1 does not
    assert _row(table, "median formal error / CV scatter of Teff, S/N_g > 100")["holds"] is True
    assert _row(table, "median formal error / CV scatter of log g, S/N_g > 100")["holds"] is False
    # biases at most a quarter of the scatters: log g 0.05/0.1 = 0.5 fails; the [Fe/H] bias was never recorded
    assert _row(table, "|CV bias| / CV scatter of log g, S/N_g > 100")["holds"] is False
    assert _row(table, "|CV bias| / CV scatter of Teff, S/N_g > 100")["holds"] is True
    missing = _row(table, "|CV bias| / CV scatter of [Fe/H], S/N_g > 100")
    assert missing["status"] == "missing" and missing["holds"] is None and "cv_bias.feh.high_snr" in missing["note"]
    # scatter against S/N from the saved table
    falls = _rows(table, quantity="CV scatter of Teff: lowest / highest S/N bin", section="§3 (Fig. 4)")[0]
    assert falls["holds"] is True and falls["ours"] == pytest.approx(400.0 / 60.0)
    # Section 6: Teff dominates the Balmer lines; log g (0.3) does not beat Teff (0.4) on the Mg b wings
    assert _row(table, "Teff's share of COD_full on the Balmer lines")["holds"] is True
    assert _row(table, "log g's share of COD_full on the Mg b wings")["holds"] is False
    assert _row(table, "max |Σ_l COD_l − COD_full|")["holds"] is True
    # chapters that did not run are flagged, not fatal
    assert _row(table, "training K giants whose SLAM labels stay in the polygon")["status"] == "missing"
    assert _rows(table, claim="CV scatter falls with S/N", section="§4 (Fig. 7)")[0]["status"] == "missing"
    summary = scorecard.scorecard_summary(table)
    assert summary["claims_judged"] >= 12 and 0 < summary["claims_holding"] < summary["claims_judged"]
    written = scorecard.scorecard_for_writing(table)
    written.write(tmp_path / "scorecard.ecsv", format="ascii.ecsv")
    assert set(Table.read(tmp_path / "scorecard.ecsv")["holds"].filled("")) <= {"yes", "no", ""}


def test_unusable_records_and_tables_are_flagged_not_fatal(tmp_path):
    recorder = _record_lasp_test(tmp_path)
    recorder.record("cv_scatter.teff.high_snr", float("nan"), unit="K", paper=50.0)  # stored as null
    (tmp_path / "tables" / "lasp_test-scatter_by_snr.ecsv").write_text("not a table")
    (tmp_path / "apogee_kgiants.json").write_text("{ broken")
    table = scorecard.build_scorecard(tmp_path)
    teff = _row(table, "CV scatter of Teff at S/N_g > 100")
    assert teff["status"] == "missing" and "not a finite number" in teff["note"] and teff["paper"] == 50.0
    assert _rows(table, quantity="CV scatter of Teff: lowest / highest S/N bin")[0]["status"] == "missing"
    kgiants = _rows(table, section="abstract, §4")
    assert all(row["status"] == "missing" and "unreadable" in row["note"] for row in kgiants)
    assert _row(table, "CV scatter of log g at S/N_g > 100")["status"] == "ok"


def test_other_paper_values_funnel_and_real_data_rows(tmp_path):
    mock_dir, real_dir = tmp_path / "mock", tmp_path / "real"
    kgiants = Recorder("apogee_kgiants", parameters={"profile": "smoke"}, data_source="mock", output_dir=mock_dir)
    funnel = Table({"step": ["input", "ten criteria", "bad pixels", "clipping"], "n_kept": [1000, 200, 198, 190],
                    "paper": [86552, 17703, 17623, 17175]})
    kgiants.save_table(funnel, "funnel", caption="funnel")
    for step, kept, paper in funnel:
        kgiants.record(f"funnel.{step}", int(kept), paper=int(paper))
    kgiants.record("polygon_completeness", 0.95, paper=0.97)
    kgiants.record("new_quoted_number", 3.0, paper=4.0, description="a number a chapter added later")
    _record_lasp_test(real_dir, data_source="lamost")
    table = scorecard.build_scorecard(mock_dir, extra_results_dirs=[real_dir])
    counts = _rows(table, claim="number quoted by the paper", section="§4.2")
    assert [row["paper"] for row in counts[:4]] == [86552, 17703, 17623, 17175]
    fractions = _rows(table, claim="fractions kept per funnel step, from the paper's counts")
    assert len(fractions) == 3 and fractions[0]["ours"] == pytest.approx(0.2)
    assert fractions[0]["paper"] == pytest.approx(17703 / 86552)
    assert _row(table, "training K giants whose SLAM labels stay in the polygon")["ratio"] == pytest.approx(0.95 / 0.97)
    extra = _row(table, "a number a chapter added later")
    assert extra["section"] == "§4" and extra["ratio"] == pytest.approx(0.75)
    real = _rows(table, quantity="CV scatter of Teff at S/N_g > 100", data_source="lamost")[0]
    assert real["status"] == "ok" and not real["mock"] and real["ours"] == 60.0
    mock_row = _rows(table, quantity="CV scatter of Teff at S/N_g > 100", data_source="")[0]
    assert mock_row["status"] == "missing" and math.isnan(mock_row["ours"])
    assert all(row["status"] == "ok" for row in table if row["data_source"] == "lamost")
