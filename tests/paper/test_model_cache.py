import numpy as np
import pytest
from synthetic_data import LABEL_NAMES, make_data

from slampaper import model_cache


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SLAMLIB_CACHE", str(tmp_path))
    return tmp_path


def test_second_call_loads_instead_of_training_and_damage_forces_a_retrain(cache):
    labels, flux, ivar = make_data(n_star=60, n_pix=8)
    calls = []

    def fit(model):
        calls.append(1)
        return model.fit(flux, ivar, labels, LABEL_NAMES)

    parameters = {"cv": 3, "n_jobs": 1, "param_grid": {"C": [10.0], "gamma": [0.1]}}
    first, provenance = model_cache.cached_model("toy", parameters, fit)
    second, provenance_again = model_cache.cached_model("toy", {**parameters, "n_jobs": 2}, fit)
    assert len(calls) == 1 and provenance_again["from_cache"] and not provenance["from_cache"]
    assert provenance_again["training_seconds"] == provenance["training_seconds"]
    np.testing.assert_array_equal(first.cv_mse_, second.cv_mse_)
    assert second.n_jobs == 2
    model_cache.cached_model("other data", parameters, fit)
    assert len(calls) == 2
    model_file = next((cache / "models").glob(f"{provenance['key']}.npz"))
    model_file.write_bytes(model_file.read_bytes()[:100])
    model_cache.cached_model("toy", parameters, fit)
    assert len(calls) == 3
