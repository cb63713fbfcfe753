"""The batched Levenberg-Marquardt (slamlib.fitting_batched) against the per-spectrum scipy reference."""

import numpy as np
import pytest
from synthetic_data import (
    LABEL_CENTRE,
    LABEL_HALF_RANGE,
    LABEL_NAMES,
    make_data,
    true_flux,
)

from slamlib import GaussianPrior, SlamModel
from slamlib.fitting import fit_labels
from slamlib.fitting_batched import (
    MAX_EVALUATIONS_REASON,
    SINGULAR_REASON,
    PixelModel,
    levenberg_marquardt_batch,
    levenberg_marquardt_parameter,
)
from slamlib.scaling import Standardizer
from slamlib.svr.kernel import KernelExpansion

N_TRAIN = 250
N_PIX = 40


def _toy_expansion(rng):
    support = rng.normal(size=(80, 2))
    coefficients = rng.normal(scale=0.5, size=(30, 80))
    return KernelExpansion(support, coefficients, rng.normal(size=30), np.where(np.arange(30) < 15, 0.3, 0.1))


@pytest.fixture(scope="module")
def trained():
    """A SLAM model on the tests' analytic 40-pixel spectra (same recipe as tests/test_model.py)."""
    labels, flux, ivar = make_data(n_star=N_TRAIN, n_pix=N_PIX, noise=0.01, rng=np.random.default_rng(11))
    model = SlamModel(param_grid={"C": [10.0, 100.0], "gamma": [0.1, 0.01]}, cv=5, n_jobs=1, random_state=0)
    return model.fit(flux, ivar, labels, LABEL_NAMES)


@pytest.fixture(scope="module")
def hard_spectra():
    """Held-out spectra: 20 at S/N 100, 40 at S/N 5-20; bad pixels (ivar = 0, NaN flux) in the first 40;
    one spectrum with only 6 good pixels and one with too few to fit."""
    rng = np.random.default_rng(2024)
    labels = LABEL_CENTRE + LABEL_HALF_RANGE * rng.uniform(-0.9, 0.9, (60, 3))
    noise = np.concatenate([np.full(20, 0.01), rng.uniform(0.05, 0.2, 40)])  # continuum S/N 100 and 5-20
    flux = true_flux(labels, N_PIX) + rng.normal(size=(60, N_PIX)) * noise[:, None]
    ivar = np.repeat(1.0 / noise[:, None] ** 2, N_PIX, axis=1)
    bad = rng.random(flux.shape) < 0.25
    bad[40:] = False
    ivar[bad] = 0.0                       # bad pixels in the first 40 spectra
    flux[10, :7] = np.nan                 # non-finite flux with a positive ivar: also a bad pixel
    ivar[11], ivar[12] = 1.0 / noise[11] ** 2, 1.0 / noise[12] ** 2
    ivar[11, 6:] = 0.0                    # only 6 good pixels for 3 labels
    ivar[12, 2:] = 0.0                    # 2 good pixels: cannot be fitted
    return flux, ivar


def _assert_same_fits(batched, reference):
    np.testing.assert_array_equal(batched.converged, reference.converged)
    np.testing.assert_array_equal(batched.reason.astype(str), reference.reason.astype(str))
    converged = reference.converged
    assert converged.sum() >= 0.9 * converged.size
    offset_in_errors = np.abs(batched.labels - reference.labels)[converged] / reference.errors[converged]
    assert offset_in_errors.max() < 0.01  # the bar: within 1% of the formal errors
    np.testing.assert_allclose(batched.errors[converged], reference.errors[converged], rtol=1e-3)
    np.testing.assert_allclose(batched.rchi2[converged], reference.rchi2[converged], rtol=1e-6)
    np.testing.assert_allclose(batched.rms[converged], reference.rms[converged], rtol=1e-6)
    # Same algorithm, not merely the same answer: nearly every spectrum takes the reference's path.
    assert np.mean(batched.n_iter == reference.n_iter) >= 0.9


def test_batched_labels_equal_the_reference_on_hard_spectra(trained, hard_spectra):
    flux, ivar = hard_spectra
    batched = trained.predict(flux, ivar, method="batched")
    reference = trained.predict(flux, ivar, method="reference", n_jobs=1)
    _assert_same_fits(batched, reference)
    # The low-S/N spectra are genuinely hard: their labels are far less certain than the high-S/N ones.
    assert np.median(reference.errors[20:, 0]) > 4 * np.nanmedian(reference.errors[:20, 0])
    assert reference.reason[12] == "only 2 good pixels for 3 labels" and reference.converged[11]


def test_batched_labels_equal_the_reference_with_a_gaussian_prior(trained, hard_spectra):
    flux, ivar = hard_spectra
    prior = GaussianPrior(mean=np.array([5400.0, 3.2, -0.4]), sigma=np.array([150.0, np.inf, 0.05]))
    batched = trained.predict(flux, ivar, method="batched", prior=prior)
    reference = trained.predict(flux, ivar, method="reference", n_jobs=1, prior=prior)
    _assert_same_fits(batched, reference)
    free = trained.predict(flux, ivar, method="batched")
    pulled = np.abs(batched.labels[:, 2] - prior.mean[2]) < np.abs(free.labels[:, 2] - prior.mean[2])
    assert pulled.mean() > 0.8


def _problem(trained, flux, ivar):
    """Standardized inputs of the fit of each fittable spectrum (more good pixels than labels), as
    predict_labels prepares them but from a common, deliberately poor start."""
    weights = np.where(np.isfinite(flux) & (ivar > 0), 1.0 / (1.0 / np.where(ivar > 0, ivar, 1.0)
                                                              + trained.model_variance_), 0.0)
    fittable = np.count_nonzero(weights, axis=1) > 3
    flux, weights = np.where(weights > 0, flux, 0.0)[fittable], weights[fittable]
    start = trained.label_scaler_.transform(np.full((flux.shape[0], 3), LABEL_CENTRE + 0.6 * LABEL_HALF_RANGE))
    return flux, weights, start


def test_the_batched_iteration_takes_the_reference_steps_one_by_one(trained, hard_spectra):
    """Stopped after k evaluations (every third k along the path), both sit at the same last accepted
    step, on the spectra whose path has rejected steps (trust region shrinking, damping growing)."""
    flux, weights, start = _problem(trained, *hard_spectra)
    expansion, flux_scaler = trained.training_.expansion, trained.flux_scaler_
    complete = levenberg_marquardt_batch(flux, weights, start, expansion, flux_scaler)
    rows = np.flatnonzero(complete.n_iter > complete.n_jacobian)     # some trial step was rejected
    assert rows.size >= 10
    formal_error = np.sqrt(np.diagonal(complete.cov_std[rows], axis1=1, axis2=2))
    flagged = 0
    for max_evaluations in range(2, complete.n_iter[rows].max() + 1, 3):
        batch = levenberg_marquardt_batch(flux[rows], weights[rows], start[rows], expansion, flux_scaler,
                                          max_evaluations=max_evaluations)
        singles = [fit_labels(flux[row], weights[row], start[row], expansion, flux_scaler,
                              max_evaluations=max_evaluations) for row in rows]
        np.testing.assert_array_equal(batch.converged, [single.converged for single in singles])
        assert batch.reason == [single.reason for single in singles]
        np.testing.assert_array_equal(batch.n_iter, [single.n_iter for single in singles])
        offset = np.abs(batch.labels_std - [single.labels_std for single in singles]) / formal_error
        assert offset.max() < 1e-6
        flagged += batch.reason.count(MAX_EVALUATIONS_REASON)
    assert flagged > 0  # the cap did stop spectra mid-way, and they were flagged


def test_the_default_evaluation_cap_is_scipys_and_flags_the_spectrum(trained, hard_spectra):
    flux, weights, start = _problem(trained, *hard_spectra)
    # With zero tolerances no test can pass: only the cap (100 evaluations per label for "lm" with
    # an analytic Jacobian, as scipy documents) stops the iteration.
    capped = levenberg_marquardt_batch(flux[:3], weights[:3], start[:3], trained.training_.expansion,
                                       trained.flux_scaler_, ftol=0.0, xtol=0.0, gtol=0.0)
    np.testing.assert_array_equal(capped.n_iter, 300)
    assert not capped.converged.any() and capped.reason == [MAX_EVALUATIONS_REASON] * 3
    assert np.all(np.isfinite(capped.labels_std)) and np.all(np.isfinite(capped.cov_std))


def test_a_label_the_spectrum_cannot_constrain_is_flagged_singular_like_the_reference():
    rng = np.random.default_rng(5)
    support = rng.normal(size=(80, 2))
    support[:, 1] = 0.0                   # no pixel depends on label 1 near 0: its Jacobian column vanishes
    expansion = KernelExpansion(support, rng.normal(scale=0.5, size=(30, 80)), rng.normal(size=30), np.full(30, 0.2))
    scaler = Standardizer(mean=np.ones(30), scale=np.full(30, 0.1))
    truth = np.array([[0.3, 0.0], [-0.4, 0.0]])
    flux = scaler.inverse_transform(expansion.evaluate(truth)) + rng.normal(scale=0.01, size=(2, 30))
    start = truth + [0.2, 0.0]
    batch = levenberg_marquardt_batch(flux, np.full_like(flux, 1e4), start, expansion, scaler)
    singles = [fit_labels(f, np.full(30, 1e4), s, expansion, scaler) for f, s in zip(flux, start)]
    assert [single.reason for single in singles] == [SINGULAR_REASON] * 2
    assert batch.reason == [SINGULAR_REASON] * 2 and not batch.converged.any()
    assert np.isnan(batch.cov_std).all()
    np.testing.assert_allclose(batch.labels_std, [single.labels_std for single in singles], atol=1e-8)


def test_the_work_queue_does_not_change_any_result(trained, hard_spectra):
    flux, weights, start = _problem(trained, *hard_spectra)
    pixel_model = PixelModel(trained.training_.expansion, trained.flux_scaler_)
    all_at_once = levenberg_marquardt_batch(flux, weights, start, pixel_model, batch_size=256)
    three_in_flight = levenberg_marquardt_batch(flux, weights, start, pixel_model, batch_size=3)
    np.testing.assert_array_equal(three_in_flight.n_iter, all_at_once.n_iter)
    np.testing.assert_array_equal(three_in_flight.status, all_at_once.status)
    # Rounding in the matrix products depends on how many rows they have; the labels agree to far
    # below the convergence tolerance in units of their formal errors.
    formal_error = np.sqrt(np.diagonal(all_at_once.cov_std, axis1=1, axis2=2))
    assert np.max(np.abs(three_in_flight.labels_std - all_at_once.labels_std) / formal_error) < 1e-4


def test_pixel_model_flux_and_jacobian_match_the_kernel_expansion():
    rng = np.random.default_rng(8)
    expansion = _toy_expansion(rng)
    scaler = Standardizer(mean=rng.uniform(0.5, 1.0, 30), scale=rng.uniform(0.05, 0.2, 30))
    pixel_model = PixelModel(expansion, scaler)
    labels = rng.uniform(-1, 1, size=(7, 2))
    flux_sorted, kernels = pixel_model.flux(labels)
    np.testing.assert_allclose(flux_sorted, scaler.inverse_transform(expansion.evaluate(labels))[:, pixel_model.order],
                               rtol=1e-12)
    # Central differences of the expansion itself.
    step = 1e-6
    for label in range(2):
        shift = np.zeros(2)
        shift[label] = step
        numerical = (scaler.inverse_transform(expansion.evaluate(labels + shift))
                     - scaler.inverse_transform(expansion.evaluate(labels - shift))) / (2 * step)
        np.testing.assert_allclose(pixel_model.jacobian(labels, kernels)[label], numerical[:, pixel_model.order],
                                   rtol=1e-6, atol=1e-8)


def test_levenberg_marquardt_parameter_hits_the_trust_region_or_takes_the_gauss_newton_step():
    rng = np.random.default_rng(9)
    jacobian = rng.normal(size=(5, 20, 3))
    normal = np.einsum("spk,spl->skl", jacobian, jacobian)
    gradient = rng.normal(size=(5, 3)) * 10
    diag = rng.uniform(0.5, 2.0, size=(5, 3))
    gauss_newton = np.linalg.solve(normal, gradient[..., None])[..., 0]
    gauss_newton_size = np.linalg.norm(diag * gauss_newton, axis=1)
    delta = gauss_newton_size * np.array([2.0, 1.05, 0.5, 0.1, 0.01])
    par, solution = levenberg_marquardt_parameter(normal, gradient, diag, delta, np.zeros(5))
    np.testing.assert_array_equal(par[:2], 0.0)
    np.testing.assert_allclose(solution[:2], gauss_newton[:2], rtol=1e-12)
    assert np.all(par[2:] > 0)
    step_size = np.linalg.norm(diag * solution, axis=1)
    assert np.all(np.abs(step_size[2:] - delta[2:]) <= 0.1 * delta[2:])
    damped = normal[2:] + par[2:, None, None] * np.eye(3)[None] * (diag[2:] ** 2)[:, :, None]
    np.testing.assert_allclose(np.einsum("skl,sl->sk", damped, solution[2:]), gradient[2:], rtol=1e-10)


def test_noiseless_spectra_are_fitted_back_to_their_labels_from_a_nearby_start():
    rng = np.random.default_rng(2)
    expansion = _toy_expansion(rng)
    scaler = Standardizer(mean=np.ones(30), scale=np.full(30, 0.1))
    truth = rng.uniform(-0.8, 0.8, size=(20, 2))
    flux = scaler.inverse_transform(expansion.evaluate(truth))
    fit = levenberg_marquardt_batch(flux, np.ones_like(flux), truth + 0.1, expansion, scaler)
    assert fit.converged.all()
    np.testing.assert_allclose(fit.labels_std, truth, atol=1e-5)
    assert np.all(fit.chi2 < 1e-10)


def test_each_spectrum_stops_on_its_own_and_a_prior_pulls():
    rng = np.random.default_rng(3)
    expansion = _toy_expansion(rng)
    scaler = Standardizer(mean=np.ones(30), scale=np.full(30, 0.1))
    truth = rng.uniform(-0.5, 0.5, size=(6, 2))
    flux = scaler.inverse_transform(expansion.evaluate(truth))
    starts = truth.copy()
    starts[:3] += 0.3  # half start far, half at the answer
    fit = levenberg_marquardt_batch(flux, np.ones_like(flux), starts, expansion, scaler)
    assert np.all(fit.n_iter[3:] < fit.n_iter[:3])
    prior = (np.zeros(2), np.full(2, 1e-4))
    pulled = levenberg_marquardt_batch(flux, np.ones_like(flux), starts, expansion, scaler, prior_std=prior)
    assert np.all(np.abs(pulled.labels_std) < 1e-2)
