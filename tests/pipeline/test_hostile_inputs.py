"""Hostile inputs never crash a run and never give an unflagged result (property-based, hypothesis).

NaN/inf, zero or negative ivar, all pixels masked, wrong wavelength grids, labels far outside
the training range, empty files and corrupt FITS: every spectrum comes out either usable or
flagged (``converged`` False with a non-empty ``reason``, or ``extrapolated``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from synthetic_data import LABEL_NAMES, make_data

from slamlib import SlamModel
from slamlib.io import Spectrum, write_lamost
from slamlib.pipeline.catalog_input import (
    ArraysFile,
    PreparedInput,
    load_spectrum_files,
    write_arrays_file,
)
from slamlib.pipeline.catalog_prediction import (
    EXTRAPOLATION_MARGIN,
    predict_rows,
    training_label_range,
)
from slamlib.preprocess import common_wave_grid, prepare

N_PIX = 20
HOSTILE = st.one_of(
    st.floats(0.2, 1.5),  # ordinary normalized flux, so that some rows are fittable
    st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, 1e-300, 5e-324, 1e300, -1e300, 1e30]),
    st.floats(allow_nan=True, allow_infinity=True),
)
# What a FITS file can hold: LAMOST flux and ivar are float32, so finite values stay below 3.4e38.
HOSTILE_FLOAT32 = st.one_of(
    st.floats(0.2, 1.5),
    st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e-38, 3.4e38, -3.4e38]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)
HOSTILE_IVAR = st.one_of(st.floats(1.0, 1e5), st.sampled_from([0.0, -0.0, -1.0, -np.inf, np.inf, np.nan, 1e300, 5e-324]))
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GRID = common_wave_grid(4000.0, 4200.0, 2.0)


@pytest.fixture(scope="module")
def model():
    labels, flux, ivar = make_data(n_star=40, n_pix=N_PIX, rng=np.random.default_rng(5))
    return SlamModel(param_grid={"C": [10.0], "gamma": [0.1]}, cv=2, n_jobs=1).fit(
        flux, ivar, labels, LABEL_NAMES, wave=4000.0 + np.arange(N_PIX))


def assert_every_row_usable_or_flagged(catalogue, model) -> None:
    labels = np.column_stack([catalogue[name] for name in model.label_names_])
    errors = np.column_stack([catalogue[f"{name}_err"] for name in model.label_names_])
    converged = np.asarray(catalogue["converged"], dtype=bool)
    reason = np.asarray(catalogue["reason"], dtype=str)
    assert np.all(reason[~converged] != ""), "a row that did not converge lacks a reason"
    assert np.all(reason[converged] == "")
    assert np.all(np.isfinite(labels[converged])) and np.all(np.isfinite(errors[converged]))
    assert np.all(np.isfinite(catalogue["rchi2"][converged]))
    assert not np.any(converged & ~np.all(np.isfinite(labels), axis=1)), "NaN labels marked converged"
    low, high = training_label_range(model)
    span = high - low
    far = np.any((labels < low - EXTRAPOLATION_MARGIN * span) | (labels > high + EXTRAPOLATION_MARGIN * span), axis=1)
    assert np.all(catalogue["extrapolated"][far]), "a label outside the training range is not flagged"


@PROPERTY_SETTINGS
@given(flux=arrays(np.float64, (3, N_PIX), elements=HOSTILE), ivar=arrays(np.float64, (3, N_PIX), elements=HOSTILE_IVAR))
def test_prediction_on_hostile_pixels_is_usable_or_flagged(model, flux, ivar):
    flux_before, ivar_before = flux.copy(), ivar.copy()
    catalogue = predict_rows(model, PreparedInput(flux, ivar, np.full(3, "", dtype=str)))
    assert len(catalogue) == 3
    assert_every_row_usable_or_flagged(catalogue, model)
    np.testing.assert_array_equal(flux, flux_before)  # the caller's arrays are never modified
    np.testing.assert_array_equal(ivar, ivar_before)


@PROPERTY_SETTINGS
@given(labels=arrays(np.float64, (2, 3), elements=st.floats(-50.0, 50.0)))
def test_spectra_of_labels_far_outside_the_training_range_are_flagged(model, labels):
    low, high = training_label_range(model)
    physical = low + labels * (high - low)  # up to 50 training ranges away from it
    flux = model.predict_spectrum(physical)
    catalogue = predict_rows(model, PreparedInput(flux, np.full_like(flux, 1e4), np.full(2, "", dtype=str)))
    assert_every_row_usable_or_flagged(catalogue, model)


def test_masked_empty_and_non_finite_spectra_get_their_reason(model):
    flux = np.ones((4, N_PIX))
    ivar = np.full((4, N_PIX), 1e4)
    ivar[0] = 0.0  # every pixel masked
    flux[1] = np.nan  # no finite flux
    ivar[2, 2:] = -1.0  # only two good pixels for three labels
    prepared = PreparedInput(flux, ivar, np.array(["", "", "", "unreadable file: spec.fits is empty"]))
    catalogue = predict_rows(model, prepared)
    assert list(catalogue["converged"]) == [False] * 4
    assert catalogue["reason"][0].startswith("no good pixels")
    assert catalogue["reason"][1] == "no finite flux"
    assert catalogue["reason"][2] == "only 2 good pixels for 3 labels"
    assert catalogue["reason"][3] == "unreadable file: spec.fits is empty"
    assert np.all(np.isnan(catalogue["teff"]))


def test_a_spectrum_that_breaks_the_fit_is_flagged_alone(model, monkeypatch):
    original = SlamModel.predict

    def fragile(self, flux, ivar, **options):
        if np.any(flux == 7.0):
            raise np.linalg.LinAlgError("SVD did not converge")
        return original(self, flux, ivar, **options)

    monkeypatch.setattr(SlamModel, "predict", fragile)
    flux = np.ones((3, N_PIX))
    flux[1, 4] = 7.0
    catalogue = predict_rows(model, PreparedInput(flux, np.full((3, N_PIX), 1e4), np.full(3, "", dtype=str)))
    assert list(catalogue["converged"]) == [True, False, True]
    assert catalogue["reason"][1] == "prediction failed: LinAlgError: SVD did not converge"


@PROPERTY_SETTINGS
@given(
    flux=arrays(np.float64, 120, elements=HOSTILE_FLOAT32),
    ivar=arrays(np.float64, 120, elements=HOSTILE_FLOAT32),
    ormask=arrays(np.float64, 120, elements=st.sampled_from([0.0, 0.0, 0.0, 1.0, np.nan])),
    start=st.floats(3000.0, 5000.0),
    step=st.floats(0.5, 10.0),
    rv=st.one_of(st.none(), st.floats(-500.0, 500.0)),
)
def test_prepare_on_hostile_spectra_is_finite_and_flags_bad_pixels(flux, ivar, ormask, start, step, rv):
    wave = start + step * np.arange(120)  # may cover the grid, part of it, or none of it
    spectrum = Spectrum(wave, flux, ivar, ormask, {"rv": rv})
    prepared = prepare(spectrum, GRID)
    assert np.all(np.isfinite(prepared.flux)) and np.all(np.isfinite(prepared.ivar))
    assert np.all(prepared.ivar >= 0) and np.all(prepared.flux[prepared.ivar == 0] == 1.0)
    assert prepared.n_bad[0] == np.count_nonzero(prepared.ivar[0] == 0)
    if wave[-1] * (1 + (rv or 0) / 299792.458) < GRID[0] or not np.any(np.isfinite(flux) & (ivar > 0)):
        assert prepared.n_bad[0] == GRID.size


@pytest.mark.parametrize("wave", [
    np.linspace(5000.0, 4000.0, 50),  # decreasing
    np.r_[np.linspace(4000.0, 4100.0, 49), np.nan],  # a NaN wavelength
    np.r_[np.linspace(4000.0, 4100.0, 49), 4100.0],  # a repeated wavelength
    np.full(50, np.inf),
])
def test_unusable_wavelengths_are_refused_with_a_message(wave):
    with pytest.raises(ValueError, match="strictly increasing"):
        prepare(Spectrum(wave, np.ones(50), np.ones(50), np.zeros(50), {}), GRID)


def test_a_file_with_unusable_wavelengths_is_flagged_and_the_others_prepared(tmp_path):
    good = Spectrum(np.linspace(3990.0, 4210.0, 50), np.ones(50), np.ones(50), np.zeros(50), {"obsid": 1})
    reversed_wave = Spectrum(np.linspace(4210.0, 3990.0, 50), np.ones(50), np.ones(50), np.zeros(50), {"obsid": 2})
    outside = Spectrum(np.linspace(7000.0, 8000.0, 50), np.ones(50), np.ones(50), np.zeros(50), {"obsid": 3})
    paths = [write_lamost(spectrum, tmp_path / f"spec-{number}.fits", layout="dr5")
             for number, spectrum in enumerate((good, reversed_wave, outside))]
    loaded = load_spectrum_files(paths, GRID)
    assert loaded.reason[0] == "" and np.all(loaded.ivar[0] > 0)
    assert loaded.reason[1].startswith("unusable spectrum: ") and "strictly increasing" in loaded.reason[1]
    assert np.all(loaded.ivar[1] == 0) and np.all(loaded.flux[1] == 1)
    assert loaded.reason[2] == "" and np.all(loaded.ivar[2] == 0)  # wrong grid: no pixel on the model grid...


def test_a_spectrum_on_the_wrong_grid_is_flagged_when_predicted(model):
    flux, ivar = np.ones((1, N_PIX)), np.zeros((1, N_PIX))  # ...so its fit is refused with a reason
    catalogue = predict_rows(model, PreparedInput(flux, ivar, np.array([""])))
    assert not catalogue["converged"][0] and catalogue["reason"][0].startswith("no good pixels")


@pytest.fixture(scope="module")
def good_fits_bytes(tmp_path_factory):
    wave = np.linspace(3950.0, 4250.0, 150)
    spectrum = Spectrum(wave, 1 + 0.1 * np.sin(wave), np.full(150, 100.0), np.zeros(150), {"obsid": 7})
    return write_lamost(spectrum, tmp_path_factory.mktemp("fits") / "spec.fits").read_bytes()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 20_000), noise=st.binary(max_size=64), position=st.integers(0, 20_000))
def test_empty_truncated_or_corrupt_fits_files_are_flagged_unreadable(good_fits_bytes, cut, noise, position):
    damaged = {
        "truncated": good_fits_bytes[:cut],
        "overwritten": good_fits_bytes[:position] + noise + good_fits_bytes[position + len(noise):],
        "noise": noise * 100,
    }
    with tempfile.TemporaryDirectory() as directory:
        paths = []
        for name, content in damaged.items():
            paths.append(Path(directory) / f"{name}.fits")
            paths[-1].write_bytes(content)
        loaded = load_spectrum_files(paths, GRID)
    for content, reason, ivar, flux in zip(damaged.values(), loaded.reason, loaded.ivar, loaded.flux):
        assert reason == "" or reason.startswith(("unreadable file: ", "unusable spectrum: ")), reason
        assert np.all(np.isfinite(flux)) and np.all(np.isfinite(ivar)) and np.all(ivar >= 0)
        if len(content) == 0:
            assert reason.startswith("unreadable file: ") and "is empty" in reason
    assert loaded.reason[2].startswith("unreadable file: ")  # noise never forms a LAMOST file


def test_empty_file_reason_names_the_file(tmp_path):
    (tmp_path / "spec-empty.fits").write_bytes(b"")
    loaded = load_spectrum_files([tmp_path / "spec-empty.fits"], GRID)
    assert loaded.reason[0].startswith("unreadable file: ") and "spec-empty.fits is empty" in loaded.reason[0]


def test_arrays_files_never_unpickle_and_reject_damage(tmp_path):
    np.savez(tmp_path / "pickled.npz", wave=np.arange(3.0), flux=np.array([[{"evil": 1}] * 3], dtype=object),
             ivar=np.ones((1, 3)))
    with pytest.raises(ValueError, match="plain numbers only"):
        ArraysFile(tmp_path / "pickled.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="not an npz arrays file"):
        ArraysFile(tmp_path / "empty.npz")
    np.savez(tmp_path / "incomplete.npz", flux=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"lacks \['ivar', 'wave'\]"):
        ArraysFile(tmp_path / "incomplete.npz")
    np.savez(tmp_path / "unsorted.npz", wave=np.array([3.0, 2.0, 1.0]), flux=np.ones((2, 3)), ivar=np.ones((2, 3)))
    with pytest.raises(ValueError, match="strictly increasing"):
        ArraysFile(tmp_path / "unsorted.npz")
    path = write_arrays_file(tmp_path / "good.npz", np.arange(3.0), np.ones((4, 3)), np.ones((4, 3)))
    path.write_bytes(path.read_bytes()[:-200])  # truncated: the zip directory is gone
    with pytest.raises(ValueError, match="not an npz arrays file"):
        ArraysFile(path)


def test_arrays_file_reads_row_ranges_exactly(tmp_path):
    flux = np.random.default_rng(1).normal(size=(9, 5))
    with ArraysFile(write_arrays_file(tmp_path / "a.npz", np.arange(5.0), flux, flux ** 2)) as arrays:
        assert (arrays.n_spec, arrays.n_pix) == (9, 5)
        part_flux, part_ivar = arrays.read(3, 7)
    np.testing.assert_array_equal(part_flux, flux[3:7])
    np.testing.assert_array_equal(part_ivar, flux[3:7] ** 2)
    np.savez_compressed(tmp_path / "c.npz", wave=np.arange(5.0), flux=flux.astype(np.float32), ivar=flux)
    with ArraysFile(tmp_path / "c.npz") as arrays:
        np.testing.assert_array_equal(arrays.read(8, 20)[0], flux[8:].astype(np.float32))
