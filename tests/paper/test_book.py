"""The book: notebooks committed clean and thin, profiles consistent, the smoke profile builds."""

import ast
import json
from pathlib import Path

import pytest
import yaml

from slampaper import bookbuild
from slampaper.results import load_records

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _parameters_cell(path):
    cells = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name} must have exactly one cell tagged 'parameters'"
    return "".join(cells[0]["source"])


def test_there_are_notebooks_and_every_one_is_in_the_toc():
    assert NOTEBOOKS
    assert sorted(bookbuild.chapter_notebooks()) == sorted(p.stem for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs(path):
    for cell in _cells(path):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_cells_are_folded_for_readers(path):
    # Readers see figures, tables and prose; the code is one click away (hide-input).
    for cell in _cells(path):
        if cell["cell_type"] == "code":
            tags = set(cell.get("metadata", {}).get("tags", []))
            assert tags & {"parameters", "hide-input"}, f"{path.name}: code cell without hide-input: {''.join(cell['source'])[:60]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameter_defaults_are_the_quick_profile(path):
    defaults = {}
    for node in ast.parse(_parameters_cell(path)).body:
        assert isinstance(node, ast.Assign), "the parameters cell holds plain assignments only"
        defaults[node.targets[0].id] = ast.literal_eval(node.value)
    assert defaults["data_source"] in {"mock", "lamost"} and "output_dir" in defaults and "profile" in defaults
    profiles = bookbuild.load_profiles()
    for profile in bookbuild.profile_names():
        overrides = profiles["profiles"][profile][path.stem]
        assert set(overrides) <= set(defaults), f"{profile} sets parameters {path.stem} does not have"
    for key, value in profiles["profiles"]["quick"][path.stem].items():
        assert defaults[key] == value, f"{path.stem}: default {key}={defaults[key]!r}, quick profile {value!r}"


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="profile"):
        bookbuild.notebook_parameters("appendix_hyperparameters", "huge")


def test_rendering_a_partial_build_names_the_chapters_never_executed(tmp_path):
    build_directory = tmp_path / "_build"
    with pytest.raises(ValueError, match="never been executed") as error:
        bookbuild.build_book("smoke", only=[], html=True, build_directory=build_directory)
    for name in bookbuild.chapter_notebooks():
        assert name in str(error.value)
    assert not (build_directory / "html").exists()
    with pytest.raises(ValueError, match="unknown chapter"):
        bookbuild.build_book("smoke", only=["no_such_chapter"], html=False, build_directory=build_directory)


@pytest.mark.book
def test_smoke_profile_builds_the_book_with_every_expected_output(smoke_book):
    build_directory, timings = smoke_book  # built once per session (conftest.py), shared with test_rendered_book.py
    assert (build_directory / "html" / "index.html").is_file()
    records = load_records(build_directory / "results")
    expected = yaml.safe_load((ROOT / "book" / "profiles.yml").read_text())["expected_outputs"]
    for name in bookbuild.chapter_notebooks():
        assert (build_directory / "html" / "book" / f"{name}.html").is_file()
        assert records[name]["parameters"]["profile"] == "smoke"
        for figure in expected[name].get("figures", []):
            assert (build_directory / "results" / records[name]["figures"][figure]["path"]).is_file()
        for table in expected[name].get("tables", []):
            assert all((build_directory / "results" / p).is_file() for p in records[name]["tables"][table]["paths"])
        for key in expected[name].get("records", []):
            assert records[name]["records"][key]["value"] is not None, f"{name}: {key} missing"
    assert set(timings) >= set(bookbuild.chapter_notebooks()) | {"html"}
