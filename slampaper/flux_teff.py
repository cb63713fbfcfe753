"""Figure 1 of the paper: normalized flux at one wavelength is a non-linear function of Teff.

Noiseless mock spectra (standing in for the paper's PHOENIX/ATLAS9 synthetic spectra) over
3000-15000 K and a range of log g, read at the Mg b (5174 A) and H-alpha (6564 A) pixels, and a
quadratic polynomial in Teff fitted to each, to show that a quadratic model falls short over
such a wide range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from slamlib import mock

__all__ = ["FluxTeffSample", "flux_at_wavelengths", "quadratic_in_teff", "FIGURE1_WAVELENGTHS"]

#: The two wavelengths of Figure 1 (vacuum Angstrom).
FIGURE1_WAVELENGTHS = {"Mg b": 5174.0, "H alpha": 6564.0}


@dataclass(frozen=True)
class FluxTeffSample:
    """Labels and the normalized noiseless flux at a few wavelengths.

    Attributes
    ----------
    labels : Table
        ``teff``, ``logg``, ``m_h`` of each star.
    flux : dict of str to ndarray, shape (n_star,)
        Normalized flux at the pixel nearest each wavelength.
    wavelengths : dict of str to float
    """

    labels: Table
    flux: dict[str, np.ndarray]
    wavelengths: dict[str, float]


def flux_at_wavelengths(
    n_star: int,
    *,
    teff_range: tuple[float, float] = (3000.0, 15000.0),
    logg_range: tuple[float, float] = (1.0, 5.0),
    m_h: float = 0.0,
    wavelengths: dict[str, float] | None = None,
    seed: int = 0,
) -> FluxTeffSample:
    """Synthesize noiseless solar-metallicity spectra on a random (Teff, log g) grid and read
    the normalized flux at the given wavelengths."""
    if n_star < 10:
        raise ValueError(f"n_star must be at least 10, got {n_star}.")
    wavelengths = dict(FIGURE1_WAVELENGTHS if wavelengths is None else wavelengths)
    rng = np.random.default_rng(seed)
    labels = Table({"teff": rng.uniform(*teff_range, n_star), "logg": rng.uniform(*logg_range, n_star),
                    "m_h": np.full(n_star, float(m_h))})
    spectra = mock.synthesize(labels, seed=seed, noiseless=True)
    flux = {name: spectra.flux_norm[:, int(np.argmin(np.abs(spectra.wave - wavelength)))]
            for name, wavelength in wavelengths.items()}
    return FluxTeffSample(labels, flux, wavelengths)


def quadratic_in_teff(teff: np.ndarray, flux: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares quadratic ``flux(Teff)``; returns the coefficients (highest power first,
    Teff in units of 1000 K) and the rms residual."""
    scaled = np.asarray(teff, float) / 1000.0
    coefficients = np.polyfit(scaled, flux, 2)
    residual = flux - np.polyval(coefficients, scaled)
    return coefficients, float(np.sqrt(np.mean(residual**2)))
