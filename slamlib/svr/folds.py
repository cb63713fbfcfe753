"""Seeded k-fold splits, identical for every pixel, and the CV statistics of Eqs. 5-6."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold

__all__ = ["kfold_indices", "fold_assignment"]


def kfold_indices(n_star: int, n_folds: int, random_state: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k-fold split of the training stars.

    Parameters
    ----------
    n_star : int
        Number of training stars.
    n_folds : int
        Number of folds (the paper uses 5 in Section 3 and 8 in Section 4).
    random_state : int
        Seed of the shuffle; the same seed gives the same folds.

    Returns
    -------
    list of (train_index, test_index)
        Index arrays into the training set, one pair per fold.
    """
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got cv={n_folds}.")
    if n_star < 2 * n_folds:
        raise ValueError(
            f"{n_star} training stars are too few for {n_folds}-fold cross-validation; "
            f"give at least {2 * n_folds} stars or lower cv."
        )
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=random_state)
    return [(train, test) for train, test in splitter.split(np.zeros((n_star, 1)))]


def fold_assignment(folds: list[tuple[np.ndarray, np.ndarray]], n_star: int) -> np.ndarray:
    """Fold number of every star's held-out fold, shape (n_star,)."""
    assignment = np.full(n_star, -1, dtype=int)
    for fold_number, (_, test) in enumerate(folds):
        assignment[test] = fold_number
    return assignment
