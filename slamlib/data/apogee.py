"""APOGEE allStar labels: Teff, log g, [M/H], [alpha/M], [C/M], [N/M] (paper Section 4.2).

The paper's training labels are APOGEE DR15's, and APOGEE's DR15 data are identical
to DR14's, so the default file is DR14's ``allStar-l31c.2.fits``. :func:`apogee_catalog`
streams it from the SDSS Science Archive Server into a cache (checking its SHA-1,
REFERENCE.md Section 4), or reads a local allStar file, and returns the standard
columns of :data:`APOGEE_COLUMNS`.

[C/M] and [N/M] have no named column: they are ``PARAM[:, i]`` with errors
``sqrt(PARAM_COV[:, i, i])``, where ``i`` is looked up in ``PARAM_SYMBOL`` of HDU 3
(documented order Teff, log g, vmicro, [M/H], [C/M], [N/M], [alpha/M], ... as the
fallback). Named columns (``TEFF``, ``M_H``, ...) are used where they exist, the
``PARAM`` array otherwise. The file is opened memory-mapped and only the needed
columns are read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from slamlib.data.catalogs import standardize_columns, verify_fits_table
from slamlib.data.fetch import default_cache_dir, fetch_file

__all__ = ["ALLSTAR_FILES", "APOGEE_COLUMNS", "AllStarFile", "apogee_catalog", "read_allstar"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AllStarFile:
    """One public allStar file on the SDSS Science Archive Server."""

    release: str
    url: str
    sha1: str

    @property
    def filename(self) -> str:
        """The file's name (last part of the URL)."""
        return self.url.rsplit("/", 1)[-1]


_DR14 = AllStarFile(
    "dr14", "https://data.sdss.org/sas/dr14/apogee/spectro/redux/r8/stars/l31c/l31c.2/allStar-l31c.2.fits",
    "a7e1801924661954da792e377ad54f412219b105",
)

#: allStar files by release; DR15's APOGEE data are DR14's.
ALLSTAR_FILES: dict[str, AllStarFile] = {
    "dr14": _DR14,
    "dr15": _DR14,
    "dr16": AllStarFile(
        "dr16", "https://data.sdss.org/sas/dr16/apogee/spectro/aspcap/r12/l33/allStar-r12-l33.fits",
        "66fe854bd000ca1c0a6b50a998877e4a3e41d184",
    ),
    "dr17": AllStarFile(
        "dr17",
        "https://data.sdss.org/sas/dr17/apogee/spectro/aspcap/dr17/synspec_rev1/allStar-dr17-synspec_rev1.fits",
        "7aa2f381de0e8e246f9833cc7da540ef45096702",
    ),
}

#: Standard columns of :func:`apogee_catalog`, in order.
APOGEE_COLUMNS: tuple[str, ...] = (
    "apogee_id", "ra", "dec", "snr", "aspcapflag", "starflag", "extratarg",
    "teff", "teff_err", "logg", "logg_err", "m_h", "m_h_err", "alpha_m", "alpha_m_err",
    "c_m", "c_m_err", "n_m", "n_m_err",
)

# Label -> (named column, PARAM_SYMBOL spellings, documented PARAM index).
_LABELS: dict[str, tuple[str, tuple[str, ...], int]] = {
    "teff": ("TEFF", ("TEFF",), 0),
    "logg": ("LOGG", ("LOGG",), 1),
    "m_h": ("M_H", ("M_H", "METALS", "M/H"), 3),
    "c_m": ("C_M", ("C", "C_M", "C/M"), 4),
    "n_m": ("N_M", ("N", "N_M", "N/M"), 5),
    "alpha_m": ("ALPHA_M", ("ALPHA_M", "O MG SI S CA TI", "ALPHA", "A/M"), 6),
}


def _param_symbols(hdul: fits.HDUList) -> list[str] | None:
    """``PARAM_SYMBOL`` from HDU 3 (upper case, stripped), or None when absent."""
    if len(hdul) < 4 or not isinstance(hdul[3], fits.BinTableHDU):
        return None
    names = {name.upper(): name for name in hdul[3].columns.names}
    if "PARAM_SYMBOL" not in names or hdul[3].data is None or len(hdul[3].data) == 0:
        return None
    symbols = np.ravel(hdul[3].data[names["PARAM_SYMBOL"]][0])
    return [(s.decode() if isinstance(s, bytes) else str(s)).strip().upper() for s in symbols]


def _param_index(label: str, symbols: list[str] | None, path: Path) -> int:
    _, spellings, fallback = _LABELS[label]
    if symbols is not None:
        for spelling in spellings:
            if spelling in symbols:
                return symbols.index(spelling)
        raise ValueError(f"{path}: PARAM_SYMBOL {symbols} names none of {spellings} for {label!r}.")
    _log.warning("%s has no PARAM_SYMBOL table in HDU 3; assuming PARAM index %d for %s.", path, fallback, label)
    return fallback


def read_allstar(path: str | Path) -> Table:
    """Read the labels and flags SLAM needs from an APOGEE allStar (or allStarLite) file.

    Parameters
    ----------
    path : str or Path
        An allStar FITS file (table in HDU 1, ``PARAM_SYMBOL`` in HDU 3).

    Returns
    -------
    astropy.table.Table, length n_row
        Columns :data:`APOGEE_COLUMNS`; ``apogee_id`` stripped of spaces, flags as
        int64, the rest float64 with NaN for missing (-9999 or NaN) values.

    Raises
    ------
    ValueError
        If a needed column is missing.
    """
    path = Path(path)
    with fits.open(path, memmap=True) as hdul:
        data = hdul[1].data
        present = {name.upper(): name for name in hdul[1].columns.names}
        raw = Table()
        for upper in ("APOGEE_ID", "RA", "DEC", "SNR", "ASPCAPFLAG", "STARFLAG"):
            if upper not in present:
                raise ValueError(f"{path} has no {upper} column; is it an APOGEE allStar file?")
            raw[upper.lower()] = np.array(data[present[upper]])
        if "EXTRATARG" in present:
            raw["extratarg"] = np.array(data[present["EXTRATARG"]])
        else:
            _log.warning("%s has no EXTRATARG column; duplicates cannot be flagged (set to 0).", path)
            raw["extratarg"] = np.zeros(len(raw), dtype=np.int64)
        need_param = [label for label, (named, _, _) in _LABELS.items()
                      if named not in present or f"{named}_ERR" not in present]
        if need_param and not {"PARAM", "PARAM_COV"} <= present.keys():
            raise ValueError(f"{path} lacks PARAM/PARAM_COV, needed for {need_param}.")
        symbols = _param_symbols(hdul) if need_param else None
        param = np.array(data[present["PARAM"]], dtype=float) if need_param else None
        cov = np.array(data[present["PARAM_COV"]], dtype=float) if need_param else None
        for label, (named, _, _) in _LABELS.items():
            if label in need_param:
                index = _param_index(label, symbols, path)
                raw[label] = param[:, index]
                variance = cov[:, index, index]
                raw[f"{label}_err"] = np.sqrt(np.where(variance >= 0, variance, np.nan))
            else:
                raw[label] = np.array(data[present[named]], dtype=float)
                raw[f"{label}_err"] = np.array(data[present[f"{named}_ERR"]], dtype=float)
    table = standardize_columns(raw, {name: [] for name in APOGEE_COLUMNS}, what=f"allStar file {path}")
    table.meta["source"] = path.name
    return table


def apogee_catalog(
    *,
    release: str = "dr15",
    path: str | Path | None = None,
    url: str | None = None,
    sha1: str | None = None,
    cache_dir: str | Path | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 120.0,
) -> Table:
    """APOGEE allStar labels with standard columns; downloads the file once and caches it.

    With no arguments, returns the labels the paper used: APOGEE DR15 (= the DR14 file
    ``allStar-l31c.2.fits``, several GB; its SHA-1 is checked).

    Parameters
    ----------
    release : {"dr14", "dr15", "dr16", "dr17"}
        Data release (DR15 means the DR14 file).
    path : str or Path, optional
        Read this local allStar file instead of downloading.
    url : str, optional
        Download from here (a mirror) instead of the SDSS SAS; no SHA-1 is checked
        then unless ``sha1`` is given.
    sha1 : str, optional
        Expected SHA-1 (default: the release's known value when ``url`` is not given).
    cache_dir : str or Path, optional
        Cache directory (default: ``default_cache_dir() / "apogee"``).
    retries, backoff, timeout
        See :func:`slamlib.data.fetch.fetch_file`.

    Returns
    -------
    astropy.table.Table, length n_row
        See :func:`read_allstar`; one row per allStar entry (duplicates included,
        flagged by ``extratarg`` bit 4).

    Raises
    ------
    DownloadError
        When the file cannot be downloaded or fails its SHA-1 (a ``ConnectionError``).
    ValueError
        For an unknown release or a file lacking needed columns.
    """
    if path is None:
        if release not in ALLSTAR_FILES:
            raise ValueError(f"release must be one of {sorted(ALLSTAR_FILES)}, got {release!r}.")
        known = ALLSTAR_FILES[release]
        if url is None:
            url, sha1 = known.url, sha1 or known.sha1
        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "apogee"
        path = directory / (url.split("?")[0].rsplit("/", 1)[-1] or known.filename)
        if not path.is_file():
            _log.info("Downloading APOGEE %s allStar to %s", release.upper(), path)
            fetch_file(url, path, verify=verify_fits_table, sha1=sha1,
                       retries=retries, backoff=backoff, timeout=timeout)
    return read_allstar(path)
