"""Resumable per-pixel training: one checkpoint file per block of pixels.

:func:`train_pixels_resumable` wraps any training backend whose ``train_pixels`` has the
signature of :func:`slamlib.svr.libsvm.train_pixels`. The pixels are cut into fixed blocks
of ``block_size`` consecutive columns (the cut does not depend on ``n_jobs``). Blocks are
trained in parallel, each by one backend call on its own columns of the standardized flux,
and every finished block is written at once to ``block-NNNNNN.npz`` in the checkpoint
directory. A rerun with the same directory loads the finished blocks and trains only the
others, so an interrupted training (Ctrl-C, SIGKILL, a crash) loses at most the blocks in
progress, and the assembled result is bit for bit that of an uninterrupted run: every pixel
is trained from the same inputs whether it ran before or after the interruption.

Keying. The directory holds ``checkpoint.json`` with a SHA-256 *training key* over
everything that shapes the result: the standardized labels and flux, the good-pixel
mask, the CV folds, the grid, epsilon, the minimum number of good stars, the backend, the
block size and the versions of slamlib, numpy, scipy and scikit-learn. Every block file
repeats the key. A directory whose key differs from the current training (other data,
parameters or library versions) is never reused: :func:`train_pixels_resumable` raises
:class:`CheckpointMismatchError` (a ``ValueError``) naming the directory; delete it (or
call :func:`clear_checkpoint`, or ``slam train --restart``) to start afresh. A block file
that is damaged or carries another key is ignored and retrained.

The same block machinery serves training on a Dask cluster (:mod:`slamlib.scaleout`):
:func:`train_pixel_blocks` takes a *block runner* that trains the pending blocks (joblib
here, cluster tasks there), each by :func:`train_block`, and merges them with
:func:`assemble_blocks`, with or without a checkpoint directory. A checkpoint begun on one
machine can therefore be finished on a cluster and vice versa.

Files are written to a temporary name and renamed (:func:`slamlib.modelfile.save_arrays`),
so a kill during a write never leaves a half-written block that looks complete; the
format is the checksummed, pickle-free npz of :mod:`slamlib.modelfile`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from slamlib import modelfile
from slamlib.progress import make_progress_bar
from slamlib.svr.folds import fold_assignment
from slamlib.svr.kernel import KernelExpansion
from slamlib.svr.result import TrainingResult, parameter_pairs

__all__ = [
    "CHECKPOINT_BLOCK_SIZE",
    "CHECKPOINT_FORMAT_VERSION",
    "BlockRunner",
    "CheckpointMismatchError",
    "assemble_blocks",
    "clear_checkpoint",
    "concurrent_blocks",
    "pixel_blocks",
    "train_block",
    "train_pixel_blocks",
    "train_pixels_resumable",
    "training_key",
]

#: Pixels per checkpoint block (an interruption loses at most the blocks in progress).
CHECKPOINT_BLOCK_SIZE = 32
#: Version of the checkpoint directory layout.
CHECKPOINT_FORMAT_VERSION = 1

_MANIFEST = "checkpoint.json"
_LOG = logging.getLogger(__name__)

# Per-pixel arrays of one block, as stored in a block file.
_BLOCK_ARRAYS = ("best_c", "best_gamma", "cv_mse_grid", "cv_mse", "cv_md", "mse", "md", "trained",
                 "dual_coef", "intercept", "gamma")

TrainPixels = Callable[..., TrainingResult]


class CheckpointMismatchError(ValueError):
    """A checkpoint directory holds the checkpoint of a different training."""


def training_key(
    labels_std: np.ndarray,
    flux_std: np.ndarray,
    good: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    parameters: dict[str, Any],
) -> str:
    """SHA-256 over the training inputs, parameters and library versions.

    Parameters
    ----------
    labels_std : ndarray, shape (n_star, n_label)
    flux_std : ndarray, shape (n_star, n_pix)
    good : ndarray of bool, shape (n_star, n_pix)
    folds : list of (train_index, test_index)
    parameters : dict
        JSON-serializable description of everything else that changes the result
        (grid, epsilon, backend, block size...).

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    arrays = {"labels_std": labels_std, "flux_std": flux_std, "good": np.asarray(good, dtype=bool)}
    for number, (train, test) in enumerate(folds):
        arrays[f"fold{number}_train"] = np.asarray(train, dtype=np.int64)
        arrays[f"fold{number}_test"] = np.asarray(test, dtype=np.int64)
    digest = hashlib.sha256(modelfile.array_checksum(arrays).encode())
    description = {"parameters": parameters, "library_versions": modelfile.library_versions(),
                   "format_version": CHECKPOINT_FORMAT_VERSION}
    digest.update(json.dumps(description, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def clear_checkpoint(checkpoint_dir: str | Path) -> None:
    """Delete a checkpoint directory written by :func:`train_pixels_resumable`.

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


def _write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(content, handle, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


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
    _write_json_atomically(manifest_path, {"key": key, **description})


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


def _block_arrays(result: TrainingResult, columns: np.ndarray) -> dict[str, np.ndarray]:
    expansion = result.expansion
    arrays = {
        "columns": np.asarray(columns, dtype=np.int64),
        "best_c": result.best_c, "best_gamma": result.best_gamma, "cv_mse_grid": result.cv_mse_grid,
        "cv_mse": result.cv_mse, "cv_md": result.cv_md, "mse": result.mse, "md": result.md,
        "trained": np.asarray(result.trained, dtype=bool),
        "dual_coef": expansion.dual_coef, "intercept": expansion.intercept, "gamma": expansion.gamma,
    }
    if result.fold_expansions is not None:
        arrays["fold_dual_coef"] = np.stack([fold.dual_coef for fold in result.fold_expansions])
        arrays["fold_intercept"] = np.stack([fold.intercept for fold in result.fold_expansions])
    return arrays


def assemble_blocks(
    blocks: list[dict[str, np.ndarray]],
    labels_std: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    n_pix: int,
) -> TrainingResult:
    """Merge the arrays of consecutive pixel blocks into one TrainingResult.

    Parameters
    ----------
    blocks : list of dict of ndarray
        Block arrays (:func:`train_block`) covering the pixels 0..n_pix-1 in order.
    labels_std : ndarray, shape (n_star, n_label)
        The standardized training labels (the support labels of every model).
    folds : list of (train_index, test_index)
    n_pix : int

    Returns
    -------
    TrainingResult
    """
    merged = {name: np.concatenate([block[name] for block in blocks]) for name in _BLOCK_ARRAYS}
    if merged["best_c"].shape != (n_pix,):
        raise ValueError(f"checkpoint blocks cover {merged['best_c'].shape[0]} pixels, expected {n_pix}.")
    support_labels = np.array(labels_std, dtype=float, copy=True)
    expansion = KernelExpansion(support_labels, merged["dual_coef"], merged["intercept"], merged["gamma"])
    fold_expansions = fold_of_star = None
    if all("fold_dual_coef" in block for block in blocks):
        fold_dual_coef = np.concatenate([block["fold_dual_coef"] for block in blocks], axis=1)
        fold_intercept = np.concatenate([block["fold_intercept"] for block in blocks], axis=1)
        fold_expansions = [KernelExpansion(support_labels, coefficients, intercept, merged["gamma"])
                           for coefficients, intercept in zip(fold_dual_coef, fold_intercept)]
        fold_of_star = fold_assignment(folds, support_labels.shape[0])
    return TrainingResult(
        best_c=merged["best_c"], best_gamma=merged["best_gamma"], cv_mse_grid=merged["cv_mse_grid"],
        cv_mse=merged["cv_mse"], cv_md=merged["cv_md"], mse=merged["mse"], md=merged["md"],
        trained=merged["trained"].astype(bool), expansion=expansion,
        fold_expansions=fold_expansions, fold_of_star=fold_of_star,
    )


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


def train_block(
    train_pixels: TrainPixels,
    labels_std: np.ndarray,
    flux_block: np.ndarray,
    good_block: np.ndarray,
    columns: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    param_grid: dict[str, list[float]],
    epsilon: float,
    min_good_stars: int,
) -> dict[str, np.ndarray]:
    """Train one block of pixels (the backend single-threaded) and return its block arrays.

    This is the unit of work of every block-wise training, local (:func:`train_pixels_resumable`)
    or on a Dask cluster (:mod:`slamlib.scaleout`), so both give the same arrays for a block.

    Parameters
    ----------
    train_pixels : callable
        A backend's ``train_pixels``.
    labels_std : ndarray, shape (n_star, n_label)
    flux_block, good_block : ndarray, shape (n_star, n_block)
        The standardized flux and good-pixel mask of the block's columns only.
    columns : ndarray of int, shape (n_block,)
        The block's pixel columns in the full spectrum (stored with the arrays).
    folds : list of (train_index, test_index)
    param_grid : dict with keys "C" and "gamma"
    epsilon : float
    min_good_stars : int

    Returns
    -------
    dict of ndarray
        The per-pixel arrays of the block, as written to a block file and merged by
        :func:`assemble_blocks`.
    """
    result = train_pixels(labels_std, np.ascontiguousarray(flux_block), np.ascontiguousarray(good_block), folds,
                          param_grid, epsilon, min_good_stars=min_good_stars, n_jobs=1)
    return _block_arrays(result, columns)


#: Runs the pending blocks: receives {block number: columns} and yields (block number, block
#: arrays of :func:`train_block`) as blocks finish, in any order.
BlockRunner = Callable[[dict[int, np.ndarray]], Iterator[tuple[int, dict[str, np.ndarray]]]]


def train_pixel_blocks(
    run_blocks: BlockRunner,
    labels_std: np.ndarray,
    flux_std: np.ndarray,
    good: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    param_grid: dict[str, list[float]],
    epsilon: float,
    *,
    min_good_stars: int,
    block_size: int = CHECKPOINT_BLOCK_SIZE,
    checkpoint_dir: str | Path | None = None,
    backend: str = "",
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
    labels_std : ndarray, shape (n_star, n_label)
    flux_std : ndarray, shape (n_star, n_pix)
    good : ndarray of bool, shape (n_star, n_pix)
    folds : list of (train_index, test_index)
    param_grid : dict with keys "C" and "gamma"
    epsilon : float
    min_good_stars : int
    block_size : int
        Pixels per block; part of the training key (blocks must be identical on resume).
    checkpoint_dir : str or Path, optional
        Directory of the checkpoint (created if missing); None trains without one.
    backend : str
        The backend's name; part of the training key.

    Returns
    -------
    TrainingResult

    Raises
    ------
    CheckpointMismatchError
        If ``checkpoint_dir`` holds the checkpoint of a different training.
    """
    n_pix = flux_std.shape[1]
    block_columns = pixel_blocks(n_pix, block_size)
    blocks: list[dict[str, np.ndarray] | None] = [None] * len(block_columns)
    directory = key = None
    if checkpoint_dir is not None:
        description = {"backend": str(backend), "grid_pairs": parameter_pairs(param_grid), "epsilon": float(epsilon),
                       "min_good_stars": int(min_good_stars), "block_size": int(block_size), "n_pix": int(n_pix),
                       "n_star": int(flux_std.shape[0]), "n_label": int(labels_std.shape[1]), "n_folds": len(folds)}
        key = training_key(labels_std, flux_std, good, folds, description)
        directory = Path(checkpoint_dir)
        _open_directory(directory, key, description)
        blocks = [_load_block(_block_path(directory, number), key, columns)
                  for number, columns in enumerate(block_columns)]
        n_done = sum(block is not None for block in blocks)
        if n_done:
            _LOG.info("resuming from %s: %d of %d pixel blocks already trained.", directory, n_done, len(blocks))
    pending = {number: block_columns[number] for number, block in enumerate(blocks) if block is None}
    n_done_pixels = n_pix - sum(columns.size for columns in pending.values())
    with make_progress_bar(total=n_pix, initial=n_done_pixels, unit="pixel", desc="training") as bar:
        if pending:
            for number, arrays in run_blocks(pending):
                columns = block_columns[number]
                if directory is not None:
                    modelfile.save_arrays(_block_path(directory, number), arrays, {"key": key, "block": number})
                    _LOG.debug("checkpointed pixel block %d/%d (pixels %d-%d).", number + 1, len(blocks),
                               columns[0], columns[-1])
                blocks[number] = arrays
                bar.update(columns.size)
    missing = [number for number, block in enumerate(blocks) if block is None]
    if missing:
        raise RuntimeError(f"pixel blocks {missing[:10]} were never trained (the block runner skipped them).")
    return assemble_blocks(blocks, labels_std, folds, n_pix)


def concurrent_blocks(backend: str, n_star: int, n_pix: int, block_size: int, n_folds: int, n_c: int,
                      n_jobs: int) -> int:
    """How many blocks to train at once: ``n_jobs`` workers (-1: all cores), fewer where the
    batched backend's blocks would not fit in memory together.

    Each batched block holds its own n_star x n_star kernel and low-rank factor
    (:func:`slamlib.svr.batched.memory_estimate`), so at the Section 4 size (17,000 stars, ~3 GB
    per block) many workers would exhaust the memory; the assembled result arrays, held beside
    them, are counted too. Never fewer than one; a cut is logged.
    """
    workers = (os.cpu_count() or 1) if n_jobs in (-1, None) else max(1, int(n_jobs))
    if backend != "batched" or workers == 1:
        return workers
    from slamlib.svr import batched

    per_block = batched.memory_estimate(n_star, block_size, n_folds, n_c, n_workers=1,
                                        chunk_size=min(block_size, batched.default_chunk_size(n_star, n_folds, n_c)))
    assembled = 8 * (n_folds + 1) * n_pix * n_star
    available = batched.physical_memory()
    if not available:
        return workers
    fitting = max(1, int((available - assembled) // per_block))
    if fitting < workers:
        _LOG.warning("training %d blocks at a time instead of %d: each batched block needs about %.1f GiB "
                     "(kernel of %d stars), and this machine has %.1f GiB.", fitting, workers, per_block / 2**30,
                     n_star, available / 2**30)
    return min(workers, fitting)


def train_pixels_resumable(
    train_pixels: TrainPixels,
    labels_std: np.ndarray,
    flux_std: np.ndarray,
    good: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    param_grid: dict[str, list[float]],
    epsilon: float,
    *,
    min_good_stars: int,
    n_jobs: int = -1,
    checkpoint_dir: str | Path,
    backend: str,
    block_size: int = CHECKPOINT_BLOCK_SIZE,
) -> TrainingResult:
    """Train all pixels block by block with any backend, checkpointing every block.

    Parameters
    ----------
    train_pixels : callable
        A backend's ``train_pixels`` (signature of :func:`slamlib.svr.libsvm.train_pixels`).
    labels_std : ndarray, shape (n_star, n_label)
    flux_std : ndarray, shape (n_star, n_pix)
    good : ndarray of bool, shape (n_star, n_pix)
    folds : list of (train_index, test_index)
    param_grid : dict with keys "C" and "gamma"
    epsilon : float
    min_good_stars : int
    n_jobs : int
        joblib workers over blocks (-1: all cores); the backend runs single-threaded
        inside each block. With the batched backend, fewer where the blocks would not fit in
        memory together (:func:`concurrent_blocks`).
    checkpoint_dir : str or Path
        Directory of the checkpoint (created if missing).
    backend : str
        The backend's name; part of the training key.
    block_size : int
        Pixels per block; part of the training key (blocks must be identical on resume).

    Returns
    -------
    TrainingResult
        The same arrays as one ``train_pixels`` call over all pixels would return, for
        backends whose per-pixel result does not depend on the other pixels of a call (LIBSVM)
        or only on its own group of consecutive pixels (the batched backend, with a
        ``block_size`` that is a multiple of ``batched.PIXEL_GROUP``). Resumed and
        uninterrupted runs with one ``block_size`` are always bit-identical.

    Raises
    ------
    CheckpointMismatchError
        If ``checkpoint_dir`` holds the checkpoint of a different training.
    """

    workers = concurrent_blocks(backend, labels_std.shape[0], flux_std.shape[1], block_size, len(folds),
                                len({c for c, _ in parameter_pairs(param_grid)}), n_jobs)

    def run_locally(pending: dict[int, np.ndarray]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        # Blocks run in parallel (one block per task, the backend single-threaded inside it) and
        # come back in order; the block boundaries do not depend on n_jobs.
        tasks = (
            delayed(train_block)(train_pixels, labels_std, flux_std[:, columns], good[:, columns], columns, folds,
                                 param_grid, epsilon, min_good_stars)
            for columns in pending.values()
        )
        results = Parallel(n_jobs=workers if len(pending) > 1 else 1, return_as="generator")(tasks)
        yield from zip(pending, results)

    return train_pixel_blocks(run_locally, labels_std, flux_std, good, folds, param_grid, epsilon,
                              min_good_stars=min_good_stars, block_size=block_size, checkpoint_dir=checkpoint_dir,
                              backend=backend)
