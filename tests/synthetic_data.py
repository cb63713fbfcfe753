"""Tiny synthetic training sets with a known nonlinear flux-label relation, made by the tests.

None of this is real or mock-survey data: flux is an analytic function of three labels
(a shifting, deepening absorption line plus a smooth nonlinear term), so a model that
works must recover held-back labels.
"""

from __future__ import annotations

import numpy as np

LABEL_CENTRE = np.array([5500.0, 3.0, -0.5])
LABEL_HALF_RANGE = np.array([1000.0, 1.0, 0.5])
LABEL_NAMES = ["teff", "logg", "m_h"]


def true_flux(labels: np.ndarray, n_pix: int = 40) -> np.ndarray:
    """Noiseless normalized flux, shape (n_star, n_pix), for labels (n_star, 3)."""
    scaled = (np.atleast_2d(labels) - LABEL_CENTRE) / LABEL_HALF_RANGE
    position = np.linspace(0.0, 1.0, n_pix)[None, :]
    line = 0.3 * (1 + 0.3 * scaled[:, [2]]) * np.exp(-((position - 0.5 - 0.1 * scaled[:, [0]]) ** 2) / 0.01)
    return 1.0 - line + 0.05 * np.sin(3 * scaled[:, [1]] + 10 * position)


def make_data(n_star: int = 200, n_pix: int = 40, noise: float = 0.01, rng: np.random.Generator | None = None):
    """Labels (n_star, 3), flux and ivar (n_star, n_pix) with Gaussian noise of std ``noise``."""
    rng = np.random.default_rng(0) if rng is None else rng
    labels = LABEL_CENTRE + LABEL_HALF_RANGE * rng.uniform(-1, 1, (n_star, 3))
    flux = true_flux(labels, n_pix) + rng.normal(0.0, noise, (n_star, n_pix))
    ivar = np.full_like(flux, 1.0 / noise**2)
    return labels, flux, ivar
