"""Benchmark of label prediction (``make benchmark-predict``).

Fits the labels of held-out spectra with a SLAM model trained on a 2000-star x 1901-pixel x
3-label mock set (paper Section 3 grid: epsilon = 0.05, C in {10, 100}, gamma in {0.1, 0.01},
5-fold CV) by

* (a) the reference method, ``SlamModel.predict(method="reference")``: one
  ``scipy.optimize.least_squares(method="lm")`` per spectrum with the analytic Jacobian,
* (b) the batched method, ``SlamModel.predict(method="batched")``: Levenberg-Marquardt on
  many spectra at once (:mod:`slamlib.fitting_batched`), and
* (c) an original-code-style baseline, as the paper's code works: one scikit-learn ``SVR``
  object per pixel (trained at that pixel's chosen C and gamma), called pixel by pixel inside
  ``scipy.optimize.least_squares`` with a finite-difference Jacobian, one star at a time.
  It is slow, so it is timed on a handful of spectra only (``--baseline-spectra``).

and prints a table of spectra per second, the speed ratios, and the agreement of the batched
labels with the reference (|batched - reference| / formal error, converged spectra). Results
are written as JSON to ``benchmarks/results/`` (git-ignored).

The model is trained once with ``SlamModel(backend="batched")`` (a few minutes on 2 cores
for 2000 stars) and cached with ``SlamModel.save`` under ``--model-cache`` (default
``$SLAMLIB_CACHE/benchmark_models`` if ``SLAMLIB_CACHE`` is set, else
``benchmarks/results/models``), keyed by a hash of the data and training parameters; the
per-pixel scikit-learn objects of the baseline are cached beside it with joblib.
``--n-train 300`` gives a quick run on a small model.

Data (``--data``): ``mock`` = ``slamlib.mock.lasp_test_sample`` + ``synthesize`` +
``slamlib.preprocess.prepare``: training stars at S/N 120-140 and test stars in the six S/N
bins of the paper's LASP test (5-20 up to 100-120), with the mock's bad pixels; ``analytic``
= :mod:`benchmarks.synthetic` (smooth analytic absorption-line model, Gaussian noise, a few
bad pixels), used when the mock is unavailable.

Timings on a shared machine are noisy: the batched and reference timings are repeated
``--repeat`` times, interleaved, and the median is reported, with the fastest run beside it
(all runs are kept in the JSON, with the load average at the start and the end). The baseline
runs once. The model spectra of the training stars (for the initial guess, computed once per
model and cached by ``SlamModel``) are computed before the timings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from report import write_report  # noqa: E402

from slamlib.model import SlamModel  # noqa: E402

SECTION3_GRID = {"C": [10.0, 100.0], "gamma": [0.1, 0.01]}
EPSILON = 0.05
N_FOLDS = 5
LABEL_NAMES = ["teff", "logg", "m_h"]


@dataclass(frozen=True)
class Sample:
    """Normalized spectra on the model grid with their labels.

    Attributes
    ----------
    flux, ivar : ndarray, shape (n_spec, n_pix)
    labels : ndarray, shape (n_spec, 3)
        Teff, log g, [M/H] (the mock's LASP-like catalogue labels for training stars, true labels for test stars).
    snr : ndarray, shape (n_spec,)
        Nominal signal-to-noise ratio of each spectrum.
    wave : ndarray, shape (n_pix,) or None
    """

    flux: np.ndarray
    ivar: np.ndarray
    labels: np.ndarray
    snr: np.ndarray
    wave: np.ndarray | None


def _mock_sample(n_train: int, n_test_per_bin: int, seed: int) -> Sample:
    from slamlib.mock import lasp_test_sample, synthesize
    from slamlib.preprocess import prepare

    table = lasp_test_sample(n_train, n_test_per_bin, seed=seed)
    prepared = prepare(synthesize(table, seed=seed))
    columns = ("teff_cat", "logg_cat", "feh_cat") if n_train else ("teff", "logg", "m_h")
    labels = np.column_stack([np.asarray(table[name], dtype=float) for name in columns])
    return Sample(np.asarray(prepared.flux, float), np.asarray(prepared.ivar, float), labels,
                  np.asarray(table["snr_g"], float), np.asarray(prepared.wave, float))


def _analytic_sample(n_star: int, snr_range: tuple[float, float], seed: int, n_pix: int = 1901) -> Sample:
    from synthetic import _labels, spectra

    rng = np.random.default_rng(seed)
    labels = _labels(n_star, rng)
    snr = rng.uniform(*snr_range, n_star)
    noiseless = spectra(labels, n_pix)
    sigma = noiseless / snr[:, None]
    flux = noiseless + rng.normal(size=noiseless.shape) * sigma
    ivar = np.where(rng.random(flux.shape) < 0.002, 0.0, 1.0 / sigma**2)
    return Sample(flux, ivar, labels, snr, None)


def load_samples(data: str, n_train: int, n_test_per_bin: int, seed: int) -> tuple[Sample, Sample, str]:
    """Training and test samples and a description of the data.

    Parameters
    ----------
    data : {"mock", "analytic"}
    n_train : int
        Training stars (S/N 120-140).
    n_test_per_bin : int
        Test stars in each of the six LASP-test S/N bins (5-20, ..., 100-120).
    seed : int
        Seed of the training sample; the test sample uses ``seed + 1``.
    """
    if data == "mock":
        try:
            train = _mock_sample(n_train, 0, seed)
            test = _mock_sample(0, n_test_per_bin, seed + 1)
            return train, test, (f"slamlib.mock LASP test: {n_train} training stars (S/N 120-140), "
                                 f"{6 * n_test_per_bin} test stars in six S/N bins 5-120")
        except Exception as error:  # the mock is another module's work in progress
            print(f"mock data unavailable ({type(error).__name__}: {error}); using the analytic model", file=sys.stderr)
    train = _analytic_sample(n_train, (120.0, 140.0), seed)
    test = _analytic_sample(6 * n_test_per_bin, (5.0, 120.0), seed + 1)
    return train, test, (f"analytic absorption-line model: {n_train} training stars (S/N 120-140), "
                         f"{6 * n_test_per_bin} test stars at S/N 5-120")


def default_model_cache() -> Path:
    """``$SLAMLIB_CACHE/benchmark_models`` if ``SLAMLIB_CACHE`` is set, else ``benchmarks/results/models``."""
    override = os.environ.get("SLAMLIB_CACHE")
    return Path(override).expanduser() / "benchmark_models" if override else HERE / "results" / "models"


def model_key(data: str, n_train: int, seed: int, train: Sample) -> str:
    """Hash of the training data and parameters that names the cached model."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"data": data, "n_train": n_train, "seed": seed, "grid": SECTION3_GRID,
                              "epsilon": EPSILON, "cv": N_FOLDS, "backend": "batched"}, sort_keys=True).encode())
    for array in (train.flux, train.ivar, train.labels):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def trained_model(train: Sample, cache: Path, key: str, n_jobs: int) -> tuple[SlamModel, float | None]:
    """The cached model, or a freshly trained and cached one; (model, training seconds or None if cached)."""
    path = cache / f"prediction_model_{key}.npz"
    if path.is_file():
        return SlamModel.load(path), None
    model = SlamModel(param_grid=SECTION3_GRID, epsilon=EPSILON, cv=N_FOLDS, n_jobs=n_jobs, random_state=0,
                      backend="batched")
    start = time.perf_counter()
    model.fit(train.flux, train.ivar, train.labels, LABEL_NAMES, wave=train.wave)
    seconds = time.perf_counter() - start
    cache.mkdir(parents=True, exist_ok=True)
    model.save(path, include_cv_models=False)
    return SlamModel.load(path), seconds


# ---------------------------------------------------------------- original-code-style baseline
def _train_pixel_svrs(labels_std, flux_std, good, best_c, best_gamma, pixels):
    from sklearn.svm import SVR

    return [SVR(kernel="rbf", C=float(best_c[pixel]), gamma=float(best_gamma[pixel]), epsilon=EPSILON)
            .fit(labels_std[good[:, pixel]], flux_std[good[:, pixel], pixel]) for pixel in pixels]


def baseline_svrs(model: SlamModel, train: Sample, cache: Path, key: str, n_jobs: int) -> tuple[list, float | None]:
    """One scikit-learn ``SVR`` per trained pixel at that pixel's chosen (C, gamma), as the paper's code keeps them.

    Trained on the same standardized data as the SLAM model (joblib over pixel blocks) and cached
    with joblib beside the model. Returns (list with ``None`` for untrained pixels, training seconds
    or None if cached).
    """
    import joblib

    path = cache / f"baseline_svrs_{key}.joblib"
    if path.is_file():
        return joblib.load(path), None
    good = np.isfinite(train.flux) & np.isfinite(train.ivar) & (train.ivar > 0)
    flux_std = np.where(good, model.flux_scaler_.transform(np.where(good, train.flux, 0.0)), 0.0)
    labels_std = model.label_scaler_.transform(train.labels)
    result = model.training_
    pixels = np.flatnonzero(result.trained)
    start = time.perf_counter()
    blocks = np.array_split(pixels, max(1, min(len(pixels), 8 * n_jobs)))
    fitted = joblib.Parallel(n_jobs=n_jobs)(joblib.delayed(_train_pixel_svrs)(
        labels_std, flux_std, good, result.best_c, result.best_gamma, block) for block in blocks)
    seconds = time.perf_counter() - start
    svrs: list = [None] * result.trained.size
    for block, block_svrs in zip(blocks, fitted):
        for pixel, svr in zip(block, block_svrs):
            svrs[pixel] = svr
    cache.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".partial")
    joblib.dump(svrs, temporary)
    os.replace(temporary, path)
    return svrs, seconds


def baseline_predict(model: SlamModel, svrs: list, flux: np.ndarray, ivar: np.ndarray) -> dict[str, np.ndarray]:
    """Labels the way the paper's code finds them: per-pixel ``SVR.predict`` inside ``least_squares``.

    One star at a time, ``scipy.optimize.least_squares(method="lm")`` with a finite-difference
    ("2-point") Jacobian; the model flux of a label vector is a Python loop over the pixels'
    scikit-learn objects. Same likelihood weights and starting point (best-matching training star)
    as SLAM's own prediction.
    """
    from scipy.optimize import least_squares

    from slamlib.fitting import initial_guess, pixel_weights

    weights = pixel_weights(flux, ivar, model.model_variance_, model.trained_)
    start_std = model.training_.expansion.support_labels[initial_guess(np.nan_to_num(flux), weights,
                                                                       model.training_model_flux_)]
    pixels = np.flatnonzero(model.trained_)
    flux_mean, flux_scale = model.flux_scaler_.mean[pixels], model.flux_scaler_.scale[pixels]
    labels_std = np.full_like(start_std, np.nan)
    errors_std = np.full_like(start_std, np.nan)
    evaluations = np.zeros(flux.shape[0], dtype=int)
    for row in range(flux.shape[0]):
        sqrt_weight = np.sqrt(weights[row, pixels])
        observed = np.where(sqrt_weight > 0, flux[row, pixels], 0.0)

        def residuals(labels_row):
            point = labels_row[None, :]
            model_std = np.array([svrs[pixel].predict(point)[0] for pixel in pixels])
            return sqrt_weight * (flux_mean + flux_scale * model_std - observed)

        solution = least_squares(residuals, start_std[row], jac="2-point", method="lm")
        labels_std[row] = solution.x
        evaluations[row] = solution.nfev
        try:
            errors_std[row] = np.sqrt(np.diag(np.linalg.inv(solution.jac.T @ solution.jac)))
        except np.linalg.LinAlgError:
            pass
    scale = model.label_scaler_.scale
    return {"labels": model.label_scaler_.inverse_transform(labels_std), "errors": errors_std * scale,
            "n_evaluations": evaluations}


# ---------------------------------------------------------------- timing and agreement
def timed(function) -> tuple[object, float]:
    """(result, wall seconds) of one call."""
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def agreement(batched, reference) -> dict[str, float]:
    """|batched - reference| / reference formal error over spectra both flag as converged, and flag agreement."""
    both = batched.converged & reference.converged
    offset = np.abs(batched.labels[both] - reference.labels[both]) / reference.errors[both]
    return {
        "n_spectra": int(batched.converged.size),
        "n_converged_reference": int(reference.converged.sum()),
        "n_converged_batched": int(batched.converged.sum()),
        "same_converged_flag_fraction": float(np.mean(batched.converged == reference.converged)),
        "same_reason_fraction": float(np.mean(batched.reason.astype(str) == reference.reason.astype(str))),
        "same_n_evaluations_fraction": float(np.mean(batched.n_iter == reference.n_iter)),
        "offset_in_errors_max": float(offset.max()) if offset.size else float("nan"),
        "offset_in_errors_p99": float(np.quantile(offset, 0.99)) if offset.size else float("nan"),
        "offset_in_errors_median": float(np.median(offset)) if offset.size else float("nan"),
        "offset_in_errors_max_per_label": [float(v) for v in offset.max(axis=0)] if offset.size else [],
        "within_1pct_fraction": float(np.mean(offset < 0.01)) if offset.size else float("nan"),
        "errors_relative_difference_max": float(np.max(np.abs(batched.errors[both] / reference.errors[both] - 1.0)))
        if offset.size else float("nan"),
    }


def stratified_subset(snr: np.ndarray, size: int) -> np.ndarray:
    """``size`` spectra spread evenly over the S/N range (every k-th in S/N order)."""
    order = np.argsort(snr, kind="stable")
    return np.sort(order[np.linspace(0, order.size - 1, min(size, order.size)).round().astype(int)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=2000, help="training stars of the model (2000: the issue's)")
    parser.add_argument("--n-test-per-bin", type=int, default=100,
                        help="test spectra per S/N bin (six bins, 5-120) for the batched method")
    parser.add_argument("--reference-spectra", type=int, default=120,
                        help="spectra (spread over S/N) the reference is timed on; the batched method is timed on them too")
    parser.add_argument("--baseline-spectra", type=int, default=5,
                        help="spectra the original-code-style baseline is timed on (0: skip it)")
    parser.add_argument("--repeat", type=int, default=5, help="repeat the batched and reference timings, report the median")
    parser.add_argument("--n-jobs", type=int, default=2, help="cores for training and for the reference's joblib workers")
    parser.add_argument("--data", choices=("mock", "analytic"), default="mock")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model-cache", type=Path, default=None, help="directory of the cached models")
    parser.add_argument("--output", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    cache = default_model_cache() if args.model_cache is None else args.model_cache

    start = time.perf_counter()
    train, test, description = load_samples(args.data, args.n_train, args.n_test_per_bin, args.seed)
    data_seconds = time.perf_counter() - start
    key = model_key(args.data, args.n_train, args.seed, train)
    print(f"model {cache / f'prediction_model_{key}.npz'}: "
          f"{'cached' if (cache / f'prediction_model_{key}.npz').is_file() else 'training (a few minutes for 2000 stars on 2 cores)'}",
          flush=True)
    model, training_seconds = trained_model(train, cache, key, args.n_jobs)
    n_pix, n_label = model.n_pix_, len(model.label_names_)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count(),
                    "load_average_start": list(os.getloadavg())},
        "data": description, "n_train": args.n_train, "n_pix": n_pix, "n_label": n_label,
        "grid": SECTION3_GRID, "epsilon": EPSILON, "n_folds": N_FOLDS, "training_backend": "batched",
        "model_file": str(cache / f"prediction_model_{key}.npz"), "model_training_seconds": training_seconds,
        "data_seconds": data_seconds, "repeat": args.repeat, "reference_n_jobs": args.n_jobs,
    }
    subset = stratified_subset(test.snr, args.reference_spectra)
    flux_all, ivar_all = test.flux, test.ivar
    flux_subset, ivar_subset = flux_all[subset], ivar_all[subset]
    # One-time per-model work (model spectra of the training stars for the initial guess) outside the timings.
    model.training_model_flux_
    model.predict(flux_subset[:2], ivar_subset[:2], method="batched")
    model.predict(flux_subset[:2], ivar_subset[:2], method="reference", n_jobs=args.n_jobs)

    seconds = {"reference": [], "batched_subset": [], "batched_all": []}
    for repetition in range(args.repeat):
        reference, elapsed = timed(lambda: model.predict(flux_subset, ivar_subset, method="reference", n_jobs=args.n_jobs))
        seconds["reference"].append(elapsed)
        batched_subset, elapsed = timed(lambda: model.predict(flux_subset, ivar_subset, method="batched"))
        seconds["batched_subset"].append(elapsed)
        batched_all, elapsed = timed(lambda: model.predict(flux_all, ivar_all, method="batched"))
        seconds["batched_all"].append(elapsed)
        print(f"run {repetition + 1}/{args.repeat}: reference {seconds['reference'][-1]:.1f} s, batched "
              f"{seconds['batched_subset'][-1]:.2f} s ({subset.size} spectra), batched {seconds['batched_all'][-1]:.2f} s "
              f"({flux_all.shape[0]} spectra)", flush=True)
    sizes = {"reference": subset.size, "batched_subset": subset.size, "batched_all": flux_all.shape[0]}
    report["timings"] = {name: {"n_spectra": int(sizes[name]), "seconds": runs, "median_seconds": float(np.median(runs)),
                                "spectra_per_second": float(sizes[name] / np.median(runs)),
                                "spectra_per_second_fastest_run": float(sizes[name] / np.min(runs))}
                         for name, runs in seconds.items()}
    report["evaluations"] = {
        "reference_median": float(np.median(reference.n_iter[reference.n_iter > 0])),
        "reference_max": int(reference.n_iter.max()),
        "batched_all_median": float(np.median(batched_all.n_iter[batched_all.n_iter > 0])),
        "batched_all_max": int(batched_all.n_iter.max()),
        "batched_all_not_converged": int((~batched_all.converged).sum()),
        "batched_all_reasons": sorted({str(reason) for reason in batched_all.reason if reason}),
    }
    report["agreement"] = agreement(batched_subset, reference)
    truth = test.labels[subset]
    report["reference_label_scatter_vs_truth"] = [float(v) for v in np.nanstd(reference.labels - truth, axis=0)]

    rows = [("(a) reference: scipy least_squares per spectrum", "reference"),
            ("(b) batched, same spectra", "batched_subset"),
            ("(b) batched, all test spectra", "batched_all")]
    if args.baseline_spectra:
        svrs, svr_seconds = baseline_svrs(model, train, cache, key, args.n_jobs)
        report["baseline_svr_training_seconds"] = svr_seconds
        few = subset[stratified_subset(test.snr[subset], args.baseline_spectra)]
        baseline, elapsed = timed(lambda: baseline_predict(model, svrs, flux_all[few], ivar_all[few]))
        report["timings"]["baseline"] = {"n_spectra": int(few.size), "seconds": [elapsed], "median_seconds": elapsed,
                                         "spectra_per_second": float(few.size / elapsed),
                                         "spectra_per_second_fastest_run": float(few.size / elapsed)}
        positions = np.searchsorted(subset, few)
        with np.errstate(invalid="ignore"):
            offset = np.abs(baseline["labels"] - reference.labels[positions]) / reference.errors[positions]
        report["baseline_vs_reference_offset_in_errors_median"] = float(np.nanmedian(offset))
        report["baseline_evaluations_median"] = float(np.median(baseline["n_evaluations"]))
        rows.append((f"(c) original-code style (sklearn SVR per pixel, FD Jacobian), {few.size} spectra only", "baseline"))
    timings = report["timings"]
    speed = {name: timings[name]["spectra_per_second"] for name in timings}
    report["ratios"] = {"batched_over_reference_same_spectra": speed["batched_subset"] / speed["reference"],
                        "batched_all_over_reference": speed["batched_all"] / speed["reference"]}
    if "baseline" in speed:
        report["ratios"]["batched_all_over_baseline"] = speed["batched_all"] / speed["baseline"]
        report["ratios"]["reference_over_baseline"] = speed["reference"] / speed["baseline"]
    report["machine"]["load_average_end"] = list(os.getloadavg())

    print(f"\nPrediction benchmark: {description}")
    print(f"model: {args.n_train} stars x {n_pix} pixels x {n_label} labels, grid C={SECTION3_GRID['C']} "
          f"gamma={SECTION3_GRID['gamma']}, epsilon={EPSILON}, {N_FOLDS}-fold CV (batched trainer); "
          f"median of {args.repeat} run(s); reference n_jobs={args.n_jobs}; load average "
          f"{report['machine']['load_average_start'][0]:.2f} -> {report['machine']['load_average_end'][0]:.2f}")
    print(f"{'method':<84}{'spectra':>8}{'seconds':>10}{'spectra/s':>11}{'fastest run':>13}")
    for label, name in rows:
        entry = timings[name]
        print(f"{label:<84}{entry['n_spectra']:>8d}{entry['median_seconds']:>10.2f}{entry['spectra_per_second']:>11.2f}"
              f"{entry['spectra_per_second_fastest_run']:>13.2f}")
    ratios = report["ratios"]
    print(f"batched / reference: {ratios['batched_over_reference_same_spectra']:.0f}x on the same {subset.size} spectra, "
          f"{ratios['batched_all_over_reference']:.0f}x at {flux_all.shape[0]} spectra")
    if "batched_all_over_baseline" in ratios:
        print(f"batched / original-code-style baseline: {ratios['batched_all_over_baseline']:.0f}x "
              f"(reference / baseline {ratios['reference_over_baseline']:.1f}x)")
    a = report["agreement"]
    print(f"agreement on {a['n_spectra']} spectra: converged flags equal {100 * a['same_converged_flag_fraction']:.1f}% "
          f"({a['n_converged_reference']} converged), reasons equal {100 * a['same_reason_fraction']:.1f}%, "
          f"same number of evaluations {100 * a['same_n_evaluations_fraction']:.1f}%")
    print(f"  |batched - reference| / formal error: max {a['offset_in_errors_max']:.2e}, "
          f"99th pct {a['offset_in_errors_p99']:.2e}, median {a['offset_in_errors_median']:.2e}; "
          f"within 1%: {100 * a['within_1pct_fraction']:.1f}%; formal errors differ by at most "
          f"{100 * a['errors_relative_difference_max']:.2e}%")
    e = report["evaluations"]
    print(f"function evaluations per spectrum: reference median {e['reference_median']:.0f} (max {e['reference_max']}), "
          f"batched median {e['batched_all_median']:.0f} (max {e['batched_all_max']}); "
          f"not converged among all {flux_all.shape[0]}: {e['batched_all_not_converged']} {e['batched_all_reasons']}")
    write_report(report, args.output, "predict")
    return report


if __name__ == "__main__":
    main()
