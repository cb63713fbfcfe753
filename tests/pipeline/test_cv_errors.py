"""The error column to trust: ``<label>_err_cv``, the Table 1 error model fitted on the model's own CV labels.

The formal errors (``<label>_err``) come from the Jacobian of one spectrum's fit and leave out
the model's own error: on the mock they are about half the scatter of predicted minus true
labels. ``<label>_err_cv`` is fitted at ``fit`` time and must describe that scatter.
"""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_data import LABEL_NAMES, make_data

from slamlib import SlamModel
from slamlib.metrics import CVErrorModel, clipped_rms, error_model, fit_cv_error_model, median_snr
from slamlib.pipeline.catalog_input import PreparedInput
from slamlib.pipeline.catalog_prediction import predict_rows
from slamlib.preprocess import common_wave_grid, prepare

MOCK_LABELS = ["teff", "logg", "m_h"]
GAUSSIAN_MEDIAN_ABS = 0.6745  # median |z| of a standard normal


@pytest.fixture(scope="module")
def mock_model(tmp_path_factory):
    """A model of 75 mock stars at S/N_g 120-140 (the paper's training S/N) and 60 other mock stars as targets."""
    from slamlib.mock import lasp_test_sample, synthesize

    grid = common_wave_grid(3900.0, 5800.0, 3.0)

    def mock_stars(n_star: int, seed: int):
        sample = lasp_test_sample(n_star, 0, seed)
        prepared = prepare(synthesize(sample, seed=seed), grid, n_jobs=1)
        labels = np.column_stack([sample[name] for name in MOCK_LABELS]).astype(float)
        usable = prepared.usable()
        return prepared.flux[usable], prepared.ivar[usable], labels[usable]

    flux, ivar, labels = mock_stars(78, 21)
    model = SlamModel(param_grid={"C": [10.0], "gamma": [0.1]}, cv=3, n_jobs=1).fit(
        flux[:75], ivar[:75], labels[:75], MOCK_LABELS, wave=grid)
    path = tmp_path_factory.mktemp("cv_errors") / "model.npz"
    model.save(path)
    target_flux, target_ivar, target_labels = mock_stars(64, 22)
    return {"model": SlamModel.load(path), "path": path, "train": (flux[:75], ivar[:75], labels[:75]),
            "flux": target_flux[:60], "ivar": target_ivar[:60], "labels": target_labels[:60]}


def _z_statistics(difference: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per label: median |difference / sigma| over the Gaussian's 0.6745, and rms of difference / sigma."""
    z = np.abs(difference / sigma)
    return np.median(z, axis=0) / GAUSSIAN_MEDIAN_ABS, np.sqrt(np.mean(z**2, axis=0))


def test_cv_errors_describe_the_mock_scatter_far_better_than_the_formal_errors(mock_model):
    result = mock_model["model"].predict(mock_model["flux"], mock_model["ivar"])
    trusted = result.trusted
    assert trusted.sum() >= 50
    assert np.mean(result.errors_cv_extrapolated[trusted]) < 0.2  # targets at the training S/N (a few just beyond)
    difference = (result.labels - mock_model["labels"])[trusted]
    formal_median, formal_rms = _z_statistics(difference, result.errors[trusted])
    cv_median, cv_rms = _z_statistics(difference, result.errors_cv[trusted])
    # The formal errors are too small: |delta| / sigma is well above what a Gaussian gives.
    assert np.all(formal_rms > 1.6), formal_rms
    assert np.all(formal_median > 1.15), formal_median
    # The CV errors describe the scatter: rms of delta / sigma near 1 and median |delta| / sigma near 0.67.
    assert np.all((cv_rms > 0.6) & (cv_rms < 1.5)), cv_rms
    assert np.all((cv_median > 0.4) & (cv_median < 1.25)), cv_median
    # ... and far better than the formal ones, in log distance from the ideal, for every label.
    assert np.all(np.abs(np.log(cv_rms)) < 0.5 * np.abs(np.log(formal_rms))), (cv_rms, formal_rms)


def test_the_error_model_is_fitted_on_the_cv_labels_of_the_training_stars(mock_model):
    model = mock_model["model"]
    flux, ivar, labels = mock_model["train"]
    error = model.state_.error_model
    cv = model.predict_cv(flux, ivar)  # the trusted CV fits enter
    snr = median_snr(flux, ivar)[cv.trusted]
    assert error.n_stars == cv.trusted.sum() >= 70
    np.testing.assert_array_equal(error.snr_range, [snr.min(), snr.max()])
    # The paper's training S/N (120-140) is too narrow for a and b: a constant at the clipped CV scatter.
    np.testing.assert_array_equal(error.coefficients[:, :2], 0.0)
    expected = clipped_rms((cv.labels - labels)[cv.trusted])
    np.testing.assert_allclose(error.coefficients[:, 2], expected, rtol=1e-12)


def test_the_catalogue_has_err_cv_beside_err_and_flags_snr_outside_the_error_models_range(mock_model):
    model = mock_model["model"]
    flux, ivar = mock_model["flux"][:6], mock_model["ivar"][:6]
    noisy_ivar = ivar / 16.0  # S/N four times lower than the training stars'
    extra_sigma = np.sqrt(15.0 / np.where(ivar > 0, ivar, np.inf))  # the noise that brings sigma to 4 times its value
    noisy_flux = flux + np.random.default_rng(3).normal(size=flux.shape) * extra_sigma
    catalogue = predict_rows(model, PreparedInput(np.vstack([flux, noisy_flux]), np.vstack([ivar, noisy_ivar]),
                                                  np.full(12, "", dtype=str)))
    names = catalogue.colnames
    for label in MOCK_LABELS:
        assert names.index(f"{label}_err_cv") == names.index(f"{label}_err") + 1
    clean, faint = slice(0, 6), slice(6, 12)
    assert not np.any(catalogue["err_cv_extrapolated"][clean]) and np.all(catalogue["err_cv_extrapolated"][faint])
    low = model.state_.error_model.snr_range[0]
    np.testing.assert_allclose(catalogue["teff_err_cv"][faint],
                               model.state_.error_model.coefficients[0, 2] * low / catalogue["snr"][faint])
    assert np.all(catalogue["teff_err_cv"][faint] > 3 * catalogue["teff_err_cv"][clean])


def test_the_command_writes_err_cv_and_the_error_models_range(mock_model, tmp_path):
    from astropy.table import Table

    from slamlib.pipeline.catalog_input import write_arrays_file
    from slamlib.pipeline.cli import main

    arrays = write_arrays_file(tmp_path / "targets.npz", mock_model["model"].wave_, mock_model["flux"][:5],
                               mock_model["ivar"][:5])
    output = tmp_path / "labels.fits"
    assert main(["predict", str(mock_model["path"]), "--arrays", str(arrays), "--output", str(output),
                 "--n-jobs", "1"]) == 0
    catalogue = Table.read(output)
    assert {"teff_err_cv", "logg_err_cv", "m_h_err_cv", "err_cv_extrapolated"} <= set(catalogue.colnames)
    assert np.all(np.isfinite(catalogue["logg_err_cv"])) and catalogue["teff_err_cv"].unit == "K"
    np.testing.assert_allclose([catalogue.meta["ERRSNRLO"], catalogue.meta["ERRSNRHI"]],
                               mock_model["model"].state_.error_model.snr_range)


def test_model_files_without_an_error_model_still_load_with_nan_err_cv(mock_model, tmp_path):
    from slamlib import modelfile

    arrays, header = modelfile.load_arrays(mock_model["path"])
    older = {name: value for name, value in arrays.items() if not name.startswith("error_model_")}
    path = modelfile.save_arrays(tmp_path / "older.npz", older, header["metadata"])
    model = SlamModel.load(path)
    assert model.state_.error_model is None
    result = model.predict(mock_model["flux"][:3], mock_model["ivar"][:3])
    assert np.all(np.isnan(result.errors_cv)) and not np.any(result.errors_cv_extrapolated)
    np.testing.assert_array_equal(result.labels, mock_model["model"].predict(mock_model["flux"][:3],
                                                                             mock_model["ivar"][:3]).labels)


def test_the_error_model_is_bit_reproducible_and_survives_saving(tmp_path):
    labels, flux, ivar = make_data(n_star=40, n_pix=20, rng=np.random.default_rng(4))
    fits = [SlamModel(param_grid={"C": [10.0], "gamma": [0.1]}, cv=2, n_jobs=1).fit(flux, ivar, labels, LABEL_NAMES)
            for _ in range(2)]
    first, second = (fit.state_.error_model for fit in fits)
    assert first.coefficients.tobytes() == second.coefficients.tobytes()
    fits[0].save(tmp_path / "model.npz")
    loaded = SlamModel.load(tmp_path / "model.npz").state_.error_model
    assert loaded.coefficients.tobytes() == first.coefficients.tobytes()
    assert loaded.snr_range.tobytes() == first.snr_range.tobytes() and loaded.n_stars == first.n_stars


def test_cv_error_model_evaluates_table_1_inside_its_range_and_is_conservative_outside():
    model = CVErrorModel(np.array([[200.0, 0.05, 40.0], [0.6, 0.06, 0.07]]), np.array([20.0, 100.0]), 500)
    snr = np.array([20.0, 50.0, 100.0, 200.0, 10.0, np.nan, 0.0])
    errors = model.evaluate(snr)
    np.testing.assert_allclose(errors[:3, 0], error_model(snr[:3], 200.0, 0.05, 40.0))
    np.testing.assert_allclose(errors[3], errors[2])  # held at the top of the range
    np.testing.assert_allclose(errors[4], 2.0 * errors[0])  # grows as 1/(S/N) below it
    assert np.all(np.isnan(errors[5:]))
    np.testing.assert_array_equal(model.outside(snr), [False, False, False, True, True, False, False])


def test_fit_cv_error_model_recovers_the_exponential_over_a_wide_snr_range():
    rng = np.random.default_rng(8)
    snr = rng.uniform(10.0, 150.0, 4000)
    sigma = error_model(snr, 0.5, 0.04, 0.05)
    labels = rng.normal(size=(4000, 1))
    cv_labels = labels + rng.normal(size=(4000, 1)) * sigma[:, None]
    fitted = fit_cv_error_model(cv_labels, labels, snr)
    np.testing.assert_allclose(fitted.evaluate(np.array([15.0, 40.0, 140.0]))[:, 0],
                               error_model(np.array([15.0, 40.0, 140.0]), 0.5, 0.04, 0.05), rtol=0.12)
    with pytest.raises(ValueError, match="same stars"):
        fit_cv_error_model(cv_labels, labels, snr[:10])
