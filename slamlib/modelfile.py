"""The slamlib model file: a versioned, checksummed ``.npz`` of plain arrays plus JSON metadata.

Layout (format version 2):

* one ``.npz`` (zip) member per array, numeric or fixed-width unicode dtypes only, so that
  ``numpy.load(..., allow_pickle=False)`` reads it and loading never executes code;
* the member ``__metadata__``: a unicode scalar holding JSON with ``format``
  (``"slamlib-model"``), ``format_version``, ``sha256``, the library versions and the caller's
  metadata (label names, parameters...). ``sha256`` covers every array's name, dtype, shape and
  bytes *and* every other key of the JSON (canonical, key-sorted), so that editing the label
  names or the parameters is detected like a flipped bit in an array.

Version 1 files (slamlib 0.3.0) have the same layout with ``sha256`` over the arrays only; they
still load, their metadata unverified.

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
FORMAT_VERSION = 2
_METADATA_KEY = "__metadata__"
_ZIP_MAGIC = b"PK\x03\x04"


def library_versions() -> dict[str, str]:
    """Versions of slamlib and of the numerical libraries that shape its results."""
    import scipy
    import sklearn

    import slamlib

    return {"slamlib": slamlib.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__}


def _content_checksum(arrays: dict[str, np.ndarray], header: dict[str, Any]) -> str:
    """SHA-256 over the arrays and every header key but ``sha256`` (canonical JSON)."""
    described = {key: value for key, value in header.items() if key != "sha256"}
    text = json.dumps(described, sort_keys=True, separators=(",", ":"))
    return array_checksum({**arrays, _METADATA_KEY: np.array(text)})


def _checked_version(path: Path, version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: format_version {version!r} is not a valid slamlib model version (a whole number "
                         f"from 1 to {FORMAT_VERSION}); the file is damaged or was not written by SlamModel.save.")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} uses model format version {version}, newer than this slamlib reads "
                         f"({FORMAT_VERSION}); upgrade slamlib.")
    return version


def _describe_non_npz(path: Path, start: bytes) -> str:
    if start.startswith(b"SIMPLE"):
        return "it is a FITS file (a catalogue or a spectrum?)"
    if start.startswith(b"\x93NUMPY"):
        return "it is a single .npy array"
    if start.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed"
    if not start:
        return "it is empty"
    return "it is not an .npz archive"


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
        "library_versions": library_versions(),
        "metadata": json.loads(json.dumps(metadata)),  # as it will read back
    }
    header["sha256"] = _content_checksum(arrays, header)
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
        If the file is missing, a directory, truncated, not a slamlib model, has an invalid or
        newer format version, or its arrays or metadata do not match the stored checksum.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"model file {path} is a directory; give the .npz file written by slam train or SlamModel.save.")
    if not path.is_file():
        raise ValueError(f"model file {path} does not exist.")
    with open(path, "rb") as handle:
        start = handle.read(8)
    if not start.startswith(_ZIP_MAGIC):
        raise ValueError(f"{path} is not a slamlib model file: {_describe_non_npz(path, start)}. Give the .npz file "
                         "written by slam train or SlamModel.save.")
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
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        found = header.get("format") if isinstance(header, dict) else header
        raise ValueError(f"{path} is not a slamlib model file (format {found!r}).")
    version = _checked_version(path, header.get("format_version"))
    expected = array_checksum(contents) if version == 1 else _content_checksum(contents, header)
    if expected != header.get("sha256"):
        raise ValueError(f"{path}: checksum mismatch, the file's arrays or metadata were modified or damaged; "
                         "retrain or restore it.")
    return contents, header
