import numpy as np
import pytest
from sklearn.svm import SVR

from slamlib.svr import kfold_indices
from slamlib.svr.folds import fold_assignment
from slamlib.svr.kernel import KernelExpansion
from slamlib.svr.libsvm import ORIGINAL_TOLERANCE, TOLERANCE, train_pixel, train_pixels


@pytest.fixture
def pixel_data():
    rng = np.random.default_rng(7)
    labels = rng.normal(size=(120, 3))
    flux = np.sin(labels[:, 0]) + 0.5 * labels[:, 1] * labels[:, 2] + rng.normal(0, 0.05, 120)
    return labels, (flux - flux.mean()) / flux.std()


def test_folds_partition_the_stars_and_are_seeded():
    folds = kfold_indices(50, 5, random_state=1)
    assert len(folds) == 5
    held_out = np.sort(np.concatenate([test for _, test in folds]))
    np.testing.assert_array_equal(held_out, np.arange(50))
    for train, test in folds:
        assert np.intersect1d(train, test).size == 0
    again = kfold_indices(50, 5, random_state=1)
    other = kfold_indices(50, 5, random_state=2)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other))
    assert set(fold_assignment(folds, 50)) == set(range(5))


def test_too_few_stars_for_folds_raises():
    with pytest.raises(ValueError, match="too few"):
        kfold_indices(7, 5, random_state=0)


def test_cv_mse_matches_an_independent_cross_validation(pixel_data):
    labels, flux = pixel_data
    folds = kfold_indices(labels.shape[0], 4, random_state=0)
    pairs = [(10.0, 0.1), (1.0, 1.0)]
    result = train_pixel(labels, flux, np.ones(labels.shape[0], bool), folds, pairs, 0.05)
    for index, (c, gamma) in enumerate(pairs):
        predicted = np.empty_like(flux)
        for train, test in folds:
            predicted[test] = SVR(C=c, gamma=gamma, epsilon=0.05, tol=TOLERANCE).fit(labels[train], flux[train]).predict(labels[test])
        np.testing.assert_allclose(result["cv_mse_grid"][index], np.mean((predicted - flux) ** 2), rtol=1e-10)
    assert result["best"] == int(np.argmin(result["cv_mse_grid"]))


def test_original_tolerance_reproduces_scikit_learn_defaults(pixel_data):
    """tol=ORIGINAL_TOLERANCE gives the original code's fits (scikit-learn's default SVR); the
    reference's own tolerance gives other (better converged) numbers."""
    labels, flux = pixel_data
    folds = kfold_indices(labels.shape[0], 4, random_state=0)
    good = np.ones(labels.shape[0], bool)
    original = train_pixel(labels, flux, good, folds, [(100.0, 1.0)], 0.05, tol=ORIGINAL_TOLERANCE)
    converged = train_pixel(labels, flux, good, folds, [(100.0, 1.0)], 0.05)
    default_fit = SVR(C=100.0, gamma=1.0, epsilon=0.05).fit(labels, flux)
    np.testing.assert_allclose(original["dual_coef"][default_fit.support_], default_fit.dual_coef_[0], rtol=1e-12)
    assert original["intercept"] == pytest.approx(default_fit.intercept_[0], rel=1e-12)
    assert not np.array_equal(original["dual_coef"], converged["dual_coef"])


def test_bad_stars_are_left_out_of_fits_and_cv_scores(pixel_data):
    labels, flux = pixel_data
    folds = kfold_indices(labels.shape[0], 4, random_state=0)
    good = np.ones(labels.shape[0], bool)
    good[::5] = False
    corrupted = flux.copy()
    corrupted[~good] = 1e3  # garbage where the pixel is bad must not matter
    clean = train_pixel(labels, np.where(good, flux, 0.0), good, folds, [(10.0, 0.1)], 0.05)
    dirty = train_pixel(labels, corrupted, good, folds, [(10.0, 0.1)], 0.05)
    assert clean["cv_mse"] == dirty["cv_mse"]
    np.testing.assert_array_equal(clean["dual_coef"], dirty["dual_coef"])
    assert np.all(dirty["dual_coef"][~good] == 0)


def test_kernel_expansion_reproduces_sklearn_predictions_and_jacobian(pixel_data):
    labels, flux = pixel_data
    n_star = labels.shape[0]
    flux_two = np.column_stack([flux, -0.5 * flux + 0.1])
    good = np.ones((n_star, 2), bool)
    folds = kfold_indices(n_star, 3, random_state=0)
    result = train_pixels(labels, flux_two, good, folds, {"C": [10.0], "gamma": [0.1, 0.3]}, 0.05,
                          min_good_stars=6, n_jobs=1)
    test_labels = np.random.default_rng(1).normal(size=(5, 3))
    for pixel in range(2):
        reference = SVR(C=10.0, gamma=result.best_gamma[pixel], epsilon=0.05, tol=TOLERANCE).fit(labels, flux_two[:, pixel])
        np.testing.assert_allclose(result.expansion.evaluate(test_labels)[:, pixel], reference.predict(test_labels),
                                   rtol=1e-8, atol=1e-10)
    value, jacobian = result.expansion.evaluate_with_jacobian(test_labels)
    step = 1e-6
    for label in range(3):
        shifted = test_labels.copy()
        shifted[:, label] += step
        numeric = (result.expansion.evaluate(shifted) - value) / step
        np.testing.assert_allclose(jacobian[:, :, label], numeric, rtol=1e-4, atol=1e-6)


def test_pixels_without_enough_good_stars_are_not_trained(pixel_data):
    labels, flux = pixel_data
    flux_two = np.column_stack([flux, flux])
    good = np.ones_like(flux_two, dtype=bool)
    good[5:, 1] = False
    folds = kfold_indices(labels.shape[0], 3, random_state=0)
    result = train_pixels(labels, flux_two, good, folds, {"C": [10.0], "gamma": [0.1]}, 0.05,
                          min_good_stars=6, n_jobs=1)
    assert result.trained.tolist() == [True, False]
    assert np.isnan(result.cv_mse[1]) and np.all(result.expansion.dual_coef[1] == 0)


def test_kernel_expansion_checks_shapes():
    with pytest.raises(ValueError, match="disagree"):
        KernelExpansion(np.zeros((3, 2)), np.zeros((4, 5)), np.zeros(4), np.zeros(4))
