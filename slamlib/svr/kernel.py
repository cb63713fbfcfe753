"""The fitted per-pixel SVRs as one kernel expansion, evaluated for all pixels at once.

Every pixel j has an RBF-kernel expansion over the same training stars:

    f_j(theta) = sum_i beta_ij exp(-gamma_j |theta - x_i|^2) + b_j

with standardized labels ``x_i``. Pixels sharing a ``gamma_j`` share one kernel row,
so a batch of label vectors is evaluated with one matrix product per distinct gamma,
and the Jacobian is analytic: d f_j / d theta = -2 gamma_j sum_i beta_ij K_i (theta - x_i).
Every training backend produces this representation, so prediction does not depend on
the backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["KernelExpansion", "rbf_kernel"]


def rbf_kernel(
    labels_a: np.ndarray,
    labels_b: np.ndarray,
    gamma: float,
    *,
    squared_norm_a: np.ndarray | None = None,
    squared_norm_b: np.ndarray | None = None,
    block_rows: int | None = None,
) -> np.ndarray:
    """RBF kernel matrix ``exp(-gamma |a_i - b_k|^2)``: the one implementation of the kernel.

    Training (the kernel of the stars with themselves), evaluation of the fitted models and
    batched prediction all call this function, so they compute the same values the same way.
    The matrix is built in place, row block by row block, with no temporaries of its size.

    Parameters
    ----------
    labels_a : ndarray, shape (n_a, n_label)
    labels_b : ndarray, shape (n_b, n_label)
        Standardized labels.
    gamma : float
        The RBF width.
    squared_norm_a, squared_norm_b : ndarray, shape (n_a,) and (n_b,), optional
        ``sum(labels**2, axis=1)`` when the caller already holds them.
    block_rows : int, optional
        Rows of the result computed per step (default: all at once); a smaller block bounds
        the working memory of very large kernels without changing any value.

    Returns
    -------
    ndarray, shape (n_a, n_b)
    """
    labels_a = np.asarray(labels_a, dtype=float)
    labels_b = np.asarray(labels_b, dtype=float)
    if squared_norm_a is None:
        squared_norm_a = np.sum(labels_a**2, axis=1)
    if squared_norm_b is None:
        squared_norm_b = np.sum(labels_b**2, axis=1)
    n_a = labels_a.shape[0]
    step = n_a if block_rows is None else max(1, int(block_rows))
    kernel = np.empty((n_a, labels_b.shape[0]))
    for start in range(0, n_a, max(step, 1)):
        stop = min(n_a, start + step)
        rows = kernel[start:stop]
        np.matmul(labels_a[start:stop], labels_b.T, out=rows)
        rows *= -2.0
        rows += squared_norm_a[start:stop, None]
        rows += squared_norm_b[None, :]
        np.maximum(rows, 0.0, out=rows)
        rows *= -gamma
        np.exp(rows, out=rows)
    return kernel


@dataclass(frozen=True)
class KernelExpansion:
    """Per-pixel RBF expansions over a shared set of training labels.

    Attributes
    ----------
    support_labels : ndarray, shape (n_star, n_label)
        Standardized labels of the training stars.
    dual_coef : ndarray, shape (n_pix, n_star)
        Dual coefficients beta_ij (zero for stars that are not support vectors of pixel j).
    intercept : ndarray, shape (n_pix,)
        Intercepts b_j.
    gamma : ndarray, shape (n_pix,)
        RBF width of each pixel.
    """

    support_labels: np.ndarray
    dual_coef: np.ndarray
    intercept: np.ndarray
    gamma: np.ndarray
    _groups: list[tuple[float, slice]] = field(init=False, repr=False, compare=False)
    _coefficients_sorted_t: np.ndarray = field(init=False, repr=False, compare=False)
    _intercept_sorted: np.ndarray = field(init=False, repr=False, compare=False)
    _unsort: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n_pix, n_star = np.shape(self.dual_coef)
        if np.shape(self.support_labels)[0] != n_star or np.shape(self.intercept) != (n_pix,) or np.shape(self.gamma) != (n_pix,):
            raise ValueError(
                "KernelExpansion arrays disagree: support_labels "
                f"{np.shape(self.support_labels)}, dual_coef {np.shape(self.dual_coef)}, "
                f"intercept {np.shape(self.intercept)}, gamma {np.shape(self.gamma)}."
            )
        # Pixels sorted by gamma, so each gamma group is a contiguous block of columns of one
        # (n_star, n_pix) coefficient matrix: every product below is a plain GEMM on a view.
        order = np.argsort(self.gamma, kind="stable")
        values, starts = np.unique(self.gamma[order], return_index=True)
        stops = np.append(starts[1:], n_pix)
        object.__setattr__(self, "_groups", [(float(v), slice(int(a), int(b))) for v, a, b in zip(values, starts, stops)])
        object.__setattr__(self, "_coefficients_sorted_t", np.ascontiguousarray(np.asarray(self.dual_coef)[order].T))
        object.__setattr__(self, "_intercept_sorted", np.asarray(self.intercept)[order])
        object.__setattr__(self, "_unsort", np.argsort(order))

    @property
    def n_pix(self) -> int:
        """Number of pixels."""
        return int(np.shape(self.dual_coef)[0])

    @property
    def n_label(self) -> int:
        """Number of labels."""
        return int(np.shape(self.support_labels)[1])

    def evaluate(self, labels_std: np.ndarray) -> np.ndarray:
        """Model flux (standardized) for a batch of standardized labels.

        Parameters
        ----------
        labels_std : ndarray, shape (n_spec, n_label)

        Returns
        -------
        ndarray, shape (n_spec, n_pix)
        """
        labels_std = np.atleast_2d(np.asarray(labels_std, dtype=float))
        flux_sorted = np.empty((labels_std.shape[0], self.n_pix))
        for gamma, block in self._groups:
            kernel = rbf_kernel(labels_std, self.support_labels, gamma)
            flux_sorted[:, block] = kernel @ self._coefficients_sorted_t[:, block]
        flux_sorted += self._intercept_sorted
        return flux_sorted[:, self._unsort]

    def evaluate_with_jacobian(self, labels_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model flux and its derivative with respect to the standardized labels.

        Parameters
        ----------
        labels_std : ndarray, shape (n_spec, n_label)

        Returns
        -------
        flux_std : ndarray, shape (n_spec, n_pix)
        jacobian : ndarray, shape (n_spec, n_pix, n_label)
        """
        labels_std = np.atleast_2d(np.asarray(labels_std, dtype=float))
        n_spec = labels_std.shape[0]
        flux_sorted = np.empty((n_spec, self.n_pix))
        jacobian_sorted = np.empty((self.n_label, n_spec, self.n_pix))
        for gamma, block in self._groups:
            kernel = rbf_kernel(labels_std, self.support_labels, gamma)
            coefficients = self._coefficients_sorted_t[:, block]
            kernel_sum = kernel @ coefficients
            flux_sorted[:, block] = kernel_sum
            for label in range(self.n_label):
                weighted = (kernel * self.support_labels[:, label]) @ coefficients
                jacobian_sorted[label][:, block] = -2.0 * gamma * (labels_std[:, label, None] * kernel_sum - weighted)
        flux_sorted += self._intercept_sorted
        return flux_sorted[:, self._unsort], np.moveaxis(jacobian_sorted[:, :, self._unsort], 0, -1)
