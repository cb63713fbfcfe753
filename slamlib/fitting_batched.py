"""Levenberg-Marquardt on many spectra at once (the fast prediction path).

Same problem as :func:`slamlib.fitting.fit_labels` — minimize, for every spectrum, the weighted
squared residuals of Eq. 8 over the standardized labels — but all spectra of a chunk advance
together: their model fluxes and Jacobians come from one kernel matrix (n_spec x n_train) times
the stacked dual coefficients per gamma group (:meth:`KernelExpansion.evaluate_with_jacobian`),
the normal equations of all spectra are solved in one batched ``numpy.linalg.solve``, and every
spectrum keeps its own damping and its own convergence test. The update rule is the classic
Marquardt one (damping ``lambda * diag(J^T J)``, lambda divided by 10 on an accepted step,
multiplied by 10 on a rejected one); convergence follows scipy's ``xtol``/``ftol`` tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slamlib.scaling import Standardizer
from slamlib.svr.kernel import KernelExpansion

__all__ = ["BatchFit", "levenberg_marquardt_batch"]

_INITIAL_DAMPING = 1e-3
_MAX_DAMPING = 1e12


@dataclass(frozen=True)
class BatchFit:
    """Result of :func:`levenberg_marquardt_batch` for a chunk of spectra (standardized labels).

    Attributes
    ----------
    labels_std : ndarray, shape (n_spec, n_label)
    cov_std : ndarray, shape (n_spec, n_label, n_label)
        Inverse of J^T J at the solution (NaN where singular).
    converged : ndarray of bool, shape (n_spec,)
    chi2 : ndarray, shape (n_spec,)
        Weighted sum of squared pixel residuals (prior terms excluded).
    rms : ndarray, shape (n_spec,)
        Root-mean-square flux residual over the good pixels.
    n_iter : ndarray of int, shape (n_spec,)
        Model evaluations per spectrum.
    reason : list of str
        Empty when converged.
    """

    labels_std: np.ndarray
    cov_std: np.ndarray
    converged: np.ndarray
    chi2: np.ndarray
    rms: np.ndarray
    n_iter: np.ndarray
    reason: list[str]


def _model(expansion, flux_scaler, labels_std, with_jacobian):
    if with_jacobian:
        flux_std, jacobian_std = expansion.evaluate_with_jacobian(labels_std)
        return flux_scaler.mean + flux_scaler.scale * flux_std, flux_scaler.scale[None, :, None] * jacobian_std
    return flux_scaler.mean + flux_scaler.scale * expansion.evaluate(labels_std), None


def _objective(model, flux, weights, labels_std, prior_std):
    residual = model - flux
    cost = np.sum(weights * residual**2, axis=1)
    if prior_std is not None:
        cost = cost + np.sum(((labels_std - prior_std[0]) / prior_std[1]) ** 2, axis=1)
    return cost, residual


def levenberg_marquardt_batch(
    flux: np.ndarray,
    weights: np.ndarray,
    start_std: np.ndarray,
    expansion: KernelExpansion,
    flux_scaler: Standardizer,
    *,
    prior_std: tuple[np.ndarray, np.ndarray] | None = None,
    max_evaluations: int | None = None,
    xtol: float = 1e-8,
    ftol: float = 1e-8,
) -> BatchFit:
    """Fit the labels of a chunk of spectra simultaneously.

    Parameters
    ----------
    flux, weights : ndarray, shape (n_spec, n_pix)
        Normalized flux (any finite value where the weight is 0) and likelihood weights.
    start_std : ndarray, shape (n_spec, n_label)
        Starting labels (standardized).
    expansion : KernelExpansion
    flux_scaler : Standardizer
    prior_std : (mean, sigma), optional
        Gaussian prior in standardized units.
    max_evaluations : int, optional
        Model evaluations per spectrum before giving up (default 100 x (n_label + 1), scipy's rule).
    xtol, ftol : float
        Stop when the step is below ``xtol * (xtol + |labels|)`` or the relative decrease of the
        cost is below ``ftol`` (scipy's tests).
    """
    n_spec, n_label = start_std.shape
    max_evaluations = 100 * (n_label + 1) if max_evaluations is None else max_evaluations
    labels_std = np.array(start_std, dtype=float)
    damping = np.full(n_spec, _INITIAL_DAMPING)
    evaluations = np.ones(n_spec, dtype=int)
    done = np.zeros(n_spec, dtype=bool)
    converged = np.zeros(n_spec, dtype=bool)
    reason = [""] * n_spec
    model, jacobian = _model(expansion, flux_scaler, labels_std, True)
    cost, residual = _objective(model, flux, weights, labels_std, prior_std)
    prior_precision = None if prior_std is None else 1.0 / prior_std[1] ** 2
    while not done.all():
        active = np.flatnonzero(~done)
        weighted_jacobian = weights[active, :, None] * jacobian[active]
        normal = np.einsum("spk,spl->skl", weighted_jacobian, jacobian[active])
        gradient = np.einsum("spk,sp->sk", weighted_jacobian, residual[active])
        if prior_std is not None:
            normal = normal + np.eye(n_label)[None] * prior_precision[None, :, None]
            gradient = gradient + (labels_std[active] - prior_std[0]) * prior_precision
        diagonal = np.maximum(np.diagonal(normal, axis1=1, axis2=2), 1e-12)
        damped = normal + damping[active][:, None, None] * np.eye(n_label)[None] * diagonal[:, None, :]
        step = -np.linalg.solve(damped, gradient[:, :, None])[:, :, 0]
        trial = labels_std[active] + step
        trial_model, _ = _model(expansion, flux_scaler, trial, False)
        trial_cost, _ = _objective(trial_model, flux[active], weights[active], trial, prior_std)
        evaluations[active] += 1
        accepted = trial_cost < cost[active]
        small_step = np.linalg.norm(step, axis=1) <= xtol * (xtol + np.linalg.norm(labels_std[active], axis=1))
        small_decrease = accepted & ((cost[active] - trial_cost) <= ftol * cost[active])
        accepted_rows = active[accepted]
        if accepted_rows.size:
            labels_std[accepted_rows] = trial[accepted]
            new_model, new_jacobian = _model(expansion, flux_scaler, labels_std[accepted_rows], True)
            model[accepted_rows], jacobian[accepted_rows] = new_model, new_jacobian
            cost[accepted_rows], residual[accepted_rows] = _objective(
                new_model, flux[accepted_rows], weights[accepted_rows], labels_std[accepted_rows], prior_std)
        damping[active] = np.where(accepted, damping[active] / 10.0, damping[active] * 10.0)
        finished = small_step | small_decrease
        converged[active[finished]] = True
        stuck = ~finished & ((evaluations[active] >= max_evaluations) | (damping[active] > _MAX_DAMPING))
        for row in active[stuck]:
            reason[row] = "maximum number of function evaluations reached"
        done[active[finished | stuck]] = True
    cov_std = np.full((n_spec, n_label, n_label), np.nan)
    normal = np.einsum("spk,spl->skl", weights[:, :, None] * jacobian, jacobian)
    if prior_std is not None:
        normal = normal + np.eye(n_label)[None] * prior_precision[None, :, None]
    for row in range(n_spec):
        try:
            cov_std[row] = np.linalg.inv(normal[row])
        except np.linalg.LinAlgError:
            converged[row] = False
            reason[row] = "singular Jacobian: the spectrum does not constrain every label"
    good = weights > 0
    chi2 = np.sum(weights * residual**2, axis=1)
    rms = np.sqrt(np.sum(np.where(good, residual, 0.0) ** 2, axis=1) / np.maximum(good.sum(axis=1), 1))
    return BatchFit(labels_std, cov_std, converged, chi2, rms, evaluations, reason)
