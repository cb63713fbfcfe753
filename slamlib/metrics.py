"""Performance metrics of a label model (paper Sections 2.3.1, 4.2 and 6, Table 1).

* :func:`cv_bias`, :func:`cv_scatter`, :func:`cv_statistics` -- the bias and scatter of
  cross-validated labels against reference labels (Eqs. 9-10).
* :func:`scatter_by_snr` -- the same statistics in bins of S/N.
* :func:`error_model`, :func:`fit_error_model`, :func:`fit_error_models` -- the empirical
  error model sigma(S/N) = a exp(-b S/N) + c of Table 1.
* :func:`label_distance` -- how far a star's labels lie from the training set, in units of
  a per-label scale.
* :func:`coefficients_of_dependence` -- how much of the flux variance at each pixel each
  label explains (Eqs. 12-13).

Rows whose predicted labels are not finite (fits that did not converge, flagged with NaN)
are left out of every statistic here, and the number of rows used is reported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from astropy.table import Table
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.spatial import cKDTree

__all__ = [
    "CVStatistics",
    "cv_bias",
    "cv_scatter",
    "cv_statistics",
    "scatter_by_snr",
    "error_model",
    "fit_error_model",
    "fit_error_models",
    "label_distance",
    "coefficients_of_dependence",
]

_N_ERROR_MODEL_PARAMETERS = 3


# --------------------------------------------------------------------------------------
# Bias and scatter (Eqs. 9-10)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CVStatistics:
    """Bias and scatter of predicted labels against reference labels.

    Attributes
    ----------
    bias : ndarray, shape (n_label,), or float
        Mean of (predicted - reference) per label (Eq. 9); a float for 1-D input.
    scatter : ndarray, shape (n_label,), or float
        Population standard deviation of (predicted - reference) per label (Eq. 10).
    n_used : int
        Number of stars whose predictions were all finite and entered the statistics.
    n_rejected : int
        Number of stars left out because a predicted label was not finite.
    """

    bias: np.ndarray | float
    scatter: np.ndarray | float
    n_used: int
    n_rejected: int


def _label_differences(labels_predicted, labels_reference) -> tuple[np.ndarray, int, bool]:
    """Differences (predicted - reference) of the rows with finite predictions.

    Returns
    -------
    differences : ndarray, shape (n_used, n_label)
    n_rejected : int
    one_dimensional : bool
        Whether the input was 1-D (one label).
    """
    predicted = np.asarray(labels_predicted, dtype=float)
    reference = np.asarray(labels_reference, dtype=float)
    if predicted.shape != reference.shape:
        raise ValueError(
            f"labels_predicted has shape {predicted.shape} but labels_reference has shape "
            f"{reference.shape}; pass arrays of the same shape (n_star, n_label) or (n_star,)."
        )
    if predicted.ndim not in (1, 2):
        raise ValueError(
            f"labels must have shape (n_star, n_label) or (n_star,), got {predicted.shape}."
        )
    if not np.all(np.isfinite(reference)):
        raise ValueError(
            "labels_reference contains non-finite values; remove those stars first "
            "(only non-finite predictions are skipped automatically)."
        )
    one_dimensional = predicted.ndim == 1
    if one_dimensional:
        predicted, reference = predicted[:, None], reference[:, None]
    finite_rows = np.all(np.isfinite(predicted), axis=1)
    differences = predicted[finite_rows] - reference[finite_rows]
    return differences, int(np.count_nonzero(~finite_rows)), one_dimensional


def _bias_and_scatter(differences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation along axis 0; NaN when there are no rows."""
    n_label = differences.shape[1]
    if differences.shape[0] == 0:
        return np.full(n_label, np.nan), np.full(n_label, np.nan)
    bias = differences.mean(axis=0)
    scatter = np.sqrt(np.mean((differences - bias) ** 2, axis=0))
    return bias, scatter


def _as_output(values: np.ndarray, one_dimensional: bool) -> np.ndarray | float:
    return float(values[0]) if one_dimensional else values


def cv_statistics(labels_predicted: np.ndarray, labels_reference: np.ndarray) -> CVStatistics:
    """Bias (Eq. 9) and scatter (Eq. 10) of predicted labels, with the number of stars used.

    Parameters
    ----------
    labels_predicted : ndarray, shape (n_star, n_label) or (n_star,)
        Labels predicted by the model (e.g. cross-validated). Stars with any non-finite
        predicted label are left out (and counted in ``n_rejected``).
    labels_reference : ndarray, same shape
        Reference labels; must be finite.

    Returns
    -------
    CVStatistics
        ``bias = mean(pred - ref)``, ``scatter = sqrt(mean((pred - ref - bias)**2))``
        per label, ``n_used`` and ``n_rejected``. Bias and scatter are NaN when no star
        is usable.

    Raises
    ------
    ValueError
        If the shapes differ or the reference labels are not finite.
    """
    differences, n_rejected, one_dimensional = _label_differences(labels_predicted, labels_reference)
    bias, scatter = _bias_and_scatter(differences)
    return CVStatistics(
        bias=_as_output(bias, one_dimensional),
        scatter=_as_output(scatter, one_dimensional),
        n_used=int(differences.shape[0]),
        n_rejected=n_rejected,
    )


def cv_bias(labels_predicted: np.ndarray, labels_reference: np.ndarray) -> np.ndarray | float:
    """Bias of predicted labels, Eq. 9: the mean over stars of (predicted - reference).

    Parameters
    ----------
    labels_predicted : ndarray, shape (n_star, n_label) or (n_star,)
        Predicted labels; stars with a non-finite prediction are left out
        (:func:`cv_statistics` reports how many).
    labels_reference : ndarray, same shape
        Reference labels; must be finite.

    Returns
    -------
    ndarray, shape (n_label,), or float for 1-D input
        NaN when no star has finite predictions.
    """
    return cv_statistics(labels_predicted, labels_reference).bias


def cv_scatter(labels_predicted: np.ndarray, labels_reference: np.ndarray) -> np.ndarray | float:
    """Scatter of predicted labels, Eq. 10.

    The population standard deviation (divisor n, not n - 1) of (predicted - reference):
    ``sqrt(mean((predicted - reference - bias)**2))``.

    Parameters
    ----------
    labels_predicted : ndarray, shape (n_star, n_label) or (n_star,)
        Predicted labels; stars with a non-finite prediction are left out
        (:func:`cv_statistics` reports how many).
    labels_reference : ndarray, same shape
        Reference labels; must be finite.

    Returns
    -------
    ndarray, shape (n_label,), or float for 1-D input
        NaN when no star has finite predictions.
    """
    return cv_statistics(labels_predicted, labels_reference).scatter


# --------------------------------------------------------------------------------------
# Statistics in bins of S/N
# --------------------------------------------------------------------------------------


def _validate_label_names(label_names: Sequence[str] | None, n_label: int) -> list[str]:
    if label_names is None:
        return [f"label{index}" for index in range(n_label)]
    names = [str(name) for name in label_names]
    if len(names) != n_label:
        raise ValueError(f"label_names has {len(names)} names for {n_label} labels; give one per label.")
    if len(set(names)) != len(names):
        raise ValueError(f"label_names must be unique, got {names}.")
    return names


def _validate_bins(bins) -> np.ndarray:
    edges = np.asarray(bins, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ValueError(
            "bins must be a 1-D array of at least 2 finite, strictly increasing S/N edges, "
            f"got {bins!r}."
        )
    return edges


def _bin_index(snr: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each star: [edge_i, edge_i+1), the last bin closed; -1 outside all bins."""
    index = np.searchsorted(edges, snr, side="right") - 1
    index[snr == edges[-1]] = edges.size - 2
    index[(snr < edges[0]) | (snr > edges[-1])] = -1
    return index


def _as_columns(array, n_star: int | None, name: str) -> np.ndarray:
    """``array`` as shape (n_star, n_label); 1-D input becomes one column."""
    values = np.asarray(array, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or (n_star is not None and values.shape[0] != n_star):
        raise ValueError(
            f"{name} must have shape (n_star, n_label) or (n_star,)"
            f"{'' if n_star is None else f' with n_star = {n_star}'}, got {np.shape(array)}."
        )
    return values


def scatter_by_snr(
    labels_predicted: np.ndarray,
    labels_reference: np.ndarray,
    snr: np.ndarray,
    bins: Sequence[float] | np.ndarray,
    *,
    label_names: Sequence[str] | None = None,
    errors: np.ndarray | None = None,
) -> Table:
    """Bias and scatter of predicted labels in bins of S/N (paper Figures 5 and 9).

    Parameters
    ----------
    labels_predicted : ndarray, shape (n_star, n_label) or (n_star,)
        Predicted labels; stars with any non-finite predicted label are left out and
        counted in the ``n_rejected`` column.
    labels_reference : ndarray, same shape
        Reference labels; must be finite.
    snr : ndarray, shape (n_star,)
        S/N of each spectrum; must be finite.
    bins : sequence of float, shape (n_bin + 1,)
        Strictly increasing bin edges. Bins are ``[low, high)``, the last one closed
        ``[low, high]``; stars outside all bins are ignored.
    label_names : sequence of str, optional
        Column name prefixes, one per label; default ``label0, label1, ...``.
    errors : ndarray, same shape as ``labels_predicted``, optional
        Formal label errors; adds the columns ``<name>_err_median`` (median over the
        used stars of the bin).

    Returns
    -------
    astropy.table.Table
        One row per bin with ``snr_low``, ``snr_high``, ``snr_center``, ``snr_median``
        (of the used stars), ``n_star`` (stars used), ``n_rejected`` and, per label,
        ``<name>_bias`` and ``<name>_scatter`` (Eqs. 9-10). Empty bins have NaN statistics.

    Raises
    ------
    ValueError
        On mismatched shapes, bad bin edges, non-finite S/N or reference labels.
    """
    predicted = _as_columns(labels_predicted, None, "labels_predicted")
    n_star = predicted.shape[0]
    reference = _as_columns(labels_reference, n_star, "labels_reference")
    if reference.shape != predicted.shape:
        raise ValueError(
            f"labels_reference has shape {reference.shape}, labels_predicted {predicted.shape}; "
            "they must match."
        )
    signal_to_noise = np.asarray(snr, dtype=float)
    if signal_to_noise.shape != (n_star,) or not np.all(np.isfinite(signal_to_noise)):
        raise ValueError(
            f"snr must be a finite array of shape ({n_star},), got shape {signal_to_noise.shape} "
            "or non-finite values; drop stars without S/N first."
        )
    label_errors = None if errors is None else _as_columns(errors, n_star, "errors")
    if label_errors is not None and label_errors.shape != predicted.shape:
        raise ValueError(
            f"errors has shape {label_errors.shape}, labels_predicted {predicted.shape}; they must match."
        )
    edges = _validate_bins(bins)
    names = _validate_label_names(label_names, predicted.shape[1])

    bin_of_star = _bin_index(signal_to_noise, edges)
    rows = []
    for bin_number in range(edges.size - 1):
        in_bin = bin_of_star == bin_number
        rows.append(
            _bin_row(
                predicted[in_bin], reference[in_bin], signal_to_noise[in_bin],
                None if label_errors is None else label_errors[in_bin],
                edges[bin_number], edges[bin_number + 1], names,
            )
        )
    return Table(rows=rows)


def _bin_row(predicted, reference, snr, label_errors, low, high, names) -> dict[str, float]:
    """One row of :func:`scatter_by_snr` for the stars of one bin."""
    differences, n_rejected, _ = _label_differences(predicted, reference)
    bias, scatter = _bias_and_scatter(differences)
    used = np.all(np.isfinite(predicted), axis=1)
    row: dict[str, float] = {
        "snr_low": low,
        "snr_high": high,
        "snr_center": 0.5 * (low + high),
        "snr_median": float(np.median(snr[used])) if np.any(used) else np.nan,
        "n_star": int(np.count_nonzero(used)),
        "n_rejected": n_rejected,
    }
    for index, name in enumerate(names):
        row[f"{name}_bias"] = bias[index]
        row[f"{name}_scatter"] = scatter[index]
        if label_errors is not None:
            row[f"{name}_err_median"] = _nan_median(label_errors[used, index])
    return row


def _nan_median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else np.nan


# --------------------------------------------------------------------------------------
# Empirical error model (Table 1)
# --------------------------------------------------------------------------------------


def error_model(snr: np.ndarray | float, a: float, b: float, c: float) -> np.ndarray | float:
    """The empirical error model of paper Table 1: ``sigma(S/N) = a * exp(-b * S/N) + c``.

    Parameters
    ----------
    snr : float or ndarray, any shape
        Signal-to-noise ratio.
    a, b, c : float
        Amplitude, decay rate (per unit S/N) and floor of the error.

    Returns
    -------
    float or ndarray, same shape as ``snr``
    """
    return a * np.exp(-b * np.asarray(snr, dtype=float)) + c


def _initial_error_model_parameters(snr: np.ndarray, scatter: np.ndarray) -> np.ndarray:
    """A start for the fit: floor at the smallest scatter, decay over the S/N range."""
    order = np.argsort(snr)
    floor = float(np.min(scatter))
    decay_rate = 3.0 / max(float(np.ptp(snr)), np.finfo(float).tiny)
    excess = max(float(scatter[order[0]]) - floor, 1e-3 * max(float(np.max(scatter)), 1e-12))
    amplitude = excess * np.exp(decay_rate * float(snr[order[0]]))
    return np.array([amplitude, decay_rate, max(floor, 0.0)])


def fit_error_model(
    snr: np.ndarray,
    scatter: np.ndarray,
    *,
    p0: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``scatter = a * exp(-b * snr) + c`` with a, b, c >= 0 (paper Table 1).

    Unweighted least squares with :func:`scipy.optimize.curve_fit` (trust-region
    reflective, bounds ``[0, inf)`` on every parameter).

    Parameters
    ----------
    snr : ndarray, shape (n_bin,)
        S/N of each point (e.g. the ``snr_median`` column of :func:`scatter_by_snr`).
    scatter : ndarray, shape (n_bin,)
        Label scatter at each S/N. Points where ``snr`` or ``scatter`` is not finite
        (e.g. empty bins) are skipped.
    p0 : sequence of 3 float, optional
        Starting (a, b, c); by default c starts at the smallest scatter, b at 3 / (S/N
        range) and a so that the model matches the scatter at the lowest S/N.

    Returns
    -------
    parameters : ndarray, shape (3,)
        Best-fit (a, b, c).
    covariance : ndarray, shape (3, 3)
        Their covariance as estimated by ``curve_fit`` (residuals scaled to unit
        reduced chi-square); filled with ``inf`` when it cannot be estimated
        (a degenerate fit, e.g. a flat scatter curve). When the fit does not converge
        (a scatter curve the model cannot follow), parameters and covariance are NaN.

    Raises
    ------
    ValueError
        If the shapes differ, fewer than 4 usable points remain, or ``p0`` is not
        three non-negative numbers.
    """
    signal_to_noise = np.asarray(snr, dtype=float)
    scatter_values = np.asarray(scatter, dtype=float)
    if signal_to_noise.ndim != 1 or signal_to_noise.shape != scatter_values.shape:
        raise ValueError(
            f"snr and scatter must be 1-D arrays of equal length, got shapes "
            f"{signal_to_noise.shape} and {scatter_values.shape}."
        )
    usable = np.isfinite(signal_to_noise) & np.isfinite(scatter_values)
    if np.count_nonzero(usable) <= _N_ERROR_MODEL_PARAMETERS:
        raise ValueError(
            f"fitting a*exp(-b*snr)+c needs at least {_N_ERROR_MODEL_PARAMETERS + 1} points with "
            f"finite snr and scatter, got {np.count_nonzero(usable)}; use more (or fuller) S/N bins."
        )
    signal_to_noise, scatter_values = signal_to_noise[usable], scatter_values[usable]
    if p0 is None:
        start = _initial_error_model_parameters(signal_to_noise, scatter_values)
    else:
        start = np.asarray(p0, dtype=float)
    if start.shape != (_N_ERROR_MODEL_PARAMETERS,) or not np.all(np.isfinite(start)) or np.any(start < 0):
        raise ValueError(f"p0 must be three finite, non-negative numbers (a, b, c), got {p0!r}.")
    with warnings.catch_warnings():
        # A covariance that cannot be estimated comes back as inf; documented above.
        warnings.simplefilter("ignore", OptimizeWarning)
        try:
            parameters, covariance = curve_fit(
                error_model, signal_to_noise, scatter_values, p0=start,
                bounds=(np.zeros(_N_ERROR_MODEL_PARAMETERS), np.full(_N_ERROR_MODEL_PARAMETERS, np.inf)),
                method="trf", max_nfev=10000,
            )
        except RuntimeError:
            # No convergence (e.g. a scatter that does not fall with S/N): say so with NaN, not a guess.
            nan = np.full(_N_ERROR_MODEL_PARAMETERS, np.nan)
            return nan, np.full((_N_ERROR_MODEL_PARAMETERS, _N_ERROR_MODEL_PARAMETERS), np.nan)
    return parameters, covariance


def fit_error_models(
    table: Table,
    *,
    label_names: Sequence[str] | None = None,
    snr_column: str = "snr_median",
) -> Table:
    """Fit the error model of every label of a :func:`scatter_by_snr` table (Table 1 layout).

    Parameters
    ----------
    table : astropy.table.Table
        Output of :func:`scatter_by_snr`.
    label_names : sequence of str, optional
        Labels to fit; default every label with a ``<name>_scatter`` column, in order.
    snr_column : str, optional
        Column giving the S/N of each bin; default the median S/N of the used stars.

    Returns
    -------
    astropy.table.Table
        One row per label: ``label``, ``a``, ``b``, ``c`` and their standard errors
        ``a_err``, ``b_err``, ``c_err`` (from the fit covariance).

    Raises
    ------
    ValueError
        If a column is missing or a label has too few usable bins.
    """
    names = list(label_names) if label_names is not None else [
        column[: -len("_scatter")] for column in table.colnames if column.endswith("_scatter")
    ]
    needed = [snr_column] + [f"{name}_scatter" for name in names]
    missing = [column for column in needed if column not in table.colnames]
    if missing or not names:
        raise ValueError(
            f"table lacks columns {missing or ['<label>_scatter']}; pass the output of scatter_by_snr."
        )
    rows = []
    for name in names:
        parameters, covariance = fit_error_model(
            np.asarray(table[snr_column], dtype=float), np.asarray(table[f"{name}_scatter"], dtype=float)
        )
        standard_errors = np.sqrt(np.diag(covariance))
        rows.append((name, *parameters, *standard_errors))
    return Table(rows=rows, names=["label", "a", "b", "c", "a_err", "b_err", "c_err"])


# --------------------------------------------------------------------------------------
# Distance to the training set in label space
# --------------------------------------------------------------------------------------


def label_distance(
    labels: np.ndarray,
    training_labels: np.ndarray,
    training_scatter: np.ndarray,
) -> np.ndarray:
    """Distance of each star's labels to the nearest training star, in units of label scale.

    ``D = min_i sqrt( sum_l ((theta_l - theta_i,l) / s_l)**2 )``, the Euclidean distance
    to the nearest training star ``i`` after dividing every label ``l`` by its scale
    ``s_l``. With ``s_l`` the per-label (cross-validated) scatter, ``D = 1`` means the
    star is one label-scatter away from the nearest training star: a star well inside
    the training set has D of order 1 or less; large D flags an extrapolation
    (cf. paper Section 4.2). This is our reading of the paper's distance; the
    normalization by a per-label scale and the nearest-neighbour choice are stated here
    so that results can be compared exactly.

    Parameters
    ----------
    labels : ndarray, shape (n_star, n_label)
        Labels of the stars to test. Rows with a non-finite label get a NaN distance.
    training_labels : ndarray, shape (n_train, n_label)
        Labels of the training set; must be finite.
    training_scatter : ndarray, shape (n_label,)
        The per-label scale ``s_l`` (positive), e.g. the CV scatter of each label.

    Returns
    -------
    ndarray, shape (n_star,)
        The distance D (dimensionless).

    Raises
    ------
    ValueError
        On mismatched label counts, non-finite training labels, or non-positive scales.
    """
    query = np.atleast_2d(np.asarray(labels, dtype=float))
    training = np.asarray(training_labels, dtype=float)
    scale = np.asarray(training_scatter, dtype=float)
    if training.ndim != 2 or training.shape[0] == 0 or not np.all(np.isfinite(training)):
        raise ValueError(
            "training_labels must be a non-empty finite array of shape (n_train, n_label), "
            f"got shape {training.shape}."
        )
    n_label = training.shape[1]
    if query.ndim != 2 or query.shape[1] != n_label or scale.shape != (n_label,):
        raise ValueError(
            f"labels {query.shape}, training_labels {training.shape} and training_scatter {scale.shape} "
            f"must share n_label = {n_label}: shapes (n_star, n_label), (n_train, n_label), (n_label,)."
        )
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise ValueError(f"training_scatter must be finite and positive for every label, got {scale}.")
    distance = np.full(query.shape[0], np.nan)
    finite_rows = np.all(np.isfinite(query), axis=1)
    if np.any(finite_rows):
        tree = cKDTree(training / scale)
        distance[finite_rows], _ = tree.query(query[finite_rows] / scale, k=1)
    return distance


# --------------------------------------------------------------------------------------
# Coefficients of dependence (Section 6, Eqs. 12-13)
# --------------------------------------------------------------------------------------


def coefficients_of_dependence(
    mse_full: np.ndarray,
    mse_without_label: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients of dependence (CODs) of the flux on each label (paper Eqs. 12-13).

    With the flux standardized to unit variance at each pixel,
    ``COD_full = 1 - MSE_full`` is the fraction of flux variance the full model explains.
    ``COD_l`` shares it among the labels in proportion to how much the MSE grows when
    label ``l`` is left out of the model::

        gain_l = max(MSE_without_l - MSE_full, 0)
        COD_l  = COD_full * gain_l / sum_m gain_m

    so that ``sum_l COD_l = COD_full`` at every pixel. A negative difference (leaving a
    label out lowered the MSE, which only noise or a worse hyperparameter choice can do)
    is clipped to zero before normalizing: that label gets ``COD_l = 0``. At a pixel where
    every difference is <= 0 the split is undefined and all ``COD_l`` are 0 there (their
    sum is then 0, not ``COD_full``).

    Parameters
    ----------
    mse_full : ndarray, shape (n_pix,)
        (CV) mean squared error of the standardized flux of the model with all labels.
    mse_without_label : ndarray, shape (n_label, n_pix)
        The same for the model trained without label ``l`` (row ``l``).

    Returns
    -------
    cod_full : ndarray, shape (n_pix,)
        ``1 - mse_full``. It can be negative where the model is worse than the mean flux.
    cod_label : ndarray, shape (n_label, n_pix)
        ``COD_l`` per label and pixel. NaN wherever an input MSE is not finite.

    Raises
    ------
    ValueError
        On mismatched shapes.
    """
    full = np.asarray(mse_full, dtype=float)
    without = np.asarray(mse_without_label, dtype=float)
    if full.ndim != 1 or without.ndim != 2 or without.shape[1] != full.shape[0]:
        raise ValueError(
            f"mse_full must have shape (n_pix,) and mse_without_label (n_label, n_pix), got "
            f"{full.shape} and {without.shape}."
        )
    cod_full = 1.0 - full
    gain = np.clip(without - full, 0.0, None)
    total_gain = gain.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total_gain > 0, gain / np.where(total_gain > 0, total_gain, 1.0), 0.0)
    cod_label = share * cod_full
    not_finite = ~np.isfinite(without) | ~np.isfinite(full)
    cod_label[np.broadcast_to(np.any(not_finite, axis=0), cod_label.shape)] = np.nan
    return cod_full, cod_label
