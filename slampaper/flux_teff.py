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
from slamlib.model import PAPER_SECTION3_GRID
from slamlib.scaling import Standardizer
from slamlib.svr.folds import kfold_indices
from slamlib.svr.libsvm import train_pixel
from slamlib.svr.result import parameter_pairs

__all__ = ["FluxTeffSample", "flux_at_wavelengths", "quadratic_in_teff", "cv_mse_quadratic_and_svr",
           "FIGURE1_WAVELENGTHS"]

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


def cv_mse_quadratic_and_svr(labels: np.ndarray, flux: np.ndarray, *, n_folds: int = 5, seed: int = 0,
                             param_grid: dict[str, list[float]] | None = None,
                             epsilon: float = 0.05) -> tuple[float, float]:
    """Cross-validated MSE of the standardized flux for a quadratic in the labels (The Cannon's
    model) and for SLAM's SVR (the best point of ``param_grid``), on the same folds.

    Parameters
    ----------
    labels : ndarray, shape (n_star, n_label)
        E.g. Teff and log g.
    flux : ndarray, shape (n_star,)
        Normalized flux at one pixel.
    n_folds, seed : int
        The CV folds.
    param_grid : dict, optional
        SLAM's grid (default the paper's Section 3 grid).
    epsilon : float

    Returns
    -------
    quadratic_cv_mse, svr_cv_mse : float
        In units of the flux variance (1: the model explains nothing).
    """
    labels_std = Standardizer.fit(np.asarray(labels, float)).transform(np.asarray(labels, float))
    flux = np.asarray(flux, float)
    flux_std = (flux - flux.mean()) / flux.std()
    folds = kfold_indices(flux.size, n_folds, seed)
    columns = [np.ones(flux.size)] + [labels_std[:, i] for i in range(labels_std.shape[1])]
    columns += [labels_std[:, i] * labels_std[:, j] for i in range(labels_std.shape[1]) for j in range(i, labels_std.shape[1])]
    design = np.column_stack(columns)
    predicted = np.empty_like(flux_std)
    for train, test in folds:
        coefficients, *_ = np.linalg.lstsq(design[train], flux_std[train], rcond=None)
        predicted[test] = design[test] @ coefficients
    quadratic = float(np.mean((predicted - flux_std) ** 2))
    pairs = parameter_pairs(PAPER_SECTION3_GRID if param_grid is None else param_grid)
    result = train_pixel(labels_std, flux_std, np.ones(flux.size, bool), folds, pairs, epsilon)
    return quadratic, float(np.min(result["cv_mse_grid"]))
