"""Peak memory of the batched training backend at the paper's Section 4 size (``make benchmark-memory``).

Section 4 trains 6-label models on ~17,000 stars x 1,901 pixels with a 5 x 5 (C, gamma)
grid and 8-fold CV. Training all pixels at that size takes days on 2 cores, but memory does
not grow with the number of pixels trained: the batched backend holds one n_star x n_star
kernel and its low-rank factor at a time, per worker one chunk of pixels, and the result
arrays of all pixels. This benchmark therefore

1. trains the full-size problem (all stars, all grid points, all folds) on ``--pixels``
   pixels with two workers, and measures the process's peak resident memory. The backend
   holds one gamma's kernel at a time; a gamma whose factor would be wider than
   ``batched.MAX_FACTOR_RANK`` is fitted by LIBSVM without the kernel. At this size the peak is
   therefore set by the widest factor still solved batched and by the factorization that finds
   the first nearly full-rank gamma (``--gammas 0.003 0.01`` measures both in a fraction of the
   time of all five);
2. adds what such a short run does not touch, from the array sizes: the rows of the
   full-size result arrays (final and CV fold dual coefficients) of the pixels not trained,
   and the working arrays of a full default-size chunk beyond the chunk actually run
   (``batched._ARRAYS_PER_PROBLEM`` float64 arrays of n_star per problem);
3. prints both, with the solver's counts and the numerical rank of the kernel per gamma
   (the width of the low-rank factor).

Data: labels of mock APOGEE-LAMOST K giants (:func:`slamlib.mock.samples.apogee_common_sample`,
six labels), standardized; flux from the training benchmark's analytic absorption-line model
(:mod:`benchmarks.synthetic`) of their Teff, log g and [M/H], at S/N 100. Not survey data.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from report import write_report  # noqa: E402
from synthetic import spectra  # noqa: E402

from slamlib.mock.samples import apogee_common_sample  # noqa: E402
from slamlib.scaling import Standardizer  # noqa: E402
from slamlib.svr import batched  # noqa: E402
from slamlib.svr.folds import kfold_indices  # noqa: E402

LABEL_COLUMNS = ("TEFF", "LOGG", "M_H", "ALPHA_M", "C_M", "N_M")
SECTION4_GRID = {"C": list(10 ** np.linspace(0.0, 2.0, 5)), "gamma": list(10 ** np.linspace(-3.0, -1.0, 5))}
GIB = 2.0**30


def load_data(n_star: int, n_pix: int, seed: int):
    """Standardized 6-label K-giant labels, standardized flux and the good mask."""
    table = apogee_common_sample(int(n_star * 1.6) + 100, seed=seed)
    labels = np.column_stack([np.asarray(table[name], dtype=float) for name in LABEL_COLUMNS])
    keep = np.all(np.isfinite(labels), axis=1) & (np.asarray(table["population"]) == "red_giant_branch")
    labels = labels[keep][:n_star]
    if labels.shape[0] < n_star:
        raise ValueError(f"the mock gave only {labels.shape[0]} K giants; ask for fewer stars")
    rng = np.random.default_rng(seed)
    flux = spectra(labels[:, :3], n_pix)
    flux = flux + rng.normal(0.0, 1.0, flux.shape) * flux / 100.0
    good = np.ones(flux.shape, dtype=bool)
    flux_std = Standardizer.fit(flux).transform(flux)
    return Standardizer.fit(labels).transform(labels), flux_std, good


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-star", type=int, default=17000)
    parser.add_argument("--n-pix", type=int, default=1901)
    parser.add_argument("--n-folds", type=int, default=8)
    parser.add_argument("--pixels", type=int, default=2, help="pixels actually trained")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gammas", type=float, nargs="+", default=SECTION4_GRID["gamma"],
                        help="gamma values to train (default: the 5 of Section 4). The backend holds one gamma's "
                             "kernel and factor at a time and fits nearly full-rank gammas with LIBSVM, so "
                             "'--gammas 0.003 0.01' measures the peak in a fraction of the time")
    parser.add_argument("--output", type=Path, default=HERE / "results")
    args = parser.parse_args()

    start = time.perf_counter()
    labels_std, flux_std, good = load_data(args.n_star, args.n_pix, args.seed)
    n_star, n_pix = flux_std.shape
    data_peak = peak_rss_bytes()
    print(f"data: {n_star} stars x {n_pix} pixels x {labels_std.shape[1]} labels "
          f"({time.perf_counter() - start:.0f} s, peak RSS so far {data_peak / GIB:.2f} GiB)", flush=True)

    grid = {"C": SECTION4_GRID["C"], "gamma": sorted(args.gammas)}
    folds = kfold_indices(n_star, args.n_folds, random_state=args.seed)
    pixels = np.linspace(0, n_pix - 1, args.pixels + 2).round().astype(int)[1:-1]
    chunk_size = max(1, int(np.ceil(args.pixels / args.n_jobs)))
    stats: dict = {}
    train_start = time.perf_counter()
    batched.train_pixels(labels_std, flux_std, good, folds, grid, 0.05, min_good_stars=2 * args.n_folds,
                         n_jobs=args.n_jobs, pixels=pixels, chunk_size=chunk_size, stats=stats)
    train_seconds = time.perf_counter() - train_start
    measured = peak_rss_bytes()

    # What a run over all pixels touches beyond this one (np.zeros pages are only resident once written).
    n_c = len(SECTION4_GRID["C"])
    untouched_results = (args.n_folds + 1) * (n_pix - pixels.size) * n_star * 8
    default_chunk = batched.default_chunk_size(n_star, args.n_folds, n_c)
    extra_working = (args.n_jobs * max(default_chunk - chunk_size, 0) * (args.n_folds + n_c)
                     * batched._ARRAYS_PER_PROBLEM * n_star * 8)
    projected = measured + untouched_results + extra_working
    # The library's own estimate for the full run (what train_pixels checks against the machine's memory).
    estimate = batched.memory_estimate(n_star, n_pix, args.n_folds, n_c, n_workers=args.n_jobs, chunk_size=default_chunk)
    report = {
        "n_star": n_star, "n_pix": n_pix, "n_label": int(labels_std.shape[1]), "grid": grid,
        "n_folds": args.n_folds, "n_jobs": args.n_jobs, "pixels_trained": int(pixels.size),
        "train_seconds": train_seconds, "solver_stats": stats,
        "peak_rss_bytes_measured": measured, "untouched_result_bytes": untouched_results,
        "extra_chunk_working_bytes": extra_working, "default_chunk_size": default_chunk,
        "projected_peak_bytes_all_pixels": projected, "library_estimate_bytes": estimate,
        "data_peak_rss_bytes": data_peak,
        "load_average": list(__import__("os").getloadavg()),
    }
    print(f"trained {pixels.size} pixels ({len(grid['C']) * len(grid['gamma'])} grid points, "
          f"{args.n_folds} folds) in {train_seconds:.0f} s with {args.n_jobs} workers; solver: {stats}")
    print(f"peak RSS measured:                              {measured / GIB:6.2f} GiB")
    print(f"+ result rows of the {n_pix - pixels.size} pixels not trained:    {untouched_results / GIB:6.2f} GiB")
    print(f"+ working arrays of full {default_chunk}-pixel chunks:          {extra_working / GIB:6.2f} GiB")
    print(f"= projected peak for all {n_pix} pixels:             {projected / GIB:6.2f} GiB")
    print(f"  (of which the input data, before training:      {data_peak / GIB:6.2f} GiB)")
    print(f"library's estimate (batched.memory_estimate):    {estimate / GIB:6.2f} GiB beyond the input data")
    write_report(report, args.output, "memory")


if __name__ == "__main__":
    main()
