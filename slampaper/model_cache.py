"""Trained models cached on disk by a hash of what made them, shared between chapters.

A model is identified by the data it was trained on (the data set's cache key), the
model's constructor parameters and the versions of slamlib and of the numerical libraries
(:func:`slamlib.modelfile.library_versions`), so an upgrade that changes the numbers retrains.
The first call trains and saves ``models/<hash>.npz`` (the regular model file) and
``models/<hash>.json`` (the parameters and the training time); later calls with the same key
load the file instead of retraining.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from slamlib.files import write_json_atomically
from slamlib.model import SlamModel
from slamlib.modelfile import library_versions
from slamlib.pipeline.cache import cache_dir, parameter_hash

__all__ = ["cached_model", "cached_trainer"]


def cached_model(
    data_key: str,
    model_parameters: dict[str, Any],
    fit: Callable[[SlamModel], SlamModel],
    *,
    use_cache: bool = True,
) -> tuple[SlamModel, dict[str, Any]]:
    """Load the model trained on ``data_key`` with ``model_parameters``, or train and cache it.

    Parameters
    ----------
    data_key : str
        Identifies the training data (e.g. a data set's ``cache_key`` plus a subset name).
    model_parameters : dict
        Keyword arguments of :class:`SlamModel`; ``n_jobs`` does not enter the key, as it does
        not change the result (with either backend).
    fit : callable
        ``fit(model)`` trains the fresh model and returns it.
    use_cache : bool
        False trains without reading or writing the cache.

    Returns
    -------
    model : SlamModel
    provenance : dict
        ``training_seconds`` (of the run that trained it), ``from_cache`` and ``key``.
    """
    key_parameters = {key: value for key, value in model_parameters.items() if key != "n_jobs"}
    key = parameter_hash({"data": data_key, "model": key_parameters, "library_versions": library_versions()})
    directory = cache_dir() / "models"
    model_path, info_path = directory / f"{key}.npz", directory / f"{key}.json"
    if use_cache and model_path.is_file() and info_path.is_file():
        try:
            model = SlamModel.load(model_path)
        except ValueError:
            model = None  # a damaged entry is retrained below
        if model is not None:
            model.n_jobs = int(model_parameters.get("n_jobs", model.n_jobs))
            provenance = json.loads(info_path.read_text())
            return model, {**provenance, "from_cache": True}
    start = time.perf_counter()
    model = fit(SlamModel(**model_parameters))
    provenance = {"key": key, "data": data_key, "model_parameters": key_parameters,
                  "training_seconds": time.perf_counter() - start}
    if use_cache:
        directory.mkdir(parents=True, exist_ok=True)
        model.save(model_path)
        write_json_atomically(info_path, provenance)
    return model, {**provenance, "from_cache": False}


def cached_trainer(data_key: str, model_parameters: dict[str, Any]) -> Callable[[str, Callable[[SlamModel], SlamModel]], SlamModel]:
    """A ``train_model`` for :func:`slamlib.cod.leave_one_label_out` that takes every model from
    the cache (or trains and stores it), keyed by ``data_key/name`` and ``model_parameters``."""

    def train_model(name: str, fit: Callable[[SlamModel], SlamModel]) -> SlamModel:
        return cached_model(f"{data_key}/{name}", model_parameters, fit)[0]

    return train_model
