"""Invertible standardization of flux and labels to mean 0, variance 1 (paper Section 2.1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Standardizer"]


@dataclass(frozen=True)
class Standardizer:
    """Per-column affine map ``x -> (x - mean) / scale`` and its inverse.

    Attributes
    ----------
    mean : ndarray, shape (n_column,)
        Column means (over good entries only when fitted with a mask).
    scale : ndarray, shape (n_column,)
        Column standard deviations; a column with no spread gets scale 1 so the
        map stays invertible.
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, *, good: np.ndarray | None = None) -> "Standardizer":
        """Estimate mean and standard deviation of every column.

        Parameters
        ----------
        values : ndarray, shape (n_row, n_column)
            The data, e.g. flux (n_star, n_pix) or labels (n_star, n_label).
        good : ndarray of bool, shape (n_row, n_column), optional
            Entries to use; others (bad pixels) are ignored. A column with no good
            entry gets mean 0 and scale 1.

        Returns
        -------
        Standardizer
        """
        values = np.asarray(values, dtype=float)
        if values.ndim != 2:
            raise ValueError(f"Standardizer.fit needs a 2-D array (n_row, n_column), got shape {values.shape}.")
        if good is None:
            good = np.isfinite(values)
        good = np.asarray(good, dtype=bool) & np.isfinite(values)
        count = good.sum(axis=0)
        safe_count = np.maximum(count, 1)
        filled = np.where(good, values, 0.0)
        mean = filled.sum(axis=0) / safe_count
        variance = (np.where(good, values - mean, 0.0) ** 2).sum(axis=0) / safe_count
        scale = np.sqrt(variance)
        scale = np.where((scale > 0) & (count > 0), scale, 1.0)
        mean = np.where(count > 0, mean, 0.0)
        return cls(mean=mean, scale=scale)

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Standardize ``values`` (shape (..., n_column))."""
        return (np.asarray(values, dtype=float) - self.mean) / self.scale

    def inverse_transform(self, values_std: np.ndarray) -> np.ndarray:
        """Undo :meth:`transform`."""
        return np.asarray(values_std, dtype=float) * self.scale + self.mean
