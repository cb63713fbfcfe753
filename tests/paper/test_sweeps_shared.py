"""Points shared between sweeps: one store for all sweeps, a point executed once, reused only when verified.

The executed test runs the cheapest chapter, ``appendix_hyperparameters``, on smoke parameters in
its own temporary sweeps directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from astropy.table import Table

from slampaper import sweeps

NOTEBOOK = "appendix_hyperparameters"
#: The point every lasp_test sweep has: the notebook's defaults (2x2 grid, epsilon 0.05, training S/N 120-140).
LASP_DEFAULT_POINT = {
    "learning_curve": {"n_train": 200},
    "hyperparameter_grid": {"hyperparameter_grid": "2x2 (paper, Sec. 3)"},
    "epsilon": {"epsilon": 0.05},
    "train_snr": {"train_snr": "S/N 120-140 (paper)"},
}


def _write_sweeps(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump({"sweeps": content}, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SLAMLIB_CACHE", str(tmp_path_factory.getbasetemp() / "slamlib-cache"))


# ------------------------------------------------------------------------------- no execution


def test_the_shipped_lasp_test_sweeps_share_their_default_point_at_quick_size():
    declared = sweeps.load_sweeps()
    points = {name: sweeps.sweep_points(declared[name], "quick") for name in LASP_DEFAULT_POINT}
    shared = {name: next(point.hash for point in points[name] if point.axes == axes)
              for name, axes in LASP_DEFAULT_POINT.items()}
    assert len(set(shared.values())) == 1, shared
    hashes = [point.hash for name in points for point in points[name]]
    # learning curve 100, 200, 400; grids 1x1, 2x2, 5x5; four epsilons; three training S/N ranges
    assert len(hashes) == 13 and len(set(hashes)) == 10
    assert declared["learning_curve"].axes("quick") == {"n_train": [100, 200, 400]}


def test_a_parameter_set_to_the_notebooks_default_is_the_same_point(tmp_path):
    defaults = sweeps.notebook_defaults(NOTEBOOK)
    assert defaults["seed"] == 0 and defaults["noise_variance"] == 0.16 and "output_dir" not in defaults
    path = _write_sweeps(tmp_path / "sweeps.yml", {
        "implicit": {"notebook": NOTEBOOK, "grid": {"n_points": [60]}, "collect": ["x"]},
        "explicit": {"notebook": NOTEBOOK, "grid": {"seed": [0]}, "fixed": {"smoke": {"n_points": 60, "noise_variance": 0.16}},
                     "collect": ["x"]},
        "other_seed": {"notebook": NOTEBOOK, "grid": {"seed": [1]}, "fixed": {"smoke": {"n_points": 60}}, "collect": ["x"]},
    })
    (implicit,), (explicit,), (other_seed,) = (sweeps.sweep_points(sweeps.get_sweep(name, path), "smoke")
                                               for name in ("implicit", "explicit", "other_seed"))
    assert implicit.hash == explicit.hash != other_seed.hash
    assert implicit.full_parameters == explicit.full_parameters and "seed" not in implicit.parameters


def test_a_sweep_cannot_take_the_name_of_the_point_store(tmp_path):
    path = _write_sweeps(tmp_path / "sweeps.yml", {sweeps.POINTS_DIR: {"notebook": NOTEBOOK, "grid": {"n_points": [60]},
                                                                       "collect": ["x"]}})
    with pytest.raises(sweeps.SweepError, match="holds the executed points"):
        sweeps.load_sweeps(path)


# ---------------------------------------------------------------------------------- execution


@pytest.mark.book
def test_a_shared_point_runs_once_and_runs_again_when_its_result_or_code_changed(tmp_path, monkeypatch):
    path = _write_sweeps(tmp_path / "sweeps.yml", {
        "first": {"notebook": NOTEBOOK, "grid": {"n_points": [60]}, "collect": ["cv_mse_min.sine"]},
        # the same point: seed 0 is the notebook's default
        "second": {"notebook": NOTEBOOK, "grid": {"seed": [0]}, "fixed": {"smoke": {"n_points": 60}},
                   "collect": ["cv_mse_min.sine"]},
    })
    out = tmp_path / "sweeps"

    def run(name: str) -> sweeps.SweepReport:
        return sweeps.run_sweep(name, "smoke", workers=1, sweeps_dir=out, sweeps_path=path, progress=False)

    first = run("first")
    assert len(first.executed) == 1 and not first.failed

    second = run("second")
    assert second.executed == [] and len(second.cached) == 1 and not second.failed
    (result,) = second.results
    assert result.directory == first.results[0].directory == sweeps.points_dir(out) / result.point.hash
    assert result.executed_by == "first" and second.cached_from == {"first": 1} and "1 from first" in second.summary()
    # the second sweep has its own table, plot and summary, with the reused point's values
    table = Table.read(out / "second" / "second.csv", format="ascii.csv")
    first_table = Table.read(out / "first" / "first.csv", format="ascii.csv")
    assert list(table["source"]) == ["cached from first"] and list(first_table["source"]) == ["executed"]
    assert table["cv_mse_min.sine"][0] == first_table["cv_mse_min.sine"][0]
    assert (out / "second" / "second.png").is_file() and (out / "second" / "second.fits").is_file()
    summary = json.loads((out / "second" / "second.json").read_text())
    assert summary["n_executed"] == 0 and summary["n_cached"] == 1 and summary["cached_from"] == {"first": 1}
    status = sweeps.sweep_status("second", out, path)
    assert status["state"] == "run" and "1 from first" in status["message"]
    assert "cached from first" in sweeps.sweep_html("second", out, path)
    assert not sweeps.collect_sweep("second", "smoke", sweeps_dir=out, sweeps_path=path).failed

    # a stored result that no longer matches its checksum is not reused: collected as failed, executed again
    results_file = result.directory / f"{NOTEBOOK}.json"
    results_file.write_text(results_file.read_text() + " ")
    assert sweeps.collect_sweep("second", "smoke", sweeps_dir=out, sweeps_path=path).failed
    rerun = run("second")
    assert len(rerun.executed) == 1 and not rerun.failed and rerun.cached_from == {}
    assert json.loads((result.directory / sweeps.POINT_FILE).read_text())["sweep"] == "second"
    assert run("first").cached_from == {"second": 1}

    # after an edit of the chapter's code the stored point is not the point any more: executed again
    notebook = json.loads(sweeps.notebook_path(NOTEBOOK).read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"][-1]
    code["source"] = list(code["source"]) + ["\nprint('changed')"]
    copy = tmp_path / f"{NOTEBOOK}.ipynb"
    copy.write_text(json.dumps(notebook))
    monkeypatch.setattr(sweeps, "notebook_path", lambda name: copy)
    changed = run("second")
    assert len(changed.executed) == 1 and not changed.failed
    assert changed.results[0].point.hash != result.point.hash
    assert (result.directory / sweeps.POINT_FILE).is_file()  # the old point stays in the store for the old code
