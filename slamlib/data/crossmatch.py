"""Positional cross-match of LAMOST spectra with APOGEE stars (paper Section 4.2).

:func:`crossmatch` finds every LAMOST-APOGEE pair closer than a radius (1 arcsec by
default; the paper does not state its radius) with astropy's
:meth:`~astropy.coordinates.SkyCoord.search_around_sky`, then makes the match
one-to-one: pairs are taken in order of decreasing LAMOST ``snrg`` (ties: smaller
separation, then higher APOGEE ``snr``), skipping a pair whose LAMOST row or APOGEE
row is already taken. So every APOGEE star keeps its highest-S/N LAMOST spectrum
(repeat LAMOST visits are dropped) and a LAMOST spectrum near two APOGEE entries
goes to the nearer. APOGEE entries that share an ``apogee_id`` may both be matched
(to different spectra); ``select_apogee_common`` removes the flagged duplicates.

LAMOST positions are FK5 J2000 and APOGEE's ICRS; the difference (<= 0.032 arcsec)
is ignored.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table

__all__ = ["crossmatch"]


def _coordinates(table: Table, what: str) -> tuple[SkyCoord | None, np.ndarray]:
    """Sky positions of the rows with finite ``ra``/``dec``, and those rows' indices."""
    for column in ("ra", "dec"):
        if column not in table.colnames:
            raise ValueError(f"The {what} table needs 'ra' and 'dec' columns in degrees; it has {table.colnames}.")
    ra = np.ma.asarray(table["ra"]).astype(float).filled(np.nan)
    dec = np.ma.asarray(table["dec"]).astype(float).filled(np.nan)
    rows = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0))
    if rows.size == 0:
        return None, rows
    return SkyCoord(ra=ra[rows] * u.deg, dec=dec[rows] * u.deg, frame="icrs"), rows


def _column_or(table: Table, name: str, fill: float) -> np.ndarray:
    if name not in table.colnames:
        return np.full(len(table), fill)
    return np.ma.asarray(table[name]).astype(float).filled(np.nan)


def _one_to_one(i_lam: np.ndarray, i_apo: np.ndarray, sep: np.ndarray,
                snrg: np.ndarray, snr: np.ndarray) -> np.ndarray:
    """Indices of the pairs kept by the greedy, priority-ordered one-to-one match."""
    # np.lexsort sorts by the last key first; NaN S/N goes last.
    order = np.lexsort((-snr[i_apo], sep, -snrg[i_lam]))
    taken_lam: set[int] = set()
    taken_apo: set[int] = set()
    kept = []
    for pair in order:
        lam, apo = int(i_lam[pair]), int(i_apo[pair])
        if lam in taken_lam or apo in taken_apo:
            continue
        taken_lam.add(lam)
        taken_apo.add(apo)
        kept.append(pair)
    return np.asarray(kept, dtype=int)


def crossmatch(
    lamost: Table,
    apogee: Table,
    *,
    radius_arcsec: float = 1.0,
    unique: bool = True,
) -> Table:
    """Match LAMOST rows to APOGEE rows by position.

    Parameters
    ----------
    lamost : astropy.table.Table, length n_lamost
        LAMOST spectra (:func:`slamlib.data.lamost_catalog`): ``ra``, ``dec`` (deg)
        and ``snrg``, plus any other columns.
    apogee : astropy.table.Table, length n_apogee
        APOGEE entries (:func:`slamlib.data.apogee_catalog`): ``ra``, ``dec`` (deg),
        optionally ``snr`` (breaks ties).
    radius_arcsec : float
        Largest separation of a match, arcsec.
    unique : bool
        Make the match one-to-one as described in the module docstring; False keeps
        every pair within the radius.

    Returns
    -------
    astropy.table.Table, length n_match
        One row per match, sorted by LAMOST row: the LAMOST columns (those whose
        names APOGEE also uses get a ``_lamost`` suffix, e.g. ``ra_lamost``,
        ``teff_lamost``), then the APOGEE columns under their own names, then
        ``sep_arcsec``. ``meta`` holds ``xmradius`` (the radius, arcsec), ``xmpairs``
        (pairs found within it) and ``xmunique``.

    Raises
    ------
    ValueError
        For a non-positive radius or missing position / ``snrg`` columns.
    """
    if not np.isfinite(radius_arcsec) or radius_arcsec <= 0:
        raise ValueError(f"radius_arcsec must be a positive number, got {radius_arcsec!r}.")
    if unique and "snrg" not in lamost.colnames:
        raise ValueError("A unique match keeps the highest-snrg LAMOST spectrum: the LAMOST table needs 'snrg'.")
    lam_coords, lam_rows = _coordinates(lamost, "LAMOST")
    apo_coords, apo_rows = _coordinates(apogee, "APOGEE")
    if lam_coords is None or apo_coords is None:
        i_lam = i_apo = np.zeros(0, dtype=int)
        sep = np.zeros(0)
    else:
        j_apo, j_lam, separation, _ = lam_coords.search_around_sky(apo_coords, radius_arcsec * u.arcsec)
        i_lam, i_apo, sep = lam_rows[j_lam], apo_rows[j_apo], separation.to_value(u.arcsec)
    n_pairs = len(i_lam)
    if unique and n_pairs:
        kept = _one_to_one(i_lam, i_apo, sep, _column_or(lamost, "snrg", np.nan), _column_or(apogee, "snr", 0.0))
        i_lam, i_apo, sep = i_lam[kept], i_apo[kept], sep[kept]
    order = np.lexsort((i_apo, i_lam))
    i_lam, i_apo, sep = i_lam[order], i_apo[order], sep[order]

    matched = Table()
    for name in lamost.colnames:
        out_name = f"{name}_lamost" if name in apogee.colnames else name
        matched[out_name] = lamost[name][i_lam]
    for name in apogee.colnames:
        if name in matched.colnames:
            raise ValueError(f"Column {name!r} exists in both tables after renaming; rename it first.")
        matched[name] = apogee[name][i_apo]
    matched["sep_arcsec"] = sep
    # Short keys, so the table can be written to FITS without HIERARCH cards.
    matched.meta.update({"xmradius": float(radius_arcsec), "xmpairs": int(n_pairs), "xmunique": bool(unique)})
    return matched
