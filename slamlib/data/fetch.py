"""Verified downloads into an on-disk cache: one URL to one file, or a clear error.

:func:`fetch_file` streams a URL to ``<destination>.partial``, checks it, and only
then moves it into place with :func:`os.replace`, so a cache never holds a partial or
corrupt file:

* **retries** with exponential backoff (bounded: ``retries`` extra attempts, each wait
  at most :data:`MAX_BACKOFF_SECONDS`) on connection errors, time-outs, HTTP 5xx,
  408, 429 and bodies shorter than their ``Content-Length``;
* **resume**: a retry after a dropped connection asks for the missing bytes with an
  HTTP ``Range`` header; a server that answers 200 instead of 206 sends the whole
  file again, which is written from the start;
* **checks**: the body's length against ``Content-Length``, an optional SHA-1, and
  an optional ``verify`` callable (e.g. "opens with :func:`slamlib.io.read_lamost`");
  a file failing them is dropped and fetched again from the start (it counts as an
  attempt). An HTML, XML or JSON body (an error page, even with status 200) fails at
  once, without retries; so do HTTP 4xx answers (401/403 hint at a missing token).

Every failure raises :class:`DownloadError` (a :class:`ConnectionError`) naming the
URL, with query-string tokens replaced by ``***``; a body that is not the expected
file raises :class:`InvalidPayloadError`, which is also a :class:`ValueError`. The
``.partial`` file is removed on failure unless ``keep_partial=True``.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from slamlib import __version__

__all__ = [
    "DownloadError",
    "InvalidPayloadError",
    "MAX_BACKOFF_SECONDS",
    "default_cache_dir",
    "fetch_file",
    "redact_url",
    "sha1_of_file",
]

_log = logging.getLogger(__name__)

#: Longest wait between two attempts, in seconds.
MAX_BACKOFF_SECONDS = 60.0

#: HTTP statuses worth retrying: the server may answer later.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

#: Query parameters whose values never appear in logs or messages.
_SECRET_PARAMETERS = frozenset({"token", "key", "apikey", "api_key", "password"})

_MOCK_HINT = 'or run the notebooks with data_source="mock" to use the mock data instead'

_CHUNK_BYTES = 1 << 20


class DownloadError(ConnectionError):
    """A download failed: no network, a failing server, or not the expected file.

    Attributes
    ----------
    url : str
        The URL, with tokens replaced by ``***``.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = redact_url(url)


class InvalidPayloadError(DownloadError, ValueError):
    """The server answered, but not with the expected file (an error page, a corrupt body)."""


class _RetryableError(Exception):
    """A failure that another attempt may cure (network, 5xx, a body shorter than announced)."""


class _RangeRefusedError(_RetryableError):
    """HTTP 416: the partial file cannot be continued and must be dropped."""


class _CheckFailedError(Exception):
    """A complete download failed its SHA-1 or ``verify`` check (retried from scratch)."""


def redact_url(url: str) -> str:
    """``url`` with the values of ``token``-like query parameters replaced by ``***``.

    Parameters
    ----------
    url : str
        Any URL.

    Returns
    -------
    str
        The URL safe to log.
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.query:
        return url
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    cleaned = [(key, "***" if key.lower() in _SECRET_PARAMETERS else value) for key, value in pairs]
    query = urllib.parse.urlencode(cleaned, safe="*{}")
    return urllib.parse.urlunsplit(parts._replace(query=query))


def default_cache_dir() -> Path:
    """Where downloads go when no ``cache_dir`` is given: ``<project cache>/downloads``.

    The project cache is :func:`slamlib.pipeline.cache.cache_dir` (``$SLAMLIB_CACHE`` if set, else the
    repository's ``data/cache``), so generated and downloaded data share one place.
    """
    from slamlib.pipeline.cache import cache_dir

    return cache_dir() / "downloads"


def sha1_of_file(path: str | Path) -> str:
    """Hexadecimal SHA-1 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _error_page_kind(head: bytes, content_type: str) -> str | None:
    """``"HTML"``/``"JSON"``/``"XML"`` when a body is an error page rather than data, else None."""
    content_type = content_type.split(";")[0].strip().lower()
    if content_type in {"text/html", "application/xhtml+xml"}:
        return "HTML"
    if content_type in {"application/json", "text/json"}:
        return "JSON"
    start = head.lstrip()[:1]
    if start == b"<":
        return "HTML" if b"html" in head[:512].lower() else "XML"
    if start in {b"{", b"["}:
        return "JSON"
    return None


def _excerpt(body: bytes, url: str, limit: int = 160) -> str:
    """A short, single-line excerpt of a body for an error message, without the URL's secrets."""
    text = " ".join(body[:2048].decode("utf-8", errors="replace").split())
    for key, value in urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query):
        if key.lower() in _SECRET_PARAMETERS and value:
            text = text.replace(value, "***")
    return text[:limit]


def _backoff_seconds(attempt: int, backoff: float) -> float:
    """Wait before attempt number ``attempt`` (1, 2, ...): ``backoff * 2**(attempt - 1)``, capped."""
    return min(backoff * 2.0 ** (attempt - 1), MAX_BACKOFF_SECONDS)


def _open(url: str, *, offset: int, timeout: float) -> http.client.HTTPResponse:
    """Send the request (with a Range header when resuming); map failures to our errors."""
    headers = {"User-Agent": f"slamlib/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) URLs only
    except urllib.error.HTTPError as error:
        error.close()
        if error.code in _RETRY_STATUSES:
            raise _RetryableError(f"HTTP {error.code} {error.reason}") from None
        if error.code == 416 and offset:
            raise _RangeRefusedError("the server refused to resume (HTTP 416); starting again") from None
        hint = ""
        if error.code in {401, 403}:
            hint = " (a LAMOST token may be needed: pass token=... or set LAMOST_TOKEN)"
        raise DownloadError(
            f"Download of {redact_url(url)} failed with HTTP {error.code} {error.reason}{hint}; "
            f"check the URL, {_MOCK_HINT}.",
            url=url,
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise _RetryableError(f"no connection ({reason})") from None


def _transfer(url: str, partial: Path, *, timeout: float) -> None:
    """Stream ``url`` into ``partial``, appending when the server honours a Range request."""
    offset = partial.stat().st_size if partial.exists() else 0
    try:
        response = _open(url, offset=offset, timeout=timeout)
    except _RangeRefusedError:
        partial.unlink(missing_ok=True)
        raise
    with response:
        status = response.status
        content_type = response.headers.get("Content-Type", "") or ""
        length_header = response.headers.get("Content-Length")
        expected = int(length_header) if length_header and length_header.isdigit() else None
        if status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                partial.unlink(missing_ok=True)
                raise _RetryableError(f"the server resumed at the wrong byte ({content_range!r}); starting again")
            mode = "ab"
        else:
            if status != 200:
                raise DownloadError(
                    f"Download of {redact_url(url)} returned HTTP {status}; check the URL, {_MOCK_HINT}.", url=url
                )
            if offset:
                _log.info("%s: the server ignored the Range request; downloading from the start", redact_url(url))
            offset, mode = 0, "wb"
        try:
            first = response.read(_CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as error:
            raise _RetryableError(f"connection lost before the body arrived ({error})") from None
        if offset == 0:
            kind = _error_page_kind(first, content_type)
            if kind is not None:
                raise InvalidPayloadError(
                    f"{redact_url(url)} answered HTTP {status} with an error page ({kind}) instead of the file: "
                    f"{_excerpt(first, url)!r}; check the URL, token and id, {_MOCK_HINT}.",
                    url=url,
                )
        received = 0
        with open(partial, mode) as handle:
            chunk = first
            while chunk:
                handle.write(chunk)
                received += len(chunk)
                try:
                    chunk = response.read(_CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as error:
                    raise _RetryableError(f"connection lost after {offset + received} bytes ({error})") from None
    if expected is not None and received != expected:
        raise _RetryableError(f"connection closed after {received} of {expected} bytes")


def fetch_file(
    url: str,
    destination: str | Path,
    *,
    verify: Callable[[Path], Path | None] | None = None,
    sha1: str | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    keep_partial: bool = False,
) -> Path:
    """Download ``url`` to ``destination`` through a verified ``.partial`` file.

    The file is always downloaded (cache look-ups are the caller's job); an existing
    ``<destination>.partial`` is resumed.

    Parameters
    ----------
    url : str
        An ``http://`` or ``https://`` URL (tokens in its query string are never logged).
    destination : str or Path
        Final file; its directory is created.
    verify : callable, optional
        ``verify(path)`` checks the complete download at ``path`` and raises
        ``ValueError`` if it is not the expected file; it may return another path
        (same directory) to store the file under, e.g. with a ``.gz`` suffix.
    sha1 : str, optional
        Expected hexadecimal SHA-1 of the file.
    retries : int
        Extra attempts after the first one (0 = try once).
    backoff : float
        Seconds before the first retry; doubled for each further one, capped at
        :data:`MAX_BACKOFF_SECONDS`.
    timeout : float
        Seconds to wait for the connection and for each read.
    keep_partial : bool
        Keep ``<destination>.partial`` after a failure so a later call resumes it.

    Returns
    -------
    Path
        Where the verified file now is.

    Raises
    ------
    DownloadError
        Network failure or HTTP error after all attempts, naming the URL.
    InvalidPayloadError
        The server sent an error page, or the file failed ``sha1`` / ``verify`` on
        every attempt.
    """
    if urllib.parse.urlsplit(url).scheme not in {"http", "https"}:
        raise ValueError(f"Only http:// and https:// URLs can be downloaded, got {redact_url(url)!r}.")
    if retries < 0 or backoff < 0 or timeout <= 0:
        raise ValueError(
            f"retries and backoff must be >= 0 and timeout > 0, got {retries=}, {backoff=}, {timeout=}."
        )
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    safe_url = redact_url(url)
    reason = "no attempt made"
    success = False
    invalid = False
    try:
        for attempt in range(retries + 1):
            if attempt:
                wait = _backoff_seconds(attempt, backoff)
                _log.info("%s: attempt %d of %d in %.2f s (%s)", safe_url, attempt + 1, retries + 1, wait, reason)
                time.sleep(wait)
            try:
                _transfer(url, partial, timeout=timeout)
                final = _check(partial, destination, verify=verify, sha1=sha1, url=url)
            except _RetryableError as error:
                reason = str(error)
                invalid = False
                continue
            except _CheckFailedError as error:
                reason, invalid = str(error), True
                partial.unlink(missing_ok=True)
                continue
            os.replace(partial, final)
            success = True
            _log.debug("%s: saved as %s", safe_url, final)
            return final
        error_class = InvalidPayloadError if invalid else DownloadError
        raise error_class(
            f"Could not download {safe_url} after {retries + 1} attempt(s): {reason}. "
            f"Check the network and the URL (or the base_url / mirror you passed), {_MOCK_HINT}.",
            url=url,
        )
    finally:
        if not success and not keep_partial:
            partial.unlink(missing_ok=True)


def _check(
    partial: Path, destination: Path, *, verify: Callable[[Path], Path | None] | None, sha1: str | None, url: str
) -> Path:
    """Run the SHA-1 and ``verify`` checks on a complete download; return its final path."""
    if sha1 is not None:
        actual = sha1_of_file(partial)
        if actual.lower() != sha1.lower():
            raise _CheckFailedError(f"SHA-1 {actual} differs from the expected {sha1.lower()}")
    final = destination
    if verify is not None:
        try:
            final = verify(partial) or destination
        except ValueError as error:
            raise _CheckFailedError(f"not the expected file ({error})") from None
    return Path(final)
