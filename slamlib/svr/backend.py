"""Training backends: what a per-pixel SVR engine provides, and how one is chosen by name.

A backend trains a :class:`~slamlib.svr.problem.TrainingProblem` (all pixels, or a block of
them) and returns a :class:`~slamlib.svr.result.TrainingResult`. It also says how much memory
it needs, so that a block runner (:mod:`slamlib.pipeline.checkpoint`) can decide how many
blocks to train at once without knowing which backend it runs. Two implementations:

* ``"batched"`` (:class:`slamlib.svr.batched.BatchedBackend`, the default): the duals of many
  pixels solved together over one kernel per (gamma, fold), verified against the exact KKT
  conditions;
* ``"libsvm"`` (:class:`slamlib.svr.libsvm.LibsvmBackend`): one scikit-learn ``SVR`` per
  pixel, the paper's solver and the reference.

:func:`get_backend` turns a name into an instance (importing the backend only then) and
accepts any object that follows :class:`Backend`.
"""

from __future__ import annotations

import importlib
import os
from typing import Protocol, runtime_checkable

from slamlib.svr.problem import TrainingProblem
from slamlib.svr.result import TrainingResult

__all__ = ["Backend", "BACKEND_NAMES", "get_backend", "physical_memory", "worker_count"]

#: Names accepted by :func:`get_backend` (and ``SlamModel(backend=...)``), the default first.
BACKEND_NAMES = ("batched", "libsvm")

_IMPLEMENTATIONS = {"batched": ("slamlib.svr.batched", "BatchedBackend"),
                    "libsvm": ("slamlib.svr.libsvm", "LibsvmBackend")}


@runtime_checkable
class Backend(Protocol):
    """What a training backend provides."""

    #: Short name, part of checkpoint keys and model-cache keys.
    name: str

    def train(self, problem: TrainingProblem, *, n_jobs: int = -1) -> TrainingResult:
        """Train every pixel of ``problem`` with ``n_jobs`` workers (-1: all cores).

        The result of a pixel must not depend on ``n_jobs``, nor on the other columns when
        the problem is cut into blocks of 32 consecutive pixels
        (:meth:`TrainingProblem.columns`; the checkpoint and cluster block), so that block-wise
        and whole trainings agree bit for bit.
        """
        ...

    def memory_estimate(self, problem: TrainingProblem, *, n_workers: int = 1) -> int:
        """Peak bytes :meth:`train` holds for ``problem`` with ``n_workers`` (beyond the inputs)."""
        ...


def get_backend(backend: "str | Backend") -> Backend:
    """The backend named ``backend`` (see :data:`BACKEND_NAMES`), or ``backend`` itself.

    Raises
    ------
    ValueError
        For an unknown name or an object that is not a :class:`Backend`.
    """
    if isinstance(backend, str):
        if backend not in _IMPLEMENTATIONS:
            raise ValueError(f"backend must be one of {BACKEND_NAMES} or a Backend object, got {backend!r}.")
        module, name = _IMPLEMENTATIONS[backend]
        return getattr(importlib.import_module(module), name)()
    if not isinstance(backend, Backend):
        raise ValueError(f"backend must be one of {BACKEND_NAMES} or an object with name, train() and "
                         f"memory_estimate() (slamlib.svr.backend.Backend), got {backend!r}.")
    return backend


def worker_count(n_jobs: int | None) -> int:
    """Workers meant by ``n_jobs``: all cores for -1 or None, else at least one."""
    return (os.cpu_count() or 1) if n_jobs in (-1, None) else max(1, int(n_jobs))


def physical_memory() -> int:
    """Bytes of physical memory of this machine (0 where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0
