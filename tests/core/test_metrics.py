"""Tests of slamlib.metrics with small arrays whose answers are worked out here by hand."""

from __future__ import annotations

import numpy as np
import pytest

from slamlib.metrics import (
    coefficients_of_dependence,
    cv_bias,
    cv_scatter,
    cv_statistics,
    error_model,
    fit_error_model,
    fit_error_models,
    label_distance,
    scatter_by_snr,
)

# ---------------------------------------------------------------- bias and scatter (Eqs. 9-10)

# Differences (predicted - reference): label 0 -> [1, 3, 5, 7], label 1 -> [0, 0, 2, -2].
REFERENCE = np.array([[10.0, 1.0], [20.0, 2.0], [30.0, 3.0], [40.0, 4.0]])
PREDICTED = REFERENCE + np.array([[1.0, 0.0], [3.0, 0.0], [5.0, 2.0], [7.0, -2.0]])
# By hand: label 0 mean 4, deviations -3 -1 1 3 -> mean square 20/4 = 5;
#          label 1 mean 0, squares 0 0 4 4 -> mean square 2.
EXPECTED_BIAS = np.array([4.0, 0.0])
EXPECTED_SCATTER = np.array([np.sqrt(5.0), np.sqrt(2.0)])


def test_bias_and_scatter_hand_values():
    np.testing.assert_allclose(cv_bias(PREDICTED, REFERENCE), EXPECTED_BIAS)
    np.testing.assert_allclose(cv_scatter(PREDICTED, REFERENCE), EXPECTED_SCATTER)


def test_scatter_is_population_std_of_differences():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(50, 3))
    predicted = reference + rng.normal(0.2, 0.5, size=(50, 3))
    differences = predicted - reference
    np.testing.assert_allclose(cv_scatter(predicted, reference), np.std(differences, axis=0, ddof=0))
    np.testing.assert_allclose(cv_bias(predicted, reference), np.mean(differences, axis=0))


def test_non_finite_predictions_are_skipped_and_counted():
    predicted = np.vstack([PREDICTED, [np.nan, 99.0], [np.inf, np.nan]])
    reference = np.vstack([REFERENCE, [0.0, 0.0], [0.0, 0.0]])
    statistics = cv_statistics(predicted, reference)
    np.testing.assert_allclose(statistics.bias, EXPECTED_BIAS)
    np.testing.assert_allclose(statistics.scatter, EXPECTED_SCATTER)
    assert (statistics.n_used, statistics.n_rejected) == (4, 2)


def test_one_dimensional_input_gives_floats():
    bias = cv_bias(PREDICTED[:, 0], REFERENCE[:, 0])
    scatter = cv_scatter(PREDICTED[:, 0], REFERENCE[:, 0])
    assert isinstance(bias, float) and isinstance(scatter, float)
    assert bias == pytest.approx(4.0) and scatter == pytest.approx(np.sqrt(5.0))


def test_no_usable_star_gives_nan():
    statistics = cv_statistics(np.full((3, 2), np.nan), np.zeros((3, 2)))
    assert np.all(np.isnan(statistics.bias)) and np.all(np.isnan(statistics.scatter))
    assert statistics.n_used == 0


def test_bias_inputs_are_not_modified():
    predicted = np.vstack([PREDICTED, [np.nan, 1.0]])
    reference = np.vstack([REFERENCE, [0.0, 0.0]])
    copies = predicted.copy(), reference.copy()
    cv_statistics(predicted, reference)
    np.testing.assert_array_equal(predicted, copies[0])
    np.testing.assert_array_equal(reference, copies[1])


@pytest.mark.parametrize(
    "predicted, reference, message",
    [
        (np.zeros((4, 2)), np.zeros((4, 3)), "same shape"),
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), "shape"),
        (np.zeros((3, 2)), np.array([[0.0, 0.0], [np.nan, 0.0], [0.0, 0.0]]), "labels_reference"),
    ],
)
def test_bias_rejects_bad_input(predicted, reference, message):
    with pytest.raises(ValueError, match=message):
        cv_bias(predicted, reference)


# ---------------------------------------------------------------- statistics by S/N


def test_scatter_by_snr_bins_counts_and_statistics():
    # Bins [0, 10), [10, 20), [20, 40]; S/N 45 and -1 fall outside, the NaN row is rejected.
    snr = np.array([5.0, 8.0, 12.0, 15.0, 18.0, 40.0, 25.0, 45.0, -1.0, 30.0])
    reference = np.zeros((10, 2))
    predicted = np.array(
        [[1.0, 2.0], [3.0, 2.0], [0.0, 0.0], [3.0, 1.0], [6.0, 2.0], [1.0, 1.0], [-1.0, 1.0],
         [100.0, 100.0], [100.0, 100.0], [np.nan, 0.0]]
    )
    errors = np.array(
        [[0.1, 0.2], [0.3, 0.4], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [5.0, 5.0], [7.0, 7.0],
         [9.0, 9.0], [9.0, 9.0], [9.0, 9.0]]
    )
    table = scatter_by_snr(
        predicted, reference, snr, [0.0, 10.0, 20.0, 40.0], label_names=["teff", "logg"], errors=errors
    )
    assert len(table) == 3
    np.testing.assert_array_equal(table["n_star"], [2, 3, 2])
    np.testing.assert_array_equal(table["n_rejected"], [0, 0, 1])
    np.testing.assert_allclose(table["snr_center"], [5.0, 15.0, 30.0])
    np.testing.assert_allclose(table["snr_median"], [6.5, 15.0, 32.5])
    # Bin 1, teff: differences 1, 3 -> bias 2, scatter 1. Bin 2: 0, 3, 6 -> 3, sqrt(6).
    # Bin 3 (S/N 40 is in the closed last bin, S/N 30 is rejected): 1, -1 -> 0, 1.
    np.testing.assert_allclose(table["teff_bias"], [2.0, 3.0, 0.0])
    np.testing.assert_allclose(table["teff_scatter"], [1.0, np.sqrt(6.0), 1.0])
    np.testing.assert_allclose(table["logg_bias"], [2.0, 1.0, 1.0])
    np.testing.assert_allclose(table["logg_scatter"], [0.0, np.sqrt(2.0 / 3.0), 0.0])
    np.testing.assert_allclose(table["teff_err_median"], [0.2, 2.0, 6.0])


def test_scatter_by_snr_empty_bin_and_default_names():
    table = scatter_by_snr(np.array([1.0, 2.0]), np.zeros(2), np.array([1.0, 2.0]), [0.0, 5.0, 10.0])
    assert table.colnames == [
        "snr_low", "snr_high", "snr_center", "snr_median", "n_star", "n_rejected",
        "label0_bias", "label0_scatter",
    ]
    assert table["n_star"][1] == 0
    assert np.isnan(table["label0_bias"][1]) and np.isnan(table["snr_median"][1])
    assert table["label0_bias"][0] == pytest.approx(1.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bins=[10.0, 5.0]), "bins"),
        (dict(bins=[5.0]), "bins"),
        (dict(snr=np.array([1.0, np.nan, 3.0])), "snr"),
        (dict(snr=np.array([1.0, 2.0])), "snr"),
        (dict(label_names=["a"]), "label_names"),
        (dict(label_names=["a", "a"]), "unique"),
        (dict(errors=np.ones((3, 3))), "errors"),
    ],
)
def test_scatter_by_snr_rejects_bad_input(kwargs, message):
    arguments = dict(
        labels_predicted=np.ones((3, 2)), labels_reference=np.zeros((3, 2)), snr=np.array([1.0, 2.0, 3.0]),
        bins=[0.0, 5.0],
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        scatter_by_snr(**arguments)


# ---------------------------------------------------------------- error model (Table 1)


def test_error_model_formula():
    assert error_model(10.0, 2.0, 0.1, 0.5) == pytest.approx(2.0 * np.exp(-1.0) + 0.5)


def test_fit_error_model_recovers_injected_parameters():
    rng = np.random.default_rng(2)
    snr = np.linspace(10.0, 200.0, 25)
    truth = (150.0, 0.03, 40.0)  # e.g. Teff in K
    scatter = error_model(snr, *truth) * (1 + rng.normal(0.0, 0.01, snr.size))
    parameters, covariance = fit_error_model(snr, scatter)
    np.testing.assert_allclose(parameters, truth, rtol=0.05)
    assert covariance.shape == (3, 3)
    standard_errors = np.sqrt(np.diag(covariance))
    assert np.all(np.abs(parameters - truth) < 5 * standard_errors)


def test_fit_error_model_respects_bounds_and_skips_empty_bins():
    snr = np.array([10.0, 20.0, 40.0, 80.0, 160.0, 300.0])
    flat = np.array([0.1, 0.1, 0.1, 0.1, np.nan, 0.1])  # a flat curve: a or b go to 0, nothing negative
    parameters, _ = fit_error_model(snr, flat)
    assert np.all(parameters >= 0)
    assert np.allclose(error_model(snr, *parameters), 0.1, atol=1e-6)
    with pytest.raises(ValueError, match="at least 4"):
        fit_error_model(snr[:3], flat[:3])
    with pytest.raises(ValueError, match="p0"):
        fit_error_model(snr, flat, p0=[1.0, -0.1, 0.0])


def test_fit_error_models_gives_table_1_layout():
    rng = np.random.default_rng(3)
    snr = rng.uniform(5.0, 200.0, 4000)
    reference = np.zeros((4000, 2))
    truth = {"teff": (200.0, 0.04, 30.0), "logg": (0.5, 0.05, 0.08)}
    predicted = np.column_stack([rng.normal(0.0, error_model(snr, *truth[name])) for name in truth])
    table = scatter_by_snr(predicted, reference, snr, np.linspace(5.0, 200.0, 14), label_names=list(truth))
    models = fit_error_models(table)
    assert list(models["label"]) == ["teff", "logg"]
    assert models.colnames[:4] == ["label", "a", "b", "c"]
    for row in models:
        a, b, c = truth[row["label"]]
        # A binned, noisy scatter: check the curve rather than each (correlated) parameter.
        fitted_curve = error_model(snr, row["a"], row["b"], row["c"])
        np.testing.assert_allclose(fitted_curve, error_model(snr, a, b, c), rtol=0.15)
    with pytest.raises(ValueError, match="columns"):
        fit_error_models(table, label_names=["feh"])


# ---------------------------------------------------------------- label distance


def test_label_distance_zero_on_training_stars_and_scaled_units():
    training = np.array([[4500.0, 2.0], [5000.0, 3.0], [4000.0, 1.0]])
    scale = np.array([50.0, 0.1])
    np.testing.assert_allclose(label_distance(training, training, scale), 0.0)
    # 3 scatters in Teff and 4 in logg from the first star (its nearest): distance 5.
    query = np.array([[4500.0 + 3 * 50.0, 2.0 + 4 * 0.1]])
    np.testing.assert_allclose(label_distance(query, training, scale), [5.0])
    # Twice the scale halves the distance.
    np.testing.assert_allclose(label_distance(query, training, 2 * scale), [2.5])


def test_label_distance_matches_brute_force_and_handles_nan():
    rng = np.random.default_rng(4)
    training = rng.normal(size=(200, 3))
    query = rng.normal(size=(30, 3)) * 2
    scale = np.array([0.5, 1.0, 2.0])
    brute = np.min(np.sqrt((((query[:, None, :] - training[None, :, :]) / scale) ** 2).sum(axis=-1)), axis=1)
    np.testing.assert_allclose(label_distance(query, training, scale), brute)
    query[3, 1] = np.nan
    distance = label_distance(query, training, scale)
    assert np.isnan(distance[3]) and np.all(np.isfinite(np.delete(distance, 3)))


@pytest.mark.parametrize(
    "labels, training, scale, message",
    [
        (np.zeros((2, 2)), np.zeros((3, 3)), np.ones(3), "n_label"),
        (np.zeros((2, 2)), np.zeros((3, 2)), np.array([1.0, 0.0]), "positive"),
        (np.zeros((2, 2)), np.array([[0.0, np.nan]]), np.ones(2), "training_labels"),
    ],
)
def test_label_distance_rejects_bad_input(labels, training, scale, message):
    with pytest.raises(ValueError, match=message):
        label_distance(labels, training, scale)


# ---------------------------------------------------------------- coefficients of dependence


def test_cods_share_cod_full_in_proportion_to_mse_increase():
    mse_full = np.array([0.2, 0.5, 0.9])
    mse_without = np.array(
        [[0.5, 0.6, 0.9],   # gains 0.3, 0.1, 0.0
         [0.3, 0.4, 0.9],   # gains 0.1, -0.1 (clipped to 0), 0.0
         [0.2, 0.8, 0.9]]   # gains 0.0, 0.3, 0.0
    )
    cod_full, cod_label = coefficients_of_dependence(mse_full, mse_without)
    np.testing.assert_allclose(cod_full, [0.8, 0.5, 0.1])
    # Pixel 0: 0.8 split 3:1:0; pixel 1: 0.5 split 1:0:3; pixel 2: no gain -> all zero.
    expected = np.array([[0.6, 0.125, 0.0], [0.2, 0.0, 0.0], [0.0, 0.375, 0.0]])
    np.testing.assert_allclose(cod_label, expected)
    np.testing.assert_allclose(cod_label.sum(axis=0)[:2], cod_full[:2])


def test_cods_sum_to_cod_full_on_random_input():
    rng = np.random.default_rng(5)
    mse_full = rng.uniform(0.05, 0.9, 100)
    mse_without = mse_full + rng.uniform(0.0, 0.5, (4, 100))
    cod_full, cod_label = coefficients_of_dependence(mse_full, mse_without)
    np.testing.assert_allclose(cod_label.sum(axis=0), cod_full)
    assert np.all(cod_label >= 0)


def test_cods_nan_and_bad_shapes():
    mse_without = np.array([[np.nan, 0.5], [0.3, 0.4]])
    _, cod_label = coefficients_of_dependence(np.array([0.1, 0.2]), mse_without)
    assert np.all(np.isnan(cod_label[:, 0])) and np.all(np.isfinite(cod_label[:, 1]))
    with pytest.raises(ValueError, match="n_label, n_pix"):
        coefficients_of_dependence(np.zeros(3), np.zeros((2, 4)))


def test_error_model_fit_that_cannot_converge_returns_nan_not_a_guess(monkeypatch):
    import slamlib.metrics as metrics_module

    def no_convergence(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found: The maximum number of function evaluations is exceeded.")

    monkeypatch.setattr(metrics_module, "curve_fit", no_convergence)
    snr = np.array([10.0, 20.0, 40.0, 80.0, 160.0])
    parameters, covariance = metrics_module.fit_error_model(snr, 0.1 + np.exp(-snr / 30))
    assert parameters.shape == (3,) and np.all(np.isnan(parameters)) and np.all(np.isnan(covariance))
