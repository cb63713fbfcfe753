"""The built book as a reader sees it: every page rendered by a real headless Chromium.

The smoke book (built once per session, ``conftest.py``) is served on localhost and each page of
``_toc.yml`` (and ``index.html``) is loaded in headless Chromium with every other host unresolvable,
as on a machine without internet. The DOM after the page's scripts ran must show the page's title,
images that are files of the built site, math typeset by the local MathJax, and no raw LaTeX or
astropy "Table length=" text.

Chromium comes from Debian's ``chromium`` package: the session fixture installs it with apt-get
when it is missing (as root, or with password-less sudo) and skips with the reason when it cannot.
``SLAMLIB_CHROMIUM`` names another Chromium/Chrome binary; ``SLAMLIB_BOOK_HTML`` names an already
built ``_build/html`` to check instead of building the smoke book.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
import yaml
from bs4 import BeautifulSoup  # a dependency of the book theme (pydata-sphinx-theme)

pytestmark = [pytest.mark.slow, pytest.mark.book]

ROOT = Path(__file__).resolve().parents[2]
BOOK_TITLE = yaml.safe_load((ROOT / "_config.yml").read_text())["title"]
#: The MathJax entry point, relative to the built site (``mathjax_path`` in ``_config.yml``).
MATHJAX_ENTRY = "_static/" + yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]["mathjax_path"]

CHROMIUM_NAMES = ("chromium", "chromium-browser")
BROWSER_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # offline like CI: no proxy, and every host but the local server is unresolvable, so a page
    # that still needs a CDN shows it here
    "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    # run the page's timers and scripts (MathJax typesets asynchronously) before the DOM is dumped
    "--virtual-time-budget=20000",
]
BROWSER_TIMEOUT = 180
APT_TIMEOUT = 1200

#: Visible text that is LaTeX nobody typeset: a backslash command, a TeX sub- or superscript
#: group (``^{...}``, ``_{...}``), or $...$ holding TeX syntax.
RAW_LATEX = re.compile(r"\\[A-Za-z]+|[\^_]\{|\$[^$\n]*[\\^_{}][^$\n]*\$")
TABLE_LENGTH = re.compile(r"\bTable length\s*=")


def _toc_pages() -> list[str]:
    """The book's pages, relative to the built site: every file of ``_toc.yml``, then ``index.html``."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or ():
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", ()):
        walk(part.get("chapters"))
    return [f"{name}.html" for name in files] + ["index.html"]


PAGES = _toc_pages()
EXPECTED = yaml.safe_load((ROOT / "book" / "profiles.yml").read_text())["expected_outputs"]


# --- Chromium -------------------------------------------------------------------------------------

def _find_chromium() -> str | None:
    override = os.environ.get("SLAMLIB_CHROMIUM")
    if override:
        return shutil.which(override)
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def _install_chromium() -> str:
    """Try ``apt-get install chromium``; returns why it did not work (empty when it did)."""
    if shutil.which("apt-get") is None:
        return "there is no apt-get (not a Debian-like system)"
    if os.geteuid() == 0:
        prefix = []
    elif shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        prefix = ["sudo", "-n"]
    else:
        return "not root and no password-less sudo, so apt-get cannot install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "chromium"]
    reason = ""
    for command in (install, [*prefix, "apt-get", "update"], install):
        try:
            completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT)
        except subprocess.TimeoutExpired:
            return f"{' '.join(command)} took more than {APT_TIMEOUT} s"
        if completed.returncode != 0:
            reason = f"{' '.join(command)} exited with {completed.returncode}: {completed.stderr.strip()[-500:]}"
        elif command is install and _find_chromium():
            return ""
    return reason or "apt-get installed chromium but no chromium executable is on PATH"


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless browser's executable, installed from Debian's packages if it is missing."""
    path = _find_chromium()
    if path is None and not os.environ.get("SLAMLIB_CHROMIUM"):
        reason = _install_chromium()
        path = _find_chromium()
        if path is None:
            pytest.skip(f"headless Chromium is needed to render the book and could not be installed: {reason}")
    if path is None:
        pytest.skip(f"SLAMLIB_CHROMIUM={os.environ['SLAMLIB_CHROMIUM']!r} is not an executable")
    return path


# --- The built site, served on localhost ----------------------------------------------------------

@pytest.fixture(scope="session")
def site(request: pytest.FixtureRequest) -> Path:
    """The built HTML book (``SLAMLIB_BOOK_HTML``, or the session's smoke build)."""
    if os.environ.get("SLAMLIB_BOOK_HTML"):
        html = Path(os.environ["SLAMLIB_BOOK_HTML"]).resolve()
    else:
        build_directory, _ = request.getfixturevalue("smoke_book")
        html = build_directory / "html"
    assert (html / "index.html").is_file(), f"no built book in {html}"
    return html


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="session")
def server(site: Path):
    """Base URL of a local HTTP server of the built site (as a reader's web server would serve it)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _browse(chromium: str, url: str, *action: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [chromium, *BROWSER_FLAGS, f"--user-data-dir={profile}", *action, url]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"Chromium did not finish loading {url} within {BROWSER_TIMEOUT} s")
    assert completed.returncode == 0, f"Chromium failed on {url} ({completed.returncode}): {completed.stderr[-2000:]}"
    return completed


@pytest.fixture(scope="session")
def rendered(chromium: str, server: str, site: Path):
    """``rendered(page)``: (DOM after load as parsed HTML, the page as built, its URL); each page loaded once."""

    @functools.cache
    def render(page: str) -> tuple[BeautifulSoup, BeautifulSoup, str]:
        url = urljoin(server, page)
        dom = _browse(chromium, url, "--dump-dom").stdout
        assert dom.strip(), f"{page}: Chromium returned an empty DOM"
        built = BeautifulSoup((site / page).read_text(encoding="utf-8"), "html.parser")
        return BeautifulSoup(dom, "html.parser"), built, url

    return render


def _article(soup: BeautifulSoup):
    return soup.select_one("article") or soup.select_one("main") or soup.body


def _visible_text(soup: BeautifulSoup) -> str:
    """The body's text as a reader sees it: without scripts, typeset math and the folded code cells."""
    soup = BeautifulSoup(str(soup.body), "html.parser")
    for element in soup.select("script, style, noscript, template, mjx-container, .cell_input"):
        element.decompose()
    return soup.get_text(" ")


def _snippets(pattern: re.Pattern, text: str, limit: int = 15) -> list[str]:
    found = [" ".join(text[max(0, m.start() - 40):m.end() + 40].split()) for m in pattern.finditer(text)]
    return found[:limit] + ([f"... and {len(found) - limit} more"] if len(found) > limit else [])


# --- The checks -----------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES)
def test_page_loads_with_its_title(rendered, page):
    dom, built, url = rendered(page)
    title = dom.title.get_text(" ", strip=True) if dom.title else ""
    assert BOOK_TITLE in title, f"{page}: the loaded page's title is {title!r} (Chromium's error page for {url}?)"
    heading = _article(dom).find("h1")
    assert heading is not None and heading.get_text(strip=True), f"{page}: the loaded page has no heading"
    assert len(_article(dom).get_text(strip=True)) > 100, f"{page}: the loaded page is nearly empty"
    if page == "index.html":
        return  # a redirect to the root page: its title is the root page's
    heading_text = " ".join(heading.get_text(" ").replace("#", "").split())
    assert " ".join(title.split()).startswith(heading_text.split("\\(")[0].strip()), (
        f"{page}: title {title!r} does not name the page's heading {heading_text!r}")


@pytest.mark.parametrize("page", PAGES)
def test_every_image_is_a_file_of_the_built_site(rendered, site, server, page):
    dom, _, url = rendered(page)
    problems = []
    images = dom.find_all("img")
    for image in images:
        source = image.get("src", "")
        if source.startswith("data:"):
            if len(source) < 32:
                problems.append(f"empty inline image {source!r}")
            continue
        target = urljoin(url, source)
        if not source or not target.startswith(server):
            problems.append(f"{source!r} is not in the built site")
            continue
        path = site / unquote(urlsplit(target).path).lstrip("/")
        if not path.is_file() or path.stat().st_size == 0:
            problems.append(f"{source!r} -> {path} does not exist or is empty")
        elif path.suffix == ".png" and not path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"):
            problems.append(f"{source!r} -> {path} is not a PNG")
    assert not problems, f"{page}: {len(problems)} of {len(images)} images do not resolve:\n  " + "\n  ".join(problems)
    name = Path(page).stem
    if EXPECTED.get(name, {}).get("figures"):
        assert _article(dom).find("img"), f"{page}: the chapter records figures but shows no image"


@pytest.mark.parametrize("page", PAGES)
def test_no_raw_latex_or_table_length_text_is_visible(rendered, page):
    dom, _, _ = rendered(page)
    text = _visible_text(dom)
    problems = [f"raw LaTeX: ...{s}..." for s in _snippets(RAW_LATEX, text)]
    problems += [f"'Table length=' text: ...{s}..." for s in _snippets(TABLE_LENGTH, text)]
    assert not problems, f"{page} shows {len(problems)} problem(s) to readers:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("page", PAGES)
def test_math_is_typeset_by_the_local_mathjax(rendered, site, server, page):
    dom, built, url = rendered(page)
    for script in built.select('script[src*="mathjax" i]'):
        assert urljoin(url, script["src"]).startswith(server + "_static/"), (
            f"{page} loads MathJax from {script['src']!r}, outside the built site (mathjax_path in _config.yml)")
    sources = [" ".join(element.get_text(" ").split()) for element in built.select(".math")]
    if not sources:
        return  # no math on this page
    assert built.select('script[src*="mathjax" i]'), f"{page} has {len(sources)} math elements but loads no MathJax"
    assert (site / MATHJAX_ENTRY).is_file(), (
        f"{page} has {len(sources)} math elements but the book has no local MathJax ({site / MATHJAX_ENTRY} is "
        f"missing): 'npm install mathjax@3' failed while building the book (see its log), so its math is raw LaTeX")
    problems = []
    for source, element in zip(sources, dom.select(".math"), strict=False):
        container = element.find("mjx-container")
        if container is None:
            problems.append(f"not typeset: {source[:120]}")
        elif container.find("mjx-merror") or container.select('mjx-mtext[style*="color: red"]'):
            problems.append(f"TeX error or undefined macro (shown red): {source[:120]}")
    if len(dom.select(".math")) < len(sources):
        problems.append(f"{len(sources)} math elements were built, the loaded page has {len(dom.select('.math'))}")
    assert not problems, f"{page}: {len(problems)} of {len(sources)} math elements are wrong:\n  " + "\n  ".join(problems)
