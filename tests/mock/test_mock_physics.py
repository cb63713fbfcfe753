"""Physical behaviour of the mock spectra (slamlib.mock.synthesize), on noiseless spectra."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from slamlib.mock import measure_snr, synthesize
from slamlib.mock.grid import SPEED_OF_LIGHT_KM_S, air_to_vacuum, wavelength_grid

H_BETA = 4862.68
FE_5270 = 5271.00  # Fe I 5269.54 A (air)
MG_B1 = 5185.05  # Mg I 5183.60 A (air)


def noiseless(**columns) -> np.ndarray:
    """Continuum-normalized noiseless spectra for the given label columns."""
    n = max(np.size(value) for value in columns.values())
    table = Table({name: np.broadcast_to(np.asarray(value, dtype=float), (n,)) for name, value in columns.items()})
    return synthesize(table, noiseless=True).flux_norm


WAVE = wavelength_grid()


def equivalent_width(flux_norm: np.ndarray, low: float, high: float) -> np.ndarray:
    """Integral of 1 - F over [low, high] A, one value per spectrum."""
    band = (WAVE >= low) & (WAVE <= high)
    step = np.gradient(WAVE)[band]
    return ((1.0 - flux_norm[:, band]) * step).sum(axis=1)


def test_h_beta_equivalent_width_peaks_between_8000_and_10000_k():
    teff = np.arange(5000.0, 15001.0, 500.0)
    ew = equivalent_width(noiseless(teff=teff, logg=4.0), H_BETA - 40.0, H_BETA + 40.0)
    peak = teff[np.argmax(ew)]
    assert 8000.0 <= peak <= 10000.0
    assert ew.max() > 2.0 * ew[0] and ew.max() > 1.3 * ew[-1]


def test_fe_5270_weakens_with_teff_and_strengthens_with_metallicity():
    teff = np.array([4500.0, 5500.0, 6500.0, 7500.0])
    ew_teff = equivalent_width(noiseless(teff=teff, logg=4.5), FE_5270 - 2.5, FE_5270 + 2.5)
    assert np.all(np.diff(ew_teff) < 0)
    metallicity = np.array([-1.5, -0.5, 0.0, 0.4])
    ew_metal = equivalent_width(noiseless(teff=5500.0, logg=4.5, m_h=metallicity), FE_5270 - 2.5, FE_5270 + 2.5)
    assert np.all(np.diff(ew_metal) > 0)


def test_mg_b_wings_widen_with_surface_gravity():
    # At 5500 K (no MgH) the gap between Mg b2 (5174.1 A) and b1 (5185.0 A), more than
    # 3 A from both centres, holds a few weak forest lines and the pressure-broadened
    # wings of b1 and b2: the wings fill it more and more with gravity, to well over the
    # weak lines' own absorption in a dwarf.
    logg = np.array([1.5, 2.5, 3.5, 4.2, 4.8])
    flux = noiseless(teff=5500.0, logg=logg)
    gap = equivalent_width(flux, 5177.5, 5181.5)
    assert np.all(np.diff(gap) > 0)
    assert gap[-1] > 2.0 * gap[0]
    # b1's core is saturated at every gravity, so at R = 1800 the growing wings show as a
    # deeper line: its depth rises monotonically, by more than half from giant to dwarf.
    near = np.abs(WAVE - MG_B1) < 3.5
    depth = (1.0 - flux[:, near]).max(axis=1)
    assert np.all(np.diff(depth) > 0)
    assert depth[-1] > 1.5 * depth[0]


def test_g_band_deepens_with_carbon():
    flux = noiseless(teff=5000.0, logg=4.5, c_m=np.array([-0.3, 0.0, 0.3, 0.6]))
    band = (WAVE > 4290.0) & (WAVE < 4318.0)
    depth = 1.0 - flux[:, band].mean(axis=1)
    assert np.all(np.diff(depth) > 0.005)


def test_cn_3883_deepens_with_nitrogen_in_giants():
    flux = noiseless(teff=4900.0, logg=2.2, n_m=np.array([-0.3, 0.1, 0.5, 0.9]))
    band = (WAVE > 3850.0) & (WAVE < 3884.0)
    depth = 1.0 - flux[:, band].mean(axis=1)
    assert np.all(np.diff(depth) > 0.005)


SOLAR_FEATURES = {
    # name: (vacuum wavelength, minimum depth)
    "Ca II K": (3934.78, 0.5),
    "Ca II H": (3969.59, 0.5),
    "H delta": (4102.89, 0.15),
    "G band (Fe I + CH, Fraunhofer G 4307.9 air)": (float(air_to_vacuum(4307.9)), 0.2),
    "H gamma": (4341.69, 0.15),
    "H beta": (H_BETA, 0.15),
    "Mg b1": (MG_B1, 0.25),
    "Na D2": (5891.58, 0.08),
    "Na D1": (5897.56, 0.06),
    "H alpha": (6564.61, 0.2),
}


@pytest.mark.parametrize("name", list(SOLAR_FEATURES))
def test_solar_spectrum_shows_features_at_their_wavelengths(name, solar_flux):
    center, min_depth = SOLAR_FEATURES[name]
    near = np.flatnonzero(np.abs(WAVE - center) < 2.5)
    i = near[np.argmin(solar_flux[near])]
    assert solar_flux[i] < solar_flux[i - 1] and solar_flux[i] < solar_flux[i + 1], "not a local minimum"
    # Sub-pixel position from a parabola through the minimum and its neighbours.
    left, mid, right = solar_flux[i - 1 : i + 2]
    offset = 0.5 * (left - right) / (left - 2.0 * mid + right)
    position = np.interp(i + offset, np.arange(WAVE.size), WAVE)
    assert abs(position - center) < 2.0
    assert 1.0 - mid > min_depth


@pytest.fixture(scope="module")
def solar_flux() -> np.ndarray:
    return noiseless(teff=5772.0, logg=4.44)[0]


def test_radial_velocity_moves_lines_by_v_over_c():
    # A velocity of exactly 4 pixels (log10(1 + v/c) = 4e-4) moves the whole normalized
    # spectrum by 4 pixels.
    rv_pixels = SPEED_OF_LIGHT_KM_S * (10.0 ** (4 * 1e-4) - 1.0)
    rv = np.array([0.0, rv_pixels, 300.0])
    batch = synthesize(Table(dict(teff=[5800.0] * 3, logg=[4.4] * 3, rv=rv)), noiseless=True)
    rest, shifted, fast = batch.flux_norm
    np.testing.assert_allclose(shifted[200:-200], rest[196:-204], atol=5e-4)
    assert np.max(np.abs(shifted - rest)) > 0.2
    # The H-alpha minimum moves by lambda v / c (6.57 A for 300 km/s).
    for flux, velocity in ((rest, 0.0), (fast, 300.0)):
        target = 6564.61 * (1.0 + velocity / SPEED_OF_LIGHT_KM_S)
        near = np.flatnonzero(np.abs(WAVE - target) < 4.0)
        i = near[np.argmin(flux[near])]
        left, mid, right = flux[i - 1 : i + 2]
        position = np.interp(i + 0.5 * (left - right) / (left - 2 * mid + right), np.arange(WAVE.size), WAVE)
        assert abs(position - target) < 0.3
    np.testing.assert_allclose(batch.meta["z"], rv / SPEED_OF_LIGHT_KM_S)


def test_measured_snr_g_matches_request_within_5_percent():
    requested = np.repeat([6.0, 15.0, 50.0, 130.0], 4)
    teff = np.tile([4200.0, 5200.0, 6500.0, 9000.0], 4)
    batch = synthesize(Table(dict(teff=teff, logg=np.full(teff.size, 4.2), snr_g=requested)), seed=11)
    measured = measure_snr(batch.wave, batch.flux, batch.ivar, "g")
    np.testing.assert_allclose(measured, requested, rtol=0.05)
    np.testing.assert_allclose(batch.meta["snrg"], measured, atol=0.01)


def test_spectra_are_sane_over_3000_to_15000_k():
    teff = np.array([3000.0, 3500.0, 4500.0, 7000.0, 11000.0, 15000.0])
    batch = synthesize(Table(dict(teff=teff, logg=[5.0, 4.8, 1.0, 3.5, 4.0, 4.3])), noiseless=True)
    assert np.all(np.isfinite(batch.flux_norm)) and np.all(np.isfinite(batch.flux))
    assert np.all(batch.flux_norm > 0.0) and np.all(batch.flux_norm <= 1.0 + 1e-12)
    assert np.all(batch.flux > 0.0)
    # TiO makes cool dwarfs far more absorbed than hot stars.
    mean_depth = 1.0 - batch.flux_norm.mean(axis=1)
    assert mean_depth[0] > 0.2 and mean_depth[-1] < 0.05
