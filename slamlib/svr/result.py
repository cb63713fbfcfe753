"""What any training backend returns: per-pixel hyperparameters, CV statistics and the fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slamlib.svr.kernel import KernelExpansion

__all__ = ["TrainingResult", "PIXEL_ARRAYS", "parameter_pairs", "pixels_to_train"]

#: The per-pixel arrays of a :class:`TrainingResult`, as stored in model files and checkpoint
#: blocks (with ``fold_dual_coef`` and ``fold_intercept`` when the CV models are kept): the one
#: list its (de)serialization is written from.
PIXEL_ARRAYS = ("best_c", "best_gamma", "cv_mse_grid", "cv_mse", "cv_md", "mse", "md", "trained", "dual_coef",
                "intercept", "gamma")


def parameter_pairs(param_grid: dict[str, list[float]]) -> list[tuple[float, float]]:
    """All (C, gamma) combinations of a grid, C varying slowest."""
    return [(float(c), float(gamma)) for c in param_grid["C"] for gamma in param_grid["gamma"]]


def pixels_to_train(good: np.ndarray, min_good_stars: int, pixels: np.ndarray | None = None,
                    folds: list[tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
    """Which pixels a backend trains: at least ``min_good_stars`` good stars, a good star in the
    training part of every CV fold (else that fold's fit has no data), and in ``pixels`` if given.

    Parameters
    ----------
    good : ndarray of bool, shape (n_star, n_pix)
    min_good_stars : int
    pixels : ndarray of int, optional
        Restrict training to these pixel columns.
    folds : list of (train_index, test_index), optional
        The CV folds; a pixel whose good stars all sit in one fold's held-out part is not
        trained.

    Returns
    -------
    ndarray of bool, shape (n_pix,)
    """
    trained = good.sum(axis=0) >= min_good_stars
    for train, _ in folds or []:
        trained &= good[train].any(axis=0)
    if pixels is not None:
        selected = np.zeros(good.shape[1], dtype=bool)
        selected[np.asarray(pixels)] = True
        trained &= selected
    return trained


@dataclass(frozen=True)
class TrainingResult:
    """Per-pixel outcome of training, in standardized flux units.

    Attributes
    ----------
    best_c, best_gamma : ndarray, shape (n_pix,)
        Hyperparameters with the lowest CV MSE (NaN for untrained pixels).
    cv_mse_grid : ndarray, shape (n_pix, n_grid)
        CV MSE of every grid point, in :func:`parameter_pairs` order.
    cv_mse, cv_md : ndarray, shape (n_pix,)
        CV mean squared error and mean deviation (model - data) at the best point (Eqs. 5-6).
    mse, md : ndarray, shape (n_pix,)
        The same for the final model refit on all training stars.
    trained : ndarray of bool, shape (n_pix,)
        False for pixels with too few good training stars; such pixels are ignored
        when predicting.
    expansion : KernelExpansion
        The final models of all pixels.
    fold_expansions : list of KernelExpansion, optional
        The CV models at each pixel's chosen (C, gamma), one per fold, each trained without
        that fold's stars: they predict labels of training stars they never saw (CV label
        scatter, leave-one-fold-out clipping) and form an ensemble for label uncertainties.
    fold_of_star : ndarray of int, shape (n_star,), optional
        The fold in which each training star was held out.
    """

    best_c: np.ndarray
    best_gamma: np.ndarray
    cv_mse_grid: np.ndarray
    cv_mse: np.ndarray
    cv_md: np.ndarray
    mse: np.ndarray
    md: np.ndarray
    trained: np.ndarray
    expansion: KernelExpansion
    fold_expansions: list[KernelExpansion] | None = None
    fold_of_star: np.ndarray | None = None

    def to_arrays(self, *, include_cv_models: bool = True) -> dict[str, np.ndarray]:
        """The per-pixel arrays (:data:`PIXEL_ARRAYS`, and the CV models' coefficients if kept).

        The support labels and the fold of each star are not included: they are per star, and
        the caller stores them once (:meth:`from_arrays` takes them back).

        Returns
        -------
        dict of str to ndarray
            ``dual_coef`` (n_pix, n_star), ``fold_dual_coef`` (n_folds, n_pix, n_star),
            ``fold_intercept`` (n_folds, n_pix), the others (n_pix,) or (n_pix, n_grid).
        """
        arrays = {"best_c": self.best_c, "best_gamma": self.best_gamma, "cv_mse_grid": self.cv_mse_grid,
                  "cv_mse": self.cv_mse, "cv_md": self.cv_md, "mse": self.mse, "md": self.md,
                  "trained": np.asarray(self.trained, dtype=bool), "dual_coef": self.expansion.dual_coef,
                  "intercept": self.expansion.intercept, "gamma": self.expansion.gamma}
        if include_cv_models and self.fold_expansions is not None:
            arrays["fold_dual_coef"] = np.stack([fold.dual_coef for fold in self.fold_expansions])
            arrays["fold_intercept"] = np.stack([fold.intercept for fold in self.fold_expansions])
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], support_labels: np.ndarray,
                    fold_of_star: np.ndarray | None = None) -> "TrainingResult":
        """Rebuild a result from :meth:`to_arrays` output, the support labels and the stars' folds.

        Parameters
        ----------
        arrays : dict of str to ndarray
            Must hold every name of :data:`PIXEL_ARRAYS`; the CV models are restored when it
            also holds ``fold_dual_coef`` and ``fold_intercept`` and ``fold_of_star`` is given.
        support_labels : ndarray, shape (n_star, n_label)
        fold_of_star : ndarray of int, shape (n_star,), optional

        Raises
        ------
        ValueError
            If an array is missing.
        """
        missing = [name for name in PIXEL_ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"the training arrays lack {missing}; the file is not a complete slamlib model or block.")
        expansion = KernelExpansion(support_labels, arrays["dual_coef"], arrays["intercept"], arrays["gamma"])
        fold_expansions = None
        if "fold_dual_coef" in arrays and fold_of_star is not None:
            fold_expansions = [KernelExpansion(support_labels, coefficients, intercept, arrays["gamma"])
                               for coefficients, intercept in zip(arrays["fold_dual_coef"], arrays["fold_intercept"])]
        return cls(best_c=arrays["best_c"], best_gamma=arrays["best_gamma"], cv_mse_grid=arrays["cv_mse_grid"],
                   cv_mse=arrays["cv_mse"], cv_md=arrays["cv_md"], mse=arrays["mse"], md=arrays["md"],
                   trained=np.asarray(arrays["trained"]).astype(bool), expansion=expansion,
                   fold_expansions=fold_expansions, fold_of_star=None if fold_expansions is None else fold_of_star)

    @classmethod
    def from_training(cls, arrays: dict[str, np.ndarray], labels_std: np.ndarray, fold_of_star: np.ndarray, *,
                      default_gamma: float) -> "TrainingResult":
        """What a backend returns: its per-pixel arrays (:data:`PIXEL_ARRAYS` but ``gamma``, with the
        CV models' ``fold_dual_coef`` and ``fold_intercept``) over a copy of the training labels.

        Untrained pixels get ``default_gamma`` in the expansion; with zero coefficients they
        predict the training mean (0 in standardized units) and prediction ignores them.
        """
        gamma = np.where(arrays["trained"], arrays["best_gamma"], default_gamma)
        return cls.from_arrays({**arrays, "gamma": gamma}, np.array(labels_std, dtype=float, copy=True), fold_of_star)
