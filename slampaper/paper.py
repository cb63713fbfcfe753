"""The paper's numbers and claims, read from the data files under ``data/paper/``.

* ``data/paper/constants.yml``: every number, grid and criterion the paper states, by section
  (:func:`paper_constants`, :func:`paper_value`);
* ``data/paper/claims.csv``: one row per number the paper quotes and per claim it makes, with the
  record our chapters keep for it and the criterion of its verdict (:func:`load_claims`); the
  scorecard (:mod:`slampaper.scorecard`) reads it.

The experiments, the notebooks and the scorecard take the paper's values from here and nowhere
else, so a value is corrected in one place.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any

import yaml

from slampaper.paths import project_root

__all__ = ["paper_constants", "paper_value", "load_claims", "CLAIM_COLUMNS", "constants_path", "claims_path"]

#: Columns of ``data/paper/claims.csv``.
CLAIM_COLUMNS = ("section", "kind", "claim", "quantity", "notebook", "records", "combine", "criterion", "paper",
                 "unit", "table", "label", "window")
#: Kinds of claims the scorecard knows how to judge.
CLAIM_KINDS = ("number", "claim", "falls_with_snr", "largest_share", "funnel")


def constants_path() -> Path:
    """``<root>/data/paper/constants.yml``."""
    return project_root() / "data" / "paper" / "constants.yml"


def claims_path() -> Path:
    """``<root>/data/paper/claims.csv``."""
    return project_root() / "data" / "paper" / "claims.csv"


@functools.lru_cache(maxsize=4)
def _read_constants(path: str) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


def paper_constants(path: str | Path | None = None) -> dict[str, Any]:
    """The paper's constants (``data/paper/constants.yml``) as nested dicts; do not modify them."""
    return _read_constants(str(constants_path() if path is None else Path(path)))


def paper_value(key: str, path: str | Path | None = None) -> Any:
    """One constant by its dotted key, e.g. ``"section4.cv_scatter_snr100.teff"``.

    Raises
    ------
    ValueError
        If no constant has that key.
    """
    value: Any = paper_constants(path)
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"data/paper/constants.yml has no constant {key!r} (no {part!r}).")
        value = value[part]
    return value


def load_claims(path: str | Path | None = None) -> list[dict[str, str]]:
    """The rows of ``data/paper/claims.csv``, in order, as dicts of :data:`CLAIM_COLUMNS`.

    Raises
    ------
    ValueError
        If the file lacks a column or a row has an unknown kind.
    """
    path = claims_path() if path is None else Path(path)
    with open(path, newline="") as handle:
        rows = [row for row in csv.DictReader(line for line in handle if not line.startswith("#"))]
    if rows and set(CLAIM_COLUMNS) - set(rows[0]):
        raise ValueError(f"{path} lacks the columns {sorted(set(CLAIM_COLUMNS) - set(rows[0]))}.")
    for number, row in enumerate(rows, start=2):
        if row["kind"] not in CLAIM_KINDS:
            raise ValueError(f"{path}, row {number}: kind {row['kind']!r} is not one of {CLAIM_KINDS}.")
    return rows
