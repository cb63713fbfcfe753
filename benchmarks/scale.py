"""Training at the paper's Section 4 size, measured on a sample and projected (``make benchmark-scale``).

The Section 4 model: ~17,000 stars, 6 labels, C = 10^(0...2) x gamma = 10^(-3...-1) (5 x 5),
8-fold CV and the refit, on 1,901 pixels. Training all of it takes days on 2 cores, so this
benchmark measures the training of a sample of pixels spread over the spectrum and projects:

* gammas whose kernel the batched backend's low-rank Newton phase handles (factor narrower than
  ``batched.MAX_FACTOR_RANK``) are trained exactly as ``batched.train_pixels`` trains them (all
  folds, all C, the refit) on ``--pixels`` pixels; their time scales with the number of pixels;
* nearly full-rank gammas are solved by the decomposition engine
  (:mod:`slamlib.svr.decomposition`) one problem at a time; the benchmark times, per sampled
  pixel, one fold's path over the C grid (warm-started as the backend does) and one refit, and
  projects n_folds fold paths + one refit per pixel;
* with ``--reference`` the first sampled pixel's fold path is also fitted by LIBSVM at the
  reference tolerance, and the report gives the relative difference of the held-out MSE, the
  largest difference of the predictions at the training stars (in units of epsilon) and both
  solvers' KKT violations.

The projection is per-problem time x the number of problems on ``--workers`` workers (the
problems are independent; two workers on two cores), reported beside the paper's "about a day"
(Section 4.2 does not state its machine). Peak resident memory is measured.

Data: labels of mock APOGEE-LAMOST K giants (:func:`slamlib.mock.samples.apogee_common_sample`),
flux from the training benchmark's analytic line model (``benchmarks/synthetic.py``); not survey data.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from memory import SECTION4_GRID, load_data  # noqa: E402
from report import write_report  # noqa: E402

from slamlib.svr import batched, decomposition, libsvm  # noqa: E402
from slamlib.svr.batched_solver import kkt_violation, pivoted_cholesky  # noqa: E402
from slamlib.svr.folds import fold_assignment, kfold_indices  # noqa: E402
from slamlib.svr.kernel import rbf_kernel  # noqa: E402

GIB = 2.0**30
EPSILON = 0.05


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_low_rank_gamma(labels, flux, good, folds, gamma, pixels, n_jobs):
    """Seconds to train ``pixels`` at one gamma with the batched backend (all C, all folds, refit)."""
    grid = {"C": SECTION4_GRID["C"], "gamma": [gamma]}
    stats: dict = {}
    start = time.perf_counter()
    batched.train_pixels(labels, flux, good, folds, grid, EPSILON, min_good_stars=2 * len(folds), n_jobs=n_jobs,
                         pixels=pixels, stats=stats)
    return time.perf_counter() - start, stats


def fold_path(K, y, train, c_values):
    """One fold's path over the C grid with the decomposition engine, as the backend runs it."""
    solutions, seconds = [], []
    previous = None
    for c in c_values:
        start = None if previous is None else decomposition.scaled_start(previous[1], previous[0], c)
        begin = time.perf_counter()
        solution = decomposition.solve(K, y, train, c, EPSILON, tol=libsvm.TOLERANCE, start=start)
        seconds.append(time.perf_counter() - begin)
        solutions.append(solution)
        previous = (c, solution)
    return solutions, seconds


def compare_with_libsvm(labels, K, y, train, test, c_values, gamma, solutions):
    """Held-out MSE, prediction and KKT comparison of a fold path with LIBSVM at the reference tolerance."""
    rows = []
    for c, solution in zip(c_values, solutions):
        begin = time.perf_counter()
        regressor, predicted_test = libsvm.fit_and_predict(labels[train], y[train], labels[test], c, gamma, EPSILON)
        libsvm_seconds = time.perf_counter() - begin
        beta = np.zeros(y.size)
        beta[np.flatnonzero(train)[regressor.support_]] = regressor.dual_coef_[0]
        kernel_beta = beta @ K
        ours_test = solution.kernel_beta[test] + solution.intercept
        mse_ours = float(np.mean((ours_test - y[test]) ** 2))
        mse_libsvm = float(np.mean((predicted_test - y[test]) ** 2))
        fitted_difference = np.abs(solution.kernel_beta + solution.intercept - kernel_beta - regressor.intercept_[0])[train]
        kkt = [float(kkt_violation(b[None], np.array([i]), kb[None], y[None], train[None], c, EPSILON)[0])
               for b, i, kb in ((solution.beta, solution.intercept, solution.kernel_beta),
                                (beta, regressor.intercept_[0], kernel_beta))]
        rows.append({"C": c, "heldout_mse_relative_difference": abs(mse_ours / mse_libsvm - 1),
                     "max_fitted_difference_over_epsilon": float(fitted_difference.max() / EPSILON),
                     "kkt_ours": kkt[0], "kkt_libsvm": kkt[1], "libsvm_seconds": libsvm_seconds,
                     "libsvm_iterations": int(np.ravel(regressor.n_iter_)[0])})
        print(f"    reference C={c:7.3f}: LIBSVM {libsvm_seconds:6.1f} s; held-out MSE rel. diff "
              f"{rows[-1]['heldout_mse_relative_difference']:.1e}; fitted diff "
              f"{rows[-1]['max_fitted_difference_over_epsilon']:.3f} eps; KKT ours {kkt[0]:.1e}, LIBSVM {kkt[1]:.1e}",
              flush=True)
    return rows


def time_full_rank_gamma(labels, flux, good, folds, gamma, pixels, reference):
    """Per-pixel seconds of one fold path and one refit at a nearly full-rank gamma, and the comparison."""
    c_values = sorted(SECTION4_GRID["C"])
    begin = time.perf_counter()
    K = rbf_kernel(labels, labels, gamma, block_rows=batched.KERNEL_BLOCK_ROWS)
    kernel_seconds = time.perf_counter() - begin
    assignment = fold_assignment(folds, labels.shape[0])
    per_pixel, comparison = [], []
    for number, pixel in enumerate(pixels):
        y = np.where(good[:, pixel], flux[:, pixel], 0.0)
        train = good[:, pixel] & (assignment != 0)
        test = good[:, pixel] & (assignment == 0)
        solutions, seconds = fold_path(K, y, train, c_values)
        # The refit at the largest C from this fold's solution (the backend starts from the mean of
        # all folds' models at the chosen C; one fold's is feasible too).
        begin = time.perf_counter()
        last = solutions[-1]
        refit = decomposition.solve(K, y, good[:, pixel], c_values[-1], EPSILON, tol=libsvm.TOLERANCE,
                                    start=(last.beta, last.kernel_beta))
        refit_seconds = time.perf_counter() - begin
        per_pixel.append({"pixel": int(pixel), "fold_path_seconds": seconds, "refit_seconds": refit_seconds,
                          "outer_iterations": [s.n_outer for s in solutions] + [refit.n_outer],
                          "inner_iterations": [s.n_inner for s in solutions] + [refit.n_inner]})
        print(f"  gamma {gamma:.4g} pixel {pixel}: fold path {sum(seconds):.1f} s "
              f"({', '.join(f'{s:.1f}' for s in seconds)}), refit {refit_seconds:.1f} s", flush=True)
        if reference and number == 0:
            comparison = compare_with_libsvm(labels, K, y, train, test, c_values, gamma, solutions)
    return kernel_seconds, per_pixel, comparison


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-star", type=int, default=17000)
    parser.add_argument("--n-pix", type=int, default=1901)
    parser.add_argument("--n-folds", type=int, default=8)
    parser.add_argument("--pixels", type=int, default=16, help="pixels sampled (spread over the spectrum)")
    parser.add_argument("--full-rank-pixels", type=int, default=None,
                        help="of those, how many are timed at the nearly full-rank gammas (default: all)")
    parser.add_argument("--gammas", type=float, nargs="+", default=SECTION4_GRID["gamma"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reference", action="store_true", help="compare the first pixel's fold path with LIBSVM")
    parser.add_argument("--max-factor-rank", type=int, default=batched.MAX_FACTOR_RANK,
                        help="widest low-rank factor (default: the backend's); measures where either engine pays")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=HERE / "results")
    args = parser.parse_args()
    batched.MAX_FACTOR_RANK = args.max_factor_rank

    labels, flux, good = load_data(args.n_star, args.n_pix, args.seed)
    n_star, n_pix = flux.shape
    folds = kfold_indices(n_star, args.n_folds, random_state=args.seed)
    pixels = np.linspace(0, n_pix - 1, args.pixels + 2).round().astype(int)[1:-1]
    full_rank_pixels = pixels[:: max(1, pixels.size // (args.full_rank_pixels or pixels.size))][: args.full_rank_pixels]
    n_c = len(SECTION4_GRID["C"])
    print(f"Section 4 problem: {n_star} stars x {labels.shape[1]} labels, {n_pix} pixels, {n_c} C x "
          f"{len(args.gammas)} gamma, {args.n_folds} folds; sampled pixels {pixels.tolist()}", flush=True)
    report: dict = {"n_star": n_star, "n_label": int(labels.shape[1]), "n_pix": n_pix, "n_folds": args.n_folds,
                    "grid": {"C": SECTION4_GRID["C"], "gamma": sorted(args.gammas)}, "workers": args.workers,
                    "max_factor_rank": args.max_factor_rank, "pixels": pixels.tolist(), "gammas": {}, "load_average_start": list(os.getloadavg())}
    projected_seconds = 0.0
    for gamma in sorted(args.gammas):
        begin = time.perf_counter()
        K = rbf_kernel(labels, labels, gamma, block_rows=batched.KERNEL_BLOCK_ROWS)
        rank = pivoted_cholesky(K, batched.FACTOR_TOL, max_rank=batched.MAX_FACTOR_RANK).shape[1]
        del K
        rank_seconds = time.perf_counter() - begin
        if rank < batched.MAX_FACTOR_RANK:
            seconds, stats = time_low_rank_gamma(labels, flux, good, folds, gamma, pixels, args.workers)
            projected = seconds * n_pix / pixels.size
            entry = {"engine": "batched low-rank Newton", "factor_rank": rank, "seconds": seconds,
                     "solver_stats": stats, "projected_seconds_all_pixels": projected}
            print(f"gamma {gamma:.4g}: rank {rank}, batched {seconds:.1f} s for {pixels.size} pixels "
                  f"-> {projected / 3600:.1f} h for {n_pix}", flush=True)
        else:
            kernel_seconds, per_pixel, comparison = time_full_rank_gamma(labels, flux, good, folds, gamma,
                                                                         full_rank_pixels, args.reference)
            per_pixel_seconds = np.mean([args.n_folds * sum(p["fold_path_seconds"]) + p["refit_seconds"]
                                         for p in per_pixel])
            projected = per_pixel_seconds * n_pix / args.workers + 2 * kernel_seconds
            entry = {"engine": "decomposition", "factor_rank_at_least": rank, "kernel_seconds": kernel_seconds,
                     "per_pixel": per_pixel, "per_pixel_seconds_one_worker": float(per_pixel_seconds),
                     "projected_seconds_all_pixels": projected, "reference_comparison": comparison}
            print(f"gamma {gamma:.4g}: rank >= {rank}, decomposition {per_pixel_seconds:.0f} s per pixel "
                  f"(one worker) -> {projected / 3600:.1f} h for {n_pix} pixels on {args.workers} workers", flush=True)
        entry["rank_seconds"] = rank_seconds
        report["gammas"][str(gamma)] = entry
        projected_seconds += projected
    report["projected_seconds_section4"] = projected_seconds
    report["peak_rss_bytes"] = peak_rss_bytes()
    report["load_average_end"] = list(os.getloadavg())
    print(f"projected Section 4 training: {projected_seconds / 3600:.1f} h ({projected_seconds / 86400:.2f} days) "
          f"on {args.workers} workers; the paper: about a day. Peak RSS {report['peak_rss_bytes'] / GIB:.2f} GiB")
    write_report(report, args.output, "scale")


if __name__ == "__main__":
    main()
