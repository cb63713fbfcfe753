"""A small quadratic Cannon (Ness et al. 2015, ApJ 808, 16): the baseline of paper Sections 3.2 and 4.3.

The model: at every pixel ``j`` the normalized flux of star ``n`` is quadratic in its
(pivoted and scaled) labels ``x_n``,

    f_nj = theta_j . a(x_n) + noise,    a(x) = [1, x_l, x_l x_m (l <= m)],

with noise variance ``sigma_nj**2 + s_j**2``: the observed variance plus an intrinsic
scatter ``s_j`` of the pixel.

Training step (:func:`fit_pixel_models`): for each pixel, ``theta_j`` and ``s_j`` maximize
the likelihood of the training spectra. For a fixed ``s_j`` the best ``theta_j`` is a
weighted least-squares solution, so ``s_j`` is found by maximizing the profile
likelihood: a grid in ``log s_j`` refined by golden-section search, together with
``s_j = 0``, all pixels at once (batched normal equations).

Test step (:func:`fit_spectrum_labels`): for each spectrum, the labels minimize
``chi2 = sum_j (f_j - theta_j . a(x))**2 / (sigma_j**2 + s_j**2)`` by non-linear least
squares (:func:`scipy.optimize.least_squares` with the analytic Jacobian), starting
from the better of the training-set mean and a linear-algebra estimate.

Bad pixels (``ivar == 0``) carry no weight in either step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import least_squares
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from slamlib.svr.folds import fold_assignment, kfold_indices

__all__ = [
    "CannonModel",
    "CannonPrediction",
    "CannonCrossValidation",
    "cross_validate",
    "fit_pixel_models",
    "fit_spectrum_labels",
    "SpectrumLabelFit",
    "quadratic_design_matrix",
    "quadratic_design_jacobian",
    "quadratic_term_names",
    "n_terms",
]

#: Number of log-spaced trial scatters per pixel before the golden-section refinement.
_SCATTER_GRID_SIZE = 16
#: The trial scatters span this many decades below the pixel's flux standard deviation.
_SCATTER_GRID_DECADES = 6.0
_GOLDEN_SECTION_STEPS = 20
#: Start values of the test step are clipped to this many training-set standard deviations.
_INITIAL_GUESS_LIMIT = 5.0


# --------------------------------------------------------------------------------------
# The quadratic design vector
# --------------------------------------------------------------------------------------


def _pair_indices(n_label: int) -> tuple[np.ndarray, np.ndarray]:
    """Label index pairs (l, m), l <= m, of the quadratic terms, in design order."""
    return np.triu_indices(n_label)


def n_terms(n_label: int) -> int:
    """Number of coefficients per pixel: 1 + n_label + n_label (n_label + 1) / 2."""
    return 1 + n_label + n_label * (n_label + 1) // 2


def _n_label_of(n_terms_: int) -> int:
    """Invert ``n_terms = (n_label + 1)(n_label + 2) / 2``."""
    return int(round((np.sqrt(8 * n_terms_ + 1) - 3) / 2))


def quadratic_term_names(label_names: Sequence[str]) -> list[str]:
    """Names of the design-vector terms, e.g. ``['1', 'teff', 'logg', 'teff^2', 'teff*logg', 'logg^2']``.

    Parameters
    ----------
    label_names : sequence of str, length n_label

    Returns
    -------
    list of str, length n_terms
    """
    names = list(label_names)
    first, second = _pair_indices(len(names))
    quadratic = [
        f"{names[l]}^2" if l == m else f"{names[l]}*{names[m]}" for l, m in zip(first, second)
    ]
    return ["1", *names, *quadratic]


def quadratic_design_matrix(scaled_labels: np.ndarray) -> np.ndarray:
    """The design vectors ``a(x) = [1, x_l, x_l x_m (l <= m)]`` of several stars.

    Parameters
    ----------
    scaled_labels : ndarray, shape (n_star, n_label)
        Pivoted and scaled labels ``x``.

    Returns
    -------
    ndarray, shape (n_star, n_terms)
    """
    labels = np.asarray(scaled_labels, dtype=float)
    first, second = _pair_indices(labels.shape[1])
    return np.hstack([np.ones((labels.shape[0], 1)), labels, labels[:, first] * labels[:, second]])


def quadratic_design_jacobian(scaled_labels: np.ndarray) -> np.ndarray:
    """Derivatives ``d a(x) / d x`` of the design vector of one star.

    Parameters
    ----------
    scaled_labels : ndarray, shape (n_label,)

    Returns
    -------
    ndarray, shape (n_terms, n_label)
        Row ``t``, column ``k``: the derivative of term ``t`` with respect to ``x_k``.
    """
    labels = np.asarray(scaled_labels, dtype=float)
    n_label = labels.size
    first, second = _pair_indices(n_label)
    identity = np.eye(n_label)
    quadratic = identity[first] * labels[second, None] + identity[second] * labels[first, None]
    return np.vstack([np.zeros((1, n_label)), identity, quadratic])


# --------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------


def _prepare_spectra(flux, ivar, *, n_pix: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated copies of the spectra: flux (0 at bad pixels), variance (1 at bad pixels), good mask.

    Raises
    ------
    ValueError
        On shapes other than (n_spec, n_pix), negative or non-finite ivar, or non-finite
        flux where ``ivar > 0``.
    """
    flux_values = np.array(flux, dtype=float)
    ivar_values = np.asarray(ivar, dtype=float)
    if flux_values.ndim != 2 or flux_values.shape != ivar_values.shape:
        raise ValueError(
            f"flux and ivar must both have shape (n_spec, n_pix), got {flux_values.shape} and "
            f"{ivar_values.shape}; pass a single spectrum as flux[None, :]."
        )
    if n_pix is not None and flux_values.shape[1] != n_pix:
        raise ValueError(f"the model has {n_pix} pixels but the spectra have {flux_values.shape[1]}.")
    if not np.all(np.isfinite(ivar_values)) or np.any(ivar_values < 0):
        raise ValueError("ivar must be finite and >= 0; mark bad pixels with ivar = 0.")
    good = ivar_values > 0
    if not np.all(np.isfinite(flux_values[good])):
        raise ValueError("flux is not finite at some pixels with ivar > 0; set ivar = 0 there.")
    flux_values[~good] = 0.0
    variance = np.ones_like(ivar_values)
    variance[good] = 1.0 / ivar_values[good]
    return flux_values, variance, good


def _prepare_labels(labels, n_star: int) -> np.ndarray:
    """Validated float copy of the training labels, shape (n_star, n_label)."""
    values = np.array(labels, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] != n_star:
        raise ValueError(f"labels must have shape ({n_star}, n_label), got {np.shape(labels)}.")
    if not np.all(np.isfinite(values)):
        raise ValueError("labels contain non-finite values; remove those stars from the training set.")
    if np.any(np.std(values, axis=0) == 0):
        raise ValueError("a label is constant over the training set; drop it from the labels.")
    needed = n_terms(values.shape[1]) + 1
    if n_star < needed:
        raise ValueError(
            f"{n_star} training stars are too few for a quadratic model in {values.shape[1]} labels; "
            f"give at least {needed}."
        )
    return values


def _prepare_label_names(label_names: Sequence[str] | None, n_label: int) -> list[str]:
    if label_names is None:
        return [f"label{index}" for index in range(n_label)]
    names = [str(name) for name in label_names]
    if len(names) != n_label or len(set(names)) != n_label:
        raise ValueError(f"label_names must be {n_label} unique names, got {names}.")
    return names


# --------------------------------------------------------------------------------------
# Training step: per-pixel coefficients and intrinsic scatter
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TrainingSet:
    """Arrays shared by every likelihood evaluation of the training step."""

    design: np.ndarray  # (n_star, n_terms)
    design_pairs: np.ndarray  # (n_star, n_pairs): products a_t a_u, t <= u
    flux: np.ndarray  # (n_star, n_pix), 0 at bad pixels
    variance: np.ndarray  # (n_star, n_pix), 1 at bad pixels
    good_weight: np.ndarray  # (n_star, n_pix) float: 1 at good pixels of usable pixels, else 0
    usable_pixel: np.ndarray  # (n_pix,) bool: enough good stars to fit the pixel

    @classmethod
    def build(cls, design, flux, variance, good) -> "_TrainingSet":
        first, second = np.triu_indices(design.shape[1])
        good_star_count = good.sum(axis=0)
        return cls(
            design=design,
            design_pairs=design[:, first] * design[:, second],
            flux=flux,
            variance=variance,
            good_weight=(good & (good_star_count > design.shape[1])[None, :]).astype(float),
            usable_pixel=good_star_count > design.shape[1],
        )


def _weighted_least_squares(training: _TrainingSet, weight: np.ndarray) -> np.ndarray:
    """Coefficients minimizing sum_n w_nj (f_nj - theta_j . a_n)**2 for every pixel.

    Parameters
    ----------
    weight : ndarray, shape (n_star, n_pix)

    Returns
    -------
    ndarray, shape (n_pix, n_terms)
        Zeros for pixels without weight.
    """
    n_terms_ = training.design.shape[1]
    first, second = np.triu_indices(n_terms_)
    normal = np.empty((weight.shape[1], n_terms_, n_terms_))
    normal_upper = weight.T @ training.design_pairs
    normal[:, first, second] = normal_upper
    normal[:, second, first] = normal_upper
    right_hand_side = (weight * training.flux).T @ training.design
    empty = ~training.usable_pixel
    normal[empty] = np.eye(n_terms_)
    right_hand_side[empty] = 0.0
    try:
        return np.linalg.solve(normal, right_hand_side[..., None])[..., 0]
    except np.linalg.LinAlgError:
        # A degenerate label distribution among a pixel's good stars: minimum-norm solution.
        return (np.linalg.pinv(normal, hermitian=True) @ right_hand_side[..., None])[..., 0]


def _profile_negative_log_likelihood(
    training: _TrainingSet, scatter: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Negative log-likelihood of each pixel at its best coefficients for a given scatter.

    ``0.5 * sum_n good_nj [ r_nj**2 / (sigma_nj**2 + s_j**2) + ln(sigma_nj**2 + s_j**2) ]``

    Parameters
    ----------
    scatter : ndarray, shape (n_pix,)
        Trial intrinsic scatter ``s_j`` of each pixel.

    Returns
    -------
    nll : ndarray, shape (n_pix,)
    coefficients : ndarray, shape (n_pix, n_terms)
    """
    total_variance = training.variance + scatter[None, :] ** 2
    weight = np.divide(training.good_weight, total_variance)
    coefficients = _weighted_least_squares(training, weight)
    residual = training.design @ coefficients.T
    np.subtract(training.flux, residual, out=residual)
    np.square(residual, out=residual)
    chi2 = np.einsum("np,np->p", weight, residual)
    log_variance = np.log(total_variance, out=total_variance)
    log_determinant = np.einsum("np,np->p", training.good_weight, log_variance)
    return 0.5 * (chi2 + log_determinant), coefficients


def _scatter_upper_limits(training: _TrainingSet) -> np.ndarray:
    """Twice each pixel's standard deviation of good flux: no intrinsic scatter exceeds it."""
    count = np.maximum(training.good_weight.sum(axis=0), 1)
    mean = np.sum(training.flux * training.good_weight, axis=0) / count
    variance = np.sum(training.good_weight * (training.flux - mean) ** 2, axis=0) / count
    # The floor keeps log(s) finite for a constant pixel while staying far below any flux unit.
    return 2.0 * np.sqrt(variance) + np.finfo(float).tiny ** 0.25


def _golden_section_search(
    objective, lower: np.ndarray, upper: np.ndarray, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Minimize a batch of 1-D functions, one per pixel, each on its own bracket.

    Parameters
    ----------
    objective : callable
        Maps trial points, shape (n_pix,), to values, shape (n_pix,).
    lower, upper : ndarray, shape (n_pix,)
        Brackets.
    steps : int
        Number of evaluations after the first two; the bracket shrinks by 0.618 per step.

    Returns
    -------
    point, value : ndarray, shape (n_pix,)
        The interior point with the lowest value found, and that value.
    """
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    inner_low = upper - ratio * (upper - lower)
    inner_high = lower + ratio * (upper - lower)
    value_low, value_high = objective(inner_low), objective(inner_high)
    for _ in range(steps):
        go_left = value_low < value_high
        upper = np.where(go_left, inner_high, upper)
        lower = np.where(go_left, lower, inner_low)
        new_point = np.where(go_left, upper - ratio * (upper - lower), lower + ratio * (upper - lower))
        new_value = objective(new_point)
        # Going left, the old low point becomes the high one; going right, the reverse.
        inner_low, inner_high, value_low, value_high = (
            np.where(go_left, new_point, inner_high),
            np.where(go_left, inner_low, new_point),
            np.where(go_left, new_value, value_high),
            np.where(go_left, value_low, new_value),
        )
    go_left = value_low < value_high
    return np.where(go_left, inner_low, inner_high), np.where(go_left, value_low, value_high)


def _best_scatter(training: _TrainingSet) -> np.ndarray:
    """Maximum-likelihood intrinsic scatter s_j >= 0 of every pixel.

    A grid in log s (``_SCATTER_GRID_SIZE`` points over ``_SCATTER_GRID_DECADES`` decades
    below twice the pixel's flux standard deviation), refined by golden-section search
    between the neighbours of the best grid point; ``s = 0`` wins when its likelihood
    is at least as high.
    """
    n_pix = training.flux.shape[1]
    log_upper = np.log(_scatter_upper_limits(training))
    offsets = np.linspace(-_SCATTER_GRID_DECADES * np.log(10.0), 0.0, _SCATTER_GRID_SIZE)
    log_grid = log_upper[None, :] + offsets[:, None]  # (n_grid, n_pix)
    nll_grid = np.array([_profile_negative_log_likelihood(training, np.exp(row))[0] for row in log_grid])
    best = np.argmin(nll_grid, axis=0)
    pixels = np.arange(n_pix)
    lower = log_grid[np.maximum(best - 1, 0), pixels]
    upper = log_grid[np.minimum(best + 1, _SCATTER_GRID_SIZE - 1), pixels]

    def objective(log_scatter: np.ndarray) -> np.ndarray:
        return _profile_negative_log_likelihood(training, np.exp(log_scatter))[0]

    log_refined, nll_refined = _golden_section_search(objective, lower, upper, _GOLDEN_SECTION_STEPS)
    candidates = np.vstack([np.zeros(n_pix), np.exp(log_grid[best, pixels]), np.exp(log_refined)])
    candidate_nll = np.vstack([
        _profile_negative_log_likelihood(training, np.zeros(n_pix))[0], nll_grid[best, pixels], nll_refined,
    ])
    return candidates[np.argmin(candidate_nll, axis=0), pixels]


def fit_pixel_models(
    design: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    *,
    fit_scatter: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The Cannon's training step: coefficients and intrinsic scatter of every pixel.

    Parameters
    ----------
    design : ndarray, shape (n_star, n_terms)
        Design matrix of the training labels (:func:`quadratic_design_matrix`).
    flux, ivar : ndarray, shape (n_star, n_pix)
        Training spectra; ``ivar == 0`` marks bad pixels (no weight).
    fit_scatter : bool, optional
        Fit the intrinsic scatter ``s_j`` by maximum likelihood (default, as in Ness et
        al. 2015); if False, ``s_j = 0`` and the coefficients are plain weighted least
        squares.

    Returns
    -------
    coefficients : ndarray, shape (n_pix, n_terms)
        NaN for pixels with no more good stars than coefficients.
    scatter : ndarray, shape (n_pix,)
        ``s_j``; NaN where the coefficients are NaN.
    """
    flux_values, variance, good = _prepare_spectra(flux, ivar)
    design_values = np.asarray(design, dtype=float)
    if design_values.ndim != 2 or design_values.shape[0] != flux_values.shape[0]:
        raise ValueError(
            f"design must have shape ({flux_values.shape[0]}, n_terms), got {design_values.shape}."
        )
    training = _TrainingSet.build(design_values, flux_values, variance, good)
    scatter = _best_scatter(training) if fit_scatter else np.zeros(flux_values.shape[1])
    coefficients = _profile_negative_log_likelihood(training, scatter)[1]
    coefficients[~training.usable_pixel] = np.nan
    scatter = np.where(training.usable_pixel, scatter, np.nan)
    return coefficients, scatter


# --------------------------------------------------------------------------------------
# Test step: labels of one spectrum
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpectrumLabelFit:
    """Result of the test step for one spectrum, in scaled label units.

    Attributes
    ----------
    labels : ndarray, shape (n_label,)
        Best-fit scaled labels ``x``; NaN when the spectrum could not be fitted.
    covariance : ndarray, shape (n_label, n_label)
        ``(J^T J)^-1`` of the whitened residuals at the solution.
    chi2 : float
        Chi-square at the solution.
    n_good_pixels : int
        Pixels that entered the fit.
    converged : bool
        The optimizer reported success and the labels are finite.
    """

    labels: np.ndarray
    covariance: np.ndarray
    chi2: float
    n_good_pixels: int
    converged: bool


def _failed_fit(n_label: int, n_good_pixels: int) -> SpectrumLabelFit:
    return SpectrumLabelFit(
        labels=np.full(n_label, np.nan), covariance=np.full((n_label, n_label), np.nan),
        chi2=np.nan, n_good_pixels=n_good_pixels, converged=False,
    )


def _linear_initial_guess(
    coefficients: np.ndarray, flux: np.ndarray, inverse_sigma: np.ndarray, n_label: int
) -> np.ndarray:
    """Labels from treating every non-constant term as a free linear parameter.

    Solves ``flux - theta_0 = theta_rest . b`` for ``b`` by weighted linear least
    squares and returns its first ``n_label`` entries (the linear terms), clipped to
    +-``_INITIAL_GUESS_LIMIT``. Exact for a noiseless spectrum.

    Parameters
    ----------
    coefficients : ndarray, shape (n_good, n_terms)
    flux, inverse_sigma : ndarray, shape (n_good,)
    n_label : int

    Returns
    -------
    ndarray, shape (n_label,)
    """
    system = coefficients[:, 1:] * inverse_sigma[:, None]
    target = (flux - coefficients[:, 0]) * inverse_sigma
    solution = np.linalg.lstsq(system, target, rcond=None)[0]
    return np.clip(solution[:n_label], -_INITIAL_GUESS_LIMIT, _INITIAL_GUESS_LIMIT)


def fit_spectrum_labels(
    flux: np.ndarray,
    ivar: np.ndarray,
    coefficients: np.ndarray,
    scatter: np.ndarray,
) -> SpectrumLabelFit:
    """The Cannon's test step for one spectrum, in scaled label units.

    Minimizes ``sum_j (f_j - theta_j . a(x))**2 / (sigma_j**2 + s_j**2)`` over good
    pixels (``ivar > 0`` and finite coefficients) with
    :func:`scipy.optimize.least_squares` (Levenberg-Marquardt, analytic Jacobian),
    starting from whichever of ``x = 0`` (the training mean) and the linear-algebra
    estimate has the lower chi-square.

    Parameters
    ----------
    flux, ivar : ndarray, shape (n_pix,)
        One spectrum; ``ivar == 0`` marks bad pixels.
    coefficients : ndarray, shape (n_pix, n_terms)
        Fitted ``theta_j`` (:attr:`CannonModel.coefficients_`); NaN rows are skipped.
    scatter : ndarray, shape (n_pix,)
        Fitted ``s_j`` (:attr:`CannonModel.scatter_`).

    Returns
    -------
    SpectrumLabelFit
        Scaled labels, their covariance ``(J^T J)^-1`` (not rescaled by the reduced
        chi-square), chi-square, number of good pixels and the convergence flag. With
        fewer good pixels than labels + 1 the labels are NaN and ``converged`` is False.

    Raises
    ------
    ValueError
        On shapes that do not match the coefficients, negative or non-finite ivar, or
        non-finite flux where ``ivar > 0``.
    """
    n_label = _n_label_of(coefficients.shape[1])
    if np.ndim(flux) != 1:
        raise ValueError(f"flux must be one spectrum of shape (n_pix,), got shape {np.shape(flux)}.")
    flux, _, good_pixel = _prepare_spectra(
        np.reshape(flux, (1, -1)), np.reshape(ivar, (1, -1)), n_pix=len(scatter)
    )
    flux, ivar = flux[0], np.where(good_pixel[0], np.asarray(ivar, dtype=float), 0.0)
    good = good_pixel[0] & np.all(np.isfinite(coefficients), axis=1)
    n_good = int(np.count_nonzero(good))
    if n_good <= n_label:
        return _failed_fit(n_label, n_good)
    theta, observed = coefficients[good], flux[good]
    inverse_sigma = 1.0 / np.sqrt(1.0 / ivar[good] + scatter[good] ** 2)

    def residuals(x: np.ndarray) -> np.ndarray:
        return (theta @ quadratic_design_matrix(x[None, :])[0] - observed) * inverse_sigma

    def jacobian(x: np.ndarray) -> np.ndarray:
        return (theta @ quadratic_design_jacobian(x)) * inverse_sigma[:, None]

    starts = [np.zeros(n_label)]
    if n_good >= coefficients.shape[1] - 1:
        starts.append(_linear_initial_guess(theta, observed, inverse_sigma, n_label))
    start = min(starts, key=lambda x: float(np.sum(residuals(x) ** 2)))
    result = least_squares(residuals, start, jac=jacobian, method="lm")
    return SpectrumLabelFit(
        labels=result.x,
        covariance=_covariance(result.jac),
        chi2=float(2.0 * result.cost),
        n_good_pixels=n_good,
        converged=bool(result.success and np.all(np.isfinite(result.x))),
    )


def _covariance(jacobian: np.ndarray) -> np.ndarray:
    """``(J^T J)^-1``, or NaN when J^T J is singular."""
    try:
        return np.linalg.inv(jacobian.T @ jacobian)
    except np.linalg.LinAlgError:
        return np.full((jacobian.shape[1],) * 2, np.nan)


# --------------------------------------------------------------------------------------
# The model class
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CannonPrediction:
    """Labels predicted by :meth:`CannonModel.predict`.

    Attributes
    ----------
    labels : ndarray, shape (n_spec, n_label)
        Best-fit labels in the units of the training labels; NaN where the fit failed.
    errors : ndarray, shape (n_spec, n_label)
        Formal errors: square roots of the diagonal of ``covariance``.
    covariance : ndarray, shape (n_spec, n_label, n_label)
        ``(J^T J)^-1`` of the whitened residuals, in label units (not rescaled by the
        reduced chi-square).
    reduced_chi2 : ndarray, shape (n_spec,)
        chi-square / (good pixels - n_label).
    converged : ndarray of bool, shape (n_spec,)
        The optimizer reported success; False for spectra with too few good pixels.
    """

    labels: np.ndarray
    errors: np.ndarray
    covariance: np.ndarray
    reduced_chi2: np.ndarray
    converged: np.ndarray


class CannonModel:
    """The quadratic Cannon (Ness et al. 2015).

    Parameters
    ----------
    fit_scatter : bool, optional
        Fit each pixel's intrinsic scatter ``s_j`` (default True, as in Ness et al.
        2015); False fixes ``s_j = 0``.

    Attributes
    ----------
    label_names_ : list of str
    labels_mean_, labels_std_ : ndarray, shape (n_label,)
        The pivot and scale of the labels: ``x = (labels - labels_mean_) / labels_std_``,
        with the training-set mean and population standard deviation (``ddof=0``).
    coefficients_ : ndarray, shape (n_pix, n_terms)
        ``theta_j`` for the design vector ``[1, x_l, x_l x_m (l <= m)]``, term order as
        :attr:`term_names_`; NaN rows for pixels with too few good training stars.
    scatter_ : ndarray, shape (n_pix,)
        Intrinsic scatter ``s_j`` in flux units.
    term_names_ : list of str
        Names of the design-vector terms.

    Examples
    --------
    >>> model = CannonModel().fit(flux, ivar, labels, label_names=["teff", "logg", "feh"])  # doctest: +SKIP
    >>> prediction = model.predict(test_flux, test_ivar)  # doctest: +SKIP
    """

    def __init__(self, *, fit_scatter: bool = True) -> None:
        self.fit_scatter = bool(fit_scatter)

    def fit(
        self,
        flux: np.ndarray,
        ivar: np.ndarray,
        labels: np.ndarray,
        *,
        label_names: Sequence[str] | None = None,
    ) -> "CannonModel":
        """Train the model (the Cannon's training step).

        Parameters
        ----------
        flux, ivar : ndarray, shape (n_star, n_pix)
            Normalized training spectra and their inverse variances (0 = bad pixel).
        labels : ndarray, shape (n_star, n_label)
            Training labels; finite, none constant.
        label_names : sequence of str, optional
            Default ``label0, label1, ...``.

        Returns
        -------
        CannonModel
            ``self``, fitted.

        Raises
        ------
        ValueError
            On inconsistent shapes, negative or non-finite ivar, non-finite flux at
            good pixels or non-finite labels, a constant label, or too few stars.
        """
        n_star = _prepare_spectra(flux, ivar)[0].shape[0]
        label_values = _prepare_labels(labels, n_star)
        self.label_names_ = _prepare_label_names(label_names, label_values.shape[1])
        self.labels_mean_ = label_values.mean(axis=0)
        self.labels_std_ = label_values.std(axis=0)
        design = quadratic_design_matrix(self._scale(label_values))
        self.coefficients_, self.scatter_ = fit_pixel_models(design, flux, ivar, fit_scatter=self.fit_scatter)
        self.term_names_ = quadratic_term_names(self.label_names_)
        return self

    @property
    def n_label(self) -> int:
        """Number of labels."""
        return len(self._fitted_attribute("label_names_"))

    @property
    def n_pix(self) -> int:
        """Number of pixels."""
        return self._fitted_attribute("coefficients_").shape[0]

    def _fitted_attribute(self, name: str):
        if not hasattr(self, name):
            raise RuntimeError("this CannonModel is not fitted yet; call fit() first.")
        return getattr(self, name)

    def _scale(self, labels: np.ndarray) -> np.ndarray:
        return (labels - self.labels_mean_) / self.labels_std_

    def predict_spectrum(self, labels: np.ndarray) -> np.ndarray:
        """Model flux at given labels.

        Parameters
        ----------
        labels : ndarray, shape (n_spec, n_label) or (n_label,)

        Returns
        -------
        ndarray, shape (n_spec, n_pix) or (n_pix,)
            NaN at pixels the model could not fit.
        """
        coefficients = self._fitted_attribute("coefficients_")
        values = np.asarray(labels, dtype=float)
        single = values.ndim == 1
        values = np.atleast_2d(values)
        if values.ndim != 2 or values.shape[1] != self.n_label:
            raise ValueError(
                f"labels must have shape (n_spec, {self.n_label}) or ({self.n_label},), got {np.shape(labels)}."
            )
        flux = quadratic_design_matrix(self._scale(values)) @ coefficients.T
        return flux[0] if single else flux

    def predict(self, flux: np.ndarray, ivar: np.ndarray) -> CannonPrediction:
        """Labels of spectra (the Cannon's test step), one least-squares fit per spectrum.

        Parameters
        ----------
        flux, ivar : ndarray, shape (n_spec, n_pix)
            Normalized spectra and inverse variances (0 = bad pixel).

        Returns
        -------
        CannonPrediction
            A spectrum with too few good pixels gets NaN labels and ``converged = False``.
        """
        flux_values, _, good = _prepare_spectra(flux, ivar, n_pix=self.n_pix)
        ivar_values = np.where(good, np.asarray(ivar, dtype=float), 0.0)
        # The per-spectrum products are small: BLAS threads only add overhead (20x on a busy machine).
        with threadpool_limits(limits=1, user_api="blas"):
            fits = [
                fit_spectrum_labels(flux_values[index], ivar_values[index], self.coefficients_, self.scatter_)
                for index in range(flux_values.shape[0])
            ]
        return self._collect(fits)

    def _collect(self, fits: list[SpectrumLabelFit]) -> CannonPrediction:
        """Stack per-spectrum fits and convert them to label units."""
        n_label = self.n_label
        scaled = np.array([fit.labels for fit in fits]).reshape(-1, n_label)
        covariance = np.array([fit.covariance for fit in fits]).reshape(-1, n_label, n_label)
        covariance = covariance * np.outer(self.labels_std_, self.labels_std_)
        degrees_of_freedom = np.array([fit.n_good_pixels - n_label for fit in fits], dtype=float)
        chi2 = np.array([fit.chi2 for fit in fits], dtype=float)
        with np.errstate(invalid="ignore"):
            errors = np.sqrt(np.diagonal(covariance, axis1=1, axis2=2))
        return CannonPrediction(
            labels=scaled * self.labels_std_ + self.labels_mean_,
            errors=errors,
            covariance=covariance,
            reduced_chi2=np.where(degrees_of_freedom > 0, chi2 / np.maximum(degrees_of_freedom, 1), np.nan),
            converged=np.array([fit.converged for fit in fits], dtype=bool),
        )


# --------------------------------------------------------------------------------------
# Cross-validation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CannonCrossValidation:
    """Result of :func:`cross_validate`.

    Attributes
    ----------
    labels_predicted : ndarray, shape (n_star, n_label)
        Labels of each star predicted by the model trained without its fold.
    errors : ndarray, shape (n_star, n_label)
        Their formal errors.
    converged : ndarray of bool, shape (n_star,)
    cv_mse : ndarray, shape (n_pix,)
        CV mean squared error of the model flux, ``mean((f_model - f_obs)**2)`` over the
        held-out stars with ``ivar > 0`` at the pixel, ``f_model`` evaluated at their
        reference labels (flux units; NaN where no held-out star has a good pixel, or
        where a fold's model had too few good training stars to fit the pixel).
    cv_md : ndarray, shape (n_pix,)
        CV mean deviation ``mean(f_model - f_obs)`` over the same stars.
    fold : ndarray of int, shape (n_star,)
        The fold each star was held out in.
    """

    labels_predicted: np.ndarray
    errors: np.ndarray
    converged: np.ndarray
    cv_mse: np.ndarray
    cv_md: np.ndarray
    fold: np.ndarray


def cross_validate(
    flux: np.ndarray,
    ivar: np.ndarray,
    labels: np.ndarray,
    *,
    cv: int = 5,
    random_state: int = 0,
    fit_scatter: bool = True,
) -> CannonCrossValidation:
    """k-fold cross-validation of the quadratic Cannon: labels and per-pixel CV MSE / MD.

    The folds are :func:`slamlib.svr.folds.kfold_indices` with the same seed as SLAM's,
    so the Cannon and SLAM are compared on the same held-out stars. The per-pixel
    statistics pool all held-out stars (each star counted once) and use only good
    pixels (``ivar > 0``), the same pixels the fit weights.

    Parameters
    ----------
    flux, ivar : ndarray, shape (n_star, n_pix)
        Training spectra.
    labels : ndarray, shape (n_star, n_label)
        Reference labels.
    cv : int, optional
        Number of folds (default 5).
    random_state : int, optional
        Seed of the fold shuffle.
    fit_scatter : bool, optional
        Passed to :class:`CannonModel`.

    Returns
    -------
    CannonCrossValidation
    """
    flux_array, ivar_array = np.asarray(flux, dtype=float), np.asarray(ivar, dtype=float)
    flux_values, _, good = _prepare_spectra(flux_array, ivar_array)
    label_values = _prepare_labels(labels, flux_values.shape[0])
    n_star, n_pix = flux_values.shape
    folds = kfold_indices(n_star, cv, random_state)
    labels_predicted = np.full_like(label_values, np.nan)
    errors = np.full_like(label_values, np.nan)
    converged = np.zeros(n_star, dtype=bool)
    deviation_sum, squared_sum, count = np.zeros(n_pix), np.zeros(n_pix), np.zeros(n_pix)
    for train, test in folds:
        model = CannonModel(fit_scatter=fit_scatter)
        model.fit(flux_array[train], ivar_array[train], label_values[train])
        prediction = model.predict(flux_array[test], ivar_array[test])
        labels_predicted[test], errors[test] = prediction.labels, prediction.errors
        converged[test] = prediction.converged
        deviation = np.where(good[test], model.predict_spectrum(label_values[test]) - flux_values[test], 0.0)
        deviation_sum += deviation.sum(axis=0)
        squared_sum += (deviation**2).sum(axis=0)
        count += good[test].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv_mse = np.where(count > 0, squared_sum / count, np.nan)
        cv_md = np.where(count > 0, deviation_sum / count, np.nan)
    return CannonCrossValidation(
        labels_predicted=labels_predicted, errors=errors, converged=converged,
        cv_mse=cv_mse, cv_md=cv_md, fold=fold_assignment(folds, n_star),
    )
