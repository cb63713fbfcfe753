"""The two label samples of the paper, drawn from simple Galactic stellar populations.

* :func:`lasp_test_sample` - the "LASP test" of Section 3: AFGK dwarfs and giants
  (4000-8000 K) with catalogue labels carrying LASP-like errors (systematic offsets plus
  random errors that fall with S/N_g to a floor; :func:`lasp_random_errors` gives the
  model and its sources), a training set at 120 < S/N_g < 140 and test sets in six
  S/N_g bins. The true labels stay beside the catalogue ones.
* :func:`apogee_common_sample` - the "APOGEE-LAMOST common stars" of Section 4: K giants
  with six labels and Galactic-like correlations, plus red-clump and main-sequence stars
  outside the K-giant training range, with APOGEE-like catalogue columns (SNR,
  ASPCAPFLAG, STARFLAG, labels and errors) and LAMOST-like columns (snrg, LASP labels).

Stellar tracks (all approximate, for a mock): the main sequence
log g(Teff) rises from 4.0 at 8000 K to 4.65 at 4000 K and is lowered by up to 0.3 dex of
main-sequence evolution; subgiants at 5000-6300 K and log g 3.5-4.0; the red giant branch
Teff = 4700 K + 230 K (log g - 2.5) - 200 K [M/H]; the red clump at log g = 2.45 +- 0.08,
Teff = 4780 K - 200 K [M/H]. Chemistry: thin disc, thick disc and halo metallicity
distributions; [alpha/M] on a low-alpha (thin) and a high-alpha (thick, halo) sequence;
[C/M] and [N/M] changed by first dredge-up below log g = 3.6 by an amount that grows with
stellar mass (so [C/N] correlates with log g and mass) and by extra mixing on the upper
giant branch of metal-poor stars.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from scipy.special import ndtr, ndtri

__all__ = [
    "LASP_ERROR_MODEL",
    "LASP_REPORTED_ERROR_FACTOR",
    "LASP_SNR_BINS",
    "LASP_TRAIN_SNR",
    "ASPCAP_STAR_BAD",
    "ASPCAP_STAR_WARN",
    "lasp_test_sample",
    "apogee_common_sample",
    "lasp_random_errors",
    "lasp_systematics",
]

#: S/N_g bins of the LASP test sets (paper Section 3).
LASP_SNR_BINS: tuple[tuple[float, float], ...] = ((5, 20), (20, 40), (40, 60), (60, 80), (80, 100), (100, 120))
#: S/N_g range of the LASP training set.
LASP_TRAIN_SNR: tuple[float, float] = (120.0, 140.0)
#: ASPCAPFLAG bit 23, STAR_BAD.
ASPCAP_STAR_BAD = 1 << 23
#: ASPCAPFLAG bit 7, STAR_WARN.
ASPCAP_STAR_WARN = 1 << 7

_MS_TEFF = np.array([4000.0, 4500.0, 5000.0, 5500.0, 6000.0, 6500.0, 7000.0, 7500.0, 8000.0])
_MS_LOGG = np.array([4.65, 4.62, 4.57, 4.50, 4.42, 4.32, 4.22, 4.12, 4.02])


def _bin_label(low: float, high: float) -> str:
    return f"{low:g}-{high:g}"


def _check_count(name: str, value: int, minimum: int = 0) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def _truncated_normal(
    rng: np.random.Generator, mean: np.ndarray | float, sigma: np.ndarray | float, low: float, high: float, n: int
) -> np.ndarray:
    """Normal deviates restricted to [low, high] by inverting the CDF (no pile-up at the edges)."""
    mean = np.broadcast_to(np.asarray(mean, dtype=float), (n,))
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (n,))
    lower, upper = ndtr((low - mean) / sigma), ndtr((high - mean) / sigma)
    return np.clip(mean + sigma * ndtri(lower + (upper - lower) * rng.uniform(size=n)), low, high)


def _giant_branch(
    rng: np.random.Generator, m_h: np.ndarray, logg_range: tuple[float, float], teff_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """log g and Teff on the red giant branch, redrawn until Teff lies in ``teff_range``."""
    n = m_h.size
    logg = np.empty(n)
    teff = np.empty(n)
    todo = np.arange(n)
    for _ in range(100):
        if todo.size == 0:
            break
        logg[todo] = _truncated_normal(rng, 2.6, 0.7, *logg_range, todo.size)
        teff[todo] = 4700.0 + 230.0 * (logg[todo] - 2.5) - 200.0 * m_h[todo] + rng.normal(0.0, 60.0, todo.size)
        todo = todo[(teff[todo] < teff_range[0]) | (teff[todo] > teff_range[1])]
    return logg, np.clip(teff, *teff_range)


def _metallicity(rng: np.random.Generator, n: int, weights: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """[M/H] and population (0 thin, 1 thick, 2 halo) for n stars."""
    population = rng.choice(3, size=n, p=np.asarray(weights) / np.sum(weights))
    mean = np.array([-0.12, -0.55, -1.4])[population]
    sigma = np.array([0.22, 0.25, 0.45])[population]
    m_h = _truncated_normal(rng, mean, sigma, -2.45, 0.48, n)
    return m_h, population


def _alpha(rng: np.random.Generator, m_h: np.ndarray, population: np.ndarray) -> np.ndarray:
    """[alpha/M] on the low-alpha (thin disc) and high-alpha (thick disc, halo) sequences."""
    low_alpha = np.clip(0.02 - 0.10 * m_h, -0.05, 0.18)
    high_alpha = np.where(m_h < -0.7, 0.30, 0.30 - 0.22 * (m_h + 0.7))
    alpha = np.where(population == 0, low_alpha, high_alpha)
    return alpha + rng.normal(0.0, 0.025, m_h.size)


def _main_sequence_logg(rng: np.random.Generator, teff: np.ndarray, m_h: np.ndarray) -> np.ndarray:
    zams = np.interp(teff, _MS_TEFF, _MS_LOGG) + 0.05 * m_h
    return zams - rng.uniform(0.0, 0.3, teff.size) + rng.normal(0.0, 0.03, teff.size)


def _mixing(
    rng: np.random.Generator, logg: np.ndarray, m_h: np.ndarray, mass: np.ndarray, clump: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """[C/M], [N/M] after first dredge-up (mass-dependent) and extra mixing."""
    depth = np.clip((3.6 - logg) / 0.6, 0.0, 1.0)
    depth = np.where(clump, 1.0, depth)
    strength = np.clip((mass - 0.7) / 1.0, 0.3, 1.6)
    c_m = 0.02 - depth * 0.12 * strength
    n_m = 0.02 + depth * 0.30 * strength
    extra = np.clip(2.2 - logg, 0.0, None) * np.clip(-0.3 - m_h, 0.0, 1.0) + np.where(clump, 0.1, 0.0)
    c_m = c_m - 0.25 * extra + rng.normal(0.0, 0.04, logg.size)
    n_m = n_m + 0.15 * extra + rng.normal(0.0, 0.06, logg.size)
    return c_m, n_m


def _sky(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    ra = rng.uniform(0.0, 360.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-10.0)), np.sin(np.radians(60.0)), n)))
    return ra, dec


def _obsids(rng: np.random.Generator, n: int, base: int) -> np.ndarray:
    """Unique, increasing obsids with random gaps."""
    return (base + np.cumsum(rng.integers(1, 20, n))).astype(np.int64)


#: LASP-like random errors sigma(S/N) = f_T sqrt(floor^2 + (scale / S/N_g)^2) of Teff (K),
#: log g and [Fe/H] (dex): (floor, scale) per label. See :func:`lasp_random_errors`.
LASP_ERROR_MODEL: dict[str, tuple[float, float]] = {"teff": (25.0, 2250.0), "logg": (0.04, 3.75), "feh": (0.03, 2.0)}
#: Reported LASP errors are this much larger than the random errors they describe (the
#: official empirical errors are conservative; Liang et al. 2025), with a 10 % lognormal scatter.
LASP_REPORTED_ERROR_FACTOR = 1.2


def lasp_random_errors(snr_g: np.ndarray, teff: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-sigma random errors of LASP-like Teff, log g and [Fe/H].

    sigma = f_T sqrt(floor^2 + (scale / S/N_g)^2) with (floor, scale) of
    :data:`LASP_ERROR_MODEL`: (25 K, 2250 K), (0.04 dex, 3.75 dex), (0.03 dex, 2.0 dex),
    i.e. 150 K / 0.25 dex / 0.13 dex at S/N_g = 15, 30 K / 0.05 dex / 0.034 dex at
    S/N_g = 130, and f_T = 1 + 0.5 clip((Teff - 6000 K) / 2000 K, 0, 1) (hot stars are
    measured worse; the paper's Section 3.3 citing Liu et al. 2012).

    Where the numbers come from
    ---------------------------
    * Low S/N (the 1/S/N term): LASP's mean absolute differences from APOGEE at
      10 < S/N <= 20 are 145 K, 0.24 dex and 0.11 dex (Li, X. et al. 2022, MNRAS 514,
      4588, their comparison of LASP with their LASSO-MLPNet), and the LAMOST Peking
      pipeline (LSP3) on the same kind of spectra reaches 150 K, 0.25 dex and 0.15 dex at
      S/N > 10 (Xiang et al. 2015, MNRAS 448, 822). The scales are chosen so that the
      mock's errors at S/N_g = 15 are about those values (a mean absolute difference is
      0.8 sigma, and it includes APOGEE's own errors; we took them as sigma).
    * High S/N (the floor): chosen, not measured from a table. LASP labels come from the
      same spectra the paper trains on, and the paper's CV scatter at S/N_g > 100 is
      ~50 K, 0.10 dex and 0.07 dex (Section 3.3, which notes that label errors in the
      validation set put a floor under the CV scatter): the floor must lie well below
      that. Repeat observations confirm that the random errors of LAMOST labels fall
      tightly with S/N (Zhang, S. et al. 2023, RAA, arXiv:2212.02018) and that LASP's
      official errors overstate them (Liang et al. 2025, arXiv:2512.24840), hence
      :data:`LASP_REPORTED_ERROR_FACTOR`.
    * Consistency with the paper's Section 3.2 selection (reported dTeff < 200 K,
      dlog g < 0.1, d[Fe/H] < 0.1 at 120 < S/N_g < 140): the reported log g error at
      S/N_g = 130 is ~0.06 dex (up to ~0.09 for the hottest stars), so most stars pass.

    Parameters
    ----------
    snr_g, teff : ndarray, shape (n_star,)

    Returns
    -------
    teff_err, logg_err, feh_err : ndarray, shape (n_star,)
    """
    snr_g = np.asarray(snr_g, dtype=float)
    hot = 1.0 + 0.5 * np.clip((np.asarray(teff, dtype=float) - 6000.0) / 2000.0, 0.0, 1.0)
    return tuple(
        hot * np.sqrt(floor**2 + (scale / snr_g) ** 2) for floor, scale in (LASP_ERROR_MODEL[k] for k in ("teff", "logg", "feh"))
    )


def lasp_systematics(logg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Systematic offsets (LASP-like minus true) of Teff, log g and [Fe/H].

    +60 K in Teff, +0.15 dex in log g for giants (log g < 3.5, a smooth 0.1-dex step) and
    -0.05 dex in [Fe/H]. Chosen, of the order of the LASP-APOGEE differences discussed
    in the literature (e.g. Anguiano et al. 2018, A&A 620, A76), not taken from a table.

    Parameters
    ----------
    logg : ndarray, shape (n_star,)
        True log g.

    Returns
    -------
    teff_offset, logg_offset, feh_offset : ndarray, shape (n_star,)
    """
    logg = np.asarray(logg, dtype=float)
    giant = 1.0 / (1.0 + np.exp((logg - 3.5) / 0.1))
    return np.full(logg.shape, 60.0), 0.15 * giant, np.full(logg.shape, -0.05)


def _draw_afgk(rng: np.random.Generator, n: int) -> Table:
    """True labels of AFGK dwarfs, subgiants, RGB and red-clump stars at 4000-8000 K."""
    kind = rng.choice(4, size=n, p=[0.55, 0.12, 0.23, 0.10])  # MS, subgiant, RGB, clump
    m_h, population = _metallicity(rng, n, (0.70, 0.20, 0.10))
    teff = np.empty(n)
    logg = np.empty(n)
    ms = kind == 0
    teff[ms] = _truncated_normal(rng, 6000.0, 850.0, 4000.0, 8000.0, int(ms.sum()))
    logg[ms] = _main_sequence_logg(rng, teff[ms], m_h[ms])
    sub = kind == 1
    teff[sub] = rng.uniform(5000.0, 6300.0, sub.sum())
    logg[sub] = rng.uniform(3.5, 4.0, sub.sum()) + 0.15 * (teff[sub] - 5650.0) / 650.0
    rgb = kind == 2
    logg[rgb], teff[rgb] = _giant_branch(rng, m_h[rgb], (1.0, 3.6), (4000.0, 8000.0))
    clump = kind == 3
    m_h[clump] = _truncated_normal(rng, -0.15, 0.22, -1.0, 0.45, int(clump.sum()))
    population[clump] = 0
    logg[clump] = rng.normal(2.45, 0.08, clump.sum())
    teff[clump] = 4780.0 - 200.0 * m_h[clump] + rng.normal(0.0, 60.0, clump.sum())
    teff = np.clip(teff, 4000.0, 8000.0)
    mass = np.where(kind >= 2, rng.lognormal(np.log(1.2), 0.3, n), 1.0)
    alpha_m = _alpha(rng, m_h, population)
    c_m, n_m = _mixing(rng, logg, m_h, mass, clump)
    rv = np.where(population == 2, rng.normal(0.0, 120.0, n), rng.normal(-10.0, 35.0, n))
    names = np.array(["main_sequence", "subgiant", "red_giant_branch", "red_clump"])
    return Table(
        {
            "teff": np.round(teff, 1),
            "logg": np.round(logg, 3),
            "m_h": np.round(m_h, 3),
            "alpha_m": np.round(alpha_m, 3),
            "c_m": np.round(c_m, 3),
            "n_m": np.round(n_m, 3),
            "rv": np.round(np.clip(rv, -500.0, 500.0), 2),
            "population": names[kind],
        }
    )


def _check_snr_range(snr_range) -> tuple[float, float]:
    try:
        low, high = (float(value) for value in snr_range)
    except (TypeError, ValueError):
        raise ValueError(f"train_snr_range must be a pair (low, high) of S/N_g values, got {snr_range!r}.") from None
    if not (np.isfinite(low) and np.isfinite(high) and 5.0 <= low < high):
        raise ValueError(f"train_snr_range must satisfy 5 <= low < high (finite), got ({low}, {high}).")
    return low, high


def lasp_test_sample(
    n_train: int, n_test_per_bin: int, seed: int, *, train_snr_range: tuple[float, float] = LASP_TRAIN_SNR,
) -> Table:
    """Labels of the mock "LASP test" (paper Section 3).

    Parameters
    ----------
    n_train : int
        Stars in the training set (S/N_g uniform in ``train_snr_range``).
    n_test_per_bin : int
        Stars in each of the six test sets, S/N_g uniform in (5, 20), (20, 40), (40, 60),
        (60, 80), (80, 100) and (100, 120).
    seed : int
        Seed of the label draws (the spectra take their own seed in ``synthesize``).
    train_snr_range : (float, float)
        S/N_g interval of the training set; the paper's is (120, 140).

    Returns
    -------
    astropy.table.Table
        One row per star: ``obsid``, ``ra``, ``dec``, ``set`` ("train"/"test"),
        ``snr_bin`` (e.g. "5-20"), true labels ``teff``, ``logg``, ``m_h``, ``alpha_m``,
        ``c_m``, ``n_m``, ``rv``, ``snr_g``; LASP-like catalogue labels ``teff_cat``,
        ``logg_cat``, ``feh_cat``, ``rv_cat`` with reported errors ``teff_err``,
        ``logg_err``, ``feh_err``, ``rv_err`` (catalogue = true + :func:`lasp_systematics`
        + a Gaussian random error of :func:`lasp_random_errors`, which falls with S/N_g
        from ~150 K / 0.25 / 0.13 dex at S/N_g = 15 to ~30 K / 0.05 / 0.034 dex at
        S/N_g = 130; the reported errors are 1.2 times the random ones, with a 10 %
        scatter); and ``population``.

    Raises
    ------
    ValueError
        For negative sizes, an empty sample, a bad seed or a training S/N range that is not
        an increasing pair of finite numbers >= 5.
    """
    train_snr_range = _check_snr_range(train_snr_range)
    n_train = _check_count("n_train", n_train)
    n_test_per_bin = _check_count("n_test_per_bin", n_test_per_bin)
    seed = _check_seed(seed)
    n_test = n_test_per_bin * len(LASP_SNR_BINS)
    n = n_train + n_test
    if n == 0:
        raise ValueError("lasp_test_sample needs n_train + 6 n_test_per_bin > 0.")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(101,)))
    table = _draw_afgk(rng, n)
    snr = np.empty(n)
    snr[:n_train] = rng.uniform(*train_snr_range, n_train)
    bins = [_bin_label(*train_snr_range)] * n_train
    for k, (low, high) in enumerate(LASP_SNR_BINS):
        rows = slice(n_train + k * n_test_per_bin, n_train + (k + 1) * n_test_per_bin)
        snr[rows] = rng.uniform(low, high, n_test_per_bin)
        bins += [_bin_label(low, high)] * n_test_per_bin
    snr = np.clip(snr, 5.05, None)
    ra, dec = _sky(rng, n)
    teff_err, logg_err, feh_err = lasp_random_errors(snr, np.asarray(table["teff"]))
    teff_offset, logg_offset, feh_offset = lasp_systematics(np.asarray(table["logg"]))
    rv_err = 5.0 * np.sqrt(1.0 + (30.0 / snr) ** 2)
    reported = rng.lognormal(0.0, 0.1, (4, n)) * np.array([[LASP_REPORTED_ERROR_FACTOR]] * 3 + [[1.0]])
    out = Table()
    out["obsid"] = _obsids(rng, n, 200_000_000)
    out["ra"] = np.round(ra, 6)
    out["dec"] = np.round(dec, 6)
    out["set"] = np.array(["train"] * n_train + ["test"] * n_test, dtype="U5")
    out["snr_bin"] = np.array(bins, dtype="U7")
    for name in ("teff", "logg", "m_h", "alpha_m", "c_m", "n_m", "rv"):
        out[name] = table[name]
    out["snr_g"] = np.round(snr, 2)
    out["teff_cat"] = np.round(out["teff"] + teff_offset + rng.normal(0.0, teff_err), 1)
    out["teff_err"] = np.round(teff_err * reported[0], 1)
    out["logg_cat"] = np.round(out["logg"] + logg_offset + rng.normal(0.0, logg_err), 3)
    out["logg_err"] = np.round(logg_err * reported[1], 3)
    out["feh_cat"] = np.round(out["m_h"] + feh_offset + rng.normal(0.0, feh_err), 3)
    out["feh_err"] = np.round(feh_err * reported[2], 3)
    out["rv_cat"] = np.round(out["rv"] + rng.normal(0.0, rv_err), 2)
    out["rv_err"] = np.round(rv_err * reported[3], 2)
    out["population"] = table["population"]
    out.meta["sample"] = "lasp_test"
    out.meta["seed"] = seed
    return out


def _apogee_id(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ids = []
    for r, d in zip(ra, dec):
        hours = r / 15.0
        hh, mm = int(hours), int((hours % 1) * 60)
        ss = ((hours % 1) * 60 % 1) * 60
        sign = "+" if d >= 0 else "-"
        ad = abs(d)
        dd, dm = int(ad), int((ad % 1) * 60)
        ds = ((ad % 1) * 60 % 1) * 60
        ids.append(f"2M{hh:02d}{mm:02d}{int(ss * 100):04d}{sign}{dd:02d}{dm:02d}{int(ds * 10):03d}")
    return np.array(ids, dtype="U18")


def apogee_common_sample(n: int, seed: int) -> Table:
    """Labels of mock APOGEE-LAMOST common stars (paper Section 4).

    Parameters
    ----------
    n : int
        Number of stars (> 0): ~75 % K giants (red giant branch, 3800-5600 K,
        log g 0.8-3.6), ~12 % red-clump stars and ~13 % main-sequence stars (4300-6300 K),
        the last two outside the K-giant training range.
    seed : int

    Returns
    -------
    astropy.table.Table
        True labels ``teff``, ``logg``, ``m_h``, ``alpha_m``, ``c_m``, ``n_m``, ``rv``,
        ``snr_g`` (feed these to ``synthesize``) and ``population``;
        APOGEE-like columns ``APOGEE_ID``, ``RA``, ``DEC``, ``SNR``, ``ASPCAPFLAG``
        (bit 23 STAR_BAD, bit 7 STAR_WARN), ``STARFLAG``, ``EXTRATARG``, ``TEFF``, ``LOGG``,
        ``M_H``, ``ALPHA_M``, ``C_M``, ``N_M`` (precise: true + small errors; ~1 % of
        ``C_M``/``N_M`` are NaN, as DR17 blanks bad values) with ``*_ERR`` and
        ``VHELIO_AVG``; LAMOST-like columns ``obsid``, ``ra``, ``dec``, ``snrg`` (= ``snr_g``),
        ``teff_cat``, ``logg_cat``, ``feh_cat`` with ``*_err`` (LASP-like, with systematic
        offsets +60 K, +0.15 dex in log g for giants, -0.05 dex in [Fe/H], and the random
        errors of :func:`lasp_random_errors`).
        Some rows fail each usual quality cut (low SNR, STAR_BAD, STARFLAG, large label
        errors, low snrg, outside the Teff/log g ranges), so a selection funnel has
        counts at every step.

    Raises
    ------
    ValueError
        For n < 1 or a bad seed.
    """
    n = _check_count("n", n, minimum=1)
    seed = _check_seed(seed)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(202,)))
    kind = rng.choice(3, size=n, p=[0.75, 0.12, 0.13])  # RGB, clump, MS
    m_h, population = _metallicity(rng, n, (0.75, 0.20, 0.05))
    teff = np.empty(n)
    logg = np.empty(n)
    rgb = kind == 0
    logg[rgb], teff[rgb] = _giant_branch(rng, m_h[rgb], (0.8, 3.6), (3800.0, 5600.0))
    clump = kind == 1
    m_h[clump] = _truncated_normal(rng, -0.1, 0.2, -0.9, 0.45, int(clump.sum()))
    population[clump] = 0
    logg[clump] = rng.normal(2.45, 0.08, clump.sum())
    teff[clump] = 4780.0 - 200.0 * m_h[clump] + rng.normal(0.0, 60.0, clump.sum())
    ms = kind == 2
    m_h[ms] = _truncated_normal(rng, -0.1, 0.25, -1.2, 0.45, int(ms.sum()))
    population[ms] = 0
    teff[ms] = rng.uniform(4300.0, 6300.0, ms.sum())
    logg[ms] = _main_sequence_logg(rng, teff[ms], m_h[ms])
    teff = np.clip(teff, 3800.0, 6500.0)
    mass = np.where(ms, 1.0, rng.lognormal(np.log(1.2), 0.3, n))
    alpha_m = _alpha(rng, m_h, population)
    c_m, n_m = _mixing(rng, logg, m_h, mass, clump)
    rv = np.where(population == 2, rng.normal(0.0, 120.0, n), rng.normal(-5.0, 40.0, n))
    rv = np.clip(rv, -500.0, 500.0)
    ra, dec = _sky(rng, n)

    out = Table()
    out["obsid"] = _obsids(rng, n, 400_000_000)
    out["ra"] = np.round(ra, 6)
    out["dec"] = np.round(dec, 6)
    true = {"teff": teff, "logg": logg, "m_h": m_h, "alpha_m": alpha_m, "c_m": c_m, "n_m": n_m}
    digits = {"teff": 1, "logg": 3, "m_h": 3, "alpha_m": 3, "c_m": 3, "n_m": 3}
    for name, values in true.items():
        out[name] = np.round(values, digits[name])
    out["rv"] = np.round(rv, 2)
    snrg = np.clip(rng.lognormal(np.log(60.0), 0.75, n), 4.0, 600.0)
    out["snr_g"] = np.round(snrg, 2)
    names = np.array(["red_giant_branch", "red_clump", "main_sequence"])
    out["population"] = names[kind]

    # APOGEE-like catalogue: precise labels, reported errors, flags.
    out["APOGEE_ID"] = _apogee_id(ra, dec)
    out["RA"] = out["ra"]
    out["DEC"] = out["dec"]
    apogee_snr = np.clip(rng.lognormal(np.log(160.0), 0.6, n), 10.0, 1500.0)
    out["SNR"] = np.round(apogee_snr, 1)
    precision = {"TEFF": 40.0, "LOGG": 0.06, "M_H": 0.025, "ALPHA_M": 0.015, "C_M": 0.035, "N_M": 0.05}
    noisy = rng.uniform(size=n) < 0.06  # a few stars with poor fits: errors 3-6 times larger
    inflation = np.where(noisy, rng.uniform(3.0, 6.0, n), 1.0) * np.sqrt(1.0 + (70.0 / apogee_snr) ** 2)
    for (apogee_name, sigma), true_name in zip(precision.items(), true):
        error = sigma * inflation * rng.lognormal(0.0, 0.15, n)
        value = true[true_name] + rng.normal(0.0, sigma * inflation)
        out[apogee_name] = np.round(value, digits[true_name])
        out[f"{apogee_name}_ERR"] = np.round(error, 4)
    for name in ("C_M", "N_M"):
        blank = rng.uniform(size=n) < 0.01
        out[name] = np.where(blank, np.nan, out[name])
    aspcapflag = np.zeros(n, dtype=np.int64)
    star_bad = (rng.uniform(size=n) < 0.04) | (apogee_snr < 30.0) | (teff < 3900.0)
    aspcapflag[star_bad] |= ASPCAP_STAR_BAD
    aspcapflag[rng.uniform(size=n) < 0.10] |= ASPCAP_STAR_WARN
    aspcapflag[rng.uniform(size=n) < 0.05] |= 1 << 0  # TEFF_WARN
    out["ASPCAPFLAG"] = aspcapflag
    starflag = np.zeros(n, dtype=np.int64)
    for bit, probability in ((0, 0.03), (3, 0.02), (9, 0.02), (16, 0.02)):
        starflag[rng.uniform(size=n) < probability] |= 1 << bit
    out["STARFLAG"] = starflag
    out["EXTRATARG"] = np.where(rng.uniform(size=n) < 0.03, 16, 0).astype(np.int64)
    out["VHELIO_AVG"] = np.round(rv + rng.normal(0.0, 0.3, n), 2)

    # LAMOST-like (LASP) catalogue labels: systematic offsets plus S/N-dependent errors.
    out["snrg"] = out["snr_g"]
    teff_err, logg_err, feh_err = lasp_random_errors(snrg, teff)
    teff_offset, logg_offset, feh_offset = lasp_systematics(logg)
    factor = LASP_REPORTED_ERROR_FACTOR
    out["teff_cat"] = np.round(teff + teff_offset + rng.normal(0.0, teff_err), 1)
    out["teff_err"] = np.round(factor * teff_err * rng.lognormal(0.0, 0.1, n), 1)
    out["logg_cat"] = np.round(logg + logg_offset + rng.normal(0.0, logg_err), 3)
    out["logg_err"] = np.round(factor * logg_err * rng.lognormal(0.0, 0.1, n), 3)
    out["feh_cat"] = np.round(m_h + feh_offset + rng.normal(0.0, feh_err), 3)
    out["feh_err"] = np.round(factor * feh_err * rng.lognormal(0.0, 0.1, n), 3)
    out.meta["sample"] = "apogee_common"
    out.meta["seed"] = seed
    return out
