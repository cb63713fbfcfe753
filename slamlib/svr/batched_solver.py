"""Batched solver of LIBSVM's epsilon-SVR dual for many problems that share one kernel matrix.

Every problem p (one pixel in one CV fold, or one pixel's final refit) solves

    minimize   1/2 beta^T K beta - y_p^T beta + epsilon ||beta||_1
    subject to sum(beta) = 0,   -C <= beta_i <= C,   beta_i = 0 for excluded stars,

with the intercept b from the KKT conditions (LIBSVM's rule). All problems of a batch share
K (the RBF kernel of the training labels for one gamma) and C; they differ in the targets
y_p and in which stars take part (CV fold, bad pixels).

Method
------
1. **Smoothed primal, semismooth Newton with continuation.** Replacing the
   epsilon-insensitive loss by its Huber smoothing of width ``mu`` gives the convex,
   piecewise-quadratic primal ``P(beta, b) = 1/2 beta^T K beta + C sum_i h_mu(y_i - (K beta)_i - b)``
   (its dual is the SVR dual plus the ridge ``mu / (2C) ||beta||^2``). A Newton step only
   couples the stars whose residual lies in the smoothing zone ``epsilon < |r| < epsilon + mu``
   (a few dozen); all others sit at beta = 0 or +-C. One step costs two products of the
   batch with a low-rank factor Z of K (BLAS-3, O(n_star rank) per problem), products with
   the zone's rows of Z only, one small bordered system per problem (Cholesky) and an exact
   line search on the primal, which makes every step a descent step so the iteration
   converges from any start. The per-star loops (zone, bordered systems, line search, the
   step itself) are compiled with numba (:mod:`slamlib.svr.batched_kernels`).
   ``mu`` is decreased per problem (continuation: by the schedule's ratio each time the
   smoothed problem is solved, from the first to the last ``Stage.mu``), and raised again
   for a problem whose steps stay short (t < 0.1 five times in a row), since a wider zone
   gives a better Newton model. Start: kernel ridge regression, or a warm start (the
   solution for the previous C).
   Z is a pivoted Cholesky factor with ``trace(K - Z Z^T) <= factor_tol``; it is only used to
   find the active set, never in the returned solution.
2. **Exact active-set step.** The residuals of the last smoothed solution classify the
   stars (beyond the zone: bounded, |beta| = C; inside the tube: zero; in the zone: free).
   The free ones then solve LIBSVM's KKT system with the exact kernel,
   ``(K beta)_i + b = y_i -+ epsilon``, ``sum beta = 0``, and the result is accepted only if
   every KKT condition of the unsmoothed problem holds to ``kkt_tol`` with the exact K.
   Up to ``polish_passes`` primal-dual active-set corrections are tried.
3. **Fallbacks.** A problem whose active set is not verified keeps the smoothed solution,
   written as feasible coefficients; its KKT violation is at most about the last ``mu`` and
   is reported (``info["kkt"]``), a tighter guarantee than scikit-learn's default stopping
   rule (``tol = 1e-3``). A problem the Newton phase does not bring to the last ``mu`` within
   its step budget (rare; ``info["libsvm"]``) is handed to LIBSVM (scikit-learn's SVR, on the
   labels when given, else on the precomputed kernel; at the reference backend's tolerance,
   :data:`slamlib.svr.libsvm.TOLERANCE`), so no problem is left unsolved.

Stages may stop early (``polish=False``): then every problem gets the smoothed solution
of the last stage, with KKT violation <= that stage's ``mu``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dposv as _dposv
from sklearn.svm import SVR as _SVR

from slamlib.svr.batched_kernels import (
    add_zone_rows,
    bordered_solve_small,
    line_search,
    newton_system,
    scatter_zone,
    step_terms,
    take_step,
    zone_indices,
    zone_rows_dot,
)
from slamlib.svr.libsvm import TOLERANCE as LIBSVM_TOLERANCE

__all__ = ["solve_batch", "kkt_violation", "pivoted_cholesky", "Stage", "EXACT_STAGES"]


@dataclass(frozen=True)
class Stage:
    """One continuation level: smoothing width ``mu`` and its share of the Newton step budget.

    A schedule's first and last ``mu`` are the start and the end of the continuation, the
    ratio of its first two the shrink factor; its budgets add up to the per-problem limit.
    """

    mu: float
    max_iter: int = 40


#: Continuation schedule used before the exact active-set step.
EXACT_STAGES = (Stage(0.01), Stage(3e-3), Stage(1e-3), Stage(3e-4), Stage(1e-4))


#: Factors up to this size are returned as a contiguous copy (faster row gathers); larger ones
#: as a view of the factorization's buffer.
_FACTOR_COPY_BYTES = 512 * 2**20


def pivoted_cholesky(K, trace_tol, max_rank=None):
    """Low-rank factor Z (n, d) with K - Z Z^T positive semidefinite and trace <= trace_tol.

    Greedy diagonal pivoting. The residual trace bounds every residual entry
    (|E_ij| <= sqrt(E_ii E_jj)) and its spectral norm. With ``max_rank`` the factorization
    stops after that many columns even if the trace is not yet below ``trace_tol`` (the
    caller can tell from ``Z.shape[1] == max_rank``).

    The factor is built in a column-major buffer: each new column costs one streaming
    matrix-vector product with the columns so far, and only the columns written are ever
    resident in memory.
    """
    n = K.shape[0]
    max_rank = n if max_rank is None else min(max_rank, n)
    diag = np.array(np.diag(K), dtype=float, copy=True)
    Z = np.zeros((n, max_rank), order="F")
    rank = 0
    while rank < max_rank and diag.sum() > trace_tol:
        pivot = int(np.argmax(diag))
        if diag[pivot] <= 0:
            break
        # K is symmetric: its (contiguous) row is the pivot column.
        column = K[pivot] - Z[:, :rank] @ Z[pivot, :rank]
        Z[:, rank] = column / np.sqrt(diag[pivot])
        diag -= Z[:, rank] ** 2
        diag[pivot] = 0.0
        np.maximum(diag, 0.0, out=diag)
        rank += 1
    if Z[:, :rank].nbytes <= _FACTOR_COPY_BYTES:
        return np.ascontiguousarray(Z[:, :rank])
    # A wide factor stays a (column-major) view of the buffer: a row-major copy would double
    # its memory for a moment.
    return Z[:, :rank]


def _phi(r, epsilon, mu):
    """Derivative of the Huber-smoothed epsilon-insensitive loss, in [-1, 1]."""
    return np.sign(r) * np.clip((np.abs(r) - epsilon) / mu, 0.0, 1.0)


def _padded_indices(selected):
    """Column indices of the True entries of each row: (index (B, M), valid (B, M), count (B,))."""
    return zone_indices(np.ascontiguousarray(selected, dtype=bool))


#: Largest system solved by the compiled Cholesky loop; larger ones go to LAPACK one by one.
_SMALL_SYSTEM = 160
#: Zone systems wider than this (and than the factor) are solved in the factor's space
#: (Woodbury identity): memory rank^2 instead of width^2.
_WIDE_SYSTEM = 2000
#: Rows of the factor gathered at a time by the wide-system solve.
_GATHER_ROWS = 1024


def _bordered_solve(K, index, count, rhs, last, ridge, keep_b, Z=None):
    """Solve [K_QQ + ridge I, 1; 1^T, 0] [x; b] = [rhs; last] for every problem.

    index (B, M): star indices (first count[p] valid); rhs (B, M); last, ridge, keep_b (B,).
    Systems up to ``_SMALL_SYSTEM`` stars are solved by the compiled Cholesky loop
    (:func:`slamlib.svr.batched_kernels.bordered_solve_small`), larger ones one by one by
    LAPACK (dposv); a system that is not numerically positive definite is solved by least
    squares. With the low-rank factor ``Z`` given (the smoothed Newton phase), a system wider
    than both ``_WIDE_SYSTEM`` and the factor uses K_QQ ~ Z_Q Z_Q^T instead, solved in the
    factor's space (:func:`_wide_solve`), so its memory is bounded by the factor's width.
    Problems with no star return b = keep_b. Returns x (B, M) (0 on padding) and b (B,).
    """
    n_problem, width = index.shape
    x = np.zeros((n_problem, width))
    b = np.array(keep_b, dtype=float, copy=True)
    if width == 0:
        return x, b
    rhs = np.ascontiguousarray(rhs, dtype=float)
    last = np.ascontiguousarray(last, dtype=float)
    ridge = np.ascontiguousarray(np.broadcast_to(ridge, (n_problem,)), dtype=float)
    small = np.flatnonzero((count > 0) & (count <= _SMALL_SYSTEM))
    solved = bordered_solve_small(K, index, count, rhs, last, ridge, small, x, b)
    for p in np.concatenate([small[~solved], np.flatnonzero(count > _SMALL_SYSTEM)]):
        m = int(count[p])
        q = index[p, :m]
        if Z is not None and m > max(_WIDE_SYSTEM, Z.shape[1]):
            solution = _wide_solve(Z, q, rhs[p, :m], ridge[p])
        else:
            A = K[np.ix_(q, q)]
            A[np.diag_indices(m)] += ridge[p]
            B = np.ones((m, 2))
            B[:, 0] = rhs[p, :m]
            _, solution, info = _dposv(A, B, lower=0, overwrite_a=1, overwrite_b=1)
            if info != 0:
                A = K[np.ix_(q, q)]
                A[np.diag_indices(m)] += ridge[p]
                solution = np.linalg.lstsq(A, np.column_stack([rhs[p, :m], np.ones(m)]), rcond=None)[0]
        b[p] = (solution[:, 0].sum() - last[p]) / solution[:, 1].sum()
        x[p, :m] = solution[:, 0] - b[p] * solution[:, 1]
    return x, b


def _wide_solve(Z, rows, rhs, ridge):
    """Solve (Z_Q Z_Q^T + ridge I) [x, u] = [rhs, 1] for the factor rows Q by the Woodbury identity.

    (ridge I + Z_Q Z_Q^T)^-1 v = (v - Z_Q w) / ridge with (ridge I + Z_Q^T Z_Q) w = Z_Q^T v:
    one rank x rank system; the rows of Z are gathered ``_GATHER_ROWS`` at a time, so no
    width x width or width x rank array is formed. Returns the (width, 2) solution.
    """
    rank = Z.shape[1]
    right = np.ones((rows.size, 2))
    right[:, 0] = rhs
    gram = np.zeros((rank, rank))
    projected = np.zeros((rank, 2))
    for start in range(0, rows.size, _GATHER_ROWS):
        block = Z[rows[start:start + _GATHER_ROWS]]
        gram += block.T @ block
        projected += block.T @ right[start:start + _GATHER_ROWS]
    gram[np.diag_indices(rank)] += ridge
    w = np.linalg.solve(gram, projected)
    for start in range(0, rows.size, _GATHER_ROWS):
        right[start:start + _GATHER_ROWS] -= Z[rows[start:start + _GATHER_ROWS]] @ w
    return right / ridge


def _b_search(r, mask, epsilon, mu, n_iter=60):
    """Shift db minimizing sum_i h_mu(r_i - db) over allowed stars (bisection on a monotone function)."""
    mu = np.broadcast_to(np.asarray(mu, dtype=float), r.shape[:1])[:, None]
    span = np.abs(np.where(mask, r, 0.0)).max(axis=1) + epsilon + mu[:, 0]
    lo, hi = -span, span.copy()
    for _ in range(n_iter):
        mid = 0.5 * (lo + hi)
        g = -np.sum(_phi(r - mid[:, None], epsilon, mu) * mask, axis=1)
        lo = np.where(g < 0, mid, lo)
        hi = np.where(g < 0, hi, mid)
    return 0.5 * (lo + hi)


def kkt_violation(beta, b, Kbeta, Y, mask, C, epsilon):
    """Largest violation of LIBSVM's KKT conditions per problem (standardized flux units).

    With g = K beta + b - y: beta = C needs g <= -eps; beta = -C needs g >= eps;
    0 < beta < C needs g = -eps; -C < beta < 0 needs g = eps; beta = 0 needs |g| <= eps.
    Excluded stars (mask False) are not checked (their beta must be 0, checked separately).
    """
    g = Kbeta + b[:, None] - Y
    at_upper = beta >= C * (1 - 1e-12)
    at_lower = beta <= -C * (1 - 1e-12)
    violation = np.where(beta == 0, np.maximum(np.abs(g) - epsilon, 0.0), 0.0)
    violation = np.where((beta > 0) & ~at_upper, np.abs(g + epsilon), violation)
    violation = np.where((beta < 0) & ~at_lower, np.abs(g - epsilon), violation)
    violation = np.where(at_upper, np.maximum(g + epsilon, 0.0), violation)
    violation = np.where(at_lower, np.maximum(epsilon - g, 0.0), violation)
    return np.where(mask, violation, 0.0).max(axis=1)


def _intercept_without_free(Kbeta, beta, Y, mask, C, epsilon):
    """LIBSVM's intercept when no coefficient is free: midpoint of the interval the KKT conditions allow."""
    base = Y - Kbeta
    at_upper = (beta >= C) & mask
    at_lower = (beta <= -C) & mask
    zero = (beta == 0) & mask
    upper = np.where(at_upper, base - epsilon, np.where(zero, base + epsilon, np.inf)).min(axis=1)
    lower = np.where(at_lower, base + epsilon, np.where(zero, base - epsilon, -np.inf)).max(axis=1)
    return np.where(np.isfinite(upper) & np.isfinite(lower), 0.5 * (upper + lower),
                    np.where(np.isfinite(upper), upper, np.where(np.isfinite(lower), lower, 0.0)))


def _exact_polish(K, Y, mask, C, epsilon, residual, mu, kkt_tol, max_pass):
    """Primal-dual active-set steps on the unsmoothed problem with the exact kernel.

    Starting classification from the residuals of the last smoothed solution: beyond the
    smoothing zone -> bounded, inside the tube -> zero, in the zone -> free. Returns
    (beta, b, Kbeta, accepted); entries of problems not accepted are meaningless.
    """
    n_problem = Y.shape[0]
    excess = np.abs(residual) - epsilon
    sign = np.sign(residual).astype(np.int8)
    state = np.where(excess >= mu, 2 * sign, np.where(excess > 0, sign, 0)).astype(np.int8)
    state = np.where(mask, state, 0).astype(np.int8)
    accepted = np.zeros(n_problem, dtype=bool)
    out_beta = np.zeros_like(Y)
    out_b = np.zeros(n_problem)
    out_K = np.zeros_like(Y)
    active = np.arange(n_problem)
    for _ in range(max_pass):
        if active.size == 0:
            break
        st = state[active]
        y = Y[active]
        msk = mask[active]
        bounded = np.where(st == 2, C, np.where(st == -2, -C, 0.0))
        free = np.abs(st) == 1
        index, valid, count = _padded_indices(free)
        Kbounded = bounded @ K
        if index.shape[1]:
            rhs = np.take_along_axis(y - epsilon * np.sign(st) - Kbounded, index, axis=1)
        else:
            rhs = np.zeros((active.size, 0))
        x, b = _bordered_solve(K, index, count, rhs, -bounded.sum(axis=1), np.full(active.size, 1e-11),
                               np.zeros(active.size))
        new_beta = bounded.copy()
        Kbeta = Kbounded
        if index.shape[1]:
            prow = np.repeat(np.arange(active.size), index.shape[1]).reshape(index.shape)
            new_beta[prow[valid], index[valid]] = x[valid]
            Kbeta = Kbounded + (new_beta - bounded) @ K
        no_free = count == 0
        if no_free.any():
            b[no_free] = _intercept_without_free(Kbeta[no_free], new_beta[no_free], y[no_free], msk[no_free], C, epsilon)
        g = Kbeta + b[:, None] - y
        slack = 1e-9 * C
        bad = ((st == 1) & ((new_beta < -slack) | (new_beta > C + slack)))
        bad |= (st == -1) & ((new_beta > slack) | (new_beta < -C - slack))
        bad |= (st == 2) & (g > -epsilon + kkt_tol)
        bad |= (st == -2) & (g < epsilon - kkt_tol)
        bad |= (st == 0) & msk & (np.abs(g) > epsilon + kkt_tol)
        good = ~bad.any(axis=1)
        if good.any():
            rows = active[good]
            nb = new_beta[good]
            clipped = np.clip(nb, -C, C)
            fix = np.any(clipped != nb, axis=1)
            out_K[rows] = Kbeta[good]
            if fix.any():
                out_K[rows[fix]] += (clipped[fix] - nb[fix]) @ K
            accepted[rows] = True
            out_beta[rows] = clipped
            out_b[rows] = b[good]
        keep = ~good
        st, nb, gk, msk = st[keep], new_beta[keep], g[keep], msk[keep]
        upd = st.copy()
        upd[(st == 1) & (nb > C)] = 2
        upd[(st == 1) & (nb < 0)] = 0
        upd[(st == -1) & (nb < -C)] = -2
        upd[(st == -1) & (nb > 0)] = 0
        upd[(st == 2) & (gk > -epsilon + kkt_tol)] = 1
        upd[(st == -2) & (gk < epsilon - kkt_tol)] = -1
        upd[(st == 0) & msk & (gk < -epsilon - kkt_tol)] = 1
        upd[(st == 0) & msk & (gk > epsilon + kkt_tol)] = -1
        active = active[keep]
        state[active] = upd
    return out_beta, out_b, out_K, accepted


#: Widest factor for which the start solves the ridge regression (its Gram matrix is rank x rank);
#: wider factors start from beta = 0 with b = the mean target.
RIDGE_START_MAX_RANK = 2000


def ridge_start(Z, Y, mask, ridge):
    """Kernel-ridge-regression start (the mu -> infinity limit of the smoothed problem).

    Per problem, min ||y - Z w - b||^2 + ridge ||w||^2 over its stars; returns the dual
    coefficients beta = residual / ridge (0 for excluded stars) and b. Problems with the
    same mask share one factorization; the Gram matrix of a group's stars is that of all stars
    minus that of the others, so no rows of Z are copied beyond the excluded ones. For a
    factor wider than ``RIDGE_START_MAX_RANK`` (nearly full-rank kernels, where the
    rank x rank system would cost as much memory as the kernel) the start is beta = 0 and
    b = the mean target.
    """
    n_problem, n_star = Y.shape
    rank = Z.shape[1]
    beta = np.zeros_like(Y)
    b = np.zeros(n_problem)
    groups = {}
    for p in range(n_problem):
        groups.setdefault(mask[p].tobytes(), []).append(p)
    gram_all = None
    for rows in groups.values():
        rows = np.asarray(rows)
        in_group = mask[rows[0]]
        n_in = max(int(in_group.sum()), 1)
        y = np.where(in_group, Y[rows], 0.0)
        mean_y = y.sum(axis=1) / n_in
        if rank > RIDGE_START_MAX_RANK:
            b[rows] = mean_y
            continue
        excluded = np.flatnonzero(~in_group)
        if excluded.size <= n_star // 2:
            if gram_all is None:
                gram_all = Z.T @ Z
            Z_excluded = Z[excluded]
            gram = gram_all - Z_excluded.T @ Z_excluded
            sum_z = Z.sum(axis=0) - Z_excluded.sum(axis=0)
        else:
            Z_in = Z[in_group]
            gram = Z_in.T @ Z_in
            sum_z = Z_in.sum(axis=0)
        mean_z = sum_z / n_in
        # Centred normal equations: (Zc^T Zc + ridge I) w = Zc^T (y - mean y), with
        # Zc^T Zc = Z_in^T Z_in - n mean_z mean_z^T and Zc^T (y - mean y) = Z_in^T (y - mean y).
        gram -= n_in * np.outer(mean_z, mean_z)
        gram[np.diag_indices(rank)] += ridge
        centred = np.where(in_group, y - mean_y[:, None], 0.0)
        w = np.linalg.solve(gram, (centred @ Z).T).T
        bias = mean_y - w @ mean_z
        beta[rows] = np.where(in_group, (y - w @ Z.T - bias[:, None]) / ridge, 0.0)
        b[rows] = bias
    return beta, b


def solve_batch(K, Z, Y, mask, C, epsilon, *, stages=EXACT_STAGES, polish=True, start=None, start_mask=None,
                start_ridge=1.0, kkt_tol=1e-8, polish_passes=10, trace=None, labels=None, gamma=None):
    """Solve the epsilon-SVR dual for a batch of problems sharing the kernel K.

    Parameters
    ----------
    K : ndarray (n_star, n_star)
        Exact kernel matrix.
    Z : ndarray (n_star, rank)
        Low-rank factor of K (:func:`pivoted_cholesky`) for the products of the smoothed phase.
    Y : ndarray (n_problem, n_star)
        Targets; entries of excluded stars are ignored.
    mask : ndarray of bool (n_problem, n_star)
        Stars that take part in each problem (the others get beta = 0).
    C, epsilon : float
    stages : sequence of Stage
        Continuation schedule of the smoothed Newton phase.
    polish : bool
        Attempt the exact active-set step after the last stage.
    start : (beta, b), optional
        Warm start (e.g. the solution for the previous C); default: ridge regression.
    start_mask : ndarray of bool (n_star,), optional
        Stars used by the ridge-regression start for every problem (default: each problem's
        own mask); a common mask lets all problems share one factorization.
    start_ridge : float
        Ridge of the kernel-ridge-regression start.
    kkt_tol : float
        Tolerance (standardized flux) of the exact KKT verification.
    trace : list, optional
        Receives (mu, n_active, mean |Q|, mean step) per Newton iteration (diagnostics).
    labels, gamma : optional
        When given (K = rbf_kernel(labels, labels, gamma)), a problem handed to LIBSVM is
        fitted on the labels with the RBF kernel instead of a copied precomputed sub-kernel
        (no extra n_star^2 memory).

    Returns
    -------
    beta : ndarray (n_problem, n_star)
    b : ndarray (n_problem,)
    Kbeta : ndarray (n_problem, n_star)
        Exact K beta for every star, excluded ones included (so Kbeta + b predicts them).
    info : dict
        ``exact`` (bool per problem: KKT verified to kkt_tol with the exact kernel), ``kkt``
        (max KKT violation per problem), ``n_newton`` (Newton steps per problem), ``libsvm``
        (bool per problem: handed to LIBSVM because the Newton phase did not converge).
    """
    Y = np.ascontiguousarray(Y, dtype=float)
    mask = np.ascontiguousarray(mask, dtype=bool)
    C, epsilon = float(C), float(epsilon)
    n_problem, n_star = Y.shape
    Ym = np.where(mask, Y, 0.0)
    ZT = Z.T          # a view: BLAS reads the transposed layout directly (no per-call copy of the factor)
    if start is not None:
        beta = np.where(mask, start[0], 0.0)
        b = np.array(start[1], dtype=float, copy=True)
    elif start_mask is None:
        beta, b = ridge_start(Z, Ym, mask, start_ridge)
    else:
        beta, b = ridge_start(Z, Ym, np.broadcast_to(start_mask, mask.shape), start_ridge)
        beta = np.where(mask, beta, 0.0)
    w = beta @ Z
    Kb_all = w @ ZT
    n_newton = np.zeros(n_problem, dtype=int)
    # Per-problem continuation: mu shrinks by `factor` each time a problem's smoothed problem
    # is solved, down to mu_final; after five short steps in a row it grows back (a larger
    # smoothing zone gives a better-behaved Newton model).
    mu_final = stages[-1].mu
    mu = np.full(n_problem, stages[0].mu)
    mu_max = 1.0
    factor = stages[1].mu / stages[0].mu if len(stages) > 1 else 1.0
    max_iter = sum(stage.max_iter for stage in stages)
    stall = np.zeros(n_problem, dtype=int)
    n_grown = np.zeros(n_problem, dtype=int)
    active = np.arange(n_problem)
    while active.size:
        m_act = mu[active]
        fixed, index, count, rhs, fixed_sum = newton_system(Ym, mask, Kb_all, b, active, m_act, C, epsilon)
        # The Newton point: fixed stars at 0 / +-C, zone stars from the bordered system whose
        # right-hand side needs K~ fixed on the zone rows only (Z[zone] . fixed Z).
        w_step = fixed @ Z
        rhs -= zone_rows_dot(Z, w_step, index, count)
        x, b_new = _bordered_solve(K, index, count, rhs, -fixed_sum, m_act / C, b[active], Z=Z)
        scatter_zone(fixed, x, index, count)
        add_zone_rows(Z, x, index, count, w_step)
        w_step -= w[active]
        Kstep = w_step @ ZT
        step = fixed
        b_step, q0, slope0 = step_terms(Ym, mask, Kb_all, b, beta, active, step, Kstep, b_new, m_act, C, epsilon)
        q1 = np.einsum("ij,ij->i", w_step, w_step)
        t = line_search(Ym, mask, Kb_all, b, active, Kstep, b_step, q0, q1, slope0, float(C), float(epsilon), m_act, 6)
        take_step(beta, b, w, Kb_all, active, t, step, b_step, w_step, Kstep)
        empty = count == 0
        if empty.any():
            rows = active[empty]
            b[rows] += _b_search(Ym[rows] - Kb_all[rows] - b[rows, None], mask[rows], epsilon, m_act[empty])
        n_newton[active] += 1
        if trace is not None:
            trace.append((float(np.median(m_act)), active.size, float(count.mean()), float(t.mean())))
        # Solved at this mu when the directional derivative vanishes (to rounding).
        solved = (-slope0 <= 1e-9 * C) | (t <= 0.0)
        short = (t < 0.1) & ~solved
        stall[active] = np.where(short, stall[active] + 1, 0)
        grow = (stall[active] >= 5) & (m_act < mu_max) & (n_grown[active] < 4)
        mu[active[grow]] = np.minimum(3.0 * m_act[grow], mu_max)
        stall[active[grow]] = 0
        n_grown[active[grow]] += 1
        finished = solved & (m_act <= mu_final * (1 + 1e-12))
        shrink = solved & ~finished
        mu[active[shrink]] = np.maximum(m_act[shrink] * factor, mu_final)
        finished |= n_newton[active] >= max_iter
        active = active[~finished]
    mu_last = stages[-1].mu
    residual = Ym - Kb_all - b[:, None]
    if polish:
        beta_out, b_out, Kbeta, exact = _exact_polish(K, Ym, mask, C, epsilon, residual, mu_last, kkt_tol,
                                                      polish_passes)
    else:
        beta_out, b_out, Kbeta = np.zeros_like(Ym), np.zeros(n_problem), np.zeros_like(Ym)
        exact = np.zeros(n_problem, dtype=bool)
    fallback = np.flatnonzero(~exact)
    if fallback.size:
        # The smoothed solution as feasible coefficients: beta_i = C phi_mu(r_i), the (tiny)
        # imbalance of sum(beta) spread over the free coefficients.
        implied = C * _phi(residual[fallback], epsilon, mu_last) * mask[fallback]
        free = (implied != 0) & (np.abs(implied) < C)
        imbalance = implied.sum(axis=1)
        implied = np.where(free, implied - (imbalance / np.maximum(free.sum(axis=1), 1))[:, None], implied)
        implied = np.clip(implied, -C, C)
        beta_out[fallback] = implied
        b_out[fallback] = b[fallback]
        Kbeta[fallback] = implied @ K
    kkt = kkt_violation(beta_out, b_out, Kbeta, Ym, mask, C, epsilon)
    # Safety net: a problem the Newton phase did not bring to mu_final within its step budget
    # (or whose smoothed solution is off) is solved by LIBSVM itself.
    unfinished = (n_newton >= max_iter) | (mu > mu_final * (1 + 1e-12))
    hand_over = np.flatnonzero(~exact & (unfinished | (kkt > 3.0 * mu_final)))
    for p in hand_over:
        stars = np.flatnonzero(mask[p])
        if labels is not None:
            svr = _SVR(kernel="rbf", gamma=gamma, C=C, epsilon=epsilon, tol=LIBSVM_TOLERANCE)
            svr.fit(labels[stars], Ym[p, stars])
        else:
            svr = _SVR(kernel="precomputed", C=C, epsilon=epsilon, tol=LIBSVM_TOLERANCE)
            svr.fit(K[np.ix_(stars, stars)], Ym[p, stars])
        beta_out[p] = 0.0
        beta_out[p, stars[svr.support_]] = svr.dual_coef_[0]
        b_out[p] = svr.intercept_[0]
        Kbeta[p] = beta_out[p] @ K
    libsvm = np.zeros(n_problem, dtype=bool)
    libsvm[hand_over] = True
    if hand_over.size:
        kkt[hand_over] = kkt_violation(beta_out[hand_over], b_out[hand_over], Kbeta[hand_over], Ym[hand_over],
                                       mask[hand_over], C, epsilon)
    return beta_out, b_out, Kbeta, {"exact": exact, "kkt": kkt, "n_newton": n_newton, "libsvm": libsvm}
