"""Section 3 of the paper: SLAM trained on LASP labels of AFGK stars, tested in six S/N bins.

Train SLAM (and the quadratic Cannon for comparison) on the 120 < S/N_g < 140 training set with
the catalogue (LASP-like) labels Teff, log g, [Fe/H]; predict the labels of the test spectra;
compare with the catalogue labels per S/N bin (CV scatter and bias, Eqs. 9-10) and with the
formal errors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.table import Table

from slamlib.fitting import PredictionResult
from slamlib.metrics import scatter_by_snr
from slamlib.model import SlamModel
from slampaper.cannon import CannonCrossValidation, cross_validate
from slampaper.datasets import LASP_TEST_SNR_BINS, SurveySample
from slampaper.model_cache import cached_model
from slampaper.paper import paper_constants

__all__ = ["LASP_LABELS", "PAPER_HIGH_SNR_SCATTER", "LaspTestResult", "run_lasp_test", "ensemble_error_table",
           "model_parameters", "train_section3_model", "simulated_formal_errors", "FIGURE4_REFERENCE_STARS"]

#: Catalogue label columns SLAM is trained on, and their display names.
LASP_LABELS = {"teff_cat": "teff", "logg_cat": "logg", "feh_cat": "feh"}

#: The paper's CV scatter at S/N_g > 100 (abstract and Section 3.3).
PAPER_HIGH_SNR_SCATTER = dict(paper_constants()["section3"]["cv_scatter_high_snr"])


@dataclass(frozen=True)
class LaspTestResult:
    """Everything the Section 3 chapter shows.

    Attributes
    ----------
    model : SlamModel
    train, test : SurveySample
    prediction : PredictionResult
        SLAM labels of the test spectra.
    cannon : CannonCrossValidation
        The Cannon's cross-validation on the training set (for Figure 2).
    cannon_cv_mse_std, cannon_cv_md_std : ndarray, shape (n_pix,)
        The Cannon's CV MSE and MD converted to SLAM's standardized flux units.
    scatter_table : Table
        SLAM minus catalogue labels per S/N bin (bias, scatter, median formal error).
    scatter_table_truth : Table or None
        SLAM minus true labels per S/N bin (mock only).
    timings : dict
        ``training_seconds`` (of the run that trained the model, possibly cached),
        ``prediction_seconds`` and ``spectra_per_second``.
    """

    model: SlamModel
    train: SurveySample
    test: SurveySample
    prediction: PredictionResult
    cannon: CannonCrossValidation
    cannon_cv_mse_std: np.ndarray
    cannon_cv_md_std: np.ndarray
    scatter_table: Table
    scatter_table_truth: Table | None
    timings: dict[str, Any]


def model_parameters(param_grid: dict[str, list[float]], *, epsilon: float = 0.05, cv: int = 5, random_state: int = 0,
                     n_jobs: int = -1, backend: str = "batched") -> dict[str, Any]:
    """The ``SlamModel`` parameters of the Section 3 model (the key of its cached model)."""
    return {"param_grid": param_grid, "epsilon": epsilon, "cv": cv, "random_state": random_state, "n_jobs": n_jobs,
            "backend": backend}


def train_section3_model(train: SurveySample, parameters: dict[str, Any], *, use_cache: bool = True):
    """The Section 3 model (Teff, log g, [Fe/H] from the catalogue labels) of ``train``, from the model
    cache when it was trained before with these parameters (the COD chapter reuses it).

    Returns
    -------
    model : SlamModel
    provenance : dict
        From :func:`slampaper.model_cache.cached_model`.
    """
    label_columns, label_names = list(LASP_LABELS), list(LASP_LABELS.values())
    labels = train.label_array(label_columns)
    return cached_model(train.cache_key, parameters,
                        lambda fresh: fresh.fit(train.flux, train.ivar, labels, label_names, wave=train.wave),
                        use_cache=use_cache)


def run_lasp_test(
    sample: SurveySample,
    *,
    param_grid: dict[str, list[float]],
    epsilon: float = 0.05,
    cv: int = 5,
    random_state: int = 0,
    n_jobs: int = -1,
    backend: str = "batched",
    use_cache: bool = True,
) -> LaspTestResult:
    """Train on the training set, predict the test set, and tabulate the errors per S/N bin."""
    is_train = np.asarray(sample.labels["set"]) == "train"
    train = sample.subset(is_train, "train")
    test = sample.subset(~is_train, "test")
    label_columns = list(LASP_LABELS)
    label_names = list(LASP_LABELS.values())
    train_labels = train.label_array(label_columns)
    parameters = model_parameters(param_grid, epsilon=epsilon, cv=cv, random_state=random_state, n_jobs=n_jobs,
                                  backend=backend)
    model, provenance = train_section3_model(train, parameters, use_cache=use_cache)
    start = time.perf_counter()
    prediction = model.predict(test.flux, test.ivar)
    prediction_seconds = time.perf_counter() - start
    cannon = cross_validate(train.flux, train.ivar, train_labels, cv=cv, random_state=random_state)
    flux_variance = model.flux_scaler_.scale**2
    bins = sorted({edge for pair in LASP_TEST_SNR_BINS for edge in pair})
    snr = np.asarray(test.labels["snr_g"], dtype=float)
    scatter_table = scatter_by_snr(prediction.labels, test.label_array(label_columns), snr, bins,
                                   label_names=label_names, errors=prediction.errors)
    truth_columns = ["teff", "logg", "m_h"]
    scatter_table_truth = None
    if all(column in test.labels.colnames for column in truth_columns):
        scatter_table_truth = scatter_by_snr(prediction.labels, test.label_array(truth_columns), snr, bins,
                                             label_names=label_names, errors=prediction.errors)
    return LaspTestResult(
        model=model, train=train, test=test, prediction=prediction, cannon=cannon,
        cannon_cv_mse_std=cannon.cv_mse / flux_variance, cannon_cv_md_std=cannon.cv_md / model.flux_scaler_.scale,
        scatter_table=scatter_table, scatter_table_truth=scatter_table_truth,
        timings={"training_seconds": provenance["training_seconds"], "model_from_cache": provenance["from_cache"],
                 "prediction_seconds": prediction_seconds, "spectra_per_second": len(test) / prediction_seconds},
    )


def ensemble_error_table(result: LaspTestResult, *, n_jobs: int = -1) -> Table:
    """Errors that include the training set, per S/N bin of the test spectra (beyond the paper).

    The test spectra are labelled again by the k CV sub-models
    (``SlamModel.predict(..., ensemble=True)``); per S/N bin the table gives the median formal
    error, the median grouped-jackknife ensemble error, the median total error
    sqrt(formal^2 + ensemble^2), and the scatter of the labels they should describe: against
    the true labels for the mock (the catalogue labels carry their own errors), against the
    catalogue labels otherwise.

    Returns
    -------
    astropy.table.Table
        One row per S/N bin: ``snr_low``, ``snr_high``, ``snr_median`` and, per label,
        ``<label>_scatter``, ``<label>_err_formal``, ``<label>_err_ensemble``, ``<label>_err_total``;
        ``meta["reference"]`` says which labels the scatter is measured against.
    """
    label_names = list(LASP_LABELS.values())
    truth_columns = ["teff", "logg", "m_h"]
    on_truth = all(column in result.test.labels.colnames for column in truth_columns)
    reference = result.test.label_array(truth_columns if on_truth else list(LASP_LABELS))
    ensemble = result.model.predict(result.test.flux, result.test.ivar, ensemble=True, n_jobs=n_jobs)
    bins = sorted({edge for pair in LASP_TEST_SNR_BINS for edge in pair})
    snr = np.asarray(result.test.labels["snr_g"], dtype=float)
    tables = {kind: scatter_by_snr(ensemble.labels, reference, snr, bins, label_names=label_names, errors=errors)
              for kind, errors in (("formal", ensemble.errors), ("ensemble", ensemble.ensemble_errors),
                                   ("total", ensemble.total_errors))}
    table = Table()
    for column in ("snr_low", "snr_high", "snr_median"):
        table[column] = tables["formal"][column]
    for name in label_names:
        table[f"{name}_scatter"] = tables["formal"][f"{name}_scatter"]
        for kind, part in tables.items():
            table[f"{name}_err_{kind}"] = part[f"{name}_err_median"]
    table.meta["reference"] = "true labels (mock)" if on_truth else "catalogue labels"
    return table


#: The reference stars of the paper's Figure 4 curves: a solar-like star and a K giant (the paper
#: uses ATLAS9 spectra; here the mock's synthetic spectra), labels Teff, log g, [Fe/H].
FIGURE4_REFERENCE_STARS = {"solar-like star": (5777.0, 4.44, 0.0), "K giant": (4500.0, 2.5, 0.0)}


def simulated_formal_errors(model: SlamModel, *, snr_values: tuple[float, ...] = (10, 20, 40, 60, 80, 100, 120),
                            n_realizations: int = 20, seed: int = 0, n_jobs: int = 1) -> Table:
    """The formal errors SLAM gives synthetic spectra of two reference stars at several S/N (Figure 4).

    The paper draws the formal errors of ATLAS9 spectra of a solar-like star and a K giant as lower
    limits; here the same stars are synthesized by :mod:`slamlib.mock` (its noise model at each S/N_g,
    ``n_realizations`` noise draws each), prepared like the survey spectra and fitted with ``model``.

    Returns
    -------
    Table
        ``star``, ``snr``, and ``<label>_err_median`` per label of the model.
    """
    from slamlib import mock
    from slamlib.preprocess import prepare

    rows = []
    for star_index, (star, (teff, logg, feh)) in enumerate(FIGURE4_REFERENCE_STARS.items()):
        for snr_index, snr in enumerate(snr_values):
            labels = Table({"teff": np.full(n_realizations, teff), "logg": np.full(n_realizations, logg),
                            "m_h": np.full(n_realizations, feh), "snr_g": np.full(n_realizations, float(snr))})
            spectra = prepare(mock.synthesize(labels, seed=seed + 1000 * star_index + snr_index), model.wave_, n_jobs=n_jobs)
            prediction = model.predict(spectra.flux, spectra.ivar, n_jobs=n_jobs)
            errors = np.where(prediction.converged[:, None], prediction.errors, np.nan)
            rows.append((star, float(snr), *np.nanmedian(errors, axis=0)))
    names = ["star", "snr"] + [f"{name}_err_median" for name in model.label_names_]
    return Table(rows=rows, names=names)
