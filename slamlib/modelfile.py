"""The slamlib model file: a versioned, checksummed ``.npz`` of plain arrays plus JSON metadata.

Layout (format version 1):

* one ``.npz`` (zip) member per array, numeric or fixed-width unicode dtypes only, so that
  ``numpy.load(..., allow_pickle=False)`` reads it and loading never executes code;
* the member ``__metadata__``: a unicode scalar holding JSON with ``format``
  (``"slamlib-model"``), ``format_version``, ``sha256`` (over every array's name, dtype,
  shape and bytes, in sorted name order), the library versions and the caller's metadata.

Files are written to a temporary name and renamed (:func:`slamlib.files.atomic_write`), so an interrupted save never leaves a
half-written model behind.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from slamlib.files import array_checksum, atomic_write

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "save_arrays", "load_arrays", "array_checksum", "library_versions"]

FORMAT_NAME = "slamlib-model"
FORMAT_VERSION = 1
_METADATA_KEY = "__metadata__"


def library_versions() -> dict[str, str]:
    """Versions of slamlib and of the numerical libraries that shape its results."""
    import scipy
    import sklearn

    import slamlib

    return {"slamlib": slamlib.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__}


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> Path:
    """Write arrays and metadata as a slamlib model file.

    Parameters
    ----------
    path : str or Path
        Destination (conventionally ``*.npz``).
    arrays : dict of str to ndarray
        Numeric or unicode arrays; object arrays are refused.
    metadata : dict
        JSON-serializable description (parameters, label names...).

    Returns
    -------
    Path
    """
    path = Path(path)
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    for name, array in arrays.items():
        if array.dtype.hasobject:
            raise ValueError(f"array {name!r} has dtype object; model files hold plain arrays only.")
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "sha256": array_checksum(arrays),
        "library_versions": library_versions(),
        "metadata": metadata,
    }
    metadata_member = {_METADATA_KEY: np.array(json.dumps(header, sort_keys=True))}
    return atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays, **metadata_member))


def load_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a slamlib model file and verify its format version and checksum.

    Returns
    -------
    arrays : dict of str to ndarray
    header : dict
        ``format``, ``format_version``, ``sha256``, ``library_versions`` and ``metadata``.

    Raises
    ------
    ValueError
        If the file is missing, truncated, not a slamlib model, written by a newer
        format version, or its contents do not match the stored checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {path} does not exist.")
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            contents = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"{path} is not a readable slamlib model file (truncated or damaged: {error}); save the model again."
        ) from error
    if _METADATA_KEY not in contents:
        raise ValueError(f"{path} has no slamlib metadata; it was not written by SlamModel.save.")
    try:
        header = json.loads(str(contents.pop(_METADATA_KEY)))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: the metadata is damaged ({error}).") from error
    if header.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a slamlib model file (format {header.get('format')!r}).")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} uses model format version {version}, newer than this slamlib reads "
            f"({FORMAT_VERSION}); upgrade slamlib."
        )
    if array_checksum(contents) != header.get("sha256"):
        raise ValueError(f"{path}: checksum mismatch, the file was modified or damaged; retrain or restore it.")
    return contents, header
