"""Label prediction (paper Section 2.3): initial guess, Levenberg-Marquardt, formal errors.

For an observed normalized spectrum f with inverse variance ivar, the labels maximize the
Gaussian likelihood of Eq. 8,

    ln L = -1/2 sum_j (f_model,j(theta) - f_j)^2 / sigma_j^2,  sigma_j^2 = 1/ivar_j + s_j^2,

where s_j^2 is the model variance of pixel j (the CV MSE, in flux units). Bad pixels
(ivar <= 0, non-finite values, untrained pixels) get zero weight. The search starts from
the training star whose model spectrum matches best and runs
``scipy.optimize.least_squares(method="lm")`` with the analytic Jacobian of the kernel
expansion. The inverse of J^T J at the solution is the formal ("SLAM") covariance.

Whether a fit can be trusted (:class:`TrustLimits`, :attr:`PredictionResult.trusted`) is decided
from the fit itself, not only from the optimizer's stopping test: a converged fit is *good* when
its reduced chi-square and its largest normalized pixel residual lie within what the model's own
cross-validation residuals allow (:func:`cv_fit_quality`), the flux looks continuum-normalized and
the labels lie within the training range. Outlier pixels (cosmic rays, unmasked sky lines) can be
removed by iterative clipping (``predict_labels(..., clip_sigma=k)``).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from joblib import Parallel, delayed
from scipy.optimize import least_squares

from slamlib.metrics import median_snr
from slamlib.scaling import Standardizer
from slamlib.state import FittedState
from slamlib.svr.kernel import KernelExpansion

__all__ = ["GaussianPrior", "PredictionResult", "TrustLimits", "NotNormalizedWarning", "EXTRAPOLATION_MARGIN",
           "NORMALIZED_MEDIAN_RANGE", "MAX_CLIP_ROUNDS", "MAX_CLIPPED_FRACTION", "pixel_weights", "initial_guess",
           "fit_labels", "predict_labels", "normalized_residuals", "fit_quality", "cv_fit_quality",
           "median_flux_ratio", "training_label_range", "extrapolated_labels", "cv_errors"]

#: Spectrum chunk for the vectorized initial-guess search (bounds memory: chunk x n_train).
INITIAL_GUESS_CHUNK = 256

#: Fraction of each label's training range by which a label may exceed that range before the
#: fit counts as an extrapolation (SLAM's kernel model is not constrained beyond the training stars).
EXTRAPOLATION_MARGIN = 0.05

#: A spectrum is "plainly not continuum-normalized" when the median of its good pixels divided by
#: the median of the training spectra's mean flux lies outside this range. Normalized spectra of
#: any star scatter around 1 within a few tens of per cent (deep molecular bands of M stars lower
#: the median by less than a factor of two); a factor of three either way is never a star, it is
#: flux in counts, a missing normalization or a normalization applied twice.
NORMALIZED_MEDIAN_RANGE = (1.0 / 3.0, 3.0)

#: Rounds of :func:`predict_labels`'s outlier clipping (the mask is recomputed from all pixels each round).
MAX_CLIP_ROUNDS = 5

#: A clipped fit whose mask would remove more than this fraction of a spectrum's good pixels is not
#: clipped further and is marked a poor fit: the spectrum, not a few pixels, disagrees with the model.
#: A cosmic ray or a sky-line residual covers a few pixels of the ~1,900 of the paper's grid; 2 per
#: cent is ~40. Clean mock spectra have at most ~1 per cent of their pixels beyond 5 sigma (hot
#: stars at the edge of the training set), while a spectrum moved by a wrong redshift (z = 0.5) has
#: ~6 per cent, and clipping them away would make its wrong labels look trusted.
MAX_CLIPPED_FRACTION = 0.02


class NotNormalizedWarning(UserWarning):
    """Flux given to ``fit`` or ``predict`` is plainly not continuum-normalized (:data:`NORMALIZED_MEDIAN_RANGE`)."""


@dataclass(frozen=True)
class TrustLimits:
    """The largest reduced chi-square and normalized pixel residual of a fit that can be trusted.

    The likelihood weights already hold the model's own error, s_j^2 = CV MSE (Eq. 8), so a
    spectrum the model describes as well as it describes the stars it was not trained on has
    rchi2 of order 1 and normalized residuals ``(model - flux) / sigma`` of a few. The limits are
    set from exactly those stars: :func:`cv_fit_quality` fits nothing, it evaluates every
    training star with the CV sub-model that did not see it, at its catalogue labels, and records
    that star's rchi2 and largest |normalized residual|. Then

    * ``max_rchi2 = max(RCHI2_FLOOR, RCHI2_FACTOR * q99(cv rchi2))``,
    * ``max_residual = max(RESIDUAL_FLOOR, RESIDUAL_FACTOR * q99(cv max residual))``,

    with q99 the 99th percentile over the training stars. A spectrum beyond either limit is
    described worse than all but 1 per cent of the training stars by a model that never saw
    them, by a factor of 3 in chi-square (2 in a single pixel's sigma): its labels cannot be
    trusted however well the optimizer converged. The factors leave room for a target whose
    noise is misestimated by up to ~70 per cent in sigma, so that clean spectra like the training
    ones are not flagged (tests/pipeline/test_hostile_inputs.py checks both directions on mock
    spectra); the floors keep a training set of nearly noiseless stars from flagging ordinary noise
    (8 sigma is never reached by Gaussian noise in 10^4 pixels). What they catch: a spike or a
    cosmic ray (one pixel tens of sigma off), an un-normalized spectrum (rchi2 ~10^3 and beyond),
    a spectrum shifted by a wrong redshift, a star unlike every training star.

    A model without stored CV residuals (saved by an older slamlib, or trained without CV
    sub-models) uses :data:`DEFAULT_MAX_RCHI2` and :data:`DEFAULT_MAX_RESIDUAL`.

    Attributes
    ----------
    max_rchi2 : float
    max_residual : float
        In units of the pixel's sigma, ``sqrt(1/ivar + s^2)``.
    """

    max_rchi2: float
    max_residual: float

    RCHI2_FACTOR = 3.0
    RCHI2_FLOOR = 2.0
    RESIDUAL_FACTOR = 2.0
    RESIDUAL_FLOOR = 8.0
    DEFAULT_MAX_RCHI2 = 5.0
    DEFAULT_MAX_RESIDUAL = 20.0

    def __post_init__(self) -> None:
        for name in ("max_rchi2", "max_residual"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0:
                raise ValueError(f"TrustLimits.{name} must be a positive number (inf disables it), got {value!r}.")

    @classmethod
    def default(cls) -> "TrustLimits":
        """The limits of a model without stored CV residuals."""
        return cls(cls.DEFAULT_MAX_RCHI2, cls.DEFAULT_MAX_RESIDUAL)

    @classmethod
    def from_cv_residuals(cls, cv_rchi2: np.ndarray, cv_max_residual: np.ndarray) -> "TrustLimits":
        """The limits from the training stars' CV fit quality (:func:`cv_fit_quality`).

        Parameters
        ----------
        cv_rchi2, cv_max_residual : ndarray, shape (n_train,)
            NaN entries (stars without good pixels) are ignored.
        """
        rchi2 = np.asarray(cv_rchi2, dtype=float)
        residual = np.asarray(cv_max_residual, dtype=float)
        rchi2, residual = rchi2[np.isfinite(rchi2)], residual[np.isfinite(residual)]
        if rchi2.size == 0 or residual.size == 0:
            return cls.default()
        return cls(max(cls.RCHI2_FLOOR, cls.RCHI2_FACTOR * float(np.quantile(rchi2, 0.99))),
                   max(cls.RESIDUAL_FLOOR, cls.RESIDUAL_FACTOR * float(np.quantile(residual, 0.99))))


@dataclass(frozen=True)
class GaussianPrior:
    """Independent Gaussian priors on the labels, in physical units.

    Attributes
    ----------
    mean, sigma : ndarray, shape (n_label,)
        Prior mean and standard deviation of each label; ``sigma = inf`` leaves a label free.
    """

    mean: np.ndarray
    sigma: np.ndarray

    def __post_init__(self) -> None:
        mean, sigma = np.asarray(self.mean, dtype=float), np.asarray(self.sigma, dtype=float)
        if mean.shape != sigma.shape or mean.ndim != 1:
            raise ValueError(f"prior mean {mean.shape} and sigma {sigma.shape} must be 1-D of one length per label.")
        if not (np.all(np.isfinite(mean)) and np.all(sigma > 0)):
            raise ValueError("prior means must be finite and prior sigmas positive (use inf to leave a label free).")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "sigma", sigma)


@dataclass(frozen=True)
class PredictionResult:
    """Labels of a batch of spectra, with the evidence for trusting each.

    Attributes
    ----------
    labels : ndarray, shape (n_spec, n_label)
        Best-fitting labels in physical units (NaN where the fit was impossible).
    errors : ndarray, shape (n_spec, n_label)
        Formal errors, the square roots of the covariance diagonal. They describe the
        likelihood of one spectrum under one model and are typically smaller than the actual
        scatter (about half of it on the mock); use :attr:`errors_cv`, or
        :class:`slamlib.ensemble.EnsemblePrediction`, for errors that include the model's own.
    cov : ndarray, shape (n_spec, n_label, n_label)
        Covariance from the Jacobian at the solution, physical units.
    converged : ndarray of bool, shape (n_spec,)
        True when Levenberg-Marquardt stopped on a tolerance (the optimizer's verdict only).
    rchi2 : ndarray, shape (n_spec,)
        Reduced chi-square over the good (unclipped) pixels.
    rms : ndarray, shape (n_spec,)
        Root-mean-square of the flux residuals (model - data) over the good pixels.
    n_iter : ndarray of int, shape (n_spec,)
        Function evaluations used by the optimizer (summed over clipping rounds).
    n_good_pixels : ndarray of int, shape (n_spec,)
        Pixels with non-zero weight in the final fit (clipped pixels excluded).
    initial_labels : ndarray, shape (n_spec, n_label)
        Labels of the best-matching training star, where the search started.
    reason : ndarray of str, shape (n_spec,)
        Empty when the result is :attr:`trusted`; otherwise every reason it is not, joined by
        ``"; "`` (not converged, not normalized, poor fit, labels outside the training range).
    label_names : list of str
    good_fit : ndarray of bool, shape (n_spec,)
        The fit describes the spectrum as well as the model describes its CV stars
        (:class:`TrustLimits`) and the flux looks continuum-normalized.
    max_residual : ndarray, shape (n_spec,)
        Largest |model - flux| / sigma over the good pixels (NaN if not fitted).
    n_clipped : ndarray of int, shape (n_spec,)
        Pixels removed by outlier clipping (``clip_sigma``; 0 without it).
    extrapolated : ndarray of bool, shape (n_spec,)
        A label lies beyond the training range widened by :data:`EXTRAPOLATION_MARGIN`.
    snr : ndarray, shape (n_spec,)
        Median S/N per pixel of the input (:func:`slamlib.metrics.median_snr`, NaN without good pixels).
    errors_cv : ndarray, shape (n_spec, n_label)
        The errors to trust: the model's CV error model (paper Table 1, fitted on the CV labels of
        its training stars, :class:`slamlib.metrics.CVErrorModel`) at the spectrum's ``snr``. They
        describe the scatter of predicted minus true labels for stars like the training stars
        within the training stars' S/N range (``errors_cv_extrapolated`` False). NaN where the
        labels are not finite, or for models saved before slamlib fitted the error model.
    errors_cv_extrapolated : ndarray of bool, shape (n_spec,)
        ``snr`` lies outside the S/N range of the training stars the error model was fitted on
        (below it ``errors_cv`` grow as 1/(S/N) from the range's edge, above it they stay at the
        edge's value; see :class:`slamlib.metrics.CVErrorModel`).
    """

    labels: np.ndarray
    errors: np.ndarray
    cov: np.ndarray
    converged: np.ndarray
    rchi2: np.ndarray
    rms: np.ndarray
    n_iter: np.ndarray
    n_good_pixels: np.ndarray
    initial_labels: np.ndarray
    reason: np.ndarray
    label_names: list[str]
    good_fit: np.ndarray
    max_residual: np.ndarray
    n_clipped: np.ndarray
    extrapolated: np.ndarray
    snr: np.ndarray
    errors_cv: np.ndarray
    errors_cv_extrapolated: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def trusted(self) -> np.ndarray:
        """``converged & good_fit & ~extrapolated``, shape (n_spec,): the results to use."""
        return self.converged & self.good_fit & ~self.extrapolated

    @classmethod
    def combine(cls, parts: list["PredictionResult"], positions: list[np.ndarray], n_spec: int) -> "PredictionResult":
        """Merge results of disjoint subsets: ``parts[i]`` holds the spectra at ``positions[i]``."""
        merged = {}
        for field in dataclasses.fields(cls):
            if field.name == "label_names":
                continue
            template = getattr(parts[0], field.name)
            values = np.empty((n_spec,) + template.shape[1:], dtype=template.dtype)
            for part, position in zip(parts, positions):
                values[position] = getattr(part, field.name)
            merged[field.name] = values
        return cls(**merged, label_names=list(parts[0].label_names))

    def to_table(self) -> Table:
        """The results as an astropy Table: per label its value, ``<label>_err`` (formal) and
        ``<label>_err_cv`` (:attr:`errors_cv`), then the fit's quality, ``snr`` and ``err_cv_extrapolated``."""
        table = Table()
        for index, name in enumerate(self.label_names):
            table[name] = self.labels[:, index]
            table[f"{name}_err"] = self.errors[:, index]
            table[f"{name}_err_cv"] = self.errors_cv[:, index]
        for name in ("rchi2", "rms", "max_residual", "converged", "good_fit", "extrapolated", "n_iter",
                     "n_good_pixels", "n_clipped", "snr"):
            table[name] = getattr(self, name)
        table["err_cv_extrapolated"] = self.errors_cv_extrapolated
        table["trusted"] = self.trusted
        table["reason"] = self.reason.astype(str)
        return table


def pixel_weights(flux: np.ndarray, ivar: np.ndarray, model_variance: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Likelihood weights 1 / (1/ivar + s^2), zero on bad or unusable pixels.

    Parameters
    ----------
    flux, ivar : ndarray, shape (n_spec, n_pix)
    model_variance : ndarray, shape (n_pix,)
        s_j^2 in flux units.
    usable : ndarray of bool, shape (n_pix,)
        Pixels the model can predict.

    Returns
    -------
    ndarray, shape (n_spec, n_pix)
    """
    good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0) & usable
    with np.errstate(divide="ignore"):
        variance = np.where(good, 1.0 / np.where(good, ivar, 1.0), np.inf) + model_variance
    return np.where(good, 1.0 / variance, 0.0)


def initial_guess(flux: np.ndarray, weights: np.ndarray, training_model_flux: np.ndarray) -> np.ndarray:
    """Index of the training star whose model spectrum has the lowest chi-square.

    Parameters
    ----------
    flux, weights : ndarray, shape (n_spec, n_pix)
        Observed normalized flux and likelihood weights (zero on bad pixels).
    training_model_flux : ndarray, shape (n_train, n_pix)
        The model's spectra at the training labels.

    Returns
    -------
    ndarray of int, shape (n_spec,)
    """
    flux = np.where(weights > 0, flux, 0.0)
    best = np.empty(flux.shape[0], dtype=int)
    squared_model = training_model_flux**2
    for start in range(0, flux.shape[0], INITIAL_GUESS_CHUNK):
        chunk = slice(start, start + INITIAL_GUESS_CHUNK)
        chi2 = (
            np.sum(weights[chunk] * flux[chunk] ** 2, axis=1)[:, None]
            - 2.0 * (weights[chunk] * flux[chunk]) @ training_model_flux.T
            + weights[chunk] @ squared_model.T
        )
        best[chunk] = np.argmin(chi2, axis=1)
    return best


@dataclass(frozen=True)
class _SingleFit:
    labels_std: np.ndarray
    cov_std: np.ndarray
    converged: bool
    rchi2: float
    rms: float
    n_iter: int
    reason: str


def fit_labels(
    flux: np.ndarray,
    weights: np.ndarray,
    start_std: np.ndarray,
    expansion: KernelExpansion,
    flux_scaler: Standardizer,
    *,
    prior_std: tuple[np.ndarray, np.ndarray] | None = None,
    max_evaluations: int | None = None,
) -> _SingleFit:
    """Levenberg-Marquardt fit of one spectrum in standardized label space.

    Parameters
    ----------
    flux, weights : ndarray, shape (n_pix,)
        Normalized flux and likelihood weights (the number of pixels with non-zero
        weight must exceed the number of labels).
    start_std : ndarray, shape (n_label,)
        Starting point (standardized labels).
    expansion : KernelExpansion
    flux_scaler : Standardizer
        Maps standardized model flux to normalized flux.
    prior_std : (mean, sigma), optional
        Gaussian prior in standardized label units.
    max_evaluations : int, optional
        Function evaluations before giving up (``max_nfev``; default scipy's, 100 per label).
    """
    good = np.flatnonzero(weights > 0)
    n_label = expansion.n_label
    sqrt_weight = np.sqrt(weights[good])
    observed = flux[good]
    flux_scale = flux_scaler.scale[good]
    flux_mean = flux_scaler.mean[good]

    def model_and_jacobian(labels_std):
        model_std, jacobian_std = expansion.evaluate_with_jacobian(labels_std[None, :])
        return flux_mean + flux_scale * model_std[0, good], flux_scale[:, None] * jacobian_std[0, good]

    def residuals(labels_std):
        model, _ = model_and_jacobian(labels_std)
        residual = sqrt_weight * (model - observed)
        if prior_std is not None:
            residual = np.concatenate([residual, (labels_std - prior_std[0]) / prior_std[1]])
        return residual

    def jacobian(labels_std):
        _, model_jacobian = model_and_jacobian(labels_std)
        jac = sqrt_weight[:, None] * model_jacobian
        if prior_std is not None:
            jac = np.vstack([jac, np.diag(1.0 / prior_std[1])])
        return jac

    # x_scale="jac" (scipy's default for "lm" since 1.16) pinned, so every scipy version runs the
    # same MINPACK iteration as slamlib.fitting_batched.
    solution = least_squares(residuals, start_std, jac=jacobian, method="lm", x_scale="jac",
                             max_nfev=max_evaluations)
    final_jacobian = jacobian(solution.x)
    try:
        cov_std = np.linalg.inv(final_jacobian.T @ final_jacobian)
        reason = "" if solution.status > 0 else "maximum number of function evaluations reached"
    except np.linalg.LinAlgError:
        cov_std = np.full((n_label, n_label), np.nan)
        reason = "singular Jacobian: the spectrum does not constrain every label"
    model, _ = model_and_jacobian(solution.x)
    pixel_residual = model - observed
    chi2 = np.sum(weights[good] * pixel_residual**2)
    return _SingleFit(
        labels_std=solution.x,
        cov_std=cov_std,
        converged=reason == "",
        rchi2=float(chi2 / max(good.size - n_label, 1)),
        rms=float(np.sqrt(np.mean(pixel_residual**2))),
        n_iter=int(solution.nfev),
        reason=reason,
    )


def _unfittable_reason(flux_row: np.ndarray, weight_row: np.ndarray, n_label: int) -> str:
    n_good = int(np.count_nonzero(weight_row))
    if n_good == 0:
        if not np.any(np.isfinite(flux_row)):
            return "no finite flux"
        return "no good pixels (ivar <= 0, masked or non-finite everywhere)"
    if n_good <= n_label:
        return f"only {n_good} good pixels for {n_label} labels"
    return ""


def _fit_chunk(flux, weights, starts_std, expansion, flux_scaler, prior_std):
    results = []
    for flux_row, weight_row, start in zip(flux, weights, starts_std):
        reason = _unfittable_reason(flux_row, weight_row, expansion.n_label)
        if reason:
            n_label = expansion.n_label
            results.append(_SingleFit(np.full(n_label, np.nan), np.full((n_label, n_label), np.nan),
                                      False, np.nan, np.nan, 0, reason))
        else:
            results.append(fit_labels(flux_row, weight_row, start, expansion, flux_scaler, prior_std=prior_std))
    return results


#: Spectra handed to one call of the batched method (bounds memory: copies of their flux and weights).
BATCH_CHUNK = 4096


def _fit_batched(flux, weights, starts_std, expansion, flux_scaler, prior_std) -> list[_SingleFit]:
    """Batched Levenberg-Marquardt over the fittable spectra; unfittable ones flagged as in the reference."""
    from slamlib.fitting_batched import PixelModel, levenberg_marquardt_batch

    n_label = expansion.n_label
    reasons = [_unfittable_reason(f, w, n_label) for f, w in zip(flux, weights)]
    fits: list[_SingleFit | None] = [
        _SingleFit(np.full(n_label, np.nan), np.full((n_label, n_label), np.nan), False, np.nan, np.nan, 0, reason)
        if reason else None for reason in reasons
    ]
    fittable = np.flatnonzero([not reason for reason in reasons])
    if fittable.size:
        pixel_model = PixelModel(expansion, flux_scaler)
    for start in range(0, fittable.size, BATCH_CHUNK):
        rows = fittable[start:start + BATCH_CHUNK]
        batch = levenberg_marquardt_batch(np.where(weights[rows] > 0, flux[rows], 0.0), weights[rows], starts_std[rows],
                                          pixel_model, prior_std=prior_std)
        n_good = np.count_nonzero(weights[rows], axis=1)
        for position, row in enumerate(rows):
            fits[row] = _SingleFit(batch.labels_std[position], batch.cov_std[position], bool(batch.converged[position]),
                                   float(batch.chi2[position] / max(n_good[position] - n_label, 1)),
                                   float(batch.rms[position]), int(batch.n_iter[position]), batch.reason[position])
    return fits


def normalized_residuals(flux: np.ndarray, weights: np.ndarray, model_flux: np.ndarray) -> np.ndarray:
    """``(model - flux) * sqrt(weight)``: residuals in units of each pixel's sigma, 0 where the weight is 0.

    Parameters
    ----------
    flux, weights, model_flux : ndarray, shape (n_spec, n_pix)

    Returns
    -------
    ndarray, shape (n_spec, n_pix)
    """
    good = weights > 0
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(good, (model_flux - np.where(good, flux, 0.0)) * np.sqrt(weights), 0.0)


def fit_quality(flux: np.ndarray, weights: np.ndarray, model_flux: np.ndarray,
                n_label: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduced chi-square and largest |normalized residual| of model spectra against observed ones.

    Parameters
    ----------
    flux, weights, model_flux : ndarray, shape (n_spec, n_pix)
    n_label : int
        Fitted labels (degrees of freedom lost).

    Returns
    -------
    rchi2, max_residual : ndarray, shape (n_spec,)
        NaN for spectra without good pixels.
    """
    residual = normalized_residuals(flux, weights, model_flux)
    n_good = np.count_nonzero(weights > 0, axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        rchi2 = np.sum(residual**2, axis=1) / np.maximum(n_good - n_label, 1)
        largest = np.max(np.abs(residual), axis=1, initial=0.0)
    return np.where(n_good > 0, rchi2, np.nan), np.where(n_good > 0, largest, np.nan)


def cv_fit_quality(flux: np.ndarray, ivar: np.ndarray, labels: np.ndarray,
                   state: FittedState) -> tuple[np.ndarray, np.ndarray]:
    """How well the model describes stars it did not see: the training stars under their CV sub-models.

    Every training star is evaluated (not fitted) at its own labels with the CV sub-model trained
    without its fold, with the likelihood weights of prediction; a model without CV sub-models is
    evaluated with the full model (which saw the stars: an optimistic measure). The result sets
    :class:`TrustLimits`.

    Parameters
    ----------
    flux, ivar : ndarray, shape (n_train, n_pix)
        The training spectra, in fit order.
    labels : ndarray, shape (n_train, n_label)
        Their labels, physical units.
    state : FittedState
        The model trained on them.

    Returns
    -------
    rchi2, max_residual : ndarray, shape (n_train,)
        As :func:`fit_quality` at the training labels.
    """
    flux = np.asarray(flux, dtype=float)
    weights = pixel_weights(flux, np.asarray(ivar, dtype=float), state.model_variance, state.usable)
    labels_std = state.label_scaler.transform(np.asarray(labels, dtype=float))
    fold_of_star = state.training.fold_of_star
    if state.n_folds == 0 or fold_of_star is None:
        groups = [(state.expansion, np.arange(flux.shape[0]))]
    else:
        groups = [(state.training.fold_expansions[fold], np.flatnonzero(fold_of_star == fold))
                  for fold in range(state.n_folds)]
    rchi2, largest = np.full(flux.shape[0], np.nan), np.full(flux.shape[0], np.nan)
    for expansion, stars in groups:
        for begin in range(0, stars.size, INITIAL_GUESS_CHUNK):
            rows = stars[begin:begin + INITIAL_GUESS_CHUNK]
            model = state.flux_scaler.inverse_transform(expansion.evaluate(labels_std[rows]))
            rchi2[rows], largest[rows] = fit_quality(flux[rows], weights[rows], model, state.n_label)
    return rchi2, largest


def median_flux_ratio(flux: np.ndarray, weights: np.ndarray, state: FittedState) -> np.ndarray:
    """Median flux of each spectrum's good pixels over the median training mean flux at those pixels.

    About 1 for continuum-normalized spectra; see :data:`NORMALIZED_MEDIAN_RANGE`.

    Parameters
    ----------
    flux, weights : ndarray, shape (n_spec, n_pix)

    Returns
    -------
    ndarray, shape (n_spec,)
        NaN for spectra without good pixels.
    """
    good = weights > 0
    ratio = np.full(flux.shape[0], np.nan)
    rows = np.flatnonzero(good.any(axis=1))
    if rows.size:
        observed = np.where(good[rows], flux[rows], np.nan)
        reference = np.where(good[rows], state.flux_scaler.mean[None, :], np.nan)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            ratio[rows] = np.nanmedian(observed, axis=1) / np.nanmedian(reference, axis=1)
    return ratio


def _plainly_unnormalized(ratio: np.ndarray) -> np.ndarray:
    low, high = NORMALIZED_MEDIAN_RANGE
    with np.errstate(invalid="ignore"):
        return np.isfinite(ratio) & ((ratio < low) | (ratio > high)) | np.isinf(ratio)


def warn_if_not_normalized(flux: np.ndarray, good: np.ndarray, *, reference: float = 1.0, what: str = "spectra",
                           stacklevel: int = 3) -> np.ndarray:
    """Warn (:class:`NotNormalizedWarning`) if spectra are plainly not continuum-normalized.

    Parameters
    ----------
    flux : ndarray, shape (n_spec, n_pix)
    good : ndarray of bool, shape (n_spec, n_pix)
        Pixels that count.
    reference : float
        The median a normalized spectrum has (1, or the training spectra's median).
    what : str
        What the spectra are, for the message.

    Returns
    -------
    ndarray of bool, shape (n_spec,)
        The spectra warned about.
    """
    ratio = np.full(flux.shape[0], np.nan)
    rows = np.flatnonzero(good.any(axis=1))
    if rows.size:
        with np.errstate(invalid="ignore", over="ignore"):
            ratio[rows] = np.nanmedian(np.where(good[rows], flux[rows], np.nan), axis=1) / reference
    flagged = _plainly_unnormalized(ratio)
    if flagged.any():
        warnings.warn(
            f"{int(flagged.sum())} of {flux.shape[0]} {what} are plainly not continuum-normalized (median flux "
            f"{float(np.median(ratio[flagged])):.3g} times that of normalized spectra, outside "
            f"{NORMALIZED_MEDIAN_RANGE[0]:.3g}-{NORMALIZED_MEDIAN_RANGE[1]:.3g}); normalize them first "
            "(slamlib.preprocess.prepare).", NotNormalizedWarning, stacklevel=stacklevel)
    return flagged


def training_label_range(state: FittedState) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest training value of every label, physical units, shape (n_label,) each."""
    support = state.label_scaler.inverse_transform(state.training.expansion.support_labels)
    return support.min(axis=0), support.max(axis=0)


def extrapolated_labels(labels: np.ndarray, low: np.ndarray, high: np.ndarray,
                        margin: float = EXTRAPOLATION_MARGIN) -> np.ndarray:
    """True where a finite label lies beyond ``[low - margin * span, high + margin * span]``.

    Parameters
    ----------
    labels : ndarray, shape (n_spec, n_label)
    low, high : ndarray, shape (n_label,)
    margin : float

    Returns
    -------
    ndarray of bool, shape (n_spec, n_label)
    """
    span = np.asarray(high, dtype=float) - np.asarray(low, dtype=float)
    with np.errstate(invalid="ignore"):
        outside = (labels < low - margin * span) | (labels > high + margin * span)
    return outside & np.isfinite(labels)


def _run_fits(flux, weights, starts_std, state, prior_std, method, n_jobs, chunk_size) -> list[_SingleFit]:
    expansion, flux_scaler = state.expansion, state.flux_scaler
    if method == "batched":
        return _fit_batched(flux, weights, starts_std, expansion, flux_scaler, prior_std)
    chunk_results = Parallel(n_jobs=n_jobs)(
        delayed(_fit_chunk)(flux[s:s + chunk_size], weights[s:s + chunk_size], starts_std[s:s + chunk_size],
                            expansion, flux_scaler, prior_std)
        for s in range(0, flux.shape[0], chunk_size)
    )
    return [fit for chunk in chunk_results for fit in chunk]


def _checked_clip_sigma(clip_sigma: float | None) -> float | None:
    if clip_sigma is None:
        return None
    if isinstance(clip_sigma, bool) or not isinstance(clip_sigma, (int, float, np.number)) \
            or not (np.isfinite(clip_sigma) and clip_sigma >= 3):
        raise ValueError(f"clip_sigma must be a number of sigma of at least 3 (or None: no clipping), got "
                         f"{clip_sigma!r}; 5 is a good choice.")
    return float(clip_sigma)


def _labels_std(fits: list[_SingleFit], n_label: int) -> np.ndarray:
    return np.array([fit.labels_std for fit in fits]).reshape(len(fits), n_label)


def _model_flux_at(state: FittedState, labels_std: np.ndarray) -> np.ndarray:
    """Model flux at standardized labels, NaN rows where the labels are not finite."""
    model = np.full((labels_std.shape[0], state.n_pix), np.nan)
    rows = np.flatnonzero(np.all(np.isfinite(labels_std), axis=1))
    for begin in range(0, rows.size, INITIAL_GUESS_CHUNK):
        chunk = rows[begin:begin + INITIAL_GUESS_CHUNK]
        model[chunk] = state.flux_scaler.inverse_transform(state.expansion.evaluate(labels_std[chunk]))
    return model


def cv_errors(state: FittedState, snr: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CV error model's errors (:attr:`PredictionResult.errors_cv`) and whether their S/N is outside its range.

    Parameters
    ----------
    state : FittedState
    snr : ndarray, shape (n_spec,)
    labels : ndarray, shape (n_spec, n_label)
        Fitted labels; rows that are not finite get NaN errors.

    Returns
    -------
    errors_cv : ndarray, shape (n_spec, n_label)
        NaN everywhere for a model without an error model.
    extrapolated : ndarray of bool, shape (n_spec,)
    """
    snr = np.asarray(snr, dtype=float)
    fitted = np.all(np.isfinite(labels), axis=1)
    if state.error_model is None:
        return np.full(labels.shape, np.nan), np.zeros(snr.shape, dtype=bool)
    errors = np.where(fitted[:, None], state.error_model.evaluate(snr), np.nan)
    return errors, state.error_model.outside(snr) & fitted


def predict_labels(
    flux: np.ndarray,
    ivar: np.ndarray,
    state: FittedState,
    *,
    prior: GaussianPrior | None = None,
    n_jobs: int = 1,
    chunk_size: int = 64,
    method: str = "batched",
    clip_sigma: float | None = None,
    trust_limits: TrustLimits | None = None,
) -> PredictionResult:
    """Fit the labels of a batch of spectra and decide which results can be trusted.

    Parameters
    ----------
    flux, ivar : ndarray, shape (n_spec, n_pix)
        Normalized flux and its inverse variance on the model's wavelength grid.
    state : FittedState
        The trained model (or one of its CV sub-models, :meth:`FittedState.sub_model`): its
        expansion, scalings, model variance, usable pixels and the training stars' model
        spectra for the initial guess.
    prior : GaussianPrior, optional
    n_jobs : int
        joblib workers over chunks of spectra.
    chunk_size : int
        Spectra per joblib task (reference method).
    method : {"batched", "reference"}
        "reference": one ``scipy.optimize.least_squares(method="lm")`` (MINPACK ``lmder``) per
        spectrum; "batched" (default): the same MINPACK iteration run for many spectra at once, with the
        kernel work as matrix products and a work queue of spectra in flight
        (:func:`slamlib.fitting_batched.levenberg_marquardt_batch`). Both minimize the same
        objective from the same start with the same stopping rules; ``n_jobs`` and
        ``chunk_size`` concern the reference only.
    clip_sigma : float, optional
        Iterative outlier clipping (off by default): after the fit, pixels whose normalized
        residual ``|model - flux| / sigma`` exceeds ``clip_sigma`` (at least 3; 5 is a good
        choice) are given zero weight and the spectrum is fitted again from the best-matching
        training star; the mask is recomputed from all good pixels after every fit, for at most
        :data:`MAX_CLIP_ROUNDS` rounds or until it no longer changes. A round clips at most
        :data:`MAX_CLIPPED_FRACTION` of the pixels (the worst ones: a fit pulled by a huge spike
        is off almost everywhere until the spike is gone), and a spectrum with more pixels than
        that beyond ``clip_sigma`` after the last fit is a poor fit. ``n_clipped`` reports the
        removed pixels; rchi2 and ``max_residual`` are over the rest. Cosmic rays and spikes
        then no longer move the labels.
    trust_limits : TrustLimits, optional
        The fit-quality limits of ``good_fit`` (default: the state's, from its CV residuals,
        :attr:`FittedState.trust_limits`).

    Returns
    -------
    PredictionResult
        A spectrum that cannot be fitted (no finite flux, no good pixel, fewer good
        pixels than labels) gets NaN labels, ``converged`` False and its ``reason``;
        the rest of the batch goes on. ``trusted`` marks the results to use; ``errors_cv``
        are the errors to quote (:func:`cv_errors`).

    Warns
    -----
    NotNormalizedWarning
        If spectra are plainly not continuum-normalized (:data:`NORMALIZED_MEDIAN_RANGE`);
        those rows are not ``good_fit``.
    """
    expansion, label_scaler = state.expansion, state.label_scaler
    flux = np.atleast_2d(np.asarray(flux, dtype=float))
    ivar = np.atleast_2d(np.asarray(ivar, dtype=float))
    if flux.shape != ivar.shape or flux.shape[1] != expansion.n_pix:
        raise ValueError(
            f"flux {flux.shape} and ivar {ivar.shape} must both have shape (n_spec, {expansion.n_pix}): "
            "resample the spectra onto the model's wavelength grid first (slamlib.preprocess.prepare)."
        )
    if method not in ("batched", "reference"):
        raise ValueError(f'method must be "batched" or "reference", got {method!r}.')
    clip_sigma = _checked_clip_sigma(clip_sigma)
    limits = state.trust_limits if trust_limits is None else trust_limits
    if not isinstance(limits, TrustLimits):
        raise ValueError(f"trust_limits must be a TrustLimits, got {trust_limits!r}.")
    n_label = expansion.n_label
    weights = pixel_weights(flux, ivar, state.model_variance, state.usable)
    start_index = initial_guess(np.nan_to_num(flux), weights, state.training_model_flux)
    starts_std = state.training_labels_std[start_index]
    prior_std = None
    if prior is not None:
        if prior.mean.size != n_label:
            raise ValueError(f"the prior has {prior.mean.size} labels, the model {n_label}.")
        prior_std = (label_scaler.transform(prior.mean), prior.sigma / label_scaler.scale)
    run = {"state": state, "prior_std": prior_std, "method": method, "n_jobs": n_jobs, "chunk_size": chunk_size}
    fits = _run_fits(flux, weights, starts_std, **run)
    n_iter = np.array([fit.n_iter for fit in fits], dtype=int)
    clipped = np.zeros(flux.shape, dtype=bool)
    too_many_outliers = np.zeros(flux.shape[0], dtype=bool)
    if clip_sigma is not None:
        base_weights = weights
        weights = weights.copy()
        originally_good = base_weights > 0
        most_clipped = np.floor(MAX_CLIPPED_FRACTION * np.count_nonzero(originally_good, axis=1)).astype(int)
        for clip_round in range(MAX_CLIP_ROUNDS + 1):
            labels_std = _labels_std(fits, n_label)
            fitted = np.all(np.isfinite(labels_std), axis=1)
            residual = np.abs(normalized_residuals(flux, base_weights, _model_flux_at(state, labels_std)))
            mask = (residual > clip_sigma) & originally_good & fitted[:, None]
            over = np.count_nonzero(mask, axis=1) > most_clipped
            too_many_outliers = over & fitted  # judged on the mask of the latest fit
            for row in np.flatnonzero(too_many_outliers):
                # A fit pulled by a huge outlier has many pixels off: clip only the worst ones this round.
                worst = np.argsort(-residual[row], kind="stable")[:most_clipped[row]]
                mask[row] = False
                mask[row, worst] = True
            changed = fitted & np.any(mask != clipped, axis=1)
            if clip_round == MAX_CLIP_ROUNDS or not changed.any():
                break
            rows = np.flatnonzero(changed)
            clipped[rows] = mask[rows]
            weights[rows] = np.where(clipped[rows], 0.0, base_weights[rows])
            restart = state.training_labels_std[initial_guess(np.nan_to_num(flux[rows]), weights[rows],
                                                              state.training_model_flux)]
            for row, fit in zip(rows, _run_fits(flux[rows], weights[rows], restart, **run)):
                fits[row] = fit
                n_iter[row] += fit.n_iter
    labels_std = _labels_std(fits, n_label)
    cov_std = np.array([fit.cov_std for fit in fits]).reshape(len(fits), n_label, n_label)
    scale = label_scaler.scale
    cov = cov_std * scale[None, :, None] * scale[None, None, :]
    errors = np.sqrt(np.abs(np.diagonal(cov, axis1=1, axis2=2)))
    labels = label_scaler.inverse_transform(labels_std)
    converged = np.array([fit.converged for fit in fits], dtype=bool)
    rchi2 = np.array([fit.rchi2 for fit in fits])
    _, max_residual = fit_quality(flux, weights, _model_flux_at(state, labels_std), n_label)
    fitted = np.all(np.isfinite(labels), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ratio = median_flux_ratio(flux, weights, state)
    unnormalized = _plainly_unnormalized(ratio) & fitted
    if unnormalized.any():
        warnings.warn(
            f"{int(unnormalized.sum())} of {flux.shape[0]} spectra are plainly not continuum-normalized (median "
            f"flux {float(np.median(ratio[unnormalized])):.3g} times the training spectra's); their labels are "
            "not trusted. Normalize them first (slamlib.preprocess.prepare).", NotNormalizedWarning, stacklevel=2)
    with np.errstate(invalid="ignore"):
        high_rchi2 = fitted & ~(rchi2 <= limits.max_rchi2)
        outlier_pixel = fitted & ~(max_residual <= limits.max_residual)
    good_fit = fitted & ~(high_rchi2 | outlier_pixel | unnormalized | too_many_outliers)
    low, high = training_label_range(state)
    outside = extrapolated_labels(labels, low, high)
    n_good = np.count_nonzero(weights, axis=1)
    reason = np.empty(len(fits), dtype=object)
    for row, fit in enumerate(fits):
        parts = [fit.reason] if fit.reason else []
        if unnormalized[row]:
            parts.append(f"flux not continuum-normalized (median {ratio[row]:.3g} times the training spectra's)")
        if too_many_outliers[row]:
            parts.append(f"poor fit: more than {MAX_CLIPPED_FRACTION:.0%} of the pixels beyond {clip_sigma:g} "
                         "sigma from the model after clipping")
        if high_rchi2[row]:
            text = f"poor fit: rchi2 {rchi2[row]:.3g} above the model's limit {limits.max_rchi2:.3g}"
            if outlier_pixel[row]:
                text += f", a pixel {max_residual[row]:.3g} sigma off"
            parts.append(text)
        elif outlier_pixel[row]:
            parts.append(f"poor fit: a pixel {max_residual[row]:.3g} sigma from the model (limit "
                         f"{limits.max_residual:.3g}), an outlier such as a cosmic ray: mask it or fit with clip_sigma")
        if outside[row].any():
            names = [name for name, flag in zip(state.label_names, outside[row]) if flag]
            parts.append(f"labels outside the training range: {', '.join(names)}")
        if not parts and not fit.converged:
            parts.append("not converged")
        reason[row] = "; ".join(parts)
    snr = median_snr(flux, ivar)
    errors_cv, errors_cv_extrapolated = cv_errors(state, snr, labels)
    return PredictionResult(
        labels=labels,
        errors=errors,
        cov=cov,
        converged=converged,
        rchi2=rchi2,
        rms=np.array([fit.rms for fit in fits]),
        n_iter=n_iter,
        n_good_pixels=n_good,
        initial_labels=np.where(n_good[:, None] > 0, label_scaler.inverse_transform(starts_std), np.nan),
        reason=reason,
        label_names=list(state.label_names),
        good_fit=good_fit,
        max_residual=max_residual,
        n_clipped=np.count_nonzero(clipped, axis=1),
        extrapolated=outside.any(axis=1),
        snr=snr,
        errors_cv=errors_cv,
        errors_cv_extrapolated=errors_cv_extrapolated,
    )
