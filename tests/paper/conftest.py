"""Fixtures of the book tests: the smoke book is built once per session and shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from slampaper import bookbuild


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """The smoke-profile book built into a temporary ``_build``: ``(build_directory, timings)``.

    Built on first use only, so ``test_book.py`` and ``test_rendered_book.py`` share one build.
    """
    build_directory = tmp_path_factory.mktemp("smoke_book") / "_build"
    timings = bookbuild.build_book("smoke", build_directory=build_directory)
    return build_directory, timings
