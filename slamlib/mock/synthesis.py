"""``synthesize``: LAMOST-like spectra from stellar labels.

Pipeline for a chunk of stars (all steps vectorized over stars, lines and pixels):

1. abundances from [M/H], [alpha/M], [C/M], [N/M] (:mod:`.atoms`);
2. the line-forming layer: T, P_e, P_g, ionization (:mod:`.atmosphere`);
3. line strengths and curve of growth (:mod:`.lines`), rendered on the observed pixel
   grid with the radial-velocity shift applied to the line centres (:mod:`.profiles`);
   the same for the ~20,000 lines of the forest, atoms and CH, CN, MgH (:mod:`.forest`);
4. parametric C2 and TiO bands (:mod:`.molecules`);
5. continuum: Planck at the continuum-forming temperature x line blanketing (rest frame)
   x reddening x flux-calibration
   residual (:mod:`.continuum`), telluric absorption (observed frame);
6. observation: flux level, sky, noise for the requested S/N_g, bad pixels (:mod:`.observe`).

Speed: about 3 ms of CPU per 3,904-pixel spectrum on one core (the line forest is
compiled, :mod:`.kernels`; see ``benchmarks/mock_synthesis.py`` for the figures).

Every random draw of star ``i`` comes from its own generator,
``numpy.random.default_rng(SeedSequence(seed, spawn_key=(i,)))``, so a star's spectrum
depends only on (labels, seed, i) and not on the chunk size: the output is bit-for-bit
reproducible for the same seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.table import Table

from slamlib.io import SpectrumBatch
from slamlib.mock.atmosphere import photosphere
from slamlib.mock.atoms import log_abundances
from slamlib.mock.continuum import (
    blanketing_strength,
    blanketing_transmission,
    calibration_distortion,
    continuum_temperature_ratio,
    extinction_ccm89,
    planck,
)
from slamlib.mock.forest import forest_optical_depth
from slamlib.mock.grid import N_PIX, SPEED_OF_LIGHT_KM_S, wavelength_grid
from slamlib.mock.lines import (
    depth_law,
    line_strengths,
    load_line_table,
    planck_parameter,
)
from slamlib.mock.molecules import band_depth
from slamlib.mock.observe import (
    MASK_BAD_BLUE_END,
    MASK_BAD_RED_END,
    MASK_COSMIC_RAY,
    MASK_SKY_RESIDUAL,
    SKY_LINES_AIR,
    SNR_BANDS,
    STRONG_SKY_LINES,
    flux_level_for_snr,
    measure_snr,
    sky_line_profiles,
    sky_spectrum,
    telluric_transmission,
    throughput,
)
from slamlib.mock.profiles import render_cores, render_wings, strong_line_set

__all__ = ["LABEL_COLUMNS", "LABEL_DEFAULTS", "LABEL_LIMITS", "synthesize", "validate_labels"]

#: The label columns ``synthesize`` reads.
LABEL_COLUMNS = ("teff", "logg", "m_h", "alpha_m", "c_m", "n_m", "rv", "snr_g")
#: Defaults of the optional label columns (``teff`` and ``logg`` are required).
LABEL_DEFAULTS: dict[str, float] = {"m_h": 0.0, "alpha_m": 0.0, "c_m": 0.0, "n_m": 0.0, "rv": 0.0, "snr_g": 100.0}
#: Supported range of each label (inclusive; snr_g must be strictly positive).
LABEL_LIMITS: dict[str, tuple[float, float]] = {
    "teff": (3000.0, 15000.0),
    "logg": (-0.5, 5.5),
    "m_h": (-4.0, 1.0),
    "alpha_m": (-0.5, 1.0),
    "c_m": (-1.5, 2.0),
    "n_m": (-1.0, 2.5),
    "rv": (-1000.0, 1000.0),
    "snr_g": (0.0, 5000.0),
    "ebv": (0.0, 3.0),
}
#: Nominal S/N_g of the inverse variance returned with ``noiseless=True``.
NOISELESS_SNR = 1e4
_CHUNK = 200
_SNR_BAND_ORDER = ("u", "g", "r", "i", "z")


def validate_labels(labels: Table | Mapping[str, Any], *, noiseless: bool = False) -> dict[str, np.ndarray]:
    """Check and complete a label table.

    Parameters
    ----------
    labels : astropy Table or mapping of array-likes
        Columns ``teff`` and ``logg`` (required) and optionally ``m_h``, ``alpha_m``,
        ``c_m``, ``n_m``, ``rv``, ``snr_g``, ``ebv``, ``obsid``, ``ra``, ``dec``.
    noiseless : bool
        If True, ``snr_g`` is not checked.

    Returns
    -------
    dict of ndarray
        Float arrays of every column in :data:`LABEL_COLUMNS` (defaults filled in), plus
        the optional columns that were given. Copies; the input is never modified.

    Raises
    ------
    ValueError
        On missing required columns, non-finite values, unequal lengths or labels
        outside :data:`LABEL_LIMITS`.
    """
    names = labels.colnames if isinstance(labels, Table) else list(labels.keys())
    missing = [name for name in ("teff", "logg") if name not in names]
    if missing:
        raise ValueError(f"labels lack the required column(s) {missing}; got {list(names)}.")
    n_star = len(np.atleast_1d(np.asarray(labels["teff"])))
    result: dict[str, np.ndarray] = {}
    for name in (*LABEL_COLUMNS, "ebv", "ra", "dec"):
        if name in names:
            values = np.array(np.atleast_1d(np.asarray(labels[name], dtype=float)), dtype=float)
            if values.shape != (n_star,):
                raise ValueError(f"label column {name!r} has shape {values.shape}, expected ({n_star},).")
            if name == "snr_g" and noiseless:
                result[name] = values
                continue
            if not np.all(np.isfinite(values)):
                raise ValueError(f"label column {name!r} has non-finite values.")
            if name in LABEL_LIMITS:
                low, high = LABEL_LIMITS[name]
                bad = (values <= low) if name == "snr_g" else (values < low)
                bad |= values > high
                if np.any(bad):
                    first = int(np.flatnonzero(bad)[0])
                    raise ValueError(
                        f"label {name}={values[first]!r} (row {first}) is outside the supported range "
                        f"{'(' if name == 'snr_g' else '['}{low}, {high}] of the mock synthesis."
                    )
            result[name] = values
        elif name in LABEL_DEFAULTS:
            result[name] = np.full(n_star, LABEL_DEFAULTS[name])
    if "obsid" in names:
        obsid = np.atleast_1d(np.asarray(labels["obsid"]))
        if obsid.shape != (n_star,) or not np.issubdtype(obsid.dtype, np.integer):
            raise ValueError("label column 'obsid' must hold one integer per star.")
        result["obsid"] = obsid.astype(np.int64)
    return result


def _subclass(teff: float) -> str:
    """A rough MK spectral subclass for a dwarf of this Teff (cosmetic header value)."""
    table = (
        (3300, "M4"), (3600, "M2"), (3900, "M0"), (4100, "K7"), (4400, "K5"), (4800, "K3"), (5100, "K1"),
        (5350, "G8"), (5600, "G5"), (5850, "G2"), (6050, "G0"), (6350, "F8"), (6600, "F5"), (6950, "F2"),
        (7300, "F0"), (7900, "A7"), (8600, "A3"), (9500, "A1"), (10500, "A0"), (12000, "B8"), (np.inf, "B6"),
    )
    return next(name for limit, name in table if teff < limit)


def _designation(ra: float, dec: float) -> str:
    hours = ra / 15.0
    hh = int(hours)
    mm = int((hours - hh) * 60)
    ss = ((hours - hh) * 60 - mm) * 60
    sign = "+" if dec >= 0 else "-"
    adec = abs(dec)
    dd = int(adec)
    dm = int((adec - dd) * 60)
    ds = ((adec - dd) * 60 - dm) * 60
    return f"J{hh:02d}{mm:02d}{min(ss, 59.99):05.2f}{sign}{dd:02d}{dm:02d}{min(ds, 59.9):04.1f}"


def _star_draws(seed: int, index: int, n_sky: int) -> dict[str, Any]:
    """All random numbers of one star, in a fixed order, from its own generator."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(index),)))
    draws: dict[str, Any] = {
        "ebv": min(rng.exponential(0.05), 0.5),
        "calibration": rng.normal(0.0, [0.03, 0.02, 0.015]),
        "dichroic": rng.normal(0.0, 0.03),
        "flux_scatter": rng.normal(0.0, 0.15),
        "sky_scatter": rng.normal(0.0, 0.3),
        "airmass": rng.uniform(1.0, 1.6),
        "water": rng.lognormal(0.0, 0.4),
        "ra": rng.uniform(0.0, 360.0),
        "dec": float(np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-10.0)), np.sin(np.radians(60.0)))))),
        "sky_residual": rng.normal(0.0, 0.04, n_sky),
        "sky_flag": rng.uniform(size=n_sky),
    }
    n_cosmic = int(rng.poisson(1.5))
    draws["cosmic_pixel"] = rng.integers(0, N_PIX, n_cosmic)
    draws["cosmic_amplitude"] = rng.uniform(5.0, 50.0, n_cosmic)
    draws["cosmic_wide"] = rng.uniform(size=n_cosmic) < 0.3
    draws["blue_bad"] = rng.uniform() < 0.35
    draws["blue_cut"] = rng.uniform(3720.0, 4000.0)
    draws["red_bad"] = rng.uniform() < 0.3
    draws["red_pixels"] = int(rng.integers(2, 25))
    draws["noise"] = rng.standard_normal(N_PIX)
    return draws


def _normalized_flux(chunk: dict[str, np.ndarray], wave: np.ndarray) -> tuple[np.ndarray, Any, np.ndarray]:
    """Noiseless continuum-normalized flux in the observed frame, the layer, and log10(1+z)."""
    lines = load_line_table()
    strong = strong_line_set(lines)
    log_eps = log_abundances(chunk["m_h"], chunk["alpha_m"], chunk["c_m"], chunk["n_m"])
    layer = photosphere(chunk["teff"], chunk["logg"], log_eps)
    strengths = line_strengths(layer, lines)
    doppler = np.log10(1.0 + chunk["rv"] / SPEED_OF_LIGHT_KM_S)
    core_width = strengths.core_width + strengths.wing_width
    core_width[:, strong.index] = (strengths.core_width - strengths.plateau_width)[:, strong.index]
    log_flux = -render_cores(lines.wave, core_width, doppler, wave.size)
    log_flux -= forest_optical_depth(layer, doppler, wave.size)
    log_flux += render_wings(strengths, lines, strong, doppler, wave.size)
    wave_rest = wave[None, :] / 10.0 ** doppler[:, None]
    bands = band_depth(layer, wave_rest)
    absorbing = bands > 0
    log_flux[absorbing] += np.log1p(-bands[absorbing])
    # Even a blend of saturated features leaves the flux of the outermost layers,
    # B(T_surface) / B(Teff) (the residual of an infinitely strong line): soft floor at half of it.
    floor = 0.5 * (1.0 - depth_law(np.inf, planck_parameter(wave_rest, chunk["teff"][:, None])))
    flux = np.exp(log_flux)
    return np.sqrt(flux**2 + floor**2) / np.sqrt(1.0 + floor**2), layer, doppler


def _observe(
    chunk: dict[str, np.ndarray],
    indices: np.ndarray,
    wave: np.ndarray,
    flux_norm: np.ndarray,
    layer: Any,
    doppler: np.ndarray,
    seed: int,
    noiseless: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    n_star = indices.size
    draws = [_star_draws(seed, index, len(SKY_LINES_AIR)) for index in indices]
    ebv = chunk["ebv"] if "ebv" in chunk else np.array([d["ebv"] for d in draws])
    wave_rest = wave[None, :] / 10.0 ** doppler[:, None]
    continuum_temperature = chunk["teff"][:, None] * continuum_temperature_ratio(layer, wave_rest)
    continuum = planck(wave_rest, continuum_temperature) * blanketing_transmission(wave_rest, blanketing_strength(layer))
    continuum *= 10.0 ** (-0.4 * ebv[:, None] * extinction_ccm89(wave)[None, :])
    continuum *= calibration_distortion(
        wave, np.array([d["calibration"] for d in draws]), np.array([d["dichroic"] for d in draws])
    )
    telluric = telluric_transmission(wave, np.array([d["airmass"] for d in draws]), np.array([d["water"] for d in draws]))
    model = continuum * flux_norm * telluric

    # Flux level and noise model: sigma^2 = (F + B s) / (k T).
    g_band = (wave >= SNR_BANDS["g"][0]) & (wave <= SNR_BANDS["g"][1])
    snr = chunk["snr_g"].copy()
    if noiseless:
        snr = np.where(np.isfinite(snr) & (snr > 0), snr, LABEL_DEFAULTS["snr_g"])
    level = flux_level_for_snr(snr) * 10.0 ** np.array([d["flux_scatter"] for d in draws])
    model *= (level / np.median(model[:, g_band], axis=1))[:, None]
    sky_continuum, sky_lines = sky_spectrum(wave)
    sky_level = 44.0 * np.exp(np.array([d["sky_scatter"] for d in draws]))
    background = sky_level[:, None] * (sky_continuum + sky_lines)[None, :]
    transmission = throughput(wave)
    per_unit_exposure = np.sqrt(transmission)[None, :] * model / np.sqrt(model + background)
    target = np.full(n_star, NOISELESS_SNR) if noiseless else snr
    exposure = (target / np.median(per_unit_exposure[:, g_band], axis=1)) ** 2
    sigma = np.sqrt((model + background) / (exposure[:, None] * transmission[None, :]))
    ivar = 1.0 / sigma**2
    flux = model.copy()
    ormask = np.zeros((n_star, wave.size), dtype=np.int64)
    if not noiseless:
        profiles = sky_line_profiles(wave)
        amplitudes = np.array([line[1] for line in SKY_LINES_AIR])
        flag_probability = np.array([0.6 if k == 0 else 0.3 if k in STRONG_SKY_LINES else 0.1 for k in range(len(SKY_LINES_AIR))])
        flux += np.array([d["noise"] for d in draws]) * sigma
        for row, d in enumerate(draws):
            flux[row] += sky_level[row] * (d["sky_residual"] * amplitudes) @ profiles
        # Flagged sky-line residuals: the pixels where the line's profile exceeds 0.1.
        flagged = np.array([d["sky_flag"] for d in draws]).reshape(n_star, len(SKY_LINES_AIR)) < flag_probability
        for k, region in enumerate(profiles > 0.1):
            rows = np.flatnonzero(flagged[:, k])
            if rows.size and region.any():
                ormask[rows[:, None], np.flatnonzero(region)[None, :]] |= MASK_SKY_RESIDUAL
        for row, d in enumerate(draws):
            for pixel, amplitude, wide in zip(d["cosmic_pixel"], d["cosmic_amplitude"], d["cosmic_wide"]):
                hit = [pixel, pixel + 1] if wide and pixel + 1 < wave.size else [pixel]
                flux[row, hit] += amplitude * sigma[row, hit]
                ormask[row, hit] |= MASK_COSMIC_RAY
            if d["blue_bad"]:
                blue = wave < d["blue_cut"]
                flux[row, blue] = model[row, blue] + 3.0 * d["noise"][blue] * sigma[row, blue]
                ormask[row, blue] |= MASK_BAD_BLUE_END
            if d["red_bad"]:
                flux[row, -d["red_pixels"] :] = 0.0
                ormask[row, -d["red_pixels"] :] |= MASK_BAD_RED_END
        ivar[ormask > 0] = 0.0

    meta: dict[str, np.ndarray] = {}
    meta["ebv"] = ebv
    meta["airmass"] = np.array([d["airmass"] for d in draws])
    meta["ra"] = chunk["ra"] if "ra" in chunk else np.array([d["ra"] for d in draws])
    meta["dec"] = chunk["dec"] if "dec" in chunk else np.array([d["dec"] for d in draws])
    for band in _SNR_BAND_ORDER:
        meta[f"snr{band}"] = np.round(measure_snr(wave, flux, ivar, band), 2)
    return flux, ivar, ormask.astype(float), meta


def synthesize(
    labels: Table | Mapping[str, Any],
    seed: int = 0,
    noiseless: bool = False,
    *,
    return_norm: bool | None = None,
    chunk_size: int = _CHUNK,
) -> SpectrumBatch:
    """Generate LAMOST-like low-resolution spectra from stellar labels.

    Parameters
    ----------
    labels : astropy Table or mapping of array-likes
        One row per star. Required: ``teff`` (K, 3000-15000), ``logg`` (dex).
        Optional (default): ``m_h`` (0), ``alpha_m`` (0), ``c_m`` (0), ``n_m`` (0),
        ``rv`` (0 km/s), ``snr_g`` (100; the requested median g-band S/N per pixel),
        ``ebv`` (drawn per star, exponential with mean 0.05, at most 0.5), ``obsid``, ``ra``, ``dec``.
        See :data:`LABEL_LIMITS` for the supported ranges.
    seed : int
        Seed of all random draws (noise, bad pixels, reddening, calibration, ...).
    noiseless : bool
        If True: no noise, no bad pixels, no sky residuals or cosmic rays; ``snr_g`` is
        ignored except to set the flux level (S/N_g = 100 where absent or invalid);
        ``ivar`` is that of a nominal S/N_g = 10,000 and ``ormask`` is zero.
    return_norm : bool, optional
        Attach ``flux_norm`` (default: only when ``noiseless``).
    chunk_size : int
        Stars synthesized together (memory ~ 2 MB per star); does not change the output.

    Returns
    -------
    SpectrumBatch
        ``wave`` (3904 vacuum wavelengths, observed frame), ``flux``, ``ivar``,
        ``ormask`` (n_star, 3904), ``meta`` (obsid, designation, ra, dec, z, z_err, rv,
        snru, snrg, snrr, snri, snrz (measured), class, subclass, lmjd, mjd, planid,
        spid, fiberid, ebv, airmass) and, when requested, ``flux_norm``: the noiseless
        stellar spectrum divided by its continuum, on the same observed-frame grid as
        ``flux`` (Doppler-shifted lines; no reddening, calibration, telluric or noise).

    Raises
    ------
    ValueError
        For missing or out-of-range labels, or ``chunk_size < 1``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    values = validate_labels(labels, noiseless=noiseless)
    n_star = values["teff"].size
    wave = wavelength_grid()
    flux = np.empty((n_star, N_PIX))
    ivar = np.empty((n_star, N_PIX))
    ormask = np.empty((n_star, N_PIX))
    norm = np.empty((n_star, N_PIX)) if (noiseless if return_norm is None else return_norm) else None
    meta_columns: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_star, chunk_size):
        indices = np.arange(start, min(start + chunk_size, n_star))
        chunk = {name: array[indices] for name, array in values.items()}
        flux_norm, layer, doppler = _normalized_flux(chunk, wave)
        f, iv, om, meta = _observe(chunk, indices, wave, flux_norm, layer, doppler, int(seed), noiseless)
        flux[indices], ivar[indices], ormask[indices] = f, iv, om
        if norm is not None:
            norm[indices] = flux_norm
        for name, column in meta.items():
            meta_columns.setdefault(name, []).append(column)
    merged = {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in meta_columns.items()}
    index = np.arange(n_star)
    plate = index // 4000
    rv = values["rv"]
    snr_g = values["snr_g"] if not noiseless else np.full(n_star, NOISELESS_SNR)
    table = Table()
    table["obsid"] = values["obsid"] if "obsid" in values else (700_000_000 + index).astype(np.int64)
    ra = merged.get("ra", np.zeros(0))
    dec = merged.get("dec", np.zeros(0))
    table["designation"] = np.array([_designation(r, d) for r, d in zip(ra, dec)], dtype="U19") if n_star else np.zeros(0, "U19")
    table["ra"] = ra
    table["dec"] = dec
    table["z"] = rv / SPEED_OF_LIGHT_KM_S
    table["z_err"] = (3.0 + 100.0 / np.clip(snr_g, 1.0, None)) / SPEED_OF_LIGHT_KM_S
    table["rv"] = rv
    for band in _SNR_BAND_ORDER:
        table[f"snr{band}"] = merged.get(f"snr{band}", np.zeros(0))
    table["class"] = np.full(n_star, "STAR", dtype="U4")
    table["subclass"] = np.array([_subclass(t) for t in values["teff"]], dtype="U3") if n_star else np.zeros(0, "U3")
    table["lmjd"] = 58000 + plate
    table["mjd"] = 58001 + plate
    table["planid"] = np.array([f"MOCK{p:03d}" for p in plate], dtype="U10") if n_star else np.zeros(0, "U10")
    table["spid"] = (index % 4000) // 250 + 1
    table["fiberid"] = index % 250 + 1
    table["ebv"] = merged.get("ebv", np.zeros(0))
    table["airmass"] = merged.get("airmass", np.zeros(0))
    table.meta["source"] = "slamlib.mock.synthesize"
    table.meta["seed"] = int(seed)
    table.meta["noiseless"] = bool(noiseless)
    return SpectrumBatch(wave=wave, flux=flux, ivar=ivar, ormask=ormask, meta=table, flux_norm=norm)
