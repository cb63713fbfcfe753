"""Fast training backend: the per-pixel SVRs of all pixels solved together, batched over pixels.

Same contract as :func:`slamlib.svr.libsvm.train_pixels` (the reference): for every pixel,
each (C, gamma) of the grid is fitted on the training part of every fold and scored on its
held-out part (pooled CV MSE and MD over the held-out *good* stars), the pair with the
lowest CV MSE (ties: grid order) is refitted on all good stars, and the final MSE/MD are
taken on those training stars. Stars whose pixel is bad take no part in that pixel's fits
or scores (their dual coefficient is 0). Pixels with fewer than ``min_good_stars`` good
stars are not trained.

How it differs from the reference is *how* the epsilon-SVR duals are solved: all pixels
share the training labels, hence one RBF kernel per gamma, so the dual problems of many
pixels (and folds) are solved together by :func:`slamlib.svr.batched_solver.solve_batch`:
a semismooth Newton method on the Huber-smoothed primal with continuation, whose products
with the kernel are matrix-matrix products over the batch, followed by an exact active-set
step verified against the unsmoothed KKT conditions with the exact kernel.

Accuracy (stated, and checked by the tests against LIBSVM):

* final refits (the stored model): smoothed down to ``mu = 1e-4``, then the exact
  active-set step; where it verifies (most pixels) LIBSVM's KKT conditions hold to 1e-8
  with the exact kernel, i.e. the model *is* LIBSVM's solution run to convergence;
  otherwise the smoothed solution is kept (KKT violation <~ 1e-4, ten times tighter than
  LIBSVM's default stopping tolerance 1e-3), and the rare problem the Newton phase does not
  converge on is handed to LIBSVM itself;
* CV fits (which only feed the CV MSE/MD): smoothed down to ``CV_STAGES[-1].mu`` = 1e-3,
  LIBSVM's own stopping tolerance (the CV MSE is insensitive to it: the tests and the
  benchmark find relative differences ~1e-4 against the reference).

Nearly full-rank kernels: the Newton phase works with a low-rank factor of the kernel, which
pays off while the kernel's numerical rank is small (3 labels: a few hundred at any number of
stars). With many labels, a large gamma and many stars the rank approaches the number of
stars (Section 4, 6 labels and 17,000 stars: rank 535 at gamma = 0.001, 2,080 at 0.01, more
than 3,000 from 0.032 up), and both the factor and the smoothing-zone systems approach the
kernel's size in memory and beyond LIBSVM's cost in time (at 3,000 stars and rank 2,834 the
two take the same time per pixel; at 6,000 stars and rank 2,803 batched is 2.3x faster). A gamma whose
factor would be wider than ``MAX_FACTOR_RANK`` is therefore solved one problem at a time:
from ``DECOMPOSITION_MIN_STARS`` stars up by the decomposition engine
(:mod:`slamlib.svr.decomposition`: LIBSVM's problem and stopping rule, a large working set on the
exact float64 kernel, warm-started along the C grid and from the CV fold models for the refit),
below that by LIBSVM, exactly as the reference backend fits it (same fits, same CV MSE bit for
bit; the kernel is not held meanwhile). ``stats["full_rank_gammas"]`` lists such gammas and
``stats["full_rank_engine"]`` names the engine.

The CV fold models at each pixel's chosen (C, gamma) are kept as in the reference, so
``SlamModel.predict_cv`` (CV labels, the Section 4 clipping) works with either backend.

Memory: one n_star x n_star float64 kernel at a time (built in row blocks, no n^2
temporaries), its pivoted-Cholesky factor (n_star x rank, rank <= ``MAX_FACTOR_RANK``; a wide
one stays a view of its buffer), the final dual coefficients and the standardized flux (n_pix x n_star each), the CV
fold models (n_folds x n_pix x n_star) and, per worker, a chunk of ``chunk_size``
pixels x n_folds problems of about ``_ARRAYS_PER_PROBLEM`` arrays of n_star float64.
``chunk_size`` defaults to what keeps the per-chunk arrays under ``CHUNK_MEMORY``.
``benchmarks/memory.py`` measures the paper's Section 4 size (17,000 stars, 6 labels, 8
folds); see the README for the figure.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from slamlib.svr.backend import physical_memory, worker_count
from slamlib.svr.batched_solver import (
    _WIDE_SYSTEM,
    EXACT_STAGES,
    Stage,
    pivoted_cholesky,
    solve_batch,
)
from slamlib.svr.folds import fold_assignment
from slamlib.svr.kernel import rbf_kernel
from slamlib.svr import decomposition
from slamlib.svr.libsvm import TOLERANCE as LIBSVM_TOLERANCE
from slamlib.svr.libsvm import fit_and_predict
from slamlib.svr.problem import TrainingProblem
from slamlib.svr.result import TrainingResult, parameter_pairs, pixels_to_train

__all__ = ["train_pixels", "memory_estimate", "default_chunk_size", "CV_STAGES", "REFIT_STAGES", "FACTOR_TOL",
           "MAX_FACTOR_RANK", "DECOMPOSITION_MIN_STARS", "PIXEL_GROUP", "BatchedBackend"]

#: Continuation stages of the CV fits (KKT violation <= the last mu).
CV_STAGES = (Stage(0.01, 100), Stage(3e-3, 100), Stage(1e-3, 100))
#: Continuation stages of the final refits, followed by the exact active-set step.
REFIT_STAGES = EXACT_STAGES
#: Trace tolerance of the pivoted-Cholesky factor that drives the Newton iterations (the
#: returned solutions never depend on it: the KKT conditions are checked with the exact kernel).
FACTOR_TOL = 1e-8
#: Widest low-rank factor. A kernel whose numerical rank (at ``FACTOR_TOL``) exceeds it is
#: nearly full rank for the batched solver's purposes (many labels, a large gamma and many
#: stars, e.g. the 6 labels and 17,000 stars of Section 4): the low-rank Newton phase gains
#: nothing there, while its factor and its smoothing-zone systems grow towards the size of the
#: kernel. The grid points of such a gamma are solved one problem at a time (see
#: ``DECOMPOSITION_MIN_STARS``; ``stats["full_rank_gammas"]`` lists them).
MAX_FACTOR_RANK = 3000
#: Training sets from this many stars up solve their nearly full-rank gammas with the decomposition
#: engine (:mod:`slamlib.svr.decomposition`) on the kernel; smaller ones with LIBSVM, pixel by pixel.
#: Measured on mock K giants (6 labels, gamma = 0.1): at 17,000 stars the engine is 1.8x (from zero)
#: to 3x (warm-started along C) faster than LIBSVM; at 2,000 stars LIBSVM is faster (0.1 s against
#: 0.1-2.9 s per fit). The crossover between them has not been measured yet.
DECOMPOSITION_MIN_STARS = 10_000
#: Bytes of per-chunk working arrays a worker may hold.
CHUNK_MEMORY = 256 * 2**20
#: Pixels are solved in groups of consecutive pixel indices, [k * chunk_size, (k + 1) * chunk_size),
#: with ``chunk_size`` a power of two up to ``PIXEL_GROUP`` (the default checkpoint and cluster
#: block, :data:`slamlib.pipeline.checkpoint.CHECKPOINT_BLOCK_SIZE`, is a multiple of it). A pixel's result
#: depends at the rounding level on the pixels solved with it; with this grouping it is the same
#: bit for bit in one call, in checkpoint blocks, on a cluster and with any ``n_jobs``.
PIXEL_GROUP = 32
#: Rows of the training kernel built per step (bounds the temporaries of n_star x n_star kernels).
KERNEL_BLOCK_ROWS = 1024
#: Arrays of shape (chunk, n_star) float64 alive at once inside the solver (upper estimate).
_ARRAYS_PER_PROBLEM = 24


def default_chunk_size(n_star: int, n_folds: int, n_c: int) -> int:
    """Pixels per worker chunk: the largest power of two up to ``PIXEL_GROUP`` (and at least 8)
    whose working arrays stay under ``CHUNK_MEMORY``."""
    per_pixel = 8 * _ARRAYS_PER_PROBLEM * max(n_star, 1) * (n_folds + n_c)
    size = PIXEL_GROUP
    while size > 8 and size * per_pixel > CHUNK_MEMORY:
        size //= 2
    return size


def memory_estimate(n_star: int, n_pix: int, n_folds: int, n_c: int, *, n_workers: int, chunk_size: int) -> int:
    """Estimated peak bytes held by :func:`train_pixels` (beyond the caller's own arrays).

    Parameters
    ----------
    n_star, n_pix, n_folds : int
        Training stars, pixels and CV folds.
    n_c : int
        Distinct C values of the grid.
    n_workers, chunk_size : int
        Worker threads and pixels per chunk.

    Returns
    -------
    int
        Bytes: one kernel (n_star^2), its factor (n_star x at most ``MAX_FACTOR_RANK``), the
        result arrays (final and CV-fold dual coefficients, (n_folds + 1) x n_pix x n_star), the
        pixel-major copies of targets and mask, every worker's chunk arrays, and one dense zone
        system (and its copy) per worker, at most max(``_WIDE_SYSTEM``, rank) wide (wider
        zones are solved in the factor's space). ``benchmarks/memory.py`` compares it with
        the measured peak.
    """
    rank = min(n_star, MAX_FACTOR_RANK)
    kernel = 8 * n_star**2
    factor = 8 * n_star * rank
    results = 8 * (n_folds + 1) * n_pix * n_star
    inputs = 9 * n_pix * n_star
    working = 8 * n_workers * chunk_size * (n_folds + n_c) * _ARRAYS_PER_PROBLEM * n_star
    zone_width = min(n_star, max(_WIDE_SYSTEM, rank))
    systems = 8 * n_workers * 2 * zone_width**2
    return kernel + factor + results + inputs + working + systems


def _chunks(columns: np.ndarray, chunk_size: int) -> list[np.ndarray]:
    """The (sorted) pixel columns grouped by ``column // chunk_size``: consecutive pixel indices."""
    if columns.size == 0:
        return []
    return np.split(columns, np.flatnonzero(np.diff(columns // chunk_size)) + 1)


def _cv_chunk(K, Z, fold_of_star, n_folds, Y, G, c_values, epsilon, labels, gamma, n_scored, grid_columns, keeper):
    """CV of one pixel chunk for one gamma, all folds solved as one batch (C ascending, each C
    warm-started from the previous one). Returns the held-out squared-error and deviation
    sums per C, (n_chunk, n_C), and solver counts. ``keeper`` receives the fold solutions of
    every grid point (``grid_columns[c_index]``, -1 for a C not paired with this gamma) with
    their CV MSE (``sq / n_scored``), and keeps those of each pixel's best point so far."""
    n_chunk, n_star = Y.shape
    in_train = fold_of_star[None, :] != np.arange(n_folds)[:, None]          # (n_folds, n_star)
    train = (G[None, :, :] & in_train[:, None, :]).reshape(n_folds * n_chunk, n_star)
    test = (G[None, :, :] & ~in_train[:, None, :]).reshape(n_folds * n_chunk, n_star)
    Yb = np.broadcast_to(Y, (n_folds, n_chunk, n_star)).reshape(n_folds * n_chunk, n_star)
    start_mask = np.repeat(in_train, n_chunk, axis=0)
    sq = np.zeros((n_chunk, len(c_values)))
    dev = np.zeros((n_chunk, len(c_values)))
    start = None
    counts = np.zeros(4)
    for c_index, c in enumerate(c_values):
        beta, b, Kbeta, info = solve_batch(K, Z, Yb, train, c, epsilon, stages=CV_STAGES, polish=False, start=start,
                                           start_mask=start_mask, labels=labels, gamma=gamma)
        counts += (beta.shape[0], info["n_newton"].sum(), info["libsvm"].sum(), 0)
        start = (beta, b)
        residual = np.where(test, Kbeta + b[:, None] - Yb, 0.0)
        sq[:, c_index] = np.sum(residual**2, axis=1).reshape(n_folds, n_chunk).sum(axis=0)
        dev[:, c_index] = np.sum(residual, axis=1).reshape(n_folds, n_chunk).sum(axis=0)
        if grid_columns[c_index] >= 0:
            keeper.offer(grid_columns[c_index], sq[:, c_index] / n_scored,
                         beta.reshape(n_folds, n_chunk, n_star), b.reshape(n_folds, n_chunk))
    return sq, dev, counts


def _cv_chunk_full_rank(K, fold_of_star, n_folds, Y, G, c_values, epsilon, n_scored, grid_columns, keeper):
    """CV of one pixel chunk for one nearly full-rank gamma with the decomposition solver
    (:mod:`slamlib.svr.decomposition`), one problem per pixel and fold, C ascending, each C
    warm-started from the previous one's solution scaled. Same returns and ``keeper`` protocol
    as :func:`_cv_chunk` (C values not paired with this gamma are skipped)."""
    n_chunk, n_star = Y.shape
    sq = np.zeros((n_chunk, len(c_values)))
    dev = np.zeros((n_chunk, len(c_values)))
    counts = np.zeros(4)
    previous = [[None] * n_folds for _ in range(n_chunk)]
    for c_index, c in enumerate(c_values):
        if grid_columns[c_index] < 0:
            continue
        beta = np.zeros((n_folds, n_chunk, n_star))
        b = np.zeros((n_folds, n_chunk))
        for row in range(n_chunk):
            for fold in range(n_folds):
                train = G[row] & (fold_of_star != fold)
                test = G[row] & (fold_of_star == fold)
                last = previous[row][fold]
                start = None if last is None else decomposition.scaled_start(last[1], last[0], c)
                solution = decomposition.solve(K, Y[row], train, c, epsilon, tol=LIBSVM_TOLERANCE, start=start)
                previous[row][fold] = (c, solution)
                beta[fold, row], b[fold, row] = solution.beta, solution.intercept
                residual = solution.kernel_beta[test] + solution.intercept - Y[row, test]
                sq[row, c_index] += np.sum(residual**2)
                dev[row, c_index] += np.sum(residual)
                counts[3] += solution.n_outer
        counts[0] += n_folds * n_chunk
        keeper.offer(grid_columns[c_index], sq[:, c_index] / n_scored, beta, b)
    return sq, dev, counts


def _refit_chunk_full_rank(K, Y, G, target_c, fold_beta, epsilon):
    """Final refits of one pixel chunk for a nearly full-rank gamma with the decomposition solver,
    each pixel at its own C on all good stars, warm-started from the mean of its CV fold models
    at that (C, gamma) (feasible: each is, and the set is convex). fold_beta (n_folds, n_chunk, n_star).
    Returns beta (n_chunk, n_star), b (n_chunk,), the fitted values K beta + b on the good stars
    (0 elsewhere) and the counts (problems, 0, 0, 0, outer iterations)."""
    n_chunk, n_star = Y.shape
    beta, b, fitted = np.zeros((n_chunk, n_star)), np.zeros(n_chunk), np.zeros((n_chunk, n_star))
    counts = np.zeros(5)
    for row in range(n_chunk):
        start_beta = np.where(G[row], fold_beta[:, row].mean(axis=0), 0.0)
        feasible = np.abs(start_beta).max(initial=0.0) <= target_c[row] and abs(start_beta.sum()) <= 1e-9 * target_c[row] * n_star
        start = (start_beta, start_beta @ K) if feasible else None
        solution = decomposition.solve(K, Y[row], G[row], target_c[row], epsilon, tol=LIBSVM_TOLERANCE, start=start)
        beta[row], b[row] = solution.beta, solution.intercept
        fitted[row] = np.where(G[row], solution.kernel_beta + solution.intercept, 0.0)
        counts += (1, 0, 0, 0, solution.n_outer)
    return beta, b, fitted, counts


def _cv_chunk_libsvm(labels, fold_of_star, n_folds, Y, G, c_values, epsilon, gamma, n_scored, grid_columns, keeper):
    """CV of one pixel chunk for one (nearly full-rank) gamma with LIBSVM, one fit per pixel,
    fold and C, as the reference backend does. Same returns and ``keeper`` protocol as
    :func:`_cv_chunk` (C values not paired with this gamma are skipped: no warm starts here)."""
    n_chunk, n_star = Y.shape
    sq = np.zeros((n_chunk, len(c_values)))
    dev = np.zeros((n_chunk, len(c_values)))
    counts = np.zeros(4)
    for c_index, c in enumerate(c_values):
        if grid_columns[c_index] < 0:
            continue
        beta = np.zeros((n_folds, n_chunk, n_star))
        b = np.zeros((n_folds, n_chunk))
        for row in range(n_chunk):
            for fold in range(n_folds):
                train = np.flatnonzero(G[row] & (fold_of_star != fold))
                test = np.flatnonzero(G[row] & (fold_of_star == fold))
                regressor, predicted = fit_and_predict(labels[train], Y[row, train], labels[test], c, gamma, epsilon)
                beta[fold, row, train[regressor.support_]] = regressor.dual_coef_[0]
                b[fold, row] = regressor.intercept_[0]
                residual = predicted - Y[row, test]
                sq[row, c_index] += np.sum(residual**2)
                dev[row, c_index] += np.sum(residual)
        counts += (n_folds * n_chunk, 0, n_folds * n_chunk, 0)
        keeper.offer(grid_columns[c_index], sq[:, c_index] / n_scored, beta, b)
    return sq, dev, counts


def _refit_chunk_libsvm(labels, Y, G, target_c, epsilon, gamma):
    """Final refits of one pixel chunk with LIBSVM on all good stars (each pixel at its own C).
    Returns beta (n_chunk, n_star), b (n_chunk,) and the fitted values K beta + b (n_chunk, n_star)
    on the good stars (0 elsewhere)."""
    n_chunk, n_star = Y.shape
    beta, b, fitted = np.zeros((n_chunk, n_star)), np.zeros(n_chunk), np.zeros((n_chunk, n_star))
    for row in range(n_chunk):
        stars = np.flatnonzero(G[row])
        regressor, predicted = fit_and_predict(labels[stars], Y[row, stars], labels[stars], target_c[row], gamma, epsilon)
        beta[row, stars[regressor.support_]] = regressor.dual_coef_[0]
        b[row] = regressor.intercept_[0]
        fitted[row, stars] = predicted
    return beta, b, fitted


class _BestFoldModels:
    """The CV fold solutions at each pixel's best grid point so far, for one pixel chunk.

    Pixels are compared by CV MSE with the tie rule of ``np.argmin`` over the grid (the lower
    grid index wins), so after all grid points it holds the fold models at exactly the point
    the training chooses. Each chunk has its own keeper, writing only its own pixels' rows of
    the shared arrays, so worker threads never write the same memory.
    """

    def __init__(self, chunk, fold_dual_coef, fold_intercept, best_mse, best_index):
        self.chunk = chunk
        self.fold_dual_coef = fold_dual_coef      # (n_folds, n_pix, n_star), shared
        self.fold_intercept = fold_intercept      # (n_folds, n_pix), shared
        self.best_mse = best_mse                  # (n_pix,), shared
        self.best_index = best_index              # (n_pix,), shared

    def offer(self, grid_index, cv_mse, beta, b):
        current_mse = self.best_mse[self.chunk]
        current_index = self.best_index[self.chunk]
        better = (cv_mse < current_mse) | ((cv_mse == current_mse) & (grid_index < current_index))
        if not better.any():
            return
        rows = self.chunk[better]
        self.best_mse[rows] = cv_mse[better]
        self.best_index[rows] = grid_index
        self.fold_dual_coef[:, rows] = beta[:, better]
        self.fold_intercept[:, rows] = b[:, better]


def train_pixels(
    labels_std: np.ndarray,
    flux_std: np.ndarray,
    good: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    param_grid: dict[str, list[float]],
    epsilon: float,
    *,
    min_good_stars: int,
    n_jobs: int = -1,
    pixels: np.ndarray | None = None,
    chunk_size: int | None = None,
    stats: dict | None = None,
) -> TrainingResult:
    """Train every pixel (or the given subset), batched over pixels.

    Parameters and result as :func:`slamlib.svr.libsvm.train_pixels`; in addition
    ``chunk_size`` (pixels solved together by one worker: the trained pixels among
    ``chunk_size`` consecutive pixel indices; default from ``CHUNK_MEMORY``, see
    ``PIXEL_GROUP``) and
    ``stats``, a dict that receives solver counts (problems solved, Newton steps, exact
    active-set verifications, LIBSVM hand-overs), the rank of the kernel's low-rank factor
    per gamma (``factor_rank``; ``MAX_FACTOR_RANK`` where the factorization was cut) and the
    gammas solved one problem at a time because their kernel is nearly full rank
    (``full_rank_gammas``, with ``full_rank_engine`` "decomposition" or "libsvm" and the
    decomposition engine's outer iterations ``cv_decomposition_outer``, ``refit_decomposition_outer``).
    ``n_jobs`` workers (threads; -1: all cores) each solve one pixel chunk at a time with a
    single-threaded BLAS. The chunks depend on nothing but the pixel indices and
    ``chunk_size``, so the result is the same bit for bit (on one machine) with any ``n_jobs``,
    for any ``pixels`` subset, and in checkpoint or cluster blocks whose size is a multiple of
    ``chunk_size``; another ``chunk_size`` changes it at the rounding level (~1e-7 in the dual
    coefficients).
    """
    labels_std = np.asarray(labels_std, dtype=float)
    flux_std = np.asarray(flux_std, dtype=float)
    good = np.asarray(good, dtype=bool)
    n_star, n_pix = flux_std.shape
    pairs = parameter_pairs(param_grid)
    c_values = sorted({c for c, _ in pairs})
    gammas = sorted({g for _, g in pairs})
    grid_index = {pair: index for index, pair in enumerate(pairs)}

    trained = pixels_to_train(good, min_good_stars, pixels, folds)
    columns = np.flatnonzero(trained)
    if not np.all(np.isfinite(labels_std)):
        raise ValueError("labels_std contains NaN or infinite values; remove those stars (or fill their labels) "
                         "before training.")
    if not np.all(np.isfinite(flux_std[good])):
        raise ValueError("flux_std is not finite at some good pixels; mark them bad (good=False) before training.")
    n_workers = worker_count(n_jobs)
    if chunk_size is None:
        chunk_size = default_chunk_size(n_star, len(folds), len(c_values))
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    needed = memory_estimate(n_star, n_pix, len(folds), len(c_values), n_workers=n_workers, chunk_size=chunk_size)
    available = physical_memory()
    if available and needed > available:
        raise ValueError(f"the batched backend needs about {needed / 2**30:.1f} GiB for {n_star} stars x {n_pix} pixels "
                         f"({len(folds)} folds), more than this machine's {available / 2**30:.1f} GiB; use "
                         f"backend='libsvm' (slam train --backend libsvm; it holds the result arrays and one fit "
                         f"per worker), fewer training stars, or a machine with more memory.")

    assignment = fold_assignment(folds, n_star)
    n_folds = len(folds)
    Y_all = np.where(good, flux_std, 0.0).T.copy()          # (n_pix, n_star)
    G_all = good.T.copy()
    n_grid = len(pairs)
    cv_sq = np.zeros((n_pix, n_grid))
    cv_dev = np.zeros((n_pix, n_grid))
    n_scored = np.zeros(n_pix)
    for fold in range(n_folds):
        n_scored += np.sum(G_all & (assignment == fold)[None, :], axis=1)


    def run(function, tasks):
        # Single-threaded BLAS inside the workers: the batches are the unit of parallelism
        # (multi-threaded BLAS on the solver's many small products only adds overhead).
        if n_workers == 1 or len(tasks) <= 1:
            with threadpool_limits(1):
                return [function(*task) for task in tasks]
        with threadpool_limits(1), ThreadPoolExecutor(max_workers=n_workers) as pool:
            return list(pool.map(lambda task: function(*task), tasks))

    chunks = _chunks(columns, chunk_size)
    # The CV fold models at each pixel's chosen (C, gamma), kept while the grid is scanned.
    fold_dual_coef = np.zeros((n_folds, n_pix, n_star))
    fold_intercept = np.zeros((n_folds, n_pix))
    kept_mse = np.full(n_pix, np.inf)
    kept_index = np.full(n_pix, n_grid)
    scored = np.maximum(n_scored, 1)
    cv_counts = np.zeros(4)
    refit_counts = np.zeros(5)
    factor_rank = {}
    # Factors are cut at this width; a gamma whose kernel needs more is nearly full rank and
    # is solved one problem at a time, by the decomposition engine on the kernel from
    # DECOMPOSITION_MIN_STARS stars up, by LIBSVM below (see MAX_FACTOR_RANK).
    rank_limit = MAX_FACTOR_RANK if n_star > MAX_FACTOR_RANK else None
    use_decomposition = n_star >= DECOMPOSITION_MIN_STARS
    full_rank_gammas = set()
    for gamma in gammas:
        if columns.size == 0:
            break
        grid_columns = [grid_index.get((c, gamma), -1) for c in c_values]
        K = rbf_kernel(labels_std, labels_std, gamma, block_rows=KERNEL_BLOCK_ROWS)
        Z = pivoted_cholesky(K, FACTOR_TOL, max_rank=rank_limit)
        factor_rank[gamma] = Z.shape[1]
        if rank_limit is not None and Z.shape[1] >= rank_limit and not use_decomposition:
            full_rank_gammas.add(gamma)
            del K, Z
            results = run(_cv_chunk_libsvm, [(labels_std, assignment, n_folds, Y_all[chunk], G_all[chunk], c_values,
                                              epsilon, gamma, scored[chunk], grid_columns,
                                              _BestFoldModels(chunk, fold_dual_coef, fold_intercept, kept_mse, kept_index))
                                             for chunk in chunks])
        elif rank_limit is not None and Z.shape[1] >= rank_limit:
            full_rank_gammas.add(gamma)
            del Z
            results = run(_cv_chunk_full_rank, [(K, assignment, n_folds, Y_all[chunk], G_all[chunk], c_values, epsilon,
                                                 scored[chunk], grid_columns,
                                                 _BestFoldModels(chunk, fold_dual_coef, fold_intercept, kept_mse, kept_index))
                                                for chunk in chunks])
            del K
        else:
            results = run(_cv_chunk, [(K, Z, assignment, n_folds, Y_all[chunk], G_all[chunk], c_values, epsilon,
                                       labels_std, gamma, scored[chunk], grid_columns,
                                       _BestFoldModels(chunk, fold_dual_coef, fold_intercept, kept_mse, kept_index))
                                      for chunk in chunks])
            del K, Z
        for chunk, (sq, dev, counts) in zip(chunks, results):
            cv_counts += counts
            for c_index, c in enumerate(c_values):
                if (c, gamma) not in grid_index:
                    continue
                j = grid_index[(c, gamma)]
                cv_sq[chunk, j] = sq[:, c_index]
                cv_dev[chunk, j] = dev[:, c_index]
        del results

    cv_mse_grid = np.full((n_pix, n_grid), np.nan)
    cv_mse_grid[columns] = cv_sq[columns] / scored[columns, None]
    best = np.full(n_pix, -1)
    best[columns] = np.argmin(cv_mse_grid[columns], axis=1)
    if not np.array_equal(best[columns], kept_index[columns]):
        raise RuntimeError("internal error: the kept CV fold models are not those of the chosen grid point.")

    # Final refits on all good stars, per gamma; each pixel walks up the C grid to its best C.
    dual_coef = np.zeros((n_pix, n_star))
    intercept = np.zeros(n_pix)
    mse = np.full(n_pix, np.nan)
    md = np.full(n_pix, np.nan)
    for gamma in gammas:
        members = [j for j, (c, g) in enumerate(pairs) if g == gamma]
        pixels_here = columns[np.isin(best[columns], members)]
        if pixels_here.size == 0:
            continue
        chunk_c = {column: pairs[best[column]][0] for column in pixels_here}
        tasks = [(chunk,) for chunk in _chunks(pixels_here, chunk_size)]
        everyone = np.ones(n_star, dtype=bool)
        full_rank = gamma in full_rank_gammas
        K = None if full_rank and not use_decomposition else rbf_kernel(labels_std, labels_std, gamma,
                                                                        block_rows=KERNEL_BLOCK_ROWS)
        Z = None if full_rank else pivoted_cholesky(K, FACTOR_TOL, max_rank=rank_limit)

        def refit_libsvm(chunk, gamma=gamma):
            target_c = np.array([chunk_c[column] for column in chunk])
            beta, b, fitted = _refit_chunk_libsvm(labels_std, Y_all[chunk], G_all[chunk], target_c, epsilon, gamma)
            return chunk, beta, b, fitted, np.array([len(chunk), 0, 0, len(chunk), 0])

        def refit_full_rank(chunk, K=K):
            target_c = np.array([chunk_c[column] for column in chunk])
            beta, b, fitted, counts = _refit_chunk_full_rank(K, Y_all[chunk], G_all[chunk], target_c,
                                                             fold_dual_coef[:, chunk], epsilon)
            return chunk, beta, b, fitted, counts

        def refit(chunk, K=K, Z=Z, gamma=gamma):
            # Walk up the C grid (each C warm-started from the previous one, as in the CV);
            # a pixel gets the exact solve at its own best C.
            target_c = np.array([chunk_c[column] for column in chunk])
            Y, G = Y_all[chunk], G_all[chunk]
            beta_out, b_out, K_out = np.zeros((len(chunk), n_star)), np.zeros(len(chunk)), np.zeros((len(chunk), n_star))
            counts = np.zeros(5)
            state = None
            for c in c_values:
                rows = np.flatnonzero(target_c >= c)
                if rows.size == 0:
                    break
                finish = rows[target_c[rows] == c]
                going = rows[target_c[rows] > c]
                if finish.size:
                    warm = None if state is None else (state[0][finish], state[1][finish])
                    beta, b, Kbeta, info = solve_batch(K, Z, Y[finish], G[finish], c, epsilon, stages=REFIT_STAGES,
                                                       polish=True, start=warm, start_mask=everyone,
                                                       labels=labels_std, gamma=gamma)
                    beta_out[finish], b_out[finish], K_out[finish] = beta, b, Kbeta
                    counts += (finish.size, info["n_newton"].sum(), info["exact"].sum(), info["libsvm"].sum(), 0)
                if going.size:
                    warm = None if state is None else (state[0][going], state[1][going])
                    beta, b, _, info = solve_batch(K, Z, Y[going], G[going], c, epsilon, stages=CV_STAGES,
                                                   polish=False, start=warm, start_mask=everyone,
                                                   labels=labels_std, gamma=gamma)
                    counts[1] += info["n_newton"].sum()
                    if state is None:
                        state = (np.zeros((len(chunk), n_star)), np.zeros(len(chunk)))
                    state[0][going], state[1][going] = beta, b
            return chunk, beta_out, b_out, K_out + b_out[:, None], counts

        for chunk, beta, b, fitted, counts in run((refit_full_rank if use_decomposition else refit_libsvm) if full_rank else refit, tasks):
            refit_counts += counts
            dual_coef[chunk] = beta
            intercept[chunk] = b
            residual = np.where(G_all[chunk], fitted - Y_all[chunk], 0.0)
            count = G_all[chunk].sum(axis=1)
            mse[chunk] = np.sum(residual**2, axis=1) / count
            md[chunk] = np.sum(residual, axis=1) / count
        del K, Z

    if stats is not None:
        stats.update(cv_problems=int(cv_counts[0]), cv_newton_steps=int(cv_counts[1]), cv_libsvm=int(cv_counts[2]),
                     refit_problems=int(refit_counts[0]), refit_newton_steps=int(refit_counts[1]),
                     refit_exact=int(refit_counts[2]), refit_libsvm=int(refit_counts[3]),
                     cv_decomposition_outer=int(cv_counts[3]), refit_decomposition_outer=int(refit_counts[4]),
                     chunk_size=int(chunk_size),
                     factor_rank={float(gamma): int(rank) for gamma, rank in factor_rank.items()},
                     full_rank_gammas=sorted(float(gamma) for gamma in full_rank_gammas),
                     full_rank_engine="decomposition" if use_decomposition else "libsvm")
    best_c = np.full(n_pix, np.nan)
    best_gamma = np.full(n_pix, np.nan)
    for column in columns:
        best_c[column], best_gamma[column] = pairs[best[column]]
    cv_mse = np.full(n_pix, np.nan)
    cv_md = np.full(n_pix, np.nan)
    cv_mse[columns] = cv_mse_grid[columns, best[columns]]
    cv_md[columns] = cv_dev[columns, best[columns]] / np.maximum(n_scored[columns], 1)
    arrays = {"best_c": best_c, "best_gamma": best_gamma, "cv_mse_grid": cv_mse_grid, "cv_mse": cv_mse, "cv_md": cv_md,
              "mse": mse, "md": md, "trained": trained, "dual_coef": dual_coef, "intercept": intercept,
              "fold_dual_coef": fold_dual_coef, "fold_intercept": fold_intercept}
    return TrainingResult.from_training(arrays, labels_std, assignment, default_gamma=pairs[0][1])


class BatchedBackend:
    """The batched engine as a :class:`~slamlib.svr.backend.Backend` (``backend="batched"``).

    Parameters
    ----------
    chunk_size : int, optional
        Pixels solved together by one worker (see :func:`train_pixels`).
    """

    name = "batched"

    def __init__(self, chunk_size: int | None = None) -> None:
        self.chunk_size = chunk_size

    def __repr__(self) -> str:
        return f"BatchedBackend(chunk_size={self.chunk_size!r})"

    def train(self, problem: TrainingProblem, *, n_jobs: int = -1, stats: dict | None = None) -> TrainingResult:
        """:func:`train_pixels` on ``problem`` (``stats`` receives the solver's counts)."""
        return train_pixels(problem.labels_std, problem.flux_std, problem.good, problem.folds, problem.param_grid,
                            problem.epsilon, min_good_stars=problem.min_good_stars, n_jobs=n_jobs,
                            chunk_size=self.chunk_size, stats=stats)

    def memory_estimate(self, problem: TrainingProblem, *, n_workers: int = 1) -> int:
        """:func:`memory_estimate` for ``problem``: one kernel and factor, the results, the chunks."""
        n_c = len(problem.c_values)
        chunk_size = self.chunk_size or default_chunk_size(problem.n_star, problem.n_folds, n_c)
        return memory_estimate(problem.n_star, problem.n_pix, problem.n_folds, n_c, n_workers=n_workers,
                               chunk_size=min(chunk_size, max(problem.n_pix, 1)))
