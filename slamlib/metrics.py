"""Performance metrics of a label model (paper Sections 2.3.1, 4.2 and 6, Table 1).

* :func:`cv_bias`, :func:`cv_scatter`, :func:`cv_statistics` -- the bias and scatter of
  cross-validated labels against reference labels (Eqs. 9-10).
* :func:`scatter_by_snr` -- the same statistics in bins of S/N.
* :func:`error_model`, :func:`fit_error_model`, :func:`fit_error_models` -- the empirical
  error model sigma(S/N) = a exp(-b S/N) + c of Table 1; :class:`CVErrorModel` and
  :func:`fit_cv_error_model` -- that model fitted on a model's own CV labels, the error a
  prediction's ``<label>_err_cv`` reports; :func:`median_snr` -- the S/N it is a function of.
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
    "CVErrorModel",
    "fit_cv_error_model",
    "clipped_rms",
    "median_snr",
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


def median_snr(flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """Median S/N per pixel, ``|flux| sqrt(ivar)``, over each spectrum's good pixels (NaN if none).

    The S/N of :class:`CVErrorModel`: the same function of the spectra on the model's grid at
    ``fit`` (training stars) and at ``predict`` (targets). It is not the g-band S/N_g of the
    paper, but it follows it closely for normalized spectra (within a few per cent of the mock's S/N_g).

    Parameters
    ----------
    flux, ivar : ndarray, shape (n_spec, n_pix)

    Returns
    -------
    ndarray, shape (n_spec,)
    """
    flux = np.atleast_2d(np.asarray(flux, dtype=float))
    ivar = np.atleast_2d(np.asarray(ivar, dtype=float))
    with np.errstate(invalid="ignore", over="ignore"):
        good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
        snr = np.where(good, np.abs(np.where(good, flux, 0.0)) * np.sqrt(np.where(good, ivar, 0.0)), np.nan)
    result = np.full(snr.shape[0], np.nan)
    has_good = good.any(axis=1)
    if has_good.any():
        result[has_good] = np.nanmedian(snr[has_good], axis=1)
    return result


#: Differences beyond this many times their root-mean-square are clipped (iteratively) from the
#: CV scatter of :func:`fit_cv_error_model`: the few CV fits that fail badly would otherwise set
#: the error of all the others.
CV_ERROR_MODEL_CLIP = 3.0


def clipped_rms(differences: np.ndarray, *, clip: float = CV_ERROR_MODEL_CLIP, max_rounds: int = 10) -> np.ndarray:
    """Root-mean-square about zero of each column, iteratively leaving out values beyond ``clip`` times it.

    Parameters
    ----------
    differences : ndarray, shape (n_star, n_label)
        E.g. CV minus training labels (about zero, so that a bias counts as error).
    clip : float
    max_rounds : int

    Returns
    -------
    ndarray, shape (n_label,)
    """
    differences = np.atleast_2d(np.asarray(differences, dtype=float))
    keep = np.isfinite(differences)
    rms = np.full(differences.shape[1], np.nan)
    for _ in range(max_rounds):
        count = np.count_nonzero(keep, axis=0)
        rms = np.sqrt(np.sum(np.where(keep, differences, 0.0) ** 2, axis=0) / np.maximum(count, 1))
        with np.errstate(invalid="ignore"):
            new_keep = np.isfinite(differences) & (np.abs(differences) <= clip * rms[None, :])
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return rms


#: Fewest stars per S/N bin, and fewest bins, for fitting the exponential of :class:`CVErrorModel`.
CV_ERROR_MODEL_MIN_PER_BIN = 15
CV_ERROR_MODEL_MAX_BINS = 8
#: The exponential is fitted only when the training stars' S/N spans at least this factor
#: (highest over lowest); a narrower range (the paper's 120-140) cannot constrain a and b.
CV_ERROR_MODEL_MIN_SNR_FACTOR = 1.5


@dataclass(frozen=True)
class CVErrorModel:
    """The Table 1 error model fitted on a model's own cross-validated labels of its training stars.

    ``sigma_l(S/N) = a_l exp(-b_l S/N) + c_l`` is the scatter of CV label minus training label
    of label l (its root-mean-square, bias included, clipped at :data:`CV_ERROR_MODEL_CLIP`
    times itself, :func:`clipped_rms`) as a function of the stars' S/N (:func:`median_snr`), fitted by
    :func:`fit_cv_error_model`. Unlike the formal errors it includes the model's own error (the
    training set, the kernel, the normalization), so it describes the scatter of predicted minus
    true labels of stars like the training stars.

    Validity. It is measured on the training stars, between ``snr_range[0]`` and ``snr_range[1]``
    (their lowest and highest S/N); :meth:`evaluate` there is the fitted curve. Above the range the
    error is held at its value at ``snr_range[1]`` (errors do not keep falling beyond the best S/N
    measured). Below it the curve is not extrapolated (the exponential has never seen those S/N):
    the value at ``snr_range[0]`` is scaled by ``snr_range[0] / S/N``, the 1/(S/N) growth of
    noise-dominated errors (paper Figure 7), which overestimates rather than underestimates.
    :meth:`outside` marks those S/N; the catalogue calls them ``err_cv_extrapolated``. A training
    set at one S/N (the paper's 120-140) gives a constant (``a = b = 0``): trust it near that
    S/N only, and for fainter targets fit Table 1 on CV labels at their S/N
    (:func:`scatter_by_snr`, :func:`fit_error_models`), as the paper's Section 4 does.

    Attributes
    ----------
    coefficients : ndarray, shape (n_label, 3)
        (a, b, c) of every label, physical units of the label (b per unit S/N).
    snr_range : ndarray, shape (2,)
        Lowest and highest S/N of the stars the model was fitted on.
    n_stars : int
        Training stars whose CV labels entered.
    """

    coefficients: np.ndarray
    snr_range: np.ndarray
    n_stars: int

    def __post_init__(self) -> None:
        coefficients = np.asarray(self.coefficients, dtype=float)
        snr_range = np.asarray(self.snr_range, dtype=float)
        if coefficients.ndim != 2 or coefficients.shape[1] != _N_ERROR_MODEL_PARAMETERS:
            raise ValueError(f"CVErrorModel.coefficients must have shape (n_label, 3), got {coefficients.shape}.")
        if not (np.all(np.isfinite(coefficients)) and np.all(coefficients >= 0)):
            raise ValueError("CVErrorModel.coefficients must be finite and non-negative (a, b, c).")
        if snr_range.shape != (2,) or not (np.all(np.isfinite(snr_range)) and 0 < snr_range[0] <= snr_range[1]):
            raise ValueError(f"CVErrorModel.snr_range must be (low, high) with 0 < low <= high, got {snr_range!r}.")
        object.__setattr__(self, "coefficients", coefficients)
        object.__setattr__(self, "snr_range", snr_range)
        object.__setattr__(self, "n_stars", int(self.n_stars))

    @property
    def n_label(self) -> int:
        """Labels."""
        return int(self.coefficients.shape[0])

    def outside(self, snr: np.ndarray) -> np.ndarray:
        """True where a finite, positive S/N lies outside :attr:`snr_range`, shape of ``snr``."""
        snr = np.asarray(snr, dtype=float)
        with np.errstate(invalid="ignore"):
            return np.isfinite(snr) & (snr > 0) & ((snr < self.snr_range[0]) | (snr > self.snr_range[1]))

    def evaluate(self, snr: np.ndarray) -> np.ndarray:
        """The error of every label at each S/N (see the class notes for S/N outside the range).

        Parameters
        ----------
        snr : ndarray, shape (n_spec,)

        Returns
        -------
        ndarray, shape (n_spec, n_label)
            NaN where the S/N is not finite and positive.
        """
        snr = np.atleast_1d(np.asarray(snr, dtype=float))
        low, high = self.snr_range
        usable = np.isfinite(snr) & (snr > 0)
        clamped = np.clip(np.where(usable, snr, low), low, high)
        a, b, c = self.coefficients.T
        errors = error_model(clamped[:, None], a[None, :], b[None, :], c[None, :])
        with np.errstate(divide="ignore", invalid="ignore"):
            growth = np.where(usable & (snr < low), low / np.where(usable, snr, 1.0), 1.0)
        errors = errors * growth[:, None]
        return np.where(usable[:, None], errors, np.nan)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``error_model_coefficients``, ``error_model_snr_range`` and ``error_model_n_stars``."""
        return {"error_model_coefficients": self.coefficients, "error_model_snr_range": self.snr_range,
                "error_model_n_stars": np.array(self.n_stars, dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "CVErrorModel | None":
        """The model stored by :meth:`to_arrays`, or None when ``arrays`` hold none (older files)."""
        if "error_model_coefficients" not in arrays:
            return None
        return cls(arrays["error_model_coefficients"], arrays["error_model_snr_range"],
                   int(arrays.get("error_model_n_stars", 0)))


def fit_cv_error_model(
    cv_labels: np.ndarray,
    labels: np.ndarray,
    snr: np.ndarray,
) -> CVErrorModel:
    """Fit :class:`CVErrorModel` on CV labels: the Table 1 model of the CV scatter against S/N.

    The stars with finite CV labels and S/N are cut into equal-count S/N bins (at most
    :data:`CV_ERROR_MODEL_MAX_BINS`, at least :data:`CV_ERROR_MODEL_MIN_PER_BIN` stars each);
    each label's scatter per bin (Eq. 10) is fitted with :func:`fit_error_model`. With fewer than
    four bins, an S/N range narrower than :data:`CV_ERROR_MODEL_MIN_SNR_FACTOR`, or a fit that
    fails, the label gets the constant ``a = b = 0``, ``c`` = its scatter over all stars.

    Parameters
    ----------
    cv_labels : ndarray, shape (n_star, n_label)
        Cross-validated labels of the training stars (:meth:`slamlib.SlamModel.predict_cv`);
        NaN rows (failed fits) are left out.
    labels : ndarray, shape (n_star, n_label)
        Their training labels.
    snr : ndarray, shape (n_star,)
        Their S/N (:func:`median_snr`).

    Returns
    -------
    CVErrorModel

    Raises
    ------
    ValueError
        If the shapes differ or fewer than two stars have finite CV labels and S/N.
    """
    cv_labels = np.atleast_2d(np.asarray(cv_labels, dtype=float))
    labels = np.atleast_2d(np.asarray(labels, dtype=float))
    snr = np.asarray(snr, dtype=float)
    if cv_labels.shape != labels.shape or snr.shape != (labels.shape[0],):
        raise ValueError(f"cv_labels {cv_labels.shape}, labels {labels.shape} and snr {snr.shape} must describe "
                         "the same stars: (n_star, n_label), (n_star, n_label) and (n_star,).")
    used = np.all(np.isfinite(cv_labels), axis=1) & np.all(np.isfinite(labels), axis=1) & np.isfinite(snr) & (snr > 0)
    if np.count_nonzero(used) < 2:
        raise ValueError(f"only {np.count_nonzero(used)} stars have finite CV labels and S/N; the CV error model "
                         "needs at least two (train on more stars).")
    differences, snr_used = cv_labels[used] - labels[used], snr[used]
    n_used = snr_used.size
    coefficients = np.zeros((labels.shape[1], _N_ERROR_MODEL_PARAMETERS))
    coefficients[:, 2] = clipped_rms(differences)
    n_bins = min(CV_ERROR_MODEL_MAX_BINS, n_used // CV_ERROR_MODEL_MIN_PER_BIN)
    wide = snr_used.max() >= CV_ERROR_MODEL_MIN_SNR_FACTOR * snr_used.min()
    if n_bins > _N_ERROR_MODEL_PARAMETERS and wide:
        order = np.argsort(snr_used, kind="stable")
        bins = np.array_split(order, n_bins)
        bin_snr = np.array([np.median(snr_used[members]) for members in bins])
        for label in range(labels.shape[1]):
            bin_scatter = np.array([clipped_rms(differences[members, label:label + 1])[0] for members in bins])
            parameters, _ = fit_error_model(bin_snr, bin_scatter)
            if np.all(np.isfinite(parameters)):
                coefficients[label] = parameters
    return CVErrorModel(coefficients, np.array([snr_used.min(), snr_used.max()]), n_used)


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
