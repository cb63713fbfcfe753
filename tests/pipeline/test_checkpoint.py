"""Checkpointed training: same result as a plain fit, resumes after Ctrl-C or SIGKILL, never reuses a foreign checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from survey_files import write_survey
from synthetic_data import LABEL_NAMES, make_data

from slamlib import SlamModel, modelfile
from slamlib.pipeline.checkpoint import (
    CheckpointMismatchError,
    ResumableTraining,
    blocks_in_memory,
    clear_checkpoint,
)
from slamlib.scaling import Standardizer
from slamlib.svr.folds import kfold_indices
from slamlib.svr.libsvm import LibsvmBackend
from slamlib.svr.problem import TrainingProblem

PARAMETERS = {"param_grid": {"C": [10.0, 100.0], "gamma": [0.1]}, "cv": 3, "random_state": 0}


@pytest.fixture(scope="module")
def data():
    labels, flux, ivar = make_data(n_star=36, n_pix=40, rng=np.random.default_rng(3))
    ivar[5, :30] = 0.0  # a star with bad pixels
    ivar[:31, 7] = 0.0  # a pixel with too few good stars: left untrained
    return labels, flux, ivar


@pytest.fixture(scope="module")
def plain_model(data):
    labels, flux, ivar = data
    return SlamModel(n_jobs=1, **PARAMETERS).fit(flux, ivar, labels, LABEL_NAMES)


def model_arrays(model: SlamModel, path: Path) -> dict[str, np.ndarray]:
    model.save(path)
    arrays, _ = modelfile.load_arrays(path)
    return arrays


def assert_same_model(model_a: SlamModel, model_b: SlamModel, tmp_path: Path) -> None:
    arrays_a = model_arrays(model_a, tmp_path / "a.npz")
    arrays_b = model_arrays(model_b, tmp_path / "b.npz")
    assert sorted(arrays_a) == sorted(arrays_b)
    for name in arrays_a:
        assert arrays_a[name].tobytes() == arrays_b[name].tobytes(), name


def training_problem(data) -> TrainingProblem:
    labels, flux, ivar = data
    good = np.isfinite(flux) & (ivar > 0)
    flux_std = np.where(good, Standardizer.fit(flux, good=good).transform(np.where(good, flux, 0.0)), 0.0)
    return TrainingProblem(Standardizer.fit(labels).transform(labels), flux_std, good, kfold_indices(len(labels), 3, 0),
                           PARAMETERS["param_grid"], 0.05, min_good_stars=6)


def test_checkpointed_fit_equals_plain_fit_bit_for_bit(data, plain_model, tmp_path):
    labels, flux, ivar = data
    checkpointed = SlamModel(n_jobs=2, **PARAMETERS).fit(flux, ivar, labels, LABEL_NAMES,
                                                        runner=ResumableTraining(tmp_path / "checkpoint"))
    assert not checkpointed.trained_[7]
    assert sorted(path.name for path in (tmp_path / "checkpoint").iterdir()) == [
        "block-000000.npz", "block-000001.npz", "checkpoint.json"]
    assert_same_model(plain_model, checkpointed, tmp_path)


class Interrupting:
    """A backend that trains like ``backend`` but raises KeyboardInterrupt on block number ``stop_at``.

    Its calls are counted in this process: the tests train with ``n_jobs=1``, so the blocks run
    one after another here (joblib does not copy the backend to workers).
    """

    name = "test"

    def __init__(self, backend, stop_at: int | None = None) -> None:
        self.backend, self.calls, self.stop_at = backend, 0, stop_at

    def train(self, problem, *, n_jobs=-1):
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        self.calls += 1
        return self.backend.train(problem, n_jobs=n_jobs)

    def memory_estimate(self, problem, *, n_workers=1):
        return self.backend.memory_estimate(problem, n_workers=n_workers)


def batched_backend():
    return pytest.importorskip("slamlib.svr.batched").BatchedBackend()


@pytest.mark.parametrize("backend", [LibsvmBackend, batched_backend], ids=["libsvm", "batched"])
def test_interrupted_training_resumes_with_only_the_missing_blocks(data, tmp_path, backend):
    inner = backend()
    problem = training_problem(data)
    reference = ResumableTraining(tmp_path / "reference", block_size=8).train(problem, Interrupting(inner), n_jobs=1)

    with pytest.raises(KeyboardInterrupt):
        ResumableTraining(tmp_path / "resumed", block_size=8).train(problem, Interrupting(inner, stop_at=2), n_jobs=1)
    assert len(list((tmp_path / "resumed").glob("block-*.npz"))) == 2
    backend = Interrupting(inner)
    resumed = ResumableTraining(tmp_path / "resumed", block_size=8).train(problem, backend, n_jobs=1)
    assert backend.calls == 3  # 40 pixels in blocks of 8: 2 loaded, 3 trained
    for name in ("best_c", "best_gamma", "cv_mse_grid", "cv_mse", "cv_md", "mse", "md", "trained", "fold_of_star"):
        expected, actual = getattr(reference, name), getattr(resumed, name)
        assert (expected is None and actual is None) or expected.tobytes() == actual.tobytes(), name
    assert (reference.fold_expansions is None) == (resumed.fold_expansions is None)
    for expansion_a, expansion_b in zip([reference.expansion, *(reference.fold_expansions or [])],
                                        [resumed.expansion, *(resumed.fold_expansions or [])]):
        for name in ("support_labels", "dual_coef", "intercept", "gamma"):
            assert getattr(expansion_a, name).tobytes() == getattr(expansion_b, name).tobytes()


def test_checkpoint_of_other_data_or_parameters_is_refused(data, tmp_path):
    labels, flux, ivar = data
    directory = tmp_path / "checkpoint"
    SlamModel(n_jobs=1, **PARAMETERS).fit(flux, ivar, labels, LABEL_NAMES, runner=ResumableTraining(directory))
    with pytest.raises(CheckpointMismatchError, match="different training"):
        SlamModel(n_jobs=1, epsilon=0.1, **PARAMETERS).fit(flux, ivar, labels, LABEL_NAMES, runner=ResumableTraining(directory))
    changed_flux = flux.copy()
    changed_flux[0, 0] += 1e-9
    with pytest.raises(CheckpointMismatchError, match="Delete the directory"):
        SlamModel(n_jobs=1, **PARAMETERS).fit(changed_flux, ivar, labels, LABEL_NAMES, runner=ResumableTraining(directory))
    clear_checkpoint(directory)
    assert not directory.exists()
    SlamModel(n_jobs=1, epsilon=0.1, **PARAMETERS).fit(flux, ivar, labels, LABEL_NAMES, runner=ResumableTraining(directory))


def test_damaged_or_foreign_blocks_are_retrained(data, plain_model, tmp_path):
    labels, flux, ivar = data
    directory = tmp_path / "checkpoint"
    SlamModel(n_jobs=1, **PARAMETERS).fit(flux, ivar, labels, LABEL_NAMES, runner=ResumableTraining(directory))
    block = directory / "block-000001.npz"
    block.write_bytes(block.read_bytes()[:200])  # truncated
    (directory / ".block-000000.npz.abc.partial").write_bytes(b"left by a kill during a write")
    resumed = SlamModel(n_jobs=1, **PARAMETERS).fit(flux, ivar, labels, LABEL_NAMES, runner=ResumableTraining(directory))
    assert_same_model(plain_model, resumed, tmp_path)
    clear_checkpoint(directory)  # the partial file is a checkpoint file too
    assert not directory.exists()


def test_a_folder_that_is_not_a_checkpoint_is_neither_used_nor_cleared(data, tmp_path):
    labels, flux, ivar = data
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="holds other files"):
        SlamModel(n_jobs=1, **PARAMETERS).fit(flux, ivar, labels, LABEL_NAMES, runner=ResumableTraining(tmp_path))
    with pytest.raises(ValueError, match="not slamlib checkpoint files"):
        clear_checkpoint(tmp_path)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


@pytest.mark.slow
def test_training_killed_with_sigkill_resumes_to_the_same_model_file(tmp_path):
    table, arrays = write_survey(tmp_path, n_star=36, n_pix=320, seed=4)
    options = ["--labels", *LABEL_NAMES, "--arrays", arrays, "--grid-c", "10", "--grid-gamma", "0.1",
               "--cv", "3", "--n-jobs", "1", "--seed", "2"]
    command = [sys.executable, "-m", "slamlib.pipeline.cli", "train", table, *options]
    environment = {**os.environ, "SLAMLIB_CACHE": str(tmp_path / "cache")}

    checkpoint = tmp_path / "killed.npz.checkpoint"
    process = subprocess.Popen([*map(str, command), "--output", str(tmp_path / "killed.npz")], env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(checkpoint.glob("block-*.npz")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert process.poll() is None, "training ended before it could be killed; give it more pixels"
    process.send_signal(signal.SIGKILL)
    process.wait()
    n_blocks = len(list(checkpoint.glob("block-*.npz")))
    assert 1 <= n_blocks < 10 and not (tmp_path / "killed.npz").exists()

    resumed = subprocess.run([*map(str, command), "--output", str(tmp_path / "killed.npz"), "-v"], env=environment,
                             capture_output=True, text=True, check=True)
    assert f"{n_blocks} of 10 pixel blocks already trained" in resumed.stderr
    assert not checkpoint.exists()  # removed once the model is saved
    subprocess.run([*map(str, command), "--output", str(tmp_path / "straight.npz")], env=environment,
                   capture_output=True, check=True)
    assert (tmp_path / "killed.npz").read_bytes() == (tmp_path / "straight.npz").read_bytes()
    killed, _ = modelfile.load_arrays(tmp_path / "killed.npz")
    straight, _ = modelfile.load_arrays(tmp_path / "straight.npz")
    for name in straight:
        assert killed[name].tobytes() == straight[name].tobytes(), name


def section4_problem(n_star: int, n_pix: int, n_folds: int, n_c: int) -> TrainingProblem:
    """A problem of the given sizes whose arrays are read-only broadcast views (the estimates use only the sizes)."""
    return TrainingProblem(np.broadcast_to(0.0, (n_star, 3)), np.broadcast_to(0.0, (n_star, n_pix)),
                           np.broadcast_to(True, (n_star, n_pix)), kfold_indices(n_star, n_folds, 0),
                           {"C": [10.0 ** k for k in range(n_c)], "gamma": [0.1]}, 0.05, min_good_stars=2 * n_folds)


def test_batched_blocks_run_only_as_many_at_once_as_fit_in_memory(monkeypatch):
    """Every batched block holds its own kernel: at the Section 4 size (17,000 stars, ~3 GB a
    block) an 8 GB machine trains one block at a time; LIBSVM blocks are not limited."""
    from slamlib.pipeline import checkpoint
    from slamlib.svr import batched

    section4 = section4_problem(n_star=17000, n_pix=1901, n_folds=8, n_c=5)
    per_block = batched.BatchedBackend().memory_estimate(section4.columns(np.arange(32)), n_workers=1)
    assert per_block == batched.memory_estimate(17000, 32, 8, 5, n_workers=1,
                                                chunk_size=batched.default_chunk_size(17000, 8, 5))
    assert per_block > 2 * 2**30                                       # at least the 17,000^2 kernel
    monkeypatch.setattr(checkpoint, "physical_memory", lambda: 8 * 2**30)
    assert blocks_in_memory(batched.BatchedBackend(), section4, block_size=32, n_jobs=4) == 1
    assert blocks_in_memory(LibsvmBackend(), section4, block_size=32, n_jobs=4) == 4
    monkeypatch.setattr(checkpoint, "physical_memory", lambda: 256 * 2**30)
    assert blocks_in_memory(batched.BatchedBackend(), section4, block_size=32, n_jobs=4) == 4
    small = section4_problem(n_star=300, n_pix=1901, n_folds=5, n_c=2)
    assert blocks_in_memory(batched.BatchedBackend(), small, block_size=32, n_jobs=2) == 2
