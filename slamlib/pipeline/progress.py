"""Progress bars for slamlib's long loops, off unless a caller (the ``slam`` command) turns them on."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

__all__ = ["progress_bars", "make_progress_bar"]

_ENABLED: contextvars.ContextVar[bool | None] = contextvars.ContextVar("slamlib_progress", default=False)


@contextlib.contextmanager
def progress_bars(enabled: bool | None) -> Iterator[None]:
    """Show tqdm progress bars in slamlib's long loops within this context.

    Parameters
    ----------
    enabled : bool or None
        True: always; False: never (the default outside this context); None: only when
        standard error is a terminal.
    """
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def make_progress_bar(**options: Any):
    """A tqdm bar on standard error that honours :func:`progress_bars`; ``options`` go to tqdm."""
    from tqdm import tqdm

    enabled = _ENABLED.get()
    return tqdm(disable=None if enabled is None else not enabled, dynamic_ncols=True, **options)
