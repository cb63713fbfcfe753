"""Scale-out on Dask: training blocks and prediction chunks on a LocalCluster give the local results bit for bit."""

from __future__ import annotations

import time
from pathlib import Path

import dask
import numpy as np
import pytest
from astropy.table import Table
from distributed import Client, LocalCluster
from survey_files import write_survey
from synthetic_data import LABEL_NAMES, make_data

from slamlib import SlamModel, modelfile
from slamlib.pipeline.checkpoint import ResumableTraining
from slamlib.pipeline.cli import main
from slamlib.pipeline.scaleout import (
    DaskRunner,
    predict_labels_on_cluster,
    train_pixels_on_cluster,
)
from slamlib.scaling import Standardizer
from slamlib.svr import batched, libsvm
from slamlib.svr.folds import kfold_indices
from slamlib.svr.problem import TrainingProblem

GRID = {"C": [10.0, 100.0], "gamma": [0.1, 0.01]}
MODEL_PARAMETERS = {"param_grid": GRID, "cv": 3, "n_jobs": 1, "random_state": 0}
N_TRAIN = 40
N_PIX = 30
MIN_GOOD_STARS = 6  # 2 x 3 folds, as SlamModel uses
BLOCK_SIZE = 8  # 30 pixels: 4 blocks, the last one shorter


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, as on a real cluster (tasks and data are pickled)."""
    # dashboard_address=":0": a free port, so that concurrent test runs do not compete for 8787.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local_cluster:
        yield local_cluster


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster, set_as_default=False) as connected:
        yield connected


@pytest.fixture(scope="module")
def data():
    """40 training and 12 target stars on 30 pixels, with bad pixels, an untrained pixel and an unfittable target."""
    labels, flux, ivar = make_data(n_star=N_TRAIN + 12, n_pix=N_PIX, rng=np.random.default_rng(3))
    ivar[5, :20] = 0.0  # a training star with bad pixels
    ivar[:35, 7] = 0.0  # a pixel with 5 good stars, fewer than 2 x 3 folds: left untrained
    ivar[N_TRAIN + 4] = 0.0  # a target without any good pixel: flagged, not fitted
    return labels, flux, ivar


@pytest.fixture(scope="module")
def standardized(data):
    labels, flux, ivar = data
    labels, flux, ivar = labels[:N_TRAIN], flux[:N_TRAIN], ivar[:N_TRAIN]
    good = np.isfinite(flux) & (ivar > 0)
    flux_std = np.where(good, Standardizer.fit(flux, good=good).transform(np.where(good, flux, 0.0)), 0.0)
    return Standardizer.fit(labels).transform(labels), flux_std, good, kfold_indices(N_TRAIN, 3, 0)


@pytest.fixture(scope="module")
def problem(standardized):
    return TrainingProblem(*standardized, GRID, 0.05, min_good_stars=MIN_GOOD_STARS)


@pytest.fixture(scope="module")
def local_model(data):
    labels, flux, ivar = data
    return SlamModel(**MODEL_PARAMETERS).fit(flux[:N_TRAIN], ivar[:N_TRAIN], labels[:N_TRAIN], LABEL_NAMES)


def assert_same_training(expected, actual) -> None:
    """Every array of two TrainingResults, byte for byte (NaNs included)."""
    for name in ("best_c", "best_gamma", "cv_mse_grid", "cv_mse", "cv_md", "mse", "md", "trained", "fold_of_star"):
        a, b = getattr(expected, name), getattr(actual, name)
        assert (a is None and b is None) or (a.dtype == b.dtype and a.tobytes() == b.tobytes()), name
    assert (expected.fold_expansions is None) == (actual.fold_expansions is None)
    for expansion_a, expansion_b in zip([expected.expansion, *(expected.fold_expansions or [])],
                                        [actual.expansion, *(actual.fold_expansions or [])]):
        for name in ("support_labels", "dual_coef", "intercept", "gamma"):
            assert getattr(expansion_a, name).tobytes() == getattr(expansion_b, name).tobytes(), name


def assert_same_prediction(expected, actual) -> None:
    for name in ("labels", "errors", "cov", "converged", "rchi2", "rms", "n_iter", "n_good_pixels", "initial_labels"):
        a, b = getattr(expected, name), getattr(actual, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    assert expected.reason.tolist() == actual.reason.tolist()
    assert expected.label_names == actual.label_names


def model_arrays(model: SlamModel, path: Path) -> dict[str, np.ndarray]:
    model.save(path)
    return modelfile.load_arrays(path)[0]


# ----------------------------------------------------------------------------- training
def test_libsvm_training_on_the_cluster_equals_one_local_call(standardized, problem, cluster):
    local = libsvm.train_pixels(*standardized, GRID, 0.05, min_good_stars=MIN_GOOD_STARS, n_jobs=1)
    distributed = train_pixels_on_cluster(problem, libsvm.LibsvmBackend(), scheduler=cluster.scheduler_address,
                                          block_size=BLOCK_SIZE)
    assert not distributed.trained[7] and distributed.trained.sum() == N_PIX - 1
    assert_same_training(local, distributed)


def test_batched_training_on_the_cluster_equals_local_block_training(standardized, problem, client, tmp_path):
    arguments = (*standardized, GRID, 0.05)
    block_size = 15  # two blocks: the batched backend takes longer per call
    local_blocks = ResumableTraining(tmp_path, block_size=block_size).train(problem, batched.BatchedBackend(), n_jobs=1)
    distributed = train_pixels_on_cluster(problem, "batched", scheduler=client, block_size=block_size)
    assert_same_training(local_blocks, distributed)
    # Blocks of 15 pixels are not made of whole batched pixel groups (32): one call over all pixels
    # agrees with them to rounding only (documented in slamlib.pipeline.scaleout).
    one_call = batched.train_pixels(*arguments, min_good_stars=MIN_GOOD_STARS, n_jobs=1)
    np.testing.assert_allclose(one_call.expansion.dual_coef, distributed.expansion.dual_coef, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(one_call.best_c, distributed.best_c)


def test_model_fitted_on_the_cluster_equals_the_local_model(data, local_model, client, tmp_path):
    labels, flux, ivar = data
    on_cluster = SlamModel(**MODEL_PARAMETERS).fit(flux[:N_TRAIN], ivar[:N_TRAIN], labels[:N_TRAIN], LABEL_NAMES,
                                                   runner=DaskRunner(client))
    expected = model_arrays(local_model, tmp_path / "local.npz")
    actual = model_arrays(on_cluster, tmp_path / "cluster.npz")
    assert sorted(expected) == sorted(actual)
    for name in expected:
        assert expected[name].tobytes() == actual[name].tobytes(), name


class CrashingOnTheLastBlock:
    """LIBSVM training, except that the short last block (6 of 30 pixels) fails after a while, as if its worker died.

    Named "libsvm", so that its checkpoint blocks are those of the LIBSVM backend.
    """

    name = "libsvm"

    def train(self, problem, *, n_jobs=-1):
        if problem.n_pix < BLOCK_SIZE:
            time.sleep(1.0)  # the other blocks finish and are checkpointed meanwhile
            raise RuntimeError("simulated crash of a worker")
        return libsvm.LibsvmBackend().train(problem, n_jobs=n_jobs)

    def memory_estimate(self, problem, *, n_workers=1):
        return libsvm.LibsvmBackend().memory_estimate(problem, n_workers=n_workers)


def test_crashed_cluster_training_resumes_with_only_the_missing_blocks(standardized, problem, client, tmp_path, caplog):
    arguments = (*standardized, GRID, 0.05)
    options = {"block_size": BLOCK_SIZE, "checkpoint_dir": tmp_path / "checkpoint"}
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_pixels_on_cluster(problem, CrashingOnTheLastBlock(), scheduler=client, **options)
    written = {path.name: path.stat().st_ino for path in (tmp_path / "checkpoint").glob("block-*.npz")}
    assert 1 <= len(written) <= 3 and "block-000003.npz" not in written

    with caplog.at_level("INFO", logger="slamlib.pipeline.checkpoint"):
        resumed = train_pixels_on_cluster(problem, libsvm.LibsvmBackend(), scheduler=client, **options)
    assert f"{len(written)} of 4 pixel blocks already trained" in caplog.text
    after = {path.name: path.stat().st_ino for path in (tmp_path / "checkpoint").glob("block-*.npz")}
    assert len(after) == 4 and all(after[name] == inode for name, inode in written.items())  # loaded, not retrained
    uninterrupted = libsvm.train_pixels(*arguments, min_good_stars=MIN_GOOD_STARS, n_jobs=1)
    assert_same_training(uninterrupted, resumed)
    # The checkpoint is the one of local block training: a local run finds every block done.
    local = ResumableTraining(tmp_path / "checkpoint", block_size=BLOCK_SIZE).train(problem, libsvm.LibsvmBackend(),
                                                                                   n_jobs=1)
    assert_same_training(resumed, local)


# ---------------------------------------------------------------------------- prediction
def test_prediction_on_the_cluster_equals_local_prediction(data, local_model, client):
    _, flux, ivar = data
    targets = flux[N_TRAIN:], ivar[N_TRAIN:]
    local = local_model.predict(*targets, method="reference")
    assert local.reason[4] and local.converged.sum() == 11
    assert_same_prediction(local, local_model.predict(*targets, method="reference", runner=DaskRunner(client)))
    # Many small tasks: the reference fits every spectrum on its own, so the chunking changes nothing.
    in_chunks = predict_labels_on_cluster(*targets, local_model.state_, scheduler=client, spectra_per_task=5,
                                          method="reference")
    assert_same_prediction(local, in_chunks)
    assert_same_prediction(local, local_model.predict(*targets, method="reference",
                                                      runner=DaskRunner(client, spectra_per_task=5)))
    assert_same_prediction(local_model.predict(*targets, method="batched"),
                           local_model.predict(*targets, method="batched", runner=DaskRunner(client)))


def test_cross_validated_labels_on_the_cluster_equal_local_ones(data, local_model, cluster):
    _, flux, ivar = data
    local = local_model.predict_cv(flux[:N_TRAIN], ivar[:N_TRAIN])
    assert_same_prediction(local, local_model.predict_cv(flux[:N_TRAIN], ivar[:N_TRAIN],
                                                         runner=DaskRunner(cluster.scheduler_address)))


# ------------------------------------------------------------------------- bad schedulers
@pytest.mark.parametrize(("scheduler", "message"), [
    (8786, "must be a Dask scheduler address"),
    ("", "empty string"),
    ("   ", "empty string"),
    ("nonsense://127.0.0.1:8786", "not a Dask scheduler address"),
    ("tcp://", "names no host"),
])
def test_an_invalid_scheduler_is_a_value_error(data, local_model, problem, scheduler, message):
    """Refused when the runner is made (before any work), and by the cluster functions themselves."""
    labels, flux, ivar = data
    with pytest.raises(ValueError, match=message):
        SlamModel(**MODEL_PARAMETERS).fit(flux[:N_TRAIN], ivar[:N_TRAIN], labels[:N_TRAIN],
                                          runner=DaskRunner(scheduler))
    with pytest.raises(ValueError, match=message):
        local_model.predict(flux[N_TRAIN:], ivar[N_TRAIN:], runner=DaskRunner(scheduler))
    with pytest.raises(ValueError, match=message):
        local_model.predict_cv(flux[:N_TRAIN], ivar[:N_TRAIN], runner=DaskRunner(scheduler))
    with pytest.raises(ValueError, match=message):
        train_pixels_on_cluster(problem, "libsvm", scheduler=scheduler)
    with pytest.raises(ValueError, match=message):
        predict_labels_on_cluster(flux[N_TRAIN:], ivar[N_TRAIN:], local_model.state_, scheduler=scheduler)


def test_a_cluster_object_or_a_closed_client_is_a_value_error(data, local_model, cluster):
    _, flux, ivar = data
    with pytest.raises(ValueError, match="cluster.scheduler_address"):
        local_model.predict(flux[N_TRAIN:], ivar[N_TRAIN:], runner=DaskRunner(cluster))
    closed = Client(cluster, set_as_default=False)
    closed.close()
    with pytest.raises(ValueError, match="not running"):
        local_model.predict(flux[N_TRAIN:], ivar[N_TRAIN:], runner=DaskRunner(closed))
    # A Client closed after the runner was made is refused when the work starts.
    closing = Client(cluster, set_as_default=False)
    runner = DaskRunner(closing)
    closing.close()
    with pytest.raises(ValueError, match="not running"):
        local_model.predict(flux[N_TRAIN:], ivar[N_TRAIN:], runner=runner)


def test_an_unreachable_scheduler_is_a_value_error(data, local_model):
    _, flux, ivar = data
    runner = DaskRunner("tcp://127.0.0.1:1")  # a well-formed address: accepted until the work connects
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(ValueError, match="no Dask scheduler answers at 'tcp://127.0.0.1:1'"):
            local_model.predict(flux[N_TRAIN:], ivar[N_TRAIN:], runner=runner)


# ---------------------------------------------------------------------------------- CLI
def test_slam_train_and_predict_with_scheduler_match_the_local_commands(cluster, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLAMLIB_CACHE", str(tmp_path / "cache"))
    train_table, train_arrays = write_survey(tmp_path, n_star=40, n_pix=20, seed=0, name="train")
    _, target_arrays = write_survey(tmp_path, n_star=7, n_pix=20, seed=1, name="targets")
    training = ["train", str(train_table), "--labels", *LABEL_NAMES, "--arrays", str(train_arrays),
                "--grid-c", "10", "--grid-gamma", "0.1", "--cv", "3", "--n-jobs", "1"]
    assert main([*training, "--output", str(tmp_path / "local.npz")]) == 0
    assert main([*training, "--output", str(tmp_path / "cluster.npz"), "--scheduler", cluster.scheduler_address]) == 0
    assert (tmp_path / "local.npz").read_bytes() == (tmp_path / "cluster.npz").read_bytes()

    prediction = ["predict", str(tmp_path / "local.npz"), "--arrays", str(target_arrays), "--n-jobs", "1"]
    assert main([*prediction, "--output", str(tmp_path / "local.fits")]) == 0
    assert main([*prediction, "--output", str(tmp_path / "cluster.fits"),
                 "--scheduler", cluster.scheduler_address]) == 0
    local = Table.read(tmp_path / "local.fits", mask_invalid=False, character_as_bytes=False)
    distributed = Table.read(tmp_path / "cluster.fits", mask_invalid=False, character_as_bytes=False)
    assert len(local) == 7 and local.colnames == distributed.colnames
    for name in local.colnames:
        np.testing.assert_array_equal(local[name], distributed[name])

    capsys.readouterr()
    assert main([*prediction, "--output", str(tmp_path / "bad.fits"), "--scheduler", "nonsense://x:1"]) == 1
    assert "slam: error: scheduler 'nonsense://x:1' is not a Dask scheduler address" in capsys.readouterr().err
    for command in ("train", "predict"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--scheduler ADDRESS" in capsys.readouterr().out
