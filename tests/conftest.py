"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The project's shared folder (real LAMOST sample files, docs): ``../shared`` next to the repository.
SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (relative to the repository root); tests using it skip when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"../shared not found: {SHARED_DIR} does not exist (real-data tests need the shared folder)")
    return SHARED_DIR


def shared_data_dir(shared_dir: Path, name: str) -> Path:
    """``shared_dir / "data" / name``, or skip the test with the reason if that folder is absent."""
    path = shared_dir / "data" / name
    if not path.is_dir():
        pytest.skip(f"../shared/data/{name} not found: {path} does not exist")
    return path


@pytest.fixture(scope="session")
def lamost_dr1_dir(shared_dir: Path) -> Path:
    """``../shared/data/lamost_dr1_sample``: 8 real LAMOST DR1 spectra and their ``labels.csv``."""
    return shared_data_dir(shared_dir, "lamost_dr1_sample")


@pytest.fixture(scope="session")
def lamost_layouts_dir(shared_dir: Path) -> Path:
    """``../shared/data/lamost_layouts``: one real DR6, DR7 and DR9 spectrum (gzipped FITS)."""
    return shared_data_dir(shared_dir, "lamost_layouts")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that execute notebooks are slow too: ``pytest -m "not slow"`` leaves them out."""
    for item in items:
        if item.get_closest_marker("book") is not None and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)
