"""Levenberg-Marquardt on many spectra at once (the fast prediction path).

Same problem as :func:`slamlib.fitting.fit_labels` -- for every spectrum, minimize the weighted
squared residuals of Eq. 8 (plus the prior terms) over the standardized labels -- and the same
algorithm: MINPACK's ``lmder``, which ``scipy.optimize.least_squares(method="lm")`` runs for the
reference, step for step. Each spectrum keeps its own trust region (``delta``), Levenberg-Marquardt
parameter (``par``, found by Moré's ``lmpar`` iteration), variable scaling (``diag``: the running
maximum of the Jacobian's column norms, scipy's ``x_scale="jac"``), evaluation count and
convergence tests (``ftol``, ``xtol``, ``gtol`` and ``max_nfev = 100 n_label`` exactly as MINPACK
applies them). So, up to rounding, a spectrum takes the reference's steps and stops at the same
evaluation on the same test, and a spectrum that exhausts its evaluations is flagged as the
reference flags it (tests/test_fitting_batched.py compares labels, errors, flags and evaluation
counts with the reference).

What differs is the linear algebra and the scheduling:

* the model fluxes of all spectra in flight come from one kernel matrix per gamma group times
  the gamma-sorted dual coefficients (one GEMM), and the analytic Jacobian of the accepted
  ones from a second GEMM that reuses that kernel matrix (``lmder`` only needs a new Jacobian
  after an accepted step);
* the small (n_label x n_label) systems are solved on stacks with ``numpy.linalg``, from the
  normal matrix ``J^T J`` instead of a QR factorization of ``J`` (the same quantities in exact
  arithmetic: ``lmpar``'s triangular solves become solves with ``J^T J + par D^2``);
* spectra run through a work queue: at most ``batch_size`` are in flight, a spectrum leaves as
  soon as it stops and a waiting one takes its place, so a slow spectrum never holds the others
  back and the matrix products stay large until the queue runs dry.

Everything is float64.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from slamlib.scaling import Standardizer
from slamlib.svr.kernel import KernelExpansion, rbf_kernel

__all__ = ["BatchFit", "PixelModel", "levenberg_marquardt_batch", "MAX_EVALUATIONS_REASON",
           "SINGULAR_REASON"]

#: ``reason`` of a spectrum that used all its function evaluations (as in :func:`slamlib.fitting.fit_labels`).
MAX_EVALUATIONS_REASON = "maximum number of function evaluations reached"
#: ``reason`` of a spectrum whose final J^T J cannot be inverted (as in :func:`slamlib.fitting.fit_labels`).
SINGULAR_REASON = "singular Jacobian: the spectrum does not constrain every label"

# MINPACK lmder constants.
_STEP_BOUND_FACTOR = 100.0  # ``factor``: initial trust region = factor * |diag * x0|
_MIN_RATIO = 1e-4           # a step is accepted when actual / predicted reduction >= this
_TINY = np.finfo(float).tiny  # ``dwarf``
_LMPAR_MAX_ITERATIONS = 10

# Status codes, as scipy.optimize.least_squares reports them.
STATUS_RUNNING = -2
STATUS_MAX_EVALUATIONS = 0
STATUS_GTOL = 1
STATUS_FTOL = 2
STATUS_XTOL = 3
STATUS_FTOL_AND_XTOL = 4


@dataclass(frozen=True)
class BatchFit:
    """Result of :func:`levenberg_marquardt_batch` (standardized labels).

    Attributes
    ----------
    labels_std : ndarray, shape (n_spec, n_label)
        Labels at the last accepted step.
    cov_std : ndarray, shape (n_spec, n_label, n_label)
        Inverse of J^T J (prior rows included) at the solution; NaN where singular.
    converged : ndarray of bool, shape (n_spec,)
        Stopped on a tolerance and J^T J is invertible.
    status : ndarray of int, shape (n_spec,)
        scipy's ``least_squares`` status: 0 evaluations exhausted, 1 ``gtol``, 2 ``ftol``,
        3 ``xtol``, 4 ``ftol`` and ``xtol``.
    chi2 : ndarray, shape (n_spec,)
        Weighted sum of squared pixel residuals (prior terms excluded).
    rms : ndarray, shape (n_spec,)
        Root-mean-square flux residual over the good pixels.
    n_iter : ndarray of int, shape (n_spec,)
        Function evaluations per spectrum (scipy's ``nfev``).
    n_jacobian : ndarray of int, shape (n_spec,)
        Jacobian evaluations per spectrum (scipy's ``njev``).
    reason : list of str
        Empty when converged, else why not.
    """

    labels_std: np.ndarray
    cov_std: np.ndarray
    converged: np.ndarray
    status: np.ndarray
    chi2: np.ndarray
    rms: np.ndarray
    n_iter: np.ndarray
    n_jacobian: np.ndarray
    reason: list[str]


class PixelModel:
    """Model flux of every pixel in normalized-flux units, with pixels sorted by gamma.

    ``flux_j(theta) = mean_j + scale_j * (sum_i beta_ij exp(-gamma_j |theta - x_i|^2) + b_j)``:
    the flux standardization is folded into the coefficients, pixels are reordered so that each
    gamma group is a contiguous block of columns, and within a group only the training stars that
    are support vectors of at least one of its pixels are kept. All outputs are in this sorted
    pixel order (:attr:`order` maps it back); sums over pixels do not depend on the order.

    Parameters
    ----------
    expansion : KernelExpansion
        The trained per-pixel models (standardized units).
    flux_scaler : Standardizer
        The training standardization of the flux.
    """

    def __init__(self, expansion: KernelExpansion, flux_scaler: Standardizer) -> None:
        gamma = np.asarray(expansion.gamma, dtype=float)
        dual_coef = np.asarray(expansion.dual_coef, dtype=float)
        flux_scale = np.asarray(flux_scaler.scale, dtype=float)
        flux_mean = np.asarray(flux_scaler.mean, dtype=float)
        #: Pixel permutation: sorted position k holds pixel ``order[k]``.
        self.order = np.argsort(gamma, kind="stable")
        self.n_pix = gamma.size
        self.n_label = int(np.shape(expansion.support_labels)[1])
        self.offset = flux_mean[self.order] + flux_scale[self.order] * np.asarray(expansion.intercept, float)[self.order]
        coefficients_sorted = dual_coef[self.order] * flux_scale[self.order, None]
        support_labels = np.asarray(expansion.support_labels, dtype=float)
        values, starts = np.unique(gamma[self.order], return_index=True)
        stops = np.append(starts[1:], gamma.size)
        #: Per gamma group: (gamma, pixel block, support labels (n_sv, n_label), their squared norms,
        #: the coefficients (n_block, n_sv), C-contiguous). Products are taken as
        #: ``coefficients @ kernel.T`` (pixels x spectra): with OpenBLAS this layout is 2-8 times faster
        #: than ``kernel @ coefficients.T`` for the few hundred (or, at the end, few) spectra in flight.
        self.groups = []
        for value, start, stop in zip(values, starts, stops):
            block = slice(int(start), int(stop))
            coefficients = coefficients_sorted[block]
            stars = np.flatnonzero(np.any(coefficients != 0.0, axis=0))
            labels = np.ascontiguousarray(support_labels[stars])
            self.groups.append((float(value), block, labels, np.sum(labels**2, axis=1),
                                np.ascontiguousarray(coefficients[:, stars])))

    def flux(self, labels_std: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """Model flux (sorted pixels) and, per gamma group, the kernel matrix and kernel sums.

        Parameters
        ----------
        labels_std : ndarray, shape (n_spec, n_label)

        Returns
        -------
        flux : ndarray, shape (n_spec, n_pix)
        kernels : list of (kernel (n_sv, n_spec), kernel_sum (n_block, n_spec))
            What :meth:`jacobian` needs to differentiate at these labels without recomputing
            (:meth:`select_spectra` takes a subset).
        """
        flux = np.empty((labels_std.shape[0], self.n_pix))
        kernels = []
        squared_norm = np.sum(labels_std**2, axis=1)
        for gamma, block, support, support_squared_norm, coefficients in self.groups:
            kernel = rbf_kernel(support, labels_std, gamma, squared_norm_a=support_squared_norm,
                                squared_norm_b=squared_norm)
            kernel_sum = coefficients @ kernel
            flux[:, block] = kernel_sum.T + self.offset[block]
            kernels.append((kernel, kernel_sum))
        return flux, kernels

    @staticmethod
    def select_spectra(kernels: list[tuple[np.ndarray, np.ndarray]], rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The kernels of a subset of the spectra (``rows`` index or mask the spectra given to :meth:`flux`)."""
        return [(kernel[:, rows], kernel_sum[:, rows]) for kernel, kernel_sum in kernels]

    def jacobian(self, labels_std: np.ndarray, kernels: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """d flux / d labels at the labels whose kernels :meth:`flux` returned.

        ``d f_j / d theta_l = -2 gamma_j (theta_l sum_i c_ij K_i - sum_i c_ij K_i x_il)``: the
        second sum for all labels is one GEMM with the stacked ``K * x_l`` columns.

        Parameters
        ----------
        labels_std : ndarray, shape (n_spec, n_label)
        kernels : list of (kernel, kernel_sum)
            From :meth:`flux` at ``labels_std`` (or :meth:`select_spectra` of them).

        Returns
        -------
        ndarray, shape (n_label, n_spec, n_pix)
        """
        n_spec = labels_std.shape[0]
        jacobian = np.empty((self.n_label, n_spec, self.n_pix))
        for (gamma, block, support, _, coefficients), (kernel, kernel_sum) in zip(self.groups, kernels):
            weighted_kernels = (support[:, :, None] * kernel[:, None, :]).reshape(support.shape[0], -1)
            moments = (coefficients @ weighted_kernels).reshape(-1, self.n_label, n_spec)   # (n_block, n_label, n_spec)
            for label in range(self.n_label):
                moments[:, label, :] -= kernel_sum * labels_std[:, label]
            # d f / d theta = 2 gamma (sum_i c_i K_i x_i - theta sum_i c_i K_i)
            np.multiply(moments.transpose(1, 2, 0), 2.0 * gamma, out=jacobian[:, :, block])
        return jacobian


def _solve(matrices: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve a stack of small systems; singular ones by least squares. (solutions, singular mask)."""
    try:
        return np.linalg.solve(matrices, vectors[..., None])[..., 0], np.zeros(len(matrices), dtype=bool)
    except np.linalg.LinAlgError:
        # Some matrix is exactly singular (MINPACK's rank-deficient case): minimum-norm solutions
        # for those, ordinary solves for the rest.
        singular_values = np.linalg.svd(matrices, compute_uv=False)
        singular = singular_values[:, -1] <= singular_values[:, 0] * matrices.shape[1] * np.finfo(float).eps
        solutions = np.empty_like(vectors)
        solutions[singular] = np.einsum("skl,sl->sk", np.linalg.pinv(matrices[singular]), vectors[singular])
        if np.any(~singular):
            solutions[~singular] = np.linalg.solve(matrices[~singular], vectors[~singular][..., None])[..., 0]
        return solutions, singular


def _quadratic_form_inverse(matrices: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``v^T M^-1 v`` for stacks of matrices and vectors."""
    solutions, _ = _solve(matrices, vectors)
    return np.sum(vectors * solutions, axis=1)


def levenberg_marquardt_parameter(
    normal: np.ndarray,
    gradient: np.ndarray,
    diag: np.ndarray,
    delta: np.ndarray,
    par: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """MINPACK ``lmpar`` for a stack of problems, from the normal matrix.

    Finds ``par >= 0`` such that the step ``x = (J^T J + par D^2)^-1 J^T f`` satisfies
    ``| |D x| - delta | <= 0.1 delta``, or ``par = 0`` when the Gauss-Newton step already lies in
    the trust region ``|D x| <= 1.1 delta`` (at most 10 Newton iterations on the secular equation,
    with MINPACK's safeguards and bounds).

    Parameters
    ----------
    normal : ndarray, shape (n, n_label, n_label)
        ``J^T J``.
    gradient : ndarray, shape (n, n_label)
        ``J^T f``.
    diag : ndarray, shape (n, n_label)
        Variable scaling ``D``.
    delta : ndarray, shape (n,)
        Trust-region radii.
    par : ndarray, shape (n,)
        Initial estimates of the parameter (the previous iteration's).

    Returns
    -------
    par : ndarray, shape (n,)
    x : ndarray, shape (n, n_label)
        The solution of the damped system; the Levenberg-Marquardt step is ``-x``.
    """
    par = np.array(par, dtype=float)
    n_label = normal.shape[1]
    solution, singular = _solve(normal, gradient)          # the Gauss-Newton step (par = 0)
    scaled_solution = diag * solution
    scaled_size = np.linalg.norm(scaled_solution, axis=1)
    excess = scaled_size - delta                            # MINPACK's fp
    accept_gauss_newton = excess <= 0.1 * delta
    par[accept_gauss_newton] = 0.0
    search = np.flatnonzero(~accept_gauss_newton)
    if search.size == 0:
        return par, solution
    normal_s, gradient_s, diag_s, delta_s = normal[search], gradient[search], diag[search], delta[search]
    excess_s = excess[search]
    # Lower bound of par from the Newton step of the secular equation at par = 0 (full rank only),
    # upper bound from the scaled gradient.
    lower = np.zeros(search.size)
    full_rank = ~singular[search]
    if np.any(full_rank):
        direction = diag_s * (scaled_solution[search] / scaled_size[search][:, None])
        lower[full_rank] = ((excess_s / delta_s)[full_rank]
                            / _quadratic_form_inverse(normal_s[full_rank], direction[full_rank]))
    scaled_gradient_norm = np.linalg.norm(gradient_s / diag_s, axis=1)
    upper = scaled_gradient_norm / delta_s
    upper = np.where(upper == 0.0, _TINY / np.minimum(delta_s, 0.1), upper)
    par_s = np.minimum(np.maximum(par[search], lower), upper)
    par_s = np.where(par_s == 0.0, scaled_gradient_norm / scaled_size[search], par_s)
    solution_s = solution[search].copy()
    running = np.arange(search.size)       # positions in ``search`` still iterating
    identity = np.eye(n_label)
    for iteration in range(1, _LMPAR_MAX_ITERATIONS + 1):
        par_r = par_s[running]
        par_r = np.where(par_r == 0.0, np.maximum(_TINY, 0.001 * upper[running]), par_r)
        par_s[running] = par_r
        damped = normal_s[running] + par_r[:, None, None] * identity[None] * (diag_s[running] ** 2)[:, :, None]
        damped_solution, _ = _solve(damped, gradient_s[running])
        solution_s[running] = damped_solution
        scaled = diag_s[running] * damped_solution
        size = np.linalg.norm(scaled, axis=1)
        previous_excess = excess_s[running]
        new_excess = size - delta_s[running]
        excess_s[running] = new_excess
        done = ((np.abs(new_excess) <= 0.1 * delta_s[running])
                | ((lower[running] == 0.0) & (new_excess <= previous_excess) & (previous_excess < 0.0))
                | (iteration == _LMPAR_MAX_ITERATIONS))
        if np.all(done):
            break
        keep = ~done
        running, damped, scaled, size, new_excess, par_r = (running[keep], damped[keep], scaled[keep], size[keep],
                                                            new_excess[keep], par_r[keep])
        # Newton correction of par on the secular equation |D x(par)| = delta.
        direction = diag_s[running] * (scaled / size[:, None])
        correction = (new_excess / delta_s[running]) / _quadratic_form_inverse(damped, direction)
        lower[running] = np.where(new_excess > 0, np.maximum(lower[running], par_r), lower[running])
        upper[running] = np.where(new_excess < 0, np.minimum(upper[running], par_r), upper[running])
        par_s[running] = np.maximum(lower[running], par_r + correction)
    par[search] = par_s
    solution[search] = solution_s
    return par, solution


def levenberg_marquardt_batch(
    flux: np.ndarray,
    weights: np.ndarray,
    start_std: np.ndarray,
    expansion: KernelExpansion | PixelModel,
    flux_scaler: Standardizer | None = None,
    *,
    prior_std: tuple[np.ndarray, np.ndarray] | None = None,
    max_evaluations: int | None = None,
    ftol: float = 1e-8,
    xtol: float = 1e-8,
    gtol: float = 1e-8,
    batch_size: int = 256,
) -> BatchFit:
    """Fit the labels of many spectra, each exactly as ``least_squares(method="lm")`` would.

    Parameters
    ----------
    flux, weights : ndarray, shape (n_spec, n_pix)
        Normalized flux (any finite value where the weight is 0) and likelihood weights.
    start_std : ndarray, shape (n_spec, n_label)
        Starting labels (standardized).
    expansion : KernelExpansion or PixelModel
        The trained model; a :class:`PixelModel` built once can be passed to save rebuilding it.
    flux_scaler : Standardizer
        The training standardization of the flux (not needed with a :class:`PixelModel`).
    prior_std : (mean, sigma), optional
        Gaussian prior in standardized units (``sigma = inf`` leaves a label free).
    max_evaluations : int, optional
        Function evaluations per spectrum before giving up (default ``100 n_label``, scipy's for
        ``method="lm"`` with an analytic Jacobian).
    ftol, xtol, gtol : float
        MINPACK's tolerances (scipy's defaults): relative reduction of the cost, relative size of
        the trust region, and cosine between the residual vector and the Jacobian's columns.
    batch_size : int
        Spectra in flight at once (rows of the kernel matrix products).

    Returns
    -------
    BatchFit
    """
    model = expansion if isinstance(expansion, PixelModel) else PixelModel(expansion, flux_scaler)
    n_spec, n_label = np.shape(start_std)
    max_evaluations = 100 * n_label if max_evaluations is None else int(max_evaluations)
    observed = np.ascontiguousarray(np.asarray(flux, dtype=float)[:, model.order])
    weight = np.ascontiguousarray(np.asarray(weights, dtype=float)[:, model.order])
    good_count = np.maximum(np.count_nonzero(weight, axis=1), 1)
    if prior_std is not None:
        prior_mean = np.asarray(prior_std[0], dtype=float)
        prior_inverse_sigma = 1.0 / np.asarray(prior_std[1], dtype=float)
        prior_precision = np.diag(prior_inverse_sigma**2)

    # Per-spectrum state of lmder.
    labels = np.array(start_std, dtype=float)
    fnorm = np.zeros(n_spec)          # |f| with prior rows
    chi2 = np.zeros(n_spec)
    rms = np.zeros(n_spec)
    normal = np.zeros((n_spec, n_label, n_label))  # J^T J at ``labels``
    gradient = np.zeros((n_spec, n_label))         # J^T f at ``labels``
    diag = np.zeros((n_spec, n_label))
    delta = np.zeros(n_spec)
    par = np.zeros(n_spec)
    xnorm = np.zeros(n_spec)
    outer_iteration = np.ones(n_spec, dtype=int)
    evaluations = np.zeros(n_spec, dtype=int)
    jacobians = np.zeros(n_spec, dtype=int)
    status = np.full(n_spec, STATUS_RUNNING)

    def residual_norms(rows, model_flux, at_labels):
        residual = model_flux - observed[rows]
        weighted_squares = weight[rows] * residual**2
        pixel_chi2 = weighted_squares.sum(axis=1)
        total = pixel_chi2
        if prior_std is not None:
            total = total + np.sum(((at_labels - prior_mean) * prior_inverse_sigma) ** 2, axis=1)
        pixel_rms = np.sqrt(np.sum(np.where(weight[rows] > 0, residual, 0.0) ** 2, axis=1) / good_count[rows])
        return np.sqrt(total), pixel_chi2, pixel_rms, residual

    def take_jacobian(rows, at_labels, kernels, residual):
        """J^T J and J^T f at the (accepted) labels of ``rows``."""
        jacobian = model.jacobian(at_labels, kernels)                      # (n_label, m, n_pix)
        weighted = jacobian * weight[rows][None]
        normal[rows] = np.matmul(weighted.transpose(1, 0, 2), jacobian.transpose(1, 2, 0))
        gradient[rows] = np.einsum("kmp,mp->mk", weighted, residual)
        if prior_std is not None:
            normal[rows] += prior_precision
            gradient[rows] += (at_labels - prior_mean) * prior_inverse_sigma**2
        jacobians[rows] += 1

    def start_outer_iteration(rows):
        """lmder's outer loop after a new Jacobian: scaling, first trust region, gtol test; rows still running."""
        column_norm = np.sqrt(np.maximum(np.diagonal(normal[rows], axis1=1, axis2=2), 0.0))
        first = outer_iteration[rows] == 1
        if np.any(first):
            first_rows = rows[first]
            diag[first_rows] = np.where(column_norm[first] == 0.0, 1.0, column_norm[first])
            xnorm[first_rows] = np.linalg.norm(diag[first_rows] * labels[first_rows], axis=1)
            delta[first_rows] = np.where(xnorm[first_rows] == 0.0, _STEP_BOUND_FACTOR,
                                         _STEP_BOUND_FACTOR * xnorm[first_rows])
        # gtol: largest cosine between the residual vector and a column of the Jacobian.
        with np.errstate(divide="ignore", invalid="ignore"):
            cosine = np.abs(gradient[rows]) / (fnorm[rows][:, None] * column_norm)
        cosine = np.where((column_norm > 0) & (fnorm[rows][:, None] != 0), cosine, 0.0)
        stopped = cosine.max(axis=1) <= gtol
        status[rows[stopped]] = STATUS_GTOL
        diag[rows] = np.maximum(diag[rows], column_norm)
        return rows[~stopped]

    queue = deque(range(n_spec))
    in_flight = np.zeros(0, dtype=int)
    while queue or in_flight.size:
        if queue and in_flight.size < batch_size:
            new = np.array([queue.popleft() for _ in range(min(batch_size - in_flight.size, len(queue)))])
            start_flux, start_kernels = model.flux(labels[new])
            evaluations[new] = 1
            fnorm[new], chi2[new], rms[new], residual = residual_norms(new, start_flux, labels[new])
            take_jacobian(new, labels[new], start_kernels, residual)
            running = start_outer_iteration(new)
            in_flight = np.concatenate([in_flight, running])
            if in_flight.size == 0:
                continue
        rows = in_flight
        par[rows], damped_solution = levenberg_marquardt_parameter(normal[rows], gradient[rows], diag[rows],
                                                                   delta[rows], par[rows])
        step = -damped_solution
        trial = labels[rows] + step
        pnorm = np.linalg.norm(diag[rows] * step, axis=1)
        first = outer_iteration[rows] == 1
        delta[rows[first]] = np.minimum(delta[rows[first]], pnorm[first])
        trial_flux, trial_kernels = model.flux(trial)
        evaluations[rows] += 1
        trial_fnorm, trial_chi2, trial_rms, trial_residual = residual_norms(rows, trial_flux, trial)
        current_fnorm = fnorm[rows]
        actual = np.where(0.1 * trial_fnorm < current_fnorm, 1.0 - (trial_fnorm / current_fnorm) ** 2, -1.0)
        # Predicted reduction of the linearized model and the directional derivative, scaled by |f|^2.
        linear_term = np.einsum("mk,mkl,ml->m", step, normal[rows], step) / current_fnorm**2   # |J p|^2
        damping_term = par[rows] * pnorm**2 / current_fnorm**2                                # par |D p|^2
        predicted = linear_term + 2.0 * damping_term
        directional = -(linear_term + damping_term)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(predicted != 0.0, actual / predicted, 0.0)
            shrink = np.where(actual >= 0, 0.5, 0.5 * directional / (directional + 0.5 * actual))
        shrink = np.where((0.1 * trial_fnorm >= current_fnorm) | (shrink < 0.1), 0.1, shrink)
        poor = ratio <= 0.25
        good = ~poor & ((par[rows] == 0.0) | (ratio >= 0.75))
        delta[rows] = np.where(poor, shrink * np.minimum(delta[rows], pnorm / 0.1),
                               np.where(good, pnorm / 0.5, delta[rows]))
        par[rows] = np.where(poor, par[rows] / shrink, np.where(good, 0.5 * par[rows], par[rows]))
        accepted = ratio >= _MIN_RATIO
        accepted_rows = rows[accepted]
        labels[accepted_rows] = trial[accepted]
        xnorm[accepted_rows] = np.linalg.norm(diag[accepted_rows] * trial[accepted], axis=1)
        fnorm[accepted_rows], chi2[accepted_rows], rms[accepted_rows] = (
            trial_fnorm[accepted], trial_chi2[accepted], trial_rms[accepted])
        outer_iteration[accepted_rows] += 1
        # Convergence tests, in lmder's order.
        small_reduction = (np.abs(actual) <= ftol) & (predicted <= ftol) & (0.5 * ratio <= 1.0)
        small_region = delta[rows] <= xtol * xnorm[rows]
        new_status = np.full(rows.size, STATUS_RUNNING)
        new_status[small_reduction] = STATUS_FTOL
        new_status[small_region] = STATUS_XTOL
        new_status[small_reduction & small_region] = STATUS_FTOL_AND_XTOL
        new_status[(new_status == STATUS_RUNNING) & (evaluations[rows] >= max_evaluations)] = STATUS_MAX_EVALUATIONS
        status[rows] = new_status
        # A new Jacobian after every accepted step (also for spectra that just stopped: the covariance needs it).
        if accepted_rows.size:
            accepted_kernels = trial_kernels if accepted.all() else model.select_spectra(trial_kernels, accepted)
            take_jacobian(accepted_rows, trial[accepted], accepted_kernels, trial_residual[accepted])
            start_outer_iteration(accepted_rows[new_status[accepted] == STATUS_RUNNING])
        in_flight = rows[status[rows] == STATUS_RUNNING]
    converged = status > STATUS_MAX_EVALUATIONS
    reason = ["" if stopped_on_tolerance else MAX_EVALUATIONS_REASON for stopped_on_tolerance in converged]
    cov_std = np.full((n_spec, n_label, n_label), np.nan)
    try:
        cov_std[:] = np.linalg.inv(normal)
    except np.linalg.LinAlgError:
        for row in range(n_spec):
            try:
                cov_std[row] = np.linalg.inv(normal[row])
            except np.linalg.LinAlgError:
                cov_std[row] = np.nan
                converged[row] = False
                reason[row] = SINGULAR_REASON
    return BatchFit(labels, cov_std, converged, status, chi2, rms, evaluations, jacobians, reason)
