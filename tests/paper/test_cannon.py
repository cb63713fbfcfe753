"""Tests of slampaper.cannon on tiny synthetic data made here (none of it is real).

The data follow a known quadratic-in-labels model, so the fit must recover the
coefficients, the injected intrinsic scatter and held-out labels.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from slampaper.cannon import (
    CannonModel,
    cross_validate,
    fit_pixel_models,
    fit_spectrum_labels,
    quadratic_design_jacobian,
    quadratic_design_matrix,
    quadratic_term_names,
)

LABEL_NAMES = ["teff", "logg", "feh"]


def make_labels(n_star: int, rng: np.random.Generator) -> np.ndarray:
    """Teff, logg, [Fe/H] of K-giant-like stars, shape (n_star, 3)."""
    return np.column_stack(
        [rng.uniform(4000.0, 5200.0, n_star), rng.uniform(1.0, 3.5, n_star), rng.uniform(-1.5, 0.4, n_star)]
    )


def scale_like_the_model(labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The documented pivot of CannonModel: training mean and population std (ddof=0)."""
    return (labels - reference.mean(axis=0)) / reference.std(axis=0)


def make_coefficients(n_pix: int, rng: np.random.Generator) -> np.ndarray:
    """True coefficients, shape (n_pix, 10): continuum-like constant and label terms of a few per cent."""
    coefficients = rng.normal(0.0, 0.04, (n_pix, 10))
    coefficients[:, 0] = 1.0 - np.abs(rng.normal(0.0, 0.2, n_pix))
    coefficients[:, 4:] *= 0.5  # quadratic terms weaker than linear ones
    return coefficients


def make_spectra(labels_scaled, coefficients, noise, scatter, rng):
    """Flux = theta . a(x) + Gaussian noise of variance noise**2 + scatter_j**2; ivar = 1 / noise**2."""
    clean = quadratic_design_matrix(labels_scaled) @ coefficients.T
    total_sigma = np.sqrt(noise**2 + np.asarray(scatter) ** 2)
    flux = clean + rng.normal(size=clean.shape) * total_sigma
    ivar = np.full(flux.shape, 1.0 / noise**2)
    return flux, ivar


@pytest.fixture(scope="module")
def trained():
    """A model trained on 600 stars x 40 pixels, noise 0.01, intrinsic scatter 0.02 at pixels 0-9."""
    rng = np.random.default_rng(20200101)
    labels = make_labels(600, rng)
    coefficients = make_coefficients(40, rng)
    scatter = np.zeros(40)
    scatter[:10] = 0.02
    flux, ivar = make_spectra(scale_like_the_model(labels, labels), coefficients, 0.01, scatter, rng)
    model = CannonModel().fit(flux, ivar, labels, label_names=LABEL_NAMES)
    return dict(model=model, labels=labels, coefficients=coefficients, scatter=scatter, rng=rng)


# ---------------------------------------------------------------- design vector


def test_design_matrix_terms_and_names():
    x = np.array([[2.0, 3.0, 5.0]])
    np.testing.assert_array_equal(
        quadratic_design_matrix(x)[0], [1, 2, 3, 5, 4, 6, 10, 9, 15, 25]
    )
    assert quadratic_term_names(["a", "b", "c"]) == [
        "1", "a", "b", "c", "a^2", "a*b", "a*c", "b^2", "b*c", "c^2"
    ]


def test_design_jacobian_matches_finite_differences():
    x = np.array([0.3, -1.2, 0.7])
    step = 1e-6
    def design(point):
        return quadratic_design_matrix(point[None])[0]

    numerical = np.column_stack([(design(x + step * e) - design(x - step * e)) / (2 * step) for e in np.eye(3)])
    np.testing.assert_allclose(quadratic_design_jacobian(x), numerical, atol=1e-8)


# ---------------------------------------------------------------- training step


def test_coefficients_recover_truth(trained):
    """Every coefficient within 5 formal standard deviations, (A^T W A)^-1, of the truth."""
    design = quadratic_design_matrix(scale_like_the_model(trained["labels"], trained["labels"]))
    fitted, truth = trained["model"].coefficients_, trained["coefficients"]
    for pixel, scatter in enumerate(trained["scatter"]):
        weight = 1.0 / (0.01**2 + scatter**2)
        standard_error = np.sqrt(np.diag(np.linalg.inv(weight * design.T @ design)))
        assert np.all(np.abs(fitted[pixel] - truth[pixel]) < 5 * standard_error), pixel
    assert np.max(np.abs(fitted - truth)) < 0.01
    assert trained["model"].term_names_[4] == "teff^2"


def test_scatter_recovers_injected_intrinsic_scatter(trained):
    fitted = trained["model"].scatter_
    # s^2 is estimated to ~ sqrt(2 / 600) (noise^2 + s^2) ~ 3e-5 against s^2 = 4e-4.
    np.testing.assert_allclose(fitted[:10], 0.02, rtol=0.15)
    assert np.all(fitted[10:] < 0.006)
    assert np.all(fitted >= 0)


def test_scatter_is_the_likelihood_maximum_of_one_pixel():
    """Reference: a direct 1-D minimization of the pixel's profile likelihood with scipy."""
    rng = np.random.default_rng(7)
    labels = make_labels(300, rng)
    x = scale_like_the_model(labels, labels)
    coefficients = make_coefficients(1, rng)
    noise = rng.uniform(0.005, 0.03, (300, 1))  # heteroscedastic
    noise_total = np.sqrt(noise**2 + 0.015**2)
    flux = quadratic_design_matrix(x) @ coefficients.T + rng.normal(size=(300, 1)) * noise_total
    ivar = 1.0 / noise**2
    design = quadratic_design_matrix(x)

    def negative_log_likelihood(scatter: float) -> float:
        variance = noise[:, 0] ** 2 + scatter**2
        weight = 1.0 / variance
        theta = np.linalg.solve(design.T @ (design * weight[:, None]), design.T @ (weight * flux[:, 0]))
        residual = flux[:, 0] - design @ theta
        return 0.5 * np.sum(residual**2 / variance + np.log(variance))

    reference = minimize_scalar(
        negative_log_likelihood, bounds=(0.0, 0.1), method="bounded", options={"xatol": 1e-9}
    )
    _, scatter = fit_pixel_models(design, flux, ivar)
    assert scatter[0] == pytest.approx(reference.x, rel=1e-3)


def test_zero_scatter_when_data_are_noiseless_beyond_ivar():
    rng = np.random.default_rng(3)
    labels = make_labels(200, rng)
    design = quadratic_design_matrix(scale_like_the_model(labels, labels))
    coefficients = make_coefficients(5, rng)
    flux = design @ coefficients.T  # exactly the model: any s > 0 lowers the likelihood
    coefficients_fit, scatter = fit_pixel_models(design, flux, np.full(flux.shape, 1e4))
    np.testing.assert_array_equal(scatter, 0.0)
    np.testing.assert_allclose(coefficients_fit, coefficients, atol=1e-10)


def test_fit_scatter_false_gives_weighted_least_squares():
    rng = np.random.default_rng(4)
    labels = make_labels(100, rng)
    design = quadratic_design_matrix(scale_like_the_model(labels, labels))
    x = scale_like_the_model(labels, labels)
    flux, ivar = make_spectra(x, make_coefficients(3, rng), 0.02, 0.03, rng)
    ivar = ivar * rng.uniform(0.5, 2.0, ivar.shape)
    coefficients, scatter = fit_pixel_models(design, flux, ivar, fit_scatter=False)
    np.testing.assert_array_equal(scatter, 0.0)
    for pixel in range(3):
        weight = np.sqrt(ivar[:, pixel])
        expected = np.linalg.lstsq(design * weight[:, None], flux[:, pixel] * weight, rcond=None)[0]
        np.testing.assert_allclose(coefficients[pixel], expected, rtol=1e-8, atol=1e-12)


def test_bad_training_pixels_get_no_weight():
    rng = np.random.default_rng(5)
    labels = make_labels(400, rng)
    x = scale_like_the_model(labels, labels)
    coefficients = make_coefficients(20, rng)
    flux, ivar = make_spectra(x, coefficients, 0.01, 0.0, rng)
    bad = rng.uniform(size=flux.shape) < 0.15
    flux_corrupted = flux.copy()
    flux_corrupted[bad] = rng.choice([np.nan, np.inf, 1e6], size=np.count_nonzero(bad))
    ivar_bad = np.where(bad, 0.0, ivar)
    clean = CannonModel().fit(flux, ivar_bad, labels)
    corrupted = CannonModel().fit(flux_corrupted, ivar_bad, labels)
    np.testing.assert_allclose(corrupted.coefficients_, clean.coefficients_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(corrupted.coefficients_, coefficients, atol=5e-3)


def test_pixel_with_too_few_good_stars_is_nan():
    rng = np.random.default_rng(6)
    labels = make_labels(50, rng)
    flux, ivar = make_spectra(scale_like_the_model(labels, labels), make_coefficients(8, rng), 0.01, 0.0, rng)
    ivar[5:, 2] = 0.0  # 5 good stars for 10 coefficients
    model = CannonModel().fit(flux, ivar, labels)
    assert np.all(np.isnan(model.coefficients_[2])) and np.isnan(model.scatter_[2])
    assert np.all(np.isfinite(np.delete(model.coefficients_, 2, axis=0)))
    assert np.isnan(model.predict_spectrum(labels[:3])[:, 2]).all()
    prediction = model.predict(flux[:5], ivar[:5])
    assert prediction.converged.all()


def test_fit_does_not_modify_inputs():
    rng = np.random.default_rng(8)
    labels = make_labels(60, rng)
    flux, ivar = make_spectra(scale_like_the_model(labels, labels), make_coefficients(5, rng), 0.01, 0.0, rng)
    ivar[0, 0] = 0.0
    flux[0, 0] = np.nan
    copies = [array.copy() for array in (flux, ivar, labels)]
    model = CannonModel().fit(flux, ivar, labels)
    model.predict(flux, ivar)
    for original, copy in zip((flux, ivar, labels), copies):
        np.testing.assert_array_equal(original, copy)


# ---------------------------------------------------------------- test step


def test_predict_recovers_held_out_labels(trained):
    model, rng = trained["model"], np.random.default_rng(11)
    labels = make_labels(60, rng)
    x = scale_like_the_model(labels, trained["labels"])
    flux, ivar = make_spectra(x, trained["coefficients"], 0.01, trained["scatter"], rng)
    prediction = model.predict(flux, ivar)
    assert prediction.labels.shape == prediction.errors.shape == (60, 3)
    assert prediction.covariance.shape == (60, 3, 3)
    assert prediction.converged.all()
    pull = (prediction.labels - labels) / prediction.errors
    # Formal errors are calibrated on data drawn from the model itself.
    assert np.all(np.abs(pull) < 5)
    assert 0.6 < np.std(pull) < 1.5
    assert np.all(np.abs(prediction.labels - labels) < [60.0, 0.2, 0.1])
    np.testing.assert_allclose(np.median(prediction.reduced_chi2), 1.0, atol=0.3)


def test_predict_far_from_training_mean_uses_good_start(trained):
    """A star at the edge of the label space still converges to the truth."""
    model, rng = trained["model"], np.random.default_rng(12)
    labels = np.array([[4020.0, 3.45, 0.38], [5180.0, 1.05, -1.48]])
    x = scale_like_the_model(labels, trained["labels"])
    flux, ivar = make_spectra(x, trained["coefficients"], 0.002, 0.0, rng)
    prediction = model.predict(flux, ivar)
    np.testing.assert_allclose(prediction.labels, labels, rtol=0.02, atol=0.05)


def test_predict_with_bad_pixels_and_an_all_bad_spectrum(trained):
    model, rng = trained["model"], np.random.default_rng(13)
    labels = make_labels(4, rng)
    x = scale_like_the_model(labels, trained["labels"])
    flux, ivar = make_spectra(x, trained["coefficients"], 0.005, 0.0, rng)
    all_good = model.predict(flux[:1], ivar[:1])
    flux[0, :20], ivar[0, :20] = np.nan, 0.0  # half the pixels bad, flux garbage
    ivar[1] = 0.0  # no good pixel at all
    flux[1] = np.nan
    prediction = model.predict(flux, ivar)
    assert prediction.converged.tolist() == [True, False, True, True]
    assert np.all(np.isnan(prediction.labels[1])) and np.all(np.isnan(prediction.errors[1]))
    np.testing.assert_allclose(prediction.labels[[0, 2, 3]], labels[[0, 2, 3]], rtol=0.05, atol=0.15)
    # Fewer good pixels: larger errors than for the same spectrum with every pixel good.
    assert np.all(prediction.errors[0] > all_good.errors[0])


def test_predict_spectrum_matches_truth(trained):
    model, labels = trained["model"], trained["labels"][:5]
    x = scale_like_the_model(labels, trained["labels"])
    expected = quadratic_design_matrix(x) @ trained["coefficients"].T
    difference = np.abs(model.predict_spectrum(labels) - expected)
    # The model flux is known to ~ noise / sqrt(n_star / n_terms) ~ 0.003 (0.006 at the s = 0.02 pixels).
    assert np.median(difference) < 2e-3 and np.max(difference) < 0.015
    assert model.predict_spectrum(labels[0]).shape == (40,)


def test_linear_initial_guess_is_exact_for_noiseless_spectrum(trained):
    """Treating the quadratic terms as free linear ones gives the labels of a noiseless spectrum."""
    from slampaper.cannon import _linear_initial_guess

    model = trained["model"]
    x_true = np.array([1.1, -0.7, 0.4])
    flux = model.coefficients_ @ quadratic_design_matrix(x_true[None])[0]
    guess = _linear_initial_guess(model.coefficients_, flux, np.ones(flux.size), 3)
    np.testing.assert_allclose(guess, x_true, atol=1e-8)


def test_fit_spectrum_labels_minimizes_chi2(trained):
    """The optimum beats nearby points: the analytic Jacobian leads to a true minimum."""
    model, rng = trained["model"], np.random.default_rng(14)
    x_true = np.array([0.5, -0.4, 0.2])
    flux, ivar = make_spectra(x_true[None], trained["coefficients"], 0.01, 0.0, rng)
    fit = fit_spectrum_labels(flux[0], ivar[0], model.coefficients_, model.scatter_)

    def chi2(x):
        model_flux = model.coefficients_ @ quadratic_design_matrix(x[None])[0]
        return np.sum((flux[0] - model_flux) ** 2 / (1 / ivar[0] + model.scatter_**2))

    assert fit.chi2 == pytest.approx(chi2(fit.labels), rel=1e-10)
    for direction in np.vstack([np.eye(3), -np.eye(3)]):
        assert chi2(fit.labels + 1e-3 * direction) > fit.chi2


# ---------------------------------------------------------------- cross-validation


def test_cross_validate_labels_and_flux_statistics():
    rng = np.random.default_rng(21)
    labels = make_labels(250, rng)
    coefficients = make_coefficients(30, rng)
    scatter = np.where(np.arange(30) < 10, 0.02, 0.0)
    flux, ivar = make_spectra(scale_like_the_model(labels, labels), coefficients, 0.01, scatter, rng)
    ivar[rng.uniform(size=ivar.shape) < 0.05] = 0.0
    result = cross_validate(flux, ivar, labels, cv=5, random_state=0)
    assert np.array_equal(np.sort(np.bincount(result.fold)), [50, 50, 50, 50, 50])
    assert result.converged.all()
    assert np.all(np.abs(result.labels_predicted - labels) < 6 * result.errors)
    # Held-out MSE = noise^2 + s^2 (+ a small model error), MD ~ 0.
    expected_mse = 0.01**2 + scatter**2
    np.testing.assert_allclose(result.cv_mse, expected_mse, rtol=0.3)
    assert np.all(np.abs(result.cv_md) < 4 * np.sqrt(expected_mse / 237))
    again = cross_validate(flux, ivar, labels, cv=5, random_state=0)
    np.testing.assert_array_equal(again.labels_predicted, result.labels_predicted)


def test_cross_validate_ignores_bad_pixels_in_cv_mse():
    rng = np.random.default_rng(22)
    labels = make_labels(120, rng)
    flux, ivar = make_spectra(scale_like_the_model(labels, labels), make_coefficients(6, rng), 0.01, 0.0, rng)
    flux[::3, 0], ivar[::3, 0] = 50.0, 0.0  # absurd flux on bad pixels
    result = cross_validate(flux, ivar, labels, cv=4, random_state=1)
    assert result.cv_mse[0] < 3e-4


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f, i, l: (f[:, :-1], i, l), "shape"),
        (lambda f, i, l: (f, -i, l), "ivar"),
        (lambda f, i, l: (f, np.where(i > 0, np.nan, i), l), "ivar"),
        (lambda f, i, l: (np.where(f > 0, np.nan, f), i, l), "flux"),
        (lambda f, i, l: (f, i, np.where(l > 3000, np.nan, l)), "labels"),
        (lambda f, i, l: (f, i, l[:-1]), "labels"),
        (lambda f, i, l: (f, i, np.column_stack([l[:, :2], np.ones(len(l))])), "constant"),
        (lambda f, i, l: (f[:8], i[:8], l[:8]), "too few"),
    ],
)
def test_fit_rejects_bad_input(change, message):
    rng = np.random.default_rng(30)
    labels = make_labels(40, rng)
    flux, ivar = make_spectra(scale_like_the_model(labels, labels), make_coefficients(3, rng), 0.01, 0.0, rng)
    with pytest.raises(ValueError, match=message):
        CannonModel().fit(*change(flux, ivar, labels))


def test_predict_rejects_bad_input_and_unfitted_model(trained):
    model = trained["model"]
    with pytest.raises(ValueError, match="pixels"):
        model.predict(np.ones((2, 39)), np.ones((2, 39)))
    with pytest.raises(ValueError, match="n_spec, n_pix"):
        model.predict(np.ones(40), np.ones(40))
    with pytest.raises(ValueError, match="labels"):
        model.predict_spectrum(np.ones((2, 2)))
    flux_with_nan = np.ones((2, 40))
    flux_with_nan[1, 3] = np.nan
    with pytest.raises(ValueError, match="flux"):
        model.predict(flux_with_nan, np.ones((2, 40)))
    with pytest.raises(ValueError, match="one spectrum"):
        fit_spectrum_labels(np.ones((2, 40)), np.ones((2, 40)), model.coefficients_, model.scatter_)
    with pytest.raises(RuntimeError, match="fit"):
        CannonModel().predict(np.ones((1, 40)), np.ones((1, 40)))
    with pytest.raises(ValueError, match="label_names"):
        labels = make_labels(40, np.random.default_rng(0))
        CannonModel().fit(np.ones((40, 3)), np.ones((40, 3)), labels, label_names=["a"])


def test_degenerate_labels_at_one_pixel_do_not_crash():
    """Good stars of pixel 0 all share one feh: its normal matrix is singular, the fit goes on."""
    rng = np.random.default_rng(31)
    labels = make_labels(80, rng)
    # feh = 0 is exactly the training mean, so the feh terms vanish exactly for these 40 stars.
    labels[:, 2] = np.concatenate([np.zeros(40), np.tile([-0.5, 0.5], 20)])
    flux, ivar = make_spectra(scale_like_the_model(labels, labels), make_coefficients(5, rng), 0.01, 0.0, rng)
    ivar[40:, 0] = 0.0
    model = CannonModel().fit(flux, ivar, labels)
    assert np.all(np.isfinite(model.coefficients_))
    predicted = model.predict_spectrum(labels[:40])
    assert np.sqrt(np.mean((predicted[:, 0] - flux[:40, 0]) ** 2)) < 0.02
