"""Observing a mock star: throughput, sky, telluric absorption, noise, bad pixels, S/N.

Noise model
-----------
The spectrograph records k F(lambda) T(lambda) counts from the star and
k B s(lambda) T(lambda) from the sky (T the throughput, s the sky spectrum, B the sky
level relative to the star, k the exposure). With Poisson noise the calibrated flux has
sigma^2 = (F + B s) / (k T), so the S/N per pixel is sqrt(k T) F / sqrt(F + B s). The
exposure k is solved so that the expected S/N_g (:func:`measure_snr`, the median over the
g band 4000-5500 A) equals the requested value exactly; the noisy mock then measures it
to a few per cent. The star's flux level follows the photon + sky relation of the real
DR1 sample (F_g^2 / (F_g / 4.8 + 44) = (S/N_g)^2, fitted to two of its spectra) with a
0.15 dex scatter.

Bad pixels (ORMASK)
-------------------
The mock uses its own bit numbers, borrowed from the SDSS spectral pixel mask (LAMOST's
bit meanings are not documented): :data:`MASK_SKY_RESIDUAL` (bit 23, "BRIGHTSKY") at
residuals of the strong sky lines 5577, 5890/5896, 6300, 6364 A (air) and bright OH lines,
:data:`MASK_COSMIC_RAY` (bit 25, "COMBINEREJ") at cosmic-ray hits,
:data:`MASK_BAD_BLUE_END` (bit 17, "LOWFLAT") at the often-bad blue end up to ~4000 A
(Ca II H&K included), :data:`MASK_BAD_RED_END` (bit 24, "NODATA") at the last pixels.
Flagged pixels have ivar = 0 and corrupted flux, as in real files.
"""

from __future__ import annotations

import numpy as np

from slamlib.mock.grid import INSTRUMENT_SIGMA_PIX, LOG_WAVE_STEP, air_to_vacuum

__all__ = [
    "SNR_BANDS",
    "MASK_BAD_BLUE_END",
    "MASK_SKY_RESIDUAL",
    "MASK_BAD_RED_END",
    "MASK_COSMIC_RAY",
    "SKY_LINES_AIR",
    "measure_snr",
    "throughput",
    "sky_spectrum",
    "telluric_transmission",
    "flux_level_for_snr",
    "sky_line_profiles",
]

#: Wavelength ranges (A) over which the per-band S/N is the median of flux * sqrt(ivar);
#: "g" is the S/N_g of LAMOST headers (SDSS g band).
SNR_BANDS: dict[str, tuple[float, float]] = {
    "u": (3700.0, 4000.0),
    "g": (4000.0, 5500.0),
    "r": (5600.0, 6900.0),
    "i": (6900.0, 8300.0),
    "z": (8300.0, 9100.0),
}

MASK_BAD_BLUE_END = 1 << 17
MASK_SKY_RESIDUAL = 1 << 23
MASK_BAD_RED_END = 1 << 24
MASK_COSMIC_RAY = 1 << 25

#: Sky emission lines (air, A) and their peak brightness relative to the sky continuum per
#: pixel: [O I] 5577, Na I D, [O I] 6300 and 6364, and bright OH Meinel-band lines
#: (Osterbrock et al. 1996, PASP 108, 277; rounded).
SKY_LINES_AIR: tuple[tuple[float, float], ...] = (
    (5577.34, 40.0),
    (5889.95, 8.0),
    (5895.92, 6.0),
    (6300.30, 15.0),
    (6363.78, 5.0),
    (6863.96, 3.0),
    (7316.28, 3.0),
    (7340.89, 3.0),
    (7750.64, 4.0),
    (7794.11, 4.0),
    (7821.50, 3.5),
    (7913.71, 4.5),
    (7993.33, 4.5),
    (8344.60, 7.5),
    (8399.17, 6.0),
    (8430.17, 6.0),
    (8465.36, 6.0),
    (8827.10, 9.0),
    (8885.85, 7.0),
    (8919.63, 7.0),
    (8943.40, 8.0),
    (8988.38, 7.0),
)
#: Index of the sky lines that are strong enough to leave flagged residuals often.
STRONG_SKY_LINES = (0, 1, 2, 3, 4)


def measure_snr(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, band: str = "g") -> float | np.ndarray:
    """Median S/N per pixel over a band: median of flux * sqrt(ivar) where ivar > 0.

    This is the definition of S/N_g used throughout slamlib's mock data (LAMOST's SNRG
    header values agree with it to a few per cent on the real DR1 sample).

    Parameters
    ----------
    wave : ndarray, shape (n_pix,)
        Wavelength, A.
    flux, ivar : ndarray, shape (n_pix,) or (n_spec, n_pix)
    band : {"u", "g", "r", "i", "z"}

    Returns
    -------
    float or ndarray, shape (n_spec,)
        Median S/N (NaN if the band has no good pixel); a float for one spectrum.
    """
    if band not in SNR_BANDS:
        raise ValueError(f"band must be one of {sorted(SNR_BANDS)}, got {band!r}.")
    low, high = SNR_BANDS[band]
    scalar = np.ndim(flux) == 1
    in_band = (np.asarray(wave) >= low) & (np.asarray(wave) <= high)
    flux = np.atleast_2d(np.asarray(flux, dtype=float))[:, in_band]
    ivar = np.atleast_2d(np.asarray(ivar, dtype=float))[:, in_band]
    ratio = np.where(ivar > 0, flux * np.sqrt(np.clip(ivar, 0.0, None)), np.nan)
    result = _nan_median_rows(ratio)
    return float(result[0]) if scalar else result


def _nan_median_rows(values: np.ndarray) -> np.ndarray:
    """Median of the non-NaN values of each row (NaN for a row without any).

    Bit for bit ``np.nanmedian(values, axis=1)`` (the middle value, or the mean of the
    two middle values, of each row), from one sort of the whole array instead of one
    call per row: ``np.sort`` puts the NaN last, so row i's values are its first n_i.
    """
    if values.shape[1] == 0:
        return np.full(values.shape[0], np.nan)
    ordered = np.sort(values, axis=1)
    count = values.shape[1] - np.count_nonzero(np.isnan(values), axis=1)
    rows = np.arange(values.shape[0])
    low = ordered[rows, np.maximum((count - 1) // 2, 0)]
    high = ordered[rows, np.maximum(count // 2, 0)]
    middle = np.where(count % 2 == 1, low, (low + high) / 2.0)
    return np.where(count > 0, middle, np.nan)


def throughput(wave: np.ndarray) -> np.ndarray:
    """Relative total throughput of telescope plus spectrograph (peak ~1).

    A smooth stand-in for LAMOST's: steep fall below 4000 A (blue arm), a dip at the
    ~5800 A dichroic join of the blue and red arms, and the CCD cut-off beyond 9000 A.
    """
    wave = np.asarray(wave, dtype=float)
    blue = 1.0 / (1.0 + np.exp(-(wave - 3850.0) / 100.0))
    dichroic = 1.0 - 0.45 * np.exp(-0.5 * ((wave - 5800.0) / 90.0) ** 2)
    red = 1.0 / (1.0 + np.exp((wave - 9300.0) / 250.0))
    return blue * dichroic * red


def sky_spectrum(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sky continuum and sky-line spectrum per pixel (arbitrary units, continuum ~1 at 4500 A).

    Returns
    -------
    continuum, lines : ndarray, shape (n_pix,)
    """
    wave = np.asarray(wave, dtype=float)
    continuum = 0.6 + 0.4 * (wave / 4500.0) ** 1.5
    amplitudes = np.array([line[1] for line in SKY_LINES_AIR])
    return continuum, amplitudes @ sky_line_profiles(wave)


def sky_line_profiles(wave: np.ndarray) -> np.ndarray:
    """Unit-peak instrumental profiles of each sky line, shape (n_line, n_pix)."""
    centers = air_to_vacuum(np.array([line[0] for line in SKY_LINES_AIR]))
    sigma = centers * np.log(10.0) * LOG_WAVE_STEP * INSTRUMENT_SIGMA_PIX
    return np.exp(-0.5 * ((np.asarray(wave)[None, :] - centers[:, None]) / sigma[:, None]) ** 2)


#: Telluric O2 bands (air A): head, e-folding length towards the red (A), optical depth
#: at the head per airmass (the B and A bands at instrumental resolution).
_OXYGEN_BANDS: tuple[tuple[float, float, float], ...] = ((6867.2, 25.0, 0.12), (7594.0, 25.0, 0.45))
#: Broad telluric H2O bands (air A): centre, Gaussian sigma (A), optical depth per airmass
#: for a typical water column.
_WATER_BANDS: tuple[tuple[float, float, float], ...] = ((7250.0, 60.0, 0.05), (8230.0, 80.0, 0.05), (8980.0, 90.0, 0.10))


def telluric_transmission(wave: np.ndarray, airmass: np.ndarray, water: np.ndarray) -> np.ndarray:
    """Telluric transmission at instrumental resolution.

    Parameters
    ----------
    wave : ndarray, shape (n_pix,)
        Observed vacuum wavelength, A.
    airmass : ndarray, shape (n_star,)
    water : ndarray, shape (n_star,)
        Water column relative to a typical night.

    Returns
    -------
    ndarray, shape (n_star, n_pix)
        exp(-airmass (tau_O2 + water tau_H2O)); the O2 bands are sharp-headed and degrade
        to the red, the H2O bands are broad Gaussians.
    """
    from scipy.special import ndtr

    wave = np.asarray(wave, dtype=float)
    tau_o2 = np.zeros_like(wave)
    tau_h2o = np.zeros_like(wave)
    for head_air, length, depth in _OXYGEN_BANDS:
        head = float(air_to_vacuum(head_air))
        sigma = head * np.log(10.0) * LOG_WAVE_STEP * INSTRUMENT_SIGMA_PIX
        distance = wave - head
        ratio = sigma / length
        tau_o2 += depth * np.exp(np.clip(0.5 * ratio**2 - distance / length, -700.0, 50.0)) * ndtr(distance / sigma - ratio)
    for center_air, width, depth in _WATER_BANDS:
        tau_h2o += depth * np.exp(-0.5 * ((wave - float(air_to_vacuum(center_air))) / width) ** 2)
    return np.exp(-np.asarray(airmass)[:, None] * (tau_o2[None, :] + np.asarray(water)[:, None] * tau_h2o[None, :]))


def flux_level_for_snr(snr_g: np.ndarray) -> np.ndarray:
    """Median g-band flux of a star observed at S/N_g, from F^2 / (F / 4.8 + 44) = (S/N)^2."""
    snr = np.asarray(snr_g, dtype=float)
    return 0.5 * (snr**2 / 4.8 + np.sqrt(snr**4 / 4.8**2 + 4.0 * 44.0 * snr**2))
