"""Compiled per-problem loops of the batched SVR solver (numba).

The batched solver (:mod:`slamlib.svr.batched_solver`) does its products with the kernel
as matrix-matrix products over the batch (BLAS), but three of its steps are loops over
stars whose length differs from problem to problem, which numpy can only express with
padding, masks and many passes over ``(n_problem, n_star)`` temporaries:

* :func:`line_search` -- the exact line search on the smoothed primal (a monotone,
  piecewise-linear derivative evaluated a few times per problem);
* :func:`bordered_solve_small` -- one small bordered system per problem,
  ``[K_QQ + ridge I, 1; 1^T, 0] [x; b] = [rhs; last]`` on the problem's own stars Q,
  by Cholesky factorization and block elimination;
* :func:`zone_indices` -- the star indices of each problem's smoothing zone, padded, and
  the products with the low-rank factor restricted to those few stars
  (:func:`zone_rows_dot`, :func:`add_zone_rows`), which would otherwise be full
  ``(n_problem, n_star) x (n_star, rank)`` products.

Each is compiled once (``cache=True`` keeps the machine code in ``__pycache__``) and
releases the GIL, so the training threads run them in parallel. They compute the same
quantities as the numpy formulation they replace, in a fixed order, so results are
reproducible bit for bit on one machine.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "newton_system", "step_terms", "line_search", "take_step", "bordered_solve_small", "zone_indices", "zone_rows_dot",
    "add_zone_rows", "scatter_zone",
]


#: Where a residual lies: inside the epsilon tube, in the smoothing zone, or beyond it.
_TUBE, _ZONE, _BEYOND = 0, 1, 2


@njit(cache=True, nogil=True, inline="always")
def _classify(residual, epsilon, mu):
    """(where, phi): the residual's place (_TUBE, _ZONE, _BEYOND) and the smoothed loss
    derivative phi_mu(residual) = sign(r) min(max(|r| - epsilon, 0) / mu, 1)."""
    excess = abs(residual) - epsilon
    if excess <= 0.0:
        return _TUBE, 0.0
    sign = 1.0 if residual > 0.0 else -1.0
    if excess < mu:
        return _ZONE, sign * (excess / mu)
    return _BEYOND, sign


@njit(cache=True, nogil=True)
def newton_system(Y, mask, Kbeta, intercept, active, mu, C, epsilon):
    """The fixed part and the zone of a Newton step, for the active problems.

    With residuals r = y - K~beta - b, the smoothed optimality conditions put every star
    outside the smoothing zone at beta = C phi_mu(r) (0 or +-C) and leave the zone stars
    (epsilon < |r| < epsilon + mu) free.

    Parameters
    ----------
    Y, Kbeta : ndarray (n_problem, n_star)
        Targets and the current K~ beta of every problem.
    mask : ndarray of bool (n_problem, n_star)
    intercept : ndarray (n_problem,)
    active : ndarray of int (n_active,)
        Rows of the problems that take this step.
    mu : ndarray (n_active,)
        Smoothing width of each active problem.
    C, epsilon : float

    Returns
    -------
    fixed : ndarray (n_active, n_star)
        C phi_mu(r) outside the zone, 0 inside it and for excluded stars.
    index, count : ndarray of int (n_active, width), (n_active,)
        The zone's stars, left-aligned and zero-padded.
    rhs : ndarray (n_active, width)
        y - epsilon sign(r) on the zone's stars.
    fixed_sum : ndarray (n_active,)
    """
    n_active = active.shape[0]
    n_star = Y.shape[1]
    count = np.zeros(n_active, dtype=np.intp)
    for a in range(n_active):
        p = active[a]
        for i in range(n_star):
            if mask[p, i] and _classify(Y[p, i] - Kbeta[p, i] - intercept[p], epsilon, mu[a])[0] == _ZONE:
                count[a] += 1
    width = count.max() if n_active else 0
    fixed = np.zeros((n_active, n_star))
    index = np.zeros((n_active, width), dtype=np.intp)
    rhs = np.zeros((n_active, width))
    fixed_sum = np.zeros(n_active)
    for a in range(n_active):
        p = active[a]
        position = 0
        total = 0.0
        for i in range(n_star):
            if not mask[p, i]:
                continue
            where, phi = _classify(Y[p, i] - Kbeta[p, i] - intercept[p], epsilon, mu[a])
            if where == _ZONE:
                index[a, position] = i
                rhs[a, position] = Y[p, i] - epsilon * (1.0 if phi > 0.0 else -1.0)
                position += 1
            elif where == _BEYOND:
                fixed[a, i] = C * phi
                total += C * phi
        fixed_sum[a] = total
    return fixed, index, count, rhs, fixed_sum


@njit(cache=True, nogil=True)
def step_terms(Y, mask, Kbeta, intercept, beta, active, step, Kstep, intercept_new, mu, C, epsilon):
    """Turn the Newton point into a direction and the line-search coefficients that need all stars.

    On entry ``step`` (n_active, n_star) holds the Newton point beta+, ``Kstep`` the product
    K~ (beta+ - beta); on return ``step`` holds the direction d = beta+ - beta (in place).

    Returns
    -------
    intercept_step : ndarray (n_active,)
        db = b+ - b.
    q0, slope0 : ndarray (n_active,)
        d^T K~ beta and P'(0) = q0 - sum_i C phi_mu(r_i) u_i with u = K~ d + db.
    """
    n_active = active.shape[0]
    n_star = Y.shape[1]
    intercept_step = np.empty(n_active)
    q0 = np.zeros(n_active)
    slope0 = np.zeros(n_active)
    for a in range(n_active):
        p = active[a]
        db = intercept_new[a] - intercept[p]
        intercept_step[a] = db
        value_q0 = 0.0
        value_target = 0.0
        for i in range(n_star):
            step[a, i] -= beta[p, i]
            value_q0 += step[a, i] * Kbeta[p, i]
            if not mask[p, i]:
                continue
            _, phi = _classify(Y[p, i] - Kbeta[p, i] - intercept[p], epsilon, mu[a])
            value_target += C * phi * (Kstep[a, i] + db)
        q0[a] = value_q0
        slope0[a] = value_q0 - value_target
    return intercept_step, q0, slope0


@njit(cache=True, nogil=True)
def take_step(beta, intercept, w, Kbeta, active, t, step, intercept_step, w_step, Kstep):
    """beta, b, w = beta Z and K~ beta of the active problems move by t times the direction (in place)."""
    for a in range(active.shape[0]):
        p = active[a]
        size = t[a]
        if size == 0.0:
            continue
        intercept[p] += size * intercept_step[a]
        for j in range(w.shape[1]):
            w[p, j] += size * w_step[a, j]
        for i in range(beta.shape[1]):
            beta[p, i] += size * step[a, i]
            Kbeta[p, i] += size * Kstep[a, i]


@njit(cache=True, nogil=True)
def _derivative(Y, mask, Kbeta, intercept, p, Kstep, a, db, t, q0, q1, C, epsilon, mu):
    """P'(t) and P''(t) of one problem: q0 + t q1 - C sum phi_mu(r - t u) u, and its slope."""
    value_sum = 0.0
    slope_sum = 0.0
    for i in range(Y.shape[1]):
        if not mask[p, i]:
            continue
        u = Kstep[a, i] + db
        where, phi = _classify(Y[p, i] - Kbeta[p, i] - intercept[p] - t * u, epsilon, mu)
        value_sum += phi * u
        if where == _ZONE:
            slope_sum += u * u
    return q0 + t * q1 - C * value_sum, q1 + (C / mu) * slope_sum


@njit(cache=True, nogil=True)
def line_search(Y, mask, Kbeta, intercept, active, Kstep, intercept_step, q0, q1, slope0, C, epsilon, mu, n_iter):
    """Step t in [0, 1] along the Newton direction minimizing the smoothed primal, per problem.

    P(t) = const + t q0 + t^2 q1 / 2 + C sum_i h_mu(r_i - t u_i), with the residuals
    r = y - K~beta - b of the active problems and u = Kstep + db; its derivative is
    nondecreasing and piecewise linear, equal to slope0 at t = 0.

    Parameters
    ----------
    Y, Kbeta, mask, intercept, active
        As in :func:`newton_system`.
    Kstep : ndarray (n_active, n_star)
    intercept_step, q0, q1, slope0 : ndarray (n_active,)
        From :func:`step_terms`.
    C, epsilon : float
    mu : ndarray (n_active,)
    n_iter : int
        Largest number of safeguarded Newton / regula falsi iterations.

    Returns
    -------
    ndarray (n_active,)
        1 where the full step does not overshoot (P'(1) <= 0); 0 where P'(0) >= 0 (no
        descent left); otherwise the root of P' in (0, 1) to rounding, or the regula falsi
        point of the last bracket.
    """
    n_active = active.shape[0]
    t = np.ones(n_active)
    for a in range(n_active):
        p = active[a]
        if slope0[a] >= 0.0:
            t[a] = 0.0
            continue
        db = intercept_step[a]
        value, slope = _derivative(Y, mask, Kbeta, intercept, p, Kstep, a, db, 1.0, q0[a], q1[a], C, epsilon, mu[a])
        if value <= 0.0:
            continue
        lo, d_lo = 0.0, slope0[a]
        hi, d_hi = 1.0, value
        current = 1.0
        tolerance = 1e-12 * max(abs(slope0[a]), 1e-300)
        for _ in range(n_iter):
            newton = current - value / slope if slope != 0.0 else np.nan
            denominator = d_hi - d_lo
            secant = lo - d_lo * (hi - lo) / denominator if denominator != 0.0 else np.nan
            if not (np.isfinite(secant) and lo < secant < hi):
                secant = 0.5 * (lo + hi)
            candidate = newton if (np.isfinite(newton) and lo < newton < hi) else secant
            value, slope = _derivative(Y, mask, Kbeta, intercept, p, Kstep, a, db, candidate, q0[a], q1[a], C,
                                       epsilon, mu[a])
            if value <= 0.0:
                lo, d_lo = candidate, value
            else:
                hi, d_hi = candidate, value
            current = candidate
            if abs(value) <= tolerance:
                break
        denominator = d_hi - d_lo
        final = lo - d_lo * (hi - lo) / denominator if denominator != 0.0 else lo
        if not np.isfinite(final):
            final = lo
        t[a] = min(max(final, lo), hi)
    return t


@njit(cache=True, nogil=True)
def zone_indices(selected):
    """Column indices of the True entries of each row, left-aligned and zero-padded.

    Returns ``index`` (n_problem, width) int, ``valid`` (same shape, bool) and ``count``
    (n_problem,), width being the largest count.
    """
    n_problem, n_star = selected.shape
    count = np.zeros(n_problem, dtype=np.intp)
    for p in range(n_problem):
        for i in range(n_star):
            if selected[p, i]:
                count[p] += 1
    width = count.max() if n_problem else 0
    index = np.zeros((n_problem, width), dtype=np.intp)
    valid = np.zeros((n_problem, width), dtype=np.bool_)
    for p in range(n_problem):
        position = 0
        for i in range(n_star):
            if selected[p, i]:
                index[p, position] = i
                valid[p, position] = True
                position += 1
    return index, valid, count


@njit(cache=True, nogil=True)
def zone_rows_dot(Z, w, index, count):
    """(Z w_p)_i on each problem's listed stars: out[p, k] = Z[index[p, k]] . w[p] for k < count[p].

    Parameters
    ----------
    Z : ndarray (n_star, rank)
    w : ndarray (n_problem, rank)
    index : ndarray of int (n_problem, width)
    count : ndarray of int (n_problem,)

    Returns
    -------
    ndarray (n_problem, width), 0 on padding.
    """
    n_problem, width = index.shape
    out = np.zeros((n_problem, width))
    for p in range(n_problem):
        for k in range(count[p]):
            row = index[p, k]
            value = 0.0
            for j in range(Z.shape[1]):
                value += Z[row, j] * w[p, j]
            out[p, k] = value
    return out


@njit(cache=True, nogil=True)
def add_zone_rows(Z, x, index, count, w):
    """w[p] += sum_k x[p, k] Z[index[p, k]] over k < count[p], in place (w = beta Z for sparse beta)."""
    for p in range(index.shape[0]):
        for k in range(count[p]):
            row = index[p, k]
            coefficient = x[p, k]
            for j in range(Z.shape[1]):
                w[p, j] += coefficient * Z[row, j]


@njit(cache=True, nogil=True)
def scatter_zone(values, x, index, count):
    """values[p, index[p, k]] = x[p, k] for k < count[p], in place."""
    for p in range(index.shape[0]):
        for k in range(count[p]):
            values[p, index[p, k]] = x[p, k]


@njit(cache=True, nogil=True)
def _cholesky_in_place(A):
    """Lower Cholesky factor of the symmetric matrix A, in place; False if A is not positive definite."""
    m = A.shape[0]
    for j in range(m):
        diagonal = A[j, j]
        for k in range(j):
            diagonal -= A[j, k] * A[j, k]
        if not diagonal > 0.0:
            return False
        root = np.sqrt(diagonal)
        A[j, j] = root
        for i in range(j + 1, m):
            value = A[i, j]
            for k in range(j):
                value -= A[i, k] * A[j, k]
            A[i, j] = value / root
    return True


@njit(cache=True, nogil=True)
def _cholesky_solve(L, x):
    """Solve L L^T y = x in place (L lower triangular)."""
    m = L.shape[0]
    for i in range(m):
        value = x[i]
        for k in range(i):
            value -= L[i, k] * x[k]
        x[i] = value / L[i, i]
    for i in range(m - 1, -1, -1):
        value = x[i]
        for k in range(i + 1, m):
            value -= L[k, i] * x[k]
        x[i] = value / L[i, i]


@njit(cache=True, nogil=True)
def bordered_solve_small(K, index, count, rhs, last, ridge, problems, x, b):
    """Solve [K_QQ + ridge I, 1; 1^T, 0] [x; b] = [rhs; last] for the listed problems.

    Q is the problem's ``count[p]`` first ``index[p]`` entries. With the Cholesky factor of
    A = K_QQ + ridge I, block elimination gives x = A^-1 rhs - b A^-1 1 and
    b = (1^T A^-1 rhs - last) / (1^T A^-1 1).

    Parameters
    ----------
    K : ndarray (n_star, n_star)
    index : ndarray of int (n_problem, width)
    count : ndarray of int (n_problem,)
    rhs : ndarray (n_problem, width)
    last, ridge : ndarray (n_problem,)
    problems : ndarray of int
        Problems to solve (each with count > 0).
    x : ndarray (n_problem, width), b : ndarray (n_problem,)
        Receive the solutions of the listed problems (other rows untouched).

    Returns
    -------
    ndarray of bool (len(problems),)
        False where A was not numerically positive definite (x, b of that problem untouched).
    """
    solved = np.ones(problems.shape[0], dtype=np.bool_)
    for position in range(problems.shape[0]):
        p = problems[position]
        m = count[p]
        A = np.empty((m, m))
        for i in range(m):
            row = index[p, i]
            for j in range(i + 1):
                A[i, j] = K[row, index[p, j]]
            A[i, i] += ridge[p]
        if not _cholesky_in_place(A):
            solved[position] = False
            continue
        solution = np.empty(m)
        ones = np.ones(m)
        for i in range(m):
            solution[i] = rhs[p, i]
        _cholesky_solve(A, solution)
        _cholesky_solve(A, ones)
        sum_solution = 0.0
        sum_ones = 0.0
        for i in range(m):
            sum_solution += solution[i]
            sum_ones += ones[i]
        intercept = (sum_solution - last[p]) / sum_ones
        b[p] = intercept
        for i in range(m):
            x[p, i] = solution[i] - intercept * ones[i]
    return solved
