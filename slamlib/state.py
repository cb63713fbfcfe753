"""The fitted state of a SLAM model: everything prediction needs, in one object with one file layout.

A trained model is the per-pixel training result (:class:`~slamlib.svr.result.TrainingResult`:
hyperparameters, CV statistics and the kernel expansions) plus the standardization of the flux
and of the labels, the label names and the wavelength grid. :class:`FittedState` holds them;
label prediction (:func:`slamlib.fitting.predict_labels`), the model file
(:meth:`FittedState.to_arrays` / :meth:`FittedState.from_arrays`) and the cluster
(:mod:`slamlib.pipeline.scaleout`) all take this one object.

A CV sub-model (the models trained without one fold of the stars, paper Section 2.2) is a
``FittedState`` too (:meth:`FittedState.sub_model`): the same scalers and model variance with
that fold's expansion, whose initial guesses come from the stars it was trained on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from slamlib.scaling import Standardizer
from slamlib.svr.kernel import KernelExpansion
from slamlib.svr.result import TrainingResult

if TYPE_CHECKING:
    from slamlib.fitting import TrustLimits
    from slamlib.metrics import CVErrorModel

__all__ = ["FittedState", "STATE_ARRAYS"]

#: Arrays of the state beyond the training result's :data:`~slamlib.svr.result.PIXEL_ARRAYS`.
STATE_ARRAYS = ("flux_mean", "flux_scale", "label_mean", "label_scale", "support_labels")


@dataclass(frozen=True, eq=False)
class FittedState:
    """A trained SLAM model in standardized units, with the scalings that return to physical ones.

    Attributes
    ----------
    training : TrainingResult
        Per-pixel hyperparameters, CV statistics and models.
    flux_scaler : Standardizer
        Per-pixel standardization of the training flux, shape (n_pix,).
    label_scaler : Standardizer
        Standardization of the training labels, shape (n_label,).
    label_names : tuple of str
    wave : ndarray, shape (n_pix,), optional
        The wavelength grid.
    start_stars : ndarray of int, optional
        Training stars whose model spectra seed the initial guess (default: all; a CV
        sub-model uses the stars it was trained on).
    cv_rchi2, cv_max_residual : ndarray, shape (n_train,), optional
        How well the CV sub-models describe the training stars they did not see
        (:func:`slamlib.fitting.cv_fit_quality`): they set :attr:`trust_limits`. None for
        models saved before slamlib recorded them.
    error_model : CVErrorModel, optional
        The Table 1 error model fitted on the CV labels of the training stars
        (:func:`slamlib.metrics.fit_cv_error_model`): the ``errors_cv`` of a prediction. None for
        models saved before slamlib fitted it (their ``errors_cv`` are NaN).
    """

    training: TrainingResult
    flux_scaler: Standardizer
    label_scaler: Standardizer
    label_names: tuple[str, ...]
    wave: np.ndarray | None = None
    start_stars: np.ndarray | None = None
    cv_rchi2: np.ndarray | None = None
    cv_max_residual: np.ndarray | None = None
    error_model: "CVErrorModel | None" = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_names", tuple(str(name) for name in self.label_names))
        if len(self.label_names) != self.expansion.n_label:
            raise ValueError(f"{len(self.label_names)} label names for a model of {self.expansion.n_label} labels.")
        if self.error_model is not None and self.error_model.n_label != self.expansion.n_label:
            raise ValueError(f"an error model of {self.error_model.n_label} labels for a model of "
                             f"{self.expansion.n_label} labels.")

    @property
    def trust_limits(self) -> TrustLimits:
        """The fit-quality limits of a trusted prediction (:class:`slamlib.fitting.TrustLimits`)."""
        from slamlib.fitting import TrustLimits

        if self.cv_rchi2 is None or self.cv_max_residual is None:
            return TrustLimits.default()
        return TrustLimits.from_cv_residuals(self.cv_rchi2, self.cv_max_residual)

    @property
    def expansion(self) -> KernelExpansion:
        """The per-pixel models used for prediction."""
        return self.training.expansion

    @property
    def n_pix(self) -> int:
        """Pixels."""
        return self.expansion.n_pix

    @property
    def n_label(self) -> int:
        """Labels."""
        return self.expansion.n_label

    @property
    def usable(self) -> np.ndarray:
        """Trained pixels, shape (n_pix,): the others are ignored when predicting."""
        return self.training.trained

    @property
    def model_variance(self) -> np.ndarray:
        """Model variance per pixel in normalized-flux units: CV MSE times the flux scale squared
        (infinite at untrained pixels), shape (n_pix,)."""
        return np.where(self.training.trained, self.training.cv_mse, np.inf) * self.flux_scaler.scale**2

    @property
    def training_labels_std(self) -> np.ndarray:
        """Standardized labels of the stars that seed the initial guess, shape (n_start, n_label)."""
        labels = self.expansion.support_labels
        return labels if self.start_stars is None else labels[self.start_stars]

    @cached_property
    def training_model_flux(self) -> np.ndarray:
        """Model spectra at :attr:`training_labels_std` in flux units, shape (n_start, n_pix)."""
        return self.flux_scaler.inverse_transform(self.expansion.evaluate(self.training_labels_std))

    def model_flux(self, labels: np.ndarray) -> np.ndarray:
        """Normalized model flux at labels in physical units, shape (n_spec, n_pix)."""
        return self.flux_scaler.inverse_transform(self.expansion.evaluate(self.label_scaler.transform(labels)))

    def without_cv_models(self) -> "FittedState":
        """The same model without the CV sub-models (what prediction ships to cluster workers)."""
        if self.training.fold_expansions is None:
            return self
        return dataclasses.replace(self, training=dataclasses.replace(self.training, fold_expansions=None,
                                                                      fold_of_star=None))

    def sub_model(self, fold: int) -> "FittedState":
        """The CV sub-model trained without fold ``fold``'s stars.

        Raises
        ------
        ValueError
            If the model holds no CV sub-models, or for a fold it does not have.
        """
        training = self.training
        if training.fold_expansions is None or training.fold_of_star is None:
            raise ValueError("this model holds no CV sub-models (saved with include_cv_models=False); retrain it or "
                             "load a file saved with them.")
        if not 0 <= fold < len(training.fold_expansions):
            raise ValueError(f"fold {fold} does not exist; the model has {len(training.fold_expansions)} folds.")
        fold_training = dataclasses.replace(training, expansion=training.fold_expansions[fold], fold_expansions=None,
                                            fold_of_star=None)
        return dataclasses.replace(self, training=fold_training,
                                   start_stars=np.flatnonzero(training.fold_of_star != fold))

    @property
    def n_folds(self) -> int:
        """CV sub-models held (0 when saved without them)."""
        folds = self.training.fold_expansions
        return 0 if folds is None else len(folds)

    # ---------------------------------------------------------------- the file layout
    def to_arrays(self, *, include_cv_models: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The state as plain arrays and JSON metadata (:mod:`slamlib.modelfile` writes them).

        Returns
        -------
        arrays : dict of str to ndarray
            :data:`STATE_ARRAYS`, the training result's arrays, ``wave`` if known and
            ``fold_of_star`` with the CV models, ``cv_rchi2`` and ``cv_max_residual`` if known, and
            the error model's arrays (:meth:`slamlib.metrics.CVErrorModel.to_arrays`) if fitted.
        metadata : dict
            ``label_names``.
        """
        arrays = {"flux_mean": self.flux_scaler.mean, "flux_scale": self.flux_scaler.scale,
                  "label_mean": self.label_scaler.mean, "label_scale": self.label_scaler.scale,
                  "support_labels": self.expansion.support_labels,
                  **self.training.to_arrays(include_cv_models=include_cv_models)}
        if self.wave is not None:
            arrays["wave"] = np.asarray(self.wave, dtype=float)
        if "fold_dual_coef" in arrays:
            arrays["fold_of_star"] = self.training.fold_of_star
        if self.cv_rchi2 is not None and self.cv_max_residual is not None:
            arrays["cv_rchi2"] = np.asarray(self.cv_rchi2, dtype=float)
            arrays["cv_max_residual"] = np.asarray(self.cv_max_residual, dtype=float)
        if self.error_model is not None:
            arrays.update(self.error_model.to_arrays())
        return arrays, {"label_names": list(self.label_names)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> "FittedState":
        """Rebuild the state written by :meth:`to_arrays`.

        Files written before slamlib stored the CV residuals or the error model load without them
        (default trust limits, NaN ``errors_cv``).

        Raises
        ------
        ValueError
            If an array or the label names are missing.
        """
        from slamlib.metrics import CVErrorModel

        missing = [name for name in STATE_ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"the model arrays lack {missing}; it is not a complete SlamModel file.")
        if "label_names" not in metadata:
            raise ValueError("the model metadata lack the label names; it is not a complete SlamModel file.")
        training = TrainingResult.from_arrays(arrays, arrays["support_labels"], arrays.get("fold_of_star"))
        return cls(training=training, flux_scaler=Standardizer(arrays["flux_mean"], arrays["flux_scale"]),
                   label_scaler=Standardizer(arrays["label_mean"], arrays["label_scale"]),
                   label_names=tuple(metadata["label_names"]), wave=arrays.get("wave"),
                   cv_rchi2=arrays.get("cv_rchi2"), cv_max_residual=arrays.get("cv_max_residual"),
                   error_model=CVErrorModel.from_arrays(arrays))
