"""On-disk cache of generated artefacts, keyed by a hash of their parameters.

An entry is two files in :func:`cache_dir`: ``<name>-<hash>.npz`` (the arrays, or
``.ecsv`` for a table) and ``<name>-<hash>.json`` (the parameters, the data file's
SHA-256 and the slamlib cache format). Both are written to a temporary file first and
moved into place (:func:`slamlib.files.atomic_write`), the JSON last, so an interrupted run never
leaves an entry that looks complete. An entry is used only if its JSON parses, its
parameters equal the requested ones and the data file's checksum matches; otherwise it
is recomputed and overwritten. Nothing is pickled: arrays are loaded with
``allow_pickle=False`` and object arrays are refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from slamlib.files import atomic_write, file_sha256, write_json_atomically

__all__ = ["CACHE_ENV", "cache_dir", "parameter_hash", "cached_arrays", "cached_table"]

#: Environment variable that overrides the cache directory.
CACHE_ENV = "SLAMLIB_CACHE"
_FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LOG = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Directory of the cache: ``$SLAMLIB_CACHE`` if set, else ``<repo>/data/cache``.

    ``<repo>`` is the source checkout holding ``pyproject.toml``; for an installed
    (non-editable) slamlib it falls back to ``~/.cache/slamlib``. The directory is
    created if needed.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        directory = Path(override).expanduser()
    else:
        repo = Path(__file__).resolve().parents[2]
        directory = repo / "data" / "cache" if (repo / "pyproject.toml").is_file() else Path.home() / ".cache" / "slamlib"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _jsonable(value: Any) -> Any:
    """Convert parameters to plain JSON types (numpy scalars and arrays, tuples, paths)."""
    if isinstance(value, Mapping):
        keys = [str(key) for key in value]
        if len(set(keys)) != len(keys):
            raise ValueError("parameter keys must stay unique when converted to strings.")
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        raise ValueError(f"parameters must be finite numbers, got {value!r}.")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"cannot hash parameter value of type {type(value).__name__}: {value!r}.")


def _canonical(params: Mapping[str, Any]) -> str:
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a mapping, got {type(params).__name__}.")
    return json.dumps(_jsonable(params), sort_keys=True, separators=(",", ":"), allow_nan=False)


def parameter_hash(params: Mapping[str, Any]) -> str:
    """Stable hash of a parameter dictionary.

    Parameters
    ----------
    params : mapping
        JSON-able values (numbers, strings, bools, None, lists/tuples, dicts, numpy
        scalars and arrays).

    Returns
    -------
    str
        The first 20 hex digits of the SHA-256 of the canonical JSON (sorted keys,
        no whitespace); independent of key order and of numpy vs Python scalar types.
    """
    return hashlib.sha256(_canonical(params).encode("utf-8")).hexdigest()[:20]


def _entry_paths(name: str, params: Mapping[str, Any], suffix: str, directory: Path | None) -> tuple[Path, Path, str]:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"cache entry name must match {_NAME.pattern}, got {name!r}.")
    key = parameter_hash(params)
    base = Path(directory) if directory is not None else cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    return base / f"{name}-{key}{suffix}", base / f"{name}-{key}.json", key


def _valid_entry(data_path: Path, meta_path: Path, name: str, canonical: str) -> bool:
    if not (data_path.is_file() and meta_path.is_file()):
        return False
    try:
        record = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("format") == _FORMAT
        and record.get("name") == name
        and record.get("params_json") == canonical
        and record.get("sha256") == file_sha256(data_path)
    )


def _write_record(meta_path: Path, data_path: Path, name: str, params: Mapping[str, Any], canonical: str) -> None:
    record = {
        "format": _FORMAT,
        "name": name,
        "params": _jsonable(params),
        "params_json": canonical,
        "data_file": data_path.name,
        "sha256": file_sha256(data_path),
    }
    write_json_atomically(meta_path, record)


def cached_arrays(
    name: str,
    params: Mapping[str, Any],
    compute: Callable[[], Mapping[str, np.ndarray]],
    *,
    directory: str | Path | None = None,
    refresh: bool = False,
) -> dict[str, np.ndarray]:
    """Return arrays from the cache, computing and storing them on a miss.

    Parameters
    ----------
    name : str
        Entry name (letters, digits, ``_.-``), e.g. ``"mock_lasp_survey"``.
    params : mapping
        Everything the result depends on; hashed with :func:`parameter_hash`.
    compute : callable
        ``compute() -> dict[str, ndarray]``; called only on a miss. Object arrays are
        refused (they would need pickle).
    directory : str or Path, optional
        Cache directory (default :func:`cache_dir`).
    refresh : bool
        Recompute even if a valid entry exists.

    Returns
    -------
    dict of str to ndarray

    Raises
    ------
    ValueError
        On a bad name, unhashable parameters, or a ``compute`` result that is not a
        mapping of non-object arrays.
    """
    canonical = _canonical(params)
    data_path, meta_path, _ = _entry_paths(name, params, ".npz", None if directory is None else Path(directory))
    if not refresh and _valid_entry(data_path, meta_path, name, canonical):
        try:
            with np.load(data_path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except (OSError, ValueError, EOFError) as error:  # damaged despite the checksum
            _LOG.warning("cache entry %s unreadable (%s); recomputing", data_path, error)
    elif data_path.exists() or meta_path.exists():
        _LOG.info("cache entry %s incomplete or stale; recomputing", data_path)
    result = compute()
    if not isinstance(result, Mapping):
        raise ValueError(f"compute() must return a mapping of arrays, got {type(result).__name__}.")
    arrays = {str(key): np.asarray(value) for key, value in result.items()}
    for key, array in arrays.items():
        if array.dtype.hasobject:
            raise ValueError(f"array {key!r} has dtype object; the cache never pickles.")
    atomic_write(data_path, lambda handle: np.savez(handle, **arrays))
    _write_record(meta_path, data_path, name, params, canonical)
    return arrays


def cached_table(
    name: str,
    params: Mapping[str, Any],
    compute: Callable[[], Table],
    *,
    directory: str | Path | None = None,
    refresh: bool = False,
) -> Table:
    """Like :func:`cached_arrays` for an astropy Table, stored as ECSV."""
    canonical = _canonical(params)
    data_path, meta_path, _ = _entry_paths(name, params, ".ecsv", None if directory is None else Path(directory))
    if not refresh and _valid_entry(data_path, meta_path, name, canonical):
        try:
            return Table.read(data_path, format="ascii.ecsv")
        except (OSError, ValueError) as error:
            _LOG.warning("cache entry %s unreadable (%s); recomputing", data_path, error)
    table = compute()
    if not isinstance(table, Table):
        raise ValueError(f"compute() must return an astropy Table, got {type(table).__name__}.")
    atomic_write(data_path, lambda temporary: table.write(temporary, format="ascii.ecsv", overwrite=True), to_path=True)
    _write_record(meta_path, data_path, name, params, canonical)
    return table
