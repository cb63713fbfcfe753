"""Tests of slamlib.data downloads: the verified cache, retries, resume, parallelism.

Nothing here reaches the internet. A loopback HTTP server (127.0.0.1, a free port,
one per test, shut down by its fixture, refusing more than MAX_REQUESTS requests)
serves small synthetic LAMOST-format FITS files written with slamlib.io.write_lamost:
none of them is a real spectrum. An autouse fixture makes any name lookup other than
the loopback address fail, so a test that tried to reach a real host would fail
instead of touching the network.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from test_data_catalogs import write_allstar_stub

from slamlib.data import (
    DownloadError,
    InvalidPayloadError,
    apogee_catalog,
    default_cache_dir,
    download_spectra,
    fetch_file,
    lamost_spectrum_url,
    slam_catalog,
)
from slamlib.data.fetch import redact_url
from slamlib.io import Spectrum, read_lamost, write_lamost

#: The server answers 503 to any request beyond this number (a runaway client fails fast).
MAX_REQUESTS = 60
#: Client timeout for every download in these tests, seconds.
TIMEOUT = 5.0
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


# --------------------------------------------------------------------------------------
# No network but loopback
# --------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any name lookup other than loopback fails; proxies are bypassed for 127.0.0.1."""
    real_getaddrinfo = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host not in LOOPBACK:
            raise OSError(f"test tried to resolve {host!r}: tests must not reach the internet")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("LAMOST_TOKEN", raising=False)


# --------------------------------------------------------------------------------------
# The loopback server
# --------------------------------------------------------------------------------------
@dataclass
class Reply:
    """One scripted answer of the loopback server."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/fits"
    honour_range: bool = False  # answer "Range: bytes=N-" with 206 and the rest of the body
    cut_after: int | None = None  # announce the full length, send this many bytes, close
    reset: bool = False  # after cut_after bytes, reset the connection (RST) instead of closing
    delay: float = 0.0


@dataclass
class Served:
    """What the server saw: one entry per request."""

    path: str
    query: dict[str, str]
    range: str | None


@dataclass
class LoopbackServer:
    """Scripted replies per path; the last reply of a script repeats."""

    port: int = 0
    scripts: dict[str, list[Reply]] = field(default_factory=dict)
    served: list[Served] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: int = 0
    max_active: int = 0

    def route(self, path: str, *replies: Reply) -> str:
        self.scripts[path] = list(replies)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def next_reply(self, path: str) -> Reply:
        with self.lock:
            script = self.scripts.get(path)
            if not script:
                return Reply(status=404, body=b"not found", content_type="text/plain")
            return script.pop(0) if len(script) > 1 else script[0]

    def requests_for(self, path: str) -> list[Served]:
        return [entry for entry in self.served if entry.path == path]


def make_handler(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = TIMEOUT

        def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
            pass

        def do_GET(self):  # noqa: N802 - http.server's naming
            parts = urllib.parse.urlsplit(self.path)
            with server.lock:
                server.served.append(Served(parts.path, dict(urllib.parse.parse_qsl(parts.query)),
                                            self.headers.get("Range")))
                too_many = len(server.served) > MAX_REQUESTS
                server.active += 1
                server.max_active = max(server.max_active, server.active)
            try:
                reply = Reply(status=503, body=b"too many requests") if too_many else server.next_reply(parts.path)
                self.answer(reply)
            finally:
                with server.lock:
                    server.active -= 1

        def answer(self, reply: Reply) -> None:
            time.sleep(reply.delay)
            body, start, status = reply.body, 0, reply.status
            requested = self.headers.get("Range", "")
            if reply.honour_range and requested.startswith("bytes=") and status == 200:
                start, status = int(requested[len("bytes="):].split("-")[0]), 206
            self.send_response(status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(body) - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            if status == 200 and reply.content_type == "application/fits":
                self.send_header("Content-Disposition", "attachment; filename=spec-test.fits")
            self.end_headers()
            payload = body[start:]
            if reply.cut_after is not None:
                payload = payload[: max(reply.cut_after - start, 0)]
            self.wfile.write(payload)
            self.wfile.flush()
            if reply.reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if reply.cut_after is not None:
                self.close_connection = True

    return Handler


@pytest.fixture
def server():
    """A loopback HTTP server on a free port, stopped after the test."""
    state = LoopbackServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert len(state.served) <= MAX_REQUESTS, "the client sent more requests than any test needs"


@pytest.fixture
def closed_port_url():
    """A loopback URL on which nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/spectrum/fits"


# --------------------------------------------------------------------------------------
# Synthetic LAMOST files (not real spectra)
# --------------------------------------------------------------------------------------
def spectrum_bytes(obsid: int, tmp_path: Path, *, compress: bool = False, n_pix: int = 400,
                   header_obsid: int | None = None) -> bytes:
    """A synthetic LAMOST DR5-layout file for ``obsid`` (gzipped if asked), as bytes."""
    rng = np.random.default_rng(obsid)
    wave = 10.0 ** (3.5682 + 1e-4 * np.arange(n_pix))
    meta = {"obsid": header_obsid or obsid, "ra": 10.0, "dec": 20.0, "z": 1e-4, "snrg": 50.0}
    spectrum = Spectrum(wave, rng.normal(100.0, 5.0, n_pix), np.full(n_pix, 0.04), np.zeros(n_pix), meta)
    path = write_lamost(spectrum, tmp_path / f"source-{obsid}-{compress}.fits", layout="dr5", overwrite=True)
    data = path.read_bytes()
    return gzip.compress(data) if compress else data


def cache_files(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []


# --------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------
def test_default_url_is_the_documented_dr5_pattern(monkeypatch):
    assert lamost_spectrum_url(123456789) == "http://dr5.lamost.org/v3/spectrum/fits/123456789"
    assert lamost_spectrum_url(np.int64(42)) == "http://dr5.lamost.org/v3/spectrum/fits/42"
    monkeypatch.setenv("LAMOST_TOKEN", "envtoken")
    assert lamost_spectrum_url(42) == "http://dr5.lamost.org/v3/spectrum/fits/42?token=envtoken"
    assert lamost_spectrum_url(42, token="argtoken").endswith("/42?token=argtoken")


def test_url_templates_and_prefixes():
    template = "https://www.lamost.org/openapi/dr10/v2.0/lrs/spectrum/fits?obsid={obsid}"
    assert lamost_spectrum_url(7, base_url=template, token="t") == (
        "https://www.lamost.org/openapi/dr10/v2.0/lrs/spectrum/fits?obsid=7&token=t"
    )
    assert lamost_spectrum_url("7", base_url="http://mirror.example/fits/") == "http://mirror.example/fits/7"


@pytest.mark.parametrize("bad", [0, -3, 1.5, "abc", None, True])
def test_invalid_obsids_are_rejected(bad):
    with pytest.raises(ValueError, match="positive integer"):
        lamost_spectrum_url(bad)


def test_redact_url_hides_tokens():
    assert redact_url("http://h/p?obsid=5&token=secret") == "http://h/p?obsid=5&token=***"
    assert redact_url("http://h/p/5") == "http://h/p/5"


# --------------------------------------------------------------------------------------
# Spectra
# --------------------------------------------------------------------------------------
def test_download_plain_and_gzipped_spectra(server, tmp_path):
    plain, packed = spectrum_bytes(101, tmp_path), spectrum_bytes(102, tmp_path, compress=True)
    server.route("/fits/101", Reply(body=plain))
    server.route("/fits/102", Reply(body=packed, content_type="application/gzip"))
    cache = tmp_path / "cache"
    paths = download_spectra([101, 102, 101], cache, server.url("/fits"), 2, timeout=TIMEOUT, progress=False)
    assert [p.name for p in paths] == ["101.fits", "102.fits.gz", "101.fits"]
    assert cache_files(cache) == ["101.fits", "102.fits.gz"]
    assert paths[0].read_bytes() == plain and paths[1].read_bytes() == packed
    assert read_lamost(paths[1]).meta["obsid"] == 102
    assert len(server.served) == 2  # the repeated obsid is fetched once


def test_cached_spectra_are_not_downloaded_again(server, tmp_path):
    server.route("/fits/101", Reply(body=spectrum_bytes(101, tmp_path)))
    cache = tmp_path / "cache"
    first = download_spectra([101], cache, server.url("/fits"), timeout=TIMEOUT, progress=False)
    second = download_spectra([101], cache, server.url("/fits"), timeout=TIMEOUT, progress=False)
    assert first == second and len(server.served) == 1


@pytest.mark.parametrize("content, verify_cached", [(b"<html>oops</html>", False), (b"SIMPLE  = garbage", True)])
def test_unreadable_cached_file_is_downloaded_again(server, tmp_path, content, verify_cached):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "101.fits").write_bytes(content)
    body = spectrum_bytes(101, tmp_path)
    server.route("/fits/101", Reply(body=body))
    (path,) = download_spectra([101], cache, server.url("/fits"), verify_cached=verify_cached, timeout=TIMEOUT,
                               progress=False)
    assert path.read_bytes() == body and len(server.served) == 1


def test_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    body = spectrum_bytes(101, tmp_path)
    half = len(body) // 2
    server.route("/fits/101", Reply(body=body, honour_range=True, cut_after=half), Reply(body=body, honour_range=True))
    (path,) = download_spectra([101], tmp_path / "cache", server.url("/fits"), retries=2, backoff=0.01,
                               timeout=TIMEOUT, progress=False)
    assert path.read_bytes() == body
    assert [entry.range for entry in server.served] == [None, f"bytes={half}-"]
    assert cache_files(tmp_path / "cache") == ["101.fits"]


def test_dropped_connection_without_range_support_starts_again(server, tmp_path):
    body = spectrum_bytes(101, tmp_path, compress=True)
    server.route("/fits/101", Reply(body=body, cut_after=len(body) // 3), Reply(body=body))
    (path,) = download_spectra([101], tmp_path / "cache", server.url("/fits"), retries=1, backoff=0.01,
                               timeout=TIMEOUT, progress=False)
    assert path.read_bytes() == body and len(server.served) == 2
    assert server.served[1].range is not None  # asked to resume, got the whole file, wrote it afresh


def test_reset_connection_is_retried(server, tmp_path):
    body = spectrum_bytes(101, tmp_path)
    server.route("/fits/101", Reply(body=body, cut_after=len(body) // 2, reset=True, honour_range=True),
                 Reply(body=body, honour_range=True))
    (path,) = download_spectra([101], tmp_path / "cache", server.url("/fits"), retries=2, backoff=0.01,
                               timeout=TIMEOUT, progress=False)
    assert path.read_bytes() == body and len(server.served) == 2


def test_html_error_page_with_status_200_is_an_error(server, tmp_path):
    page = b"<!DOCTYPE html><html><body>Invalid token</body></html>"
    server.route("/fits/101", Reply(body=page, content_type="text/html"))
    cache = tmp_path / "cache"
    with pytest.raises(InvalidPayloadError, match=r"error page \(HTML\).*Invalid token") as caught:
        download_spectra([101], cache, server.url("/fits"), retries=3, backoff=0.01, timeout=TIMEOUT,
                         progress=False)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, ConnectionError)
    assert server.url("/fits/101") in str(caught.value) and 'data_source="mock"' in str(caught.value)
    assert len(server.served) == 1  # an error page is not retried
    assert cache_files(cache) == []


def test_json_error_body_without_content_type_is_an_error(server, tmp_path):
    server.route("/fits/101", Reply(body=b'{"status": "error", "message": "obsid not found"}'))
    with pytest.raises(InvalidPayloadError, match=r"error page \(JSON\)"):
        download_spectra([101], tmp_path / "cache", server.url("/fits"), timeout=TIMEOUT, progress=False)
    assert cache_files(tmp_path / "cache") == []


def test_server_error_then_success_is_retried(server, tmp_path):
    body = spectrum_bytes(101, tmp_path)
    server.route("/fits/101", Reply(status=500, body=b"oops", content_type="text/plain"), Reply(body=body))
    (path,) = download_spectra([101], tmp_path / "cache", server.url("/fits"), retries=2, backoff=0.01,
                               timeout=TIMEOUT, progress=False)
    assert path.read_bytes() == body and len(server.served) == 2


def test_persistent_server_error_gives_up_after_bounded_retries(server, tmp_path):
    server.route("/fits/101", Reply(status=503, body=b"busy", content_type="text/plain"))
    cache = tmp_path / "cache"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"after 3 attempt\(s\): HTTP 503") as caught:
        download_spectra([101], cache, server.url("/fits"), retries=2, backoff=0.01, timeout=TIMEOUT,
                         progress=False)
    assert not isinstance(caught.value, ValueError)
    assert len(server.served) == 3 and time.monotonic() - start < 3
    assert cache_files(cache) == []


def test_missing_spectrum_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_spectra([999], tmp_path / "cache", server.url("/fits"), retries=3, backoff=0.01,
                         timeout=TIMEOUT, progress=False)
    assert len(server.served) == 1


def test_corrupt_fits_body_is_never_cached(server, tmp_path):
    body = spectrum_bytes(101, tmp_path)
    corrupt = body[:2880] + b"\x00" * 100  # a FITS header, then a truncated data unit
    server.route("/fits/101", Reply(body=corrupt))
    cache = tmp_path / "cache"
    with pytest.raises(InvalidPayloadError, match="not the expected file"):
        download_spectra([101], cache, server.url("/fits"), retries=1, backoff=0.01, timeout=TIMEOUT,
                         progress=False)
    assert len(server.served) == 2 and cache_files(cache) == []


def test_file_of_another_obsid_is_rejected(server, tmp_path):
    server.route("/fits/101", Reply(body=spectrum_bytes(101, tmp_path, header_obsid=555)))
    with pytest.raises(InvalidPayloadError, match="holds obsid 555"):
        download_spectra([101], tmp_path / "cache", server.url("/fits"), retries=0, timeout=TIMEOUT,
                         progress=False)


def test_no_network_names_the_url_and_suggests_mock(closed_port_url, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(ConnectionError) as caught:
        download_spectra([101], cache, closed_port_url, retries=1, backoff=0.01, timeout=TIMEOUT, progress=False)
    message = str(caught.value)
    assert isinstance(caught.value, DownloadError)
    assert f"{closed_port_url}/101" in message and 'data_source="mock"' in message
    assert cache_files(cache) == []


def test_parallel_downloads_are_bounded(server, tmp_path):
    obsids = list(range(201, 209))
    for obsid in obsids:
        server.route(f"/fits/{obsid}", Reply(body=spectrum_bytes(obsid, tmp_path), delay=0.15))
    paths = download_spectra(obsids, tmp_path / "cache", server.url("/fits"), n_workers=3, timeout=TIMEOUT,
                             progress=True)
    assert [p.name for p in paths] == [f"{o}.fits" for o in obsids]
    assert 1 < server.max_active <= 3


def test_first_failure_cancels_downloads_not_started(server, tmp_path):
    obsids = list(range(301, 306))  # none is served: every request is a 404
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_spectra(obsids, tmp_path / "cache", server.url("/fits"), n_workers=1, timeout=TIMEOUT,
                         progress=False)
    assert len(server.served) <= 2


def test_skip_mode_returns_none_for_failures(server, tmp_path, caplog):
    server.route("/fits/101", Reply(body=spectrum_bytes(101, tmp_path)))
    with caplog.at_level(logging.WARNING, logger="slamlib.data"):
        paths = download_spectra([101, 404], tmp_path / "cache", server.url("/fits"), on_error="skip",
                                 timeout=TIMEOUT, progress=False)
    assert paths[0].name == "101.fits" and paths[1] is None
    assert "404" in caplog.text


def test_token_echoed_by_an_error_page_is_hidden(server, tmp_path):
    page = b"<html><body>token s3cret-token expired</body></html>"
    server.route("/fits/101", Reply(body=page, content_type="text/html"))
    with pytest.raises(InvalidPayloadError) as caught:
        download_spectra([101], tmp_path / "cache", server.url("/fits"), token="s3cret-token", timeout=TIMEOUT,
                         progress=False)
    assert "s3cret" not in str(caught.value) and "token *** expired" in str(caught.value)


def test_token_is_sent_but_never_logged_or_shown(server, tmp_path, caplog):
    server.route("/fits/101", Reply(status=403, body=b"forbidden", content_type="text/plain"))
    with caplog.at_level(logging.DEBUG, logger="slamlib.data"), pytest.raises(DownloadError) as caught:
        download_spectra([101], tmp_path / "cache", server.url("/fits"), token="s3cret-token", timeout=TIMEOUT,
                         progress=False)
    assert server.served[0].query == {"token": "s3cret-token"}
    assert "s3cret" not in str(caught.value) and "s3cret" not in caught.value.url
    assert "s3cret" not in caplog.text and "token=***" in caplog.text
    assert "LAMOST_TOKEN" in str(caught.value)


def test_kept_partial_file_is_resumed_by_the_next_call(server, tmp_path):
    body = spectrum_bytes(101, tmp_path)
    url = server.route("/fits/101", Reply(body=body, honour_range=True, cut_after=1000),
                       Reply(status=503, body=b"busy", content_type="text/plain"), Reply(body=body, honour_range=True))
    destination = tmp_path / "cache" / "101.fits"
    with pytest.raises(DownloadError, match="503"):
        fetch_file(url, destination, retries=1, backoff=0.01, timeout=TIMEOUT, keep_partial=True)
    assert (tmp_path / "cache" / "101.fits.partial").stat().st_size == 1000 and not destination.exists()
    assert fetch_file(url, destination, timeout=TIMEOUT).read_bytes() == body
    assert [entry.range for entry in server.served] == [None, "bytes=1000-", "bytes=1000-"]
    assert cache_files(tmp_path / "cache") == ["101.fits"]


def test_refused_range_starts_again(server, tmp_path):
    body = spectrum_bytes(101, tmp_path)
    url = server.route("/fits/101", Reply(status=416, body=b"", content_type="text/plain"), Reply(body=body))
    destination = tmp_path / "101.fits"
    destination.with_name("101.fits.partial").write_bytes(b"stale bytes of another file")
    assert fetch_file(url, destination, retries=1, backoff=0.01, timeout=TIMEOUT).read_bytes() == body
    assert [entry.range for entry in server.served] == ["bytes=27-", None]


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SLAMLIB_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine" / "downloads"


def test_invalid_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="n_workers"):
        download_spectra([1], tmp_path, n_workers=0)
    with pytest.raises(ValueError, match="on_error"):
        download_spectra([1], tmp_path, on_error="ignore")
    with pytest.raises(ValueError, match="http"):
        fetch_file("ftp://127.0.0.1/file", tmp_path / "x")


# --------------------------------------------------------------------------------------
# Catalogue files through the same cache
# --------------------------------------------------------------------------------------
def test_slam_catalog_download_is_verified_and_cached(server, tmp_path):
    source = tmp_path / "catalog_slam_stub.fits"
    Table({"OBSID": [1, 2], "TEFF": [4500.0, 4700.0]}).write(source)
    url = server.route("/slam/catalog_slam_v10_short.fits", Reply(body=source.read_bytes()))
    cache = tmp_path / "slam"
    table = slam_catalog(cache_dir=cache, url=url, timeout=TIMEOUT)
    assert table.colnames == ["obsid", "teff"] and list(table["obsid"]) == [1, 2]
    slam_catalog(cache_dir=cache, url=url, timeout=TIMEOUT)
    assert len(server.served) == 1 and cache_files(cache) == ["catalog_slam_v10_short.fits"]


def test_slam_catalog_rejects_a_non_fits_answer(server, tmp_path):
    url = server.route("/slam/catalog_slam_v10_short.fits", Reply(body=b"Moved to NADC", content_type="text/plain"))
    with pytest.raises(InvalidPayloadError, match="not a FITS header"):
        slam_catalog(cache_dir=tmp_path / "slam", url=url, retries=0, timeout=TIMEOUT)
    assert cache_files(tmp_path / "slam") == []


def test_apogee_download_checks_the_sha1(server, tmp_path):
    source = write_allstar_stub(tmp_path / "allStar-stub.fits")
    body = source.read_bytes()
    url = server.route("/sas/allStar-stub.fits", Reply(body=body))
    with pytest.raises(InvalidPayloadError, match="SHA-1"):
        apogee_catalog(url=url, sha1="0" * 40, cache_dir=tmp_path / "bad", retries=0, timeout=TIMEOUT)
    assert cache_files(tmp_path / "bad") == []
    table = apogee_catalog(url=url, sha1=hashlib.sha1(body).hexdigest(), cache_dir=tmp_path / "good",
                           timeout=TIMEOUT)
    assert len(table) == 4 and cache_files(tmp_path / "good") == ["allStar-stub.fits"]
