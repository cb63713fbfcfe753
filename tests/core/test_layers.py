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
