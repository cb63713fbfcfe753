"""The compiled loops of the batched SVR solver against direct numpy formulations.

Each kernel is checked on random problems against an independent computation of the
same quantity (dense linear algebra, a brute-force line minimization, boolean indexing).
"""

import numpy as np
import pytest

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
from slamlib.svr.batched_solver import pivoted_cholesky
from slamlib.svr.kernel import rbf_kernel

C = 10.0
EPSILON = 0.05


@pytest.fixture(scope="module")
def kernel():
    labels = np.random.default_rng(3).normal(size=(120, 3))
    K = rbf_kernel(labels, labels, 0.1)
    return K, pivoted_cholesky(K, 1e-10)


def random_selection(rng, n_problem, n_star, fraction):
    selected = rng.random((n_problem, n_star)) < fraction
    selected[0] = False          # one problem with nothing selected
    return selected


def test_zone_indices_lists_the_selected_columns_in_order():
    rng = np.random.default_rng(0)
    selected = random_selection(rng, 7, 50, 0.2)
    index, valid, count = zone_indices(selected)
    assert index.shape == valid.shape == (7, selected.sum(axis=1).max())
    for p in range(7):
        np.testing.assert_array_equal(index[p, :count[p]], np.flatnonzero(selected[p]))
        assert valid[p, :count[p]].all() and not valid[p, count[p]:].any()
        assert (index[p, count[p]:] == 0).all()


def test_zone_products_equal_dense_products(kernel):
    _, Z = kernel
    rng = np.random.default_rng(1)
    selected = random_selection(rng, 6, Z.shape[0], 0.15)
    index, _, count = zone_indices(selected)
    w = rng.normal(size=(6, Z.shape[1]))
    x = rng.normal(size=index.shape)
    dense = np.zeros((6, Z.shape[0]))
    for p in range(6):
        dense[p, index[p, :count[p]]] = x[p, :count[p]]
    rows = zone_rows_dot(Z, w, index, count)
    full = w @ Z.T
    for p in range(6):
        np.testing.assert_allclose(rows[p, :count[p]], full[p, selected[p]], rtol=1e-12, atol=1e-12)
        assert (rows[p, count[p]:] == 0).all()
    w_sum = w.copy()
    add_zone_rows(Z, x, index, count, w_sum)
    np.testing.assert_allclose(w_sum, w + dense @ Z, rtol=1e-12, atol=1e-12)
    values = np.full((6, Z.shape[0]), 7.0)
    scatter_zone(values, x, index, count)
    np.testing.assert_array_equal(values, np.where(selected, dense, 7.0))


def test_bordered_solve_matches_a_dense_solve(kernel):
    K, _ = kernel
    rng = np.random.default_rng(2)
    selected = random_selection(rng, 5, K.shape[0], 0.3)
    index, _, count = zone_indices(selected)
    rhs = rng.normal(size=index.shape)
    last = rng.normal(size=5)
    ridge = np.full(5, 1e-3)
    problems = np.flatnonzero(count)
    x, b = np.zeros(index.shape), np.full(5, -1.0)
    solved = bordered_solve_small(K, index, count, rhs, last, ridge, problems, x, b)
    assert solved.all()
    assert b[0] == -1.0 and (x[0] == 0).all()          # a problem not listed is untouched
    for p in problems:
        m = count[p]
        q = index[p, :m]
        system = np.zeros((m + 1, m + 1))
        system[:m, :m] = K[np.ix_(q, q)] + ridge[p] * np.eye(m)
        system[:m, m] = system[m, :m] = 1.0
        solution = np.linalg.solve(system, np.append(rhs[p, :m], last[p]))
        np.testing.assert_allclose(x[p, :m], solution[:m], rtol=1e-8, atol=1e-8)
        assert b[p] == pytest.approx(solution[m], rel=1e-8, abs=1e-8)


def test_bordered_solve_reports_a_system_that_is_not_positive_definite():
    K = np.ones((4, 4))                  # rank one: K_QQ with no ridge is singular
    index = np.array([[0, 1, 2]])
    count = np.array([3])
    x, b = np.zeros((1, 3)), np.zeros(1)
    solved = bordered_solve_small(K, index, count, np.ones((1, 3)), np.zeros(1), np.zeros(1), np.array([0]), x, b)
    assert not solved[0]
    assert (x == 0).all() and b[0] == 0


def smoothed_loss_derivative(r, epsilon, mu):
    return np.sign(r) * np.clip((np.abs(r) - epsilon) / mu, 0.0, 1.0)


def test_line_search_finds_the_minimum_along_the_direction():
    rng = np.random.default_rng(4)
    n_problem, n_star = 6, 80
    Y = rng.normal(0.0, 0.2, (n_problem, n_star))
    Kbeta = rng.normal(0.0, 0.05, (n_problem, n_star))
    intercept = rng.normal(0.0, 0.01, n_problem)
    mask = rng.random((n_problem, n_star)) > 0.1
    active = np.arange(n_problem)
    Kstep = rng.normal(0.0, 0.1, (n_problem, n_star))
    intercept_step = rng.normal(0.0, 0.01, n_problem)
    mu = np.full(n_problem, 0.01)
    q1 = rng.uniform(0.5, 2.0, n_problem)
    residual = Y - Kbeta - intercept[:, None]
    u = (Kstep + intercept_step[:, None]) * mask

    def derivative(p, t, q0):
        phi = smoothed_loss_derivative(residual[p] - t * u[p], EPSILON, mu[p]) * mask[p]
        return q0 + t * q1[p] - C * np.sum(phi * u[p])

    # q0 chosen so that P'(0) < 0 and, for half of the problems, P'(1) > 0 (an interior minimum).
    q0 = np.array([C * np.sum(smoothed_loss_derivative(residual[p], EPSILON, mu[p]) * mask[p] * u[p]) - 0.5
                   for p in range(n_problem)])
    q0[::2] -= 50.0
    slope0 = np.array([derivative(p, 0.0, q0[p]) for p in range(n_problem)])
    t = line_search(Y, mask, Kbeta, intercept, active, Kstep, intercept_step, q0, q1, slope0, C, EPSILON, mu, 30)
    overshoots = np.array([derivative(p, 1.0, q0[p]) > 0 for p in range(n_problem)])
    assert overshoots.any() and not overshoots.all()        # both branches are exercised
    for p in range(n_problem):
        if derivative(p, 1.0, q0[p]) <= 0:
            assert t[p] == 1.0
        else:
            grid = np.linspace(0.0, 1.0, 20001)
            values = np.array([derivative(p, s, q0[p]) for s in grid])
            root = grid[np.argmax(values > 0)]
            assert t[p] == pytest.approx(root, abs=1e-4)
            assert abs(derivative(p, t[p], q0[p])) < 1e-6 * abs(slope0[p]) + 1e-9
    no_descent = line_search(Y, mask, Kbeta, intercept, active, Kstep, intercept_step, q0, q1, np.abs(slope0), C,
                             EPSILON, mu, 30)
    assert (no_descent == 0).all()


def test_newton_system_step_terms_and_take_step_agree_with_numpy(kernel):
    K, Z = kernel
    rng = np.random.default_rng(5)
    n_problem, n_star = 5, K.shape[0]
    Y = rng.normal(0.0, 0.2, (n_problem, n_star))
    mask = rng.random((n_problem, n_star)) > 0.1
    Y = np.where(mask, Y, 0.0)
    beta = np.where(mask, rng.uniform(-C, C, (n_problem, n_star)), 0.0)
    w = beta @ Z
    Kbeta = w @ Z.T
    intercept = rng.normal(0.0, 0.1, n_problem)
    active = np.array([0, 2, 3])
    mu = np.full(active.size, 0.05)

    fixed, index, count, rhs, fixed_sum = newton_system(Y, mask, Kbeta, intercept, active, mu, C, EPSILON)
    residual = (Y - Kbeta - intercept[:, None])[active]
    excess = np.abs(residual) - EPSILON
    in_zone = (excess > 0) & (excess < mu[:, None]) & mask[active]
    target = C * smoothed_loss_derivative(residual, EPSILON, mu[:, None]) * mask[active]
    np.testing.assert_array_equal(fixed, np.where(in_zone, 0.0, target))
    np.testing.assert_allclose(fixed_sum, fixed.sum(axis=1), rtol=1e-12)
    for a in range(active.size):
        np.testing.assert_array_equal(index[a, :count[a]], np.flatnonzero(in_zone[a]))
        expected = (Y[active[a]] - EPSILON * np.sign(residual[a]))[in_zone[a]]
        np.testing.assert_array_equal(rhs[a, :count[a]], expected)

    point = fixed + rng.normal(0.0, 0.1, fixed.shape) * mask[active]
    Kstep = (point - beta[active]) @ Z @ Z.T
    b_new = intercept[active] + 0.01
    step = point.copy()
    b_step, q0, slope0 = step_terms(Y, mask, Kbeta, intercept, beta, active, step, Kstep, b_new, mu, C, EPSILON)
    np.testing.assert_allclose(step, point - beta[active], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b_step, 0.01, rtol=1e-9)
    np.testing.assert_allclose(q0, np.sum(step * Kbeta[active], axis=1), rtol=1e-10)
    np.testing.assert_allclose(slope0, q0 - np.sum(target * (Kstep + b_step[:, None]), axis=1), rtol=1e-10)

    t = np.array([0.5, 0.0, 1.0])
    w_step = step @ Z
    before = (beta.copy(), intercept.copy(), w.copy(), Kbeta.copy())
    take_step(beta, intercept, w, Kbeta, active, t, step, b_step, w_step, Kstep)
    for name, after, old, change in (("beta", beta, before[0], step), ("w", w, before[2], w_step),
                                     ("Kbeta", Kbeta, before[3], Kstep)):
        expected = old.copy()
        expected[active] += t[:, None] * change
        np.testing.assert_allclose(after, expected, rtol=1e-12, atol=1e-12, err_msg=name)
    expected_intercept = before[1].copy()
    expected_intercept[active] += t * b_step
    np.testing.assert_allclose(intercept, expected_intercept, rtol=1e-12)


def test_a_wide_factor_is_a_view_and_solves_the_same(monkeypatch):
    """Factors above _FACTOR_COPY_BYTES stay views of the factorization buffer (no doubled
    memory); the solver must give the same answer with either layout."""
    from slamlib.svr import batched_solver
    from slamlib.svr.batched_solver import solve_batch

    rng = np.random.default_rng(6)
    labels = rng.normal(size=(300, 3))
    K = rbf_kernel(labels, labels, 0.1)
    copied = pivoted_cholesky(K, 1e-8)
    monkeypatch.setattr(batched_solver, "_FACTOR_COPY_BYTES", 0)
    view = pivoted_cholesky(K, 1e-8)
    assert copied.flags.c_contiguous and not view.flags.c_contiguous and view.base is not None
    np.testing.assert_array_equal(view, copied)
    Y = np.sin(labels[:, 0])[None, :] + 0.05 * rng.normal(size=(3, 300))
    mask = rng.random(Y.shape) > 0.05
    first = solve_batch(K, copied, Y, mask, C, EPSILON)
    second = solve_batch(K, view, Y, mask, C, EPSILON)
    np.testing.assert_allclose(second[0], first[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(second[1], first[1], rtol=0, atol=1e-12)


def test_wide_zone_systems_are_solved_in_the_factor_space(monkeypatch):
    """A zone system wider than _WIDE_SYSTEM and the factor is solved with K_QQ = Z_Q Z_Q^T by
    the Woodbury identity: same answer as the dense bordered system of that matrix."""
    from slamlib.svr import batched_solver

    rng = np.random.default_rng(8)
    Z = rng.normal(size=(400, 25)) / 5.0
    K = Z @ Z.T                                            # exactly rank 25
    selected = random_selection(rng, 4, 400, 0.6)
    index, _, count = zone_indices(selected)
    rhs = rng.normal(size=index.shape)
    last = rng.normal(size=4)
    ridge = np.array([1e-3, 1e-2, 1e-4, 1e-3])
    monkeypatch.setattr(batched_solver, "_WIDE_SYSTEM", 100)
    monkeypatch.setattr(batched_solver, "_GATHER_ROWS", 64)   # several gathered blocks per system
    wide_x, wide_b = batched_solver._bordered_solve(K, index, count, rhs, last, ridge, np.zeros(4), Z=Z)
    dense_x, dense_b = batched_solver._bordered_solve(K, index, count, rhs, last, ridge, np.zeros(4))
    assert count[1:].min() > 100                            # every non-empty system took the wide path
    np.testing.assert_allclose(wide_x, dense_x, rtol=1e-7, atol=1e-7 * np.abs(dense_x).max())
    np.testing.assert_allclose(wide_b, dense_b, rtol=1e-7, atol=1e-9)
    for p in range(1, 4):                                   # and it solves the bordered system
        q = index[p, :count[p]]
        residual = (K[np.ix_(q, q)] + ridge[p] * np.eye(q.size)) @ wide_x[p, :q.size] + wide_b[p] - rhs[p, :q.size]
        assert np.abs(residual).max() < 1e-8 * np.abs(rhs[p]).max()
        assert wide_x[p, :q.size].sum() == pytest.approx(last[p], abs=1e-8)


def test_solver_with_wide_zone_systems_reaches_the_same_exact_solution(monkeypatch):
    """A schedule starting at a wide smoothing zone (mu = 0.3) makes zones wider than the
    factor; solved in the factor space, they lead to the same verified exact solution."""
    from slamlib.svr import batched_solver
    from slamlib.svr.batched_solver import Stage, solve_batch

    rng = np.random.default_rng(9)
    labels = rng.normal(size=(300, 3))
    K = rbf_kernel(labels, labels, 0.05)
    Z = pivoted_cholesky(K, 1e-8)
    Y = np.sin(labels[:, 0])[None, :] * np.array([[1.0], [2.0], [0.5]]) + 0.3 * rng.normal(size=(3, 300))
    mask = rng.random(Y.shape) > 0.05
    stages = tuple(Stage(mu, 40) for mu in (0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4, 1e-4))
    default = solve_batch(K, Z, Y, mask, 100.0, EPSILON, stages=stages)
    widths = []
    original = batched_solver._wide_solve
    monkeypatch.setattr(batched_solver, "_wide_solve", lambda Z, rows, *args: widths.append(rows.size) or original(Z, rows, *args))
    monkeypatch.setattr(batched_solver, "_WIDE_SYSTEM", 0)      # every zone wider than the factor
    wide = solve_batch(K, Z, Y, mask, 100.0, EPSILON, stages=stages)
    assert len(widths) > 0 and min(widths) > Z.shape[1]
    assert wide[3]["exact"].all() and default[3]["exact"].all()
    np.testing.assert_allclose(wide[0], default[0], rtol=0, atol=1e-6 * 100.0)
    np.testing.assert_allclose(wide[2] + wide[1][:, None], default[2] + default[1][:, None], rtol=0, atol=1e-8)
