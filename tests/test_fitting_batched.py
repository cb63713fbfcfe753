import numpy as np

from slamlib.fitting_batched import levenberg_marquardt_batch
from slamlib.scaling import Standardizer
from slamlib.svr.kernel import KernelExpansion


def _toy_expansion(rng):
    support = rng.normal(size=(80, 2))
    coefficients = rng.normal(scale=0.5, size=(30, 80))
    return KernelExpansion(support, coefficients, rng.normal(size=30), np.where(np.arange(30) < 15, 0.3, 0.1))


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
