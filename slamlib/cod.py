"""Coefficients of dependence by leave-one-label-out training (paper Section 6, Eqs. 12-13).

SLAM is trained once with all labels and once without each label in turn, on the same stars,
folds and grid. Per pixel, COD_full = 1 - MSE_full (the fraction of the standardized flux
variance the model explains) and COD_l shares COD_full among the labels in proportion to
MSE_l - MSE_full, the loss from leaving label l out (:func:`slamlib.metrics.coefficients_of_dependence`).
By default the MSEs are the cross-validated ones (CV MSE_j), which a model cannot lower by
overfitting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from slamlib.metrics import coefficients_of_dependence
from slamlib.model import SlamModel

__all__ = ["CodResult", "leave_one_label_out"]


@dataclass(frozen=True)
class CodResult:
    """CODs of every pixel.

    Attributes
    ----------
    label_names : list of str
    mse_full : ndarray, shape (n_pix,)
        MSE of the standardized flux, model with all labels.
    mse_without_label : ndarray, shape (n_label, n_pix)
        The same without label l (row l).
    cod_full : ndarray, shape (n_pix,)
    cod_label : ndarray, shape (n_label, n_pix)
        Sums over labels to ``cod_full`` wherever some label matters.
    """

    label_names: list[str]
    mse_full: np.ndarray
    mse_without_label: np.ndarray
    cod_full: np.ndarray
    cod_label: np.ndarray


def leave_one_label_out(
    flux: np.ndarray,
    ivar: np.ndarray,
    labels: np.ndarray,
    label_names: list[str],
    *,
    model_parameters: dict[str, Any] | None = None,
    statistic: str = "cv_mse",
    full_model: SlamModel | None = None,
    train_model: Callable[[str, Callable[..., SlamModel]], SlamModel] | None = None,
) -> CodResult:
    """Train SLAM with all labels and without each label; return the CODs.

    Parameters
    ----------
    flux, ivar : ndarray, shape (n_star, n_pix)
        Normalized training flux and inverse variance.
    labels : ndarray, shape (n_star, n_label)
    label_names : list of str
    model_parameters : dict, optional
        Keyword arguments of :class:`SlamModel` (grid, epsilon, cv, seed...), the same for
        every model.
    statistic : {"cv_mse", "mse"}
        Which per-pixel MSE the CODs use: cross-validated (default) or on the training set.
    full_model : SlamModel, optional
        An already fitted model with all labels on the same data (saves one training).
    train_model : callable (name, fit) -> SlamModel, optional
        How every model is obtained: called with the model's name (``"all labels"``,
        ``"without <label>"``) and ``fit``, a function that fits a fresh :class:`SlamModel` on
        that model's labels, ``fit(model, runner=None)`` (``runner`` as in
        :meth:`SlamModel.fit`). It may fit with a checkpointing runner
        (:class:`slamlib.pipeline.checkpoint.ResumableTraining`, as ``slam cod`` does), take the
        model from a cache, or report progress. Default: ``fit(SlamModel(**model_parameters))``.

    Returns
    -------
    CodResult
    """
    if statistic not in ("cv_mse", "mse"):
        raise ValueError(f'statistic must be "cv_mse" or "mse", got {statistic!r}.')
    labels = np.asarray(labels, dtype=float)
    if labels.ndim != 2 or labels.shape[1] < 2:
        raise ValueError("leave-one-label-out needs at least two labels, shape (n_star, n_label).")
    if len(label_names) != labels.shape[1]:
        raise ValueError(f"{len(label_names)} label names for {labels.shape[1]} labels.")
    model_parameters = dict(model_parameters or {})

    def train(columns: list[int], name: str) -> SlamModel:
        names = [label_names[column] for column in columns]
        def fit(fresh: SlamModel, runner: Any = None) -> SlamModel:
            return fresh.fit(flux, ivar, labels[:, columns], names, runner=runner)

        if train_model is None:
            return fit(SlamModel(**model_parameters))
        return train_model(name, fit)

    if full_model is None:
        full_model = train(list(range(labels.shape[1])), "all labels")
    attribute = f"{statistic}_"
    mse_full = getattr(full_model, attribute)
    mse_without_label = np.empty((labels.shape[1], mse_full.size))
    for index in range(labels.shape[1]):
        kept = [column for column in range(labels.shape[1]) if column != index]
        mse_without_label[index] = getattr(train(kept, f"without {label_names[index]}"), attribute)
    cod_full, cod_label = coefficients_of_dependence(mse_full, mse_without_label)
    return CodResult(list(label_names), mse_full, mse_without_label, cod_full, cod_label)
