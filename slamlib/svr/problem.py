"""The training problem every backend and every block runner receives (paper Section 2.2).

Per pixel j, an epsilon-SVR with an RBF kernel maps the standardized labels of the training
stars to their standardized flux at j; C and gamma are chosen on a grid by k-fold CV. What
defines all these problems at once is one :class:`TrainingProblem`: the standardized labels,
flux and good-pixel mask, the folds, the grid, epsilon and the smallest number of good stars
a pixel needs. A backend trains it (:mod:`slamlib.svr.backend`); a block runner cuts it into
blocks of pixel columns (:meth:`TrainingProblem.columns`) and hashes it to key checkpoints
(:meth:`TrainingProblem.checksum`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from slamlib.files import array_checksum
from slamlib.svr.result import parameter_pairs

__all__ = ["TrainingProblem"]


@dataclass(frozen=True, eq=False)
class TrainingProblem:
    """All per-pixel SVR problems of one training set, in standardized units.

    Attributes
    ----------
    labels_std : ndarray, shape (n_star, n_label)
        Standardized training labels (the support labels of every pixel's model).
    flux_std : ndarray, shape (n_star, n_pix)
        Standardized flux; 0 where the pixel is bad.
    good : ndarray of bool, shape (n_star, n_pix)
        Pixels that enter the fits and the CV scores.
    folds : list of (train_index, test_index)
        The CV folds, the same for every pixel.
    param_grid : dict with keys "C" and "gamma"
        The hyperparameter grid searched by CV.
    epsilon : float
        Half-width of the SVR tube (standardized flux).
    min_good_stars : int
        Pixels with fewer good stars are left untrained.
    """

    labels_std: np.ndarray
    flux_std: np.ndarray
    good: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    param_grid: dict[str, list[float]]
    epsilon: float
    min_good_stars: int

    def __post_init__(self) -> None:
        n_star = np.shape(self.labels_std)[0]
        if np.ndim(self.labels_std) != 2 or np.ndim(self.flux_std) != 2 or np.shape(self.flux_std)[0] != n_star:
            raise ValueError(f"labels_std {np.shape(self.labels_std)} and flux_std {np.shape(self.flux_std)} must be "
                             "(n_star, n_label) and (n_star, n_pix) with the same n_star.")
        if np.shape(self.good) != np.shape(self.flux_std):
            raise ValueError(f"good {np.shape(self.good)} must have the shape of flux_std {np.shape(self.flux_std)}.")

    @property
    def n_star(self) -> int:
        """Training stars."""
        return int(np.shape(self.flux_std)[0])

    @property
    def n_pix(self) -> int:
        """Pixels."""
        return int(np.shape(self.flux_std)[1])

    @property
    def n_label(self) -> int:
        """Labels."""
        return int(np.shape(self.labels_std)[1])

    @property
    def n_folds(self) -> int:
        """CV folds."""
        return len(self.folds)

    @property
    def c_values(self) -> list[float]:
        """The distinct C of the grid, increasing."""
        return sorted({c for c, _ in parameter_pairs(self.param_grid)})

    def columns(self, columns: np.ndarray) -> "TrainingProblem":
        """The problem restricted to some pixel columns (contiguous copies of their flux and mask).

        Parameters
        ----------
        columns : ndarray of int, shape (n_block,)

        Returns
        -------
        TrainingProblem
        """
        return TrainingProblem(self.labels_std, np.ascontiguousarray(self.flux_std[:, columns]),
                               np.ascontiguousarray(self.good[:, columns]), self.folds, self.param_grid,
                               self.epsilon, self.min_good_stars)

    def description(self) -> dict[str, Any]:
        """The problem's settings and sizes as plain JSON types (no arrays)."""
        return {"grid_pairs": parameter_pairs(self.param_grid), "epsilon": float(self.epsilon),
                "min_good_stars": int(self.min_good_stars), "n_pix": self.n_pix, "n_star": self.n_star,
                "n_label": self.n_label, "n_folds": self.n_folds}

    def checksum(self, extra: dict[str, Any] | None = None) -> str:
        """SHA-256 over the arrays, the folds, the settings and ``extra`` (JSON-serializable).

        Returns
        -------
        str
            64 hexadecimal digits.
        """
        arrays = {"labels_std": self.labels_std, "flux_std": self.flux_std, "good": np.asarray(self.good, dtype=bool)}
        for number, (train, test) in enumerate(self.folds):
            arrays[f"fold{number}_train"] = np.asarray(train, dtype=np.int64)
            arrays[f"fold{number}_test"] = np.asarray(test, dtype=np.int64)
        digest = hashlib.sha256(array_checksum(arrays).encode())
        digest.update(json.dumps({**self.description(), **(extra or {})}, sort_keys=True, default=str).encode())
        return digest.hexdigest()
