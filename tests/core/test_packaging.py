"""pyproject.toml and environment.yml must declare the same dependencies."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _environment_dependencies() -> dict[str, str]:
    dependencies = {}
    in_list = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_list = True
            continue
        match = re.match(r"^  - ([^:#]+?)\s*$", line)
        if in_list and match:
            requirement = match.group(1).replace(" ", "")
            if _name(requirement) not in {"python", "pip"}:
                dependencies[_name(requirement)] = requirement
    return dependencies


def test_pyproject_and_environment_declare_the_same_dependencies():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    extras = project["optional-dependencies"]
    declared = project["dependencies"] + extras["book"] + extras["cluster"] + extras["data"]
    from_pyproject = {_name(r): r.replace(" ", "") for r in declared}
    from_environment = _environment_dependencies()
    assert from_pyproject == from_environment
    assert from_pyproject["jupyter-book"] == "jupyter-book>=1,<2"


def test_the_core_needs_none_of_the_optional_parts():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    core = {_name(r) for r in pyproject["project"]["dependencies"]}
    assert {"numpy", "scipy", "scikit-learn", "astropy", "joblib", "numba"} <= core
    assert not core & {"papermill", "jupyter-book", "matplotlib", "dask", "distributed", "astroquery", "requests"}
    extras = pyproject["project"]["optional-dependencies"]
    assert {"book", "cluster", "data", "test"} <= set(extras)


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
