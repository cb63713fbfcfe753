"""Real survey data for SLAM: catalogues, the paper's selections, cross-match, spectra downloads.

Used by the notebooks with ``data_source="lamost"``; none of it is needed for the mock data.

* :func:`lamost_catalog` -- LAMOST DR5 A/F/G/K LASP parameters (VizieR ``V/164/stellar5``)
  (:mod:`slamlib.data.catalogs`).
* :func:`apogee_catalog` -- APOGEE DR15 (= DR14 file), DR16 or DR17 allStar labels from the
  SDSS archive, SHA-1 checked (:mod:`slamlib.data.apogee`).
* :func:`slam_catalog` -- the published SLAM catalogue, for comparison.
* :func:`select_lasp_training`, :func:`select_lasp_test`, :func:`select_apogee_common` --
  the paper's cuts (Sections 3.2 and 4.2), returning a :class:`Selection` with the
  counts after each criterion (:mod:`slamlib.data.selection`).
* :func:`crossmatch` -- LAMOST x APOGEE by position, one-to-one (:mod:`slamlib.data.crossmatch`).
* :func:`download_spectra` -- LAMOST spectra by obsid into a verified cache, in parallel
  (:mod:`slamlib.data.download`, on top of :mod:`slamlib.data.fetch`).

Network failures raise :class:`DownloadError` (a ``ConnectionError``) naming the URL; a
server answer that is not the expected file raises :class:`InvalidPayloadError` (also a
``ValueError``). No partial file is ever left in a cache.
"""

from slamlib.data.apogee import APOGEE_COLUMNS, apogee_catalog, read_allstar
from slamlib.data.catalogs import LAMOST_COLUMNS, lamost_catalog, slam_catalog
from slamlib.data.crossmatch import crossmatch
from slamlib.data.download import download_spectra, lamost_spectrum_url
from slamlib.data.fetch import (
    DownloadError,
    InvalidPayloadError,
    default_cache_dir,
    fetch_file,
)
from slamlib.data.selection import (
    Criterion,
    FunnelStep,
    Selection,
    apogee_common_criteria,
    apply_criteria,
    lasp_criteria,
    select_apogee_common,
    select_lasp_test,
    select_lasp_training,
)

__all__ = [
    "APOGEE_COLUMNS",
    "Criterion",
    "DownloadError",
    "FunnelStep",
    "InvalidPayloadError",
    "LAMOST_COLUMNS",
    "Selection",
    "apogee_catalog",
    "apogee_common_criteria",
    "apply_criteria",
    "crossmatch",
    "default_cache_dir",
    "download_spectra",
    "fetch_file",
    "lamost_catalog",
    "lamost_spectrum_url",
    "lasp_criteria",
    "read_allstar",
    "select_apogee_common",
    "select_lasp_test",
    "select_lasp_training",
    "slam_catalog",
]
