"""The LAMOST DR5 stellar-parameter catalogue and the published SLAM catalogue (paper Sections 3.2, 5).

:func:`lamost_catalog` fetches the LAMOST DR5 "A, F, G and K type stars" catalogue
(LASP parameters; VizieR ``V/164/stellar5``, Luo et al. 2019) with astroquery, or
reads a LAMOST catalogue file (``dr5_v3_stellar.fits.gz`` / ``.csv.gz``), and returns
it with the standard column names of :data:`LAMOST_COLUMNS`. VizieR results are
cached as FITS in ``cache_dir`` (written to a ``.partial`` file, then renamed).

:func:`slam_catalog` downloads Zhang, Liu & Deng's own catalogue
(``catalog_slam_v10_short.fits`` on China-VO PaperData) through the verified cache
of :mod:`slamlib.data.fetch`, for comparison with our predictions.

Missing values (masked entries and the LAMOST sentinel -9999) become NaN in the
float columns of every standardized table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyWarning

from slamlib.data.fetch import DownloadError, default_cache_dir, fetch_file
from slamlib.files import atomic_write

__all__ = [
    "LAMOST_COLUMNS",
    "LAMOST_DR5_VIZIER",
    "LAMOST_VIZIER_COLUMNS",
    "MISSING_SENTINEL",
    "SLAM_CATALOG_URL",
    "lamost_catalog",
    "slam_catalog",
    "standardize_columns",
    "verify_fits_table",
]

_log = logging.getLogger(__name__)

#: VizieR table of the LAMOST DR5 A, F, G and K type stars (5,348,712 rows).
LAMOST_DR5_VIZIER = "V/164/stellar5"

#: VizieR column name -> standard name, for ``V/164/stellar5`` (REFERENCE.md Section 3).
LAMOST_VIZIER_COLUMNS: dict[str, str] = {
    "ObsID": "obsid", "RAJ2000": "ra", "DEJ2000": "dec", "snrg": "snrg",
    "Teff": "teff", "e_Teff": "teff_err", "logg": "logg", "e_logg": "logg_err",
    "[Fe/H]": "feh", "e_[Fe/H]": "feh_err", "HRV": "rv",
}

#: Standard columns of :func:`lamost_catalog`, in order.
LAMOST_COLUMNS: tuple[str, ...] = tuple(LAMOST_VIZIER_COLUMNS.values())

#: The SLAM K-giant/AFGK catalogue of Zhang, Liu & Deng (2020) on China-VO PaperData.
SLAM_CATALOG_URL = "http://paperdata.china-vo.org/bozhang/slam/catalog_slam_v10_short.fits"

#: Missing-value sentinel of LAMOST and older APOGEE catalogues.
MISSING_SENTINEL = -9999.0

_INTEGER_COLUMNS = frozenset({"obsid", "aspcapflag", "starflag", "extratarg"})
_STRING_COLUMNS = frozenset({"apogee_id"})


def _column_values(column: np.ndarray, name: str) -> np.ndarray:
    """Plain ndarray of a column: int64 for ids and flags, str for ids, float64 (NaN = missing) else."""
    data = np.ma.asarray(column)
    if name in _STRING_COLUMNS:
        return np.char.strip(np.asarray(data.filled(""), dtype=str))
    if name in _INTEGER_COLUMNS:
        if np.ma.is_masked(data):
            raise ValueError(f"Column {name!r} has masked (missing) entries; it must be complete.")
        return np.asarray(data, dtype=np.int64)
    values = np.asarray(data.astype(float).filled(np.nan), dtype=float)
    values[np.abs(values - MISSING_SENTINEL) < 0.5] = np.nan
    return values


def standardize_columns(
    table: Table, aliases: Mapping[str, Sequence[str]], *, what: str = "catalogue"
) -> Table:
    """A new table with standard column names, found case-insensitively under their aliases.

    Parameters
    ----------
    table : astropy.table.Table, length n_row
        The source table (not modified).
    aliases : mapping of str to sequence of str
        For each standard name (in output order), the source names it may have.
    what : str
        Name of the catalogue, for error messages.

    Returns
    -------
    astropy.table.Table, length n_row
        Unitless columns: ``obsid`` and flags as int64, ids as str, the rest float64
        with NaN for masked or -9999 entries.

    Raises
    ------
    ValueError
        If a standard column has none of its aliases in ``table``.
    """
    by_lower = {name.lower(): name for name in table.colnames}
    output = Table()
    for standard, candidates in aliases.items():
        source = next((by_lower[c.lower()] for c in (standard, *candidates) if c.lower() in by_lower), None)
        if source is None:
            raise ValueError(
                f"The {what} has no column for {standard!r} (looked for {[standard, *candidates]}); "
                f"it has {table.colnames}."
            )
        output[standard] = _column_values(table[source], standard)
    return output


def _lamost_aliases() -> dict[str, list[str]]:
    aliases: dict[str, list[str]] = {standard: [] for standard in LAMOST_COLUMNS}
    for vizier_name, standard in LAMOST_VIZIER_COLUMNS.items():
        aliases[standard].append(vizier_name)
    aliases["ra"].append("RA_ICRS")
    aliases["dec"].append("DE_ICRS")
    return aliases


def _cache_key(**query: object) -> str:
    """A short hash naming one VizieR query's cached result."""
    text = json.dumps(query, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _write_table_atomically(table: Table, path: Path) -> None:
    atomic_write(path, lambda temporary: table.write(temporary, format="fits", overwrite=True), to_path=True)


def _query_vizier(catalog: str, columns: list[str], constraints: Mapping[str, str],
                  row_limit: int, timeout: float) -> Table:
    """One VizieR constraint query (astroquery); network failures become DownloadError."""
    import requests
    from astroquery.exceptions import EmptyResponseError, TableParseError
    from astroquery.vizier import VizierClass

    vizier = VizierClass(columns=columns, row_limit=row_limit, timeout=timeout)
    url = f"https://{vizier.VIZIER_SERVER}/viz-bin/votable"
    try:
        result = vizier.query_constraints(catalog=catalog, cache=False, **dict(constraints))
    except (requests.RequestException, OSError, EmptyResponseError, TableParseError) as error:
        raise DownloadError(
            f"The VizieR query of {catalog} at {url} failed ({type(error).__name__}: {error}); check the "
            'network, or run the notebooks with data_source="mock" to use the mock data instead.',
            url=url,
        ) from error
    if len(result) == 0:
        raise ValueError(
            f"VizieR returned no table for {catalog} with constraints {dict(constraints)}; "
            "check the catalogue name and the constraints."
        )
    table = result[0]
    if 0 < row_limit <= len(table):
        _log.warning("The VizieR result has %d rows = row_limit; it is probably truncated.", len(table))
    return table


def lamost_catalog(
    *,
    path: str | Path | None = None,
    catalog: str = LAMOST_DR5_VIZIER,
    constraints: Mapping[str, str] | None = None,
    row_limit: int = -1,
    cache_dir: str | Path | None = None,
    refresh: bool = False,
    timeout: float = 600.0,
) -> Table:
    """The LAMOST DR5 A/F/G/K stellar-parameter catalogue (LASP) with standard columns.

    With no arguments, fetches the whole ``V/164/stellar5`` table from VizieR (the
    catalogue the paper used; 5.3 million rows: slow, and cached afterwards).

    Parameters
    ----------
    path : str or Path, optional
        Read this local catalogue file instead (FITS, VOTable or CSV, with LAMOST's
        lowercase names or VizieR's names).
    catalog : str
        VizieR table (default ``"V/164/stellar5"``).
    constraints : mapping of str to str, optional
        VizieR column constraints, e.g. ``{"snrg": ">100", "Teff": ">4000 & <5300"}``.
    row_limit : int
        Most rows VizieR returns; -1 = all.
    cache_dir : str or Path, optional
        Where VizieR results are cached (default: ``default_cache_dir() / "catalogs"``).
    refresh : bool
        Query VizieR even when a cached result exists.
    timeout : float
        Seconds to wait for VizieR.

    Returns
    -------
    astropy.table.Table, length n_star
        Columns :data:`LAMOST_COLUMNS`: ``obsid`` (int64), ``ra``, ``dec`` (deg,
        J2000), ``snrg``, ``teff``, ``teff_err`` (K), ``logg``, ``logg_err``,
        ``feh``, ``feh_err`` (dex), ``rv`` (km/s); NaN marks a missing value.

    Raises
    ------
    DownloadError
        When VizieR cannot be reached (a ``ConnectionError``).
    ValueError
        When the file or the result lacks a needed column.
    """
    aliases = _lamost_aliases()
    if path is not None:
        return standardize_columns(Table.read(path), aliases, what=f"LAMOST catalogue {path}")
    constraints = dict(constraints or {})
    columns = list(LAMOST_VIZIER_COLUMNS)
    key = _cache_key(catalog=catalog, columns=columns, constraints=constraints, row_limit=row_limit)
    cache_path = Path(cache_dir or default_cache_dir() / "catalogs") / f"lamost_{catalog.replace('/', '_')}_{key}.fits"
    if cache_path.is_file() and not refresh:
        _log.info("Reading the cached VizieR result %s", cache_path)
        return Table.read(cache_path, format="fits")
    _log.info("Querying VizieR %s (constraints %s, row_limit %d)", catalog, constraints, row_limit)
    raw = _query_vizier(catalog, columns, constraints, row_limit, timeout)
    table = standardize_columns(raw, aliases, what=f"VizieR table {catalog}")
    table.meta.update({"catalog": catalog, "query": json.dumps(constraints), "rowlimit": row_limit})  # FITS-safe keys
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    _write_table_atomically(table, cache_path)
    return table


def verify_fits_table(path: Path) -> None:
    """Raise ValueError unless ``path`` is a FITS file with a binary table in HDU 1."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head != b"SIMPLE  =":
        raise ValueError(f"the body starts with {head!r}, not a FITS header")
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyWarning)  # "File may have been truncated" is a warning
        try:
            with fits.open(path, memmap=True) as hdul:
                if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
                    raise ValueError("HDU 1 is not a binary table")
        except (OSError, AstropyWarning) as error:
            raise ValueError(f"not a readable FITS file ({error})") from None


def slam_catalog(
    *,
    cache_dir: str | Path | None = None,
    url: str = SLAM_CATALOG_URL,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 120.0,
) -> Table:
    """The published SLAM catalogue of Zhang, Liu & Deng (2020), downloaded once and cached.

    Parameters
    ----------
    cache_dir : str or Path, optional
        Cache directory (default: ``default_cache_dir() / "slam"``).
    url : str
        Where to fetch it (default :data:`SLAM_CATALOG_URL`; a mirror may be given).
    retries, backoff, timeout
        See :func:`slamlib.data.fetch.fetch_file`.

    Returns
    -------
    astropy.table.Table, length n_star
        The catalogue's first table with lowercase column names (its columns are
        not documented: inspect them; expect an ``obsid`` key and label columns).

    Raises
    ------
    DownloadError
        When the file cannot be fetched (no network, server error, not a FITS table).
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "slam"
    destination = directory / (Path(url.split("?")[0]).name or "catalog_slam.fits")
    if not destination.is_file():
        fetch_file(url, destination, verify=verify_fits_table, retries=retries, backoff=backoff, timeout=timeout)
    table = Table.read(destination, hdu=1)
    table.rename_columns(table.colnames, [name.lower() for name in table.colnames])
    return table
