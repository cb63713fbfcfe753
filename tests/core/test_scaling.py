import numpy as np
import pytest

from slamlib.scaling import Standardizer


def test_standardized_columns_have_zero_mean_unit_variance_and_invert():
    rng = np.random.default_rng(3)
    values = rng.normal([5000.0, 2.5, -0.3], [800.0, 1.0, 0.4], size=(500, 3))
    scaler = Standardizer.fit(values)
    standardized = scaler.transform(values)
    np.testing.assert_allclose(standardized.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(standardized.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(scaler.inverse_transform(standardized), values, rtol=1e-12)


def test_masked_entries_are_ignored():
    values = np.array([[1.0, 10.0], [3.0, 1e9], [5.0, 30.0]])
    good = np.array([[True, True], [True, False], [True, True]])
    scaler = Standardizer.fit(values, good=good)
    np.testing.assert_allclose(scaler.mean, [3.0, 20.0])
    np.testing.assert_allclose(scaler.scale, [np.std([1.0, 3.0, 5.0]), 10.0])


def test_constant_and_empty_columns_stay_invertible():
    values = np.array([[2.0, np.nan], [2.0, np.nan]])
    scaler = Standardizer.fit(values)
    assert np.all(scaler.scale == 1.0)
    assert np.all(np.isfinite(scaler.transform(np.array([[2.0, 1.0]]))))


def test_non_2d_input_is_refused():
    with pytest.raises(ValueError, match="2-D"):
        Standardizer.fit(np.arange(5.0))
