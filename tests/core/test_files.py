"""The one helper for atomic writes: all or nothing, and an OS error names the file."""

import errno
import os

import numpy as np
import pytest

from slamlib import files


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")

    def failing(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(path, failing)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_a_full_disk_is_an_os_error_that_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "catalogue.fits"

    def disk_full(source, destination):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "replace", disk_full)
    with pytest.raises(OSError, match="catalogue.fits") as error:
        files.atomic_write(path, lambda handle: handle.write(b"data"))
    assert error.value.errno == errno.ENOSPC
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_checksums_change_with_any_byte_name_or_dtype():
    arrays = {"a": np.arange(4.0), "b": np.zeros(2, dtype=np.int64)}
    reference = files.array_checksum(arrays)
    assert files.array_checksum(dict(reversed(list(arrays.items())))) == reference   # order does not matter
    changed = arrays["a"].copy()
    changed[2] = np.nextafter(changed[2], 10.0)
    assert files.array_checksum({**arrays, "a": changed}) != reference
    assert files.array_checksum({"c": arrays["a"], "b": arrays["b"]}) != reference
    assert files.array_checksum({**arrays, "a": arrays["a"].astype(np.float32)}) != reference


def test_file_sha256_is_the_hash_of_the_bytes(tmp_path):
    import hashlib

    path = tmp_path / "x.bin"
    path.write_bytes(b"slam" * 1000)
    assert files.file_sha256(path, chunk_bytes=7) == hashlib.sha256(b"slam" * 1000).hexdigest()
