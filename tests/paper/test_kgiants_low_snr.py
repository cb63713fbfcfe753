"""Figure 7 below S/N_g 40 (our reading of Section 4.3): the low-S/N common stars are a test set for the
final model. Who they are, what the per-bin table holds, and whether the C/N claim can be judged from it."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from slamlib.metrics import scatter_by_snr
from slampaper import datasets, kgiants, plotting
from slampaper.datasets import SurveySample
from slampaper.paper import load_claims
from slampaper.results import Recorder
from slampaper.scorecard import build_scorecard

N_PIX = 20


def _star(obsid: int, **changes) -> dict:
    """A common star that passes every one of the ten criteria but S/N_g (30), with few bad pixels."""
    star = {"obsid": obsid, "snr": 150.0, "snrg": 30.0, "aspcapflag": 0, "teff": 4700.0, "logg": 2.5, "m_h": -0.2,
            "alpha_m": 0.05, "c_m": 0.0, "n_m": 0.2, "teff_lamost": 4750.0, "n_bad": 3}
    star.update(changes)
    return star


def _sample(stars: list[dict]) -> SurveySample:
    labels = Table(rows=[[star[name] for name in stars[0]] for star in stars], names=list(stars[0]))
    n_star = len(stars)
    rng = np.random.default_rng(1)
    return SurveySample(labels=labels, wave=np.linspace(4000.0, 5000.0, N_PIX), flux=1.0 + 0.01 * rng.standard_normal((n_star, N_PIX)),
                        ivar=np.full((n_star, N_PIX), 1e4), n_bad=np.asarray(labels["n_bad"], dtype=int),
                        data_source="synthetic", cache_key="synthetic-low-snr")


def test_the_test_set_is_the_stars_failing_only_the_snr_cut():
    stars = [
        _star(1),                              # fails only S/N_g > 40: a test star
        _star(2, snrg=60.0),                   # passes S/N_g: a training candidate, not a test star
        _star(3, aspcapflag=4),                # fails ASPCAPFLAG = 0 as well
        _star(4, teff=6000.0),                 # fails the Teff range as well
        _star(5, snrg=np.nan),                 # no S/N_g: cannot be binned
        _star(6, n_bad=80),                    # too many bad pixels
        _star(7, snrg=40.0),                   # S/N_g = 40 fails "S/N_g > 40": a test star
        _star(8, snrg=10.0, teff_lamost=3800.0),   # |Teff_APOGEE - Teff_LAMOST| = 900 K
        _star(9, snrg=12.0, c_m=1.5),          # [C/Fe] out of range
        _star(10, snr=80.0, snrg=25.0),        # APOGEE S/N too low
        _star(11, snrg=6.0),                   # a test star at the lowest S/N
    ]
    selection = kgiants.select_low_snr_test_set(_sample(stars))
    assert sorted(np.asarray(selection.test.labels["obsid"]).tolist()) == [1, 7, 11]
    assert selection.in_test.tolist() == [True, False, False, False, False, False, True, False, False, False, True]
    funnel = dict(zip(selection.funnel["step"], selection.funnel["n_kept"]))
    assert funnel["input"] == 11 and funnel["at most 50 bad pixels"] == 3
    assert "lamost_snrg" not in funnel and funnel["not_lamost_snrg"] == 4   # stars 1, 6, 7, 11 (star 5 has no S/N_g)


def test_a_lower_snr_floor_moves_stars_into_training_and_out_of_the_test():
    stars = [_star(1, snrg=30.0), _star(2, snrg=15.0)]
    selection = kgiants.select_low_snr_test_set(_sample(stars), min_lamost_snrg=20.0)
    assert np.asarray(selection.test.labels["obsid"]).tolist() == [2]


@pytest.fixture(scope="module")
def mock_common() -> SurveySample:
    return datasets.load_apogee_common("mock", n_star=300, seed=0, n_jobs=1).restrict_wavelengths(3900.0, 5800.0)


def _passes_every_cut_but_snr(labels: Table, n_bad: np.ndarray) -> np.ndarray:
    """The paper's criteria 1 and 3-10 and the bad-pixel cut, written out here (the mock has no [Fe/H], so [X/Fe] = [X/M])."""
    value = {name: np.asarray(labels[name], dtype=float) for name in
             ("snr", "teff", "logg", "m_h", "alpha_m", "c_m", "n_m", "teff_lamost")}
    return ((value["snr"] > 100) & (np.asarray(labels["aspcapflag"]) == 0) & (value["teff"] > 3000) & (value["teff"] < 5500)
            & (value["logg"] > -1) & (value["logg"] < 5) & (value["m_h"] > -4) & (value["m_h"] < 2)
            & (value["alpha_m"] > -1) & (value["alpha_m"] < 1) & (value["c_m"] > -0.4) & (value["c_m"] < 1)
            & (value["n_m"] > -0.5) & (value["n_m"] < 1) & (np.abs(value["teff"] - value["teff_lamost"]) < 800)
            & (np.asarray(n_bad) <= 50))


def test_on_the_mock_the_test_set_is_exactly_the_low_snr_stars_passing_every_other_cut(mock_common):
    selection = kgiants.select_low_snr_test_set(mock_common)
    snrg = np.asarray(mock_common.labels["snrg"], dtype=float)
    expected = _passes_every_cut_but_snr(mock_common.labels, mock_common.n_bad) & (snrg <= 40.0)
    assert expected.sum() > 20   # the mock has low-S/N common stars to test on
    np.testing.assert_array_equal(selection.in_test, expected)
    assert np.all(np.asarray(selection.test.labels["snrg"], dtype=float) <= 40.0)
    # and the same cuts with S/N_g > 40 are the training candidates (the ten criteria and the bad-pixel cut)
    candidates = _passes_every_cut_but_snr(mock_common.labels, mock_common.n_bad) & (snrg > 40.0)
    assert not np.any(candidates & selection.in_test)


@pytest.mark.slow
def test_the_figure7_table_has_the_test_stars_below_40_and_the_cv_above(mock_common):
    training = kgiants.select_training_set(mock_common, clip_grid={"C": [10.0], "gamma": [0.1]}, clip_folds=3,
                                           random_state=0, n_jobs=1, use_cache=False).training
    test = kgiants.select_low_snr_test_set(mock_common).test
    test_obsid, training_obsid = np.asarray(test.labels["obsid"]), np.asarray(training.labels["obsid"])
    assert len(test) > 20 and not np.isin(test_obsid, training_obsid).any()
    validation = kgiants.train_and_cross_validate(training, param_grid={"C": [10.0], "gamma": [0.1]}, cv=3, random_state=0,
                                                  n_jobs=1, use_cache=False, low_snr_test=test)
    table, cannon_table = validation.scatter_table, validation.cannon_scatter_table
    assert list(table["snr_low"]) == kgiants.SNR_BINS[:-1]
    test_snr, training_snr = np.asarray(test.labels["snrg"], float), np.asarray(training.labels["snrg"], float)
    for row, cannon_row in zip(table, cannon_table):
        low, high = float(row["snr_low"]), float(row["snr_high"])
        if high <= 40.0:
            assert row["sample"] == cannon_row["sample"] == kgiants.TEST_SAMPLE
            assert row["n_star"] == np.sum((test_snr >= low) & (test_snr < high)) > 0
            for name in datasets.APOGEE_LABELS:
                assert np.isfinite(row[f"{name}_scatter"]) and np.isfinite(row[f"{name}_err_median"])
                assert np.isfinite(cannon_row[f"{name}_scatter"])
        else:
            assert row["sample"] == kgiants.CV_SAMPLE
            below_high = training_snr <= high if high == kgiants.SNR_BINS[-1] else training_snr < high   # the last bin is closed
            assert row["n_star"] == np.sum((training_snr >= low) & below_high)
    # the (20, 40) scatter is that of the final model's labels of the test stars in the bin
    prediction = validation.low_snr.prediction.labels
    in_bin = (test_snr >= 20.0) & (test_snr < 40.0) & np.all(np.isfinite(prediction), axis=1)
    index = datasets.APOGEE_LABELS.index("c_m")
    residual = prediction[in_bin, index] - np.asarray(test.labels["c_m"], float)[in_bin]
    assert table[1]["c_m_scatter"] == pytest.approx(np.std(residual))
    # Table 1 is fitted on the test bins too
    assert set(validation.error_models["n_bins_test"]) == {int(np.sum((table["n_star"] >= 5) & (table["snr_high"] <= 40)))}
    assert validation.error_models["n_bins_test"][0] >= 1


def _bin_table(snr: list[float], residual: list[float]) -> Table:
    reference = np.zeros((len(snr), 1))
    return scatter_by_snr(np.asarray(residual)[:, None], reference, np.asarray(snr), [5.0, 20.0, 40.0, 60.0, 80.0],
                          label_names=["c_m"])


def test_figure7_table_takes_the_test_stars_below_the_floor_and_the_cv_above():
    cv = _bin_table([50.0, 55.0, 70.0, 75.0], [0.1, -0.1, 0.2, -0.2])
    test = _bin_table([10.0, 12.0, 30.0, 35.0, 50.0], [0.3, -0.3, 0.4, -0.4, 5.0])   # the S/N 50 test star is ignored
    table = kgiants.figure7_table(cv, test, snr_floor=40.0)
    assert list(table["sample"]) == [kgiants.TEST_SAMPLE, kgiants.TEST_SAMPLE, kgiants.CV_SAMPLE, kgiants.CV_SAMPLE]
    np.testing.assert_allclose(table["c_m_scatter"], [0.3, 0.4, 0.1, 0.2])
    assert list(table["n_star"]) == [2, 2, 2, 2]
    without_test = kgiants.figure7_table(cv, None, snr_floor=40.0)
    assert list(without_test["sample"]) == [kgiants.CV_SAMPLE] * 4 and list(without_test["n_star"]) == [0, 0, 2, 2]


def test_figure7_table_refuses_a_bin_across_the_floor_and_different_bins():
    cv = _bin_table([50.0], [0.1])
    with pytest.raises(ValueError, match="straddle"):
        kgiants.figure7_table(cv, _bin_table([10.0], [0.1]), snr_floor=30.0)
    other_bins = scatter_by_snr(np.zeros((1, 1)), np.zeros((1, 1)), np.array([10.0]), [5.0, 40.0, 80.0], label_names=["c_m"])
    with pytest.raises(ValueError, match="same bins"):
        kgiants.figure7_table(cv, other_bins, snr_floor=40.0)


def test_bin_keys_name_the_bin_centre():
    assert [kgiants.snr_bin_key(5.0, 20.0), kgiants.snr_bin_key(20.0, 40.0), kgiants.snr_bin_key(40.0, 60.0)] == [
        "snr12.5", "snr30", "snr50"]
    with pytest.raises(ValueError, match="low < high"):
        kgiants.snr_bin_key(40.0, 20.0)


def test_predicting_an_empty_or_overlapping_test_set_is_refused():
    sample = _sample([_star(1), _star(2, snrg=60.0)])
    with pytest.raises(ValueError, match="empty"):
        kgiants.predict_low_snr_test_set(sample.subset(np.zeros(2, bool), "none"), model=None, training=sample)
    with pytest.raises(ValueError, match="training stars"):
        kgiants.predict_low_snr_test_set(sample, model=None, training=sample.subset(np.array([False, True]), "one"))


def test_the_carbon_nitrogen_claim_is_judged_from_the_low_snr_records(tmp_path):
    rows = [row for row in load_claims() if row["claim"].startswith("[C/M] and [N/M] are usable only at S/N_g > 40")]
    assert len(rows) == 4
    recorder = Recorder("apogee_kgiants", parameters={"profile": "test"}, data_source="mock", output_dir=tmp_path)
    # [C/M]: 1.8x the S/N_g ~ 100 scatter in (20, 40), 1.2x in (40, 60): usable only above 40.
    # [N/M]: 1.2x in (20, 40): still usable below 40, so the claim fails for it; 1.6x in (40, 60) fails too.
    for key, value in {"cv_scatter.c_m.snr30": 0.09, "cv_scatter.c_m.snr50": 0.06, "cv_scatter.c_m.snr100": 0.05,
                       "cv_scatter.n_m.snr30": 0.12, "cv_scatter.n_m.snr50": 0.16, "cv_scatter.n_m.snr100": 0.10}.items():
        recorder.record(key, value, unit="dex")
    scorecard = build_scorecard(tmp_path)
    verdicts = {str(row["source"]): (row["holds"], float(row["ours"])) for row in scorecard
                if str(row["claim"]).startswith("[C/M] and [N/M] are usable only")}
    assert verdicts == {
        "apogee_kgiants.json: cv_scatter.c_m.snr30, cv_scatter.c_m.snr100": (True, pytest.approx(1.8)),
        "apogee_kgiants.json: cv_scatter.n_m.snr30, cv_scatter.n_m.snr100": (False, pytest.approx(1.2)),
        "apogee_kgiants.json: cv_scatter.c_m.snr50, cv_scatter.c_m.snr100": (True, pytest.approx(1.2)),
        "apogee_kgiants.json: cv_scatter.n_m.snr50, cv_scatter.n_m.snr100": (False, pytest.approx(1.6)),
    }


def test_figure7_shades_the_test_bins_and_names_both_samples():
    import matplotlib

    matplotlib.use("Agg")
    names = list(datasets.APOGEE_LABELS)
    snr = np.array([10.0, 30.0, 50.0, 70.0])
    residual = np.tile([[0.3], [0.2], [0.1], [0.1]], (1, len(names)))
    cv = scatter_by_snr(residual, np.zeros_like(residual), snr, [5.0, 20.0, 40.0, 60.0, 80.0], label_names=names,
                        errors=np.full_like(residual, 0.01))
    table = kgiants.figure7_table(cv, cv, snr_floor=40.0)
    error_models = Table({"label": names, "a": [0.5] * 6, "b": [0.05] * 6, "c": [0.1] * 6})
    figure = plotting.plot_cv_scatter_vs_snr(table, table, names, error_models, {}, source_label="synthetic")
    axis = figure.axes[0]
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert kgiants.TEST_SAMPLE in legend and any(kgiants.CV_SAMPLE in text for text in legend)
    assert axis.get_xscale() == "log"
    shaded = [patch for patch in axis.patches if patch.get_label() == kgiants.TEST_SAMPLE]
    assert len(shaded) == 1
    extent = shaded[0].get_bbox()   # x in data units (axvspan)
    assert (extent.x0, extent.x1) == (5.0, 40.0)
