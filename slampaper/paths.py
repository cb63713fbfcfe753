"""Where the project keeps its book, its build output and its cache."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["project_root", "build_dir", "results_dir"]


def project_root() -> Path:
    """The repository root (overridable with the environment variable ``SLAMLIB_ROOT``).

    slamlib is installed in editable mode from the repository, so the root is the
    parent of the package directory.
    """
    if "SLAMLIB_ROOT" in os.environ:
        return Path(os.environ["SLAMLIB_ROOT"]).resolve()
    return Path(__file__).resolve().parents[1]


def build_dir() -> Path:
    """``<root>/_build``: executed notebooks, the HTML book and the results."""
    return project_root() / "_build"


def results_dir(directory: str | Path | None = None) -> Path:
    """Directory of recorded results, figures and tables (default ``<root>/_build/results``), created if needed."""
    path = build_dir() / "results" if directory in (None, "") else Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path
