"""What any training backend returns: per-pixel hyperparameters, CV statistics and the fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slamlib.svr.kernel import KernelExpansion

__all__ = ["TrainingResult", "parameter_pairs", "pixels_to_train"]


def parameter_pairs(param_grid: dict[str, list[float]]) -> list[tuple[float, float]]:
    """All (C, gamma) combinations of a grid, C varying slowest."""
    return [(float(c), float(gamma)) for c in param_grid["C"] for gamma in param_grid["gamma"]]


def pixels_to_train(good: np.ndarray, min_good_stars: int, pixels: np.ndarray | None = None,
                    folds: list[tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
    """Which pixels a backend trains: at least ``min_good_stars`` good stars, a good star in the
    training part of every CV fold (else that fold's fit has no data), and in ``pixels`` if given.

    Parameters
    ----------
    good : ndarray of bool, shape (n_star, n_pix)
    min_good_stars : int
    pixels : ndarray of int, optional
        Restrict training to these pixel columns.
    folds : list of (train_index, test_index), optional
        The CV folds; a pixel whose good stars all sit in one fold's held-out part is not
        trained.

    Returns
    -------
    ndarray of bool, shape (n_pix,)
    """
    trained = good.sum(axis=0) >= min_good_stars
    for train, _ in folds or []:
        trained &= good[train].any(axis=0)
    if pixels is not None:
        selected = np.zeros(good.shape[1], dtype=bool)
        selected[np.asarray(pixels)] = True
        trained &= selected
    return trained


@dataclass(frozen=True)
class TrainingResult:
    """Per-pixel outcome of training, in standardized flux units.

    Attributes
    ----------
    best_c, best_gamma : ndarray, shape (n_pix,)
        Hyperparameters with the lowest CV MSE (NaN for untrained pixels).
    cv_mse_grid : ndarray, shape (n_pix, n_grid)
        CV MSE of every grid point, in :func:`parameter_pairs` order.
    cv_mse, cv_md : ndarray, shape (n_pix,)
        CV mean squared error and mean deviation (model - data) at the best point (Eqs. 5-6).
    mse, md : ndarray, shape (n_pix,)
        The same for the final model refit on all training stars.
    trained : ndarray of bool, shape (n_pix,)
        False for pixels with too few good training stars; such pixels are ignored
        when predicting.
    expansion : KernelExpansion
        The final models of all pixels.
    fold_expansions : list of KernelExpansion, optional
        The CV models at each pixel's chosen (C, gamma), one per fold, each trained without
        that fold's stars: they predict labels of training stars they never saw (CV label
        scatter, leave-one-fold-out clipping) and form an ensemble for label uncertainties.
    fold_of_star : ndarray of int, shape (n_star,), optional
        The fold in which each training star was held out.
    """

    best_c: np.ndarray
    best_gamma: np.ndarray
    cv_mse_grid: np.ndarray
    cv_mse: np.ndarray
    cv_md: np.ndarray
    mse: np.ndarray
    md: np.ndarray
    trained: np.ndarray
    expansion: KernelExpansion
    fold_expansions: list[KernelExpansion] | None = None
    fold_of_star: np.ndarray | None = None
