"""The LAMOST low-resolution wavelength grid and small spectroscopic helpers.

The mock spectra live on the grid of the real LAMOST LRS files (``COEFF0 = 3.5682``,
``COEFF1 = 1e-4``; vacuum wavelengths), so one pixel is a constant velocity step of
``ln(10) * 1e-4 * c = 69.0 km/s`` and a constant resolving power is a constant width in
pixels.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LOG_WAVE_START",
    "LOG_WAVE_STEP",
    "N_PIX",
    "RESOLUTION",
    "SPEED_OF_LIGHT_KM_S",
    "INSTRUMENT_SIGMA_PIX",
    "wavelength_grid",
    "air_to_vacuum",
    "vacuum_to_air",
    "trapezoid",
]

#: log10 of the first wavelength in Angstrom (header keyword COEFF0 of LAMOST LRS files).
LOG_WAVE_START = 3.5682
#: log10 wavelength step per pixel (header keyword COEFF1).
LOG_WAVE_STEP = 1e-4
#: Number of pixels of the mock spectra (the LAMOST DR1 files have 3904).
N_PIX = 3904
#: Resolving power of the LAMOST low-resolution spectrographs, R = lambda / FWHM.
RESOLUTION = 1800.0
#: Speed of light in km/s.
SPEED_OF_LIGHT_KM_S = 299792.458
#: Gaussian sigma of the instrumental profile in pixels: FWHM / 2.3548 with
#: FWHM = 1 / (R ln(10) COEFF1) pixels (2.41 pixels for R = 1800).
INSTRUMENT_SIGMA_PIX = 1.0 / (RESOLUTION * np.log(10.0) * LOG_WAVE_STEP) / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def wavelength_grid(n_pix: int = N_PIX) -> np.ndarray:
    """Return the LAMOST vacuum wavelength grid.

    Parameters
    ----------
    n_pix : int
        Number of pixels.

    Returns
    -------
    ndarray, shape (n_pix,)
        ``10 ** (3.5682 + 1e-4 * i)`` Angstrom, i = 0 ... n_pix - 1.
    """
    if n_pix < 1:
        raise ValueError(f"n_pix must be positive, got {n_pix}.")
    return 10.0 ** (LOG_WAVE_START + LOG_WAVE_STEP * np.arange(n_pix))


def _air_refractive_index(wave_vacuum: np.ndarray) -> np.ndarray:
    """Refractive index of standard air (Morton 2000, ApJS 130, 403, eq. 8)."""
    s2 = (1e4 / wave_vacuum) ** 2
    return 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)


def vacuum_to_air(wave_vacuum: np.ndarray | float) -> np.ndarray:
    """Convert vacuum wavelengths (Angstrom, > 2000) to air (Morton 2000)."""
    wave_vacuum = np.asarray(wave_vacuum, dtype=float)
    return wave_vacuum / _air_refractive_index(wave_vacuum)


def air_to_vacuum(wave_air: np.ndarray | float) -> np.ndarray:
    """Convert air wavelengths (Angstrom, > 2000) to vacuum.

    Inverts :func:`vacuum_to_air` by fixed-point iteration, as was done for the
    shipped line list (see ``LINES.md``).
    """
    wave_air = np.asarray(wave_air, dtype=float)
    wave_vacuum = wave_air.copy()
    for _ in range(6):
        wave_vacuum = wave_air * _air_refractive_index(wave_vacuum)
    return wave_vacuum


def trapezoid(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trapezoidal integral of ``values`` over the last axis (numpy 1.26 and 2.x alike)."""
    values = np.asarray(values, dtype=float)
    return 0.5 * np.sum((values[..., 1:] + values[..., :-1]) * np.diff(x), axis=-1)
