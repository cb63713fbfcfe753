"""slamlib: the Stellar LAbel Machine (Zhang, Liu & Deng 2020, ApJS 246, 9).

A data-driven forward model: one support vector regression per wavelength pixel maps
stellar labels to normalized flux; labels of new spectra follow by maximum likelihood.

Main entry points: :class:`slamlib.SlamModel`, :func:`slamlib.io.read_lamost`,
:func:`slamlib.preprocess.prepare`, :mod:`slamlib.mock`, :mod:`slamlib.metrics`.
"""

__version__ = "0.2.0"

from slamlib.fitting import GaussianPrior, PredictionResult
from slamlib.model import SlamModel

__all__ = ["SlamModel", "PredictionResult", "GaussianPrior", "__version__"]
