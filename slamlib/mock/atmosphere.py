"""A one-layer photosphere: temperature, pressures, ionization and continuous opacity.

The mock does not integrate model atmospheres. Each star is represented by one
"line-forming layer" at continuum optical depth ``TAU_LAYER`` of a grey atmosphere,
T^4 = 3/4 Teff^4 (tau + 2/3), where

* the electron pressure P_e and gas pressure P_g follow from hydrostatic equilibrium
  P_g = g tau / kappa (kappa the continuous mass opacity at 5000 A, which itself depends
  on P_e through H-) together with charge conservation (electrons from the Saha
  ionization of all elements in :mod:`slamlib.mock.atoms`), solved by bisection in
  log P_e; so P_e and P_g scale with log g, Teff and metallicity as in real
  photospheres (P_e roughly proportional to g^(1/2) in cool stars);
* the continuous opacity per hydrogen nucleus is the sum of H- bound-free and
  free-free, neutral-hydrogen bound-free and free-free, Rayleigh scattering by H and
  Thomson scattering by free electrons, with the formulas of Gray (2005), *The
  Observation and Analysis of Stellar Photospheres*, 3rd ed., Chapter 8
  (eqs. 8.8, 8.10-8.13, 8.15).

Metal bound-free opacity, He- and molecular continua are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slamlib.mock.atoms import (
    ELEMENT_INDEX,
    MASSES_AMU,
    THETA_CONSTANT,
    ionization_fractions,
    partition_functions,
)

__all__ = ["TAU_LAYER", "Photosphere", "photosphere", "continuous_opacity", "layer_temperature"]

#: Continuum optical depth of the representative line-forming layer.
TAU_LAYER = 0.3
#: Reference wavelength (A) of the continuous opacity used in hydrostatic equilibrium.
REFERENCE_WAVELENGTH = 5000.0

_BOLTZMANN_CGS = 1.380649e-16
_ATOMIC_MASS_G = 1.66053907e-24
_THOMSON_CM2 = 6.6524587e-25
_HYDROGEN_IONIZATION_EV = 13.598
# Gray (2005) eq. 8.11: H- bound-free cross-section polynomial, lambda in A, result in 1e-18 cm^2.
_HMINUS_BF_COEFFS = (1.99654, -1.18267e-5, 2.64243e-6, -4.40524e-10, 3.23992e-14, -1.39568e-18, 2.78701e-23)
_H = ELEMENT_INDEX[1]


def layer_temperature(teff: np.ndarray) -> np.ndarray:
    """Temperature of the line-forming layer, T = Teff (3/4 (TAU_LAYER + 2/3))^(1/4)."""
    return np.asarray(teff, dtype=float) * (0.75 * (TAU_LAYER + 2.0 / 3.0)) ** 0.25


@dataclass(frozen=True)
class Photosphere:
    """State of the line-forming layer of each star (all arrays shape (n_star, ...)).

    Attributes
    ----------
    teff, logg : ndarray, shape (n_star,)
    temperature : ndarray, shape (n_star,)
        Layer temperature in K.
    electron_pressure, gas_pressure : ndarray, shape (n_star,)
        dyn cm^-2.
    log_eps : ndarray, shape (n_star, n_elem)
        Abundances, log eps.
    ion_fractions : ndarray, shape (n_star, n_elem, 3)
        Saha fractions of stages I, II, III.
    partition : ndarray, shape (n_star, n_elem, 3)
        Partition functions.
    electrons_per_h : ndarray, shape (n_star,)
        Free electrons per hydrogen nucleus.
    hydrogen_density : ndarray, shape (n_star,)
        Hydrogen nuclei per cm^3.
    electron_density : ndarray, shape (n_star,)
        Free electrons per cm^3.
    perturber_pressure : ndarray, shape (n_star,)
        Partial pressure of neutral H and He, the van der Waals perturbers.
    """

    teff: np.ndarray
    logg: np.ndarray
    temperature: np.ndarray
    electron_pressure: np.ndarray
    gas_pressure: np.ndarray
    log_eps: np.ndarray
    ion_fractions: np.ndarray
    partition: np.ndarray
    electrons_per_h: np.ndarray
    hydrogen_density: np.ndarray
    electron_density: np.ndarray
    perturber_pressure: np.ndarray

    @property
    def theta(self) -> np.ndarray:
        """5040 / T."""
        return THETA_CONSTANT / self.temperature

    @property
    def neutral_hydrogen_fraction(self) -> np.ndarray:
        """N(H I) / N(H)."""
        return self.ion_fractions[:, _H, 0]

    def continuous_opacity(self, wave: np.ndarray) -> np.ndarray:
        """Continuous opacity per H nucleus (cm^2) at ``wave`` (A), shape (n_star, n_wave)."""
        return continuous_opacity(
            self.temperature, self.electron_pressure, self.neutral_hydrogen_fraction, self.electrons_per_h, wave
        )


def continuous_opacity(
    temperature: np.ndarray,
    electron_pressure: np.ndarray,
    neutral_hydrogen_fraction: np.ndarray,
    electrons_per_h: np.ndarray,
    wave: np.ndarray,
) -> np.ndarray:
    """Continuous absorption plus scattering per hydrogen nucleus.

    Parameters
    ----------
    temperature, electron_pressure, neutral_hydrogen_fraction, electrons_per_h : ndarray, shape (n_star,)
    wave : ndarray, shape (n_wave,) or (n_star, n_wave)
        Wavelength in A (valid for 2250-15000 A).

    Returns
    -------
    ndarray, shape (n_star, n_wave)
        kappa in cm^2 per H nucleus.
    """
    temperature = np.atleast_1d(np.asarray(temperature, dtype=float))[:, None]
    electron_pressure = np.atleast_1d(np.asarray(electron_pressure, dtype=float))[:, None]
    lam = np.asarray(wave, dtype=float)
    if lam.ndim == 1:
        lam = lam[None, :]
    theta = THETA_CONSTANT / temperature
    stimulated = 1.0 - 10.0 ** (-(12398.42 / lam) * theta)

    # H- bound-free (eqs. 8.11, 8.12): cross-section times N(H-)/N(H I) from the Saha equation.
    alpha_bf = np.zeros_like(lam)
    for power, coefficient in enumerate(_HMINUS_BF_COEFFS):
        alpha_bf = alpha_bf + coefficient * lam**power
    alpha_bf = np.clip(alpha_bf, 0.0, None) * 1e-18
    hminus_bf = 4.158e-10 * alpha_bf * electron_pressure * theta**2.5 * 10.0 ** (0.754 * theta) * stimulated

    # H- free-free (eq. 8.13).
    log_lam = np.log10(lam)
    f0 = -2.2763 - 1.6850 * log_lam + 0.76661 * log_lam**2 - 0.053346 * log_lam**3
    f1 = 15.2827 - 9.2846 * log_lam + 1.99381 * log_lam**2 - 0.142631 * log_lam**3
    f2 = -197.789 + 190.266 * log_lam - 67.9775 * log_lam**2 + 10.6913 * log_lam**3 - 0.625151 * log_lam**4
    log_theta = np.log10(theta)
    hminus_ff = 1e-26 * electron_pressure * 10.0 ** (f0 + f1 * log_theta + f2 * log_theta**2)

    # Neutral hydrogen bound-free from the three lowest levels that can be ionized,
    # plus the integral over higher levels, and free-free (eqs. 8.8, 8.10), g = 1.
    alpha0 = 1.0449e-26 * lam**3
    ionization = _HYDROGEN_IONIZATION_EV
    n_lowest = np.floor(np.sqrt(lam / 911.27)) + 1.0
    hydrogen_bf = np.zeros(np.broadcast_shapes(theta.shape, lam.shape))
    for level in range(1, 9):
        included = (level >= n_lowest) & (level <= n_lowest + 2)
        chi_level = ionization * (1.0 - 1.0 / level**2)
        hydrogen_bf = hydrogen_bf + np.where(included, 10.0 ** (-theta * chi_level) / level**3, 0.0)
    chi_next = ionization * (1.0 - 1.0 / (n_lowest + 3.0) ** 2)
    tail = np.log10(np.e) / (2.0 * theta * ionization) * (10.0 ** (-theta * chi_next) - 10.0 ** (-theta * ionization))
    hydrogen_bf = alpha0 * (hydrogen_bf + tail) * stimulated
    hydrogen_ff = alpha0 * np.log10(np.e) / (2.0 * theta * ionization) * 10.0 ** (-theta * ionization) * stimulated

    rayleigh = 5.799e-13 / lam**4 + 1.422e-6 / lam**6 + 2.784 / lam**8  # eq. 8.15

    per_neutral_h = hminus_bf + hminus_ff + hydrogen_bf + hydrogen_ff + rayleigh
    neutral = np.atleast_1d(np.asarray(neutral_hydrogen_fraction, dtype=float))[:, None]
    electrons = np.atleast_1d(np.asarray(electrons_per_h, dtype=float))[:, None]
    return neutral * per_neutral_h + _THOMSON_CM2 * electrons


def _electrons_per_h(abundance: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    return np.sum(abundance * (fractions[:, :, 1] + 2.0 * fractions[:, :, 2]), axis=1)


def photosphere(teff: np.ndarray, logg: np.ndarray, log_eps: np.ndarray, *, n_iter: int = 48) -> Photosphere:
    """Solve the line-forming layer of each star.

    Parameters
    ----------
    teff, logg : ndarray, shape (n_star,)
        Effective temperature (K) and log10 surface gravity (cgs).
    log_eps : ndarray, shape (n_star, n_elem)
        Abundances from :func:`slamlib.mock.atoms.log_abundances`.
    n_iter : int
        Bisection steps in log P_e (48 halve a 12-dex bracket far below 1e-6 dex).

    Returns
    -------
    Photosphere
    """
    teff = np.atleast_1d(np.asarray(teff, dtype=float))
    logg = np.atleast_1d(np.asarray(logg, dtype=float))
    temperature = layer_temperature(teff)
    abundance = 10.0 ** (log_eps - 12.0)
    mass_per_h = np.sum(abundance * MASSES_AMU[None, :], axis=1) * _ATOMIC_MASS_G
    nuclei_per_h = np.sum(abundance, axis=1)
    gravity = 10.0**logg
    reference = np.array([REFERENCE_WAVELENGTH])

    def pressures(log_pe: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        electron_pressure = 10.0**log_pe
        fractions = ionization_fractions(temperature, electron_pressure)
        electrons = _electrons_per_h(abundance, fractions)
        kappa = continuous_opacity(temperature, electron_pressure, fractions[:, _H, 0], electrons, reference)[:, 0]
        gas_pressure = gravity * TAU_LAYER * mass_per_h / kappa
        model_pe = gas_pressure * electrons / (nuclei_per_h + electrons)
        return model_pe, gas_pressure, fractions

    low = np.full(teff.shape, -6.0)
    high = np.full(teff.shape, 7.0)
    for _ in range(n_iter):
        middle = 0.5 * (low + high)
        model_pe, _, _ = pressures(middle)
        too_low = np.log10(model_pe) > middle  # the model wants more electrons: root lies above
        low = np.where(too_low, middle, low)
        high = np.where(too_low, high, middle)
    log_pe = 0.5 * (low + high)
    electron_pressure = 10.0**log_pe
    _, gas_pressure, fractions = pressures(log_pe)
    electrons = _electrons_per_h(abundance, fractions)
    kt = _BOLTZMANN_CGS * temperature
    electron_density = electron_pressure / kt
    hydrogen_density = (gas_pressure / kt - electron_density) / nuclei_per_h
    helium = abundance[:, ELEMENT_INDEX[2]]
    perturber_pressure = gas_pressure * (fractions[:, _H, 0] + helium) / (nuclei_per_h + electrons)
    return Photosphere(
        teff=teff,
        logg=logg,
        temperature=temperature,
        electron_pressure=electron_pressure,
        gas_pressure=gas_pressure,
        log_eps=log_eps,
        ion_fractions=fractions,
        partition=partition_functions(temperature),
        electrons_per_h=electrons,
        hydrogen_density=hydrogen_density,
        electron_density=electron_density,
        perturber_pressure=perturber_pressure,
    )
