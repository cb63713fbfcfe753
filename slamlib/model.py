"""``SlamModel``: the Stellar LAbel Machine as a thin stateful class (paper Section 2).

The numerics live in :mod:`slamlib.scaling` (standardization), :mod:`slamlib.svr`
(per-pixel SVR training and the fitted kernel expansion), :mod:`slamlib.fitting`
(label prediction) and :mod:`slamlib.modelfile` (the model file); this class holds the
fitted state and checks the caller's input.
"""

from __future__ import annotations

import dataclasses
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from slamlib import modelfile
from slamlib.ensemble import EnsemblePrediction
from slamlib.fitting import GaussianPrior, PredictionResult
from slamlib.scaleout import check_scheduler, label_predictor
from slamlib.scaling import Standardizer
from slamlib.svr import folds as svr_folds
from slamlib.svr.kernel import KernelExpansion
from slamlib.svr.result import TrainingResult, parameter_pairs

__all__ = ["SlamModel", "PAPER_SECTION3_GRID", "BACKENDS"]

#: The sparse grid of the paper's Section 3 (LASP test).
PAPER_SECTION3_GRID = {"C": [10.0, 100.0], "gamma": [0.1, 0.01]}

#: Training engines available to ``SlamModel(backend=...)``: "batched" (the default: all pixels'
#: duals solved together, 11-13x faster at 2,000 stars, its solutions verified against the exact
#: KKT conditions) and "libsvm" (one scikit-learn SVR per pixel, the reference). Both keep the CV
#: fold models (``predict_cv``, ``predict(..., ensemble=True)``).
BACKENDS = ("batched", "libsvm")

# Attributes written to the model file, with the fitted state they restore.
_SAVED_ARRAYS = ("flux_mean", "flux_scale", "label_mean", "label_scale", "best_c", "best_gamma", "cv_mse_grid",
                 "cv_mse", "cv_md", "mse", "md", "trained", "support_labels", "dual_coef", "intercept", "gamma")


def _validate_grid(param_grid: dict[str, Any]) -> dict[str, list[float]]:
    if not isinstance(param_grid, dict) or set(param_grid) != {"C", "gamma"}:
        raise ValueError(f'param_grid must be a dict with exactly the keys "C" and "gamma", got {param_grid!r}.')
    grid = {}
    for key, values in param_grid.items():
        values = np.atleast_1d(np.asarray(values, dtype=float))
        if values.size == 0:
            raise ValueError(f"param_grid[{key!r}] is empty; give at least one value.")
        if not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError(f"param_grid[{key!r}] must hold positive finite numbers, got {values.tolist()}.")
        grid[key] = values.tolist()
    return grid


class SlamModel:
    """The Stellar LAbel Machine: per-pixel SVR emulator of normalized flux from labels.

    Parameters
    ----------
    param_grid : dict, optional
        ``{"C": [...], "gamma": [...]}``, the hyperparameter grid searched by CV for every
        pixel. Default: the paper's Section 3 grid, C in {10, 100}, gamma in {0.1, 0.01}.
    epsilon : float
        Half-width of the SVR tube in standardized flux units (paper: 0.05).
    cv : int
        Number of cross-validation folds (paper: 5 in Section 3, 8 in Section 4).
    n_jobs : int
        joblib workers for training and prediction (-1: all cores).
    random_state : int
        Seed of the CV folds (the same folds for every pixel).
    backend : {"batched", "libsvm"}
        Training engine (see :data:`BACKENDS`): "batched" (default) solves the SVRs of many
        pixels together; "libsvm" fits one scikit-learn SVR per pixel, the reference. Their
        models agree within 0.1 epsilon at stars' labels (README, Performance). "batched"
        refuses, before it starts, a training set whose kernel and working arrays would not
        fit in this machine's memory; "libsvm" needs far less.

    Attributes
    ----------
    best_params_ : list of dict
        Per pixel, ``{"C": ..., "gamma": ...}`` with the lowest CV MSE (NaN if untrained).
    cv_mse_, cv_md_ : ndarray, shape (n_pix,)
        CV mean squared error and mean deviation (model - data) of the standardized flux.
    mse_, md_ : ndarray, shape (n_pix,)
        The same for the final model on all training stars.
    cv_mse_grid_ : ndarray, shape (n_pix, n_grid)
        CV MSE of every grid point.
    trained_ : ndarray of bool, shape (n_pix,)
        Pixels with enough good training stars to be modelled.
    label_names_ : list of str
    wave_ : ndarray or None
        Wavelength grid, if given to :meth:`fit`.
    """

    def __init__(
        self,
        param_grid: dict[str, list[float]] | None = None,
        epsilon: float = 0.05,
        cv: int = 5,
        n_jobs: int = -1,
        random_state: int = 0,
        backend: str = "batched",
    ) -> None:
        self.param_grid = _validate_grid(PAPER_SECTION3_GRID if param_grid is None else param_grid)
        if not (np.isfinite(epsilon) and epsilon >= 0):
            raise ValueError(f"epsilon must be a non-negative number, got {epsilon!r}.")
        if not isinstance(cv, (int, np.integer)) or cv < 2:
            raise ValueError(f"cv must be an integer of at least 2 folds, got {cv!r}.")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
        self.epsilon = float(epsilon)
        self.cv = int(cv)
        self.n_jobs = int(n_jobs)
        self.random_state = int(random_state)
        self.backend = backend

    def __repr__(self) -> str:
        return (f"SlamModel(param_grid={self.param_grid}, epsilon={self.epsilon}, cv={self.cv}, "
                f"n_jobs={self.n_jobs}, random_state={self.random_state}, backend={self.backend!r})")

    # ------------------------------------------------------------------ training
    def _check_training_input(self, flux, ivar, labels, label_names):
        flux = np.asarray(flux, dtype=float)
        ivar = np.asarray(ivar, dtype=float)
        labels = np.asarray(labels, dtype=float)
        if labels.ndim == 1:
            labels = labels[:, None]
        if flux.ndim != 2 or ivar.shape != flux.shape:
            raise ValueError(f"flux {flux.shape} and ivar {ivar.shape} must be 2-D arrays of one shape (n_star, n_pix).")
        if labels.ndim != 2 or labels.shape[0] != flux.shape[0]:
            raise ValueError(f"labels {labels.shape} must be (n_star, n_label) with n_star = {flux.shape[0]} as in flux.")
        bad_rows = np.flatnonzero(~np.all(np.isfinite(labels), axis=1))
        if bad_rows.size:
            raise ValueError(f"labels contain NaN or inf in rows {bad_rows[:10].tolist()}; drop those stars before fitting.")
        if label_names is None:
            label_names = [f"label_{index}" for index in range(labels.shape[1])]
        label_names = [str(name) for name in label_names]
        if len(label_names) != labels.shape[1]:
            raise ValueError(f"{len(label_names)} label names for {labels.shape[1]} labels.")
        good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
        empty_rows = np.flatnonzero(~good.any(axis=1))
        if empty_rows.size:
            raise ValueError(
                f"training spectra {empty_rows[:10].tolist()} have no good pixel (ivar <= 0 or non-finite "
                "everywhere); remove them from the training set."
            )
        return flux, labels, good, label_names

    def fit(
        self,
        flux: np.ndarray,
        ivar: np.ndarray,
        labels: np.ndarray,
        label_names: list[str] | None = None,
        *,
        wave: np.ndarray | None = None,
        checkpoint_dir: str | Path | None = None,
        scheduler: "str | distributed.Client | None" = None,
    ) -> "SlamModel":
        """Train one SVR per pixel, choosing (C, gamma) by k-fold cross-validation.

        Parameters
        ----------
        flux : ndarray, shape (n_star, n_pix)
            Continuum-normalized training flux on a common grid.
        ivar : ndarray, shape (n_star, n_pix)
            Its inverse variance; pixels with ivar <= 0 or non-finite values are left
            out of that pixel's fits and CV scores.
        labels : ndarray, shape (n_star, n_label)
            Training labels in physical units.
        label_names : list of str, optional
        wave : ndarray, shape (n_pix,), optional
            The wavelength grid, stored with the model.
        checkpoint_dir : str or Path, optional
            Train block by block and write each finished block of pixels to this directory
            (:mod:`slamlib.checkpoint`). Fitting again with the same directory resumes an
            interrupted training and gives the same model as an uninterrupted run. A directory
            holding the checkpoint of different data or parameters raises
            :class:`slamlib.checkpoint.CheckpointMismatchError` instead of being reused.
        scheduler : str or distributed.Client, optional
            Train on a Dask cluster: the address of its scheduler (e.g. ``"tcp://127.0.0.1:8786"``)
            or a connected ``distributed.Client``; one task per block of pixels
            (:mod:`slamlib.scaleout`). With ``checkpoint_dir`` every finished block is also
            written there. None (default): train on this machine with ``n_jobs`` workers.

        Returns
        -------
        SlamModel
            ``self``, fitted.
        """
        flux, labels, good, label_names = self._check_training_input(flux, ivar, labels, label_names)
        check_scheduler(scheduler)
        if wave is not None and np.shape(wave) != (flux.shape[1],):
            raise ValueError(f"wave has shape {np.shape(wave)}, expected ({flux.shape[1]},).")
        folds = svr_folds.kfold_indices(flux.shape[0], self.cv, self.random_state)
        flux_scaler = Standardizer.fit(flux, good=good)
        label_scaler = Standardizer.fit(labels)
        flux_std = np.where(good, flux_scaler.transform(np.where(good, flux, 0.0)), 0.0)
        labels_std = label_scaler.transform(labels)
        from slamlib.svr import batched, libsvm

        train_pixels = {"libsvm": libsvm.train_pixels, "batched": batched.train_pixels}[self.backend]
        start = time.perf_counter()
        if scheduler is not None:
            from slamlib.scaleout import train_pixels_on_cluster

            result = train_pixels_on_cluster(
                train_pixels, labels_std, flux_std, good, folds, self.param_grid, self.epsilon,
                min_good_stars=2 * self.cv, scheduler=scheduler, checkpoint_dir=checkpoint_dir, backend=self.backend,
            )
        elif checkpoint_dir is None:
            result = train_pixels(
                labels_std, flux_std, good, folds, self.param_grid, self.epsilon,
                min_good_stars=2 * self.cv, n_jobs=self.n_jobs,
            )
        else:
            from slamlib.checkpoint import train_pixels_resumable

            result = train_pixels_resumable(
                train_pixels, labels_std, flux_std, good, folds, self.param_grid, self.epsilon,
                min_good_stars=2 * self.cv, n_jobs=self.n_jobs, checkpoint_dir=checkpoint_dir,
                backend=self.backend,
            )
        self._set_fitted(result, flux_scaler, label_scaler, label_names, None if wave is None else np.asarray(wave, float))
        self.training_seconds_ = time.perf_counter() - start
        return self

    def _set_fitted(self, result: TrainingResult, flux_scaler, label_scaler, label_names, wave) -> None:
        self.training_ = result
        self.flux_scaler_ = flux_scaler
        self.label_scaler_ = label_scaler
        self.label_names_ = list(label_names)
        self.wave_ = wave
        self.__dict__.pop("training_model_flux_", None)

    def _require_fitted(self) -> TrainingResult:
        if not hasattr(self, "training_"):
            raise ValueError("this SlamModel is not fitted yet; call fit() or SlamModel.load() first.")
        return self.training_

    # ---------------------------------------------------------- fitted attributes
    @property
    def best_params_(self) -> list[dict[str, float]]:
        result = self._require_fitted()
        return [{"C": float(c), "gamma": float(g)} for c, g in zip(result.best_c, result.best_gamma)]

    @property
    def cv_mse_(self) -> np.ndarray:
        return self._require_fitted().cv_mse

    @property
    def cv_md_(self) -> np.ndarray:
        return self._require_fitted().cv_md

    @property
    def mse_(self) -> np.ndarray:
        return self._require_fitted().mse

    @property
    def md_(self) -> np.ndarray:
        return self._require_fitted().md

    @property
    def cv_mse_grid_(self) -> np.ndarray:
        return self._require_fitted().cv_mse_grid

    @property
    def trained_(self) -> np.ndarray:
        return self._require_fitted().trained

    @property
    def n_pix_(self) -> int:
        return self._require_fitted().expansion.n_pix

    @property
    def model_variance_(self) -> np.ndarray:
        """Model variance per pixel in normalized-flux units: CV MSE times the flux scale squared."""
        result = self._require_fitted()
        return np.where(result.trained, result.cv_mse, np.inf) * self.flux_scaler_.scale**2

    @cached_property
    def training_model_flux_(self) -> np.ndarray:
        """Model spectra at the training labels, shape (n_train, n_pix); used for the initial guess."""
        expansion = self._require_fitted().expansion
        return self.flux_scaler_.inverse_transform(expansion.evaluate(expansion.support_labels))

    # ---------------------------------------------------------------- prediction
    def predict_spectrum(self, labels: np.ndarray) -> np.ndarray:
        """Normalized model flux for labels in physical units.

        Parameters
        ----------
        labels : ndarray, shape (n_label,) or (n_spec, n_label)

        Returns
        -------
        ndarray, shape (n_pix,) or (n_spec, n_pix)
        """
        result = self._require_fitted()
        labels = np.asarray(labels, dtype=float)
        single = labels.ndim == 1
        labels = np.atleast_2d(labels)
        if labels.shape[1] != result.expansion.n_label:
            raise ValueError(f"labels have {labels.shape[1]} columns, the model {result.expansion.n_label} labels.")
        flux = self.flux_scaler_.inverse_transform(result.expansion.evaluate(self.label_scaler_.transform(labels)))
        return flux[0] if single else flux

    def predict(
        self,
        flux: np.ndarray,
        ivar: np.ndarray,
        *,
        prior: GaussianPrior | None = None,
        n_jobs: int | None = None,
        method: str = "batched",
        scheduler: "str | distributed.Client | None" = None,
        ensemble: bool = False,
    ) -> "PredictionResult | EnsemblePrediction":
        """Labels of one spectrum or a batch by maximum likelihood (Eq. 8).

        Parameters
        ----------
        flux, ivar : ndarray, shape (n_pix,) or (n_spec, n_pix)
            Normalized flux and inverse variance on the training grid.
        prior : GaussianPrior, optional
            Independent Gaussian priors on the labels (physical units).
        n_jobs : int, optional
            Workers over chunks of spectra for the reference method (default: the model's ``n_jobs``).
        method : {"batched", "reference"}
            "batched" (default): MINPACK's Levenberg-Marquardt run step for step on many spectra
            at once, all kernel work as matrix products (9-15x faster than the reference on 2
            cores, labels equal to it within 1e-8 of the formal errors; see the README);
            "reference": ``scipy.optimize.least_squares(method="lm")`` per spectrum, in
            parallel over chunks.
        scheduler : str or distributed.Client, optional
            Fit on a Dask cluster: the address of its scheduler (e.g. ``"tcp://127.0.0.1:8786"``)
            or a connected ``distributed.Client``; one task per chunk of 256 spectra
            (:mod:`slamlib.scaleout`), the same labels as locally (bit for bit with the reference
            method). None (default): fit on this machine.
        ensemble : bool
            Also fit every spectrum with each of the k CV sub-models (each trained without one
            fold of the training stars) and return an :class:`slamlib.ensemble.EnsemblePrediction`
            whose ``ensemble_errors`` (grouped jackknife over the sub-models) measure how much
            the labels depend on the training set, and ``total_errors`` add them to the formal
            errors in quadrature (paper Section 5.2). Costs k + 1 fits per spectrum.

        Returns
        -------
        PredictionResult or EnsemblePrediction
            ``labels``, ``errors``, ``cov``, ``converged``, ``rchi2``, ``rms``, ``n_iter``,
            ``reason``; spectra that cannot be fitted are flagged, not raised. With
            ``ensemble=True`` an :class:`~slamlib.ensemble.EnsemblePrediction` wrapping it.
        """
        result = self._require_fitted()
        predict = label_predictor(scheduler)
        n_jobs = self.n_jobs if n_jobs is None else n_jobs
        common = dict(flux_scaler=self.flux_scaler_, label_scaler=self.label_scaler_, model_variance=self.model_variance_,
                      usable=result.trained, label_names=self.label_names_, prior=prior, n_jobs=n_jobs, method=method)
        prediction = predict(flux, ivar, expansion=result.expansion, training_model_flux=self.training_model_flux_,
                             training_labels_std=result.expansion.support_labels, **common)
        if not ensemble:
            return prediction
        if result.fold_expansions is None:
            raise ValueError("ensemble=True needs the CV sub-models, which this model does not hold (saved with "
                             "include_cv_models=False); retrain it or load a file saved with them.")
        members = []
        for fold_number, fold_expansion in enumerate(result.fold_expansions):
            fit_labels_std = result.expansion.support_labels[result.fold_of_star != fold_number]
            members.append(predict(
                flux, ivar, expansion=fold_expansion,
                training_model_flux=self.flux_scaler_.inverse_transform(fold_expansion.evaluate(fit_labels_std)),
                training_labels_std=fit_labels_std, **common))
        return EnsemblePrediction.from_members(prediction, members)

    def predict_cv(
        self,
        flux: np.ndarray,
        ivar: np.ndarray,
        *,
        prior: GaussianPrior | None = None,
        n_jobs: int | None = None,
        scheduler: "str | distributed.Client | None" = None,
    ) -> PredictionResult:
        """Cross-validated labels of the training spectra.

        Every training star is fitted with the CV fold models (each pixel at its chosen C and
        gamma) that were trained without it, so the result measures how well SLAM labels stars
        it has not seen: the paper's CV scatter and bias (Eqs. 9-10), and the leave-one-fold-out
        clipping of Section 4.2.

        Parameters
        ----------
        flux, ivar : ndarray, shape (n_train, n_pix)
            The training spectra, in the order given to :meth:`fit`.
        prior : GaussianPrior, optional
        n_jobs : int, optional
        scheduler : str or distributed.Client, optional
            Fit on a Dask cluster, as in :meth:`predict` (pass a Client rather than an address
            to connect once for all folds).

        Returns
        -------
        PredictionResult
            One row per training star.
        """
        result = self._require_fitted()
        predict = label_predictor(scheduler)
        if result.fold_expansions is None:
            raise ValueError("this model holds no CV fold models (saved without them); retrain it to get CV labels.")
        n_train = result.expansion.support_labels.shape[0]
        flux = np.asarray(flux, dtype=float)
        ivar = np.asarray(ivar, dtype=float)
        if flux.shape[0] != n_train or ivar.shape != flux.shape:
            raise ValueError(f"predict_cv needs the {n_train} training spectra in fit order, got flux {flux.shape}, ivar {ivar.shape}.")
        parts, positions = [], []
        for fold_number, fold_expansion in enumerate(result.fold_expansions):
            held_out = np.flatnonzero(result.fold_of_star == fold_number)
            fit_stars = np.flatnonzero(result.fold_of_star != fold_number)
            fit_labels_std = result.expansion.support_labels[fit_stars]
            parts.append(predict(
                flux[held_out], ivar[held_out],
                expansion=fold_expansion, flux_scaler=self.flux_scaler_, label_scaler=self.label_scaler_,
                model_variance=self.model_variance_, usable=result.trained,
                training_model_flux=self.flux_scaler_.inverse_transform(fold_expansion.evaluate(fit_labels_std)),
                training_labels_std=fit_labels_std, label_names=self.label_names_, prior=prior,
                n_jobs=self.n_jobs if n_jobs is None else n_jobs,
            ))
            positions.append(held_out)
        return PredictionResult.combine(parts, positions, n_train)

    # -------------------------------------------------------------- persistence
    def get_params(self) -> dict[str, Any]:
        """Constructor parameters."""
        return {"param_grid": self.param_grid, "epsilon": self.epsilon, "cv": self.cv, "n_jobs": self.n_jobs,
                "random_state": self.random_state, "backend": self.backend}

    def save(self, path: str | Path, *, include_cv_models: bool = True) -> Path:
        """Write the fitted model as a versioned, checksummed, non-pickle ``.npz`` file.

        Parameters
        ----------
        path : str or Path
        include_cv_models : bool
            Also store the CV fold models (needed by :meth:`predict_cv`; they make the file
            about ``cv`` times larger).

        See :mod:`slamlib.modelfile` for the format.
        """
        result = self._require_fitted()
        expansion = result.expansion
        arrays = {
            "flux_mean": self.flux_scaler_.mean, "flux_scale": self.flux_scaler_.scale,
            "label_mean": self.label_scaler_.mean, "label_scale": self.label_scaler_.scale,
            "best_c": result.best_c, "best_gamma": result.best_gamma, "cv_mse_grid": result.cv_mse_grid,
            "cv_mse": result.cv_mse, "cv_md": result.cv_md, "mse": result.mse, "md": result.md,
            "trained": result.trained, "support_labels": expansion.support_labels,
            "dual_coef": expansion.dual_coef, "intercept": expansion.intercept, "gamma": expansion.gamma,
        }
        if self.wave_ is not None:
            arrays["wave"] = self.wave_
        if include_cv_models and result.fold_expansions is not None:
            arrays["fold_dual_coef"] = np.stack([fold.dual_coef for fold in result.fold_expansions])
            arrays["fold_intercept"] = np.stack([fold.intercept for fold in result.fold_expansions])
            arrays["fold_of_star"] = result.fold_of_star
        metadata = {"params": self.get_params(), "label_names": self.label_names_,
                    "grid_pairs": parameter_pairs(self.param_grid), "n_train": int(expansion.support_labels.shape[0])}
        return modelfile.save_arrays(path, arrays, metadata)

    @classmethod
    def load(cls, path: str | Path) -> "SlamModel":
        """Read a model written by :meth:`save` (never executes code from the file)."""
        arrays, header = modelfile.load_arrays(path)
        missing = [name for name in _SAVED_ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"{path} lacks the arrays {missing}; it is not a complete SlamModel file.")
        params = header["metadata"]["params"]
        model = cls(**params)
        expansion = KernelExpansion(arrays["support_labels"], arrays["dual_coef"], arrays["intercept"], arrays["gamma"])
        result = TrainingResult(
            best_c=arrays["best_c"], best_gamma=arrays["best_gamma"], cv_mse_grid=arrays["cv_mse_grid"],
            cv_mse=arrays["cv_mse"], cv_md=arrays["cv_md"], mse=arrays["mse"], md=arrays["md"],
            trained=arrays["trained"].astype(bool), expansion=expansion,
        )
        if "fold_dual_coef" in arrays:
            fold_expansions = [KernelExpansion(arrays["support_labels"], coefficients, intercept, arrays["gamma"])
                               for coefficients, intercept in zip(arrays["fold_dual_coef"], arrays["fold_intercept"])]
            result = dataclasses.replace(result, fold_expansions=fold_expansions, fold_of_star=arrays["fold_of_star"])
        model._set_fitted(
            result, Standardizer(arrays["flux_mean"], arrays["flux_scale"]),
            Standardizer(arrays["label_mean"], arrays["label_scale"]),
            header["metadata"]["label_names"], arrays.get("wave"),
        )
        model.file_header_ = header
        return model
