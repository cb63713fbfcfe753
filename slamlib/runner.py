"""Where training and prediction run: this process by default, or a runner from the pipelines.

:class:`slamlib.SlamModel` hands its work to a *runner*: ``fit`` calls
``runner.train(problem, backend, n_jobs=...)`` and ``predict`` / ``predict_cv`` call
``runner.predict_labels(flux, ivar, state, **options)``. :class:`LocalRunner` (the default)
trains with the backend in this process and fits the labels with
:func:`slamlib.fitting.predict_labels`. The pipelines provide runners with the same methods
that train block by block with a checkpoint (:class:`slamlib.pipeline.checkpoint.ResumableTraining`)
or on a Dask cluster (:class:`slamlib.pipeline.scaleout.DaskRunner`); the core never imports them.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from slamlib.fitting import PredictionResult, predict_labels
from slamlib.state import FittedState
from slamlib.svr.backend import Backend
from slamlib.svr.problem import TrainingProblem
from slamlib.svr.result import TrainingResult

__all__ = ["TrainingRunner", "PredictionRunner", "LocalRunner"]


@runtime_checkable
class TrainingRunner(Protocol):
    """Trains a problem with a backend (``SlamModel.fit(..., runner=...)``)."""

    def train(self, problem: TrainingProblem, backend: Backend, *, n_jobs: int) -> TrainingResult:
        """All pixels of ``problem``, trained with ``backend``."""
        ...


@runtime_checkable
class PredictionRunner(Protocol):
    """Fits labels with a fitted state (``SlamModel.predict(..., runner=...)``)."""

    def predict_labels(self, flux: np.ndarray, ivar: np.ndarray, state: FittedState, **options: Any) -> PredictionResult:
        """The arguments and result of :func:`slamlib.fitting.predict_labels`."""
        ...


class LocalRunner:
    """Train and predict in this process (joblib workers and threads): the default runner."""

    def __repr__(self) -> str:
        return "LocalRunner()"

    def train(self, problem: TrainingProblem, backend: Backend, *, n_jobs: int) -> TrainingResult:
        """``backend.train(problem, n_jobs=n_jobs)``."""
        return backend.train(problem, n_jobs=n_jobs)

    def predict_labels(self, flux: np.ndarray, ivar: np.ndarray, state: FittedState, **options: Any) -> PredictionResult:
        """:func:`slamlib.fitting.predict_labels`."""
        return predict_labels(flux, ivar, state, **options)
