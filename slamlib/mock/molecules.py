"""Molecules: dissociation equilibrium, and parametric C2 Swan and TiO bands.

1. **Dissociation equilibrium** in the line-forming layer. For a diatomic molecule AB,
   K_p = P_A P_B / P_AB follows from statistical mechanics with a rigid-rotor,
   harmonic-oscillator partition function
   U_AB = g_el (kT / (h c B_e)) / (sigma (1 - exp(-h c omega_e / kT)))
   (:func:`molecular_partition_function`):
   log10 K_p = 4.41 + 1.5 log10 mu + 2.5 log10 T + log10(U_A U_B / U_AB) - theta D_0
   (dyn cm^-2; mu reduced mass in amu). Carbon is shared between CO, CN, CH and free
   atoms, nitrogen between N2, CN and free atoms, titanium between TiO and free atoms
   (a few fixed-point iterations). So the CO lock-up removes free carbon in M stars,
   CH and CN scale with the C and N abundances ([C/M], [N/M]), TiO appears below about
   4000 K and MgH grows with pressure (dwarfs).
2. **CH, CN and MgH** are synthesized line by line from these number densities
   (:mod:`slamlib.mock.forest`, with the 12CH, 12C14N and 24MgH lines of the dense line
   list): the CH G band, the CN 3883 and 4216 bands and the MgH 4845/5200 bands have
   their real rotational structure, smoothed by the instrument.
3. **Parametric bands** remain for the molecules the line list does not hold, C2 Swan and
   TiO: each band system has one electronic oscillator strength, shared between its band
   heads; the integrated opacity of a band is
   pi e^2 / (m_e c) lambda^2 / c f N_AB / kappa_c, spread from the head over a length L
   as exp(-|lambda - lambda_head| / L) in the direction the band degrades, smoothed by
   the instrumental Gaussian, and turned into a depth with the same depth law as the
   atomic lines. Band heads are approximate air wavelengths (to ~1-2 A) as commonly
   quoted from Pearse & Gaydon, *The Identification of Molecular Spectra* (C2 Swan
   5165/4737/5636) and the TiO alpha/gamma/gamma'/delta/epsilon heads used for M-dwarf
   classification (e.g. Kirkpatrick, Henry & McCarthy 1991, ApJS 77, 417: 4761 ... 8860 A),
   converted to vacuum.
4. Band oscillator strengths and molecular constants (D_0, B_e, omega_e; Huber &
   Herzberg 1979, rounded) are approximate; ``BAND_SCALE`` is one global factor on the
   parametric band opacities (it also stands for the saturation of the unresolved
   rotational lines). The oscillator strengths of the CH, CN and MgH entries of
   :data:`MOLECULES` are no longer used (their lines carry their own gf values).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.special import ndtr

from slamlib.mock.atmosphere import Photosphere
from slamlib.mock.atoms import ELEMENT_INDEX, MASSES_AMU, THETA_CONSTANT
from slamlib.mock.grid import (
    INSTRUMENT_SIGMA_PIX,
    LOG_WAVE_START,
    LOG_WAVE_STEP,
    SPEED_OF_LIGHT_KM_S,
    air_to_vacuum,
)
from slamlib.mock.lines import LINE_STRENGTH_SCALE, depth_law, planck_parameter

__all__ = [
    "BAND_SCALE",
    "Molecule",
    "BandHead",
    "MOLECULES",
    "BAND_HEADS",
    "molecular_pressures",
    "molecular_partition_function",
    "band_depth",
]

#: Global factor on all molecular band opacities.
BAND_SCALE = 0.15

_BOLTZMANN_CGS = 1.380649e-16
_CLASSICAL_CROSS_SECTION = 0.026540
_C_CM_S = 2.99792458e10
_HC_OVER_K_CM_K = 1.4387769  # h c / k in cm K


@dataclass(frozen=True)
class Molecule:
    """Constants of a diatomic molecule.

    Attributes
    ----------
    name : str
    atoms : tuple of int
        Atomic numbers of the two atoms (H = 1).
    dissociation_ev : float
        D_0, eV.
    rotational_cm : float
        B_e, cm^-1.
    vibrational_cm : float
        omega_e, cm^-1.
    electronic_weight : float
        Degeneracy of the electronic ground state divided by the symmetry number.
    band_f : float
        Electronic oscillator strength of the absorbing system(s) (0 for molecules that
        only lock up atoms).
    """

    name: str
    atoms: tuple[int, int]
    dissociation_ev: float
    rotational_cm: float
    vibrational_cm: float
    electronic_weight: float
    band_f: float


MOLECULES: dict[str, Molecule] = {
    "CO": Molecule("CO", (6, 8), 11.09, 1.931, 2170.0, 1.0, 0.0),
    "N2": Molecule("N2", (7, 7), 9.76, 1.998, 2359.0, 0.5, 0.0),
    "CH": Molecule("CH", (6, 1), 3.47, 14.46, 2859.0, 4.0, 5e-3),
    "CN": Molecule("CN", (6, 7), 7.72, 1.900, 2069.0, 2.0, 3e-2),
    "C2": Molecule("C2", (6, 6), 6.21, 1.820, 1855.0, 0.5, 3e-2),
    "MgH": Molecule("MgH", (12, 1), 1.34, 5.826, 1495.0, 2.0, 8e-2),
    "TiO": Molecule("TiO", (22, 8), 6.87, 0.535, 1009.0, 6.0, 0.1),
}


@dataclass(frozen=True)
class BandHead:
    """One band of a molecular system.

    Attributes
    ----------
    molecule : str
    wave_air : float
        Head wavelength in air, A.
    direction : int
        -1 if the band degrades to the violet (absorption blueward of the head), +1 to the red.
    length : float
        e-folding length of the band absorption away from the head, A.
    weight : float
        Share of the system's oscillator strength.
    """

    molecule: str
    wave_air: float
    direction: int
    length: float
    weight: float


BAND_HEADS: tuple[BandHead, ...] = (
    # CH, CN and MgH are no longer parametric: their lines are synthesized one by one
    # from the dense line list (:mod:`slamlib.mock.forest`).
    # C2 Swan d-a
    BandHead("C2", 5165.2, -1, 60.0, 1.0),
    BandHead("C2", 4737.1, -1, 60.0, 0.5),
    BandHead("C2", 5635.5, -1, 60.0, 0.4),
    # MgH A-X
    BandHead("MgH", 5211.0, -1, 110.0, 1.0),
    BandHead("MgH", 4845.0, -1, 70.0, 0.4),
    # TiO (all degrade to the red)
    BandHead("TiO", 4761.1, 1, 60.0, 0.3),
    BandHead("TiO", 4954.6, 1, 70.0, 0.4),
    BandHead("TiO", 5166.7, 1, 80.0, 0.5),
    BandHead("TiO", 5448.3, 1, 80.0, 0.45),
    BandHead("TiO", 5847.0, 1, 90.0, 0.45),
    BandHead("TiO", 6158.7, 1, 100.0, 0.6),
    BandHead("TiO", 6651.3, 1, 100.0, 0.7),
    BandHead("TiO", 7054.2, 1, 120.0, 1.0),
    BandHead("TiO", 7589.3, 1, 80.0, 0.5),
    BandHead("TiO", 8432.5, 1, 80.0, 0.25),
    BandHead("TiO", 8859.6, 1, 90.0, 0.3),
)

_NAMES = ("CO", "N2", "CH", "CN", "C2", "MgH", "TiO")


def molecular_partition_function(molecule: Molecule, temperature: np.ndarray) -> np.ndarray:
    """Rigid-rotor, harmonic-oscillator partition function of a diatomic molecule.

    U = g_el (kT / (h c B_e)) / (1 - exp(-h c omega_e / kT)), energies counted from the
    lowest rotational-vibrational level (as the excitation energies of the line list are).

    Parameters
    ----------
    molecule : Molecule
    temperature : ndarray, shape (n_star,)

    Returns
    -------
    ndarray, shape (n_star,)
    """
    kt_cm = np.asarray(temperature, dtype=float) / _HC_OVER_K_CM_K
    return molecule.electronic_weight * (kt_cm / molecule.rotational_cm) / -np.expm1(-molecule.vibrational_cm / kt_cm)


def _equilibrium_constant(molecule: Molecule, temperature: np.ndarray, partition: np.ndarray) -> np.ndarray:
    """K_p = P_A P_B / P_AB in dyn cm^-2, shape (n_star,)."""
    index_a, index_b = (ELEMENT_INDEX[z] for z in molecule.atoms)
    mass_a, mass_b = MASSES_AMU[index_a], MASSES_AMU[index_b]
    reduced_mass = mass_a * mass_b / (mass_a + mass_b)
    u_molecule = molecular_partition_function(molecule, temperature)
    u_atoms = partition[:, index_a, 0] * partition[:, index_b, 0]
    theta = THETA_CONSTANT / temperature
    log_k = (
        4.41
        + 1.5 * np.log10(reduced_mass)
        + 2.5 * np.log10(temperature)
        + np.log10(u_atoms / u_molecule)
        - theta * molecule.dissociation_ev
    )
    return 10.0**log_k


def molecular_pressures(layer: Photosphere) -> dict[str, np.ndarray]:
    """Partial pressures (dyn cm^-2) of the molecules in :data:`MOLECULES`, each shape (n_star,).

    Atoms enter with their neutral fractions; C, N, O and Ti are shared out over the
    molecules by fixed-point iteration.
    """
    temperature = layer.temperature
    kt = _BOLTZMANN_CGS * temperature
    hydrogen_pressure = layer.hydrogen_density * kt

    def atom_pressure(z: int) -> np.ndarray:
        index = ELEMENT_INDEX[z]
        return 10.0 ** (layer.log_eps[:, index] - 12.0) * layer.ion_fractions[:, index, 0] * hydrogen_pressure

    constants = {name: _equilibrium_constant(MOLECULES[name], temperature, layer.partition) for name in _NAMES}
    total = {z: atom_pressure(z) for z in (1, 6, 7, 8, 12, 22)}
    free = dict(total)

    def shared(total_pressure: np.ndarray, linear: np.ndarray, self_constant: np.ndarray) -> np.ndarray:
        # Solve total = P (1 + linear) + 2 P^2 / K for P >= 0 (stable root).
        b = 1.0 + linear
        return 2.0 * total_pressure / (b + np.sqrt(b**2 + 8.0 * total_pressure / self_constant))

    for _ in range(30):
        # Damped (geometric-mean) Gauss-Seidel updates of the free atomic pressures.
        carbon_partners = free[8] / constants["CO"] + free[7] / constants["CN"] + free[1] / constants["CH"]
        update_c = shared(total[6], carbon_partners, constants["C2"])
        free[6] = np.sqrt(free[6] * update_c)
        update_n = shared(total[7], free[6] / constants["CN"], constants["N2"])
        free[7] = np.sqrt(free[7] * update_n)
        update_o = total[8] / (1.0 + free[6] / constants["CO"] + free[22] / constants["TiO"])
        free[8] = np.sqrt(free[8] * update_o)
        free[22] = total[22] / (1.0 + free[8] / constants["TiO"])
        free[12] = total[12] / (1.0 + free[1] / constants["MgH"])
    # Final undamped pass so that carbon and nitrogen are conserved.
    free[6] = shared(total[6], free[8] / constants["CO"] + free[7] / constants["CN"] + free[1] / constants["CH"], constants["C2"])
    free[7] = shared(total[7], free[6] / constants["CN"], constants["N2"])
    pressures = {}
    for name in _NAMES:
        z_a, z_b = MOLECULES[name].atoms
        pressures[name] = free[z_a] * free[z_b] / constants[name]
    return pressures


@cache
def _head_vacuum_waves() -> np.ndarray:
    return air_to_vacuum(np.array([head.wave_air for head in BAND_HEADS]))


def band_depth(layer: Photosphere, wave_rest: np.ndarray, *, threshold: float = 1e-4) -> np.ndarray:
    """Depth of all molecular bands on the (per-star rest-frame) pixel grid.

    Parameters
    ----------
    layer : Photosphere
    wave_rest : ndarray, shape (n_star, n_pix)
        Rest-frame wavelength of every pixel, A.
    threshold : float
        A band whose peak opacity ratio is below this is left out for that star.

    Returns
    -------
    ndarray, shape (n_star, n_pix)
        Fractional depth (0 = no absorption).
    """
    eta = _band_opacity(layer, wave_rest, threshold)
    # The depth law only where there is band opacity: elsewhere the depth is 0 (where
    # depth_law(0, x) would give 0 up to rounding, a few 1e-16).
    absorbing = eta > 0
    if not np.any(absorbing):
        return eta
    depth = np.zeros_like(eta)
    teff = np.broadcast_to(layer.teff[:, None], eta.shape)
    depth[absorbing] = depth_law(eta[absorbing], planck_parameter(wave_rest[absorbing], teff[absorbing]))
    return depth


def _band_opacity(layer: Photosphere, wave_rest: np.ndarray, threshold: float) -> np.ndarray:
    """Opacity ratio eta of all molecular bands, shape (n_star, n_pix) (see :func:`band_depth`)."""
    n_star, n_pix = wave_rest.shape
    pressures = molecular_pressures(layer)
    kt = _BOLTZMANN_CGS * layer.temperature
    hydrogen_pressure = layer.hydrogen_density * kt
    heads = _head_vacuum_waves()
    kappa_c = layer.continuous_opacity(heads)  # (n_star, n_head)
    eta = np.zeros((n_star, n_pix))
    # Windows are fixed pixel ranges of the observed grid, wide enough for any supported
    # radial velocity, so a star's result does not depend on the other stars in the batch.
    observed_log_wave = LOG_WAVE_START + LOG_WAVE_STEP * np.arange(n_pix)
    velocity_margin = 1.0 + 1100.0 / SPEED_OF_LIGHT_KM_S
    for k, head in enumerate(BAND_HEADS):
        molecule = MOLECULES[head.molecule]
        wave_cm = heads[k] * 1e-8
        cross_section = _CLASSICAL_CROSS_SECTION * wave_cm**2 / _C_CM_S * 1e8 * molecule.band_f * head.weight
        abundance = pressures[head.molecule] / hydrogen_pressure  # molecules per H nucleus
        eta_integrated = BAND_SCALE * LINE_STRENGTH_SCALE * cross_section * abundance / kappa_c[:, k]
        eta_integrated = np.where(eta_integrated / head.length > threshold, eta_integrated, 0.0)
        if not np.any(eta_integrated):
            continue
        # Pixel window: 6 band lengths on the degraded side, a few resolution elements on the other.
        sigma = heads[k] * np.log(10.0) * LOG_WAVE_STEP * INSTRUMENT_SIGMA_PIX
        low_wave = heads[k] - (6.0 * head.length if head.direction < 0 else 5.0 * sigma) - 30.0
        high_wave = heads[k] + (6.0 * head.length if head.direction > 0 else 5.0 * sigma) + 30.0
        lo = max(int(np.searchsorted(observed_log_wave, np.log10(low_wave / velocity_margin))), 0)
        hi = min(int(np.searchsorted(observed_log_wave, np.log10(high_wave * velocity_margin))), n_pix)
        if hi <= lo:
            continue
        # Only the stars that have the band (the others would add exact zeros).
        rows = np.flatnonzero(eta_integrated)
        distance = head.direction * (wave_rest[rows, lo:hi] - heads[k])  # >= 0 inside the band
        # exp(-u / L) for u > 0 convolved with a Gaussian (exponentially modified Gaussian).
        ratio = sigma / head.length
        decay = np.exp(np.clip(0.5 * ratio**2 - distance / head.length, -700.0, 50.0))
        shape = decay * ndtr(distance / sigma - ratio) / head.length
        eta[rows, lo:hi] += eta_integrated[rows, None] * shape
    return eta
