"""Compiled loops of the mock synthesis (numba).

The line forest (:mod:`slamlib.mock.forest`) needs a few dozen elementwise operations on
every (star, line) pair, ~20,000 lines per star; numpy would make a full pass over
(n_star, n_line) temporaries for each of them. The kernels here do the same arithmetic,
operation by operation and in the same order as the numpy formulation they replace (kept
in :mod:`slamlib.mock.forest` as the reference a test compares against), one star and
one line at a time:

* :func:`cog_tables` -- the per-star, per-segment curve-of-growth tables (bilinear
  interpolation in the tabulated integrals of :mod:`slamlib.mock.lines`);
* :func:`forest_widths` -- the equivalent width of every forest line in every star;
* :func:`forest_deposit` -- the same, turned into pseudo optical-depth areas and put
  on the two nearest rest-frame pixels (the fused form of
  ``deposit_matrix @ pseudo_area(widths)``).

Each star is computed on its own, so a star's result does not depend on the other stars
of the chunk, and the loops run in a fixed order: results are reproducible bit for bit on
one machine. They differ from the numpy formulation only by the rounding of ``exp`` and
``log10`` (a few units in the last place). Compiled once (``cache=True`` keeps the machine
code in ``__pycache__``); no ``fastmath``, so the order of every operation is kept.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["bilinear_columns", "forest_deposit", "forest_widths"]

_LN10 = float(np.log(10.0))
_LOG_PI = float(np.log10(np.pi))
_INV_LN10 = 1.0 / _LN10
_INV_PI = 1.0 / np.pi


@njit(cache=True, nogil=True)
def bilinear_columns(table, grid_a0, step_a, n_a, log_a, grid_b0, step_b, n_b, b):
    """``lines._bilinear(table, grid_a, grid_b, log_a[None, None, :], b[:, :, None])``.

    Parameters
    ----------
    table : ndarray, shape (n_a, n_b)
    grid_a0, step_a, n_a, grid_b0, step_b, n_b : the two regular grids
    log_a : ndarray, shape (n_value,)
        Coordinates along the first axis (the same for every (star, segment)).
    b : ndarray, shape (n_star, n_segment)
        Coordinates along the second axis.

    Returns
    -------
    ndarray, shape (n_star, n_segment, n_value)
    """
    n_star, n_segment = b.shape
    n_value = log_a.size
    out = np.empty((n_star, n_segment, n_value))
    top_a = n_a - 1.000001
    top_b = n_b - 1.000001
    for s in range(n_star):
        for g in range(n_segment):
            fb = (b[s, g] - grid_b0) / step_b
            fb = min(max(fb, 0.0), top_b)
            ib = int(fb)
            wb = fb - ib
            for k in range(n_value):
                fa = (log_a[k] - grid_a0) / step_a
                fa = min(max(fa, 0.0), top_a)
                ia = int(fa)
                wa = fa - ia
                out[s, g, k] = (
                    table[ia, ib] * (1 - wa) * (1 - wb)
                    + table[ia + 1, ib] * wa * (1 - wb)
                    + table[ia, ib + 1] * (1 - wa) * wb
                    + table[ia + 1, ib + 1] * wa * wb
                )
    return out


@njit(cache=True, nogil=True, inline="always")
def _lookup(table, s, segment, n_grid, value, grid0, inv_step):
    """Linear interpolation in ``table[s, segment, :]`` (clipped), and the index and weight."""
    position = (value - grid0) * inv_step
    position = min(max(position, 0.0), n_grid - 1.000001)
    index = int(position)
    weight = position - index
    low = table[s, segment, index]
    high = table[s, segment, index + 1]
    return (high - low) * weight + low, index, weight


@njit(cache=True, nogil=True, inline="always")
def _line_width(
    s, line, log_population_eta0, theta, log_node, slope, log_velocity, perturbers, saturation, wing,
    half_low, half_step, eta_grid0, eta_inv_step, n_eta, y_grid0, y_inv_step, n_y,
    species_index, excitation, node, segment, log_strength_eta0, log_sqrt_pi_doppler, log_doppler_factor,
    vdw_width, radiative_width,
):
    """Equivalent width (A) of forest line ``line`` in star ``s`` (see ``forest._width_blocks``)."""
    species = species_index[line]
    line_node = node[line]
    line_segment = segment[line]
    # log eta0 = log(population / U) - theta chi + log(stim / kappa) + log(strength / (sqrt(pi) dlambda_D))
    log_eta0 = log_population_eta0[s, species] - theta[s] * excitation[line]
    log_eta0 += log_node[s, line_node]
    log_eta0 += log_strength_eta0[line]
    core, index, weight = _lookup(saturation, s, line_segment, n_eta, log_eta0, eta_grid0, eta_inv_step)
    velocity = log_velocity[s, species]
    log_eta = log_eta0 + velocity
    log_eta += log_sqrt_pi_doppler[line]
    # eta (integrated, A): the Doppler core is d'(0) eta times the saturation factor.
    eta = math.exp(log_eta * _LN10)
    core *= eta * slope[s, line_node]
    # log y_core = log(x_core / sqrt(C_L)), x_core = dlambda_D (1 + sqrt(ln(1 + 10 eta0))),
    # C_L = eta Gamma / pi.
    lorentz = vdw_width[line] * perturbers[s]
    lorentz += radiative_width[line]
    log_root_c = math.log(lorentz) * _INV_LN10
    log_root_c += log_eta
    log_root_c -= _LOG_PI
    log_root_c *= 0.5
    log_y = half_step[index] * weight
    log_y += half_low[index]
    log_y += velocity
    log_y += log_doppler_factor[line]
    log_y -= log_root_c
    wing_value, _, _ = _lookup(wing, s, line_segment, n_y, log_y, y_grid0, y_inv_step)
    wing_value *= math.sqrt(lorentz * eta * _INV_PI)
    return wing_value + core


@njit(cache=True, nogil=True)
def forest_widths(
    log_population_eta0, theta, log_node, slope, log_velocity, perturbers, saturation, wing,
    half_low, half_step, eta_grid0, eta_inv_step, n_eta, y_grid0, y_inv_step, n_y,
    species_index, excitation, node, segment, log_strength_eta0, log_sqrt_pi_doppler, log_doppler_factor,
    vdw_width, radiative_width,
):
    """Equivalent widths (A) of every forest line in every star, shape (n_star, n_line)."""
    n_star = theta.size
    n_line = excitation.size
    out = np.empty((n_star, n_line))
    for s in range(n_star):
        for line in range(n_line):
            out[s, line] = _line_width(
                s, line, log_population_eta0, theta, log_node, slope, log_velocity, perturbers, saturation, wing,
                half_low, half_step, eta_grid0, eta_inv_step, n_eta, y_grid0, y_inv_step, n_y,
                species_index, excitation, node, segment, log_strength_eta0, log_sqrt_pi_doppler, log_doppler_factor,
                vdw_width, radiative_width,
            )
    return out


@njit(cache=True, nogil=True)
def forest_deposit(
    log_population_eta0, theta, log_node, slope, log_velocity, perturbers, saturation, wing,
    half_low, half_step, eta_grid0, eta_inv_step, n_eta, y_grid0, y_inv_step, n_y,
    species_index, excitation, node, segment, log_strength_eta0, log_sqrt_pi_doppler, log_doppler_factor,
    vdw_width, radiative_width,
    angstrom_per_pixel, pseudo_k, column, upper, n_column,
):
    """Pseudo optical-depth areas of the forest lines on the rest-frame pixels, (n_star, n_column).

    Line ``l`` (taken in the order of the table, i.e. by wavelength; ``column[l] < 0``
    skips it) adds ``(1 - upper[l]) t`` to pixel ``column[l]`` and ``upper[l] t`` to
    ``column[l] + 1``, t = E / (1 - E / k) of its width E in pixels, clipped to
    [0, k / 2] (``forest._pseudo_area``).
    """
    n_star = theta.size
    n_line = excitation.size
    out = np.zeros((n_star, n_column))
    half_k = 0.5 * pseudo_k
    inv_k = 1.0 / pseudo_k
    for s in range(n_star):
        for line in range(n_line):
            first = column[line]
            if first < 0:
                continue
            width = _line_width(
                s, line, log_population_eta0, theta, log_node, slope, log_velocity, perturbers, saturation, wing,
                half_low, half_step, eta_grid0, eta_inv_step, n_eta, y_grid0, y_inv_step, n_y,
                species_index, excitation, node, segment, log_strength_eta0, log_sqrt_pi_doppler, log_doppler_factor,
                vdw_width, radiative_width,
            )
            width_pix = width / angstrom_per_pixel[line]
            width_pix = min(max(width_pix, 0.0), half_k)
            area = width_pix / (1.0 - width_pix * inv_k)
            out[s, first] += (1.0 - upper[line]) * area
            out[s, first + 1] += upper[line] * area
    return out

