"""The continuum of a mock spectrum: Planck function, line blanketing, reddening, calibration.

* **Planck function** B_lambda(T_lambda) in the star's rest frame, T_lambda the temperature
  where the continuum at lambda forms (Eddington-Barbier in a grey T(tau) with the star's
  own continuous-opacity ratio kappa_5000 / kappa_lambda, :func:`continuum_temperature_ratio`):
  T_lambda = Teff at 5000 A; hotter (bluer, brighter) where the opacity is lower, e.g.
  blueward of 5000 A and beyond the Paschen edge in A stars.
* **Line blanketing**: the haze of weak metal lines too numerous for the line table
  depresses the blue continuum. Inside 3880-5880 A (:data:`FOREST_RANGE`) those lines are
  synthesized one by one (:mod:`.forest`) and the parametric blanketing is off there;
  it remains outside (3700-3880 A and the red). Its optical depth is a fixed wavelength profile
  (solar blanketing fraction 0.25 exp(-(lambda - 3800 A) / 700 A), i.e. about 25 % at
  3800 A, 14 % at 4200 A, 4 % at 5000 A) scaled by the star's weak-line strength relative
  to the Sun: the line-to-continuum opacity ratio of a representative weak Fe I line
  (4500 A, chi = 2 eV) plus a weak Fe II line (chi = 3 eV), saturating above ten
  times solar, from the same
  Saha-Boltzmann layer as the atomic lines. So it grows with [M/H], towards low Teff
  and low electron pressure (giants), and vanishes in hot stars.
* **Reddening**: Cardelli, Clayton & Mathis (1989, ApJ 345, 245) extinction curve
  with R_V = 3.1.
* **Flux calibration residuals**: LAMOST fluxes are relatively calibrated; a smooth
  multiplicative distortion per star (low-order Legendre polynomial in wavelength plus a
  small bump at the 5700-5900 A dichroic join of the blue and red arms).

Everything here is smooth on the scale of the instrumental resolution, so the
normalized flux ``flux_norm`` is defined relative to the product of all of them.
"""

from __future__ import annotations

import numpy as np

from slamlib.mock.atmosphere import Photosphere
from slamlib.mock.atoms import ELEMENT_INDEX, boltzmann_factor

__all__ = [
    "planck",
    "blanketing_strength",
    "blanketing_transmission",
    "haze_opacity_factor",
    "HAZE_OPACITY",
    "extinction_ccm89",
    "calibration_distortion",
    "continuum_temperature_ratio",
    "forest_coverage",
    "FOREST_RANGE",
]

_HC_OVER_K_ANGSTROM_K = 1.4387769e8
#: Opacity of the weak-line haze per unit blanketing optical depth, relative to the
#: continuous opacity (enters the line-to-continuum ratio of the tabulated lines).
HAZE_OPACITY = 2.0
_FE = ELEMENT_INDEX[26]
_BLANKETING_WAVE = 4500.0


def planck(wave: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """Planck function B_lambda up to a constant factor.

    Parameters
    ----------
    wave : ndarray, shape (n_wave,) or (n_star, n_wave)
        Wavelength in A.
    temperature : ndarray, shape (n_star,) or (n_star, n_wave)
        Temperature in K, one per star or one per star and wavelength.

    Returns
    -------
    ndarray, shape (n_star, n_wave)
        (lambda / 1 micron)^-5 / (exp(h c / lambda k T) - 1).
    """
    temperature = np.asarray(temperature, dtype=float)
    temperature = temperature[:, None] if temperature.ndim == 1 else np.atleast_2d(temperature)
    wave = np.asarray(wave, dtype=float)
    x = _HC_OVER_K_ANGSTROM_K / (wave * temperature)
    return (wave / 1e4) ** -5 / np.expm1(x)


#: Nodes (log10 A) at which the continuous opacity is evaluated for the continuum shape.
_CONTINUUM_LOG_NODES = np.linspace(np.log10(3550.0), np.log10(9350.0), 64)
_CONTINUUM_REFERENCE_WAVE = 5000.0


def continuum_temperature_ratio(layer: Photosphere, wave_rest: np.ndarray) -> np.ndarray:
    """T(tau_lambda = 2/3) / Teff: the temperature of the layer the continuum at lambda comes from.

    Where the continuous opacity is lower than at 5000 A the continuum forms deeper, at
    tau_5000 = (2/3) kappa_5000 / kappa_lambda, and (grey T(tau), Eddington-Barbier) at
    T^4 = 3/4 Teff^4 (tau_5000 + 2/3). The opacity ratio comes from the star's layer
    (:func:`slamlib.mock.atmosphere.continuous_opacity`), evaluated on 64 nodes in log lambda
    and interpolated linearly.

    Parameters
    ----------
    layer : Photosphere
    wave_rest : ndarray, shape (n_star, n_wave)
        Rest-frame wavelength, A (3550-9350 A).

    Returns
    -------
    ndarray, shape (n_star, n_wave)
    """
    nodes = 10.0**_CONTINUUM_LOG_NODES
    kappa = layer.continuous_opacity(np.append(nodes, _CONTINUUM_REFERENCE_WAVE))
    ratio_nodes = (0.75 * (2.0 / 3.0) * (kappa[:, -1:] / kappa[:, :-1] + 1.0)) ** 0.25  # (n_star, n_node)
    step = _CONTINUUM_LOG_NODES[1] - _CONTINUUM_LOG_NODES[0]
    position = np.clip((np.log10(wave_rest) - _CONTINUUM_LOG_NODES[0]) / step, 0.0, _CONTINUUM_LOG_NODES.size - 1.000001)
    left = position.astype(int)
    weight = position - left
    rows = np.arange(wave_rest.shape[0])[:, None]
    return ratio_nodes[rows, left] * (1.0 - weight) + ratio_nodes[rows, left + 1] * weight


def _weak_line_opacity(layer: Photosphere) -> np.ndarray:
    """Opacity ratio of a representative weak Fe I + Fe II line (arbitrary units)."""
    temperature = layer.temperature
    abundance = 10.0 ** (layer.log_eps[:, _FE] - 12.0)
    neutral = layer.ion_fractions[:, _FE, 0] * boltzmann_factor(temperature, 2.0) / layer.partition[:, _FE, 0]
    ion = layer.ion_fractions[:, _FE, 1] * boltzmann_factor(temperature, 3.0) / layer.partition[:, _FE, 1]
    kappa = layer.continuous_opacity(np.array([_BLANKETING_WAVE]))[:, 0]
    return abundance * (neutral + 0.3 * ion) / kappa


_SOLAR_REFERENCE: float | None = None


def _solar_weak_line_opacity() -> float:
    global _SOLAR_REFERENCE
    if _SOLAR_REFERENCE is None:
        from slamlib.mock.atmosphere import photosphere
        from slamlib.mock.atoms import log_abundances

        zero = np.zeros(1)
        sun = photosphere(np.array([5772.0]), np.array([4.44]), log_abundances(zero, zero, zero, zero))
        _SOLAR_REFERENCE = float(_weak_line_opacity(sun)[0])
    return _SOLAR_REFERENCE


def blanketing_strength(layer: Photosphere) -> np.ndarray:
    """Weak-line (blanketing) strength of each star relative to the Sun, shape (n_star,).

    The ratio r of the weak-line opacities saturates as r / (1 + r / 10): the haze lines
    themselves saturate in the coolest, most metal-rich stars.
    """
    ratio = _weak_line_opacity(layer) / _solar_weak_line_opacity()
    return ratio / (1.0 + ratio / 10.0) * 1.1


#: Wavelength range (A, rest frame) where the line forest of :mod:`slamlib.mock.forest` is
#: synthesized line by line; the parametric blanketing is switched off inside it (with
#: 40-A tapers at both ends), since the forest lines are that blanketing.
FOREST_RANGE = (3880.0, 5880.0)
_FOREST_TAPER = 40.0


def forest_coverage(wave_rest: np.ndarray) -> np.ndarray:
    """1 inside :data:`FOREST_RANGE`, 0 well outside, smooth (logistic, 40-A scale) in between."""
    wave_rest = np.asarray(wave_rest, dtype=float)
    low, high = FOREST_RANGE
    with np.errstate(over="ignore"):
        blue = 1.0 / (1.0 + np.exp(-(wave_rest - low) / (0.25 * _FOREST_TAPER)))
        red = 1.0 / (1.0 + np.exp((wave_rest - high) / (0.25 * _FOREST_TAPER)))
    return blue * red


def _solar_blanketing_depth(wave_rest: np.ndarray) -> np.ndarray:
    solar_fraction = np.clip(0.25 * np.exp(-(np.asarray(wave_rest, dtype=float) - 3800.0) / 700.0), 0.0, 0.6)
    return -np.log1p(-solar_fraction)


def haze_opacity_factor(layer: Photosphere, wave: np.ndarray) -> np.ndarray:
    """(kappa_c + kappa_haze) / kappa_c at ``wave`` (A), shape (n_star, n_wave).

    The unresolved weak-line haze adds an opacity HAZE_OPACITY * strength * tau_sun(lambda)
    times kappa_c, with the same strength and wavelength profile as the blanketing.
    """
    return 1.0 + HAZE_OPACITY * blanketing_strength(layer)[:, None] * _solar_blanketing_depth(wave)[None, :]


def blanketing_transmission(wave_rest: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Fraction of the continuum left by the unresolved line haze.

    Parameters
    ----------
    wave_rest : ndarray, shape (n_star, n_wave)
        Rest-frame wavelength, A.
    strength : ndarray, shape (n_star,)
        From :func:`blanketing_strength`.

    Returns
    -------
    ndarray, shape (n_star, n_wave)
        exp(-strength * tau_sun(lambda) * (1 - forest_coverage(lambda))),
        tau_sun = -ln(1 - 0.25 exp(-(lambda - 3800) / 700)): outside the forest range only.
    """
    outside_forest = 1.0 - forest_coverage(wave_rest)
    return np.exp(-np.asarray(strength)[:, None] * _solar_blanketing_depth(wave_rest) * outside_forest)


def extinction_ccm89(wave: np.ndarray, r_v: float = 3.1) -> np.ndarray:
    """A_lambda / E(B-V) of Cardelli, Clayton & Mathis (1989) for 0.3 < x < 3.3 micron^-1.

    Parameters
    ----------
    wave : ndarray
        Wavelength in A (3030-33000 A).
    r_v : float

    Returns
    -------
    ndarray
        A_lambda / E(B-V) = R_V (a(x) + b(x) / R_V).
    """
    x = 1e4 / np.asarray(wave, dtype=float)
    if np.any((x < 0.3) | (x > 3.3)):
        raise ValueError("extinction_ccm89 covers 3030-33000 A only.")
    y = x - 1.82
    a_optical = np.polynomial.polynomial.polyval(
        y, [1.0, 0.17699, -0.50447, -0.02427, 0.72085, 0.01979, -0.77530, 0.32999]
    )
    b_optical = np.polynomial.polynomial.polyval(
        y, [0.0, 1.41338, 2.28305, 1.07233, -5.38434, -0.62251, 5.30260, -2.09002]
    )
    a_infrared = 0.574 * x**1.61
    b_infrared = -0.527 * x**1.61
    optical = x >= 1.1
    a = np.where(optical, a_optical, a_infrared)
    b = np.where(optical, b_optical, b_infrared)
    return r_v * (a + b / r_v)


def calibration_distortion(wave: np.ndarray, coefficients: np.ndarray, dichroic: np.ndarray) -> np.ndarray:
    """Smooth multiplicative flux-calibration residual of each star.

    Parameters
    ----------
    wave : ndarray, shape (n_wave,)
        Observed wavelength, A.
    coefficients : ndarray, shape (n_star, n_coeff)
        Coefficients of Legendre polynomials P_1 ... P_n in the scaled wavelength
        u = (lambda - 6400) / 2700, applied in log flux.
    dichroic : ndarray, shape (n_star,)
        Amplitude of a Gaussian bump (sigma 80 A) at the 5800 A dichroic join.

    Returns
    -------
    ndarray, shape (n_star, n_wave)
    """
    u = np.clip((np.asarray(wave, dtype=float) - 6400.0) / 2700.0, -1.0, 1.0)
    legendre = np.polynomial.legendre.legvander(u, coefficients.shape[1])[:, 1:]  # (n_wave, n_coeff)
    # Explicit sum rather than a matrix product: BLAS results may depend on the batch size.
    log_distortion = np.zeros((coefficients.shape[0], u.size))
    for k in range(coefficients.shape[1]):
        log_distortion += coefficients[:, k : k + 1] * legendre[None, :, k]
    bump = np.exp(-0.5 * ((wave - 5800.0) / 80.0) ** 2)
    return np.exp(log_distortion + dichroic[:, None] * bump[None, :])
