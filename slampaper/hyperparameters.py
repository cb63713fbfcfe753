"""Appendix A of the paper: what C, epsilon and gamma do, shown on one-dimensional mock data.

Two toy problems, as the paper's Appendix A draws them (it writes N(mu, sigma^2)): x ~ N(0, 1)
with ``y = sin(2x) + N(0, 0.16)``, and x, y ~ N(0, 1) (pure noise). Both are standardized like SLAM's
labels and fluxes, fitted with an RBF epsilon-SVR for several hyperparameters, and scored by
k-fold cross-validation over a (log C, log gamma) grid with the same CV code SLAM uses per
pixel (:func:`slamlib.svr.libsvm.train_pixel`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.svm import SVR

from slamlib.scaling import Standardizer
from slamlib.svr.folds import kfold_indices
from slamlib.svr.libsvm import train_pixel

__all__ = ["ToyData", "sine_data", "noise_data", "svr_curve", "quadratic_curve", "CvMap", "cv_mse_map"]


@dataclass(frozen=True)
class ToyData:
    """One-dimensional data set, raw and standardized.

    Attributes
    ----------
    x, y : ndarray, shape (n_points,)
    x_std, y_std : ndarray, shape (n_points,)
        Standardized to mean 0 and variance 1, as SLAM standardizes labels and flux.
    noise_variance : float
        Variance of the Gaussian noise added to y.
    """

    x: np.ndarray
    y: np.ndarray
    x_std: np.ndarray
    y_std: np.ndarray
    noise_variance: float


def _toy(x: np.ndarray, y: np.ndarray, noise_variance: float) -> ToyData:
    x_scaler = Standardizer.fit(x[:, None])
    y_scaler = Standardizer.fit(y[:, None])
    return ToyData(x, y, x_scaler.transform(x[:, None])[:, 0], y_scaler.transform(y[:, None])[:, 0], noise_variance)


def _check(n_points: int, noise_variance: float) -> None:
    if n_points < 10:
        raise ValueError(f"n_points must be at least 10, got {n_points}.")
    if not noise_variance > 0:
        raise ValueError(f"noise_variance must be positive, got {noise_variance}.")


def sine_data(n_points: int = 200, *, noise_variance: float = 0.16, seed: int = 0) -> ToyData:
    """``y = sin(2x) + N(0, noise_variance)`` with x ~ N(0, 1) (paper Appendix A: variance 0.16)."""
    _check(n_points, noise_variance)
    rng = np.random.default_rng(seed)
    x = np.sort(rng.normal(0.0, 1.0, n_points))
    return _toy(x, np.sin(2 * x) + rng.normal(0.0, np.sqrt(noise_variance), n_points), noise_variance)


def noise_data(n_points: int = 200, *, noise_variance: float = 1.0, seed: int = 0) -> ToyData:
    """Pure noise: x ~ N(0, 1) and ``y = N(0, noise_variance)``, independent (paper Appendix A:
    both N(0, 1)); nothing to learn."""
    _check(n_points, noise_variance)
    rng = np.random.default_rng(seed + 1)
    x = np.sort(rng.normal(0.0, 1.0, n_points))
    return _toy(x, rng.normal(0.0, np.sqrt(noise_variance), n_points), noise_variance)


def svr_curve(data: ToyData, x_grid_std: np.ndarray, *, c: float, epsilon: float, gamma: float) -> np.ndarray:
    """Standardized prediction of an RBF epsilon-SVR fitted to the standardized data."""
    regressor = SVR(kernel="rbf", C=c, epsilon=epsilon, gamma=gamma).fit(data.x_std[:, None], data.y_std)
    return regressor.predict(np.asarray(x_grid_std)[:, None])


def quadratic_curve(data: ToyData, x_grid_std: np.ndarray) -> np.ndarray:
    """Least-squares quadratic through the standardized data (the Cannon-like alternative)."""
    return np.polyval(np.polyfit(data.x_std, data.y_std, 2), x_grid_std)


@dataclass(frozen=True)
class CvMap:
    """k-fold CV MSE over a (log10 C, log10 gamma) grid.

    Attributes
    ----------
    log_c, log_gamma : ndarray
        Grid axes.
    cv_mse : ndarray, shape (n_log_c, n_log_gamma)
        CV MSE of the standardized y.
    best_log_c, best_log_gamma, best_cv_mse : float
        The grid point with the lowest CV MSE.
    """

    @property
    def corner_cv_mse(self) -> float:
        """CV MSE at the largest C and gamma of the grid (the paper's over-fitting corner)."""
        return float(self.cv_mse[-1, -1])

    log_c: np.ndarray
    log_gamma: np.ndarray
    cv_mse: np.ndarray
    best_log_c: float
    best_log_gamma: float
    best_cv_mse: float


def cv_mse_map(
    data: ToyData,
    log_c: np.ndarray,
    log_gamma: np.ndarray,
    *,
    epsilon: float = 0.05,
    n_folds: int = 10,
    seed: int = 0,
) -> CvMap:
    """CV MSE of every (C, gamma) on the grid, with SLAM's per-pixel CV code."""
    log_c, log_gamma = np.asarray(log_c, float), np.asarray(log_gamma, float)
    pairs = [(10.0**a, 10.0**b) for a in log_c for b in log_gamma]
    folds = kfold_indices(data.x.size, n_folds, seed)
    result = train_pixel(data.x_std[:, None], data.y_std, np.ones(data.x.size, bool), folds, pairs, epsilon)
    cv_mse = np.asarray(result["cv_mse_grid"]).reshape(log_c.size, log_gamma.size)
    best_c_index, best_gamma_index = np.unravel_index(int(result["best"]), cv_mse.shape)
    return CvMap(log_c, log_gamma, cv_mse, float(log_c[best_c_index]), float(log_gamma[best_gamma_index]),
                 float(cv_mse[best_c_index, best_gamma_index]))
