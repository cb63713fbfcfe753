"""slamlib: the Stellar LAbel Machine (Zhang, Liu & Deng 2020, ApJS 246, 9).

A data-driven forward model: one support vector regression per wavelength pixel maps
stellar labels to normalized flux; labels of new spectra follow by maximum likelihood.

This package is the method, in the paper's order:

* :mod:`slamlib.io` and :mod:`slamlib.preprocess` -- reading LAMOST spectra, rest frame,
  pseudo-continuum, the common wavelength grid (Section 2.1);
* :mod:`slamlib.scaling` -- per-pixel standardization;
* :mod:`slamlib.svr` -- the training problem, CV folds, the RBF kernel, the training backends
  (Section 2.2);
* :mod:`slamlib.fitting` and :mod:`slamlib.fitting_batched` -- label prediction by
  Levenberg-Marquardt, formal errors, flags (Section 2.3);
* :mod:`slamlib.model` (:class:`SlamModel`), :mod:`slamlib.state` (the fitted state) and
  :mod:`slamlib.modelfile` (its file);
* :mod:`slamlib.metrics`, :mod:`slamlib.cod`, :mod:`slamlib.ensemble` -- CV scatter and bias,
  the error model, coefficients of dependence, ensemble errors (Sections 2.3.1, 5, 6).

Beside it, and built on it: :mod:`slamlib.pipeline` (the ``slam`` command, checkpointed and
Dask training, catalogue prediction), :mod:`slamlib.mock` (the embedded mock survey) and
:mod:`slamlib.data` (real survey access). The paper's reproduction is the separate package
:mod:`slampaper`. Importing this package loads none of them.
"""

__version__ = "0.3.1"

from slamlib.fitting import GaussianPrior, PredictionResult
from slamlib.model import SlamModel
from slamlib.state import FittedState
from slamlib.svr.problem import TrainingProblem

__all__ = ["SlamModel", "PredictionResult", "GaussianPrior", "FittedState", "TrainingProblem", "__version__"]
