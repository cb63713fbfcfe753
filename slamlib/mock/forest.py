"""The line forest: thousands of weak and medium atomic lines and line-by-line molecules.

The dense line list ``forest.csv.gz`` (20,315 transitions in 3850-5900 A air: 8,981
atomic lines of neutral and singly ionized species and the 12CH, 12C14N and 24MgH lines
of linemake; sources and selection rule in ``LINES.md``) fills the spectrum between the
strong lines of ``lines.csv``. Lines that ``lines.csv`` already holds (same species,
within 0.05 A and 0.05 eV) and the H I lines are left out here, so every transition is
synthesized once.

Physics (the same as for the strong lines of :mod:`slamlib.mock.lines`, per star and line)
------------------------------------------------------------------------------------------
* **Atoms**: lower-level population per H nucleus eps * f_ion * exp(-chi / kT) / U
  (Saha-Boltzmann in the line-forming layer; abundances from [M/H], [alpha/M], [C/M],
  [N/M]).
* **Molecules**: number density of CH, CN and MgH per H nucleus from the dissociation
  equilibrium of :func:`slamlib.mock.molecules.molecular_pressures` (carbon shared with
  CO, CN, CH and C2, nitrogen with N2 and CN, magnesium with MgH), times
  exp(-chi / kT) / U_mol with the rigid-rotor, harmonic-oscillator partition function.
  So CH follows [C/M], CN follows [C/M] and [N/M], and MgH grows with pressure (gravity).
* **Opacity ratio** eta_int = LINE_STRENGTH_SCALE * MOLECULE_STRENGTH_SCALE (molecules
  only) * pi e^2 / (m_e c) lambda^2 / c * gf * population * (1 - exp(-h nu / kT)) /
  kappa_c, with the continuous opacity (and the haze factor of
  :func:`slamlib.mock.continuum.haze_opacity_factor`) of the star's layer.
* **Curve of growth**: equivalent width = Doppler-core part + Lorentzian-wing part, as for
  the strong lines (thermal plus microturbulent Doppler width; radiative plus Unsoeld van
  der Waals damping, for molecules with the ionization energy of their heavier atom).

Speed
-----
The work is arranged so that the (star, line) arrays need only a few dozen elementwise
operations: every factor that depends on the star alone, on the species alone or on the
line alone is computed once, the continuous opacity is taken at the nearest of
:data:`N_OPACITY_NODES` wavelength nodes, and the curve-of-growth integrals are read from
per-star tables computed at the central wavelength of each of :data:`N_SEGMENTS`
wavelength segments. The (star, line) loop itself is compiled
(:func:`slamlib.mock.kernels.forest_deposit`: a few dozen operations, one exp, one log and
one square root per line and star, with each line's pseudo optical depth put on its
rest-frame pixels at once), 1.6x as fast as the numpy formulation, which is kept
as the reference (:func:`_reference_equivalent_widths`, :func:`_cog_tables_reference`,
:func:`render_forest`; ``tests/mock/test_mock_speed.py`` holds them equal to 1e-12).
Stars are passed to the kernel in blocks of :data:`STAR_BLOCK`; a star's result does not
depend on the block.

Rendering
---------
Every line is an instrumental Gaussian of its equivalent width on the observed pixel
grid (the line cores of :mod:`slamlib.mock.profiles` do the same for the strong lines):
its area is put on the two nearest pixels (linear weights, which adds a 1/6 pixel^2
variance) and the whole forest is convolved once with a sampled Gaussian of the
instrumental sigma. The areas are pseudo optical depths (an isolated line keeps its
equivalent width), so blended lines combine as exp(-sum).
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from slamlib.mock.atmosphere import Photosphere
from slamlib.mock.atoms import ELEMENT_INDEX, ELEMENTS, MASSES_AMU, THETA_CONSTANT
from slamlib.mock.continuum import haze_opacity_factor
from slamlib.mock.grid import LOG_WAVE_START, LOG_WAVE_STEP, N_PIX
from slamlib.mock.kernels import bilinear_columns, forest_deposit, forest_widths
from slamlib.mock.lines import _LOG_ETA_GRID as _LOG_ETA_GRID_LINES
from slamlib.mock.lines import _LOG_Y_GRID as _LOG_Y_GRID_LINES
from slamlib.mock.lines import (
    _X_GRID,
    LINE_STRENGTH_SCALE,
    SURFACE_TEMPERATURE_RATIO,
    VDW_ENHANCEMENT,
    _doppler_core_table,
    _lorentz_wing_table,
    doppler_core_width,
    load_line_table,
    lorentz_wing_width,
    microturbulence,
    planck_parameter,
)
from slamlib.mock.molecules import (
    MOLECULES,
    molecular_partition_function,
    molecular_pressures,
)
from slamlib.mock.profiles import CORE_SIGMA_PIX

__all__ = [
    "FOREST_FILE",
    "MOLECULE_STRENGTH_SCALE",
    "N_OPACITY_NODES",
    "N_SEGMENTS",
    "STAR_BLOCK",
    "ForestTable",
    "forest_equivalent_widths",
    "forest_optical_depth",
    "load_forest",
    "render_forest",
]

#: File name (in ``slamlib/mock``) of the dense line list, a gzipped copy of linemake-based forest.csv.
FOREST_FILE = "forest.csv.gz"
#: Factor on the opacity of every molecular line (on top of LINE_STRENGTH_SCALE), per
#: molecule. Compared with the real LAMOST DR1 G and K dwarfs of the shared sample
#: (same labels, same normalization), CH and CN lines at full strength make the G band
#: and the blue CN features too deep (the one-layer model's layer and its shared carbon
#: budget overestimate them); 0.3 fits best (the per-star rms residual is lowest between
#: 0.15 and 1). MgH needs no factor (the rms is flat between 0.1 and 1).
MOLECULE_STRENGTH_SCALE: dict[str, float] = {"CH": 0.3, "CN": 0.3, "MgH": 1.0}
#: Wavelength nodes (log-spaced over the forest) at which the continuous opacity is computed.
N_OPACITY_NODES = 512
#: Wavelength segments with their own per-star curve-of-growth tables.
N_SEGMENTS = 8
#: Stars per block of the (star, line) computation.
STAR_BLOCK = 8

_MOLECULE_NAMES = {"12CH": "CH", "12C14N": "CN", "24MgH": "MgH"}
#: Heavier atom of each molecule: its ionization energy enters Unsoeld's C6.
_MOLECULE_VDW_ATOM = {"CH": 6, "CN": 6, "MgH": 12}
_C_CM_S = 2.99792458e10
_CLASSICAL_CROSS_SECTION = 0.026540  # pi e^2 / (m_e c), cm^2 Hz
_BOLTZMANN_CGS = 1.380649e-16
_ATOMIC_MASS_G = 1.66053907e-24
_HC_OVER_K_ANGSTROM_K = 1.4387769e8
_LOG_ETA0_GRID = np.linspace(-6.0, 10.0, 321)
_LOG_Y_GRID = np.linspace(-3.0, 8.0, 221)
_LN10 = float(np.log(10.0))
_LOG_PI = float(np.log10(np.pi))
_DUPLICATE_WAVE = 0.05
_DUPLICATE_EXCITATION = 0.05


@dataclass(frozen=True)
class ForestTable:
    """The forest lines as arrays (one entry per line, sorted by wavelength).

    Attributes
    ----------
    wave : ndarray, shape (n_line,)
        Vacuum rest wavelength, A.
    species : tuple of str
        The distinct species ("Fe I", ..., "CH", "CN", "MgH").
    species_index : ndarray of int, shape (n_line,)
        Index into ``species``.
    excitation : ndarray, shape (n_line,)
        Lower-level excitation energy, eV.
    log_gf : ndarray, shape (n_line,)
    log_c6 : ndarray, shape (n_line,)
        log10 of Unsoeld's C6 (cgs).
    species_element, species_stage : ndarray of int, shape (n_species,)
        Element index and ionization stage (0 neutral, 1 ion) of atomic species; -1 for molecules.
    species_mass : ndarray, shape (n_species,)
        Mass in amu.
    source : ndarray of str, shape (n_line,)
        Source tag of each line (see ``LINES.md``).
    """

    wave: np.ndarray
    species: tuple[str, ...]
    species_index: np.ndarray
    excitation: np.ndarray
    log_gf: np.ndarray
    log_c6: np.ndarray
    species_element: np.ndarray
    species_stage: np.ndarray
    species_mass: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return int(self.wave.size)

    @property
    def is_molecular(self) -> np.ndarray:
        """True for the lines of molecules, shape (n_line,)."""
        return self.species_element[self.species_index] < 0

    def lines_of(self, species: str) -> np.ndarray:
        """Indices of the lines of ``species`` (e.g. "CH", "Fe I")."""
        if species not in self.species:
            raise ValueError(f"the forest has no species {species!r}; it has {list(self.species)}.")
        return np.flatnonzero(self.species_index == self.species.index(species))


def _read_rows() -> list[dict[str, str]]:
    raw = resources.files("slamlib.mock").joinpath(FOREST_FILE).read_bytes()
    rows = list(csv.DictReader(gzip.decompress(raw).decode("utf-8").splitlines()))
    if not rows:
        raise ValueError(f"The shipped line list slamlib/mock/{FOREST_FILE} is empty.")
    return rows


def _is_duplicate(species: np.ndarray, wave: np.ndarray, excitation: np.ndarray) -> np.ndarray:
    """True where a line of the same species lies in lines.csv within 0.05 A and 0.05 eV."""
    strong = load_line_table()
    duplicate = np.zeros(wave.size, dtype=bool)
    for name in np.unique(strong.species):
        mine = np.flatnonzero(species == name)
        theirs = strong.species == name
        if mine.size == 0:
            continue
        close = np.abs(wave[mine, None] - strong.wave[None, theirs]) < _DUPLICATE_WAVE
        close &= np.abs(excitation[mine, None] - strong.excitation[None, theirs]) < _DUPLICATE_EXCITATION
        duplicate[mine] = close.any(axis=1)
    return duplicate


def _unsoeld_log_c6(ionization: np.ndarray, excitation: np.ndarray, wave: np.ndarray) -> np.ndarray:
    """log10 C6 of Unsoeld's approximation, as in :func:`slamlib.mock.lines.line_strengths`."""
    photon_ev = 12398.42 / wave
    upper_gap = np.maximum(ionization - excitation - photon_ev, 0.3)
    lower_gap = np.maximum(ionization - excitation, upper_gap + 0.05)
    return np.log10(0.3e-30 * (1.0 / upper_gap**2 - 1.0 / lower_gap**2))


@cache
def load_forest() -> ForestTable:
    """Read ``slamlib/mock/forest.csv.gz`` without the lines of ``lines.csv`` and without H I.

    Returns
    -------
    ForestTable

    Raises
    ------
    ValueError
        If the file is empty or holds an element without atomic data or an unknown molecule.
    """
    rows = _read_rows()
    names = np.array([_MOLECULE_NAMES.get(row["species"], row["species"]) for row in rows])
    atomic_number = np.array([int(float(row["atomic_number"])) for row in rows])
    molecular = atomic_number == 0
    unknown_molecules = sorted(set(names[molecular]) - set(MOLECULES))
    if unknown_molecules:
        raise ValueError(f"{FOREST_FILE} has molecules without constants: {unknown_molecules}.")
    unknown = sorted(set(atomic_number[~molecular].tolist()) - set(ELEMENT_INDEX))
    if unknown:
        raise ValueError(f"{FOREST_FILE} has elements without atomic data: Z = {unknown}.")
    wave = np.array([float(row["wavelength_vacuum_A"]) for row in rows])
    excitation = np.array([float(row["excitation_eV"]) for row in rows])
    keep = (atomic_number != 1) & ~_is_duplicate(names, wave, excitation)
    order = np.flatnonzero(keep)[np.argsort(wave[keep], kind="stable")]
    names, wave, excitation, atomic_number = names[order], wave[order], excitation[order], atomic_number[order]
    stage = np.array([int(rows[i]["ion_stage"]) for i in order]) - 1
    species = tuple(sorted(set(names.tolist())))
    species_index = np.array([species.index(name) for name in names])
    first = np.array([np.flatnonzero(species_index == k)[0] for k in range(len(species))])
    species_element = np.where(atomic_number[first] > 0, [ELEMENT_INDEX.get(z, -1) for z in atomic_number[first]], -1)
    species_stage = np.where(species_element >= 0, stage[first], -1)
    species_mass = np.empty(len(species))
    vdw_ionization = np.empty(len(species))
    for k, name in enumerate(species):
        if species_element[k] >= 0:
            species_mass[k] = MASSES_AMU[species_element[k]]
            vdw_ionization[k] = ELEMENTS[species_element[k]].ionization_ev[species_stage[k]]
        else:
            species_mass[k] = sum(MASSES_AMU[ELEMENT_INDEX[z]] for z in MOLECULES[name].atoms)
            vdw_ionization[k] = ELEMENTS[ELEMENT_INDEX[_MOLECULE_VDW_ATOM[name]]].ionization_ev[0]
    return ForestTable(
        wave=wave,
        species=species,
        species_index=species_index,
        excitation=excitation,
        log_gf=np.array([float(rows[i]["log_gf"]) for i in order]),
        log_c6=_unsoeld_log_c6(vdw_ionization[species_index], excitation, wave),
        species_element=species_element,
        species_stage=species_stage,
        species_mass=species_mass,
        source=np.array([rows[i]["source"] for i in order]),
    )


@dataclass(frozen=True)
class _Layout:
    """Per-line constants of the fast computation."""

    log_strength: np.ndarray  # log10(scale * cross-section * gf)
    node: np.ndarray  # nearest opacity node
    segment: np.ndarray  # curve-of-growth segment
    log_doppler_factor: np.ndarray  # log10(lambda / c) (A s / cm)
    log_sqrt_pi_doppler: np.ndarray  # log10(sqrt(pi) lambda / c)
    radiative_width: np.ndarray  # Lorentz half width from radiation, A
    vdw_width: np.ndarray  # Lorentz half width per unit P_pert T^-0.7, A
    pixel_position: np.ndarray  # continuous pixel coordinate of the rest wavelength
    angstrom_per_pixel: np.ndarray
    node_wave: np.ndarray
    segment_wave: np.ndarray


@cache
def _layout() -> _Layout:
    forest = load_forest()
    wave = forest.wave
    wave_cm = wave * 1e-8
    scale = np.full(wave.size, LINE_STRENGTH_SCALE)
    for name, factor in MOLECULE_STRENGTH_SCALE.items():
        if name in forest.species:
            scale[forest.lines_of(name)] *= factor
    cross_section = _CLASSICAL_CROSS_SECTION * wave_cm**2 / _C_CM_S * 1e8
    log_nodes = np.linspace(np.log10(wave.min()) - 1e-4, np.log10(wave.max()) + 1e-4, N_OPACITY_NODES)
    node = np.clip(np.rint((np.log10(wave) - log_nodes[0]) / (log_nodes[1] - log_nodes[0])), 0, N_OPACITY_NODES - 1)
    edges = np.linspace(np.log10(wave.min()), np.log10(wave.max()) + 1e-9, N_SEGMENTS + 1)
    segment = np.clip(np.searchsorted(edges, np.log10(wave), side="right") - 1, 0, N_SEGMENTS - 1)
    lorentz_per_gamma = wave_cm**2 / (4.0 * np.pi * _C_CM_S) * 1e8
    return _Layout(
        log_strength=np.log10(scale * cross_section) + forest.log_gf,
        node=node.astype(np.int64),
        segment=segment.astype(np.int64),
        log_doppler_factor=np.log10(wave / _C_CM_S),
        log_sqrt_pi_doppler=np.log10(np.sqrt(np.pi) * wave / _C_CM_S),
        radiative_width=2.223e15 / wave**2 * lorentz_per_gamma,
        vdw_width=VDW_ENHANCEMENT * 10.0 ** (19.6 + 0.4 * forest.log_c6) * lorentz_per_gamma,
        pixel_position=(np.log10(wave) - LOG_WAVE_START) / LOG_WAVE_STEP,
        angstrom_per_pixel=wave * np.log(10.0) * LOG_WAVE_STEP,
        node_wave=10.0**log_nodes,
        segment_wave=10.0 ** (0.5 * (edges[:-1] + edges[1:])),
    )


def _species_log_population(layer: Photosphere, forest: ForestTable) -> np.ndarray:
    """log10 of (absorbers per H nucleus) / U of every species, shape (n_star, n_species)."""
    n_star = layer.teff.size
    result = np.empty((n_star, len(forest.species)))
    atomic = forest.species_element >= 0
    element = forest.species_element[atomic]
    stage = forest.species_stage[atomic]
    result[:, atomic] = (
        layer.log_eps[:, element]
        - 12.0
        + np.log10(layer.ion_fractions[:, element, stage])
        - np.log10(layer.partition[:, element, stage])
    )
    if not np.all(atomic):
        pressures = molecular_pressures(layer)
        hydrogen_pressure = layer.hydrogen_density * _BOLTZMANN_CGS * layer.temperature
        for k in np.flatnonzero(~atomic):
            name = forest.species[k]
            per_h = pressures[name] / hydrogen_pressure
            u_molecule = molecular_partition_function(MOLECULES[name], layer.temperature)
            result[:, k] = np.log10(np.maximum(per_h, 1e-300)) - np.log10(u_molecule)
    return result


def _linear_depth_slope(planck_x: np.ndarray, surface_ratio: float = SURFACE_TEMPERATURE_RATIO) -> np.ndarray:
    """d'(0) of the depth law: depth = d'(0) eta for eta -> 0, = (1 - s^4) / 4 x / (1 - exp(-x))."""
    return 0.25 * (1.0 - surface_ratio**4) * planck_x / -np.expm1(-planck_x)


def _cog_tables(teff: np.ndarray, segment_wave: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-star, per-segment curve-of-growth tables.

    Returns
    -------
    saturation : ndarray, shape (n_star, n_segment, n_eta0)
        Doppler-core equivalent width over its weak-line limit sqrt(pi) eta0 d'(0).
    half_width : ndarray, shape (n_eta0,)
        log10 of the core half width in Doppler widths, 1 + sqrt(ln(1 + 10 eta0)).
    wing : ndarray, shape (n_star, n_segment, n_y)
        Lorentzian-wing equivalent width outside y in units of sqrt(C_L).

    Notes
    -----
    The same values as ``doppler_core_width(eta0, x)`` and ``lorentz_wing_width(y, x)``
    of :mod:`slamlib.mock.lines` (bit for bit: the bilinear interpolation is compiled,
    :func:`slamlib.mock.kernels.bilinear_columns`, with the same operations in the same
    order; see :func:`_cog_tables_reference`).
    """
    planck_x = planck_parameter(segment_wave[None, :], teff[:, None])  # (n_star, n_segment)
    eta0, log_eta, below, log_y, above = _cog_grids()
    core_table = _doppler_core_table(SURFACE_TEMPERATURE_RATIO)
    core = bilinear_columns(
        core_table, _LOG_ETA_GRID_LINES[0], _LOG_ETA_GRID_LINES[1] - _LOG_ETA_GRID_LINES[0], _LOG_ETA_GRID_LINES.size,
        log_eta, _X_GRID[0], _X_GRID[1] - _X_GRID[0], _X_GRID.size, planck_x,
    )
    core[:, :, below] *= 10.0 ** (log_eta[below] - _LOG_ETA_GRID_LINES[0])
    saturation = core / (np.sqrt(np.pi) * eta0 * _linear_depth_slope(planck_x[:, :, None]))
    half_width = np.log10(1.0 + np.sqrt(np.log1p(10.0 * eta0)))
    wing_table = _lorentz_wing_table(SURFACE_TEMPERATURE_RATIO)
    wing = bilinear_columns(
        wing_table, _LOG_Y_GRID_LINES[0], _LOG_Y_GRID_LINES[1] - _LOG_Y_GRID_LINES[0], _LOG_Y_GRID_LINES.size,
        log_y, _X_GRID[0], _X_GRID[1] - _X_GRID[0], _X_GRID.size, planck_x,
    )
    wing[:, :, above] *= 10.0 ** (_LOG_Y_GRID_LINES[-1] - log_y[above])
    return saturation, half_width, wing


@cache
def _cog_grids() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """eta0 of the table, log10 eta0 as lines.doppler_core_width takes it, where that is
    below the tabulated integrals, and the same for y of lines.lorentz_wing_width."""
    eta0 = 10.0**_LOG_ETA0_GRID
    log_eta = np.log10(np.maximum(eta0, 1e-300))
    log_y = np.log10(np.maximum(10.0**_LOG_Y_GRID, 1e-300))
    return eta0, log_eta, log_eta < _LOG_ETA_GRID_LINES[0], log_y, log_y > _LOG_Y_GRID_LINES[-1]


def _cog_tables_reference(teff: np.ndarray, segment_wave: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_cog_tables` with numpy, from the functions of :mod:`slamlib.mock.lines` (for the tests)."""
    planck_x = planck_parameter(segment_wave[None, :], teff[:, None])  # (n_star, n_segment)
    eta0 = 10.0**_LOG_ETA0_GRID
    x = np.broadcast_to(planck_x[:, :, None], (*planck_x.shape, eta0.size))
    core = doppler_core_width(np.broadcast_to(eta0, x.shape), x)
    saturation = core / (np.sqrt(np.pi) * eta0 * _linear_depth_slope(x))
    half_width = np.log10(1.0 + np.sqrt(np.log1p(10.0 * eta0)))
    y = np.broadcast_to(10.0**_LOG_Y_GRID, (*planck_x.shape, _LOG_Y_GRID.size))
    wing = lorentz_wing_width(y, np.broadcast_to(planck_x[:, :, None], y.shape))
    return saturation, half_width, wing


def _lookup(table_flat: np.ndarray, base: np.ndarray, value: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation in rows of a flattened table (clipped at the ends).

    Returns the interpolated values, the grid index and the weight (for reuse).
    """
    position = (value - grid[0]) * (1.0 / (grid[1] - grid[0]))
    np.clip(position, 0.0, grid.size - 1.000001, out=position)
    index = position.astype(np.int64)
    weight = position - index
    flat = index + base
    low = table_flat[flat]
    high = table_flat[flat + 1]
    high -= low
    high *= weight
    high += low
    return high, index, weight


def forest_equivalent_widths(layer: Photosphere, *, star_block: int = STAR_BLOCK) -> np.ndarray:
    """Equivalent widths (A) of all forest lines for every star.

    Parameters
    ----------
    layer : Photosphere
        From :func:`slamlib.mock.atmosphere.photosphere`, shape (n_star, ...).
    star_block : int
        Stars per block (does not change the result).

    Returns
    -------
    ndarray, shape (n_star, n_line)
        Core plus Lorentzian-wing equivalent width, in the order of :func:`load_forest`.
    """
    star_block = _check_star_block(star_block)
    n_star = layer.teff.size
    widths = np.empty((n_star, len(load_forest())))
    if n_star == 0:
        return widths
    terms = _star_terms(layer)
    for start in range(0, n_star, star_block):
        rows = slice(start, min(start + star_block, n_star))
        widths[rows] = forest_widths(*_kernel_arguments(terms, rows))
    return widths


def forest_optical_depth(
    layer: Photosphere, doppler_shift: np.ndarray, n_pix: int = N_PIX, *, star_block: int = STAR_BLOCK
) -> np.ndarray:
    """Optical depth of the forest on the observed pixel grid, straight from the layer.

    The same as ``render_forest(forest_equivalent_widths(layer), doppler_shift, n_pix)``,
    without holding the (n_star, n_line) widths in memory: the compiled
    :func:`slamlib.mock.kernels.forest_deposit` puts every line's pseudo optical depth on
    its rest-frame pixels as soon as its width is known.

    Parameters
    ----------
    layer : Photosphere
    doppler_shift : ndarray, shape (n_star,)
        log10(1 + z).
    n_pix : int
    star_block : int
        Stars per call of the compiled kernel (does not change the result).

    Returns
    -------
    ndarray, shape (n_star, n_pix)
    """
    star_block = _check_star_block(star_block)
    n_star = layer.teff.size
    if n_star == 0:
        return np.zeros((0, n_pix))
    layout = _layout()
    column, upper, pad = _deposit_columns(n_pix)
    deposit = np.empty((n_star, n_pix + 2 * pad))
    terms = _star_terms(layer)
    for start in range(0, n_star, star_block):
        rows = slice(start, min(start + star_block, n_star))
        deposit[rows] = forest_deposit(
            *_kernel_arguments(terms, rows), layout.angstrom_per_pixel, _PSEUDO_K, column, upper, n_pix + 2 * pad
        )
    return _render_deposit(deposit, pad, doppler_shift, n_pix)


def _check_star_block(star_block) -> int:
    if not isinstance(star_block, (int, np.integer)) or star_block < 1:
        raise ValueError(f"star_block must be a positive integer, got {star_block!r}.")
    return int(star_block)


@dataclass(frozen=True)
class _StarTerms:
    """Per-star (and per star and species or opacity node) factors of the forest widths."""

    log_population_eta0: np.ndarray  # (n_star, n_species)
    theta: np.ndarray  # (n_star,)
    log_node: np.ndarray  # (n_star, n_node): log10(stimulated emission / kappa)
    log_slope: np.ndarray  # (n_star, n_node): log10 d'(0)
    log_velocity: np.ndarray  # (n_star, n_species): log10 Doppler velocity, cm/s
    perturbers: np.ndarray  # (n_star,): P_pert T^-0.7
    saturation: np.ndarray  # (n_star, n_segment, n_eta0)
    log_half_width: np.ndarray  # (n_eta0,)
    wing: np.ndarray  # (n_star, n_segment, n_y)


def _star_terms(layer: Photosphere) -> _StarTerms:
    forest = load_forest()
    layout = _layout()
    temperature = layer.temperature
    theta = THETA_CONSTANT / temperature
    log_population = _species_log_population(layer, forest)  # (n_star, n_species)
    # Continuous opacity (with the haze), stimulated emission and d'(0) at the nodes.
    nodes = layout.node_wave
    kappa = layer.continuous_opacity(nodes) * haze_opacity_factor(layer, nodes)
    stimulated = -np.expm1(-_HC_OVER_K_ANGSTROM_K / (nodes[None, :] * temperature[:, None]))
    log_node = np.log10(stimulated / kappa)  # (n_star, n_node)
    log_slope = np.log10(_linear_depth_slope(planck_parameter(nodes[None, :], layer.teff[:, None])))
    # Doppler velocity (cm/s) of each species in each star.
    thermal = 2.0 * _BOLTZMANN_CGS * temperature[:, None] / (forest.species_mass[None, :] * _ATOMIC_MASS_G)
    log_velocity = 0.5 * np.log10(thermal + (1e5 * microturbulence(layer.logg))[:, None] ** 2)
    saturation, log_half_width, wing = _cog_tables(layer.teff, layout.segment_wave)
    return _StarTerms(
        # Per species: log population of the line's absorbers and log eta0 - log eta.
        log_population_eta0=log_population - log_velocity,
        theta=theta,
        log_node=log_node,
        log_slope=log_slope,
        log_velocity=log_velocity,
        perturbers=layer.perturber_pressure * temperature**-0.7,
        saturation=saturation,
        log_half_width=log_half_width,
        wing=wing,
    )


def _kernel_arguments(terms: _StarTerms, rows: slice) -> tuple:
    """The arguments of :func:`slamlib.mock.kernels.forest_widths` for the stars ``rows``."""
    forest = load_forest()
    layout = _layout()
    return (
        np.ascontiguousarray(terms.log_population_eta0[rows]),
        np.ascontiguousarray(terms.theta[rows]),
        np.ascontiguousarray(terms.log_node[rows]),
        10.0 ** terms.log_slope[rows],
        np.ascontiguousarray(terms.log_velocity[rows]),
        np.ascontiguousarray(terms.perturbers[rows]),
        np.ascontiguousarray(terms.saturation[rows]),
        np.ascontiguousarray(terms.wing[rows]),
        terms.log_half_width[:-1].copy(),
        np.diff(terms.log_half_width),
        float(_LOG_ETA0_GRID[0]),
        float(1.0 / (_LOG_ETA0_GRID[1] - _LOG_ETA0_GRID[0])),
        int(_LOG_ETA0_GRID.size),
        float(_LOG_Y_GRID[0]),
        float(1.0 / (_LOG_Y_GRID[1] - _LOG_Y_GRID[0])),
        int(_LOG_Y_GRID.size),
        forest.species_index,
        forest.excitation,
        layout.node,
        layout.segment,
        layout.log_strength - layout.log_sqrt_pi_doppler,
        layout.log_sqrt_pi_doppler,
        layout.log_doppler_factor,
        layout.vdw_width,
        layout.radiative_width,
    )


def _reference_equivalent_widths(layer: Photosphere, star_block: int = STAR_BLOCK) -> np.ndarray:
    """:func:`forest_equivalent_widths` computed with numpy (the reference of the compiled kernels)."""
    widths = np.empty((layer.teff.size, len(load_forest())))
    for rows, block in _width_blocks(layer, int(star_block)):
        widths[rows] = block
    return widths


def _width_blocks(layer: Photosphere, star_block: int):
    """Yield (rows, widths of those stars) block by block (numpy reference)."""
    forest = load_forest()
    layout = _layout()
    n_star = layer.teff.size
    if n_star == 0:
        return
    terms = _star_terms(layer)
    theta = terms.theta
    log_population_eta0 = terms.log_population_eta0
    log_node, log_slope, log_velocity, perturbers = terms.log_node, terms.log_slope, terms.log_velocity, terms.perturbers
    saturation, log_half_width, wing = _cog_tables_reference(layer.teff, layout.segment_wave)
    n_eta, n_y = _LOG_ETA0_GRID.size, _LOG_Y_GRID.size
    species_index = forest.species_index
    log_strength_eta0 = layout.log_strength - layout.log_sqrt_pi_doppler
    half_low = log_half_width[:-1]
    half_step = np.diff(log_half_width)
    for start in range(0, n_star, star_block):
        rows = slice(start, min(start + star_block, n_star))
        n_rows = rows.stop - rows.start
        local = np.arange(n_rows)[:, None]
        # log eta0 = log(strength) + log(population / U) - theta chi + log(stim / kappa) - log(sqrt(pi) dlambda_D)
        log_eta0 = np.multiply(theta[rows, None], forest.excitation[None, :])
        np.subtract(log_population_eta0[rows][:, species_index], log_eta0, out=log_eta0)
        log_eta0 += log_node[rows][:, layout.node]
        log_eta0 += log_strength_eta0
        log_velocity_lines = log_velocity[rows][:, species_index]
        segment_base = local * N_SEGMENTS + layout.segment[None, :]
        core, index, weight = _lookup(saturation[rows].ravel(), segment_base * n_eta, log_eta0, _LOG_ETA0_GRID)
        # log eta (integrated) = log eta0 + log(sqrt(pi) dlambda_D)
        log_eta = log_eta0 + log_velocity_lines
        log_eta += layout.log_sqrt_pi_doppler
        # Doppler core: weak-line width d'(0) eta times the saturation factor.
        core_log = log_eta + log_slope[rows][:, layout.node]
        core *= np.exp(core_log * _LN10, out=core_log)
        # log of the core half width x_D (1 + sqrt(ln(1 + 10 eta0))), minus log sqrt(C_L).
        # log y_core = log(x_core / sqrt(C_L)), x_core = dlambda_D (1 + sqrt(ln(1 + 10 eta0))).
        log_y = half_step[index]
        log_y *= weight
        log_y += half_low[index]
        log_y += log_velocity_lines
        log_y += layout.log_doppler_factor
        lorentz = layout.vdw_width[None, :] * perturbers[rows, None]
        lorentz += layout.radiative_width
        log_root_c = np.log10(lorentz, out=lorentz)
        log_root_c += log_eta
        log_root_c -= _LOG_PI
        log_root_c *= 0.5
        log_y -= log_root_c
        wing_value, _, _ = _lookup(wing[rows].ravel(), segment_base * n_y, log_y, _LOG_Y_GRID)
        wing_value *= np.exp(log_root_c * _LN10, out=log_root_c)
        wing_value += core
        yield rows, wing_value


#: Widest pseudo depth per line: t = E / (1 - E / k) is used below E = k / 2 (k = 4 sqrt(pi) sigma).
_PSEUDO_K = 4.0 * np.sqrt(np.pi) * CORE_SIGMA_PIX


def _pseudo_area(widths: np.ndarray, layout: _Layout) -> np.ndarray:
    """Pseudo optical-depth areas (pixels) t = E / (1 - E / k) of equivalent widths (A)."""
    width_pix = widths / layout.angstrom_per_pixel[None, :]
    np.clip(width_pix, 0.0, 0.5 * _PSEUDO_K, out=width_pix)
    return width_pix / (1.0 - width_pix * (1.0 / _PSEUDO_K))


def render_forest(widths: np.ndarray, doppler_shift: np.ndarray, n_pix: int = N_PIX) -> np.ndarray:
    """Optical depth of the forest on the observed pixel grid.

    Parameters
    ----------
    widths : ndarray, shape (n_star, n_line)
        Equivalent widths (A) from :func:`forest_equivalent_widths`.
    doppler_shift : ndarray, shape (n_star,)
        log10(1 + z) of each star.
    n_pix : int

    Returns
    -------
    ndarray, shape (n_star, n_pix)
        tau; the normalized flux of the forest alone is exp(-tau).

    Notes
    -----
    The pseudo optical-depth area t of a line of equivalent width E (pixels) is
    E / (1 - E / k), k = 4 sqrt(pi) sigma, the inverse of E(t) = t - t^2 / k + ... of an
    instrumental Gaussian (better than 0.1 % for E < 0.5 pixel; E is capped at k / 2).
    The areas are put on the two pixels around each rest wavelength (a fixed sparse
    matrix, the same for every star), and the instrumental Gaussian of each star is
    sampled at its own sub-pixel Doppler offset and shifted by its whole-pixel offset, so
    every line lands at lambda (1 + v / c).
    """
    layout = _layout()
    widths = np.asarray(widths, dtype=float)
    if widths.ndim != 2 or widths.shape[1] != layout.pixel_position.size:
        raise ValueError(f"widths must have shape (n_star, {layout.pixel_position.size}), got {widths.shape}.")
    return _render_areas(np.ascontiguousarray(_pseudo_area(widths, layout).T), doppler_shift, n_pix)


def _render_areas(areas: np.ndarray, doppler_shift: np.ndarray, n_pix: int) -> np.ndarray:
    """tau on the observed grid from pseudo-depth areas of shape (n_line, n_star)."""
    n_star = areas.shape[1]
    if n_star == 0:
        return np.zeros((0, n_pix))
    deposit_matrix, pad = _deposit_matrix(n_pix)
    deposit = (deposit_matrix @ areas).T  # (n_star, n_pix + 2 pad), rest-frame pixels
    return _render_deposit(deposit, pad, doppler_shift, n_pix)


def _render_deposit(deposit: np.ndarray, pad: int, doppler_shift: np.ndarray, n_pix: int) -> np.ndarray:
    """tau on the observed grid from the areas on the rest-frame pixels, shape (n_star, n_pix + 2 pad)."""
    n_star = deposit.shape[0]
    shift = np.asarray(doppler_shift, dtype=float) / LOG_WAVE_STEP
    whole = np.floor(shift)
    fraction = shift - whole
    sigma = np.sqrt(CORE_SIGMA_PIX**2 + 1.0 / 12.0 - 1.0 / 6.0)
    offsets = np.arange(-_TAP_HALF, _TAP_HALF + 1)
    taps = np.exp(-0.5 * ((offsets[None, :] - fraction[:, None]) / sigma) ** 2)
    taps /= taps.sum(axis=1, keepdims=True)
    # Observed pixel j receives rest pixel j - whole - offset with weight taps[offset]:
    # gather the rest pixels j - whole - _TAP_HALF ... j - whole + _TAP_HALF once.
    width = deposit.shape[1]
    span = n_pix + 2 * _TAP_HALF
    source = np.arange(span)[None, :] + (pad - _TAP_HALF) - whole.astype(np.int64)[:, None]
    valid = (source >= 0) & (source < width)
    window = np.take_along_axis(deposit, np.clip(source, 0, width - 1), axis=1)
    window[~valid] = 0.0
    tau = np.zeros((n_star, n_pix))
    for k, offset in enumerate(offsets):
        first = _TAP_HALF - offset
        tau += taps[:, k : k + 1] * window[:, first : first + n_pix]
    return tau


_TAP_HALF = 6


@cache
def _deposit_matrix(n_pix: int):
    """Sparse (n_pix + 2 pad, n_line) matrix putting each line's area on its two nearest rest pixels."""
    from scipy.sparse import csr_matrix

    column, upper, pad = _deposit_columns(n_pix)
    n_line = column.size
    lines = np.flatnonzero(column >= 0)
    row_index = np.concatenate([column[lines], column[lines] + 1])
    col_index = np.concatenate([lines, lines])
    values = np.concatenate([1.0 - upper[lines], upper[lines]])
    matrix = csr_matrix((values, (row_index, col_index)), shape=(n_pix + 2 * pad, n_line))
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix, pad


@cache
def _deposit_columns(n_pix: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The rest pixel (of the padded grid) left of each line, -1 off the grid, its weight on
    the pixel to the right, and the pad (the one derivation; :func:`_deposit_matrix` is built from it)."""
    layout = _layout()
    pad = _TAP_HALF + 2
    position = layout.pixel_position
    left = np.floor(position)
    upper = position - left
    column = left.astype(np.int64) + pad
    inside = (column >= 0) & (column + 1 < n_pix + 2 * pad)
    return np.where(inside, column, -1), upper, pad
