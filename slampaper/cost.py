"""Section 5.3 of the paper: what SLAM costs — training and prediction time measured on this machine.

The paper reports about one day to train the K-giant model on ~17,000 stars and "less than one
minute" to label one spectrum. :func:`measure_cost` times a fresh training (no cache) and the
prediction of a batch of spectra for each backend, on a sample and pixel range the caller chooses.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table

from slamlib.model import SlamModel
from slampaper.paper import paper_value
from slampaper.paths import project_root

__all__ = ["PAPER_COST", "CostMeasurement", "measure_cost", "cost_table", "prediction_cost_table", "latest_scale_report",
           "scale_table"]

#: The paper's reported costs (Section 5.3).
PAPER_COST = {"training_seconds_17k_stars": paper_value("section5.training_seconds_section4"),
              "prediction_seconds_per_spectrum": paper_value("section5.prediction_seconds_per_spectrum")}


@dataclass(frozen=True)
class CostMeasurement:
    """Timings of one backend.

    Attributes
    ----------
    backend : str
    n_train, n_pix, n_grid, n_folds, n_predicted : int
    training_seconds : float
    prediction_seconds : float
        For ``n_predicted`` spectra.
    model : SlamModel
        The model that was timed (for further measurements).
    """

    backend: str
    n_train: int
    n_pix: int
    n_grid: int
    n_folds: int
    n_predicted: int
    training_seconds: float
    prediction_seconds: float
    model: SlamModel | None = field(default=None, repr=False, compare=False)

    @property
    def spectra_per_second(self) -> float:
        """Prediction throughput."""
        return self.n_predicted / self.prediction_seconds

    @property
    def fits_per_second(self) -> float:
        """SVR fits per second: pixels x grid points x (folds + 1 refit) / training time."""
        return self.n_pix * self.n_grid * (self.n_folds + 1) / self.training_seconds


def measure_cost(
    flux_train: np.ndarray, ivar_train: np.ndarray, labels_train: np.ndarray,
    flux_test: np.ndarray, ivar_test: np.ndarray,
    *, backends: list[str], param_grid: dict[str, list[float]], epsilon: float = 0.05, cv: int = 5,
    n_jobs: int = -1, random_state: int = 0,
) -> list[CostMeasurement]:
    """Train (without the cache) and predict with each backend, and time both."""
    measurements = []
    n_grid = len(param_grid["C"]) * len(param_grid["gamma"])
    for backend in backends:
        model = SlamModel(param_grid=param_grid, epsilon=epsilon, cv=cv, n_jobs=n_jobs, random_state=random_state,
                          backend=backend)
        start = time.perf_counter()
        model.fit(flux_train, ivar_train, labels_train)
        training_seconds = time.perf_counter() - start
        start = time.perf_counter()
        model.predict(flux_test, ivar_test)
        prediction_seconds = time.perf_counter() - start
        measurements.append(CostMeasurement(backend, flux_train.shape[0], flux_train.shape[1], n_grid, cv,
                                            flux_test.shape[0], training_seconds, prediction_seconds, model))
    return measurements


def cost_table(measurements: list[CostMeasurement]) -> Table:
    """One row per backend: sizes, training time, SVR fits per second and prediction rate."""
    table = Table(rows=[(m.backend, m.n_train, m.n_pix, m.n_grid, m.n_folds, m.training_seconds, m.fits_per_second,
                         m.n_predicted, m.prediction_seconds, m.spectra_per_second) for m in measurements],
                  names=["backend", "n_train", "n_pix", "n_grid", "n_folds", "training_seconds", "svr_fits_per_second",
                         "n_predicted", "prediction_seconds", "spectra_per_second"])
    for column in ("training_seconds", "svr_fits_per_second", "prediction_seconds", "spectra_per_second"):
        table[column].info.format = ".1f"
    return table


def prediction_cost_table(model: SlamModel, flux: np.ndarray, ivar: np.ndarray, *,
                          methods: tuple[str, ...] = ("batched", "reference"), ensemble: bool = True) -> Table:
    """Time label prediction of the same spectra by each prediction method (and the CV ensemble).

    Parameters
    ----------
    model : SlamModel
        A fitted model.
    flux, ivar : ndarray, shape (n_spec, n_pix)
    methods : tuple of str
        ``SlamModel.predict`` methods to time.
    ensemble : bool
        Also time ``predict(..., ensemble=True)`` with the first method (k + 1 fits per spectrum).

    Returns
    -------
    astropy.table.Table
        ``what``, ``n_spectra``, ``seconds``, ``spectra_per_second``.
    """
    rows = []
    runs = [(f"predict(method={method!r})", {"method": method}) for method in methods]
    if ensemble:
        runs.append((f"predict(method={methods[0]!r}, ensemble=True)", {"method": methods[0], "ensemble": True}))
    for name, options in runs:
        start = time.perf_counter()
        model.predict(flux, ivar, **options)
        seconds = time.perf_counter() - start
        rows.append((name, flux.shape[0], seconds, flux.shape[0] / seconds))
    table = Table(rows=rows, names=["what", "n_spectra", "seconds", "spectra_per_second"])
    for column in ("seconds", "spectra_per_second"):
        table[column].info.format = ".1f"
    return table


def latest_scale_report(results_dir: str | Path | None = None) -> dict | None:
    """The newest report of ``make benchmark-scale`` (``benchmarks/results/scale_*.json``), or None.

    The report is generated on the reader's machine (it is not part of the repository); its
    file name and modification time say when it was measured.
    """
    directory = Path(results_dir) if results_dir is not None else project_root() / "benchmarks" / "results"
    reports = sorted(directory.glob("scale_*.json"))
    if not reports:
        return None
    report = json.loads(reports[-1].read_text())
    report["report_file"] = reports[-1].name
    return report


def scale_table(report: dict) -> Table:
    """Per gamma: the engine, the measured time and its projection to all pixels, from a scale report.

    Returns
    -------
    astropy.table.Table
        ``gamma``, ``engine``, ``factor_rank`` (at least, for nearly full-rank gammas), ``projected_hours``.
    """
    rows = []
    for gamma, entry in sorted(report["gammas"].items(), key=lambda item: float(item[0])):
        rank = entry.get("factor_rank", entry.get("factor_rank_at_least"))
        rows.append((float(gamma), entry["engine"], int(rank), entry["projected_seconds_all_pixels"] / 3600.0))
    table = Table(rows=rows, names=["gamma", "engine", "factor_rank", "projected_hours"])
    table["gamma"].info.format = ".4g"
    table["projected_hours"].info.format = ".1f"
    return table
