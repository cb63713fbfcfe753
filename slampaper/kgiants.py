"""Section 4 of the paper: a six-label SLAM model of K giants trained on APOGEE labels.

The steps, each a function:

1. :func:`select_training_set` — the ten catalogue criteria (:func:`slamlib.data.select_apogee_common`),
   then at most 50 bad pixels, then the leave-1/10-out clipping of stars whose cross-validated
   labels deviate by more than 4 sigma in any label; returns the funnel of counts.
   :func:`select_low_snr_test_set` — the common stars that pass every criterion but S/N_g > 40
   (and the bad-pixel cut): the test stars of Figure 7's bins below S/N_g 40 (our reading).
2. :func:`train_and_cross_validate` — the final model (5x5 grid, 8-fold CV) and the cross-validated
   labels of the training stars (SLAM and The Cannon); with the low-S/N test stars, also their labels
   from the final models (:func:`predict_low_snr_test_set`). Tabulated per S/N_g bin (CV above
   S/N_g 40, test below it: :func:`figure7_table`), with the error model a exp(-b S/N) + c fitted
   per label on all bins (Table 1).
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

from slamlib.data import Criterion, apogee_common_criteria, apply_criteria, select_apogee_common
from slamlib.data.selection import finite_criterion
from slamlib.fitting import PredictionResult
from slamlib.metrics import (
    cv_statistics,
    error_model,
    fit_error_models,
    scatter_by_snr,
)
from slamlib.model import SlamModel
from slamlib.preprocess import MAX_BAD_PIXELS
from slampaper.cannon import CannonModel
from slampaper.cannon import cross_validate as cannon_cross_validate
from slampaper.datasets import APOGEE_LABELS, SurveySample
from slampaper.model_cache import cached_model
from slampaper.paper import paper_constants

__all__ = [
    "PAPER_GRID", "PAPER_CV_SCATTER_SNR100", "PAPER_FUNNEL", "PAPER_POLYGON_COMPLETENESS", "KGIANT_POLYGON", "SNR_BINS",
    "TrainingSelection", "select_training_set", "CrossValidation", "train_and_cross_validate",
    "LAMOST_SNRG_MIN", "CV_SAMPLE", "TEST_SAMPLE", "LowSnrSelection", "select_low_snr_test_set", "LowSnrTest",
    "predict_low_snr_test_set", "figure7_table", "snr_bin_key", "table1_beside_paper",
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
#: The LAMOST S/N_g floor of the training set (criterion 2 of Section 4.2: S/N_g > 40).
LAMOST_SNRG_MIN = float(_SECTION4["selection"]["snr_g_min"])
#: The name of that criterion in :func:`slamlib.data.apogee_common_criteria`.
LAMOST_SNRG_CRITERION = "lamost_snrg"
#: The ``sample`` column of the Figure 7 table: where the numbers of a bin come from.
CV_SAMPLE = "CV (training stars)"
TEST_SAMPLE = f"test (common stars with S/N_g <= {LAMOST_SNRG_MIN:g}, final model)"
#: Bins with fewer stars do not enter the Table 1 fit.
MIN_STARS_PER_FIT_BIN = 5
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


def _few_bad_pixels(sample: SurveySample, max_bad_pixels: int) -> tuple[SurveySample, tuple[str, int]]:
    """The spectra of ``sample`` with at most ``max_bad_pixels`` bad pixels, and the funnel step (name, count)."""
    kept = sample.subset(np.asarray(sample.n_bad) <= max_bad_pixels, f"bad{max_bad_pixels}")
    return kept, (f"at most {max_bad_pixels} bad pixels", len(kept))


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
    selected, bad_pixel_step = _few_bad_pixels(sample.subset(selection.mask, "ten_criteria"), max_bad_pixels)
    steps.append(bad_pixel_step)
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
class LowSnrSelection:
    """The low-S/N test stars of Figure 7 and how they were reached.

    Attributes
    ----------
    test : SurveySample
        Common stars that pass every one of the ten criteria but S/N_g > 40, with a known
        S/N_g, and at most the bad pixels the training set allows.
    funnel : Table
        ``step``, ``description``, ``n_kept`` after each criterion and cut.
    in_test : ndarray of bool, shape (n_input,)
        For each star of the input sample, True if it is a test star.
    """

    test: SurveySample
    funnel: Table
    in_test: np.ndarray


def _failing(criterion: Criterion) -> Criterion:
    """The stars a criterion removes, as a criterion of its own (``not_<name>``)."""
    return Criterion(f"not_{criterion.name}", f"not ({criterion.description})", criterion.columns,
                     lambda table: ~np.asarray(criterion.keep(table), dtype=bool))


def select_low_snr_test_set(
    sample: SurveySample,
    *,
    min_lamost_snrg: float = LAMOST_SNRG_MIN,
    max_bad_pixels: int = MAX_BAD_PIXELS,
) -> LowSnrSelection:
    """The common stars below the training set's S/N_g floor that pass all its other cuts.

    Figure 7 of the paper shows the scatter of the common stars down to S/N_g 5 while the model is
    trained on S/N_g > 40 only; the paper does not say how the stars below 40 were scored. Our reading:
    the stars that pass the nine other criteria of :func:`slamlib.data.apogee_common_criteria` (the
    function the training set's criteria come from) and the bad-pixel cut, but fail S/N_g > ``min_lamost_snrg``,
    are a test set for the final model. No training star can be among them (each training star passes
    the S/N_g criterion). The 4-sigma clipping of the training set is not applied: it needs
    cross-validated labels, which test stars do not have.

    Parameters
    ----------
    sample : SurveySample
        The common stars (the input of :func:`select_training_set`).
    min_lamost_snrg : float
        The S/N_g floor of the training set (criterion 2; the paper's 40).
    max_bad_pixels : int
        As for the training set.

    Returns
    -------
    LowSnrSelection
    """
    criteria = apogee_common_criteria(min_lamost_snrg=min_lamost_snrg)
    snr_criterion = next(criterion for criterion in criteria if criterion.name == LAMOST_SNRG_CRITERION)
    steps = [criterion for criterion in criteria if criterion is not snr_criterion]
    steps += [finite_criterion("snrg_known", ["snrg"]), _failing(snr_criterion)]
    selection = apply_criteria(sample.labels, steps)
    test, bad_pixel_step = _few_bad_pixels(sample.subset(selection.mask, "low_snr"), max_bad_pixels)
    in_test = selection.mask.copy()
    in_test[selection.mask] = np.asarray(sample.n_bad)[selection.mask] <= max_bad_pixels
    rows = [(step.name, step.description, step.n_remaining) for step in selection.funnel]
    rows.append((bad_pixel_step[0], f"n_bad <= {max_bad_pixels}", bad_pixel_step[1]))
    funnel = Table(rows=rows, names=["step", "description", "n_kept"], dtype=[str, str, np.int64])
    return LowSnrSelection(test, funnel, in_test)


@dataclass(frozen=True)
class LowSnrTest:
    """The low-S/N test stars labelled by the final models (SLAM and The Cannon).

    Attributes
    ----------
    test : SurveySample
        The test stars (:func:`select_low_snr_test_set`), n_test of them.
    prediction : PredictionResult
        SLAM's labels from the final model (trained on every training star, none of them a test star).
    cannon_labels : ndarray, shape (n_test, 6)
        The Cannon's labels from a model trained on every training star.
    scatter_table, cannon_scatter_table : Table
        Bias, scatter (SLAM: and median formal error) per S/N_g bin of the test stars, on the same
        bins as the cross-validation (bins above the S/N_g floor are empty).
    prediction_seconds : float
        Time of SLAM's prediction.
    """

    test: SurveySample
    prediction: PredictionResult
    cannon_labels: np.ndarray
    scatter_table: Table
    cannon_scatter_table: Table
    prediction_seconds: float


def predict_low_snr_test_set(
    test: SurveySample,
    model: SlamModel,
    training: SurveySample,
    *,
    snr_bins: list[float] | None = None,
    n_jobs: int = 1,
) -> LowSnrTest:
    """Label the low-S/N test stars with the final SLAM model and a Cannon trained on all training stars.

    Parameters
    ----------
    test : SurveySample
        The test stars, n_test >= 1 of them (:func:`select_low_snr_test_set`).
    model : SlamModel
        The final model (trained on ``training``).
    training : SurveySample
        The training stars; The Cannon's model is trained on all of them (deterministic, no seed).
    snr_bins : list of float, optional
        S/N_g bin edges (default :data:`SNR_BINS`).
    n_jobs : int
        Workers of SLAM's prediction.

    Returns
    -------
    LowSnrTest

    Raises
    ------
    ValueError
        If ``test`` is empty or shares a star (``obsid``) with ``training``.
    """
    if len(test) == 0:
        raise ValueError("the low-S/N test set is empty: no common star passes every criterion but S/N_g; "
                         "use a larger sample (n_star).")
    shared = np.intersect1d(np.asarray(test.labels["obsid"]), np.asarray(training.labels["obsid"]))
    if shared.size:
        raise ValueError(f"{shared.size} test stars are training stars (obsid {shared[:5].tolist()}...); a test "
                         "set must not overlap the training set.")
    names = list(APOGEE_LABELS)
    start = time.perf_counter()
    prediction = model.predict(test.flux, test.ivar, n_jobs=n_jobs)
    seconds = time.perf_counter() - start
    cannon = CannonModel().fit(training.flux, training.ivar, training.label_array(names), label_names=names)
    cannon_labels = cannon.predict(test.flux, test.ivar).labels
    reference, snr, bins = test.label_array(names), np.asarray(test.labels["snrg"], dtype=float), snr_bins or SNR_BINS
    scatter_table = scatter_by_snr(prediction.labels, reference, snr, bins, label_names=names, errors=prediction.errors)
    cannon_scatter_table = scatter_by_snr(cannon_labels, reference, snr, bins, label_names=names)
    return LowSnrTest(test, prediction, cannon_labels, scatter_table, cannon_scatter_table, seconds)


def figure7_table(cv_table: Table, test_table: Table | None, *, snr_floor: float = LAMOST_SNRG_MIN) -> Table:
    """Figure 7's per-bin table: the training stars' CV above the S/N_g floor, the test stars below it.

    Parameters
    ----------
    cv_table : Table
        :func:`slamlib.metrics.scatter_by_snr` of the training stars' CV labels, n_bin rows.
    test_table : Table or None
        The same for the low-S/N test stars, on the same bins (None: no test stars).
    snr_floor : float
        The training set's S/N_g floor; it must be a bin edge.

    Returns
    -------
    Table
        n_bin rows, the columns of ``cv_table`` plus ``sample``: :data:`CV_SAMPLE` for bins at or above
        the floor (and for every bin without a test table), :data:`TEST_SAMPLE` for bins below it.

    Raises
    ------
    ValueError
        With a test table: if a bin straddles the floor, or the two tables' bins or columns differ.
    """
    low, high = np.asarray(cv_table["snr_low"], float), np.asarray(cv_table["snr_high"], float)
    table = cv_table.copy()
    below = high <= snr_floor if test_table is not None else np.zeros(len(table), dtype=bool)
    if test_table is not None:
        straddling = (low < snr_floor) & (high > snr_floor)
        if straddling.any():
            raise ValueError(f"S/N_g bins {[(float(a), float(b)) for a, b in zip(low[straddling], high[straddling])]} "
                             f"straddle the training set's floor {snr_floor:g}; make {snr_floor:g} a bin edge so each "
                             "bin is either CV or test.")
        same_bins = (len(test_table) == len(cv_table) and np.array_equal(np.asarray(test_table["snr_low"], float), low)
                     and np.array_equal(np.asarray(test_table["snr_high"], float), high))
        if not same_bins or test_table.colnames != cv_table.colnames:
            raise ValueError("the test and CV tables must come from scatter_by_snr on the same bins and labels; got bins "
                             f"{list(test_table['snr_low'])} / {list(low)} and columns {test_table.colnames} / {cv_table.colnames}.")
        for column in table.colnames:
            table[column][below] = test_table[column][below]
    table["sample"] = np.where(below, TEST_SAMPLE, CV_SAMPLE)
    return table


def _fit_table1(scatter_table: Table) -> Table:
    """Table 1 (a, b, c per label) fitted on the bins with enough stars, with how many bins of each sample it used."""
    usable = scatter_table[np.asarray(scatter_table["n_star"]) >= MIN_STARS_PER_FIT_BIN]
    error_models = fit_error_models(usable, label_names=list(APOGEE_LABELS))
    samples = np.asarray(usable["sample"]) if "sample" in usable.colnames else np.full(len(usable), CV_SAMPLE)
    error_models["n_bins_cv"] = int(np.sum(samples == CV_SAMPLE))
    error_models["n_bins_test"] = int(np.sum(samples == TEST_SAMPLE))
    return error_models


def table1_beside_paper(error_models: Table) -> Table:
    """Our Table 1 with the paper's a, b, c beside ours (``a_paper``, ``b_paper``, ``c_paper``).

    Parameters
    ----------
    error_models : Table
        ``label``, ``a``, ``b``, ``c`` (our Table 1), one row per label of :data:`APOGEE_LABELS`.

    Returns
    -------
    Table
        ``label``, then ours and the paper's side by side per coefficient, then any other columns.
    """
    paper = _SECTION4["table1"]
    unknown = [str(name) for name in error_models["label"] if str(name) not in paper]
    if unknown:
        raise ValueError(f"the paper's Table 1 has no label {unknown} (it has {sorted(paper)}).")
    table = Table({"label": error_models["label"]})
    for coefficient in ("a", "b", "c"):
        table[coefficient] = error_models[coefficient]
        table[f"{coefficient}_paper"] = [float(paper[str(name)][coefficient]) for name in error_models["label"]]
    for column in error_models.colnames:
        if column not in table.colnames:
            table[column] = error_models[column]
    return table


def snr_bin_key(snr_low: float, snr_high: float) -> str:
    """The record-key part of an S/N_g bin, by its centre: ``snr12.5`` for (5, 20), ``snr30`` for (20, 40).

    (The key ``snr100`` of the chapter is the bin whose centre is nearest 100, not this naming.)
    """
    if not snr_low < snr_high:
        raise ValueError(f"an S/N_g bin needs low < high, got ({snr_low}, {snr_high}).")
    return f"snr{0.5 * (snr_low + snr_high):g}"


@dataclass(frozen=True)
class CrossValidation:
    """The final model, its cross-validated labels and, below S/N_g 40, its test labels.

    Attributes
    ----------
    model : SlamModel
    cv_prediction : PredictionResult
        SLAM labels of every training star from the fold model that did not see it.
    cannon_labels : ndarray, shape (n_train, 6)
        The Cannon's cross-validated labels on the same folds.
    scatter_table, cannon_scatter_table : Table
        Bias, scatter (SLAM: and median formal error) per S/N_g bin: Figure 7's table
        (:func:`figure7_table`), its ``sample`` column saying which bins are the training stars'
        CV and which the low-S/N test stars'.
    error_models : Table
        Table 1: a, b, c of a exp(-b S/N) + c per label, fitted on every bin of ``scatter_table``
        with at least :data:`MIN_STARS_PER_FIT_BIN` stars; ``n_bins_cv``, ``n_bins_test`` count them.
    timings : dict
    low_snr : LowSnrTest or None
        The test stars' labels (None when no test set was given).
    """

    model: SlamModel
    cv_prediction: PredictionResult
    cannon_labels: np.ndarray
    scatter_table: Table
    cannon_scatter_table: Table
    error_models: Table
    timings: dict[str, Any]
    low_snr: LowSnrTest | None = None


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
    low_snr_test: SurveySample | None = None,
) -> CrossValidation:
    """Train the final model, cross-validate SLAM and The Cannon on the training set and, given the
    low-S/N test stars (:func:`select_low_snr_test_set`), label them with the final models.

    The per-bin tables hold the CV of the training stars at S/N_g above :data:`LAMOST_SNRG_MIN` and
    the test stars below it (:func:`figure7_table`); Table 1 is fitted on all their bins. The folds,
    the grid search and the model are seeded by ``random_state``.

    Parameters
    ----------
    training : SurveySample
        The training stars (:func:`select_training_set`), n_train of them.
    param_grid, cv, epsilon, random_state, n_jobs, backend
        Of the SLAM model (:class:`slamlib.model.SlamModel`); The Cannon's CV uses the same folds.
    snr_bins : list of float, optional
        S/N_g bin edges (default :data:`SNR_BINS`); with a test set, :data:`LAMOST_SNRG_MIN` must be one.
    use_cache : bool
        Load the trained model from the cache when it is there.
    low_snr_test : SurveySample, optional
        The low-S/N test stars (:func:`select_low_snr_test_set`); without them (or with none) the bins
        below S/N_g 40 stay empty.

    Returns
    -------
    CrossValidation
    """
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
    cv_table = scatter_by_snr(cv_prediction.labels, reference, snr, bins, label_names=names, errors=cv_prediction.errors)
    cannon_cv_table = scatter_by_snr(cannon.labels_predicted, reference, snr, bins, label_names=names)
    low_snr = None
    if low_snr_test is not None and len(low_snr_test) > 0:
        low_snr = predict_low_snr_test_set(low_snr_test, model, training, snr_bins=bins, n_jobs=n_jobs)
    scatter_table = figure7_table(cv_table, None if low_snr is None else low_snr.scatter_table)
    cannon_scatter_table = figure7_table(cannon_cv_table, None if low_snr is None else low_snr.cannon_scatter_table)
    timings = {"training_seconds": provenance["training_seconds"], "model_from_cache": provenance["from_cache"],
               "cv_prediction_seconds": cv_seconds, "spectra_per_second": len(training) / cv_seconds,
               "test_prediction_seconds": None if low_snr is None else low_snr.prediction_seconds}
    return CrossValidation(model, cv_prediction, cannon.labels_predicted, scatter_table, cannon_scatter_table,
                           _fit_table1(scatter_table), timings, low_snr)


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
