"""Resumable per-pixel training: one checkpoint file per block of pixels.

:class:`ResumableTraining` is a training runner (:mod:`slamlib.runner`) for any backend
(:mod:`slamlib.svr.backend`): ``SlamModel.fit(..., runner=ResumableTraining(directory))``.
The pixels are cut into fixed blocks
of ``block_size`` consecutive columns (the cut does not depend on ``n_jobs``). Blocks are
trained in parallel, each by one backend call on its own columns of the standardized flux,
and every finished block is written at once to ``block-NNNNNN.npz`` in the checkpoint
directory. A rerun with the same directory loads the finished blocks and trains only the
others, so an interrupted training (Ctrl-C, SIGKILL, a crash) loses at most the blocks in
progress, and the assembled result is bit for bit that of an uninterrupted run: every pixel
is trained from the same inputs whether it ran before or after the interruption.

Keying. The directory holds ``checkpoint.json`` with a SHA-256 *training key* over
everything that shapes the result: the training problem (standardized labels and flux, the
good-pixel mask, the CV folds, the grid, epsilon, the minimum number of good stars;
:meth:`slamlib.svr.problem.TrainingProblem.checksum`), the backend, the block size and the
versions of slamlib, numpy, scipy and scikit-learn. Every block file
repeats the key. A directory whose key differs from the current training (other data,
parameters or library versions) is never reused: :func:`train_pixel_blocks` raises
:class:`CheckpointMismatchError` (a ``ValueError``) naming the directory; delete it (or
call :func:`clear_checkpoint`, or ``slam train --restart``) to start afresh. A block file
that is damaged or carries another key is ignored and retrained.

The same block machinery serves training on a Dask cluster (:mod:`slamlib.pipeline.scaleout`):
:func:`train_pixel_blocks` takes a *block runner* that trains the pending blocks (joblib
here, cluster tasks there), each by :func:`train_block`, and merges them with
:func:`assemble_blocks`, with or without a checkpoint directory. How many blocks train at once
here is asked of the backend (:func:`blocks_in_memory`, from its ``memory_estimate``). A checkpoint begun on one
machine can therefore be finished on a cluster and vice versa.

Files are written to a temporary name and renamed (:func:`slamlib.files.atomic_write`),
so a kill during a write never leaves a half-written block that looks complete; the
format is the checksummed, pickle-free npz of :mod:`slamlib.modelfile`.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from slamlib import modelfile
from slamlib.files import write_json_atomically
from slamlib.pipeline.progress import make_progress_bar
from slamlib.svr.backend import Backend, physical_memory, worker_count
from slamlib.svr.folds import fold_assignment
from slamlib.svr.problem import TrainingProblem
from slamlib.svr.result import PIXEL_ARRAYS, TrainingResult

__all__ = [
    "CHECKPOINT_BLOCK_SIZE",
    "CHECKPOINT_FORMAT_VERSION",
    "BlockRunner",
    "CheckpointMismatchError",
    "ResumableTraining",
    "assemble_blocks",
    "blocks_in_memory",
    "clear_checkpoint",
    "pixel_blocks",
    "train_block",
    "train_pixel_blocks",
    "training_key",
]

#: Pixels per checkpoint block (an interruption loses at most the blocks in progress).
CHECKPOINT_BLOCK_SIZE = 32
#: Version of the checkpoint directory layout.
CHECKPOINT_FORMAT_VERSION = 2

#: Backends whose first block compiles numba kernels (announced in the progress bar and the log).
COMPILED_BACKENDS = ("batched",)

_MANIFEST = "checkpoint.json"
_LOG = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """A checkpoint directory holds the checkpoint of a different training."""


def training_key(problem: TrainingProblem, backend_name: str, block_size: int) -> str:
    """SHA-256 over the training problem, the backend, the block size and the library versions.

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    return problem.checksum({"backend": str(backend_name), "block_size": int(block_size),
                             "library_versions": modelfile.library_versions(),
                             "format_version": CHECKPOINT_FORMAT_VERSION})


def clear_checkpoint(checkpoint_dir: str | Path) -> None:
    """Delete a checkpoint directory written by :class:`ResumableTraining` (or a :class:`~slamlib.pipeline.scaleout.DaskRunner`).

    Refuses directories that do not look like one (no ``checkpoint.json`` and files other
    than block files), so a mistyped path cannot wipe unrelated data.
    """
    directory = Path(checkpoint_dir)
    if not directory.exists():
        return
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory; it cannot be a slamlib checkpoint.")
    foreign = _foreign_files(directory)
    if foreign:
        raise ValueError(
            f"{directory} holds files that are not slamlib checkpoint files ({foreign[:5]}); "
            "delete it by hand if you really mean to."
        )
    shutil.rmtree(directory)


def _foreign_files(directory: Path) -> list[str]:
    """Names in ``directory`` that a checkpoint never writes."""
    own = ("block-", ".block-", _MANIFEST, f".{_MANIFEST}")
    return sorted(path.name for path in directory.iterdir() if not path.name.startswith(own))


def _open_directory(directory: Path, key: str, description: dict[str, Any]) -> None:
    """Create the checkpoint directory or check that it belongs to this training."""
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"checkpoint directory {directory} is a file; give a new or empty folder.")
    directory.mkdir(parents=True, exist_ok=True)
    foreign = _foreign_files(directory)
    if foreign:
        raise ValueError(
            f"checkpoint directory {directory} holds other files ({foreign[:5]}); give a new or empty folder "
            "(or an existing slamlib checkpoint)."
        )
    manifest_path = directory / _MANIFEST
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise CheckpointMismatchError(
                f"{manifest_path} is damaged ({error}); delete the checkpoint directory {directory} to start afresh."
            ) from error
        if manifest.get("key") != key:
            raise CheckpointMismatchError(
                f"the checkpoint in {directory} belongs to a different training (other data, parameters or "
                f"library versions: key {str(manifest.get('key'))[:12]}..., this training {key[:12]}...); "
                "it will not be reused. Delete the directory (slam train --restart) or choose another "
                "checkpoint directory."
            )
        return
    write_json_atomically(manifest_path, {"key": key, **description})


def _block_path(directory: Path, number: int) -> Path:
    return directory / f"block-{number:06d}.npz"


def _load_block(path: Path, key: str, columns: np.ndarray) -> dict[str, np.ndarray] | None:
    """The arrays of a finished block, or None if absent, damaged or from another training."""
    if not path.exists():
        return None
    try:
        arrays, header = modelfile.load_arrays(path)
    except ValueError as error:
        _LOG.warning("ignoring damaged checkpoint block %s (%s); it is retrained.", path.name, error)
        return None
    metadata = header.get("metadata", {})
    if metadata.get("key") != key or not np.array_equal(arrays.get("columns"), columns):
        _LOG.warning("ignoring checkpoint block %s of another training; it is retrained.", path.name)
        return None
    return arrays


def assemble_blocks(blocks: list[dict[str, np.ndarray]], problem: TrainingProblem) -> TrainingResult:
    """Merge the arrays of consecutive pixel blocks into one TrainingResult.

    Parameters
    ----------
    blocks : list of dict of ndarray
        Block arrays (:func:`train_block`) covering the pixels 0..n_pix-1 in order.
    problem : TrainingProblem
        The whole problem (its standardized labels are the support labels of every model).

    Returns
    -------
    TrainingResult
    """
    merged = {name: np.concatenate([block[name] for block in blocks]) for name in PIXEL_ARRAYS}
    if merged["best_c"].shape != (problem.n_pix,):
        raise ValueError(f"checkpoint blocks cover {merged['best_c'].shape[0]} pixels, expected {problem.n_pix}.")
    fold_of_star = None
    if all("fold_dual_coef" in block for block in blocks):
        merged["fold_dual_coef"] = np.concatenate([block["fold_dual_coef"] for block in blocks], axis=1)
        merged["fold_intercept"] = np.concatenate([block["fold_intercept"] for block in blocks], axis=1)
        fold_of_star = fold_assignment(problem.folds, problem.n_star)
    support_labels = np.array(problem.labels_std, dtype=float, copy=True)
    return TrainingResult.from_arrays(merged, support_labels, fold_of_star)


def pixel_blocks(n_pix: int, block_size: int) -> list[np.ndarray]:
    """Cut the pixel columns 0..n_pix-1 into consecutive blocks of ``block_size`` columns.

    Parameters
    ----------
    n_pix : int
        Number of pixels.
    block_size : int
        Pixels per block (the last block may be shorter).

    Returns
    -------
    list of ndarray of int
        The columns of every block, in order.
    """
    if not isinstance(block_size, (int, np.integer)) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
    return [np.arange(start, min(start + block_size, n_pix)) for start in range(0, n_pix, block_size)]


def train_block(backend: Backend, problem: TrainingProblem, columns: np.ndarray) -> dict[str, np.ndarray]:
    """Train one block of pixels (the backend single-threaded) and return its block arrays.

    This is the unit of work of every block-wise training, local (:class:`ResumableTraining`)
    or on a Dask cluster (:mod:`slamlib.pipeline.scaleout`), so both give the same arrays for a block.

    Parameters
    ----------
    backend : Backend
    problem : TrainingProblem
        The whole problem; only ``columns`` are trained.
    columns : ndarray of int, shape (n_block,)
        The block's pixel columns (stored with the arrays).

    Returns
    -------
    dict of ndarray
        The per-pixel arrays of the block (:meth:`TrainingResult.to_arrays` and ``columns``),
        as written to a block file and merged by :func:`assemble_blocks`.
    """
    result = backend.train(problem.columns(columns), n_jobs=1)
    return {"columns": np.asarray(columns, dtype=np.int64), **result.to_arrays()}


#: Runs the pending blocks: receives {block number: columns} and yields (block number, block
#: arrays of :func:`train_block`) as blocks finish, in any order.
BlockRunner = Callable[[dict[int, np.ndarray]], Iterator[tuple[int, dict[str, np.ndarray]]]]


def train_pixel_blocks(
    run_blocks: BlockRunner,
    problem: TrainingProblem,
    backend_name: str,
    *,
    block_size: int = CHECKPOINT_BLOCK_SIZE,
    checkpoint_dir: str | Path | None = None,
) -> TrainingResult:
    """Train all pixels block by block with any block runner, optionally checkpointing every block.

    The pixels are cut by :func:`pixel_blocks`; ``run_blocks`` trains the blocks that are
    not yet done (locally with joblib, or on a Dask cluster) and yields each block's arrays
    as it finishes; with a ``checkpoint_dir`` every finished block is written at once, and
    blocks already in the directory are loaded instead of trained. The blocks are merged by
    :func:`assemble_blocks`.

    Parameters
    ----------
    run_blocks : callable
        See :data:`BlockRunner`.
    problem : TrainingProblem
    backend_name : str
        The backend's name; part of the training key.
    block_size : int
        Pixels per block; part of the training key (blocks must be identical on resume).
    checkpoint_dir : str or Path, optional
        Directory of the checkpoint (created if missing); None trains without one.

    Returns
    -------
    TrainingResult

    Raises
    ------
    CheckpointMismatchError
        If ``checkpoint_dir`` holds the checkpoint of a different training.
    """
    n_pix = problem.n_pix
    compiles_first = backend_name in COMPILED_BACKENDS
    block_columns = pixel_blocks(n_pix, block_size)
    blocks: list[dict[str, np.ndarray] | None] = [None] * len(block_columns)
    directory = key = None
    if checkpoint_dir is not None:
        description = {"backend": str(backend_name), "block_size": int(block_size), **problem.description()}
        key = training_key(problem, backend_name, block_size)
        directory = Path(checkpoint_dir)
        _open_directory(directory, key, description)
        blocks = [_load_block(_block_path(directory, number), key, columns)
                  for number, columns in enumerate(block_columns)]
        n_done = sum(block is not None for block in blocks)
        if n_done:
            # A warning, so that the command says it by default: a resumed run is not a fresh one.
            _LOG.warning("resuming from %s: %d of %d pixel blocks already trained.", directory, n_done, len(blocks))
    pending = {number: block_columns[number] for number, block in enumerate(blocks) if block is None}
    n_done_pixels = n_pix - sum(columns.size for columns in pending.values())
    with make_progress_bar(total=n_pix, initial=n_done_pixels, unit="pixel", desc="training") as bar:
        if pending and compiles_first:
            _LOG.info("the first pixel block compiles the %s backend's numba kernels (cached on disk for later "
                      "runs); the progress bar starts moving after it.", backend_name)
            bar.set_postfix_str("first block: compiling numba kernels", refresh=True)
        if pending:
            for number, arrays in run_blocks(pending):
                columns = block_columns[number]
                if directory is not None:
                    modelfile.save_arrays(_block_path(directory, number), arrays, {"key": key, "block": number})
                    _LOG.debug("checkpointed pixel block %d/%d (pixels %d-%d).", number + 1, len(blocks),
                               columns[0], columns[-1])
                blocks[number] = arrays
                if compiles_first:
                    bar.set_postfix_str("", refresh=False)
                    compiles_first = False
                bar.update(columns.size)
    missing = [number for number, block in enumerate(blocks) if block is None]
    if missing:
        raise RuntimeError(f"pixel blocks {missing[:10]} were never trained (the block runner skipped them).")
    return assemble_blocks(blocks, problem)


def blocks_in_memory(backend: Backend, problem: TrainingProblem, block_size: int, n_jobs: int) -> int:
    """How many blocks to train at once: ``n_jobs`` workers (-1: all cores), fewer where the
    backend says their blocks would not fit in this machine's memory together.

    Each block's need is the backend's own :meth:`~slamlib.svr.backend.Backend.memory_estimate`
    for one block with one worker (the batched backend holds an n_star x n_star kernel per
    block: ~3 GB at the Section 4 size of 17,000 stars); the assembled result arrays, held
    beside them, are counted too. Never fewer than one; a cut is logged.
    """
    pixel_blocks(problem.n_pix, block_size)  # checks block_size
    workers = worker_count(n_jobs)
    available = physical_memory()
    if workers == 1 or not available:
        return workers
    block = problem.columns(np.arange(min(block_size, problem.n_pix)))
    per_block = backend.memory_estimate(block, n_workers=1)
    assembled = 8 * (problem.n_folds + 1) * problem.n_pix * problem.n_star
    fitting = max(1, int((available - assembled) // max(per_block, 1)))
    if fitting < workers:
        _LOG.warning("training %d blocks at a time instead of %d: each %s block needs about %.1f GiB "
                     "(%d stars), and this machine has %.1f GiB.", fitting, workers, backend.name,
                     per_block / 2**30, problem.n_star, available / 2**30)
    return min(workers, fitting)


class ResumableTraining:
    """A training runner that trains block by block here and checkpoints every finished block.

    ``SlamModel.fit(..., runner=ResumableTraining("model.checkpoint"))``: a rerun with the same
    directory resumes an interrupted training, and the model is bit for bit that of an
    uninterrupted run (see the module notes).

    Parameters
    ----------
    checkpoint_dir : str or Path
        Directory of the checkpoint (created if missing).
    block_size : int
        Pixels per block; part of the training key (blocks must be identical on resume).
    """

    def __init__(self, checkpoint_dir: str | Path, *, block_size: int = CHECKPOINT_BLOCK_SIZE) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.block_size = block_size

    def __repr__(self) -> str:
        return f"ResumableTraining({str(self.checkpoint_dir)!r}, block_size={self.block_size})"

    def train(self, problem: TrainingProblem, backend: Backend, *, n_jobs: int) -> TrainingResult:
        """Train ``problem`` with ``backend`` in blocks, ``n_jobs`` blocks at a time at most.

        Returns
        -------
        TrainingResult
            The same arrays as one ``backend.train`` call over all pixels would return, for
            backends whose per-pixel result does not depend on the other pixels of a call (LIBSVM)
            or only on its own group of consecutive pixels (the batched backend, with a
            ``block_size`` that is a multiple of ``batched.PIXEL_GROUP``). Resumed and
            uninterrupted runs with one ``block_size`` are always bit-identical.

        Raises
        ------
        CheckpointMismatchError
            If the directory holds the checkpoint of a different training.
        """
        workers = blocks_in_memory(backend, problem, self.block_size, n_jobs)

        def run_locally(pending: dict[int, np.ndarray]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
            # Blocks run in parallel (one block per task, the backend single-threaded inside it) and
            # come back in order; the block boundaries do not depend on n_jobs.
            tasks = (delayed(train_block)(backend, problem, columns) for columns in pending.values())
            results = Parallel(n_jobs=workers if len(pending) > 1 else 1, return_as="generator")(tasks)
            yield from zip(pending, results)

        return train_pixel_blocks(run_locally, problem, backend.name, block_size=self.block_size,
                                  checkpoint_dir=self.checkpoint_dir)
