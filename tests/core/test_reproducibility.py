"""Same inputs and seed, same bytes: model files and catalogues of two separate ``slam`` runs are identical."""

from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.table import Table
from survey_files import run_slam, write_survey
from synthetic_data import LABEL_NAMES

import slamlib
from slamlib import SlamModel, modelfile


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Train and predict twice, each command in its own Python process."""
    directory = tmp_path_factory.mktemp("reproducibility")
    table, arrays = write_survey(directory, n_star=40, n_pix=40, seed=8, name="train")
    _, target_arrays = write_survey(directory, n_star=12, n_pix=40, seed=9, name="targets")
    environment = {**os.environ, "SLAMLIB_CACHE": str(directory / "cache")}
    for run in ("first", "second"):
        run_slam("train", table, "--labels", *LABEL_NAMES, "--arrays", arrays, "--output", directory / f"{run}.npz",
                 "--grid-c", "10", "100", "--grid-gamma", "0.1", "--cv", "4", "--seed", "3", "--n-jobs", "1",
                 env=environment)
        run_slam("predict", directory / f"{run}.npz", "--arrays", target_arrays, "--output", directory / f"{run}.fits",
                 "--chunk-size", "5", "--n-jobs", "1", env=environment)
    return directory


def test_two_training_runs_write_byte_identical_model_files(two_runs):
    assert (two_runs / "first.npz").read_bytes() == (two_runs / "second.npz").read_bytes()
    first, _ = modelfile.load_arrays(two_runs / "first.npz")
    second, _ = modelfile.load_arrays(two_runs / "second.npz")
    assert sorted(first) == sorted(second)
    for name in first:
        assert first[name].tobytes() == second[name].tobytes(), name


def test_two_prediction_runs_write_identical_catalogues(two_runs):
    assert (two_runs / "first.fits").read_bytes() == (two_runs / "second.fits").read_bytes()
    catalogue = Table.read(two_runs / "first.fits", mask_invalid=False, character_as_bytes=False)
    assert len(catalogue) == 12 and catalogue["converged"].all()


def test_model_file_records_library_versions_and_parameters(two_runs):
    model = SlamModel.load(two_runs / "first.npz")
    header = model.file_header_
    assert header["format"] == "slamlib-model" and header["format_version"] == modelfile.FORMAT_VERSION
    assert header["library_versions"]["slamlib"] == slamlib.__version__
    assert set(header["library_versions"]) == {"slamlib", "numpy", "scipy", "scikit-learn"}
    parameters = header["metadata"]["params"]
    assert parameters["param_grid"] == {"C": [10.0, 100.0], "gamma": [0.1]}
    assert (parameters["epsilon"], parameters["cv"], parameters["random_state"]) == (0.05, 4, 3)
    assert header["metadata"]["label_names"] == LABEL_NAMES and header["metadata"]["n_train"] == 40
    np.testing.assert_array_equal(model.wave_, 4000.0 + np.arange(40))


def test_predicting_twice_in_one_process_gives_identical_labels(two_runs):
    model = SlamModel.load(two_runs / "first.npz")
    with np.load(two_runs / "targets.npz") as arrays:
        flux, ivar = arrays["flux"], arrays["ivar"]
    first, second = model.predict(flux, ivar, n_jobs=1), model.predict(flux, ivar, n_jobs=1)
    for name in ("labels", "errors", "rchi2", "n_iter"):
        assert getattr(first, name).tobytes() == getattr(second, name).tobytes(), name
