"""Label prediction (paper Section 2.3): initial guess, Levenberg-Marquardt, formal errors.

For an observed normalized spectrum f with inverse variance ivar, the labels maximize the
Gaussian likelihood of Eq. 8,

    ln L = -1/2 sum_j (f_model,j(theta) - f_j)^2 / sigma_j^2,  sigma_j^2 = 1/ivar_j + s_j^2,

where s_j^2 is the model variance of pixel j (the CV MSE, in flux units). Bad pixels
(ivar <= 0, non-finite values, untrained pixels) get zero weight. The search starts from
the training star whose model spectrum matches best and runs
``scipy.optimize.least_squares(method="lm")`` with the analytic Jacobian of the kernel
expansion. The inverse of J^T J at the solution is the formal ("SLAM") covariance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from joblib import Parallel, delayed
from scipy.optimize import least_squares

from slamlib.scaling import Standardizer
from slamlib.state import FittedState
from slamlib.svr.kernel import KernelExpansion

__all__ = ["GaussianPrior", "PredictionResult", "pixel_weights", "initial_guess", "fit_labels", "predict_labels"]

#: Spectrum chunk for the vectorized initial-guess search (bounds memory: chunk x n_train).
INITIAL_GUESS_CHUNK = 256


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
    """Labels of a batch of spectra.

    Attributes
    ----------
    labels : ndarray, shape (n_spec, n_label)
        Best-fitting labels in physical units (NaN where the fit was impossible).
    errors : ndarray, shape (n_spec, n_label)
        Formal errors, the square roots of the covariance diagonal.
    cov : ndarray, shape (n_spec, n_label, n_label)
        Covariance from the Jacobian at the solution, physical units.
    converged : ndarray of bool, shape (n_spec,)
        True when Levenberg-Marquardt stopped on a tolerance.
    rchi2 : ndarray, shape (n_spec,)
        Reduced chi-square over the good pixels.
    rms : ndarray, shape (n_spec,)
        Root-mean-square of the flux residuals (model - data) over the good pixels.
    n_iter : ndarray of int, shape (n_spec,)
        Function evaluations used by the optimizer.
    n_good_pixels : ndarray of int, shape (n_spec,)
        Pixels with non-zero weight.
    initial_labels : ndarray, shape (n_spec, n_label)
        Labels of the best-matching training star, where the search started.
    reason : ndarray of str, shape (n_spec,)
        Empty when converged; otherwise why not.
    label_names : list of str
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

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def combine(cls, parts: list["PredictionResult"], positions: list[np.ndarray], n_spec: int) -> "PredictionResult":
        """Merge results of disjoint subsets: ``parts[i]`` holds the spectra at ``positions[i]``."""
        fields = ("labels", "errors", "cov", "converged", "rchi2", "rms", "n_iter", "n_good_pixels",
                  "initial_labels", "reason")
        merged = {}
        for name in fields:
            template = getattr(parts[0], name)
            values = np.empty((n_spec,) + template.shape[1:], dtype=template.dtype)
            for part, position in zip(parts, positions):
                values[position] = getattr(part, name)
            merged[name] = values
        return cls(**merged, label_names=list(parts[0].label_names))

    def to_table(self) -> Table:
        """The results as an astropy Table: one column per label and per label error."""
        table = Table()
        for index, name in enumerate(self.label_names):
            table[name] = self.labels[:, index]
            table[f"{name}_err"] = self.errors[:, index]
        for name in ("rchi2", "rms", "converged", "n_iter", "n_good_pixels"):
            table[name] = getattr(self, name)
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


def predict_labels(
    flux: np.ndarray,
    ivar: np.ndarray,
    state: FittedState,
    *,
    prior: GaussianPrior | None = None,
    n_jobs: int = 1,
    chunk_size: int = 64,
    method: str = "batched",
) -> PredictionResult:
    """Fit the labels of a batch of spectra.

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

    Returns
    -------
    PredictionResult
        A spectrum that cannot be fitted (no finite flux, no good pixel, fewer good
        pixels than labels) gets NaN labels, ``converged`` False and its ``reason``;
        the rest of the batch goes on.
    """
    expansion, flux_scaler, label_scaler = state.expansion, state.flux_scaler, state.label_scaler
    flux = np.atleast_2d(np.asarray(flux, dtype=float))
    ivar = np.atleast_2d(np.asarray(ivar, dtype=float))
    if flux.shape != ivar.shape or flux.shape[1] != expansion.n_pix:
        raise ValueError(
            f"flux {flux.shape} and ivar {ivar.shape} must both have shape (n_spec, {expansion.n_pix}): "
            "resample the spectra onto the model's wavelength grid first (slamlib.preprocess.prepare)."
        )
    weights = pixel_weights(flux, ivar, state.model_variance, state.usable)
    start_index = initial_guess(np.nan_to_num(flux), weights, state.training_model_flux)
    starts_std = state.training_labels_std[start_index]
    prior_std = None
    if prior is not None:
        if prior.mean.size != expansion.n_label:
            raise ValueError(f"the prior has {prior.mean.size} labels, the model {expansion.n_label}.")
        prior_std = (label_scaler.transform(prior.mean), prior.sigma / label_scaler.scale)
    if method == "batched":
        fits = _fit_batched(flux, weights, starts_std, expansion, flux_scaler, prior_std)
    elif method == "reference":
        chunks = range(0, flux.shape[0], chunk_size)
        chunk_results = Parallel(n_jobs=n_jobs)(
            delayed(_fit_chunk)(flux[s:s + chunk_size], weights[s:s + chunk_size], starts_std[s:s + chunk_size],
                                expansion, flux_scaler, prior_std)
            for s in chunks
        )
        fits = [fit for chunk in chunk_results for fit in chunk]
    else:
        raise ValueError(f'method must be "batched" or "reference", got {method!r}.')
    labels_std = np.array([fit.labels_std for fit in fits]).reshape(len(fits), expansion.n_label)
    cov_std = np.array([fit.cov_std for fit in fits]).reshape(len(fits), expansion.n_label, expansion.n_label)
    scale = label_scaler.scale
    cov = cov_std * scale[None, :, None] * scale[None, None, :]
    errors = np.sqrt(np.abs(np.diagonal(cov, axis1=1, axis2=2)))
    return PredictionResult(
        labels=label_scaler.inverse_transform(labels_std),
        errors=errors,
        cov=cov,
        converged=np.array([fit.converged for fit in fits], dtype=bool),
        rchi2=np.array([fit.rchi2 for fit in fits]),
        rms=np.array([fit.rms for fit in fits]),
        n_iter=np.array([fit.n_iter for fit in fits], dtype=int),
        n_good_pixels=np.count_nonzero(weights, axis=1),
        initial_labels=np.where(np.count_nonzero(weights, axis=1)[:, None] > 0,
                                label_scaler.inverse_transform(starts_std), np.nan),
        reason=np.array([fit.reason for fit in fits], dtype=object),
        label_names=list(state.label_names),
    )
