"""Label uncertainties that include the training set: the spread of the CV sub-models.

Paper Section 5.2: SLAM's formal errors come from the likelihood of one spectrum given one
model; they leave out how much the model itself would change had it been trained on other
stars, and estimating that "requires training models with different training sets", which
the paper calls difficult because of the cost. The k-fold CV of the training already
produced k such models (each trained without one fold of the stars, at each pixel's chosen
C and gamma), so the spread of their labels for a spectrum measures it at no training cost.

The k sub-models are the delete-a-group jackknife replicates of the training set, so the
standard error of the full model's label is estimated by the grouped jackknife
(e.g. Efron & Tibshirani 1993, Section 11.5)::

    sigma_ensemble^2 = (k - 1) / k * sum_s (theta_s - mean_s theta_s)^2

which is (k - 1) times the plain variance of the k members: each member saw (k - 1)/k of
the stars, so their scatter alone understates the effect of drawing another training set.
The total error adds it to the formal error in quadrature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from slamlib.fitting import PredictionResult

__all__ = ["EnsemblePrediction", "jackknife_errors"]


def jackknife_errors(member_labels: np.ndarray, member_converged: np.ndarray) -> np.ndarray:
    """Grouped-jackknife standard errors of labels from k delete-a-group sub-models.

    Parameters
    ----------
    member_labels : ndarray, shape (n_member, n_spec, n_label)
        Labels of every spectrum by each sub-model.
    member_converged : ndarray of bool, shape (n_member, n_spec)
        Which sub-model fits converged; only those enter the estimate.

    Returns
    -------
    ndarray, shape (n_spec, n_label)
        sqrt((k - 1)/k * sum_s (theta_s - mean theta)^2) over the k converged members of each
        spectrum; NaN where fewer than two members converged.

    Raises
    ------
    ValueError
        If the shapes do not match.
    """
    member_labels = np.asarray(member_labels, dtype=float)
    member_converged = np.asarray(member_converged, dtype=bool)
    if member_labels.ndim != 3 or member_converged.shape != member_labels.shape[:2]:
        raise ValueError(f"member_labels must be (n_member, n_spec, n_label) and member_converged (n_member, n_spec); "
                         f"got {member_labels.shape} and {member_converged.shape}.")
    use = member_converged[:, :, None] & np.isfinite(member_labels)
    count = use.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(use, member_labels, 0.0).sum(axis=0) / count
        squared = np.where(use, (member_labels - mean) ** 2, 0.0).sum(axis=0)
        variance = (count - 1) / count * squared
    return np.where(count >= 2, np.sqrt(variance), np.nan)


@dataclass(frozen=True)
class EnsemblePrediction:
    """Labels of the final model with errors that include the training-set uncertainty.

    Attributes
    ----------
    prediction : PredictionResult
        The fit with the final model (labels, formal errors, flags), as :meth:`SlamModel.predict`.
    member_labels : ndarray, shape (n_member, n_spec, n_label)
        Labels of each spectrum by each CV sub-model.
    member_converged : ndarray of bool, shape (n_member, n_spec)
    ensemble_errors : ndarray, shape (n_spec, n_label)
        Grouped-jackknife standard errors from the sub-models (:func:`jackknife_errors`).
    total_errors : ndarray, shape (n_spec, n_label)
        sqrt(formal^2 + ensemble^2).
    """

    prediction: PredictionResult
    member_labels: np.ndarray
    member_converged: np.ndarray
    ensemble_errors: np.ndarray
    total_errors: np.ndarray

    @classmethod
    def from_members(cls, prediction: PredictionResult, members: list[PredictionResult]) -> "EnsemblePrediction":
        """Combine the final model's fit with the sub-models' fits of the same spectra."""
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two sub-models, got {len(members)}; train with cv >= 2.")
        member_labels = np.stack([member.labels for member in members])
        member_converged = np.stack([member.converged for member in members])
        ensemble_errors = jackknife_errors(member_labels, member_converged)
        total_errors = np.sqrt(prediction.errors**2 + ensemble_errors**2)
        return cls(prediction, member_labels, member_converged, ensemble_errors, total_errors)

    @property
    def labels(self) -> np.ndarray:
        """Labels of the final model, shape (n_spec, n_label)."""
        return self.prediction.labels

    @property
    def errors(self) -> np.ndarray:
        """Formal errors of the final model, shape (n_spec, n_label)."""
        return self.prediction.errors

    @property
    def converged(self) -> np.ndarray:
        """True where the final model's fit converged."""
        return self.prediction.converged

    @property
    def label_names(self) -> list[str]:
        return self.prediction.label_names

    def __len__(self) -> int:
        return len(self.prediction)

    def to_table(self) -> Table:
        """:meth:`PredictionResult.to_table` plus ``<label>_err_ensemble`` and ``<label>_err_total``."""
        table = self.prediction.to_table()
        for index, name in enumerate(self.label_names):
            position = table.colnames.index(f"{name}_err") + 1
            table.add_column(self.ensemble_errors[:, index], name=f"{name}_err_ensemble", index=position)
            table.add_column(self.total_errors[:, index], name=f"{name}_err_total", index=position + 1)
        table["n_members_converged"] = self.member_converged.sum(axis=0)
        return table
