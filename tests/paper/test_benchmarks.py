"""The benchmark scripts run end to end at a tiny size and write consistent reports.

They measure speed and memory (not tested here); these tests only guard that the scripts
still run against the library and that their reports add up.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Each script runs in its own process (5-15 s).
pytestmark = pytest.mark.slow


def run_script(script: str, *arguments: str, output: Path) -> tuple[dict, str]:
    completed = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *arguments, "--output", str(output)],
                               capture_output=True, text=True, timeout=600, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-3000:]
    reports = sorted(output.glob("*.json"))
    assert len(reports) == 1
    return json.loads(reports[0].read_text()), completed.stdout


def test_memory_benchmark_projects_the_untouched_arrays(tmp_path):
    n_star, n_pix, n_folds, pixels = 300, 24, 3, 2
    report, stdout = run_script("memory.py", "--n-star", str(n_star), "--n-pix", str(n_pix), "--n-folds", str(n_folds),
                                "--pixels", str(pixels), output=tmp_path)
    assert report["n_star"] == n_star and report["n_label"] == 6 and report["pixels_trained"] == pixels
    # All 25 grid points and every fold were solved for the trained pixels.
    assert report["solver_stats"]["cv_problems"] == pixels * n_folds * 5 * 5
    ranks = report["solver_stats"]["factor_rank"]
    assert len(ranks) == 5 and all(0 < rank <= n_star for rank in ranks.values())
    # The untouched result rows: final + fold dual coefficients of the pixels not trained.
    assert report["untouched_result_bytes"] == (n_folds + 1) * (n_pix - pixels) * n_star * 8
    assert report["projected_peak_bytes_all_pixels"] == (report["peak_rss_bytes_measured"] + report["untouched_result_bytes"]
                                                         + report["extra_chunk_working_bytes"])
    assert report["peak_rss_bytes_measured"] > 0
    assert "projected peak" in stdout


def test_training_benchmark_compares_predicted_spectra_at_three_label_sets(tmp_path):
    report, stdout = run_script("run.py", "--data", "analytic", "--n-star", "150", "--n-pix", "12", "--reference-pixels", "4",
                                "--trace-memory",
                                "--exact-check-pixels", "2", output=tmp_path)
    exactness = report["exactness"]
    assert exactness["n_pixels"] == 4 and 0.0 <= exactness["same_choice_fraction"] <= 1.0
    sets = exactness["flux_difference"]
    assert set(sets) == {"training_stars", "independent_stars", "uniform_in_label_box"}
    assert sets["training_stars"]["n_points"] == 150 and sets["independent_stars"]["n_points"] == 1000
    for numbers in sets.values():
        assert 0.0 <= numbers["pixels_within_0p1_eps"] <= 1.0
        assert numbers["median_of_pixel_max"] <= numbers["p90_of_pixel_max"] <= numbers["max"]
    assert report["batched_full"]["pixels"] == 12
    assert report["batched_full"]["traced_peak_bytes"] > 0 and report["batched_full"]["peak_rss_bytes_after"] > 0
    assert "independent stars" in stdout and "speed-up" in stdout
    # The original code's tolerance is timed and compared too, and the bar's verdict is printed.
    assert report["reference_original_tolerance"]["tol"] > report["reference"]["tol"]
    for key in ("exactness_vs_original_tolerance", "original_tolerance_vs_reference"):
        assert report[key]["n_pixels"] == 4
    bar = report["exactness"]["flux_difference"]
    expected = all(bar[name]["max"] <= 0.1 for name in ("training_stars", "independent_stars")) and (
        report["exactness"]["same_choice_fraction"] >= 0.95 and report["exactness"]["cv_mse_rel_diff_median"] <= 0.01)
    assert report["exactness"]["bar_met_at_star_labels"] == expected
    assert stdout.count("bar (within 0.1 eps at stars' labels)") == 3


def test_scale_benchmark_projects_both_engines_and_the_cost_chapter_reads_its_report(tmp_path):
    """At a tiny size with a narrow factor limit, gamma 0.001 stays low-rank and 0.1 goes to the
    decomposition engine; the projection is the sum of the per-gamma projections, and the
    reference comparison covers every C of the grid."""
    from slampaper import cost

    n_star, n_pix, n_folds, pixels = 400, 20, 3, 2
    report, stdout = run_script("scale.py", "--n-star", str(n_star), "--n-pix", str(n_pix), "--n-folds", str(n_folds),
                                "--pixels", str(pixels), "--gammas", "0.001", "0.1", "--max-factor-rank", "200",
                                "--reference", output=tmp_path)
    low, high = report["gammas"]["0.001"], report["gammas"]["0.1"]
    assert low["engine"] == "batched low-rank Newton" and low["factor_rank"] < 200
    assert high["engine"] == "decomposition" and high["factor_rank_at_least"] == 200
    assert len(high["per_pixel"]) == pixels and all(len(p["fold_path_seconds"]) == 5 for p in high["per_pixel"])
    expected_per_pixel = sum(n_folds * sum(p["fold_path_seconds"]) + p["refit_seconds"] for p in high["per_pixel"]) / pixels
    assert high["per_pixel_seconds_one_worker"] == pytest.approx(expected_per_pixel)
    assert report["projected_seconds_section4"] == pytest.approx(low["projected_seconds_all_pixels"]
                                                                 + high["projected_seconds_all_pixels"])
    comparison = high["reference_comparison"]
    assert [row["C"] for row in comparison] == pytest.approx([1.0, 10**0.5, 10.0, 10**1.5, 100.0])
    assert max(row["max_fitted_difference_over_epsilon"] for row in comparison) <= 0.1
    assert max(row["heldout_mse_relative_difference"] for row in comparison) <= 1e-2
    read = cost.latest_scale_report(tmp_path)
    assert read["projected_seconds_section4"] == report["projected_seconds_section4"]
    table = cost.scale_table(read)
    assert list(table["engine"]) == ["batched low-rank Newton", "decomposition"]
    assert table["projected_hours"][1] == pytest.approx(high["projected_seconds_all_pixels"] / 3600)
    assert cost.latest_scale_report(tmp_path / "empty") is None
