"""The three layers: the core (the method) loads none of the pipelines, the book or the network."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE_MODULES = ["slamlib", "slamlib.io", "slamlib.preprocess", "slamlib.scaling", "slamlib.svr", "slamlib.svr.batched",
                "slamlib.svr.libsvm", "slamlib.svr.backend", "slamlib.svr.problem", "slamlib.fitting",
                "slamlib.fitting_batched", "slamlib.model", "slamlib.state", "slamlib.runner", "slamlib.modelfile",
                "slamlib.metrics", "slamlib.cod", "slamlib.ensemble", "slamlib.files"]
# (yaml is not listed: astropy.table loads it for ECSV.)
FORBIDDEN = ["papermill", "jupyter_book", "dask", "distributed", "matplotlib", "astroquery", "requests",
             "slamlib.pipeline", "slamlib.mock", "slamlib.data", "slampaper"]


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = ("import json, sys\n" + "".join(f"import {name}\n" for name in modules)
            + "print(json.dumps(sorted(sys.modules)))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(json.loads(output.stdout))


def test_importing_the_core_loads_no_pipeline_book_plotting_cluster_or_network_code():
    loaded = _loaded_after_import(CORE_MODULES)
    offending = sorted(name for name in loaded for forbidden in FORBIDDEN
                       if name == forbidden or name.startswith(forbidden + "."))
    assert offending == []


def test_the_check_can_fail():
    # The same check sees a forbidden module when one is imported (the test above is not vacuous).
    loaded = _loaded_after_import(["slamlib.pipeline.checkpoint"])
    assert "slamlib.pipeline" in loaded


def _imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer, forbidden", [
    ("slamlib", ("slampaper", "slamlib.pipeline", "slamlib.mock", "slamlib.data")),   # the core, files at its top
    ("slamlib/svr", ("slampaper", "slamlib.pipeline", "slamlib.mock", "slamlib.data")),
    ("slamlib/pipeline", ("slampaper",)),
    ("slamlib/mock", ("slampaper",)),
    ("slamlib/data", ("slampaper",)),
])
def test_no_layer_imports_the_layers_above_it_even_lazily(layer, forbidden):
    offending = {}
    for path in sorted((ROOT / layer).glob("*.py")):
        bad = sorted(name for name in _imported_packages(path)
                     if any(name == f or name.startswith(f + ".") for f in forbidden))
        if bad:
            offending[path.name] = bad
    assert offending == {}


#: The public names of the core in slamlib 0.2.0; every one still imports (those that moved are in
#: the CHANGELOG's table: only batched.kernel_matrix, now slamlib.svr.kernel.rbf_kernel).
PUBLIC_NAMES_0_2_0 = {
    "slamlib": ["SlamModel", "PredictionResult", "GaussianPrior", "__version__"],
    "slamlib.model": ["SlamModel", "PAPER_SECTION3_GRID", "BACKENDS"],
    "slamlib.fitting": ["GaussianPrior", "PredictionResult", "pixel_weights", "initial_guess", "fit_labels", "predict_labels"],
    "slamlib.fitting_batched": ["BatchFit", "PixelModel", "levenberg_marquardt_batch", "MAX_EVALUATIONS_REASON",
                                "SINGULAR_REASON"],
    "slamlib.metrics": ["CVStatistics", "cv_bias", "cv_scatter", "cv_statistics", "scatter_by_snr", "error_model",
                        "fit_error_model", "fit_error_models", "label_distance", "coefficients_of_dependence"],
    "slamlib.modelfile": ["FORMAT_NAME", "FORMAT_VERSION", "save_arrays", "load_arrays", "array_checksum",
                          "library_versions"],
    "slamlib.ensemble": ["EnsemblePrediction", "jackknife_errors"],
    "slamlib.cod": ["CodResult", "leave_one_label_out"],
    "slamlib.io": ["Spectrum", "SpectrumBatch", "read_lamost", "write_lamost", "LAYOUTS"],
    "slamlib.preprocess": ["MAX_BAD_PIXELS", "MIN_GOOD_PIXELS", "PreparedSpectra", "bad_pixel_mask", "common_wave_grid",
                           "count_bad_pixels", "normalize_continuum", "prepare", "resample", "smoothing_spline",
                           "to_rest_frame"],
    "slamlib.scaling": ["Standardizer"],
    "slamlib.svr.batched": ["train_pixels", "memory_estimate", "default_chunk_size", "CV_STAGES", "REFIT_STAGES",
                            "FACTOR_TOL", "MAX_FACTOR_RANK", "DECOMPOSITION_MIN_STARS", "PIXEL_GROUP", "physical_memory"],
    "slamlib.svr.decomposition": ["solve", "scaled_start", "Solution", "WORKING_SET_SIZE"],
    "slamlib.svr.libsvm": ["train_pixels", "train_pixel", "fit_and_predict", "PIXEL_BLOCK_SIZE", "TOLERANCE",
                           "ORIGINAL_TOLERANCE"],
    "slamlib.svr.result": ["TrainingResult", "parameter_pairs", "pixels_to_train"],
    "slamlib.svr.kernel": ["KernelExpansion", "rbf_kernel"],
    "slamlib.svr.folds": ["kfold_indices", "fold_assignment"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC_NAMES_0_2_0))
def test_the_public_names_of_0_2_0_still_import(module):
    import importlib

    imported = importlib.import_module(module)
    missing = [name for name in PUBLIC_NAMES_0_2_0[module] if not hasattr(imported, name)]
    assert missing == []


def test_moved_names_are_in_the_changelog():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    for old in ("slamlib.checkpoint", "slamlib.scaleout", "slamlib.cli", "slamlib.bookbuild", "kernel_matrix",
                "train_pixels_resumable", "concurrent_blocks", "label_predictor"):
        assert old in changelog, old
