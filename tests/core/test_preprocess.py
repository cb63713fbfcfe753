"""Tests of slamlib.preprocess (paper Section 2.1).

Synthetic spectra are made here: a smooth known continuum times Gaussian absorption
lines, on a LAMOST-like log-linear grid, with Gaussian noise. None of it is real data.
The real-data tests at the end read the LAMOST files in ../shared/data and skip when
that folder is absent.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.interpolate import make_smoothing_spline

from slamlib.io import SPEED_OF_LIGHT_KM_S, Spectrum, SpectrumBatch, read_lamost
from slamlib.preprocess import (
    MAX_BAD_PIXELS,
    PreparedSpectra,
    bad_pixel_mask,
    common_wave_grid,
    count_bad_pixels,
    normalize_continuum,
    prepare,
    resample,
    smoothing_spline,
    to_rest_frame,
)

LAMOST_LOG_START, LAMOST_LOG_STEP = 3.5682, 1e-4


# --------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------
def lamost_like_wave(n_pix: int = 3904) -> np.ndarray:
    """LAMOST's log-linear grid, 3700-9089 Angstrom for 3904 pixels."""
    return 10.0 ** (LAMOST_LOG_START + LAMOST_LOG_STEP * np.arange(n_pix))


def true_continuum(wave: np.ndarray) -> np.ndarray:
    """A smooth, slowly varying continuum (scale ~1000 Angstrom), values ~300-1300."""
    return 800.0 * (1.0 + 0.3 * np.sin(2 * np.pi * (wave - 4000.0) / 3000.0)) * (wave / 6000.0) ** -1


def absorption(wave: np.ndarray, centers: np.ndarray, depths: np.ndarray, width: float = 2.5) -> np.ndarray:
    """Product of Gaussian absorption lines (depth = fractional depth at the centre)."""
    profile = depths[:, None] * np.exp(-0.5 * ((wave[None, :] - centers[:, None]) / width) ** 2)
    return np.prod(1.0 - profile, axis=0)


def make_spectrum(
    *,
    snr: float = 100.0,
    rv_km_s: float = 0.0,
    rng: np.random.Generator | None = None,
    n_pix: int = 3904,
    line_spacing: float = 60.0,
) -> dict[str, np.ndarray]:
    """A synthetic observed spectrum: continuum x lines (+ Doppler shift) + noise.

    Returns wave (observed), flux, ivar, the true continuum and the true normalized
    flux on the observed grid.
    """
    rng = np.random.default_rng(1) if rng is None else rng
    wave = lamost_like_wave(n_pix)
    rest_wave = wave / (1.0 + rv_km_s / SPEED_OF_LIGHT_KM_S)
    centers = np.arange(3800.0, 9000.0, line_spacing) + rng.uniform(-10.0, 10.0, int(np.ceil(5200.0 / line_spacing)))
    depths = rng.uniform(0.2, 0.6, centers.size)
    continuum = true_continuum(wave)
    normalized = absorption(rest_wave, centers, depths)
    sigma = continuum / snr
    flux = continuum * normalized + rng.normal(0.0, 1.0, wave.size) * sigma
    return {
        "wave": wave,
        "flux": flux,
        "ivar": 1.0 / sigma**2,
        "continuum": continuum,
        "normalized": normalized,
    }


def single_line_spectrum(rest_center: float, rv_km_s: float, *, n_pix: int = 3904) -> Spectrum:
    """A noiseless flat spectrum with one line at ``rest_center``, observed at ``rv_km_s``."""
    wave = lamost_like_wave(n_pix)
    rest_wave = wave / (1.0 + rv_km_s / SPEED_OF_LIGHT_KM_S)
    flux = 500.0 * absorption(rest_wave, np.array([rest_center]), np.array([0.5]), width=3.0)
    return Spectrum(wave, flux, np.full(n_pix, 1e-2), np.zeros(n_pix), {"rv": rv_km_s})


# --------------------------------------------------------------------------------------
# bad_pixel_mask, count_bad_pixels
# --------------------------------------------------------------------------------------
def test_bad_pixel_mask_flags_each_condition():
    flux = np.array([1.0, 1.0, 1.0, np.nan, np.inf, 1.0, 0.0, 1.0, -2.0])
    ivar = np.array([1.0, 0.0, -1.0, 1.0, 1.0, np.nan, 1.0, 1.0, 1.0])
    ormask = np.array([0, 0, 0, 0, 0, 0, 0, 4, 0])
    expected = np.array([False, True, True, True, True, True, True, True, False])
    np.testing.assert_array_equal(bad_pixel_mask(flux, ivar, ormask), expected)
    # without the OR mask only pixel 7 changes
    np.testing.assert_array_equal(bad_pixel_mask(flux, ivar), expected & (np.arange(9) != 7))


def test_bad_pixel_mask_works_on_batches_and_leaves_inputs_alone():
    rng = np.random.default_rng(2)
    flux, ivar = rng.normal(1, 0.1, (3, 10)), rng.uniform(0.5, 2, (3, 10))
    ivar[1, 4] = 0.0
    flux_before, ivar_before = flux.copy(), ivar.copy()
    mask = bad_pixel_mask(flux, ivar)
    assert mask.shape == (3, 10) and mask.sum() == 1 and mask[1, 4]
    np.testing.assert_array_equal(flux, flux_before)
    np.testing.assert_array_equal(ivar, ivar_before)


def test_bad_pixel_mask_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        bad_pixel_mask(np.ones(5), np.ones(4))
    with pytest.raises(ValueError, match="ormask"):
        bad_pixel_mask(np.ones(5), np.ones(5), np.zeros(3))


def test_count_bad_pixels():
    ivar = np.array([[1.0, 0.0, np.nan, 2.0], [1.0, 1.0, 1.0, -3.0]])
    np.testing.assert_array_equal(count_bad_pixels(ivar), [2, 1])
    assert count_bad_pixels(ivar[0]) == 2
    assert isinstance(count_bad_pixels(ivar[0]), int)


# --------------------------------------------------------------------------------------
# to_rest_frame
# --------------------------------------------------------------------------------------
def test_rest_frame_moves_an_observed_line_back():
    rv = 300.0
    observed = np.array([5000.0 * (1 + rv / SPEED_OF_LIGHT_KM_S), 6562.8 * (1 + rv / SPEED_OF_LIGHT_KM_S)])
    np.testing.assert_allclose(to_rest_frame(observed, rv_km_s=rv), [5000.0, 6562.8], rtol=1e-13)
    np.testing.assert_allclose(
        to_rest_frame(observed, z=rv / SPEED_OF_LIGHT_KM_S), to_rest_frame(observed, rv_km_s=rv), rtol=1e-15
    )


def test_rest_frame_returns_a_new_array():
    wave = np.linspace(4000, 5000, 11)
    before = wave.copy()
    shifted = to_rest_frame(wave, rv_km_s=0.0)
    shifted *= 2
    np.testing.assert_array_equal(wave, before)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"rv_km_s": 10.0, "z": 1e-4}, {"z": -1.0}, {"rv_km_s": float("nan")}, {"z": float("inf")}],
)
def test_rest_frame_rejects_bad_velocity(kwargs):
    with pytest.raises(ValueError, match="to_rest_frame"):
        to_rest_frame(np.array([5000.0]), **kwargs)


# --------------------------------------------------------------------------------------
# smoothing_spline
# --------------------------------------------------------------------------------------
def test_smoothing_spline_equals_scipy_reference():
    """The fast Reinsch solver gives scipy's make_smoothing_spline(w=pixel width, lam=L**4)."""
    data = make_spectrum(snr=30.0, n_pix=1500)
    wave, flux = data["wave"], data["flux"]
    mask = np.zeros(wave.size, dtype=bool)
    mask[200:260] = True
    mask[::7] = True
    for length in (5.0, 30.0, 80.0):
        ours = smoothing_spline(wave, flux, smoothing_length=length, mask=mask)
        good = ~mask
        reference = make_smoothing_spline(
            wave[good], flux[good], w=np.gradient(wave)[good], lam=length**4
        )
        inside = (wave >= wave[good][0]) & (wave <= wave[good][-1])
        np.testing.assert_allclose(ours[inside], reference(wave[inside]), rtol=1e-7, atol=1e-9 * np.abs(flux).max())


def test_smoothing_spline_keeps_end_values_outside_good_range():
    wave = np.linspace(4000.0, 5000.0, 200)
    flux = 1.0 + (wave - 4000.0) / 1000.0
    mask = (wave < 4100.0) | (wave > 4900.0)
    smooth = smoothing_spline(wave, flux, smoothing_length=20.0, mask=mask)
    good = ~mask
    np.testing.assert_allclose(smooth[good], flux[good], rtol=1e-9)  # a straight line is not penalized
    assert np.all(smooth[wave < 4100.0] == smooth[good][0])
    assert np.all(smooth[wave > 4900.0] == smooth[good][-1])
    np.testing.assert_allclose(
        smoothing_spline(wave, flux, smoothing_length=20.0, evaluate_at=np.array([4500.0])), [1.5], rtol=1e-9
    )


def test_smoothing_spline_rejects_bad_input():
    wave = np.linspace(4000.0, 5000.0, 50)
    with pytest.raises(ValueError, match="smoothing_length"):
        smoothing_spline(wave, np.ones(50), smoothing_length=0.0)
    with pytest.raises(ValueError, match="3 good"):
        smoothing_spline(wave, np.ones(50), mask=np.arange(50) > 1)
    with pytest.raises(ValueError, match="strictly increasing"):
        smoothing_spline(wave[::-1], np.ones(50))


# --------------------------------------------------------------------------------------
# normalize_continuum
# --------------------------------------------------------------------------------------
INNER = (3900.0, 8900.0)  # away from the ends, where any smoother is least constrained


@pytest.mark.parametrize("snr, tolerance_median, tolerance_max", [(100.0, 0.005, 0.01), (30.0, 0.01, 0.03)])
def test_continuum_matches_truth(snr, tolerance_median, tolerance_max):
    """With lines every ~60 Angstrom the clipped spline recovers the true continuum.

    Tolerances: median |error| 0.5 % and maximum 1 % at S/N 100; 1 % and 3 % at S/N 30.
    """
    data = make_spectrum(snr=snr)
    flux_norm, ivar_norm, continuum = normalize_continuum(data["wave"], data["flux"], data["ivar"])
    inner = (data["wave"] > INNER[0]) & (data["wave"] < INNER[1])
    relative_error = continuum[inner] / data["continuum"][inner] - 1.0
    assert abs(np.median(relative_error)) < tolerance_median
    assert np.max(np.abs(relative_error)) < tolerance_max
    # the normalized flux follows the true normalized spectrum to within the noise
    residual = (flux_norm - data["normalized"]) * np.sqrt(ivar_norm)
    assert abs(np.median(residual[inner])) < 0.1 * snr * tolerance_max + 0.2
    np.testing.assert_allclose(ivar_norm, data["ivar"] * continuum**2)


def test_noiseless_continuum_is_recovered_exactly():
    data = make_spectrum(snr=1e12)
    _, _, continuum = normalize_continuum(data["wave"], data["flux"], data["ivar"])
    inner = (data["wave"] > INNER[0]) & (data["wave"] < INNER[1])
    np.testing.assert_allclose(continuum[inner], data["continuum"][inner], rtol=1e-3)


def test_clipping_rejects_absorption_lines():
    """Without clipping the lines drag the spline down by several per cent; with it they do not."""
    data = make_spectrum(snr=200.0)
    inner = (data["wave"] > INNER[0]) & (data["wave"] < INNER[1])
    _, _, unclipped = normalize_continuum(data["wave"], data["flux"], data["ivar"], n_iter=0)
    _, _, clipped = normalize_continuum(data["wave"], data["flux"], data["ivar"], n_iter=3)
    error_unclipped = np.median(unclipped[inner] / data["continuum"][inner] - 1.0)
    error_clipped = np.median(clipped[inner] / data["continuum"][inner] - 1.0)
    assert error_unclipped < -0.02  # pulled down into the lines
    assert abs(error_clipped) < 0.1 * abs(error_unclipped)


def test_a_single_deep_line_does_not_dent_the_continuum():
    wave = lamost_like_wave()
    continuum_true = true_continuum(wave)
    flux = continuum_true * absorption(wave, np.array([5000.0]), np.array([0.8]), width=4.0)
    ivar = np.full(wave.size, 1.0)
    _, _, continuum = normalize_continuum(wave, flux, ivar)
    near_line = np.abs(wave - 5000.0) < 20.0
    assert np.max(np.abs(continuum[near_line] / continuum_true[near_line] - 1.0)) < 1e-3


def test_normalization_is_scale_invariant():
    data = make_spectrum(snr=50.0)
    flux_norm, ivar_norm, continuum = normalize_continuum(data["wave"], data["flux"], data["ivar"])
    scaled = normalize_continuum(data["wave"], 1e-3 * data["flux"], 1e6 * data["ivar"])
    np.testing.assert_allclose(scaled[0], flux_norm, rtol=1e-7)
    np.testing.assert_allclose(scaled[1], ivar_norm, rtol=1e-6)
    np.testing.assert_allclose(scaled[2], 1e-3 * continuum, rtol=1e-7)


def test_bad_pixels_get_zero_ivar_and_no_nan():
    data = make_spectrum(snr=50.0)
    flux, ivar = data["flux"].copy(), data["ivar"].copy()
    flux[100:110] = np.nan
    flux[500] = np.inf
    flux[600:605] = 0.0
    ivar[1000:1050] = 0.0
    ivar[1200] = -5.0
    ivar[1300] = np.nan
    ivar[1301] = np.inf
    extra = np.zeros(flux.size, dtype=bool)
    extra[2000:2010] = True
    flux_before, ivar_before = flux.copy(), ivar.copy()
    flux_norm, ivar_norm, continuum = normalize_continuum(data["wave"], flux, ivar, mask=extra)
    bad = bad_pixel_mask(flux, ivar) | extra
    assert bad.sum() == 10 + 1 + 5 + 50 + 1 + 1 + 1 + 10
    for array in (flux_norm, ivar_norm, continuum):
        assert np.all(np.isfinite(array))
    assert np.all(continuum > 0)
    assert np.all(ivar_norm[bad] == 0) and np.all(flux_norm[bad] == 1.0)
    assert np.all(ivar_norm[~bad] > 0)
    # the continuum bridges the gaps smoothly
    inner = (data["wave"] > INNER[0]) & (data["wave"] < INNER[1])
    assert np.max(np.abs(continuum[inner] / data["continuum"][inner] - 1.0)) < 0.02
    # the caller's arrays are untouched
    np.testing.assert_array_equal(flux, flux_before)
    np.testing.assert_array_equal(ivar, ivar_before)


def test_gaps_wider_than_a_bin_are_bridged():
    data = make_spectrum(snr=100.0)
    ivar = data["ivar"].copy()
    gap = (data["wave"] > 5000.0) & (data["wave"] < 5400.0)  # four empty 100 A bins
    ivar[gap] = 0.0
    flux_norm, ivar_norm, continuum = normalize_continuum(data["wave"], data["flux"], ivar)
    assert np.all(ivar_norm[gap] == 0) and np.all(flux_norm[gap] == 1.0)
    assert np.all(np.isfinite(continuum)) and np.all(continuum > 0)
    near = (data["wave"] > 4700.0) & (data["wave"] < 5700.0) & ~gap
    assert np.max(np.abs(continuum[near] / data["continuum"][near] - 1.0)) < 0.01


def test_hopeless_spectrum_is_returned_all_bad():
    data = make_spectrum(snr=50.0, n_pix=500)
    ivar = np.zeros(500)
    ivar[:10] = 1.0  # fewer than min_good_pixels
    flux_norm, ivar_norm, continuum = normalize_continuum(data["wave"], data["flux"], ivar)
    assert np.all(ivar_norm == 0) and np.all(flux_norm == 1.0) and np.all(continuum > 0)
    # a continuum that is not positive (a negative, noise-only spectrum) is also hopeless
    rng = np.random.default_rng(3)
    negative = -100.0 + rng.normal(0, 1, 500)
    flux_norm, ivar_norm, continuum = normalize_continuum(data["wave"], negative, np.ones(500))
    assert np.all(ivar_norm == 0) and np.all(flux_norm == 1.0) and np.all(continuum > 0)


HOSTILE_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0.0, -0.0, 1e-300, -1.0, 1e30]),
)


@settings(max_examples=60, deadline=None)
@given(
    flux=arrays(np.float64, 300, elements=HOSTILE_VALUES),
    ivar=arrays(np.float64, 300, elements=HOSTILE_VALUES),
)
def test_hostile_input_never_gives_nan_or_negative_ivar(flux, ivar):
    """Whatever the pixel values, the outputs are finite, ivar >= 0 and bad pixels get 0."""
    wave = np.linspace(4000.0, 5000.0, 300)
    flux_norm, ivar_norm, continuum = normalize_continuum(wave, flux, ivar, bin_width=50.0)
    assert np.all(np.isfinite(flux_norm)) and np.all(np.isfinite(ivar_norm)) and np.all(np.isfinite(continuum))
    assert np.all(ivar_norm >= 0) and np.all(continuum > 0)
    assert np.all(ivar_norm[bad_pixel_mask(flux, ivar)] == 0)
    new_flux, new_ivar = resample(wave, flux_norm, ivar_norm, np.linspace(3990.0, 5010.0, 200))
    assert np.all(np.isfinite(new_flux)) and np.all(np.isfinite(new_ivar)) and np.all(new_ivar >= 0)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"flux": np.ones(99)}, "equal length"),
        ({"wave": np.linspace(5000.0, 4000.0, 100)}, "strictly increasing"),
        ({"wave": np.r_[np.linspace(4000.0, 5000.0, 99), np.nan]}, "strictly increasing"),
        ({"bin_width": -1.0}, "bin_width"),
        ({"sigma_clip": 0.0}, "sigma_clip"),
        ({"smoothing_length": np.inf}, "smoothing_length"),
        ({"n_iter": -1}, "n_iter"),
        ({"n_iter": 1.5}, "n_iter"),
        ({"min_good_pixels": 2}, "min_good_pixels"),
        ({"mask": np.zeros(3, dtype=bool)}, "equal length"),
    ],
)
def test_normalize_continuum_rejects_bad_input(change, match):
    arguments = {"wave": np.linspace(4000.0, 5000.0, 100), "flux": np.ones(100), "ivar": np.ones(100)} | change
    with pytest.raises(ValueError, match=match):
        normalize_continuum(**arguments)


# --------------------------------------------------------------------------------------
# resample
# --------------------------------------------------------------------------------------
def test_resampling_a_linear_function_is_exact():
    wave = lamost_like_wave(1000)  # 3700-4656 Angstrom
    flux = 3.0 + 0.002 * wave
    new_wave = np.linspace(3800.0, 4600.0, 777)
    new_flux, new_ivar = resample(wave, flux, np.ones(wave.size), new_wave)
    np.testing.assert_allclose(new_flux, 3.0 + 0.002 * new_wave, rtol=1e-12)
    np.testing.assert_allclose(new_ivar, 1.0, rtol=1e-12)


def test_resampling_onto_the_input_grid_is_the_identity():
    rng = np.random.default_rng(4)
    wave = np.sort(rng.uniform(4000, 5000, 300))
    flux, ivar = rng.normal(1, 0.1, 300), rng.uniform(1, 10, 300)
    new_flux, new_ivar = resample(wave, flux, ivar, wave)
    np.testing.assert_allclose(new_flux, flux, rtol=1e-12)
    np.testing.assert_allclose(new_ivar, ivar, rtol=1e-12)


def test_resampling_interpolates_the_variance():
    wave = np.array([1.0, 2.0, 3.0])
    flux = np.array([0.0, 1.0, 2.0])
    ivar = np.array([1.0, 4.0, 4.0])
    new_flux, new_ivar = resample(wave, flux, ivar, np.array([1.5, 1.25, 2.5]))
    np.testing.assert_allclose(new_flux, [0.5, 0.25, 1.5])
    # variance 0.5 * 1 + 0.5 * 0.25, 0.75 * 1 + 0.25 * 0.25, 0.25
    np.testing.assert_allclose(new_ivar, [1 / 0.625, 1 / 0.8125, 4.0])
    # never more optimistic than the best of the two input pixels, never worse than the worst
    assert np.all(new_ivar <= 4.0) and np.all(new_ivar >= 1.0)


def test_resampling_flags_outside_and_bad_neighbours():
    wave = np.arange(10.0)
    flux = np.arange(10.0) + 1.0
    ivar = np.ones(10)
    flux[4] = np.nan  # bad: non-finite flux
    ivar[7] = 0.0  # bad: no weight
    new_wave = np.array([-1.0, 0.0, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 6.5, 7.0, 8.0, 9.0, 9.5])
    new_flux, new_ivar = resample(wave, flux, ivar, new_wave)
    expected_bad = [True, False, False, True, True, True, False, False, True, True, False, False, True]
    np.testing.assert_array_equal(new_ivar == 0, expected_bad)
    assert np.all(np.isfinite(new_flux))
    # across the bad pixel the flux is bridged linearly from the good neighbours
    np.testing.assert_allclose(new_flux[[3, 4, 5]], [4.5, 5.0, 5.5])
    # beyond the ends the end value is repeated
    assert new_flux[0] == flux[0] and new_flux[-1] == flux[-1]


def test_resampling_with_a_mask_and_in_batches():
    rng = np.random.default_rng(5)
    wave = np.linspace(4000, 5000, 200)
    flux, ivar = rng.normal(1, 0.1, (3, 200)), rng.uniform(1, 10, (3, 200))
    mask = np.zeros((3, 200), dtype=bool)
    mask[1, 50:60] = True
    new_wave = np.linspace(3990, 5010, 400)
    flux_before = flux.copy()
    batch_flux, batch_ivar = resample(wave, flux, ivar, new_wave, mask=mask)
    for row in range(3):
        row_flux, row_ivar = resample(wave, flux[row], ivar[row], new_wave, mask=mask[row])
        np.testing.assert_allclose(batch_flux[row], row_flux)
        np.testing.assert_allclose(batch_ivar[row], row_ivar)
    masked_region = (new_wave > wave[49]) & (new_wave < wave[60])
    assert np.all(batch_ivar[1, masked_region] == 0) and np.all(batch_ivar[0, masked_region] > 0)
    np.testing.assert_array_equal(flux, flux_before)


def test_resampling_with_no_good_pixel_is_finite():
    new_flux, new_ivar = resample(np.arange(5.0), np.full(5, np.nan), np.zeros(5), np.array([1.5, 2.5]))
    assert np.all(new_ivar == 0) and np.all(np.isfinite(new_flux))


@pytest.mark.parametrize(
    "arguments, match",
    [
        ((np.arange(5.0), np.ones(4), np.ones(4), np.arange(3.0)), "resample needs wave"),
        ((np.arange(5.0), np.ones(5), np.ones(4), np.arange(3.0)), "resample needs wave"),
        ((np.arange(5.0)[::-1], np.ones(5), np.ones(5), np.arange(3.0)), "strictly increasing"),
        ((np.arange(5.0), np.ones(5), np.ones(5), np.array([1.0, np.nan])), "new_wave"),
    ],
)
def test_resample_rejects_bad_input(arguments, match):
    with pytest.raises(ValueError, match=match):
        resample(*arguments)


# --------------------------------------------------------------------------------------
# common_wave_grid
# --------------------------------------------------------------------------------------
def test_default_grid_is_the_papers():
    grid = common_wave_grid()
    assert grid.size == 1901 and grid[0] == 3900.0 and grid[-1] == 5800.0
    np.testing.assert_allclose(np.diff(grid), 1.0)
    assert common_wave_grid(4000.0, 4010.0, 2.5).tolist() == [4000.0, 4002.5, 4005.0, 4007.5, 4010.0]
    assert common_wave_grid(4000.0, 4009.0, 2.5)[-1] == 4007.5  # stop off the grid is not exceeded


@pytest.mark.parametrize("arguments", [(5000.0, 4000.0, 1.0), (4000.0, 5000.0, 0.0), (4000.0, np.inf, 1.0)])
def test_grid_rejects_bad_input(arguments):
    with pytest.raises(ValueError, match="common_wave_grid"):
        common_wave_grid(*arguments)


# --------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------
def synthetic_spectra(n_spec: int = 4, *, snr: float = 80.0) -> list[Spectrum]:
    rng = np.random.default_rng(6)
    spectra = []
    for index in range(n_spec):
        rv = float(rng.uniform(-100, 100))
        data = make_spectrum(snr=snr, rv_km_s=rv, rng=rng)
        meta = {"obsid": index, "rv": rv, "z": rv / SPEED_OF_LIGHT_KM_S, "snrg": snr}
        spectra.append(Spectrum(data["wave"], data["flux"], data["ivar"], np.zeros(data["wave"].size), meta))
    return spectra


def test_prepare_output_shapes_and_bad_pixel_convention():
    spectra = synthetic_spectra(3)
    spectra[1].ivar[3000:3100] = 0.0  # frozen dataclass, but the array is ours: a gap near 7800 A (off-grid)
    spectra[2].flux[1000:1020] = np.nan  # around 4680 A (on the grid)
    prepared = prepare(spectra)
    assert isinstance(prepared, PreparedSpectra) and len(prepared) == 3
    assert prepared.flux.shape == prepared.ivar.shape == (3, 1901)
    np.testing.assert_array_equal(prepared.wave, common_wave_grid())
    np.testing.assert_array_equal(prepared.n_bad, (prepared.ivar == 0).sum(axis=1))
    assert prepared.n_bad[0] == 0 and prepared.n_bad[1] == 0 and 20 <= prepared.n_bad[2] <= 30
    assert np.all(np.isfinite(prepared.flux)) and np.all(np.isfinite(prepared.ivar))
    assert np.all(prepared.flux[prepared.ivar == 0] == 1.0)
    assert [meta["obsid"] for meta in prepared.meta] == [0, 1, 2]
    np.testing.assert_allclose(prepared.rv_km_s, [spectrum.meta["rv"] for spectrum in spectra])
    np.testing.assert_array_equal(prepared.usable(), prepared.n_bad <= MAX_BAD_PIXELS)
    subset = prepared.subset([2, 0])
    np.testing.assert_array_equal(subset.flux, prepared.flux[[2, 0]])
    assert [meta["obsid"] for meta in subset.meta] == [2, 0]


def test_prepared_flux_matches_the_true_normalized_spectrum():
    spectra = synthetic_spectra(2, snr=300.0)
    rng = np.random.default_rng(6)
    prepared = prepare(spectra)
    for index, spectrum in enumerate(spectra):
        rv = float(rng.uniform(-100, 100))
        truth = make_spectrum(snr=300.0, rv_km_s=rv, rng=rng)
        rest_wave = to_rest_frame(truth["wave"], rv_km_s=rv)
        expected = np.interp(prepared.wave, rest_wave, truth["normalized"])
        # linear interpolation of 2.5 A-wide lines on ~1 A pixels is good to a few per cent in the cores
        assert np.median(np.abs(prepared.flux[index] - expected)) < 0.01
        assert np.max(np.abs(prepared.flux[index] - expected)) < 0.08


def test_prepare_shifts_to_the_rest_frame_from_meta_or_argument():
    rv = 500.0
    spectrum = single_line_spectrum(5000.0, rv)
    grid = common_wave_grid(4900.0, 5100.0, 0.1)
    at_rest = prepare(spectrum, grid)
    assert abs(grid[np.argmin(at_rest.flux[0])] - 5000.0) <= 0.15
    observed = prepare(spectrum, grid, rest_frame=False)
    assert abs(grid[np.argmin(observed.flux[0])] - 5000.0 * (1 + rv / SPEED_OF_LIGHT_KM_S)) <= 0.15
    np.testing.assert_array_equal(observed.rv_km_s, [0.0])
    # the argument overrides meta
    overridden = prepare(spectrum, grid, rv_km_s=0.0)
    np.testing.assert_allclose(overridden.flux, observed.flux)
    # z alone is used when rv is missing; nothing at all means no shift
    from_z = Spectrum(spectrum.wave, spectrum.flux, spectrum.ivar, spectrum.ormask, {"z": rv / SPEED_OF_LIGHT_KM_S})
    np.testing.assert_allclose(prepare(from_z, grid).flux, at_rest.flux, atol=1e-12)
    bare = Spectrum(spectrum.wave, spectrum.flux, spectrum.ivar, spectrum.ormask, {"rv": None, "z": float("nan")})
    np.testing.assert_allclose(prepare(bare, grid).flux, observed.flux, atol=1e-12)


def test_prepare_accepts_spectrum_list_and_batch_alike():
    spectra = synthetic_spectra(3)
    batch = SpectrumBatch(
        wave=spectra[0].wave,
        flux=np.array([s.flux for s in spectra]),
        ivar=np.array([s.ivar for s in spectra]),
        ormask=np.array([s.ormask for s in spectra]),
        meta=Table(rows=[s.meta for s in spectra]),
    )
    from_list = prepare(spectra)
    from_batch = prepare(batch)
    from_single = prepare(spectra[1])
    np.testing.assert_allclose(from_batch.flux, from_list.flux)
    np.testing.assert_allclose(from_batch.ivar, from_list.ivar)
    np.testing.assert_allclose(from_single.flux[0], from_list.flux[1])
    assert from_batch.meta[2]["obsid"] == 2 and isinstance(from_batch.meta[2]["obsid"], int)
    # per-spectrum velocities as an array
    velocities = np.array([s.meta["rv"] for s in spectra])
    np.testing.assert_allclose(prepare(batch, rv_km_s=velocities).flux, from_list.flux)


def test_prepare_survives_a_hopeless_spectrum():
    spectra = synthetic_spectra(3)
    n_pix = spectra[0].wave.size
    hopeless = Spectrum(spectra[0].wave, np.full(n_pix, np.nan), np.zeros(n_pix), np.zeros(n_pix), {"rv": 0.0})
    negative = Spectrum(spectra[0].wave, -np.ones(n_pix), np.ones(n_pix), np.zeros(n_pix), {})
    masked = Spectrum(spectra[0].wave, spectra[0].flux, spectra[0].ivar, np.ones(n_pix), {})
    prepared = prepare([spectra[0], hopeless, negative, masked, spectra[1]])
    n_grid = prepared.wave.size
    np.testing.assert_array_equal(prepared.n_bad[1:4], [n_grid] * 3)
    assert np.all(prepared.ivar[1:4] == 0) and np.all(prepared.flux[1:4] == 1.0)
    assert prepared.n_bad[0] == 0 and prepared.n_bad[4] == 0
    np.testing.assert_array_equal(prepared.usable(), [True, False, False, False, True])


def test_prepare_does_not_modify_its_input():
    spectra = synthetic_spectra(2)
    spectra[0].flux[10] = np.nan
    copies = [(s.wave.copy(), s.flux.copy(), s.ivar.copy(), s.ormask.copy(), dict(s.meta)) for s in spectra]
    velocities = np.array([10.0, 20.0])
    prepared = prepare(spectra, rv_km_s=velocities)
    prepared.rv_km_s[:] = 0.0
    prepared.meta[0]["obsid"] = 99
    np.testing.assert_array_equal(velocities, [10.0, 20.0])
    for spectrum, (wave, flux, ivar, ormask, meta) in zip(spectra, copies):
        np.testing.assert_array_equal(spectrum.wave, wave)
        np.testing.assert_array_equal(spectrum.flux, flux)
        np.testing.assert_array_equal(spectrum.ivar, ivar)
        np.testing.assert_array_equal(spectrum.ormask, ormask)
        assert spectrum.meta == meta


@pytest.mark.slow
def test_prepare_in_parallel_gives_the_same_result():
    spectra = synthetic_spectra(5)
    serial = prepare(spectra)
    parallel = prepare(spectra, n_jobs=2)
    np.testing.assert_array_equal(parallel.flux, serial.flux)
    np.testing.assert_array_equal(parallel.ivar, serial.ivar)


def test_prepare_rejects_bad_input():
    spectra = synthetic_spectra(2)
    with pytest.raises(ValueError, match="no spectra"):
        prepare([])
    with pytest.raises(ValueError, match="item 1"):
        prepare([spectra[0], np.ones(10)])
    with pytest.raises(ValueError, match="one value per spectrum"):
        prepare(spectra, rv_km_s=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        prepare(spectra, rv_km_s=[1.0, np.nan])
    with pytest.raises(ValueError, match="rest_frame=False"):
        prepare(spectra, rv_km_s=0.0, rest_frame=False)
    with pytest.raises(ValueError, match="wave_grid"):
        prepare(spectra, np.array([5000.0, 4000.0]))
    with pytest.raises(ValueError, match="sigma_clip"):
        prepare(spectra, sigma_clip=-1.0)
    reversed_wave = Spectrum(spectra[0].wave[::-1], spectra[0].flux, spectra[0].ivar, spectra[0].ormask, {})
    with pytest.raises(ValueError, match="spectrum 1: .*strictly increasing"):
        prepare([spectra[0], reversed_wave])


def test_prepared_spectra_checks_shapes():
    with pytest.raises(ValueError, match="flux"):
        PreparedSpectra(wave=np.arange(3.0), flux=np.ones((2, 4)), ivar=np.ones((2, 3)), n_bad=np.zeros(2), meta=[{}, {}])


# --------------------------------------------------------------------------------------
# Real LAMOST spectra (../shared/data)
# --------------------------------------------------------------------------------------
#: Windows of 3900-5800 Angstrom with few strong lines in FGK (and A) stars, where the
#: normalized flux should sit near 1: blue of the Mg b / MgH region, between Mg b and the
#: Fe I 5270/5328 lines, and red of the Na D-free 5600 Angstrom region.
CONTINUUM_WINDOWS = ((4500.0, 4550.0), (5060.0, 5120.0), (5600.0, 5650.0))


def real_spectra(lamost_dr1_dir: Path, lamost_layouts_dir: Path) -> list[Spectrum]:
    with open(lamost_dr1_dir / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    spectra = [read_lamost(lamost_dr1_dir / row["filename"], obsid=int(row["obsid"])) for row in rows]
    spectra += [read_lamost(path) for path in sorted(lamost_layouts_dir.glob("*.fits.gz"))]
    assert len(spectra) == 11
    return spectra


def test_real_spectra_normalize_to_one_in_continuum_windows(lamost_dr1_dir, lamost_layouts_dir):
    spectra = real_spectra(lamost_dr1_dir, lamost_layouts_dir)
    prepared = prepare(spectra)
    assert np.all(np.isfinite(prepared.flux)) and np.all(np.isfinite(prepared.ivar))
    assert np.all(prepared.ivar >= 0)
    for index, spectrum in enumerate(spectra):
        good = prepared.ivar[index] > 0
        for start, stop in CONTINUUM_WINDOWS:
            window = good & (prepared.wave >= start) & (prepared.wave <= stop)
            assert window.sum() > 30, (spectrum.meta["filename"], start)
            median = np.median(prepared.flux[index, window])
            assert abs(median - 1.0) < 0.05, (spectrum.meta["filename"], start, median)
        # the bulk of a normalized spectrum lies at or below the continuum
        assert 0.85 < np.median(prepared.flux[index, good]) < 1.05
    # velocities came from the headers' Z
    np.testing.assert_allclose(prepared.rv_km_s, [s.meta["z"] * SPEED_OF_LIGHT_KM_S for s in spectra])


def test_real_spectra_bad_pixel_counts(lamost_dr1_dir, lamost_layouts_dir):
    """The DR1 pipeline zeroes ivar at a few strong line cores and sky lines; DR6-DR9 files have none on the grid."""
    spectra = real_spectra(lamost_dr1_dir, lamost_layouts_dir)
    prepared = prepare(spectra)
    np.testing.assert_array_equal(prepared.n_bad, count_bad_pixels(prepared.ivar))
    assert np.all(prepared.n_bad <= 0.12 * prepared.wave.size)
    by_name = {meta["filename"]: n_bad for meta, n_bad in zip(prepared.meta, prepared.n_bad)}
    assert by_name["spec-55862-B6212_sp06-207.fits"] == 0  # A3V, no masked pixels in 3900-5800 A
    for name in ("dr6", "dr7", "dr9"):
        assert next(n for file, n in by_name.items() if f"_{name}." in file) == 0
    # a DR1 spectrum whose native ivar is 0 from 3700 to ~4050 A loses the blue end of the grid
    assert by_name["spec-55862-B6212_sp06-045.fits"] > MAX_BAD_PIXELS
    # on the grid, bad pixels sit where the native spectrum has bad pixels
    for spectrum, ivar in zip(spectra, prepared.ivar):
        native_bad = bad_pixel_mask(spectrum.flux, spectrum.ivar, spectrum.ormask)
        rest_wave = to_rest_frame(spectrum.wave, z=spectrum.meta["z"])
        for wavelength in prepared.wave[ivar == 0]:
            nearest = np.argsort(np.abs(rest_wave - wavelength))[:2]
            assert native_bad[nearest].any()
