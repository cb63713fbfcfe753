"""Section 4 of the paper: a six-label SLAM model of K giants trained on APOGEE labels.

The steps, each a function:

1. :func:`select_training_set` — the ten catalogue criteria (:func:`slamlib.data.select_apogee_common`),
   then at most 50 bad pixels, then the leave-1/10-out clipping of stars whose cross-validated
   labels deviate by more than 4 sigma in any label; returns the funnel of counts.
2. :func:`train_and_cross_validate` — the final model (5x5 grid, 8-fold CV) and the cross-validated
   labels of the training stars (SLAM and The Cannon), tabulated per S/N_g bin, with the error
   model a exp(-b S/N) + c fitted per label (Table 1).
3. :func:`label_catalogue` — labels for the whole sample, the label distance D between SLAM's
   and LAMOST's labels (Eq. 11, :func:`paper_label_distance`), membership of the K-giant polygon,
   and the paper's Table 2 columns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.table import MaskedColumn, Table
from matplotlib.path import Path as PolygonPath

from slamlib.data import select_apogee_common
from slamlib.fitting import PredictionResult
from slamlib.metrics import (
    cv_statistics,
    error_model,
    fit_error_models,
    scatter_by_snr,
)
from slamlib.model import SlamModel
from slamlib.preprocess import MAX_BAD_PIXELS
from slampaper.cannon import cross_validate as cannon_cross_validate
from slampaper.datasets import APOGEE_LABELS, SurveySample
from slampaper.model_cache import cached_model
from slampaper.paper import paper_constants

__all__ = [
    "PAPER_GRID", "PAPER_CV_SCATTER_SNR100", "PAPER_FUNNEL", "PAPER_POLYGON_COMPLETENESS", "KGIANT_POLYGON", "SNR_BINS",
    "TrainingSelection", "select_training_set", "CrossValidation", "train_and_cross_validate",
    "in_polygon", "label_catalogue", "lamost_label", "table2", "paper_label_distance", "TABLE2_COLUMNS",
]

_SECTION4 = paper_constants()["section4"]
#: The Section 4 hyperparameter grid: C = 10^{0, 0.5, 1, 1.5, 2}, gamma = 10^{-3, -2.5, -2, -1.5, -1}
#: (data/paper/constants.yml).
PAPER_GRID = {"C": [float(10**e) for e in _SECTION4["grid"]["log10_C"]],
              "gamma": [float(10**e) for e in _SECTION4["grid"]["log10_gamma"]]}
#: The paper's cross-validated scatter at S/N_g ~ 100 (abstract).
PAPER_CV_SCATTER_SNR100 = dict(_SECTION4["cv_scatter_snr100"])
#: The paper's training-set funnel (Section 4.2).
PAPER_FUNNEL = dict(_SECTION4["funnel"])
#: Fraction of known K giants the paper's polygon keeps (Section 4.2: ~500 of ~22,000 lost, ~97 %).
PAPER_POLYGON_COMPLETENESS = float(_SECTION4["polygon_completeness"])
#: The K-giant region in the (Teff, log g) plane, vertices in K and dex (our polygon; the
#: paper's vertices are not given in a form we could check).
KGIANT_POLYGON = np.array([(3600.0, 0.0), (4500.0, 0.0), (5400.0, 2.3), (5400.0, 3.6), (4800.0, 3.6), (3600.0, 1.2)])
#: S/N_g bin edges for the CV scatter of Figure 7 and Table 1.
SNR_BINS = [5.0, 20.0, 40.0, 60.0, 80.0, 100.0, 150.0, 250.0, 1000.0]
#: The 20 columns of our Table 2 catalogue.
TABLE2_COLUMNS = ["obsid", "ra", "dec", "snrg"] + [f"{name}{suffix}" for name in APOGEE_LABELS for suffix in ("", "_err")] + [
    "rms", "rchi2", "converged", "label_distance", "in_kgiant_polygon"]


def _model_parameters(param_grid, cv, epsilon, random_state, n_jobs, backend) -> dict[str, Any]:
    return {"param_grid": param_grid, "epsilon": epsilon, "cv": cv, "random_state": random_state,
            "n_jobs": n_jobs, "backend": backend}


def _fit_cached(sample: SurveySample, parameters: dict[str, Any], use_cache: bool) -> tuple[SlamModel, dict[str, Any]]:
    labels = sample.label_array(list(APOGEE_LABELS))
    return cached_model(sample.cache_key, parameters,
                        lambda fresh: fresh.fit(sample.flux, sample.ivar, labels, list(APOGEE_LABELS), wave=sample.wave),
                        use_cache=use_cache)


@dataclass(frozen=True)
class TrainingSelection:
    """The training set and how it was reached.

    Attributes
    ----------
    training : SurveySample
    funnel : Table
        ``step``, ``n_kept`` after each criterion and cut, ``paper`` where the paper gives a count.
    clipped : ndarray of bool
        For the stars entering the clipping step, True if removed.
    """

    training: SurveySample
    funnel: Table
    clipped: np.ndarray


def select_training_set(
    sample: SurveySample,
    *,
    max_bad_pixels: int = MAX_BAD_PIXELS,
    clip_sigma: float = 4.0,
    clip_folds: int = 10,
    clip_grid: dict[str, list[float]] | None = None,
    epsilon: float = 0.05,
    random_state: int = 0,
    n_jobs: int = -1,
    backend: str = "batched",
    use_cache: bool = True,
) -> TrainingSelection:
    """Apply the ten criteria, the bad-pixel cut and the leave-1/10-out 4-sigma clipping.

    The clipping trains SLAM with ``clip_folds``-fold CV (each star's labels then come from a
    model trained on the other (clip_folds - 1)/clip_folds of the stars) and removes stars whose
    cross-validated label deviates from the catalogue by more than ``clip_sigma`` times that
    label's scatter, in any label.
    """
    selection = select_apogee_common(sample.labels)
    steps = [(row["step"], int(row["n_remaining"])) for row in selection.funnel_table()]
    selected = sample.subset(selection.mask, "ten_criteria")
    few_bad = np.asarray(selected.n_bad) <= max_bad_pixels
    selected = selected.subset(few_bad, f"bad{max_bad_pixels}")
    steps.append((f"at most {max_bad_pixels} bad pixels", len(selected)))
    parameters = _model_parameters(clip_grid or PAPER_GRID, clip_folds, epsilon, random_state, n_jobs, backend)
    clip_model, _ = _fit_cached(selected, parameters, use_cache)
    cv_labels = clip_model.predict_cv(selected.flux, selected.ivar).labels
    residual = cv_labels - selected.label_array(list(APOGEE_LABELS))
    scatter = cv_statistics(cv_labels, selected.label_array(list(APOGEE_LABELS))).scatter
    clipped = ~np.all(np.abs(residual) <= clip_sigma * scatter, axis=1)
    training = selected.subset(~clipped, f"clip{clip_sigma:g}")
    steps.append((f"{clip_sigma:g}-sigma clipping (leave-1/{clip_folds}-out)", len(training)))
    paper_counts = {"input": PAPER_FUNNEL["common stars"], "teff_consistency": PAPER_FUNNEL["ten criteria"],
                    f"at most {max_bad_pixels} bad pixels": PAPER_FUNNEL["at most 50 bad pixels"]}
    paper_counts[steps[-1][0]] = PAPER_FUNNEL["4-sigma clipping"]
    # The paper's count after each step it reports; masked (no value) for the steps it does not.
    paper = MaskedColumn([paper_counts.get(step, 0) for step, _ in steps], name="paper", dtype=np.int64,
                         mask=[step not in paper_counts for step, _ in steps])
    funnel = Table([[step for step, _ in steps], [count for _, count in steps], paper], names=["step", "n_kept", "paper"])
    return TrainingSelection(training, funnel, clipped)


@dataclass(frozen=True)
class CrossValidation:
    """The final model and its cross-validated labels.

    Attributes
    ----------
    model : SlamModel
    cv_prediction : PredictionResult
        SLAM labels of every training star from the fold model that did not see it.
    cannon_labels : ndarray, shape (n_train, 6)
        The Cannon's cross-validated labels on the same folds.
    scatter_table, cannon_scatter_table : Table
        Bias, scatter (and median formal error) per S/N_g bin.
    error_models : Table
        Table 1: a, b, c of a exp(-b S/N) + c per label.
    timings : dict
    """

    model: SlamModel
    cv_prediction: PredictionResult
    cannon_labels: np.ndarray
    scatter_table: Table
    cannon_scatter_table: Table
    error_models: Table
    timings: dict[str, Any]


def train_and_cross_validate(
    training: SurveySample,
    *,
    param_grid: dict[str, list[float]] | None = None,
    cv: int = 8,
    epsilon: float = 0.05,
    random_state: int = 0,
    n_jobs: int = -1,
    backend: str = "batched",
    snr_bins: list[float] | None = None,
    use_cache: bool = True,
) -> CrossValidation:
    """Train the final model and cross-validate SLAM and The Cannon on the training set."""
    parameters = _model_parameters(param_grid or PAPER_GRID, cv, epsilon, random_state, n_jobs, backend)
    model, provenance = _fit_cached(training, parameters, use_cache)
    reference = training.label_array(list(APOGEE_LABELS))
    start = time.perf_counter()
    cv_prediction = model.predict_cv(training.flux, training.ivar)
    cv_seconds = time.perf_counter() - start
    cannon = cannon_cross_validate(training.flux, training.ivar, reference, cv=cv, random_state=random_state)
    snr = np.asarray(training.labels["snrg"], dtype=float)
    bins = snr_bins or SNR_BINS
    names = list(APOGEE_LABELS)
    scatter_table = scatter_by_snr(cv_prediction.labels, reference, snr, bins, label_names=names, errors=cv_prediction.errors)
    cannon_scatter_table = scatter_by_snr(cannon.labels_predicted, reference, snr, bins, label_names=names)
    usable = scatter_table[scatter_table["n_star"] >= 5]
    error_models = fit_error_models(usable, label_names=names)
    return CrossValidation(model, cv_prediction, cannon.labels_predicted, scatter_table, cannon_scatter_table,
                           error_models, {"training_seconds": provenance["training_seconds"],
                                          "model_from_cache": provenance["from_cache"],
                                          "cv_prediction_seconds": cv_seconds,
                                          "spectra_per_second": len(training) / cv_seconds})


def in_polygon(teff: np.ndarray, logg: np.ndarray, polygon: np.ndarray = KGIANT_POLYGON) -> np.ndarray:
    """True where (Teff, log g) lies inside the polygon (vertices in K and dex)."""
    points = np.column_stack([np.asarray(teff, float), np.asarray(logg, float)])
    inside = PolygonPath(polygon).contains_points(np.nan_to_num(points, nan=-1e9))
    return inside & np.all(np.isfinite(points), axis=1)


def lamost_label(labels: Table, name: str) -> np.ndarray:
    """A LAMOST (LASP) label of a cross-matched table: ``<name>_lamost``, else ``<name>``."""
    for column in (f"{name}_lamost", name):
        if column in labels.colnames:
            return np.asarray(labels[column], dtype=float)
    raise ValueError(f"the sample has no LAMOST {name} column ({name}_lamost or {name}); the label distance D of "
                     "Eq. 11 compares SLAM's labels with LAMOST's, so cross-match with the LAMOST catalogue first.")


def paper_label_distance(slam_labels: np.ndarray, lamost_teff: np.ndarray, lamost_logg: np.ndarray,
                         lamost_feh: np.ndarray) -> np.ndarray:
    """The label distance D of Eq. 11 (Ho et al. 2017b): SLAM's labels minus LAMOST's, scaled.

    ``D^2 = ((Teff_SLAM - Teff_LAMOST) / 100 K)^2 + ((log g_SLAM - log g_LAMOST) / 0.2 dex)^2
    + (([M/H]_SLAM - [Fe/H]_LAMOST) / 0.1 dex)^2``; the scales are the paper's
    (``data/paper/constants.yml``, ``section4.label_distance_scales``), and stars with D < 2.5 count as
    K giants (Section 4.2).

    Parameters
    ----------
    slam_labels : ndarray, shape (n_star, 6)
        SLAM's labels in :data:`APOGEE_LABELS` order (Teff, log g and [M/H] are used).
    lamost_teff, lamost_logg, lamost_feh : ndarray, shape (n_star,)
        The LAMOST (LASP) labels of the same stars.

    Returns
    -------
    ndarray, shape (n_star,)
        D; NaN where a label is missing.
    """
    scales = _SECTION4["label_distance_scales"]
    slam_labels = np.asarray(slam_labels, dtype=float)
    terms = [(slam_labels[:, APOGEE_LABELS.index("teff")] - lamost_teff) / scales["teff"],
             (slam_labels[:, APOGEE_LABELS.index("logg")] - lamost_logg) / scales["logg"],
             (slam_labels[:, APOGEE_LABELS.index("m_h")] - lamost_feh) / scales["m_h"]]
    return np.sqrt(np.sum(np.square(terms), axis=0))


def label_catalogue(
    sample: SurveySample,
    model: SlamModel,
    *,
    n_jobs: int = 1,
) -> tuple[Table, PredictionResult]:
    """SLAM labels for every spectrum of ``sample``, with the paper's Table 2 columns.

    Parameters
    ----------
    sample : SurveySample
        All spectra to label (here: every common star, not only the training set); its labels
        hold the LAMOST labels for D (``teff_lamost``, ``logg_lamost``, ``feh_lamost`` or ``feh``).
    model : SlamModel

    Returns
    -------
    catalogue : Table
        :data:`TABLE2_COLUMNS`; ``label_distance`` is D of Eq. 11.
    prediction : PredictionResult
    """
    prediction = model.predict(sample.flux, sample.ivar, n_jobs=n_jobs)
    catalogue = Table()
    for column in ("obsid", "ra", "dec", "snrg"):
        catalogue[column] = sample.labels[column]
    for index, name in enumerate(APOGEE_LABELS):
        catalogue[name] = prediction.labels[:, index]
        catalogue[f"{name}_err"] = prediction.errors[:, index]
    catalogue["rms"] = prediction.rms
    catalogue["rchi2"] = prediction.rchi2
    catalogue["converged"] = prediction.converged
    catalogue["label_distance"] = paper_label_distance(prediction.labels, lamost_label(sample.labels, "teff"),
                                                       lamost_label(sample.labels, "logg"),
                                                       lamost_label(sample.labels, "feh"))
    catalogue["in_kgiant_polygon"] = in_polygon(prediction.labels[:, 0], prediction.labels[:, 1])
    return catalogue[TABLE2_COLUMNS], prediction


def table2(catalogue: Table, error_models: Table, in_apogee: np.ndarray) -> Table:
    """The paper's Table 2 from our catalogue: its 20 columns, with the S/N-based errors of the Table 1
    error model (as the paper's catalogue gives them) and, beside them, SLAM's formal errors.

    Parameters
    ----------
    catalogue : Table
        :func:`label_catalogue`'s output.
    error_models : Table
        ``label``, ``a``, ``b``, ``c`` per label (our Table 1).
    in_apogee : ndarray of bool, shape (n_star,)
        Whether each star has APOGEE labels (the paper's last column).

    Returns
    -------
    Table
        ``obsid``, ``snrg``, ``ra``, ``dec``, the six labels, ``sigma_<label>`` (Table 1 at the star's
        S/N_g), ``rmse``, ``kgiant_cut``, ``label_distance``, ``in_apogee``, then ``<label>_err_formal``.
    """
    coefficients = {str(row["label"]): (float(row["a"]), float(row["b"]), float(row["c"])) for row in error_models}
    snr = np.asarray(catalogue["snrg"], dtype=float)
    table = Table()
    for column in ("obsid", "snrg", "ra", "dec"):
        table[column] = catalogue[column]
    for name in APOGEE_LABELS:
        table[name] = catalogue[name]
    for name in APOGEE_LABELS:
        table[f"sigma_{name}"] = error_model(snr, *coefficients[name]) if name in coefficients else np.full(snr.size, np.nan)
    table["rmse"] = catalogue["rms"]
    table["kgiant_cut"] = catalogue["in_kgiant_polygon"]
    table["label_distance"] = catalogue["label_distance"]
    table["in_apogee"] = np.asarray(in_apogee, dtype=bool)
    for name in APOGEE_LABELS:
        table[f"{name}_err_formal"] = catalogue[f"{name}_err"]
    return table


def compare_with_published(catalogue: Table, published: Table, *, labels: tuple[str, ...] = APOGEE_LABELS) -> Table:
    """Our labels against the published SLAM catalogue (Zhang et al. 2020), matched by ``obsid``.

    The published file's column names are not documented; columns are matched to our label
    names case-insensitively, with ``[m/h]``-style and ``m_h``-style spellings both accepted, and
    labels the file lacks are skipped.

    Returns
    -------
    astropy.table.Table
        One row per label found in both: ``label``, ``n_star``, ``bias`` (ours - published),
        ``scatter``.
    """
    def normalized(name: str) -> str:
        return name.lower().replace("[", "").replace("]", "").replace("/", "_").replace("fe_h", "m_h")

    published_columns = {normalized(name): name for name in published.colnames}
    if "obsid" not in published_columns:
        raise ValueError(f"the published catalogue has no obsid column (columns: {published.colnames[:20]}).")
    ours_obsid = np.asarray(catalogue["obsid"], dtype=np.int64)
    theirs_obsid = np.asarray(published[published_columns["obsid"]], dtype=np.int64)
    common, ours_index, theirs_index = np.intersect1d(ours_obsid, theirs_obsid, return_indices=True)
    rows = []
    for name in labels:
        if name not in published_columns:
            continue
        difference = (np.asarray(catalogue[name], float)[ours_index]
                      - np.asarray(published[published_columns[name]], float)[theirs_index])
        difference = difference[np.isfinite(difference)]
        rows.append((name, difference.size, float(np.mean(difference)) if difference.size else np.nan,
                     float(np.std(difference)) if difference.size else np.nan))
    return Table(rows=rows, names=["label", "n_star", "bias", "scatter"], dtype=[str, int, float, float])
