"""The decomposition solver for nearly full-rank kernels against LIBSVM (scikit-learn's SVR)."""

import numpy as np
import pytest
from sklearn.svm import SVR

from slamlib.svr import decomposition
from slamlib.svr.batched_solver import kkt_violation
from slamlib.svr.kernel import rbf_kernel

EPSILON = 0.05


def six_label_problem(n_star=500, seed=3):
    """Standardized 6-label inputs and a standardized nonlinear target with noise."""
    rng = np.random.default_rng(seed)
    labels = rng.normal(size=(n_star, 6))
    target = np.sin(labels[:, 0]) + 0.4 * labels[:, 1] * labels[:, 2] - 0.2 * labels[:, 3] ** 2 + 0.1 * labels[:, 4]
    target += rng.normal(0.0, 0.1, n_star)
    return labels, (target - target.mean()) / target.std()


@pytest.mark.parametrize("C", [1.0, 10.0, 100.0])
def test_solution_matches_a_tightly_converged_libsvm_on_a_full_rank_problem(C):
    labels, target = six_label_problem()
    allowed = np.random.default_rng(0).random(target.size) > 0.125     # a CV fold: some stars left out
    K = rbf_kernel(labels, labels, 0.1)
    solution = decomposition.solve(K, target, allowed, C, EPSILON, tol=1e-6, working_set_size=64)
    reference = SVR(kernel="rbf", gamma=0.1, C=C, epsilon=EPSILON, tol=1e-6).fit(labels[allowed], target[allowed])
    predicted = solution.kernel_beta + solution.intercept
    assert np.abs(predicted - reference.predict(labels)).max() <= 0.01 * EPSILON      # left-out stars included
    assert np.all(solution.beta[~allowed] == 0.0)
    assert abs(solution.beta.sum()) <= 1e-9 * C
    assert np.abs(solution.beta).max() <= C
    np.testing.assert_allclose(solution.kernel_beta, K @ solution.beta, rtol=0, atol=1e-9 * C)
    violation = kkt_violation(solution.beta[None], np.array([solution.intercept]), solution.kernel_beta[None],
                              target[None], allowed[None], C, EPSILON)[0]
    assert solution.max_violation < 1e-6 and violation <= 1e-6


def test_warm_start_along_the_c_path_reaches_the_same_solution_in_fewer_iterations():
    labels, target = six_label_problem(seed=4)
    allowed = np.ones(target.size, dtype=bool)
    K = rbf_kernel(labels, labels, 0.1)
    low = decomposition.solve(K, target, allowed, 10.0, EPSILON, tol=1e-6, working_set_size=64)
    cold = decomposition.solve(K, target, allowed, 31.6, EPSILON, tol=1e-6, working_set_size=64)
    warm = decomposition.solve(K, target, allowed, 31.6, EPSILON, tol=1e-6, working_set_size=64,
                               start=decomposition.scaled_start(low, 10.0, 31.6))
    assert warm.n_inner < cold.n_inner
    assert np.abs((warm.kernel_beta + warm.intercept) - (cold.kernel_beta + cold.intercept)).max() <= 0.01 * EPSILON


def test_an_infeasible_warm_start_is_refused():
    labels, target = six_label_problem(n_star=50)
    K = rbf_kernel(labels, labels, 0.1)
    beta = np.zeros(50)
    beta[0] = 5.0                     # sum(beta) != 0
    with pytest.raises(ValueError, match="not feasible"):
        decomposition.solve(K, target, np.ones(50, dtype=bool), 10.0, EPSILON, tol=1e-4, start=(beta, K @ beta))
    with pytest.raises(ValueError, match="positive"):
        decomposition.scaled_start(decomposition.Solution(beta, 0.0, K @ beta, 0.0, 0, 0), 0.0, 1.0)
