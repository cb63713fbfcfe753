"""A synthetic but realistic training set for the SVR training benchmark.

Not real or mock-survey data: 1901-pixel continuum-normalized spectra made from a smooth
analytic model of absorption lines whose depths and widths depend nonlinearly on three
labels (Teff, log g, [M/H]), plus Gaussian noise at a given S/N. It is meant to give the
SVR solvers the same kind of problem as LAMOST spectra do (many weak metal lines whose
strength grows with [M/H] and falls with Teff, a few strong pressure-broadened lines, Balmer
lines that grow with Teff), so that timings and the numbers of support vectors are
representative. The flux is standardized per pixel exactly as ``SlamModel.fit`` does.
"""

from __future__ import annotations

import numpy as np

from slamlib.scaling import Standardizer

__all__ = ["make_training_set"]


def sample_labels(n_star: int, rng: np.random.Generator) -> np.ndarray:
    """Teff, log g, [M/H] of a mix of dwarfs and giants (a rough LAMOST-like distribution)."""
    giant = rng.random(n_star) < 0.35
    teff = np.where(giant, rng.normal(4800.0, 300.0, n_star), rng.uniform(4300.0, 6900.0, n_star))
    logg = np.where(giant, 2.6 + 0.6 * (teff - 4800.0) / 600.0 + rng.normal(0, 0.35, n_star),
                    4.6 - 0.5 * (teff - 4300.0) / 2600.0 + rng.normal(0, 0.15, n_star))
    m_h = np.clip(rng.normal(-0.3, 0.35, n_star), -2.0, 0.5)
    return np.column_stack([np.clip(teff, 4000.0, 7000.0), np.clip(logg, 0.5, 5.0), m_h])


def _line_list(n_pix: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n_line = max(4, int(0.12 * n_pix))
    return {
        "centre": np.sort(rng.uniform(0, n_pix, n_line)),
        "strength": 10 ** rng.uniform(-2.0, 0.0, n_line),      # log gf-like
        "excitation": rng.uniform(0.0, 5.0, n_line),            # eV
        "ionized": rng.random(n_line) < 0.2,
        "width": rng.uniform(1.0, 2.2, n_line),                 # pixels (instrumental + thermal)
        "damping": rng.uniform(0.0, 1.0, n_line),
    }


def spectra(labels: np.ndarray, n_pix: int, line_seed: int = 12345) -> np.ndarray:
    """Noiseless normalized flux (n_star, n_pix) of labels (n_star, 3) = (Teff, log g, [M/H])."""
    rng = np.random.default_rng(line_seed)
    lines = _line_list(n_pix, rng)
    teff, logg, m_h = (labels[:, k][:, None] for k in range(3))
    theta = 5040.0 / teff
    # Boltzmann/Saha-like opacity: neutral lines strengthen towards cool stars (more so for low
    # excitation), ionized lines weaken with log g.
    ionized = lines["ionized"][None, :]
    log_tau = (np.log10(lines["strength"])[None, :] + m_h
               + np.where(ionized, -0.5 * (theta - 0.9) * lines["excitation"][None, :] - 0.35 * (logg - 3.5),
                          3.0 * (theta - 0.9) * (1.0 - 0.15 * lines["excitation"][None, :])))
    tau0 = 10 ** np.clip(log_tau, -6, 3)
    # Pressure broadening grows with log g for strong lines.
    sigma = lines["width"][None, :] * (1.0 + 0.15 * lines["damping"][None, :] * (logg - 1.0) * np.log1p(tau0))
    pixel = np.arange(n_pix, dtype=float)
    opacity = np.zeros((labels.shape[0], n_pix))
    for k in range(lines["centre"].size):
        lo, hi = int(max(0, lines["centre"][k] - 25)), int(min(n_pix, lines["centre"][k] + 26))
        profile = np.exp(-0.5 * ((pixel[None, lo:hi] - lines["centre"][k]) / sigma[:, [k]]) ** 2)
        opacity[:, lo:hi] += tau0[:, [k]] * profile
    # Two broad Balmer-like lines whose strength rises steeply with Teff.
    for centre, width in ((0.22 * n_pix, 18.0), (0.71 * n_pix, 12.0)):
        depth = 0.6 / (1.0 + np.exp(-(teff - 5600.0) / 500.0))
        wing = width * (1.0 + 0.2 * (logg - 3.0) / 2.0)
        opacity += depth * np.exp(-np.abs(pixel[None, :] - centre) / wing)
    # Curve of growth-like saturation, and a smooth molecular-band-like term in cool stars.
    flux = np.exp(-opacity)
    band = 0.05 * np.exp(-(teff - 4000.0) / 400.0) * (1 + np.sin(pixel[None, :] / 37.0)) / 2
    return flux * (1.0 - band)


def make_training_set(n_star: int = 2000, n_pix: int = 1901, snr: float = 130.0, bad_fraction: float = 0.002,
                      seed: int = 0):
    """Standardized labels and flux, the good mask, and the physical labels.

    Returns
    -------
    labels_std : ndarray (n_star, 3)
    flux_std : ndarray (n_star, n_pix)
        Standardized flux, 0 where the pixel is bad.
    good : ndarray of bool (n_star, n_pix)
    labels : ndarray (n_star, 3)
        Physical labels (Teff, log g, [M/H]).
    """
    rng = np.random.default_rng(seed)
    labels = sample_labels(n_star, rng)
    flux = spectra(labels, n_pix)
    flux = flux + rng.normal(0.0, 1.0, flux.shape) * flux / snr
    good = rng.random(flux.shape) >= bad_fraction
    # A few bad columns (e.g. a bad CCD column / sky line residual) in a fraction of stars.
    for column in rng.choice(n_pix, size=max(1, n_pix // 200), replace=False):
        good[rng.random(n_star) < 0.3, column] = False
    flux_scaler = Standardizer.fit(flux, good=good)
    flux_std = np.where(good, flux_scaler.transform(np.where(good, flux, 0.0)), 0.0)
    label_scaler = Standardizer.fit(labels)
    return label_scaler.transform(labels), flux_std, good, labels
