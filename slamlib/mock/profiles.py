"""Render atomic line profiles on the observed LAMOST pixel grid.

Each line's intrinsic depth profile is split at the edge of its Doppler core, |x| = x_D:

* the **core** (|x| < x_D, at most a few tenths of an A wide, far narrower than the
  instrumental FWHM of ~2.8 A) is treated as a delta function of area W_core; after
  convolution with the Gaussian instrumental profile (R = 1800) it is a Gaussian of
  sigma = 1.02 pixels. Cores of all lines combine as pseudo optical depths,
  F = exp(-sum t_i g_i), with t_i chosen so that an isolated line keeps its equivalent
  width exactly;
* the **wings** of the strong lines (hydrogen, Ca II, Mg b, Na D, Ca I 4227, the strongest
  Fe I lines...) are computed explicitly: depth d(eta(x)) with
  eta(x) = C_L / x^2 + C_S / (|x|^2.5 + (2.5 w_S)^2.5) (van der Waals or self-broadening,
  and Stark) for |x| > x_D, continued flat at its edge value inside the core (that
  plateau is taken out of the core's area), averaged over sub-pixels near the centre,
  convolved with the instrumental profile and combined multiplicatively,
  F *= 1 - D(x). So their wings change with pressure (log g) and electron density as
  the curve of growth says;
* the Lorentzian wings of weaker lines are narrower than a pixel and are added to
  their core area.

Everything is evaluated on the observed pixel grid: a star's radial velocity moves every
line centre to lambda (1 + v / c) (wing distances are converted back to the rest frame),
so no resampling is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.special import ndtr

from slamlib.mock.grid import (
    INSTRUMENT_SIGMA_PIX,
    LOG_WAVE_START,
    LOG_WAVE_STEP,
    N_PIX,
    trapezoid,
)
from slamlib.mock.lines import LineStrengths, LineTable, depth_law, stark_eta

__all__ = ["CORE_SIGMA_PIX", "StrongLineSet", "strong_line_set", "render_cores", "render_wings", "instrument_kernel"]

#: Sigma (pixels) of a delta-function line after the instrument and the pixel boxcar.
CORE_SIGMA_PIX = float(np.sqrt(INSTRUMENT_SIGMA_PIX**2 + 1.0 / 12.0))
_CORE_HALF_WINDOW = int(np.ceil(5.5 * CORE_SIGMA_PIX))
_SUBPIXELS = 3


def instrument_kernel() -> np.ndarray:
    """Pixel-integrated Gaussian of sigma :data:`INSTRUMENT_SIGMA_PIX`, normalized to 1 (9 taps)."""
    edges = np.arange(-4.5, 5.0, 1.0)
    kernel = np.diff(ndtr(edges / INSTRUMENT_SIGMA_PIX))
    return kernel / kernel.sum()


@cache
def _pseudo_depth_table() -> tuple[np.ndarray, np.ndarray]:
    """Equivalent width E(t) = int 1 - exp(-t G(x)) dx of a unit-area Gaussian, sigma = CORE_SIGMA_PIX."""
    log_t = np.linspace(-6.0, 4.0, 401)
    x = np.linspace(0.0, 12.0 * CORE_SIGMA_PIX, 1201)
    gauss = np.exp(-0.5 * (x / CORE_SIGMA_PIX) ** 2) / (np.sqrt(2.0 * np.pi) * CORE_SIGMA_PIX)
    width = 2.0 * trapezoid(-np.expm1(-(10.0**log_t)[:, None] * gauss[None, :]), x)
    return np.log10(width), log_t


def _pseudo_depth(width_pix: np.ndarray) -> np.ndarray:
    """Invert E(t): the pseudo optical-depth area t giving equivalent width ``width_pix``."""
    log_width, log_t = _pseudo_depth_table()
    log_w = np.log10(np.maximum(width_pix, 1e-300))
    t = 10.0 ** np.interp(log_w, log_width, log_t)
    return np.where(log_w < log_width[0], width_pix, t)


def pixel_position(wave: np.ndarray) -> np.ndarray:
    """Continuous pixel coordinate of wavelength ``wave`` (A) on the LAMOST grid."""
    return (np.log10(wave) - LOG_WAVE_START) / LOG_WAVE_STEP


def render_cores(
    line_wave: np.ndarray,
    core_width: np.ndarray,
    doppler_shift: np.ndarray,
    n_pix: int = N_PIX,
) -> np.ndarray:
    """Pseudo optical depth of all line cores on the pixel grid.

    Parameters
    ----------
    line_wave : ndarray, shape (n_line,)
        Rest wavelengths (A).
    core_width : ndarray, shape (n_star, n_line)
        Equivalent widths (A) to render as instrumental Gaussians.
    doppler_shift : ndarray, shape (n_star,)
        log10(1 + z) of each star.
    n_pix : int

    Returns
    -------
    ndarray, shape (n_star, n_pix)
        Optical depth tau; the normalized flux of the cores is exp(-tau).
    """
    n_star = core_width.shape[0]
    if n_star == 0:
        return np.zeros((0, n_pix))
    position = pixel_position(line_wave)[None, :] + (doppler_shift / LOG_WAVE_STEP)[:, None]  # (n_star, n_line)
    # Each star's window starts at its own shifted line position, so a star's result does
    # not depend on the other stars it is computed with.
    start = np.floor(position).astype(np.int64) - _CORE_HALF_WINDOW
    offsets = np.arange(2 * _CORE_HALF_WINDOW + 3)
    wave_step = line_wave * np.log(10.0) * LOG_WAVE_STEP  # A per pixel at each line
    area = _pseudo_depth(core_width / wave_step[None, :])
    edges = ((start - position)[:, :, None] + offsets[None, None, :] - 0.5) / CORE_SIGMA_PIX
    values = area[:, :, None] * np.diff(ndtr(edges), axis=-1)
    return _accumulate(start, values, n_pix)


def _accumulate(start: np.ndarray, values: np.ndarray, n_pix: int) -> np.ndarray:
    """Sum ``values[n, k, j]`` into pixel ``start[n, k] + j`` of star n (pixels off the grid dropped)."""
    n_star = values.shape[0]
    pad = int(max(0, -start.min(), start.max() + values.shape[-1] - n_pix)) + 1
    width = n_pix + 2 * pad
    columns = start[:, :, None] + np.arange(values.shape[-1])[None, None, :] + pad
    flat = (np.arange(n_star)[:, None, None] * width + columns).ravel()
    total = np.bincount(flat, weights=values.ravel(), minlength=n_star * width).reshape(n_star, width)
    return total[:, pad : pad + n_pix]


@dataclass(frozen=True)
class StrongLineSet:
    """Lines whose wings are rendered explicitly.

    Attributes
    ----------
    index : ndarray of int
        Indices into the line table.
    half_window : ndarray of int
        Half width of the rendered window, pixels.
    """

    index: np.ndarray
    half_window: np.ndarray


def strong_line_set(lines: LineTable) -> StrongLineSet:
    """Choose the lines whose wings are rendered explicitly.

    All H I lines and the Ca II H, K and infrared-triplet lines, plus every line whose
    Lorentzian wing reaches eta = 1 farther than 0.5 A from the line centre
    (sqrt(C_L) > 0.5 A) in one of three reference stars (4300 K and 5000 K dwarfs and a
    4500 K giant, [M/H] = +0.3): in practice the Mg b triplet, Na D, Ca I 4227 and the
    strongest low-excitation Fe I lines. The window half width of a metal line is
    ten times that reach (25-80 pixels).
    """
    return _strong_line_set_cached(id(lines), lines)


_STRONG_CACHE: dict[int, StrongLineSet] = {}


def _strong_line_set_cached(key: int, lines: LineTable) -> StrongLineSet:
    if key in _STRONG_CACHE:
        return _STRONG_CACHE[key]
    from slamlib.mock.atmosphere import photosphere
    from slamlib.mock.atoms import log_abundances
    from slamlib.mock.lines import line_strengths

    teff = np.array([4300.0, 5000.0, 4500.0])
    logg = np.array([4.7, 4.6, 2.0])
    metal = np.full(3, 0.3)
    zero = np.zeros(3)
    reference = line_strengths(photosphere(teff, logg, log_abundances(metal, zero, zero, zero)), lines)
    wing_reach = np.sqrt(reference.lorentz_coefficient).max(axis=0)
    is_calcium_ion = (lines.species == "Ca II") & (lines.excitation < 2.0)
    chosen = lines.is_hydrogen | is_calcium_ion | (wing_reach > 0.5)
    index = np.flatnonzero(chosen)
    pixel_step = lines.wave[index] * np.log(10.0) * LOG_WAVE_STEP
    half = np.clip(np.ceil(10.0 * wing_reach[index] / pixel_step), 25, 80)
    upper = lines.hydrogen_upper[index]
    balmer = lines.hydrogen_lower[index] == 2
    half = np.where(balmer & (upper == 3), 150, half)
    half = np.where(balmer & (upper == 4), 140, half)
    half = np.where(balmer & (upper == 5), 120, half)
    half = np.where(balmer & (upper == 6), 100, half)
    half = np.where(balmer & (upper == 7), 70, half)
    half = np.where(balmer & (upper >= 8), np.maximum(60 - 4 * (upper - 8), 25), half)
    half = np.where(lines.hydrogen_lower[index] == 3, 30, half)
    resonance_k_h = is_calcium_ion[index] & (lines.excitation[index] < 0.1)
    half = np.where(resonance_k_h, 130, half)
    result = StrongLineSet(index=index, half_window=half.astype(int))
    _STRONG_CACHE[key] = result
    return result


def render_wings(
    strengths: LineStrengths,
    lines: LineTable,
    strong: StrongLineSet,
    doppler_shift: np.ndarray,
    n_pix: int = N_PIX,
) -> np.ndarray:
    """log of the normalized flux of the explicit wings of the strong lines.

    Parameters
    ----------
    strengths : LineStrengths
        From :func:`slamlib.mock.lines.line_strengths`.
    lines : LineTable
    strong : StrongLineSet
    doppler_shift : ndarray, shape (n_star,)
        log10(1 + z).
    n_pix : int

    Returns
    -------
    ndarray, shape (n_star, n_pix)
        sum over strong lines of log(1 - D), D the instrument-convolved wing depth.

    Notes
    -----
    The depth is averaged over three sub-pixels within ``_SUBPIXEL_HALF_RANGE`` pixels of
    the line centre, where the profile changes on sub-pixel scales, and sampled at pixel
    centres farther out. Each star's window is centred on its own shifted line, so a
    star's result does not depend on the other stars it is computed with.
    """
    n_star = doppler_shift.size
    if n_star == 0:
        return np.zeros((0, n_pix))
    shift_pix = np.rint(doppler_shift / LOG_WAVE_STEP).astype(np.int64)
    kernel = instrument_kernel()
    kernel_half = kernel.size // 2
    pad = int(strong.half_window.max()) + kernel_half + int(np.abs(shift_pix).max()) + 2
    log_flux = np.zeros((n_star, n_pix + 2 * pad))
    rows = np.arange(n_star)[:, None]
    sub = (np.arange(_SUBPIXELS) + 0.5) / _SUBPIXELS - 0.5
    shift_factor = 10.0**doppler_shift
    for line, half in zip(strong.index, strong.half_window):
        # Window centred on each star's own (integer-rounded) shifted line position.
        n_win = 2 * (half + kernel_half) + 1
        center = int(np.rint(pixel_position(lines.wave[line])))
        first = center - half - kernel_half + shift_pix  # (n_star,)
        pixels = first[:, None] + np.arange(n_win)[None, :]  # (n_star, n_win)
        rest_wave = 10.0 ** (LOG_WAVE_START + LOG_WAVE_STEP * pixels) / shift_factor[:, None]
        depth = _wing_depth(strengths, line, lines.wave[line], rest_wave)
        inner = slice(half + kernel_half - _SUBPIXEL_HALF_RANGE, half + kernel_half + _SUBPIXEL_HALF_RANGE + 1)
        inner_pixels = pixels[:, inner, None] + sub[None, None, :]
        inner_wave = 10.0 ** (LOG_WAVE_START + LOG_WAVE_STEP * inner_pixels) / shift_factor[:, None, None]
        depth[:, inner] = _wing_depth(strengths, line, lines.wave[line], inner_wave).mean(axis=-1)
        convolved = np.zeros_like(depth)
        for k, weight in enumerate(kernel):
            shift = k - kernel_half
            if shift >= 0:
                convolved[:, shift:] += weight * depth[:, : n_win - shift]
            else:
                convolved[:, :shift] += weight * depth[:, -shift:]
        log_flux[rows, pixels + pad] += np.log1p(-convolved)
    return log_flux[:, pad : pad + n_pix]


_SUBPIXEL_HALF_RANGE = 4


def _wing_depth(strengths: LineStrengths, line: int, line_wave: float, rest_wave: np.ndarray) -> np.ndarray:
    """Wing depth d(eta(x)) at rest-frame wavelengths ``rest_wave`` (first axis = star).

    Inside the Doppler core the wing continues flat at its depth at the core edge.
    """
    extra = (1,) * (rest_wave.ndim - 1)
    column = (slice(None), line)
    core = strengths.core_half_width[column].reshape(-1, *extra)
    distance = np.maximum(np.abs(rest_wave - line_wave), core)
    eta = strengths.lorentz_coefficient[column].reshape(-1, *extra) / distance**2
    if np.any(strengths.stark_coefficient[column] > 0):
        stark = strengths.stark_coefficient[column].reshape(-1, *extra)
        stark_width = strengths.stark_width[column].reshape(-1, *extra)
        eta = eta + stark_eta(stark, stark_width, distance)
    surface_ratio = float(strengths.surface_ratio[0, line])
    return depth_law(eta, strengths.planck_x[column].reshape(-1, *extra), surface_ratio)
