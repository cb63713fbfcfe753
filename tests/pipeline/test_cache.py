"""slamlib.pipeline.cache: parameter hashing, atomic npz/ECSV entries, corrupt-entry recovery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from slamlib.pipeline import cache
from slamlib.pipeline.cache import (
    cache_dir,
    cached_arrays,
    cached_table,
    parameter_hash,
)


class Counter:
    """A compute function that counts its calls."""

    def __init__(self, value: float = 1.0):
        self.calls = 0
        self.value = value

    def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        return {"x": np.arange(5.0) * self.value, "name": np.array(["a", "bc"]), "mask": np.array([1, 0], dtype=np.int64)}


def entry_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_parameter_hash_is_stable_and_type_insensitive():
    a = parameter_hash({"n": 10, "seed": 1, "bins": (5, 20), "scale": 0.5})
    b = parameter_hash({"scale": np.float64(0.5), "bins": [np.int64(5), 20], "seed": np.int32(1), "n": 10})
    assert a == b and len(a) == 20
    assert parameter_hash({"n": 11, "seed": 1, "bins": (5, 20), "scale": 0.5}) != a
    assert parameter_hash({"nested": {"x": [1, 2]}}) == parameter_hash({"nested": {"x": (1, 2)}})


@pytest.mark.parametrize("bad", [{"f": object()}, {"x": float("nan")}, [1, 2]])
def test_parameter_hash_rejects_unhashable_values(bad):
    with pytest.raises(ValueError):
        parameter_hash(bad)


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SLAMLIB_CACHE", str(tmp_path / "here"))
    assert cache_dir() == tmp_path / "here" and (tmp_path / "here").is_dir()
    monkeypatch.delenv("SLAMLIB_CACHE")
    default = cache_dir()
    assert default.name == "cache" and default.parent.name == "data"


def test_hit_does_not_recompute(tmp_path):
    compute = Counter()
    first = cached_arrays("demo", {"n": 5}, compute, directory=tmp_path)
    second = cached_arrays("demo", {"n": 5}, compute, directory=tmp_path)
    assert compute.calls == 1
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert second["name"].dtype.kind == "U"
    other = cached_arrays("demo", {"n": 6}, compute, directory=tmp_path)
    assert compute.calls == 2 and set(other) == set(first)
    cached_arrays("demo", {"n": 5}, compute, directory=tmp_path, refresh=True)
    assert compute.calls == 3
    names = entry_files(tmp_path)
    assert len([n for n in names if n.endswith(".npz")]) == 2 and len([n for n in names if n.endswith(".json")]) == 2
    assert not [n for n in names if n.endswith(".tmp")]


def test_environment_directory_is_used_by_default(monkeypatch, tmp_path):
    monkeypatch.setenv("SLAMLIB_CACHE", str(tmp_path))
    compute = Counter()
    cached_arrays("demo", {"n": 1}, compute)
    cached_arrays("demo", {"n": 1}, compute)
    assert compute.calls == 1 and any(n.endswith(".npz") for n in entry_files(tmp_path))


def test_corrupt_data_file_is_recomputed(tmp_path):
    compute = Counter()
    cached_arrays("demo", {"n": 5}, compute, directory=tmp_path)
    data = next(tmp_path.glob("demo-*.npz"))
    data.write_bytes(data.read_bytes()[:40])  # truncated by a crash or a full disk
    result = cached_arrays("demo", {"n": 5}, compute, directory=tmp_path)
    assert compute.calls == 2
    np.testing.assert_array_equal(result["x"], np.arange(5.0))
    cached_arrays("demo", {"n": 5}, compute, directory=tmp_path)
    assert compute.calls == 2  # repaired entry is used again


def test_same_size_tampering_is_detected_by_checksum(tmp_path):
    compute = Counter()
    cached_arrays("demo", {"n": 5}, compute, directory=tmp_path)
    data = next(tmp_path.glob("demo-*.npz"))
    raw = bytearray(data.read_bytes())
    raw[-30] ^= 0xFF
    data.write_bytes(bytes(raw))
    cached_arrays("demo", {"n": 5}, compute, directory=tmp_path)
    assert compute.calls == 2


@pytest.mark.parametrize("damage", ["missing_json", "bad_json", "other_params", "missing_data"])
def test_partial_or_foreign_entries_are_not_used(tmp_path, damage):
    compute = Counter()
    cached_arrays("demo", {"n": 5}, compute, directory=tmp_path)
    meta = next(tmp_path.glob("demo-*.json"))
    if damage == "missing_json":
        meta.unlink()
    elif damage == "bad_json":
        meta.write_text("{not json", encoding="utf-8")
    elif damage == "other_params":
        record = json.loads(meta.read_text(encoding="utf-8"))
        record["params_json"] = '{"n":999}'
        meta.write_text(json.dumps(record), encoding="utf-8")
    else:
        next(tmp_path.glob("demo-*.npz")).unlink()
    cached_arrays("demo", {"n": 5}, Counter(value=2.0), directory=tmp_path)
    again = Counter()
    result = cached_arrays("demo", {"n": 5}, again, directory=tmp_path)
    assert again.calls == 0
    np.testing.assert_array_equal(result["x"], np.arange(5.0) * 2.0)


def test_failed_compute_leaves_no_entry(tmp_path):
    def explode() -> dict[str, np.ndarray]:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cached_arrays("demo", {"n": 5}, explode, directory=tmp_path)
    assert entry_files(tmp_path) == []


def test_interrupted_write_leaves_no_entry(tmp_path, monkeypatch):
    def failing_save(handle, **arrays):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.np, "savez", failing_save)
    with pytest.raises(KeyboardInterrupt):
        cached_arrays("demo", {"n": 5}, Counter(), directory=tmp_path)
    assert entry_files(tmp_path) == []


def test_object_arrays_and_bad_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="object"):
        cached_arrays("demo", {"n": 1}, lambda: {"x": np.array([{"a": 1}], dtype=object)}, directory=tmp_path)
    with pytest.raises(ValueError, match="name"):
        cached_arrays("../escape", {"n": 1}, Counter(), directory=tmp_path)
    with pytest.raises(ValueError, match="mapping"):
        cached_arrays("demo", {"n": 2}, lambda: [np.zeros(2)], directory=tmp_path)


def test_cached_table_round_trip(tmp_path):
    calls = []

    def make() -> Table:
        calls.append(1)
        return Table({"obsid": np.array([1, 2], dtype=np.int64), "set": ["train", "test"], "teff": [5000.0, 6000.5]})

    first = cached_table("labels", {"seed": 1}, make, directory=tmp_path)
    second = cached_table("labels", {"seed": 1}, make, directory=tmp_path)
    assert len(calls) == 1
    assert second.colnames == first.colnames
    assert list(second["set"]) == ["train", "test"] and second["obsid"].dtype == np.int64
    np.testing.assert_array_equal(second["teff"], first["teff"])


def test_mock_survey_is_cached(monkeypatch, tmp_path):
    from slamlib.mock import survey_cache as survey_module

    monkeypatch.setenv("SLAMLIB_CACHE", str(tmp_path))
    calls = []
    original = survey_module.synthesize

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(survey_module, "synthesize", counting)
    labels, spectra = survey_module.survey("lasp", n_train=6, n_test_per_bin=1, seed=3)
    labels2, spectra2 = survey_module.survey("lasp", n_train=6, n_test_per_bin=1, seed=3)
    assert len(calls) == 1
    assert len(labels) == 12 and len(spectra) == 12
    assert labels.colnames == labels2.colnames and list(labels2["set"]) == list(labels["set"])
    np.testing.assert_array_equal(spectra.flux, spectra2.flux)
    assert spectra2.flux.dtype == np.float32
    assert list(spectra2.meta["obsid"]) == list(labels["obsid"])
    survey_module.survey("apogee", n=5, seed=3)
    assert len(calls) == 2
    with pytest.raises(ValueError):
        survey_module.survey("gaia")
