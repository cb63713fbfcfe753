import numpy as np
import pytest

from slamlib.cod import leave_one_label_out


def test_cods_attribute_each_pixel_to_the_label_it_depends_on():
    rng = np.random.default_rng(5)
    labels = rng.uniform(-1, 1, (150, 2))
    # pixel 0 depends only on label 0, pixel 1 only on label 1, pixel 2 on both
    flux = np.column_stack([np.sin(2 * labels[:, 0]), labels[:, 1] ** 2, labels[:, 0] + labels[:, 1]])
    flux = 1 + 0.1 * flux + rng.normal(0, 0.005, flux.shape)
    ivar = np.full_like(flux, 0.005**-2)
    result = leave_one_label_out(flux, ivar, labels, ["a", "b"],
                                 model_parameters={"cv": 3, "n_jobs": 1, "param_grid": {"C": [10.0], "gamma": [0.3]}})
    assert result.cod_label.shape == (2, 3)
    np.testing.assert_allclose(result.cod_label.sum(axis=0), result.cod_full, rtol=1e-12)
    assert np.all(result.cod_full > 0.9)
    assert result.cod_label[0, 0] > 0.9 * result.cod_full[0]
    assert result.cod_label[1, 1] > 0.9 * result.cod_full[1]
    assert 0.2 < result.cod_label[0, 2] / result.cod_full[2] < 0.8


def test_one_label_is_refused():
    with pytest.raises(ValueError, match="two labels"):
        leave_one_label_out(np.ones((10, 3)), np.ones((10, 3)), np.ones((10, 1)), ["a"])
