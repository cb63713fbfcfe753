"""``SlamModel``: the Stellar LAbel Machine as a thin scikit-learn-style estimator (paper Section 2).

The numerics live in :mod:`slamlib.scaling` (standardization), :mod:`slamlib.svr`
(the training problem, the backends and the fitted kernel expansion), :mod:`slamlib.fitting`
(label prediction), :mod:`slamlib.state` (the fitted state) and :mod:`slamlib.modelfile` (the
model file); this class checks the caller's input, builds the training problem, hands it to a
runner (:mod:`slamlib.runner`: this process by default, a checkpoint or a Dask cluster from
:mod:`slamlib.pipeline`) and keeps the fitted state.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from slamlib import modelfile
from slamlib.ensemble import EnsemblePrediction
from slamlib.fitting import (
    GaussianPrior,
    NotNormalizedWarning,
    PredictionResult,
    TrustLimits,
    cv_fit_quality,
    warn_if_not_normalized,
)
from slamlib.metrics import CVErrorModel, fit_cv_error_model, median_snr
from slamlib.runner import LocalRunner, PredictionRunner, TrainingRunner
from slamlib.scaling import Standardizer
from slamlib.state import FittedState
from slamlib.svr import folds as svr_folds
from slamlib.svr.backend import BACKEND_NAMES, Backend, get_backend
from slamlib.svr.problem import TrainingProblem
from slamlib.svr.result import TrainingResult, parameter_pairs

__all__ = ["SlamModel", "PAPER_SECTION3_GRID", "BACKENDS", "LABEL_RANGES", "SENTINEL_VALUES", "LabelCheck",
           "DuplicateTrainingRowsWarning", "check_training_labels", "duplicate_rows", "ERROR_MODEL_MAX_STARS"]

#: The sparse grid of the paper's Section 3 (LASP test).
PAPER_SECTION3_GRID = {"C": [10.0, 100.0], "gamma": [0.1, 0.01]}

#: Names of the training engines of ``SlamModel(backend=...)`` (:mod:`slamlib.svr.backend`):
#: "batched" (the default: all pixels' duals solved together, 11-13x faster at 2,000 stars, its
#: solutions verified against the exact KKT conditions) and "libsvm" (one scikit-learn SVR per
#: pixel, the reference). Both keep the CV fold models.
BACKENDS = BACKEND_NAMES


#: Training stars whose CV labels ``fit`` uses for the error model at most: above it, a subset
#: evenly spread over the stars ranked by S/N (deterministic), to bound the cost of ``fit``.
ERROR_MODEL_MAX_STARS = 2000


#: Physical ranges (inclusive) of the paper's label names, physical units: a training label outside its
#: range is a unit mix-up, a typo or a sentinel, never a star. Wide on purpose (they only catch
#: impossible values): Teff 2,000-60,000 K covers M dwarfs to O stars; log g -1 to 9.5 dex
#: supergiants to white dwarfs; [Fe/H] and [M/H] -6 to +1.5 dex the most metal-poor stars known
#: to the most metal-rich; [alpha/M] -1 to +1.5; [C/M] and [N/M] -3 to +4 (carbon-enhanced
#: metal-poor stars reach +3). Other label names have no range; override or extend with
#: ``SlamModel.fit(..., label_ranges={"logg": (0.0, 5.5)})`` or ``slam train --label-range``.
LABEL_RANGES: dict[str, tuple[float, float]] = {
    "teff": (2000.0, 60000.0),
    "logg": (-1.0, 9.5),
    "feh": (-6.0, 1.5),
    "m_h": (-6.0, 1.5),
    "alpha_m": (-1.0, 1.5),
    "c_m": (-3.0, 4.0),
    "n_m": (-3.0, 4.0),
}

#: Values that catalogues use for "no measurement"; a training label equal to one of them is refused
#: whatever its name.
SENTINEL_VALUES = (-9999.0, -999.0, -99999.0, 9999.0, 99999.0, -9999.99, -999.99)


class DuplicateTrainingRowsWarning(UserWarning):
    """The training set holds the same star (labels and spectrum) more than once."""


@dataclass(frozen=True)
class LabelCheck:
    """Training rows whose labels are sentinels or outside the physical ranges.

    Attributes
    ----------
    bad : ndarray of bool, shape (n_star,)
        Rows with at least one refused label.
    reason : ndarray of str, shape (n_star,)
        What is wrong with each bad row (empty for good rows), e.g. ``"logg = -9999 (sentinel)"``.
    """

    bad: np.ndarray
    reason: np.ndarray

    def summary(self, limit: int = 5) -> str:
        """The first ``limit`` bad rows and their reasons, one phrase."""
        rows = np.flatnonzero(self.bad)
        shown = "; ".join(f"row {row}: {self.reason[row]}" for row in rows[:limit])
        return shown + (f"; and {rows.size - limit} more" if rows.size > limit else "")


def _label_ranges(label_ranges: Mapping[str, tuple[float, float]] | None) -> dict[str, tuple[float, float]]:
    ranges = dict(LABEL_RANGES)
    for name, bounds in (label_ranges or {}).items():
        if bounds is None:
            ranges.pop(str(name), None)
            continue
        try:
            low, high = (float(value) for value in bounds)
        except (TypeError, ValueError) as error:
            raise ValueError(f"label_ranges[{name!r}] must be (low, high) or None, got {bounds!r}.") from error
        if not low < high:
            raise ValueError(f"label_ranges[{name!r}] = {bounds!r}: low must be below high.")
        ranges[str(name)] = (low, high)
    return ranges


def check_training_labels(labels: np.ndarray, label_names: list[str], *,
                          label_ranges: Mapping[str, tuple[float, float]] | None = None) -> LabelCheck:
    """Find training labels that are sentinel values or outside their physical range.

    Parameters
    ----------
    labels : ndarray, shape (n_star, n_label)
        Physical units; non-finite values are not judged here (``fit`` refuses them).
    label_names : list of str
    label_ranges : dict of str to (low, high), optional
        Ranges replacing or extending :data:`LABEL_RANGES`; ``None`` as a value removes a range.

    Returns
    -------
    LabelCheck
    """
    labels = np.atleast_2d(np.asarray(labels, dtype=float))
    ranges = _label_ranges(label_ranges)
    reason = np.full(labels.shape[0], "", dtype=object)
    for column, name in enumerate(label_names):
        values = labels[:, column]
        sentinel = np.isin(values, SENTINEL_VALUES)
        bounds = ranges.get(name)
        with np.errstate(invalid="ignore"):
            outside = (~sentinel & np.isfinite(values) & ((values < bounds[0]) | (values > bounds[1]))
                       if bounds is not None else np.zeros(values.size, dtype=bool))
        for row in np.flatnonzero(sentinel | outside):
            text = (f"{name} = {values[row]:g} (a sentinel value)" if sentinel[row]
                    else f"{name} = {values[row]:g} outside {bounds[0]:g} to {bounds[1]:g}")
            reason[row] = f"{reason[row]}, {text}" if reason[row] else text
    return LabelCheck(reason != "", reason.astype(str))


def duplicate_rows(flux: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Groups of training rows with identical labels and identical flux.

    Parameters
    ----------
    flux : ndarray, shape (n_star, n_pix)
    labels : ndarray, shape (n_star, n_label)

    Returns
    -------
    list of ndarray of int
        Each group's rows (two or more), in row order.
    """
    flux = np.ascontiguousarray(np.asarray(flux, dtype=float))
    labels = np.ascontiguousarray(np.asarray(labels, dtype=float))
    groups: dict[bytes, list[int]] = {}
    for row in range(flux.shape[0]):
        groups.setdefault(labels[row].tobytes() + flux[row].tobytes(), []).append(row)
    return [np.array(rows) for rows in groups.values() if len(rows) > 1]


def _labels_array(labels: Any, label_names: list[str] | None) -> tuple[np.ndarray, list[str] | None]:
    """Labels as a float array (n_star, n_label); an astropy Table gives its columns (all of them, or
    ``label_names`` in that order) and, when ``label_names`` is None, their names."""
    from astropy.table import Table

    if isinstance(labels, Table):
        names = list(labels.colnames) if label_names is None else [str(name) for name in label_names]
        missing = [name for name in names if name not in labels.colnames]
        if missing:
            raise ValueError(f"the labels table has no columns {missing}; it has {labels.colnames}.")
        columns = []
        for name in names:
            try:
                columns.append(np.ma.asarray(labels[name], dtype=float).filled(np.nan))
            except (TypeError, ValueError) as error:
                raise ValueError(f"label column {name!r} is not numeric ({error}); convert or drop it.") from error
        return np.column_stack(columns) if columns else np.empty((len(labels), 0)), names
    return np.asarray(labels, dtype=float), label_names


def wavelengths_in_angstrom(wave: Any) -> np.ndarray:
    """A wavelength grid as float Angstrom: an astropy ``Quantity`` is converted (a unit that is not a
    length raises ``ValueError``), plain numbers are taken as Angstrom."""
    from astropy import units

    if isinstance(wave, units.Quantity):
        try:
            return np.asarray(wave.to_value(units.AA), dtype=float)
        except units.UnitConversionError as error:
            raise ValueError(f"wave has unit {wave.unit}, not a length; give wavelengths in Angstrom or as a "
                             "Quantity of length.") from error
    return np.asarray(wave, dtype=float)


def _validate_grid(param_grid: dict[str, Any]) -> dict[str, list[float]]:
    if not isinstance(param_grid, dict) or set(param_grid) != {"C", "gamma"}:
        raise ValueError(f'param_grid must be a dict with exactly the keys "C" and "gamma", got {param_grid!r}.')
    grid = {}
    for key, values in param_grid.items():
        values = np.atleast_1d(np.asarray(values, dtype=float))
        if values.size == 0:
            raise ValueError(f"param_grid[{key!r}] is empty; give at least one value.")
        if not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError(f"param_grid[{key!r}] must hold positive finite numbers, got {values.tolist()}.")
        grid[key] = values.tolist()
    return grid


class SlamModel(BaseEstimator):
    """The Stellar LAbel Machine: per-pixel SVR emulator of normalized flux from labels.

    A scikit-learn estimator: the constructor only stores its parameters (they are checked by
    :meth:`fit`), ``get_params`` / ``set_params`` and :func:`sklearn.base.clone` work, and
    everything learned ends in ``_``.

    Parameters
    ----------
    param_grid : dict, optional
        ``{"C": [...], "gamma": [...]}``, the hyperparameter grid searched by CV for every
        pixel. Default (None): the paper's Section 3 grid, C in {10, 100}, gamma in {0.1, 0.01}.
    epsilon : float
        Half-width of the SVR tube in standardized flux units (paper: 0.05).
    cv : int
        Number of cross-validation folds (paper: 5 in Section 3, 8 in Section 4).
    n_jobs : int
        joblib workers for training and prediction (-1: all cores).
    random_state : int
        Seed of the CV folds (the same folds for every pixel).
    backend : {"batched", "libsvm"} or Backend
        Training engine (:mod:`slamlib.svr.backend`): "batched" (default) solves the SVRs of
        many pixels together; "libsvm" fits one scikit-learn SVR per pixel, the reference.
        Their models agree within 0.1 epsilon at stars' labels (docs/performance.md). "batched"
        refuses, before it starts, a training set whose kernel and working arrays would not
        fit in this machine's memory; "libsvm" needs far less.

    Attributes
    ----------
    state_ : FittedState
        Everything :meth:`predict` uses (:mod:`slamlib.state`).
    best_params_ : list of dict
        Per pixel, ``{"C": ..., "gamma": ...}`` with the lowest CV MSE (NaN if untrained).
    cv_mse_, cv_md_ : ndarray, shape (n_pix,)
        CV mean squared error and mean deviation (model - data) of the standardized flux.
    mse_, md_ : ndarray, shape (n_pix,)
        The same for the final model on all training stars.
    cv_mse_grid_ : ndarray, shape (n_pix, n_grid)
        CV MSE of every grid point.
    trained_ : ndarray of bool, shape (n_pix,)
        Pixels with enough good training stars to be modelled.
    label_names_ : list of str
    wave_ : ndarray or None
        Wavelength grid, if given to :meth:`fit`.
    training_seconds_ : float
        Wall time of the last :meth:`fit`.
    """

    def __init__(
        self,
        param_grid: dict[str, list[float]] | None = None,
        epsilon: float = 0.05,
        cv: int = 5,
        n_jobs: int = -1,
        random_state: int = 0,
        backend: "str | Backend" = "batched",
    ) -> None:
        self.param_grid = param_grid
        self.epsilon = epsilon
        self.cv = cv
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.backend = backend

    # ------------------------------------------------------------------ parameters
    def _checked_parameters(self) -> tuple[dict[str, list[float]], float, int, Backend]:
        """The parameters, validated: (grid, epsilon, folds, backend)."""
        grid = _validate_grid(PAPER_SECTION3_GRID if self.param_grid is None else self.param_grid)
        if isinstance(self.epsilon, bool) or not isinstance(self.epsilon, (int, float, np.number)) \
                or not (np.isfinite(self.epsilon) and self.epsilon >= 0):
            raise ValueError(f"epsilon must be a non-negative number, got {self.epsilon!r}.")
        if isinstance(self.cv, bool) or not isinstance(self.cv, (int, np.integer)) or self.cv < 2:
            raise ValueError(f"cv must be an integer of at least 2 folds, got {self.cv!r}.")
        if isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, (int, np.integer)) or self.n_jobs == 0 \
                or self.n_jobs < -1:
            raise ValueError(f"n_jobs must be a positive number of workers or -1 (all cores), got {self.n_jobs!r}.")
        if isinstance(self.random_state, bool) or not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(f"random_state must be an integer seed, got {self.random_state!r}.")
        return grid, float(self.epsilon), int(self.cv), get_backend(self.backend)

    # ------------------------------------------------------------------ training
    @staticmethod
    def _check_training_input(flux, ivar, labels, label_names, label_ranges=None):
        flux = np.asarray(flux, dtype=float)
        ivar = np.asarray(ivar, dtype=float)
        labels, label_names = _labels_array(labels, label_names)
        if labels.ndim == 1:
            labels = labels[:, None]
        if flux.ndim != 2 or ivar.shape != flux.shape:
            raise ValueError(f"flux {flux.shape} and ivar {ivar.shape} must be 2-D arrays of one shape (n_star, n_pix).")
        if labels.ndim != 2 or labels.shape[0] != flux.shape[0]:
            raise ValueError(f"labels {labels.shape} must be (n_star, n_label) with n_star = {flux.shape[0]} as in flux.")
        bad_rows = np.flatnonzero(~np.all(np.isfinite(labels), axis=1))
        if bad_rows.size:
            raise ValueError(f"labels contain NaN or inf in rows {bad_rows[:10].tolist()}; drop those stars before fitting.")
        if label_names is None:
            label_names = [f"label_{index}" for index in range(labels.shape[1])]
        label_names = [str(name) for name in label_names]
        if len(label_names) != labels.shape[1]:
            raise ValueError(f"{len(label_names)} label names for {labels.shape[1]} labels.")
        repeated = sorted({name for name in label_names if label_names.count(name) > 1})
        if repeated:
            raise ValueError(f"label names {repeated} appear more than once in {label_names}; give each label once.")
        check = check_training_labels(labels, label_names, label_ranges=label_ranges)
        if check.bad.any():
            raise ValueError(
                f"{int(check.bad.sum())} of {labels.shape[0]} training stars have sentinel or unphysical labels "
                f"({check.summary()}); drop those stars (slam train leaves them out), or widen a range with "
                "label_ranges={name: (low, high)} if the values are real."
            )
        for column, name in enumerate(label_names):
            if np.ptp(labels[:, column]) == 0:
                raise ValueError(f"label {name!r} has the same value ({labels[0, column]:g}) for every training star, "
                                 "so SLAM cannot learn how the flux depends on it; drop it from the labels.")
        if labels.shape[1] > 1:
            with np.errstate(invalid="ignore", divide="ignore"):
                correlation = np.corrcoef(labels, rowvar=False)
            for first in range(labels.shape[1]):
                for second in range(first + 1, labels.shape[1]):
                    if abs(correlation[first, second]) > 1 - 1e-9:
                        raise ValueError(
                            f"labels {label_names[first]!r} and {label_names[second]!r} are the same label (one is "
                            "a linear function of the other in every training star), so the spectrum cannot tell "
                            "them apart; keep one of them.")
        good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
        empty_rows = np.flatnonzero(~good.any(axis=1))
        if empty_rows.size:
            raise ValueError(
                f"training spectra {empty_rows[:10].tolist()} have no good pixel (ivar <= 0 or non-finite "
                "everywhere); remove them from the training set."
            )
        warn_if_not_normalized(flux, good, what="training spectra", stacklevel=4)
        duplicates = duplicate_rows(np.where(good, flux, np.nan), labels)
        if duplicates:
            shown = ", ".join(str(group.tolist()) for group in duplicates[:5])
            warnings.warn(
                f"{sum(group.size - 1 for group in duplicates)} training rows repeat another row's labels and flux "
                f"(rows {shown}{' ...' if len(duplicates) > 5 else ''}); a repeated star weighs twice in the fit and "
                "can sit in two CV folds, which makes the CV scores optimistic. Drop the copies.",
                DuplicateTrainingRowsWarning, stacklevel=4)
        return flux, labels, good, label_names

    def fit(
        self,
        flux: np.ndarray,
        ivar: np.ndarray,
        labels: np.ndarray,
        label_names: list[str] | None = None,
        *,
        wave: np.ndarray | None = None,
        runner: TrainingRunner | None = None,
        label_ranges: Mapping[str, tuple[float, float]] | None = None,
    ) -> "SlamModel":
        """Train one SVR per pixel, choosing (C, gamma) by k-fold cross-validation.

        Parameters
        ----------
        flux : ndarray, shape (n_star, n_pix)
            Continuum-normalized training flux on a common grid.
        ivar : ndarray, shape (n_star, n_pix)
            Its inverse variance; pixels with ivar <= 0 or non-finite values are left
            out of that pixel's fits and CV scores.
        labels : ndarray, shape (n_star, n_label)
            Training labels in physical units. Refused (ValueError naming the rows): NaN or inf,
            sentinel values (:data:`SENTINEL_VALUES`, e.g. -9999), values outside the label's
            physical range (:data:`LABEL_RANGES`, for the paper's label names), a label with one
            value for every star, and a label repeated (the same name twice, or one column a
            linear function of another). Rows repeating another row's labels and flux are
            reported with a :class:`DuplicateTrainingRowsWarning`.
        label_names : list of str, optional
        wave : ndarray, shape (n_pix,), optional
            The wavelength grid, stored with the model.
        runner : TrainingRunner, optional
            Where the training runs (:mod:`slamlib.runner`). Default: this process with
            ``n_jobs`` workers. :class:`slamlib.pipeline.checkpoint.ResumableTraining` trains
            block by block and writes every finished block to a checkpoint directory, so an
            interrupted fit resumes; :class:`slamlib.pipeline.scaleout.DaskRunner` trains on a
            Dask cluster. Every runner gives the same model bit for bit.
        label_ranges : dict of str to (low, high), optional
            Physical ranges replacing or extending :data:`LABEL_RANGES` (``None`` removes one).

        Returns
        -------
        SlamModel
            ``self``, fitted. Besides the per-pixel models it holds (``state_``) the CV fit quality
            of the training stars (the trust limits) and the error model of ``errors_cv``
            (:class:`slamlib.metrics.CVErrorModel`): every training star (at most
            :data:`ERROR_MODEL_MAX_STARS`) is fitted with the CV sub-model that did not see it
            (:meth:`predict_cv`), and the paper's Table 1 model ``a exp(-b S/N) + c`` is fitted
            to the scatter of those CV labels about the training labels against the stars' S/N
            (:func:`slamlib.metrics.median_snr` of their spectra, the ``snr`` that prediction
            reports). It is valid within the training stars' S/N range; a training set at high
            S/N only (the paper's 120-140) gives a constant valid near that S/N, and below the
            range the errors grow as 1/(S/N) from its edge (flagged ``errors_cv_extrapolated``).

        Warns
        -----
        NotNormalizedWarning
            If training spectra are plainly not continuum-normalized.
        DuplicateTrainingRowsWarning
            If rows repeat.
        """
        param_grid, epsilon, n_folds, backend = self._checked_parameters()
        flux, labels, good, label_names = self._check_training_input(flux, ivar, labels, label_names, label_ranges)
        wave = None if wave is None else wavelengths_in_angstrom(wave)
        if wave is not None and np.shape(wave) != (flux.shape[1],):
            raise ValueError(f"wave has shape {np.shape(wave)}, expected ({flux.shape[1]},).")
        runner = LocalRunner() if runner is None else runner
        if not isinstance(runner, TrainingRunner):
            raise ValueError(f"runner must have a train(problem, backend, n_jobs=...) method, got {runner!r}.")
        folds = svr_folds.kfold_indices(flux.shape[0], n_folds, int(self.random_state))
        flux_scaler = Standardizer.fit(flux, good=good)
        label_scaler = Standardizer.fit(labels)
        flux_std = np.where(good, flux_scaler.transform(np.where(good, flux, 0.0)), 0.0)
        problem = TrainingProblem(label_scaler.transform(labels), flux_std, good, folds, param_grid, epsilon,
                                  min_good_stars=2 * n_folds)
        start = time.perf_counter()
        result = runner.train(problem, backend, n_jobs=int(self.n_jobs))
        state = FittedState(result, flux_scaler, label_scaler, tuple(label_names),
                            None if wave is None else np.asarray(wave, dtype=float))
        cv_rchi2, cv_max_residual = cv_fit_quality(flux, ivar, labels, state)
        self.state_ = dataclasses.replace(state, cv_rchi2=cv_rchi2, cv_max_residual=cv_max_residual)
        self.state_ = dataclasses.replace(self.state_, error_model=self._cv_error_model(flux, ivar, labels))
        self.training_seconds_ = time.perf_counter() - start
        return self

    def _cv_error_model(self, flux: np.ndarray, ivar: np.ndarray, labels: np.ndarray) -> CVErrorModel | None:
        """The Table 1 error model of the trusted CV labels of (at most :data:`ERROR_MODEL_MAX_STARS`) training stars."""
        state = self.state_
        if state.n_folds == 0:
            return None
        snr = median_snr(flux, ivar)
        stars = np.arange(flux.shape[0])
        if stars.size > ERROR_MODEL_MAX_STARS:
            ranked = np.argsort(snr, kind="stable")
            stars = np.sort(ranked[np.round(np.linspace(0, stars.size - 1, ERROR_MODEL_MAX_STARS)).astype(int)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotNormalizedWarning)  # fit has warned about the training spectra
            cv = self._predict_cv_rows(flux, ivar, stars, prior=None, n_jobs=None, runner=None)
        cv_labels = np.where(cv.trusted[:, None], cv.labels, np.nan)
        if np.count_nonzero(cv.trusted) < 2:
            warnings.warn(f"only {np.count_nonzero(cv.trusted)} of {stars.size} training stars have trusted CV labels, "
                          "so no CV error model was fitted (errors_cv will be NaN); check the training set.",
                          UserWarning, stacklevel=3)
            return None
        return fit_cv_error_model(cv_labels, labels[stars], snr[stars])

    def _require_fitted(self) -> FittedState:
        if not hasattr(self, "state_"):
            raise ValueError("this SlamModel is not fitted yet; call fit() or SlamModel.load() first.")
        return self.state_

    # ---------------------------------------------------------- fitted attributes
    @property
    def training_(self) -> TrainingResult:
        """The per-pixel training result (``state_.training``)."""
        return self._require_fitted().training

    @property
    def flux_scaler_(self) -> Standardizer:
        return self._require_fitted().flux_scaler

    @property
    def label_scaler_(self) -> Standardizer:
        return self._require_fitted().label_scaler

    @property
    def label_names_(self) -> list[str]:
        return list(self._require_fitted().label_names)

    @property
    def wave_(self) -> np.ndarray | None:
        return self._require_fitted().wave

    @property
    def best_params_(self) -> list[dict[str, float]]:
        result = self.training_
        return [{"C": float(c), "gamma": float(g)} for c, g in zip(result.best_c, result.best_gamma)]

    @property
    def cv_mse_(self) -> np.ndarray:
        return self.training_.cv_mse

    @property
    def cv_md_(self) -> np.ndarray:
        return self.training_.cv_md

    @property
    def mse_(self) -> np.ndarray:
        return self.training_.mse

    @property
    def md_(self) -> np.ndarray:
        return self.training_.md

    @property
    def cv_mse_grid_(self) -> np.ndarray:
        return self.training_.cv_mse_grid

    @property
    def trained_(self) -> np.ndarray:
        return self.training_.trained

    @property
    def n_pix_(self) -> int:
        return self._require_fitted().n_pix

    @property
    def model_variance_(self) -> np.ndarray:
        """Model variance per pixel in normalized-flux units: CV MSE times the flux scale squared."""
        return self._require_fitted().model_variance

    @property
    def training_model_flux_(self) -> np.ndarray:
        """Model spectra at the training labels, shape (n_train, n_pix); used for the initial guess."""
        return self._require_fitted().training_model_flux

    # ---------------------------------------------------------------- prediction
    def predict_spectrum(self, labels: np.ndarray) -> np.ndarray:
        """Normalized model flux for labels in physical units.

        Parameters
        ----------
        labels : ndarray, shape (n_label,) or (n_spec, n_label)

        Returns
        -------
        ndarray, shape (n_pix,) or (n_spec, n_pix)
        """
        state = self._require_fitted()
        labels = np.asarray(labels, dtype=float)
        single = labels.ndim == 1
        labels = np.atleast_2d(labels)
        if labels.shape[1] != state.n_label:
            raise ValueError(f"labels have {labels.shape[1]} columns, the model {state.n_label} labels.")
        flux = state.model_flux(labels)
        return flux[0] if single else flux

    @staticmethod
    def _prediction_runner(runner: PredictionRunner | None) -> PredictionRunner:
        runner = LocalRunner() if runner is None else runner
        if not isinstance(runner, PredictionRunner):
            raise ValueError(f"runner must have a predict_labels(flux, ivar, state, ...) method, got {runner!r}.")
        return runner

    def predict(
        self,
        flux: np.ndarray,
        ivar: np.ndarray,
        *,
        prior: GaussianPrior | None = None,
        n_jobs: int | None = None,
        method: str = "batched",
        runner: PredictionRunner | None = None,
        ensemble: bool = False,
        clip_sigma: float | None = None,
        trust_limits: TrustLimits | None = None,
    ) -> "PredictionResult | EnsemblePrediction":
        """Labels of one spectrum or a batch by maximum likelihood (Eq. 8).

        Parameters
        ----------
        flux, ivar : ndarray, shape (n_pix,) or (n_spec, n_pix)
            Normalized flux and inverse variance on the training grid.
        prior : GaussianPrior, optional
            Independent Gaussian priors on the labels (physical units).
        n_jobs : int, optional
            Workers over chunks of spectra for the reference method (default: the model's ``n_jobs``).
        method : {"batched", "reference"}
            "batched" (default): MINPACK's Levenberg-Marquardt run step for step on many spectra
            at once, all kernel work as matrix products (11-12x faster than the reference on 2
            cores, labels equal to it within 1e-8 of the formal errors; docs/performance.md);
            "reference": ``scipy.optimize.least_squares(method="lm")`` per spectrum, in
            parallel over chunks.
        runner : PredictionRunner, optional
            Where the fits run (:mod:`slamlib.runner`): this process by default, or a Dask
            cluster (:class:`slamlib.pipeline.scaleout.DaskRunner`; the same labels, bit for
            bit with the reference method).
        ensemble : bool
            Also fit every spectrum with each of the k CV sub-models (each trained without one
            fold of the training stars) and return an :class:`slamlib.ensemble.EnsemblePrediction`
            whose ``ensemble_errors`` (grouped jackknife over the sub-models) measure how much
            the labels depend on the training set, and ``total_errors`` add them to the formal
            errors in quadrature (paper Section 5.2). Costs k + 1 fits per spectrum.
        clip_sigma : float, optional
            Iteratively clip pixels more than ``clip_sigma`` sigma from the model and refit
            (:func:`slamlib.fitting.predict_labels`); default: no clipping.
        trust_limits : TrustLimits, optional
            Fit-quality limits of ``good_fit`` (default: from the model's CV residuals,
            :attr:`slamlib.state.FittedState.trust_limits`).

        Returns
        -------
        PredictionResult or EnsemblePrediction
            ``labels``, ``errors``, ``cov``, ``converged``, ``rchi2``, ``rms``, ``n_iter``,
            ``good_fit``, ``extrapolated``, ``trusted`` and ``reason``; spectra that cannot be
            fitted are flagged, not raised. Use the rows with ``trusted``. With
            ``ensemble=True`` an :class:`~slamlib.ensemble.EnsemblePrediction` wrapping it.

        Warns
        -----
        NotNormalizedWarning
            If spectra are plainly not continuum-normalized (they are not trusted).
        """
        state = self._require_fitted()
        runner = self._prediction_runner(runner)
        if ivar is None:
            raise ValueError("predict needs ivar, the inverse variance of the flux (shape of flux). Without one, "
                             "pass ivar = numpy.full_like(flux, snr**2) for spectra of signal-to-noise snr per pixel "
                             "(a normalized continuum of 1 has variance 1/snr**2), with 0 at bad pixels.")
        options = {"prior": prior, "n_jobs": self.n_jobs if n_jobs is None else n_jobs, "method": method}
        if clip_sigma is not None:
            options["clip_sigma"] = clip_sigma
        if trust_limits is not None:
            options["trust_limits"] = trust_limits
        prediction = runner.predict_labels(flux, ivar, state, **options)
        if not ensemble:
            return prediction
        if state.n_folds == 0:
            raise ValueError("ensemble=True needs the CV sub-models, which this model does not hold (saved with "
                             "include_cv_models=False); retrain it or load a file saved with them.")
        members = [runner.predict_labels(flux, ivar, state.sub_model(fold), **options) for fold in range(state.n_folds)]
        return EnsemblePrediction.from_members(prediction, members)

    def predict_cv(
        self,
        flux: np.ndarray,
        ivar: np.ndarray,
        *,
        prior: GaussianPrior | None = None,
        n_jobs: int | None = None,
        runner: PredictionRunner | None = None,
    ) -> PredictionResult:
        """Cross-validated labels of the training spectra.

        Every training star is fitted with the CV fold models (each pixel at its chosen C and
        gamma) that were trained without it, so the result measures how well SLAM labels stars
        it has not seen: the paper's CV scatter and bias (Eqs. 9-10), and the leave-one-fold-out
        clipping of Section 4.2.

        Parameters
        ----------
        flux, ivar : ndarray, shape (n_train, n_pix)
            The training spectra, in the order given to :meth:`fit`.
        prior : GaussianPrior, optional
        n_jobs : int, optional
        runner : PredictionRunner, optional
            Where the fits run, as in :meth:`predict`.

        Returns
        -------
        PredictionResult
            One row per training star.
        """
        state = self._require_fitted()
        if state.n_folds == 0:
            raise ValueError("this model holds no CV fold models (saved without them); retrain it to get CV labels.")
        n_train = state.training.fold_of_star.size
        flux = np.asarray(flux, dtype=float)
        ivar = np.asarray(ivar, dtype=float)
        if flux.shape[0] != n_train or ivar.shape != flux.shape:
            raise ValueError(f"predict_cv needs the {n_train} training spectra in fit order, got flux {flux.shape}, ivar {ivar.shape}.")
        return self._predict_cv_rows(flux, ivar, np.arange(n_train), prior=prior, n_jobs=n_jobs, runner=runner)

    def _predict_cv_rows(self, flux: np.ndarray, ivar: np.ndarray, stars: np.ndarray, *, prior: GaussianPrior | None,
                         n_jobs: int | None, runner: PredictionRunner | None) -> PredictionResult:
        """CV labels of the training stars ``stars`` (sorted indices in fit order), one row per star given."""
        state = self._require_fitted()
        runner = self._prediction_runner(runner)
        fold_of_star = state.training.fold_of_star[stars]
        parts, positions = [], []
        for fold in range(state.n_folds):
            held_out = np.flatnonzero(fold_of_star == fold)
            if held_out.size == 0:
                continue
            rows = stars[held_out]
            parts.append(runner.predict_labels(flux[rows], ivar[rows], state.sub_model(fold), prior=prior,
                                               n_jobs=self.n_jobs if n_jobs is None else n_jobs))
            positions.append(held_out)
        return PredictionResult.combine(parts, positions, stars.size)

    # -------------------------------------------------------------- persistence
    def _file_parameters(self) -> dict[str, Any]:
        """The constructor parameters as JSON values (the backend by its name)."""
        params = self.get_params(deep=False)
        params["backend"] = get_backend(params["backend"]).name
        params["param_grid"] = _validate_grid(PAPER_SECTION3_GRID if params["param_grid"] is None
                                              else params["param_grid"])
        return params

    def save(self, path: str | Path, *, include_cv_models: bool = True) -> Path:
        """Write the fitted model as a versioned, checksummed, non-pickle ``.npz`` file.

        Parameters
        ----------
        path : str or Path
        include_cv_models : bool
            Also store the CV fold models (needed by :meth:`predict_cv`; they make the file
            about ``cv`` times larger).

        See :mod:`slamlib.modelfile` for the format.
        """
        state = self._require_fitted()
        arrays, state_metadata = state.to_arrays(include_cv_models=include_cv_models)
        params = self._file_parameters()
        metadata = {"params": params, **state_metadata, "grid_pairs": parameter_pairs(params["param_grid"]),
                    "n_train": int(state.expansion.support_labels.shape[0])}
        return modelfile.save_arrays(path, arrays, metadata)

    @classmethod
    def load(cls, path: str | Path) -> "SlamModel":
        """Read a model written by :meth:`save` (never executes code from the file)."""
        arrays, header = modelfile.load_arrays(path)
        metadata = header["metadata"]
        try:
            state = FittedState.from_arrays(arrays, metadata)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
        model = cls(**metadata["params"])
        model.state_ = state
        model.file_header_ = header
        return model
