"""Mock surveys (labels plus spectra) generated once and kept in the on-disk cache."""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.table import Table

from slamlib.io import SpectrumBatch
from slamlib.mock.samples import apogee_common_sample, lasp_test_sample
from slamlib.mock.synthesis import synthesize
from slamlib.pipeline.cache import cached_arrays

__all__ = ["MOCK_VERSION", "survey"]

#: Version of the mock synthesis; part of every cache key, bump it when the physics changes.
MOCK_VERSION = "2"  # 2: line forest, line-by-line CH/CN/MgH, S/N-dependent LASP-like errors
_SAMPLES = ("lasp", "apogee")


def _table_to_arrays(prefix: str, table: Table) -> dict[str, np.ndarray]:
    return {f"{prefix}/{name}": np.asarray(table[name]) for name in table.colnames}


def _arrays_to_table(prefix: str, arrays: dict[str, np.ndarray]) -> Table:
    table = Table()
    for key, values in arrays.items():
        if key.startswith(prefix + "/"):
            table[key[len(prefix) + 1 :]] = values
    return table


def survey(
    sample: str = "lasp",
    *,
    n_train: int = 1000,
    n_test_per_bin: int = 100,
    n: int = 2000,
    seed: int = 0,
    use_cache: bool = True,
) -> tuple[Table, SpectrumBatch]:
    """Labels and LAMOST-like spectra of a mock survey, from the cache when possible.

    Parameters
    ----------
    sample : {"lasp", "apogee"}
        ``"lasp"``: :func:`~slamlib.mock.samples.lasp_test_sample` (``n_train``,
        ``n_test_per_bin``); ``"apogee"``: :func:`~slamlib.mock.samples.apogee_common_sample` (``n``).
    n_train, n_test_per_bin, n : int
        Sample sizes (only those of the chosen sample matter).
    seed : int
        Seed of the labels and of the spectra.
    use_cache : bool
        Read and write ``data/cache`` (see :mod:`slamlib.pipeline.cache`); False always recomputes.

    Returns
    -------
    labels : astropy.table.Table
        The sample table (one row per spectrum).
    spectra : SpectrumBatch
        ``flux`` and ``ivar`` stored as float32 (as in LAMOST files), ``ormask``,
        ``meta``.
    """
    if sample not in _SAMPLES:
        raise ValueError(f"sample must be one of {_SAMPLES}, got {sample!r}.")
    params: dict[str, Any] = {"sample": sample, "seed": int(seed), "mock_version": MOCK_VERSION}
    if sample == "lasp":
        params.update(n_train=int(n_train), n_test_per_bin=int(n_test_per_bin))
    else:
        params.update(n=int(n))

    def compute() -> dict[str, np.ndarray]:
        if sample == "lasp":
            labels = lasp_test_sample(n_train, n_test_per_bin, seed)
        else:
            labels = apogee_common_sample(n, seed)
        spectra = synthesize(labels, seed=seed)
        arrays = _table_to_arrays("labels", labels) | _table_to_arrays("meta", spectra.meta)
        arrays.update(
            wave=spectra.wave,
            flux=spectra.flux.astype(np.float32),
            ivar=spectra.ivar.astype(np.float32),
            ormask=spectra.ormask.astype(np.int64),
        )
        return arrays

    arrays = cached_arrays(f"mock_survey_{sample}", params, compute) if use_cache else compute()
    labels = _arrays_to_table("labels", arrays)
    meta = _arrays_to_table("meta", arrays)
    spectra = SpectrumBatch(
        wave=arrays["wave"], flux=arrays["flux"], ivar=arrays["ivar"], ormask=arrays["ormask"].astype(float), meta=meta
    )
    return labels, spectra
