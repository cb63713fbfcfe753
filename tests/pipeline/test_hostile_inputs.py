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
from astropy.table import Table
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
    trusted = np.asarray(catalogue["trusted"], dtype=bool)
    reason = np.asarray(catalogue["reason"], dtype=str)
    assert np.all(reason[~converged] != ""), "a row that did not converge lacks a reason"
    assert np.all((reason == "") == trusted), "reason must be empty exactly for trusted rows"
    np.testing.assert_array_equal(trusted, converged & catalogue["good_fit"] & ~catalogue["extrapolated"])
    assert np.all(catalogue["rchi2"][trusted] <= model.state_.trust_limits.max_rchi2)
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
    assert np.all(loaded.ivar[2] == 0)  # wrong grid: no pixel on the model grid, and the reason says so
    assert loaded.reason[2].startswith("unusable spectrum: its wavelengths (7000-8000 A in the rest frame")
    assert "do not overlap the model grid (4000-4200 A)" in loaded.reason[2]


def test_a_spectrum_on_the_wrong_grid_is_flagged_when_predicted(model):
    flux, ivar = np.ones((1, N_PIX)), np.zeros((1, N_PIX))  # without a file, the fit is refused with a reason
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


# ============================================================================ issue 20: trust, labels, integrity
# The cases of "Trustworthy catalogues: no wrong answer marked as good, no input lost, nothing tampered
# reused". Each failed on slamlib 0.3.0 and passes now.

MOCK_LABELS = ["teff", "logg", "m_h"]


@pytest.fixture(scope="module")
def mock_set(tmp_path_factory):
    """Mock LAMOST spectra (slamlib.mock) on a 3 A grid: a model of 75 training stars, the 15 others as targets."""
    from slamlib.mock import lasp_test_sample, synthesize

    sample = lasp_test_sample(90, 0, 11)
    batch = synthesize(sample, seed=11)
    grid = common_wave_grid(3900.0, 5800.0, 3.0)
    prepared = prepare(batch, grid, n_jobs=1)
    labels = np.column_stack([sample[name] for name in MOCK_LABELS]).astype(float)
    usable = np.flatnonzero(prepared.usable())
    train, test = usable[:75], usable[75:]
    model = SlamModel(param_grid={"C": [10.0], "gamma": [0.1]}, cv=3, n_jobs=1).fit(
        prepared.flux[train], prepared.ivar[train], labels[train], MOCK_LABELS, wave=grid)
    directory = tmp_path_factory.mktemp("mock_set")
    model.save(directory / "model.npz")
    return {"model": SlamModel.load(directory / "model.npz"), "model_path": directory / "model.npz",
            "flux": prepared.flux[test], "ivar": prepared.ivar[test], "labels": labels[test],
            "spectra": [batch[int(index)] for index in test], "directory": directory}


def catalogue_of(model, flux, ivar, **options):
    return predict_rows(model, PreparedInput(flux, ivar, np.full(flux.shape[0], "", dtype=str)), **options)


def test_clean_mock_spectra_stay_trusted_with_and_without_clipping(mock_set):
    for options in ({}, {"clip_sigma": 5.0}):
        catalogue = catalogue_of(mock_set["model"], mock_set["flux"], mock_set["ivar"], **options)
        assert np.all(catalogue["trusted"]), list(catalogue["reason"])
        assert np.all(catalogue["reason"] == "")
        assert np.median(np.abs(catalogue["teff"] - mock_set["labels"][:, 0])) < 150


def test_a_finite_spike_is_not_trusted_and_clipping_removes_it(mock_set):
    flux = mock_set["flux"].copy()
    flux[:, 200:210] *= 1e30  # finite, but nothing a normalized spectrum holds
    catalogue = catalogue_of(mock_set["model"], flux, mock_set["ivar"])
    assert not np.any(catalogue["trusted"]) and np.all(catalogue["converged"])  # converged, yet wrong
    assert all(reason.startswith("poor fit: rchi2") for reason in catalogue["reason"])
    clipped = catalogue_of(mock_set["model"], flux, mock_set["ivar"], clip_sigma=5.0)
    clean = catalogue_of(mock_set["model"], mock_set["flux"], mock_set["ivar"])
    assert np.all(clipped["trusted"]) and np.all(clipped["n_clipped"] >= 10)
    np.testing.assert_allclose(clipped["teff"], clean["teff"], atol=0.2 * np.median(clean["teff_err"]) + 1.0)


def test_a_two_pixel_cosmic_ray_is_not_trusted_and_clipping_recovers_the_labels(mock_set):
    flux = mock_set["flux"].copy()
    flux[:, 300:302] += 0.5  # a modest cosmic ray on two pixels
    catalogue = catalogue_of(mock_set["model"], flux, mock_set["ivar"])
    assert not np.any(catalogue["trusted"])
    assert all("poor fit" in reason for reason in catalogue["reason"])
    assert np.all(catalogue["max_residual"] > mock_set["model"].state_.trust_limits.max_residual)
    clipped = catalogue_of(mock_set["model"], flux, mock_set["ivar"], clip_sigma=5.0)
    clean = catalogue_of(mock_set["model"], mock_set["flux"], mock_set["ivar"])
    assert np.all(clipped["trusted"]) and np.all(clipped["n_clipped"] >= 2)
    np.testing.assert_allclose(clipped["teff"], clean["teff"], atol=0.5 * np.median(clean["teff_err"]) + 1.0)


def test_unnormalized_flux_is_not_trusted_and_warned(mock_set):
    from slamlib.fitting import NotNormalizedWarning

    flux, ivar = mock_set["flux"] * 3500.0, mock_set["ivar"] / 3500.0**2  # counts, not normalized flux
    with pytest.warns(NotNormalizedWarning, match="plainly not continuum-normalized"):
        result = mock_set["model"].predict(flux, ivar)
    assert not np.any(result.trusted) and not np.any(result.good_fit)
    assert all(reason.startswith("flux not continuum-normalized (median 3.") and "e+03 times the training" in reason
               for reason in result.reason)


def test_unnormalized_arrays_through_the_command_are_flagged(mock_set, tmp_path, capsys):
    from slamlib.pipeline.cli import main

    arrays = write_arrays_file(tmp_path / "counts.npz", mock_set["model"].wave_, mock_set["flux"] * 3500.0,
                               mock_set["ivar"] / 3500.0**2)
    assert main(["predict", str(mock_set["model_path"]), "--arrays", str(arrays), "--output",
                 str(tmp_path / "out.fits"), "--n-jobs", "1"]) == 0
    captured = capsys.readouterr()
    assert "0 trusted" in captured.out and "not continuum-normalized" in captured.err


def test_training_flux_that_is_not_normalized_is_warned_at_fit():
    from slamlib.fitting import NotNormalizedWarning

    labels, flux, ivar = make_data(n_star=20, n_pix=N_PIX, rng=np.random.default_rng(1))
    with pytest.warns(NotNormalizedWarning, match="20 of 20 training spectra"):
        SlamModel(param_grid={"C": [10.0], "gamma": [0.1]}, cv=2, n_jobs=1).fit(flux * 3500, ivar, labels,
                                                                                LABEL_NAMES)


def test_a_wrong_header_redshift_is_not_trusted(mock_set, tmp_path):
    model = mock_set["model"]
    right, wrong = [], []
    for number, spectrum in enumerate(mock_set["spectra"][:6]):
        right.append(write_lamost(spectrum, tmp_path / f"right-{number}.fits"))
        shifted_meta = {**spectrum.meta, "z": 0.5}
        wrong.append(write_lamost(Spectrum(spectrum.wave, spectrum.flux, spectrum.ivar, spectrum.ormask,
                                           shifted_meta), tmp_path / f"wrong-{number}.fits"))
    assert np.all(predict_rows(model, load_spectrum_files(right, model.wave_))["trusted"])
    for options in ({}, {"clip_sigma": 5.0}):  # clipping must not make the wrong labels look trusted
        catalogue = predict_rows(model, load_spectrum_files(wrong, model.wave_), **options)
        assert not np.any(catalogue["trusted"]), list(catalogue["reason"])
        assert all("poor fit" in reason for reason in catalogue["reason"])


def test_trust_limits_come_from_the_models_cv_residuals_and_survive_saving(mock_set):
    from slamlib.fitting import TrustLimits

    state = mock_set["model"].state_
    assert state.cv_rchi2.shape == (75,) and np.all(np.isfinite(state.cv_rchi2))
    limits = state.trust_limits
    assert limits == TrustLimits.from_cv_residuals(state.cv_rchi2, state.cv_max_residual)
    assert limits.max_rchi2 == pytest.approx(max(2.0, 3.0 * np.quantile(state.cv_rchi2, 0.99)))
    assert limits != TrustLimits.default()


@pytest.mark.parametrize("value", [-9999.0, 5e5])
def test_sentinel_or_unphysical_training_labels_are_refused_by_fit(value):
    labels, flux, ivar = make_data(n_star=20, n_pix=N_PIX, rng=np.random.default_rng(2))
    column = 1 if value < 0 else 0  # -9999 in logg, 5e5 K in teff
    labels[3, column] = value
    with pytest.raises(ValueError, match=r"1 of 20 training stars have sentinel or unphysical labels \(row 3: "):
        SlamModel(param_grid={"C": [10.0], "gamma": [0.1]}, cv=2, n_jobs=1).fit(flux, ivar, labels, LABEL_NAMES)


def test_label_ranges_are_documented_defaults_and_can_be_overridden():
    from slamlib.model import LABEL_RANGES, check_training_labels

    assert set(LABEL_RANGES) == {"teff", "logg", "feh", "m_h", "alpha_m", "c_m", "n_m"}
    labels = np.array([[5000.0, 4.5], [5100.0, 6.0]])
    assert not check_training_labels(labels, ["teff", "logg"]).bad.any()
    check = check_training_labels(labels, ["teff", "logg"], label_ranges={"logg": (0.0, 5.5)})
    assert check.bad.tolist() == [False, True] and check.reason[1] == "logg = 6 outside 0 to 5.5"
    assert check_training_labels(np.array([[-9999.0]]), ["anything"]).reason[0] == "anything = -9999 (a sentinel value)"


def test_the_command_leaves_out_sentinel_and_unphysical_rows_with_a_count(tmp_path, capsys):
    from survey_files import write_survey

    from slamlib.pipeline.cli import main

    table_path, arrays_path = write_survey(tmp_path, n_star=40, n_pix=N_PIX, seed=3)
    table = Table.read(table_path)
    table["logg"][2] = -9999.0
    table["teff"][5] = 5e5
    table.write(table_path, overwrite=True)
    assert main(["train", str(table_path), "--labels", *LABEL_NAMES, "--arrays", str(arrays_path), "--output",
                 str(tmp_path / "model.npz"), "--grid-c", "10", "--grid-gamma", "0.1", "--cv", "3",
                 "--n-jobs", "1"]) == 0
    error = capsys.readouterr().err
    assert "left out 2 of 40 training spectra" in error and "2 with sentinel or unphysical labels" in error
    assert "row 2: logg = -9999 (a sentinel value)" in error and "row 5: teff = 500000 outside 2000 to 60000" in error
    assert SlamModel.load(tmp_path / "model.npz").file_header_["metadata"]["n_train"] == 38


def test_duplicated_training_rows_are_reported():
    from slamlib.model import DuplicateTrainingRowsWarning

    labels, flux, ivar = make_data(n_star=20, n_pix=N_PIX, rng=np.random.default_rng(4))
    rows = np.r_[np.arange(20), 3, 7]
    with pytest.warns(DuplicateTrainingRowsWarning, match=r"2 training rows repeat .*\[3, 20\], \[7, 21\]"):
        SlamModel(param_grid={"C": [10.0], "gamma": [0.1]}, cv=2, n_jobs=1).fit(flux[rows], ivar[rows],
                                                                                labels[rows], LABEL_NAMES)


@pytest.mark.parametrize("case", ["constant", "same name twice", "same label twice"])
def test_a_constant_or_repeated_label_is_refused_at_fit(case):
    labels, flux, ivar = make_data(n_star=20, n_pix=N_PIX, rng=np.random.default_rng(5))
    names = list(LABEL_NAMES)
    if case == "constant":
        labels[:, 1] = 4.0
        match = "label 'logg' has the same value \\(4\\) for every training star"
    elif case == "same name twice":
        names = ["teff", "teff", "m_h"]
        match = r"label names \['teff'\] appear more than once"
    else:
        labels[:, 2] = labels[:, 0] / 1000.0 - 5.0
        match = "labels 'teff' and 'm_h' are the same label"
    with pytest.raises(ValueError, match=match):
        SlamModel(param_grid={"C": [10.0], "gamma": [0.1]}, cv=2, n_jobs=1).fit(flux, ivar, labels, names)


def test_a_flipped_bit_in_a_finished_chunk_is_recomputed_not_reused(mock_set, tmp_path, caplog):
    from slamlib.pipeline.catalog_prediction import ChunkSource, predict_catalogue

    flux, ivar = mock_set["flux"], mock_set["ivar"]
    source = ChunkSource(flux.shape[0], lambda start, stop: f"{start}-{stop}",
                         lambda start, stop: PreparedInput(flux[start:stop], ivar[start:stop],
                                                           np.full(stop - start, "", dtype=str)))
    first = predict_catalogue(mock_set["model"], source, tmp_path / "out.fits", chunk_size=8, keep_chunks=True)
    chunk = min((tmp_path / "out.fits.chunks").glob("rows-*.fits"))
    damaged = bytearray(chunk.read_bytes())
    data_start = 2 * 2880 + 2880 * ((bytes(damaged[5760:]).index(b"END" + b" " * 77) // 2880) + 1)
    damaged[data_start + 3] ^= 0x40  # one bit of the first row's teff
    chunk.write_bytes(bytes(damaged))
    with caplog.at_level("WARNING"):
        second = predict_catalogue(mock_set["model"], source, tmp_path / "out.fits", chunk_size=8)
    assert "checksum does not match" in caplog.text
    np.testing.assert_array_equal(second["teff"], first["teff"])


def test_the_model_checksum_covers_the_metadata(mock_set, tmp_path):
    import json
    import zipfile

    from slamlib import modelfile

    source = mock_set["model_path"]
    for change in ("label_names", "params"):
        _, header = modelfile.load_arrays(source)
        if change == "label_names":
            header["metadata"]["label_names"] = ["m_h", "logg", "teff"]
        else:
            header["metadata"]["params"]["epsilon"] = 0.5
        path = tmp_path / f"{change}.npz"
        with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as archive:
            for name in original.namelist():
                content = original.read(name)
                if name == "__metadata__.npy":
                    with archive.open(name, "w") as member:
                        np.lib.format.write_array(member, np.array(json.dumps(header)))
                else:
                    archive.writestr(name, content)
        with pytest.raises(ValueError, match="checksum mismatch, the file's arrays or metadata"):
            SlamModel.load(path)


def test_version_1_model_files_still_load(mock_set, tmp_path):
    import json
    import zipfile

    from slamlib import modelfile

    arrays, header = modelfile.load_arrays(mock_set["model_path"])
    header = {**header, "format_version": 1, "sha256": modelfile.array_checksum(arrays)}  # as 0.3.0 wrote it
    with zipfile.ZipFile(tmp_path / "v1.npz", "w") as archive:
        for name, value in {**arrays, "__metadata__": np.array(json.dumps(header))}.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, value)
    loaded = SlamModel.load(tmp_path / "v1.npz")
    assert loaded.label_names_ == MOCK_LABELS and loaded.file_header_["format_version"] == 1


@pytest.mark.parametrize("version", [0, -5, True, "1", 1.0, None])
def test_invalid_format_versions_are_refused_with_a_message(mock_set, tmp_path, version):
    import json
    import zipfile

    from slamlib import modelfile

    arrays, header = modelfile.load_arrays(mock_set["model_path"])
    header = {**header, "format_version": version}
    with zipfile.ZipFile(tmp_path / "model.npz", "w") as archive:
        for name, value in {**arrays, "__metadata__": np.array(json.dumps(header))}.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, value)
    with pytest.raises(ValueError, match=r"format_version .* is not a valid slamlib model version \(a whole number "
                                         r"from 1 to 2\)"):
        modelfile.load_arrays(tmp_path / "model.npz")


def test_output_paths_are_checked_before_any_work(mock_set, tmp_path, capsys, monkeypatch):
    from survey_files import write_survey

    from slamlib.pipeline import cli

    table_path, arrays_path = write_survey(tmp_path, n_star=12, n_pix=N_PIX, seed=6)
    table_bytes = table_path.read_bytes()
    monkeypatch.setattr(cli, "load_training_set", lambda args: pytest.fail("work started"))
    for output, message in ((table_path, "is also an input of this command"), (tmp_path, "is a directory"),
                            (arrays_path, "is also an input of this command")):
        assert cli.main(["train", str(table_path), "--labels", *LABEL_NAMES, "--arrays", str(arrays_path),
                         "--output", str(output)]) == 1
        assert message in capsys.readouterr().err
    assert cli.main(["predict", str(mock_set["model_path"]), str(table_path), "--arrays", str(arrays_path),
                     "--output", str(table_path)]) == 1
    assert "is also an input of this command" in capsys.readouterr().err
    assert table_path.read_bytes() == table_bytes  # the input was not overwritten
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)  # a folder this user cannot write
    assert cli.main(["predict", str(mock_set["model_path"]), "--arrays", str(arrays_path),
                     "--output", str(tmp_path / "sub" / "out.fits")]) == 1
    assert f"the folder {tmp_path} is not writable" in capsys.readouterr().err


def test_a_non_ascii_spectrum_path_does_not_crash_predict(mock_set, tmp_path, capsys):
    from slamlib.pipeline.cli import main

    path = write_lamost(mock_set["spectra"][0], tmp_path / "spéc-Ω.fits")
    Table({"obsid": [1], "path": [path.name]}).write(tmp_path / "targets.csv", format="ascii.csv")
    assert main(["predict", str(mock_set["model_path"]), str(tmp_path / "targets.csv"), "--spectra-column", "path",
                 "--output", str(tmp_path / "out.fits"), "--n-jobs", "1"]) == 0, capsys.readouterr().err
    catalogue = Table.read(tmp_path / "out.fits", character_as_bytes=False)
    assert catalogue["path"][0] == "sp\\xe9c-\\u03a9.fits" and catalogue["trusted"][0]


def test_a_fits_file_given_as_a_model_says_what_it_is():
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "catalogue.fits"
        Table({"teff": [5000.0]}).write(path)
        with pytest.raises(ValueError, match="is not a slamlib model file: it is a FITS file"):
            SlamModel.load(path)
        with pytest.raises(ValueError, match="is a directory; give the .npz file"):
            SlamModel.load(directory)


def test_a_directory_given_as_a_spectrum_says_so(tmp_path):
    (tmp_path / "spectra").mkdir()
    loaded = load_spectrum_files([tmp_path / "spectra"], GRID)
    assert "is a directory, not a LAMOST spectrum file" in loaded.reason[0]


def test_a_spectrum_shifted_by_3000_angstrom_says_its_wavelengths_miss_the_grid(mock_set, tmp_path):
    spectrum = mock_set["spectra"][0]
    shifted = Spectrum(spectrum.wave + 3000.0, spectrum.flux, spectrum.ivar, spectrum.ormask, spectrum.meta)
    loaded = load_spectrum_files([write_lamost(shifted, tmp_path / "shifted.fits")], mock_set["model"].wave_)
    assert "do not overlap the model grid (3900-5799 A)" in loaded.reason[0]
    assert "check the file's wavelength calibration and its redshift" in loaded.reason[0]


def test_a_non_numeric_label_names_its_row(tmp_path, capsys):
    from survey_files import write_survey

    from slamlib.pipeline.cli import main

    table_path, arrays_path = write_survey(tmp_path, n_star=12, n_pix=N_PIX, seed=7)
    text = table_path.read_text().splitlines()
    fields = text[5].split(",")
    fields[2] = "N/A"  # logg of table row 4
    text[5] = ",".join(fields)
    table_path.write_text("\n".join(text) + "\n")
    assert main(["train", str(table_path), "--labels", *LABEL_NAMES, "--arrays", str(arrays_path),
                 "--output", str(tmp_path / "model.npz"), "--n-jobs", "1"]) == 1
    error = capsys.readouterr().err
    assert "label column 'logg' holds 1 value(s) that are not numbers: row 4 ('N/A')" in error
    assert "Leave missing values empty" in error


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_n_jobs_zero_or_below_minus_one_is_refused(value, capsys):
    from slamlib.pipeline.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "model.npz", "--arrays", "a.npz", "--output", "out.fits", "--n-jobs", value])
    assert exit_info.value.code == 2
    assert "--n-jobs: must be" in capsys.readouterr().err


def test_predict_without_ivar_says_what_to_pass(mock_set):
    with pytest.raises(ValueError, match=r"predict needs ivar.*numpy.full_like\(flux, snr\*\*2\)"):
        mock_set["model"].predict(mock_set["flux"], None)


def test_the_catalogue_carries_units_and_the_models_metadata(mock_set, tmp_path):
    import slamlib
    from slamlib.pipeline.catalog_prediction import ChunkSource, predict_catalogue

    flux, ivar = mock_set["flux"], mock_set["ivar"]
    source = ChunkSource(flux.shape[0], lambda start, stop: "x",
                         lambda start, stop: PreparedInput(flux[start:stop], ivar[start:stop],
                                                           np.full(stop - start, "", dtype=str)))
    predict_catalogue(mock_set["model"], source, tmp_path / "out.fits")
    catalogue = Table.read(tmp_path / "out.fits")
    assert str(catalogue["teff"].unit) == "K" and str(catalogue["teff_err"].unit) == "K"
    assert catalogue.meta["MODELSHA"] == mock_set["model"].file_header_["sha256"]
    assert catalogue.meta["LABELS"] == "teff,logg,m_h" and catalogue.meta["SLAMVER"] == slamlib.__version__
    assert catalogue.meta["LABUNITS"] == "teff[K] logg[dex] m_h[dex]"


def _child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid:
                children.append(int(entry.name))
    return children


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from Linux /proc")
def test_workers_exit_within_seconds_when_slam_train_is_killed_with_sigkill(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from slamlib.pipeline.cli import main

    assert main(["mock", str(tmp_path / "train"), "--n-stars", "120", "--format", "arrays", "--n-jobs", "1"]) == 0
    command = [sys.executable, "-m", "slamlib.pipeline.cli", "train", str(tmp_path / "train" / "labels.csv"),
               "--labels", "teff", "logg", "m_h", "--arrays", str(tmp_path / "train" / "spectra.npz"),
               "--output", str(tmp_path / "model.npz"), "--n-jobs", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            workers = [pid for pid in _child_pids(process.pid)
                       if b"popen_loky_posix" in Path(f"/proc/{pid}/cmdline").read_bytes()]
            if len(workers) >= 2:
                break
            time.sleep(0.1)
        assert len(workers) >= 2, "slam train started no joblib workers"
        helpers = _child_pids(process.pid)  # workers and loky's resource trackers
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(pid) for pid in helpers):
        time.sleep(0.1)
    alive = [pid for pid in helpers if _running(pid)]
    for pid in alive:  # do not leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert alive == [], f"processes of the killed slam train still alive after 10 s: {alive}"


def test_the_command_starts_its_workers_with_the_parent_watch(monkeypatch):
    import os

    from joblib.parallel import get_active_backend

    from slamlib.pipeline import cli
    from slamlib.pipeline.workers import exit_with_parent

    seen = {}

    def handler(args):
        backend, _ = get_active_backend()
        seen.update(backend.backend_kwargs)
        return 0

    parser = cli.build_parser()
    args = parser.parse_args(["mock", "unused"])
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv: args)
    args.handler = handler
    assert cli.main([]) == 0
    assert seen["initializer"] is exit_with_parent and seen["initargs"] == (os.getpid(),)
