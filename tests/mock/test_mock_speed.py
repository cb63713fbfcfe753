"""The fast paths of the mock synthesis give the results of the plain numpy formulation.

The line forest is computed by compiled kernels (:mod:`slamlib.mock.kernels`), the
molecular-band depth law only where a band has opacity, and the per-star S/N from one sort;
each is compared here with the numpy reference it replaced (kept in the modules for
that purpose). They differ only by the rounding of exp and log, so the tolerances are
close to machine precision and far below any noise: :data:`FLUX_NORM_TOLERANCE` in
normalized flux (the S/N 10,000 of the noiseless mock is a 1e-4 noise).
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from slamlib.mock import (
    forest,
    lasp_test_sample,
    measure_snr,
    molecules,
    synthesis,
    synthesize,
)
from slamlib.mock.atmosphere import photosphere
from slamlib.mock.atoms import log_abundances
from slamlib.mock.grid import N_PIX, SPEED_OF_LIGHT_KM_S, wavelength_grid
from slamlib.mock.lines import depth_law, planck_parameter

#: Largest allowed |flux_norm(fast) - flux_norm(reference)| of any pixel (measured: ~1e-15).
FLUX_NORM_TOLERANCE = 1e-12


@pytest.fixture(scope="module")
def labels() -> Table:
    """Section 3 stars plus the corners of the supported labels: M dwarfs and giants with
    TiO, carbon-rich giants with C2, hot and metal-poor stars, large radial velocities."""
    table = lasp_test_sample(40, 4, 3)
    extra = Table(
        {
            "teff": [3100.0, 3400.0, 3700.0, 3900.0, 4300.0, 4600.0, 9000.0, 14000.0, 5800.0, 6300.0],
            "logg": [5.0, 1.0, 4.8, 0.5, 1.8, 2.4, 4.0, 4.2, 4.4, 3.9],
            "m_h": [0.4, -0.5, 0.0, -1.5, 0.3, -0.2, 0.0, 0.2, -3.5, -1.0],
            "alpha_m": [0.0, 0.3, 0.1, 0.4, 0.0, 0.2, 0.0, 0.0, 0.4, 0.3],
            "c_m": [0.0, 1.2, -0.5, 0.8, 1.8, 0.3, 0.0, 0.0, 0.5, -1.0],
            "n_m": [0.0, 0.5, 0.2, 1.5, 0.0, 2.0, 0.0, 0.0, 0.0, 0.8],
            "rv": [-900.0, 400.0, 0.0, 25.0, -60.0, 950.0, 10.0, -300.0, 120.0, -5.0],
            "snr_g": [30.0, 80.0, 15.0, 120.0, 60.0, 45.0, 200.0, 90.0, 25.0, 140.0],
        }
    )
    columns = list(extra.colnames)
    return Table({name: np.concatenate([np.asarray(table[name], dtype=float), extra[name]]) for name in columns})


def _layer_and_shift(labels: Table):
    values = synthesis.validate_labels(labels)
    layer = photosphere(values["teff"], values["logg"], log_abundances(values["m_h"], values["alpha_m"], values["c_m"], values["n_m"]))
    return layer, np.log10(1.0 + values["rv"] / SPEED_OF_LIGHT_KM_S), values


def test_compiled_curve_of_growth_tables_are_those_of_the_lines_module(labels):
    layer, _, _ = _layer_and_shift(labels)
    segment_wave = forest._layout().segment_wave
    for fast, reference in zip(forest._cog_tables(layer.teff, segment_wave), forest._cog_tables_reference(layer.teff, segment_wave)):
        assert np.array_equal(fast, reference)


def test_compiled_forest_widths_match_the_numpy_reference(labels):
    layer, _, _ = _layer_and_shift(labels)
    fast = forest.forest_equivalent_widths(layer)
    reference = forest._reference_equivalent_widths(layer)
    assert fast.shape == (len(labels), len(forest.load_forest()))
    assert np.all(np.isfinite(fast))
    np.testing.assert_allclose(fast, reference, rtol=1e-12, atol=0.0)


def test_compiled_forest_rendering_matches_the_sparse_matrix_rendering(labels):
    layer, shift, _ = _layer_and_shift(labels)
    tau = forest.forest_optical_depth(layer, shift, N_PIX)
    reference = forest.render_forest(forest._reference_equivalent_widths(layer), shift, N_PIX)
    assert tau.max() > 1.0  # strong blends are in the test set
    np.testing.assert_allclose(tau, reference, rtol=0.0, atol=1e-12)
    # A star's optical depth does not depend on the kernel's block of stars.
    assert np.array_equal(tau, forest.forest_optical_depth(layer, shift, N_PIX, star_block=3))


def test_band_depth_only_where_bands_absorb_equals_the_depth_law_everywhere(labels):
    layer, shift, _ = _layer_and_shift(labels)
    wave_rest = wavelength_grid()[None, :] / 10.0 ** shift[:, None]
    depth = molecules.band_depth(layer, wave_rest)
    eta = molecules._band_opacity(layer, wave_rest, 1e-4)
    reference = depth_law(eta, planck_parameter(wave_rest, layer.teff[:, None]))
    assert np.mean(eta > 0) > 0.01  # TiO and C2 are in the test set
    assert np.array_equal(depth[eta > 0], reference[eta > 0])
    assert np.all(depth[eta == 0] == 0.0)
    assert np.max(np.abs(reference[eta == 0])) < 1e-15


def test_flux_norm_matches_the_reference_implementation(labels, monkeypatch):
    fast = synthesize(labels, seed=4, noiseless=True)
    fast_noisy = synthesize(labels, seed=4)

    def reference_forest(layer, doppler_shift, n_pix=N_PIX):
        return forest.render_forest(forest._reference_equivalent_widths(layer), doppler_shift, n_pix)

    def reference_bands(layer, wave_rest, *, threshold=1e-4):
        eta = molecules._band_opacity(layer, wave_rest, threshold)
        return depth_law(eta, planck_parameter(wave_rest, layer.teff[:, None]))

    monkeypatch.setattr(synthesis, "forest_optical_depth", reference_forest)
    monkeypatch.setattr(synthesis, "band_depth", reference_bands)
    reference = synthesize(labels, seed=4, noiseless=True)
    reference_noisy = synthesize(labels, seed=4)
    assert np.max(np.abs(fast.flux_norm - reference.flux_norm)) < FLUX_NORM_TOLERANCE
    np.testing.assert_allclose(fast.flux, reference.flux, rtol=1e-12, atol=0.0)
    np.testing.assert_allclose(fast_noisy.flux, reference_noisy.flux, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(fast_noisy.ivar, reference_noisy.ivar, rtol=1e-11, atol=0.0)
    assert np.array_equal(fast_noisy.ormask, reference_noisy.ormask)
    for band in ("snru", "snrg", "snrr", "snri", "snrz"):
        assert np.allclose(fast_noisy.meta[band], reference_noisy.meta[band], rtol=0.0, atol=0.011)


def test_measure_snr_is_the_nan_median_of_each_row():
    rng = np.random.default_rng(2)
    wave = wavelength_grid()
    flux = rng.normal(100.0, 30.0, (9, wave.size))
    ivar = rng.uniform(0.0, 2.0, (9, wave.size))
    ivar[rng.uniform(size=ivar.shape) < 0.2] = 0.0
    ivar[0] = 0.0  # no good pixel at all
    ivar[1, ::2] = 0.0  # an even number of good pixels in some bands
    for band in ("u", "g", "r", "i", "z"):
        low, high = synthesis.SNR_BANDS[band]
        inside = (wave >= low) & (wave <= high)
        ratio = np.where(ivar[:, inside] > 0, flux[:, inside] * np.sqrt(ivar[:, inside]), np.nan)
        with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
            expected = np.nanmedian(ratio, axis=1)
        assert np.array_equal(measure_snr(wave, flux, ivar, band), expected, equal_nan=True)
        assert measure_snr(wave, flux[2], ivar[2], band) == expected[2]
    # A band outside the grid has no good pixel.
    assert np.isnan(measure_snr(wave[:10], flux[:, :10], ivar[:, :10], "z")).all()
