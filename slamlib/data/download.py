"""LAMOST low-resolution spectra by obsid, into a verified on-disk cache (paper Sections 3.1, 4.2).

:func:`download_spectra` fetches many spectra in parallel (a bounded thread pool,
with a tqdm progress bar) through :func:`slamlib.data.fetch.fetch_file`, so every
file in the cache has been checked: a FITS (or gzipped FITS, told by its magic
bytes) that :func:`slamlib.io.read_lamost` reads, whose header ``OBSID`` (when
present) is the one asked for. Cached files are named ``<obsid>.fits.gz`` or
``<obsid>.fits`` after their content; one cache directory should hold one data
release.

The default URL is the DR5 v3 pattern of the LAMOST archive,
``http://dr5.lamost.org/v3/spectrum/fits/{obsid}`` (REFERENCE.md Section 2); a
personal token, when needed, comes from ``token=`` or the environment variable
``LAMOST_TOKEN`` and is appended as ``?token=...``; it never appears in logs or
error messages.
"""

from __future__ import annotations

import gzip
import logging
import operator
import os
import threading
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Iterable, Literal

from tqdm import tqdm

from slamlib.data.fetch import DownloadError, fetch_file, redact_url
from slamlib.io import read_lamost

__all__ = [
    "DR5_SPECTRUM_URL",
    "TOKEN_ENV_VAR",
    "cached_spectrum_path",
    "download_spectra",
    "lamost_spectrum_url",
]

_log = logging.getLogger(__name__)

#: Default URL template of one LAMOST DR5 v3 low-resolution spectrum.
DR5_SPECTRUM_URL = "http://dr5.lamost.org/v3/spectrum/fits/{obsid}"

#: Environment variable read for the LAMOST token when ``token`` is not given.
TOKEN_ENV_VAR = "LAMOST_TOKEN"

_FITS_MAGIC = b"SIMPLE  ="
_GZIP_MAGIC = b"\x1f\x8b"


def _as_obsid(value: object) -> int:
    """A positive integer obsid from an int, a numpy integer or a string of digits."""
    obsid = -1
    if isinstance(value, str) and value.strip().isdigit():
        obsid = int(value.strip())
    elif not isinstance(value, (str, bool)):
        try:
            obsid = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            pass
    if obsid <= 0:
        raise ValueError(f"A LAMOST obsid must be a positive integer, got {value!r}.")
    return obsid


def lamost_spectrum_url(obsid: int, *, base_url: str | None = None, token: str | None = None) -> str:
    """The download URL of one LAMOST spectrum (nothing is fetched).

    Parameters
    ----------
    obsid : int
        LAMOST spectrum id.
    base_url : str, optional
        A template containing ``{obsid}`` (e.g.
        ``"https://www.lamost.org/openapi/dr10/v2.0/lrs/spectrum/fits?obsid={obsid}"``)
        or a prefix to which ``/<obsid>`` is appended (a mirror, a test server).
        Default: :data:`DR5_SPECTRUM_URL`.
    token : str, optional
        LAMOST token; default ``$LAMOST_TOKEN``; none if neither is set.

    Returns
    -------
    str
        The URL, with ``token=...`` in its query string when a token is known.
    """
    obsid = _as_obsid(obsid)
    template = DR5_SPECTRUM_URL if base_url is None else str(base_url)
    if "{obsid}" in template:
        url = template.replace("{obsid}", str(obsid))
    else:
        url = f"{template.rstrip('/')}/{obsid}"
    token = token if token is not None else os.environ.get(TOKEN_ENV_VAR)
    if token:
        separator = "&" if urllib.parse.urlsplit(url).query else "?"
        url = f"{url}{separator}{urllib.parse.urlencode({'token': token})}"
    return url


def cached_spectrum_path(obsid: int, cache_dir: str | Path) -> Path | None:
    """The cached file of ``obsid`` in ``cache_dir`` (``.fits.gz`` or ``.fits``), or None."""
    obsid = _as_obsid(obsid)
    for name in (f"{obsid}.fits.gz", f"{obsid}.fits"):
        path = Path(cache_dir) / name
        if path.is_file():
            return path
    return None


def _fits_kind(path: Path) -> str:
    """``"gzip"`` or ``"fits"`` from a file's magic bytes; ValueError for anything else."""
    with open(path, "rb") as handle:
        head = handle.read(len(_FITS_MAGIC))
    kind = "fits"
    if head.startswith(_GZIP_MAGIC):
        kind = "gzip"
        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(len(_FITS_MAGIC))
        except (OSError, EOFError) as error:
            raise ValueError(f"a corrupt gzip stream ({error})") from None
    if head != _FITS_MAGIC:
        raise ValueError(f"the body starts with {head!r}, not a FITS header")
    return kind


def _verify_spectrum(path: Path, *, obsid: int) -> Path:
    """Check a downloaded spectrum and return the cache name matching its content.

    Raises
    ------
    ValueError
        Not a (gzipped) FITS file, not readable by ``read_lamost``, or another obsid.
    """
    kind = _fits_kind(path)
    spectrum = read_lamost(path)
    header_obsid = spectrum.meta.get("obsid")
    if header_obsid is not None and int(header_obsid) != obsid:
        raise ValueError(f"the file holds obsid {header_obsid}, not {obsid}")
    return path.parent / (f"{obsid}.fits.gz" if kind == "gzip" else f"{obsid}.fits")


def _valid_cached(obsid: int, cache_dir: Path, *, full: bool) -> Path | None:
    """The cached spectrum of ``obsid`` if it passes the check, else None (a failing file is removed).

    Files enter the cache only after :func:`_verify_spectrum`, so by default only the
    magic bytes are checked; ``full=True`` reads every file again.
    """
    path = cached_spectrum_path(obsid, cache_dir)
    if path is None:
        return None
    try:
        _verify_spectrum(path, obsid=obsid) if full else _fits_kind(path)
    except ValueError as error:
        _log.warning("Cached spectrum %s is unreadable (%s); downloading it again.", path, error)
        path.unlink(missing_ok=True)
        return None
    return path


def _download_one(
    obsid: int, cache_dir: Path, *, base_url: str | None, token: str | None,
    retries: int, backoff: float, timeout: float, read_lock: threading.Lock,
) -> Path:
    url = lamost_spectrum_url(obsid, base_url=base_url, token=token)
    _log.debug("Downloading obsid %d from %s", obsid, redact_url(url))

    def verify(path: Path) -> Path:
        # read_lamost records warnings with warnings.catch_warnings, which is not
        # thread-safe: one verification at a time (each takes milliseconds).
        with read_lock:
            return _verify_spectrum(path, obsid=obsid)

    return fetch_file(
        url, cache_dir / f"{obsid}.fits", verify=verify, retries=retries, backoff=backoff, timeout=timeout
    )


def download_spectra(
    obsids: Iterable[int],
    cache_dir: str | Path,
    base_url: str | None = None,
    n_workers: int = 4,
    *,
    token: str | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    on_error: Literal["raise", "skip"] = "raise",
    verify_cached: bool = False,
    progress: bool = True,
) -> list[Path | None]:
    """Download LAMOST spectra by obsid into a cache directory, skipping cached ones.

    Parameters
    ----------
    obsids : iterable of int, length n_spec
        LAMOST obsids (repeats are downloaded once).
    cache_dir : str or Path
        Cache directory (created if needed); files are ``<obsid>.fits.gz`` or ``<obsid>.fits``.
    base_url : str, optional
        URL template or prefix, see :func:`lamost_spectrum_url` (default: DR5 v3).
    n_workers : int
        Most downloads running at once.
    token : str, optional
        LAMOST token (default ``$LAMOST_TOKEN``); never logged.
    retries, backoff, timeout
        Per file, see :func:`slamlib.data.fetch.fetch_file`.
    on_error : {"raise", "skip"}
        ``"raise"``: at the first failed file, cancel the downloads not yet started,
        let the running ones finish (and be cached), and raise that file's error.
        ``"skip"``: log each failure and return None in its place.
    verify_cached : bool
        Read every cached file again with ``read_lamost`` (and download it again if
        it fails); by default cached files, which were verified when they were
        stored, are only checked by their first bytes.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    list of Path (or None), length n_spec
        The cached file of each obsid, in the order given; None for failures when
        ``on_error="skip"``.

    Raises
    ------
    DownloadError
        (a ``ConnectionError``) when a file cannot be downloaded and ``on_error="raise"``;
        :class:`~slamlib.data.fetch.InvalidPayloadError` (also a ``ValueError``) when
        the server sends something other than the spectrum.
    ValueError
        For an invalid obsid or option.
    """
    obsid_list = [_as_obsid(obsid) for obsid in obsids]
    if not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}.")
    if on_error not in {"raise", "skip"}:
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    unique = list(dict.fromkeys(obsid_list))
    found: dict[int, Path | None] = {obsid: _valid_cached(obsid, cache_dir, full=verify_cached) for obsid in unique}
    missing = [obsid for obsid in unique if found[obsid] is None]
    _log.info("%d of %d spectra cached in %s; downloading %d with %d workers.",
              len(unique) - len(missing), len(unique), cache_dir, len(missing), n_workers)
    failures: dict[int, DownloadError] = {}
    read_lock = threading.Lock()
    with tqdm(total=len(unique), initial=len(unique) - len(missing), disable=not progress,
              desc="LAMOST spectra", unit="spectrum") as bar, ThreadPoolExecutor(max_workers=n_workers) as pool:
        futures: dict[Future[Path], int] = {
            pool.submit(_download_one, obsid, cache_dir, base_url=base_url, token=token,
                        retries=retries, backoff=backoff, timeout=timeout, read_lock=read_lock): obsid
            for obsid in missing
        }
        try:
            for future in as_completed(futures):
                obsid = futures[future]
                try:
                    found[obsid] = future.result()
                except DownloadError as error:
                    failures[obsid] = error
                    _log.warning("obsid %d: %s", obsid, error)
                    if on_error == "raise":
                        break
                bar.update(1)
        finally:  # on a failure (or Ctrl-C) start nothing new; running downloads finish
            for pending in futures:
                pending.cancel()
    if failures and on_error == "raise":
        first_obsid, first_error = next(iter(failures.items()))
        _log.info("Download of obsid %d failed; %d spectra are cached in %s.",
                   first_obsid, sum(path is not None for path in found.values()), cache_dir)
        raise first_error
    if failures:
        _log.warning("%d of %d spectra could not be downloaded: obsids %s.",
                     len(failures), len(unique), sorted(failures)[:20])
    return [found[obsid] for obsid in obsid_list]
