"""Writing files safely and hashing content: the one implementation every layer uses.

* :func:`atomic_write` writes through a temporary file in the destination's folder, syncs it to
  disk and renames it into place, so an interruption (Ctrl-C, SIGKILL, a full disk) never leaves a half-written
  file under the final name; :func:`write_json_atomically` is its JSON form.
* :func:`array_checksum` hashes named arrays (names, dtypes, shapes and bytes) and
  :func:`file_sha256` a file's bytes: the checksums of model files, checkpoints, caches and
  prediction chunks.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_write", "write_json_atomically", "array_checksum", "file_sha256"]


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None] | Callable[[Path], None], *,
                 to_path: bool = False) -> Path:
    """Write ``path`` all at once: through a temporary file in its folder, then renamed.

    Parameters
    ----------
    path : str or Path
        The destination; its folder is created if needed.
    write : callable
        Writes the content: called with a binary file handle open on the temporary file, or
        with the temporary file's path when ``to_path`` is true (for writers that open files
        themselves, such as ``Table.write``).
    to_path : bool
        See ``write``.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        From the writer or the file system, with the destination named in the message; the
        temporary file is removed and an existing file at ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    temporary = Path(temporary_name)
    try:
        if to_path:
            os.close(descriptor)
            write(temporary)
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
        else:
            with os.fdopen(descriptor, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if str(path) in str(error):
            raise
        raise OSError(error.errno, f"could not write {path}: {error.strerror or error}") from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_json_atomically(path: str | Path, content: Mapping[str, Any]) -> Path:
    """Write ``content`` as indented, key-sorted JSON with :func:`atomic_write` (non-JSON values as ``str``)."""
    text = json.dumps(content, indent=1, sort_keys=True, default=str)
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def array_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the names, dtypes, shapes and contents of ``arrays`` (sorted by name).

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def file_sha256(path: str | Path, *, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks (64 hexadecimal digits)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()
