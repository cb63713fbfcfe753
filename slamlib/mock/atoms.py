"""Atomic data and the Saha-Boltzmann equations for the mock spectra.

Contents
--------
* Solar abundances of Asplund, Grevesse, Sauval & Scott (2009, ARA&A 47, 481,
  Table 1, photospheric values), as log eps = log10(N_X / N_H) + 12.
* First and second ionization energies (NIST Atomic Spectra Database, rounded to
  meV). Cu, Zn, Ce and Nd (Asplund et al. 2009 photospheric abundances 4.19, 4.56, 1.58,
  1.42) are there for the lines of the dense forest list only.
* Simple partition functions: U(T) is interpolated linearly in log U - log T
  between rounded values at 5000 K and 10000 K (approximations within roughly 30 %
  of standard tabulations such as Gray 2005, *The Observation and Analysis of
  Stellar Photospheres*, Appendix D; good enough for a mock, not for abundance work).
* Saha ionization fractions for three stages and Boltzmann level populations.

Label-dependent abundances: every element scales with [M/H]; the alpha elements
(O, Mg, Si, Ca, Ti) also follow [alpha/M]; C and N follow their own [C/M] and
[N/M]. Hydrogen and helium do not scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "ELEMENTS",
    "ELEMENT_INDEX",
    "ALPHA_ELEMENTS",
    "BOLTZMANN_EV",
    "ElementData",
    "log_abundances",
    "partition_functions",
    "saha_ratio",
    "ionization_fractions",
    "boltzmann_factor",
]

#: Boltzmann constant in eV/K.
BOLTZMANN_EV = 8.617333262e-5
#: theta = THETA_CONSTANT / T converts eV to log10 Boltzmann factors: 10**(-theta * chi).
THETA_CONSTANT = 5039.78


@dataclass(frozen=True)
class ElementData:
    """Per-element constants used by the synthesis.

    Attributes
    ----------
    symbol : str
    atomic_number : int
    mass_amu : float
    log_eps_sun : float
        Asplund et al. (2009) photospheric abundance.
    ionization_ev : tuple of float
        First and second ionization energies in eV.
    partition_5000, partition_10000 : tuple of float
        Partition functions of stages I, II, III at 5000 K and 10000 K.
    """

    symbol: str
    atomic_number: int
    mass_amu: float
    log_eps_sun: float
    ionization_ev: tuple[float, float]
    partition_5000: tuple[float, float, float]
    partition_10000: tuple[float, float, float]


_INF = float("inf")

#: All elements the mock knows: the species of the line list, the molecule formers
#: and the main electron donors.
ELEMENTS: tuple[ElementData, ...] = (
    ElementData("H", 1, 1.008, 12.00, (13.598, _INF), (2.0, 1.0, 1.0), (2.0, 1.0, 1.0)),
    ElementData("He", 2, 4.003, 10.93, (24.587, 54.418), (1.0, 2.0, 1.0), (1.0, 2.0, 1.0)),
    ElementData("C", 6, 12.011, 8.43, (11.260, 24.383), (9.3, 5.9, 1.0), (10.4, 6.0, 1.0)),
    ElementData("N", 7, 14.007, 7.83, (14.534, 29.601), (4.0, 8.9, 5.8), (4.5, 9.3, 6.0)),
    ElementData("O", 8, 15.999, 8.69, (13.618, 35.121), (8.7, 4.0, 8.9), (9.3, 4.0, 9.3)),
    ElementData("Na", 11, 22.990, 6.24, (5.139, 47.286), (2.0, 1.0, 6.0), (4.0, 1.0, 6.0)),
    ElementData("Mg", 12, 24.305, 7.60, (7.646, 15.035), (1.0, 2.0, 1.0), (1.5, 2.1, 1.0)),
    ElementData("Al", 13, 26.982, 6.45, (5.986, 18.829), (5.8, 1.0, 2.0), (6.3, 1.0, 2.0)),
    ElementData("Si", 14, 28.085, 7.51, (8.152, 16.346), (9.4, 5.6, 1.0), (12.0, 6.0, 1.0)),
    ElementData("K", 19, 39.098, 5.03, (4.341, 31.625), (2.0, 1.0, 6.0), (5.0, 1.0, 6.0)),
    ElementData("Ca", 20, 40.078, 6.34, (6.113, 11.872), (1.2, 2.1, 1.0), (4.0, 2.6, 1.0)),
    ElementData("Sc", 21, 44.956, 3.15, (6.561, 12.800), (9.5, 19.0, 10.0), (20.0, 30.0, 10.0)),
    ElementData("Ti", 22, 47.867, 4.95, (6.828, 13.576), (28.0, 50.0, 21.0), (70.0, 90.0, 25.0)),
    ElementData("V", 23, 50.942, 3.93, (6.746, 14.618), (30.0, 28.0, 28.0), (80.0, 55.0, 30.0)),
    ElementData("Cr", 24, 51.996, 5.64, (6.767, 16.486), (9.0, 6.5, 25.0), (25.0, 12.0, 30.0)),
    ElementData("Mn", 25, 54.938, 5.43, (7.434, 15.640), (6.3, 7.5, 6.0), (12.0, 10.0, 8.0)),
    ElementData("Fe", 26, 55.845, 7.50, (7.902, 16.199), (27.0, 42.0, 25.0), (85.0, 70.0, 35.0)),
    ElementData("Co", 27, 58.933, 4.99, (7.881, 17.084), (30.0, 22.0, 28.0), (55.0, 40.0, 35.0)),
    ElementData("Ni", 28, 58.693, 6.22, (7.640, 18.169), (28.0, 10.0, 21.0), (40.0, 14.0, 25.0)),
    ElementData("Sr", 38, 87.620, 2.87, (5.695, 11.030), (1.0, 2.0, 1.0), (4.0, 2.5, 1.0)),
    ElementData("Y", 39, 88.906, 2.21, (6.217, 12.224), (10.0, 13.0, 10.0), (30.0, 25.0, 10.0)),
    ElementData("Zr", 40, 91.224, 2.58, (6.634, 13.130), (30.0, 40.0, 20.0), (100.0, 80.0, 30.0)),
    ElementData("Ba", 56, 137.327, 2.18, (5.212, 10.004), (2.0, 3.5, 1.0), (12.0, 6.0, 1.0)),
    # Elements with lines only in the dense forest list (forest.csv.gz): partition functions
    # are rough (Cu, Zn from their lowest levels; Ce, Nd order-of-magnitude values).
    ElementData("Cu", 29, 63.546, 4.19, (7.726, 20.292), (2.4, 1.0, 9.5), (4.0, 1.6, 10.5)),
    ElementData("Zn", 30, 65.38, 4.56, (9.394, 17.964), (1.0, 2.0, 1.0), (1.0, 2.0, 1.0)),
    ElementData("Ce", 58, 140.116, 1.58, (5.539, 10.956), (100.0, 150.0, 40.0), (300.0, 400.0, 80.0)),
    ElementData("Nd", 60, 144.242, 1.42, (5.525, 10.783), (40.0, 70.0, 50.0), (150.0, 250.0, 100.0)),
)

#: Position of each element (by atomic number) in :data:`ELEMENTS`.
ELEMENT_INDEX: dict[int, int] = {element.atomic_number: i for i, element in enumerate(ELEMENTS)}
#: Atomic numbers of the elements that follow [alpha/M]: O, Mg, Si, Ca, Ti.
ALPHA_ELEMENTS: tuple[int, ...] = (8, 12, 14, 20, 22)

_LOG_EPS_SUN = np.array([element.log_eps_sun for element in ELEMENTS])
_ATOMIC_NUMBERS = np.array([element.atomic_number for element in ELEMENTS])
_IONIZATION = np.array([element.ionization_ev for element in ELEMENTS])  # (n_elem, 2)
_LOG_U5000 = np.log10(np.array([element.partition_5000 for element in ELEMENTS]))  # (n_elem, 3)
_LOG_U10000 = np.log10(np.array([element.partition_10000 for element in ELEMENTS]))
MASSES_AMU = np.array([element.mass_amu for element in ELEMENTS])


def log_abundances(m_h: np.ndarray, alpha_m: np.ndarray, c_m: np.ndarray, n_m: np.ndarray) -> np.ndarray:
    """Return log eps of every element in :data:`ELEMENTS` for each star.

    Parameters
    ----------
    m_h, alpha_m, c_m, n_m : ndarray, shape (n_star,)
        [M/H], [alpha/M], [C/M] and [N/M] in dex.

    Returns
    -------
    ndarray, shape (n_star, n_elem)
        log eps = log eps_sun + [M/H] (+ [alpha/M] for O, Mg, Si, Ca, Ti; + [C/M]
        for C; + [N/M] for N); H and He are not scaled.
    """
    m_h, alpha_m, c_m, n_m = (np.atleast_1d(np.asarray(value, dtype=float)) for value in (m_h, alpha_m, c_m, n_m))
    scales = np.zeros((m_h.size, len(ELEMENTS)))
    metals = _ATOMIC_NUMBERS > 2
    scales[:, metals] = m_h[:, None]
    for atomic_number in ALPHA_ELEMENTS:
        scales[:, ELEMENT_INDEX[atomic_number]] += alpha_m
    scales[:, ELEMENT_INDEX[6]] += c_m
    scales[:, ELEMENT_INDEX[7]] += n_m
    return _LOG_EPS_SUN[None, :] + scales


def partition_functions(temperature: np.ndarray) -> np.ndarray:
    """Partition functions of stages I-III of every element.

    Parameters
    ----------
    temperature : ndarray, shape (n_star,)
        Temperature in K.

    Returns
    -------
    ndarray, shape (n_star, n_elem, 3)
        U(T), interpolated linearly in log U versus log T through the 5000 K and
        10000 K values (extrapolated with the same slope, and never below the
        5000 K value at lower temperature by more than the slope allows).
    """
    temperature = np.atleast_1d(np.asarray(temperature, dtype=float))
    slope = (_LOG_U10000 - _LOG_U5000) / np.log10(2.0)
    log_t = np.log10(temperature / 5000.0)[:, None, None]
    log_u = _LOG_U5000[None] + slope[None] * log_t
    # Below 5000 K the partition functions approach their ground-state values only
    # slowly; never let the extrapolation fall below 60 % of the 5000 K value.
    log_u = np.maximum(log_u, _LOG_U5000[None] + np.log10(0.6))
    return 10.0**log_u


def saha_ratio(temperature: np.ndarray, ionization_ev: np.ndarray, u_lower: np.ndarray, u_upper: np.ndarray) -> np.ndarray:
    """Saha function Phi(T) = P_e N_{i+1} / N_i in dyn cm^-2.

    Phi = 0.6665 (U_{i+1} / U_i) T^{5/2} 10^{-theta chi} (Gray 2005, eq. 1.20),
    theta = 5040 / T.
    """
    theta = THETA_CONSTANT / temperature
    with np.errstate(over="ignore", under="ignore"):
        return 0.6665 * (u_upper / u_lower) * temperature**2.5 * 10.0 ** (-theta * ionization_ev)


def ionization_fractions(temperature: np.ndarray, electron_pressure: np.ndarray) -> np.ndarray:
    """Fractions of every element in ionization stages I, II and III.

    Parameters
    ----------
    temperature, electron_pressure : ndarray, shape (n_star,)
        Temperature in K and electron pressure in dyn cm^-2.

    Returns
    -------
    ndarray, shape (n_star, n_elem, 3)
        N_I / N, N_II / N, N_III / N from the Saha equation (higher stages ignored).
    """
    temperature = np.atleast_1d(np.asarray(temperature, dtype=float))
    electron_pressure = np.atleast_1d(np.asarray(electron_pressure, dtype=float))
    u = partition_functions(temperature)
    t = temperature[:, None]
    ratio_1 = saha_ratio(t, _IONIZATION[None, :, 0], u[:, :, 0], u[:, :, 1]) / electron_pressure[:, None]
    ratio_2 = saha_ratio(t, _IONIZATION[None, :, 1], u[:, :, 1], u[:, :, 2]) / electron_pressure[:, None]
    ratio_2 = np.where(np.isfinite(_IONIZATION[None, :, 1]), ratio_2, 0.0)
    neutral = 1.0 / (1.0 + ratio_1 + ratio_1 * ratio_2)
    return np.stack([neutral, ratio_1 * neutral, ratio_1 * ratio_2 * neutral], axis=-1)


def boltzmann_factor(temperature: np.ndarray, excitation_ev: np.ndarray) -> np.ndarray:
    """Return 10^(-theta chi) = exp(-chi / kT); broadcasting applies."""
    return 10.0 ** (-(THETA_CONSTANT / np.asarray(temperature, dtype=float)) * np.asarray(excitation_ev, dtype=float))
