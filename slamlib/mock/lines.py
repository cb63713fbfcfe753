"""Atomic lines: the shipped line table, line strengths, damping and the curve of growth.

Model
-----
For every star (one photospheric layer, :mod:`slamlib.mock.atmosphere`) and line:

1. **Line-to-continuum opacity ratio.** The lower-level population per H nucleus is
   eps * f_ion * exp(-chi / kT) / U (Saha-Boltzmann, :mod:`slamlib.mock.atoms`); with the
   oscillator strength gf and the classical cross-section pi e^2 / (m_e c) this gives the
   integrated line opacity, divided by the continuous opacity at the line,
   eta_int = int kappa_line dlambda / kappa_c (in A), times ``LINE_STRENGTH_SCALE``.
   kappa_c includes the opacity of the unresolved haze of weak lines in the blue
   (:func:`slamlib.mock.continuum.haze_opacity_factor`), which weakens the strong blue
   lines of cool, metal-rich stars as line blanketing does in real atmospheres.
2. **Broadening.** Doppler width from thermal motion plus microturbulence; Lorentzian
   damping from radiation (classical gamma) plus van der Waals collisions with neutral
   H and He (Unsoeld's C6 approximation times ``VDW_ENHANCEMENT``, Gray 2005 eq. 11.29),
   which grows with the gas pressure and hence with log g; for hydrogen, self
   (resonance) broadening by neutral H plus the linear Stark effect with the Holtsmark
   wing (profile proportional to F0^(3/2) |dlambda|^(-5/2), F0 = 2.61 e N_e^(2/3)), so
   Balmer wings grow with the electron density.
3. **Depth law.** A line of opacity ratio eta forms where the continuum optical depth is
   2/3 / (1 + eta); with the Eddington-Barbier relation and a grey T(tau) whose surface
   temperature is ``SURFACE_TEMPERATURE_RATIO`` * Teff, the depth is
   d(eta) = 1 - B_lambda(T_eta) / B_lambda(Teff) with T_eta^4 = Teff^4 (s + (1 - s)/(1 + eta)),
   s = ratio^4 (0.8 instead of 0.7 for hydrogen, whose cores are filled in by non-LTE
   and chromospheric emission). Weak lines are linear in eta, saturated ones approach
   the residual flux B_lambda(T_surface) / B_lambda(Teff) slowly (logarithmically), as in
   real spectra.
4. **Curve of growth.** The equivalent width is the integral of d over the Doppler core
   (tabulated once as a function of the central eta0 and the Planck parameter) plus
   the integral over the damping wings outside the core (tabulated for the Lorentzian
   wing, integrated on pixels for the strong lines); this reproduces the linear,
   flat (saturated) and damping (square-root) parts of the curve of growth.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from slamlib.mock.atmosphere import Photosphere
from slamlib.mock.atoms import ELEMENT_INDEX, ELEMENTS, MASSES_AMU, boltzmann_factor
from slamlib.mock.continuum import haze_opacity_factor
from slamlib.mock.grid import trapezoid

__all__ = [
    "LINE_STRENGTH_SCALE",
    "VDW_ENHANCEMENT",
    "STARK_SCALE",
    "SURFACE_TEMPERATURE_RATIO",
    "HYDROGEN_SURFACE_TEMPERATURE_RATIO",
    "LineTable",
    "LineStrengths",
    "load_line_table",
    "line_strengths",
    "depth_law",
    "planck_parameter",
    "doppler_core_width",
    "lorentz_wing_width",
    "equivalent_width",
    "stark_eta",
]

#: Global factor on the line-to-continuum opacity ratio; absorbs the crudeness of the
#: one-layer atmosphere. Set so that the solar equivalent widths of strong lines
#: (Mg b, Na D, Ca II K, Fe I 5270) come out near their observed values.
LINE_STRENGTH_SCALE = 0.3
#: Factor on Unsoeld's van der Waals damping constant. Real lines need ~1.5-2.5, but the
#: one-layer model forms the wings at the pressure of its tau = 0.3 layer, which
#: overestimates them in cool dwarfs: with the line forest in place, 1 (Unsoeld's value)
#: matches the real LAMOST DR1 spectra of the shared sample better than 2 (the K5 dwarf's
#: strong Fe I lines at 4000-4450 A come out too wide with 2) and no worse for the hotter stars.
VDW_ENHANCEMENT = 1.0
#: Factor on the Holtsmark width of the hydrogen lines; 2.2 reproduces the H-beta and
#: H-alpha equivalent widths and depths of the real A3V LAMOST DR1 spectrum of the shared sample
#: (obsid 906207) to ~15 % and puts the H-beta maximum near 9500 K.
STARK_SCALE = 2.2
#: Surface temperature of the grey T(tau) used by the depth law, as a fraction of Teff.
SURFACE_TEMPERATURE_RATIO = 0.7
#: The same for hydrogen lines, whose cores are partly filled in by non-LTE and
#: chromospheric emission (their source function stays above the local Planck function);
#: 0.8 makes the cores of the F- and A-type Balmer lines at R = 1800 about as shallow as in
#: the real LAMOST DR1 sample (a residual of ~0.35 instead of ~0.25 at 8200 K).
HYDROGEN_SURFACE_TEMPERATURE_RATIO = 0.8
#: Hydrogen self-broadening gamma per neutral H atom (s^-1 cm^3) of H-alpha; higher
#: series members scale as (n_upper / 3)^2.4 (about the ratio of the Barklem et al.
#: 2000 cross-sections of H-alpha and H-beta). Their cross-sections give ~1e-7; the
#: value is raised to 6e-7 to bring the solar H-alpha and H-beta wings closer to the
#: observed ones (the one-layer model forms the wings too high in the atmosphere).
HYDROGEN_SELF_BROADENING = 6.0e-7

_C_CM_S = 2.99792458e10
_CLASSICAL_CROSS_SECTION = 0.026540  # pi e^2 / (m_e c), cm^2 Hz
_BOLTZMANN_CGS = 1.380649e-16
_ATOMIC_MASS_G = 1.66053907e-24
_HC_OVER_K_ANGSTROM_K = 1.4387769e8
_ELECTRON_CHARGE_ESU = 4.80320e-10
_BOHR_RADIUS_CM = 5.29177e-9
_HC_ERG_CM = 1.98644586e-16
_RYDBERG_H_PER_ANGSTROM = 1.0967758e-3


@dataclass(frozen=True)
class LineTable:
    """The shipped atomic line table as arrays (one entry per transition).

    Attributes
    ----------
    wave : ndarray
        Vacuum rest wavelength in A.
    species : ndarray of str
        e.g. ``"Fe I"``.
    element : ndarray of int
        Index into :data:`slamlib.mock.atoms.ELEMENTS`.
    stage : ndarray of int
        Ionization stage, 0 = neutral, 1 = singly ionized.
    excitation : ndarray
        Lower-level excitation energy in eV.
    log_gf : ndarray
    ionization : ndarray
        Ionization energy (eV) of the absorbing stage (for van der Waals damping).
    mass : ndarray
        Atomic mass in amu.
    hydrogen_lower, hydrogen_upper : ndarray of int
        Principal quantum numbers of H I lines (0 for other species).
    """

    wave: np.ndarray
    species: np.ndarray
    element: np.ndarray
    stage: np.ndarray
    excitation: np.ndarray
    log_gf: np.ndarray
    ionization: np.ndarray
    mass: np.ndarray
    hydrogen_lower: np.ndarray
    hydrogen_upper: np.ndarray

    def __len__(self) -> int:
        return int(self.wave.size)

    @property
    def is_hydrogen(self) -> np.ndarray:
        """True for H I lines."""
        return self.hydrogen_lower > 0


@cache
def load_line_table() -> LineTable:
    """Read ``slamlib/mock/lines.csv`` (see ``LINES.md`` for its sources)."""
    text = resources.files("slamlib.mock").joinpath("lines.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise ValueError("The shipped line table slamlib/mock/lines.csv is empty.")
    wave = np.array([float(row["wavelength_vacuum_A"]) for row in rows])
    atomic_number = np.array([int(row["atomic_number"]) for row in rows])
    unknown = sorted(set(atomic_number.tolist()) - set(ELEMENT_INDEX))
    if unknown:
        raise ValueError(f"lines.csv has elements without atomic data: Z = {unknown}.")
    element = np.array([ELEMENT_INDEX[z] for z in atomic_number])
    stage = np.array([int(row["ion_stage"]) for row in rows]) - 1
    if np.any((stage < 0) | (stage > 1)):
        raise ValueError("lines.csv may only hold neutral and singly ionized species.")
    ionization = np.array([ELEMENTS[e].ionization_ev[s] for e, s in zip(element, stage)])
    excitation = np.array([float(row["excitation_eV"]) for row in rows])
    hydrogen = atomic_number == 1
    lower = np.where(hydrogen, np.where(excitation < 11.0, 2, 3), 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        inverse_upper_squared = 1.0 / np.maximum(lower, 1) ** 2 - 1.0 / (wave * _RYDBERG_H_PER_ANGSTROM)
        upper = np.where(hydrogen, np.rint(1.0 / np.sqrt(np.abs(inverse_upper_squared))), 0).astype(int)
    order = np.argsort(wave, kind="stable")
    return LineTable(
        wave=wave[order],
        species=np.array([row["species"] for row in rows])[order],
        element=element[order],
        stage=stage[order],
        excitation=excitation[order],
        log_gf=np.array([float(row["log_gf"]) for row in rows])[order],
        ionization=ionization[order],
        mass=MASSES_AMU[element][order],
        hydrogen_lower=lower[order],
        hydrogen_upper=upper[order],
    )


def planck_parameter(wave: np.ndarray, teff: np.ndarray) -> np.ndarray:
    """x = h c / (lambda k Teff), broadcasting ``wave`` (A) against ``teff`` (K)."""
    return _HC_OVER_K_ANGSTROM_K / (np.asarray(wave, dtype=float) * np.asarray(teff, dtype=float))


def depth_law(
    eta: np.ndarray, planck_x: np.ndarray, surface_ratio: np.ndarray | float = SURFACE_TEMPERATURE_RATIO
) -> np.ndarray:
    """Line depth for a line-to-continuum opacity ratio ``eta`` (Eddington-Barbier).

    Parameters
    ----------
    eta : ndarray
        kappa_line / kappa_continuum (>= 0).
    planck_x : ndarray
        h c / (lambda k Teff), broadcast against ``eta``.
    surface_ratio : float or ndarray
        T_surface / Teff of the grey T(tau), broadcast against ``eta``.

    Returns
    -------
    ndarray
        1 - B(T_eta) / B(Teff), 0 for eta = 0, rising to
        1 - B(surface_ratio Teff) / B(Teff) for eta -> infinity.
    """
    s = np.asarray(surface_ratio, dtype=float) ** 4
    ratio_t = np.sqrt(np.sqrt(s + (1.0 - s) / (1.0 + eta)))
    return 1.0 - np.expm1(planck_x) / np.expm1(planck_x / ratio_t)


# --- tabulated curve-of-growth integrals -------------------------------------------------
_LOG_ETA_GRID = np.linspace(-5.0, 11.0, 161)
_X_GRID = np.linspace(0.5, 17.0, 34)
_LOG_Y_GRID = np.linspace(-3.0, 4.0, 141)


@cache
def _doppler_core_table(surface_ratio: float) -> np.ndarray:
    """int d(eta0 exp(-v^2)) dv over all v, shape (n_eta, n_x)."""
    v = np.linspace(0.0, 8.0, 801)
    eta = 10.0 ** _LOG_ETA_GRID[:, None, None] * np.exp(-v**2)[None, None, :]
    depth = depth_law(eta, _X_GRID[None, :, None], surface_ratio)
    return 2.0 * trapezoid(depth, v)


@cache
def _lorentz_wing_table(surface_ratio: float) -> np.ndarray:
    """2 int_y^inf d(1 / u^2) du for y on ``_LOG_Y_GRID``, shape (n_y, n_x)."""
    u = np.logspace(-3.5, 6.0, 2000)
    depth = depth_law(1.0 / u[:, None] ** 2, _X_GRID[None, :], surface_ratio)
    pieces = 0.5 * (depth[1:] + depth[:-1]) * np.diff(u)[:, None]
    # Tail beyond the last node: d ~ slope / u^2 with slope = d'(0).
    slope = depth[-1] * u[-1] ** 2
    upper = np.concatenate([np.cumsum(pieces[::-1], axis=0)[::-1], np.zeros((1, _X_GRID.size))]) + slope / u[-1]
    log_u = np.log10(u)
    table = np.empty((_LOG_Y_GRID.size, _X_GRID.size))
    for j in range(_X_GRID.size):
        table[:, j] = np.interp(_LOG_Y_GRID, log_u, upper[:, j])
    return 2.0 * table


def _bilinear(table: np.ndarray, grid_a: np.ndarray, grid_b: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bilinear interpolation on a regular grid, clipped at the edges."""
    step_a = grid_a[1] - grid_a[0]
    step_b = grid_b[1] - grid_b[0]
    fa = np.clip((a - grid_a[0]) / step_a, 0.0, grid_a.size - 1.000001)
    fb = np.clip((b - grid_b[0]) / step_b, 0.0, grid_b.size - 1.000001)
    ia = fa.astype(int)
    ib = fb.astype(int)
    wa = fa - ia
    wb = fb - ib
    return (
        table[ia, ib] * (1 - wa) * (1 - wb)
        + table[ia + 1, ib] * wa * (1 - wb)
        + table[ia, ib + 1] * (1 - wa) * wb
        + table[ia + 1, ib + 1] * wa * wb
    )


def doppler_core_width(
    eta0: np.ndarray, planck_x: np.ndarray, surface_ratio: float = SURFACE_TEMPERATURE_RATIO
) -> np.ndarray:
    """Equivalent width of the Doppler core in units of the Doppler width.

    Linear in ``eta0`` below the table (eta0 < 1e-5).
    """
    log_eta = np.log10(np.maximum(eta0, 1e-300))
    value = _bilinear(_doppler_core_table(float(surface_ratio)), _LOG_ETA_GRID, _X_GRID, log_eta, planck_x)
    return np.where(log_eta < _LOG_ETA_GRID[0], value * 10.0 ** (log_eta - _LOG_ETA_GRID[0]), value)


def lorentz_wing_width(
    y_core: np.ndarray, planck_x: np.ndarray, surface_ratio: float = SURFACE_TEMPERATURE_RATIO
) -> np.ndarray:
    """Equivalent width of a Lorentzian wing eta = 1 / u^2 outside |u| > y_core (two sides)."""
    log_y = np.log10(np.maximum(y_core, 1e-300))
    value = _bilinear(_lorentz_wing_table(float(surface_ratio)), _LOG_Y_GRID, _X_GRID, log_y, planck_x)
    # Beyond the table: d ~ slope / u^2, integral 2 slope / y.
    return np.where(log_y > _LOG_Y_GRID[-1], value * 10.0 ** (_LOG_Y_GRID[-1] - log_y), value)


@dataclass(frozen=True)
class LineStrengths:
    """Per-star, per-line quantities, all arrays shape (n_star, n_line).

    Attributes
    ----------
    eta_integrated : ndarray
        Integrated line-to-continuum opacity ratio, A.
    doppler_width : ndarray
        Doppler width (1/e half width), A.
    eta_center : ndarray
        Central opacity ratio of the Doppler core, eta_int / (sqrt(pi) doppler_width).
    lorentz_coefficient : ndarray
        C_L in eta(x) = C_L / x^2 of the damping wing, A^2.
    stark_coefficient : ndarray
        C_S in eta(x) = C_S / (|x|^2.5 + (2.5 w_S)^2.5) of the Stark profile (H I only,
        else 0), A^2.5: the Holtsmark wing 1.5 w_S^1.5 / |x|^2.5 with its core flattened
        inside ~2.5 Holtsmark widths w_S so that it integrates to eta_int.
    stark_width : ndarray
        Holtsmark width w_S (A).
    core_half_width : ndarray
        Half width x_D (A) of the Doppler core; wings are counted outside it.
    planck_x : ndarray
        h c / (lambda k Teff) at the line.
    surface_ratio : ndarray, shape (1, n_line)
        T_surface / Teff of each line's depth law.
    core_width : ndarray
        Equivalent width (A) of the core |x| < x_D.
    plateau_width : ndarray
        The part of ``core_width`` that the damping wing alone would absorb inside the
        core, 2 x_D d(eta_wing(x_D)) (A): the explicit wing profiles of the strong lines
        continue flat at that depth inside |x| < x_D, so only the rest is drawn as a core.
    wing_width : ndarray
        Equivalent width (A) of the Lorentzian wings outside the core (Stark wings of
        the H lines are integrated on the pixels instead).
    """

    eta_integrated: np.ndarray
    doppler_width: np.ndarray
    eta_center: np.ndarray
    lorentz_coefficient: np.ndarray
    stark_coefficient: np.ndarray
    stark_width: np.ndarray
    core_half_width: np.ndarray
    planck_x: np.ndarray
    surface_ratio: np.ndarray
    core_width: np.ndarray
    plateau_width: np.ndarray
    wing_width: np.ndarray

    @property
    def equivalent_width(self) -> np.ndarray:
        """Core plus Lorentzian-wing equivalent width, A (without Stark wings)."""
        return self.core_width + self.wing_width


def stark_eta(stark_coefficient: np.ndarray, stark_width: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Opacity ratio of the Stark profile at ``distance`` (A) from the line centre.

    eta = C_S / (|x|^2.5 + (2.5 w_S)^2.5): the Holtsmark wing 1.5 w_S^1.5 eta_int / |x|^2.5
    far out, flattened inside ~2.5 w_S (2.5^2.5 makes the profile integrate to eta_int).
    """
    return stark_coefficient / (np.abs(distance) ** 2.5 + (2.5 * stark_width) ** 2.5)


def line_surface_ratio(lines: LineTable) -> np.ndarray:
    """T_surface / Teff of each line's depth law: HYDROGEN_SURFACE_TEMPERATURE_RATIO for H I."""
    return np.where(lines.is_hydrogen, HYDROGEN_SURFACE_TEMPERATURE_RATIO, SURFACE_TEMPERATURE_RATIO)


def microturbulence(logg: np.ndarray) -> np.ndarray:
    """Microturbulent velocity (km/s): 1 km/s for dwarfs rising to 2 km/s for giants."""
    return np.clip(1.0 + 0.3 * (4.4 - np.asarray(logg, dtype=float)), 0.8, 2.5)


def line_strengths(layer: Photosphere, lines: LineTable | None = None) -> LineStrengths:
    """Compute opacity ratios, widths and equivalent widths of all lines for all stars.

    Parameters
    ----------
    layer : Photosphere
        From :func:`slamlib.mock.atmosphere.photosphere`.
    lines : LineTable, optional
        Defaults to the shipped table.

    Returns
    -------
    LineStrengths
    """
    if lines is None:
        lines = load_line_table()
    temperature = layer.temperature[:, None]
    wave = lines.wave[None, :]
    wave_cm = wave * 1e-8
    abundance = 10.0 ** (layer.log_eps[:, lines.element] - 12.0)
    fraction = layer.ion_fractions[:, lines.element, lines.stage]
    partition = layer.partition[:, lines.element, lines.stage]
    boltzmann = boltzmann_factor(temperature, lines.excitation[None, :])
    population = abundance * fraction * 10.0 ** lines.log_gf[None, :] * boltzmann / partition
    stimulated = -np.expm1(-_HC_OVER_K_ANGSTROM_K / (wave * temperature))
    cross_section = _CLASSICAL_CROSS_SECTION * wave_cm**2 / _C_CM_S * 1e8  # cm^2 A per unit gf-weighted population
    kappa_c = layer.continuous_opacity(lines.wave) * haze_opacity_factor(layer, lines.wave)
    eta_integrated = LINE_STRENGTH_SCALE * cross_section * population * stimulated / kappa_c
    # Upper levels of high series members dissolve in the plasma microfield (Inglis &
    # Teller 1939: n_max from log N_e = 23.26 - 7.5 log n_max); damp their opacity by
    # 1 / (1 + (n_u / n_max)^8).
    n_max = 10.0 ** ((23.26 - np.log10(np.maximum(layer.electron_density, 1.0))) / 7.5)
    dissolution = 1.0 / (1.0 + (lines.hydrogen_upper[None, :] / n_max[:, None]) ** 8)
    eta_integrated = eta_integrated * np.where(lines.is_hydrogen[None, :], dissolution, 1.0)

    thermal = 2.0 * _BOLTZMANN_CGS * temperature / (lines.mass[None, :] * _ATOMIC_MASS_G)
    velocity = np.sqrt(thermal + (1e5 * microturbulence(layer.logg))[:, None] ** 2)
    doppler_width = wave * velocity / _C_CM_S
    eta_center = eta_integrated / (np.sqrt(np.pi) * doppler_width)

    # Damping constants (s^-1, full width), Lorentz half width in A.
    gamma = 2.223e15 / wave**2
    photon_ev = 12398.42 / wave
    upper_gap = np.maximum(lines.ionization - lines.excitation - photon_ev, 0.3)
    lower_gap = np.maximum(lines.ionization - lines.excitation, upper_gap + 0.05)
    c6 = 0.3e-30 * (1.0 / upper_gap**2 - 1.0 / lower_gap**2)
    log_gamma6 = 19.6 + 0.4 * np.log10(c6) + np.log10(layer.perturber_pressure)[:, None] - 0.7 * np.log10(temperature)
    hydrogen = lines.is_hydrogen[None, :]
    neutral_h_density = (layer.neutral_hydrogen_fraction * layer.hydrogen_density)[:, None]
    gamma_self = HYDROGEN_SELF_BROADENING * (lines.hydrogen_upper / 3.0) ** 2.4 * neutral_h_density
    gamma = gamma + np.where(hydrogen, gamma_self, VDW_ENHANCEMENT * 10.0**log_gamma6)
    lorentz_half_width = gamma * wave_cm**2 / (4.0 * np.pi * _C_CM_S) * 1e8
    lorentz_coefficient = eta_integrated * lorentz_half_width / np.pi

    # Linear Stark effect of hydrogen: Holtsmark field F0 and a characteristic splitting
    # (3/2) e a0 F0 X converted to wavelength; wing eta = 1.5 (dl_H)^1.5 / x^2.5 per unit
    # eta_int. X = (n_u^2 - n_l^2) g(n_u - n_l): the alpha and beta lines of a series keep
    # much of their strength in weakly shifted components (g = 0.3, 0.67, 0.86, 1 for
    # delta n = 1, 2, 3, >= 4), which makes H-alpha's wings narrower than H-beta's.
    holtsmark_field = 2.61 * _ELECTRON_CHARGE_ESU * layer.electron_density ** (2.0 / 3.0)
    delta_n = lines.hydrogen_upper - lines.hydrogen_lower
    pattern = np.select([delta_n == 1, delta_n == 2, delta_n == 3], [0.3, 0.67, 0.86], 1.0)
    splitting = np.where(lines.is_hydrogen, (lines.hydrogen_upper**2 - lines.hydrogen_lower**2) * pattern, 0.0)
    shift_energy = 1.5 * _ELECTRON_CHARGE_ESU * _BOHR_RADIUS_CM * holtsmark_field[:, None] * splitting[None, :]
    stark_width = STARK_SCALE * shift_energy * wave_cm**2 / _HC_ERG_CM * 1e8
    stark_coefficient = eta_integrated * 1.496 * stark_width**1.5

    planck_x = planck_parameter(wave, layer.teff[:, None])
    core_half_width = doppler_width * (1.0 + np.sqrt(np.log1p(10.0 * eta_center)))
    eta_at_core_edge = lorentz_coefficient / core_half_width**2 + stark_eta(stark_coefficient, stark_width, core_half_width)
    surface_ratio = line_surface_ratio(lines)[None, :]
    plateau_width = 2.0 * core_half_width * depth_law(eta_at_core_edge, planck_x, surface_ratio)
    root_c = np.sqrt(lorentz_coefficient)
    y_core = core_half_width / np.maximum(root_c, 1e-300)
    core_cog = np.empty_like(eta_center)
    wing_cog = np.empty_like(eta_center)
    for ratio in np.unique(surface_ratio):
        columns = surface_ratio[0] == ratio
        core_cog[:, columns] = doppler_core_width(eta_center[:, columns], planck_x[:, columns], ratio)
        wing_cog[:, columns] = lorentz_wing_width(y_core[:, columns], planck_x[:, columns], ratio)
    core_width = np.maximum(doppler_width * core_cog, plateau_width)
    wing_width = root_c * wing_cog
    return LineStrengths(
        eta_integrated=eta_integrated,
        doppler_width=doppler_width,
        eta_center=eta_center,
        lorentz_coefficient=lorentz_coefficient,
        stark_coefficient=stark_coefficient,
        stark_width=stark_width,
        core_half_width=core_half_width,
        planck_x=planck_x,
        surface_ratio=surface_ratio,
        core_width=core_width,
        plateau_width=plateau_width,
        wing_width=wing_width,
    )


def equivalent_width(layer: Photosphere, lines: LineTable | None = None) -> np.ndarray:
    """Equivalent widths (A) of core plus Lorentzian wings, shape (n_star, n_line).

    The Stark wings of the hydrogen lines are not included (they are integrated on the
    pixel grid by :mod:`slamlib.mock.profiles`).
    """
    return line_strengths(layer, lines).equivalent_width
