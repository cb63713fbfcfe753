"""Reference training backend: one scikit-learn ``SVR`` (LIBSVM, the paper's choice) per pixel.

For every pixel: each (C, gamma) of the grid is fitted on the training part of every fold
and scored on its held-out part; the pair with the lowest pooled CV MSE is refitted on all
stars. Stars whose pixel is bad are left out of that pixel's fits *and* of its CV scores
(the original SLAM code scored bad pixels too; see docs). Pixels run in parallel with joblib.
"""

from __future__ import annotations

import numpy as np
from joblib import Parallel, delayed
from sklearn.svm import SVR

from slamlib.svr.folds import fold_assignment
from slamlib.svr.problem import TrainingProblem
from slamlib.svr.result import TrainingResult, parameter_pairs, pixels_to_train

__all__ = ["LibsvmBackend", "train_pixels", "train_pixel", "fit_and_predict", "PIXEL_BLOCK_SIZE", "TOLERANCE", "ORIGINAL_TOLERANCE"]

#: Pixels handed to one joblib task (amortizes the task overhead).
PIXEL_BLOCK_SIZE = 16
#: LIBSVM's stopping tolerance for every fit (its maximal KKT violation). The original SLAM code
#: used scikit-learn's default, ``ORIGINAL_TOLERANCE`` = 1e-3, which stops so early that the
#: predicted flux is up to ~0.14 epsilon (at stars' labels; ~0.5 epsilon elsewhere in the label
#: box) from the same fit run to convergence: more than the differences the reference is meant
#: to detect. At 1e-4 a fit agrees with one at 1e-6 to ~0.03 epsilon at stars' labels (2,000
#: stars, 3 labels), for ~10 % more time per fit there and 1.2-1.5x at the Section 4 size (15,000
#: stars, 6 labels; 1e-5 would cost 1.5-2.4x there); the CV MSE changes by ~1e-4 relative.
#: LIBSVM keeps its kernel cache in single precision and stalls near a KKT violation of ~1e-4
#: whatever the tolerance; the batched backend verifies its solutions with the double-precision
#: kernel.
TOLERANCE = 1e-4
#: scikit-learn's default tolerance, used by the original SLAM code.
ORIGINAL_TOLERANCE = 1e-3
#: LIBSVM's kernel cache per fit (scikit-learn's default ``cache_size``, 200 MB).
CACHE_BYTES = 200 * 2**20


def fit_and_predict(labels_fit, flux_fit, labels_eval, c, gamma, epsilon, tol=TOLERANCE):
    """Fit one RBF epsilon-SVR (LIBSVM, stopping tolerance ``tol``) and predict at ``labels_eval``.

    Returns the fitted ``SVR`` and its predictions (empty when ``labels_eval`` has no rows,
    e.g. a fold whose held-out stars are all bad at this pixel). Shared by the reference
    backend and the batched backend's nearly full-rank kernels, so both fit exactly the same way.
    """
    regressor = SVR(kernel="rbf", C=c, gamma=gamma, epsilon=epsilon, tol=tol)
    regressor.fit(labels_fit, flux_fit)
    if len(labels_eval) == 0:
        return regressor, np.zeros(0)
    return regressor, regressor.predict(labels_eval)


def train_pixel(
    labels_std: np.ndarray,
    flux_std: np.ndarray,
    good: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    pairs: list[tuple[float, float]],
    epsilon: float,
    tol: float = TOLERANCE,
) -> dict[str, np.ndarray | float]:
    """Grid search by k-fold CV and final refit for one pixel.

    Parameters
    ----------
    labels_std : ndarray, shape (n_star, n_label)
        Standardized training labels.
    flux_std : ndarray, shape (n_star,)
        Standardized flux of this pixel.
    good : ndarray of bool, shape (n_star,)
        Stars whose pixel is usable.
    folds : list of (train_index, test_index)
        The CV folds, shared by all pixels.
    pairs : list of (C, gamma)
        The hyperparameter grid.
    epsilon : float
        Width of the SVR tube, in standardized flux units.
    tol : float
        LIBSVM's stopping tolerance (``ORIGINAL_TOLERANCE`` reproduces the original code's fits).

    Returns
    -------
    dict
        ``cv_mse_grid`` (n_grid,), ``best`` (index into pairs), ``cv_mse``, ``cv_md``,
        ``mse``, ``md``, ``dual_coef`` (n_star,), ``intercept``, and the CV fold models at
        the best point: ``fold_dual_coef`` (n_fold, n_star), ``fold_intercept`` (n_fold,).
    """
    n_star = labels_std.shape[0]
    squared_error_sum = np.zeros(len(pairs))
    deviation_sum = np.zeros(len(pairs))
    fold_dual_coef = np.zeros((len(pairs), len(folds), n_star))
    fold_intercept = np.zeros((len(pairs), len(folds)))
    n_scored = 0
    for fold_number, (train, test) in enumerate(folds):
        train, test = train[good[train]], test[good[test]]
        for index, (c, gamma) in enumerate(pairs):
            regressor, predicted = fit_and_predict(labels_std[train], flux_std[train], labels_std[test], c, gamma, epsilon, tol)
            fold_dual_coef[index, fold_number, train[regressor.support_]] = regressor.dual_coef_[0]
            fold_intercept[index, fold_number] = regressor.intercept_[0]
            if test.size:
                residual = predicted - flux_std[test]
                squared_error_sum[index] += np.sum(residual**2)
                deviation_sum[index] += np.sum(residual)
        n_scored += test.size
    cv_mse_grid = squared_error_sum / n_scored
    best = int(np.argmin(cv_mse_grid))
    c, gamma = pairs[best]
    fit_stars = np.flatnonzero(good)
    regressor, predicted = fit_and_predict(labels_std[fit_stars], flux_std[fit_stars], labels_std[fit_stars], c, gamma, epsilon, tol)
    dual_coef = np.zeros(n_star)
    dual_coef[fit_stars[regressor.support_]] = regressor.dual_coef_[0]
    residual = predicted - flux_std[fit_stars]
    return {
        "cv_mse_grid": cv_mse_grid,
        "best": best,
        "cv_mse": cv_mse_grid[best],
        "cv_md": deviation_sum[best] / n_scored,
        "mse": float(np.mean(residual**2)),
        "md": float(np.mean(residual)),
        "dual_coef": dual_coef,
        "intercept": float(regressor.intercept_[0]),
        "fold_dual_coef": fold_dual_coef[best],
        "fold_intercept": fold_intercept[best],
    }


def _train_block(labels_std, flux_std_block, good_block, folds, pairs, epsilon, tol):
    return [
        train_pixel(labels_std, flux_std_block[:, column], good_block[:, column], folds, pairs, epsilon, tol)
        for column in range(flux_std_block.shape[1])
    ]


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
    tol: float = TOLERANCE,
) -> TrainingResult:
    """Train every pixel (or the given subset) with LIBSVM.

    Parameters
    ----------
    labels_std : ndarray, shape (n_star, n_label)
    flux_std : ndarray, shape (n_star, n_pix)
    good : ndarray of bool, shape (n_star, n_pix)
    folds : list of (train_index, test_index)
    param_grid : dict with keys "C" and "gamma"
    epsilon : float
    min_good_stars : int
        Pixels with fewer good stars are not trained (``trained`` False), nor pixels with no
        good star in the training part of some fold.
    n_jobs : int
        joblib workers (-1: all cores).
    pixels : ndarray of int, optional
        Train only these pixel columns (the others are returned untrained).
    tol : float
        LIBSVM's stopping tolerance (see ``TOLERANCE``; ``ORIGINAL_TOLERANCE`` reproduces the
        original code's fits).

    Returns
    -------
    TrainingResult
    """
    n_star, n_pix = flux_std.shape
    pairs = parameter_pairs(param_grid)
    trained = pixels_to_train(good, min_good_stars, pixels, folds)
    columns = np.flatnonzero(trained)
    blocks = [columns[start:start + PIXEL_BLOCK_SIZE] for start in range(0, columns.size, PIXEL_BLOCK_SIZE)]
    best_c = np.full(n_pix, np.nan)
    best_gamma = np.full(n_pix, np.nan)
    cv_mse_grid = np.full((n_pix, len(pairs)), np.nan)
    statistics = {name: np.full(n_pix, np.nan) for name in ("cv_mse", "cv_md", "mse", "md")}
    dual_coef = np.zeros((n_pix, n_star))
    intercept = np.zeros(n_pix)
    fold_dual_coef = np.zeros((len(folds), n_pix, n_star))
    fold_intercept = np.zeros((len(folds), n_pix))
    # Blocks are stored as they come back (in order), so the per-pixel results never exist
    # twice: at the Section 4 size they are as large as the result arrays (~2.3 GB).
    block_results = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_train_block)(labels_std, flux_std[:, block], good[:, block], folds, pairs, epsilon, tol)
        for block in blocks
    )
    for block, results in zip(blocks, block_results):
        for column, result in zip(block, results):
            fold_dual_coef[:, column] = result["fold_dual_coef"]
            fold_intercept[:, column] = result["fold_intercept"]
            best_c[column], best_gamma[column] = pairs[result["best"]]
            cv_mse_grid[column] = result["cv_mse_grid"]
            for name in statistics:
                statistics[name][column] = result[name]
            dual_coef[column] = result["dual_coef"]
            intercept[column] = result["intercept"]
    arrays = {"best_c": best_c, "best_gamma": best_gamma, "cv_mse_grid": cv_mse_grid, **statistics, "trained": trained,
              "dual_coef": dual_coef, "intercept": intercept, "fold_dual_coef": fold_dual_coef,
              "fold_intercept": fold_intercept}
    return TrainingResult.from_training(arrays, labels_std, fold_assignment(folds, n_star), default_gamma=pairs[0][1])


class LibsvmBackend:
    """The LIBSVM reference as a :class:`~slamlib.svr.backend.Backend` (``backend="libsvm"``).

    Parameters
    ----------
    tol : float
        LIBSVM's stopping tolerance (:data:`TOLERANCE`; :data:`ORIGINAL_TOLERANCE` reproduces
        the original code).
    """

    name = "libsvm"

    def __init__(self, tol: float = TOLERANCE) -> None:
        self.tol = tol

    def __repr__(self) -> str:
        return f"LibsvmBackend(tol={self.tol!r})"

    def train(self, problem: TrainingProblem, *, n_jobs: int = -1) -> TrainingResult:
        """:func:`train_pixels` on ``problem``."""
        return train_pixels(problem.labels_std, problem.flux_std, problem.good, problem.folds, problem.param_grid,
                            problem.epsilon, min_good_stars=problem.min_good_stars, n_jobs=n_jobs, tol=self.tol)

    def memory_estimate(self, problem: TrainingProblem, *, n_workers: int = 1) -> int:
        """The result arrays ((n_folds + 1) x n_pix x n_star doubles) and one LIBSVM fit per worker
        (its kernel cache and the fit's copies of the training data)."""
        results = 8 * (problem.n_folds + 1) * problem.n_pix * problem.n_star
        per_fit = CACHE_BYTES + 8 * problem.n_star * (problem.n_label + 8)
        return results + n_workers * per_fit
