"""Build the book: execute every notebook with papermill for a run profile, then render with jupyter-book.

Jupyter Book 1.x cannot pass parameters to notebooks, so the build runs in two steps:

1. papermill executes each chapter notebook of ``_toc.yml`` with the parameters of the chosen
   profile (``book/profiles.yml``) into a staging copy of the book, ``_build/site``;
2. ``jupyter-book build`` renders that staging copy (``execute_notebooks: off``) into
   ``_build/html``.

Math is rendered offline: MathJax 3 is installed from the npm registry into ``_build/npm``
(once; never committed) and staged as ``_build/site/_mathjax/mathjax``, which ``_config.yml``
makes Sphinx copy to ``_build/html/_static/mathjax`` and load instead of the CDN copy. When npm
cannot install it the book still builds, but its math stays raw LaTeX (the build says so, and
``tests/paper/test_rendered_book.py`` fails naming the missing MathJax).

Usage: ``python -m slampaper.bookbuild --profile smoke|quick|paper [--only NAME ...] [--no-html]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from slamlib.files import write_json_atomically
from slampaper.paths import build_dir, project_root, results_dir

__all__ = ["load_profiles", "run_declared_sweeps", "profile_names", "chapter_notebooks", "notebook_parameters",
           "execute_notebook", "stage_mathjax", "build_book", "main"]

#: The npm package that renders the book's math (``mathjax_path`` in ``_config.yml`` names its entry point).
MATHJAX_PACKAGE = "mathjax@3"
#: What the book needs of the package's ``es5`` folder: the combined TeX/MathML-to-CommonHTML component
#: and the folders it loads from at run time (TeX extensions, fonts, menu, accessibility).
MATHJAX_FILES = ("tex-mml-chtml.js", "input", "output", "ui", "a11y", "sre", "adaptors")
#: Seconds ``npm install`` may take before the build goes on without MathJax.
NPM_TIMEOUT = 300


def load_profiles(path: str | Path | None = None) -> dict[str, Any]:
    """The run-profile file ``book/profiles.yml`` as a dict."""
    path = project_root() / "book" / "profiles.yml" if path is None else Path(path)
    return yaml.safe_load(Path(path).read_text())


def chapter_notebooks() -> list[str]:
    """Notebook names (``book/<name>.ipynb``) in the order of ``_toc.yml``."""
    toc = yaml.safe_load((project_root() / "_toc.yml").read_text())
    entries = [toc["root"]] + [chapter["file"] for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}])
                               for chapter in part["chapters"]]
    return [Path(entry).name for entry in entries if (project_root() / f"{entry}.ipynb").exists()]


def profile_names(profiles: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The run profiles, in the order ``book/profiles.yml`` defines them (the only place they are defined)."""
    profiles = load_profiles() if profiles is None else profiles
    return tuple(profiles["profiles"])


def notebook_parameters(name: str, profile: str, profiles: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameters papermill injects into notebook ``name`` for ``profile``."""
    profiles = load_profiles() if profiles is None else profiles
    if profile not in profiles["profiles"]:
        raise ValueError(f"profile must be one of {profile_names(profiles)} (book/profiles.yml), got {profile!r}.")
    parameters = dict(profiles["profiles"][profile].get(name) or {})
    parameters["profile"] = profile
    return parameters


def execute_notebook(name: str, parameters: dict[str, Any], site_dir: Path, output_dir: Path) -> Path:
    """Execute ``book/<name>.ipynb`` with papermill into ``site_dir/book``; returns the executed copy."""
    import papermill

    source = project_root() / "book" / f"{name}.ipynb"
    target = site_dir / "book" / f"{name}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(source), str(target), parameters={**parameters, "output_dir": str(output_dir)},
        kernel_name="python3", cwd=str(project_root()), progress_bar={"desc": f"[book] {name}", "unit": "cell"},
    )
    _show_parameters_once(target, parameters.get("profile", ""))
    return target


def _show_parameters_once(path: Path, profile: str) -> None:
    """Leave one parameters cell on the rendered page: the values this build ran with.

    papermill keeps the notebook's own defaults cell and adds the injected values after it; the
    defaults cell is removed from the page (tag ``remove-cell``) and the injected one is labelled
    and folded like the other code cells.
    """
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        if "injected-parameters" in tags:
            label = f"# Parameters of this build (profile {profile}), injected by papermill"
            if not cell.source.startswith(label):
                cell.source = f"{label}\n{cell.source}"
            if "hide-input" not in tags:
                tags.append("hide-input")
    nbformat.write(notebook, path)


def _stage_sources(site_dir: Path) -> None:
    root = project_root()
    site_dir.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, site_dir / name)
    (site_dir / "book").mkdir(exist_ok=True)
    for path in (root / "book").iterdir():
        if path.suffix in {".md", ".bib", ".png", ".svg"}:
            shutil.copy2(path, site_dir / "book" / path.name)


def run_declared_sweeps(profile: str, sweeps_dir: Path, *, workers: int = 2) -> float:
    """Run every sweep of ``sweeps.yml`` at ``profile``'s size, so the Sweeps chapter has something
    to show; returns the seconds it took. Stored points are not run again, and a point that several
    sweeps have in common runs once (the sweeps share ``sweeps_dir/_points``). A failing point is
    reported and the build goes on."""
    from slampaper import sweeps

    start = time.perf_counter()
    n_points = n_executed = 0
    for name in sweeps.load_sweeps():
        print(f"[book] running sweep {name} (profile {profile})", flush=True)
        report = sweeps.run_sweep(name, profile, workers=workers, sweeps_dir=sweeps_dir, progress=True)
        print(f"[book] {report.summary()}", flush=True)
        n_points, n_executed = n_points + len(report.results), n_executed + len(report.executed)
    seconds = time.perf_counter() - start
    print(f"[book] sweeps: {n_points} points, {n_executed} executed, {n_points - n_executed} cached, {seconds:.0f} s",
          flush=True)
    return seconds


def stage_mathjax(build_directory: Path, site_dir: Path) -> bool:
    """Install MathJax 3 with npm into ``build_directory/npm`` (reused when present) and stage it in the site.

    The staged copy is ``site_dir/_mathjax/mathjax`` (``html_static_path`` and ``mathjax_path`` in
    ``_config.yml``). The folder ``site_dir/_mathjax`` is always created, so Sphinx (run with ``-W``)
    never warns about a missing static path. Returns False, after saying why, when MathJax could not
    be installed: the book then builds with its math as raw LaTeX.
    """
    npm_dir = build_directory / "npm"
    es5 = npm_dir / "node_modules" / "mathjax" / "es5"
    staged = site_dir / "_mathjax" / "mathjax"
    if staged.exists():
        shutil.rmtree(staged)
    staged.parent.mkdir(parents=True, exist_ok=True)
    if not (es5 / MATHJAX_FILES[0]).is_file():
        npm_dir.mkdir(parents=True, exist_ok=True)
        command = ["npm", "install", "--prefix", str(npm_dir), "--no-save", "--no-package-lock", "--no-audit",
                   "--no-fund", "--loglevel=error", MATHJAX_PACKAGE]
        print(f"[book] installing {MATHJAX_PACKAGE} for offline math: {' '.join(command)}", flush=True)
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=NPM_TIMEOUT)
            reason = f"npm exited with {completed.returncode}: {completed.stderr.strip()[:600]}"
        except FileNotFoundError:
            reason = "npm is not installed"
        except subprocess.TimeoutExpired:
            reason = f"npm install took more than {NPM_TIMEOUT} s"
        if not (es5 / MATHJAX_FILES[0]).is_file():
            print(f"[book] WARNING: {MATHJAX_PACKAGE} could not be installed ({reason}); the book builds, "
                  f"but its math stays raw LaTeX.", file=sys.stderr, flush=True)
            return False
    staged.mkdir()
    for name in MATHJAX_FILES:
        source = es5 / name
        if source.is_dir():
            shutil.copytree(source, staged / name)
        elif source.is_file():
            shutil.copy2(source, staged / name)
    return True


def build_book(
    profile: str = "quick", *, only: list[str] | None = None, html: bool = True, build_directory: Path | None = None
) -> dict[str, float]:
    """Execute the chapters for ``profile`` and build the HTML book.

    Parameters
    ----------
    profile : {"smoke", "quick", "paper"}
    only : list of str, optional
        Execute only these notebooks (others keep their last executed copy, if any; an empty
        list executes none). Unknown names raise ValueError.
    html : bool
        Render the HTML book after executing.
    build_directory : Path, optional
        Where ``site/``, ``html/`` and ``results/`` go (default ``<root>/_build``); jupyter-book
        always names its output folder ``_build``, so this directory must be called that.

    Returns
    -------
    dict
        Seconds spent per notebook (and ``"html"``).
    """
    profiles = load_profiles()
    build_directory = build_dir() if build_directory is None else Path(build_directory)
    if build_directory.name != "_build":
        raise ValueError(f"build_directory must be a folder named _build (jupyter-book's rule), got {build_directory}.")
    site_dir = build_directory / "site"
    output_dir = results_dir(build_directory / "results")
    _stage_sources(site_dir)
    timings: dict[str, float] = {}
    unknown = sorted(set(only or ()) - set(chapter_notebooks()))
    if unknown:
        raise ValueError(f"unknown chapter(s) {', '.join(unknown)}; the chapters are {', '.join(chapter_notebooks())}.")
    for name in chapter_notebooks():
        if only is not None and name not in only:
            continue
        if name == "sweeps" and profile in profiles.get("sweeps_in_build", []):
            timings["sweeps (run)"] = run_declared_sweeps(profile, build_directory / "sweeps")
        start = time.perf_counter()
        print(f"[book] executing {name} (profile {profile})", flush=True)
        execute_notebook(name, notebook_parameters(name, profile, profiles), site_dir, output_dir)
        timings[name] = time.perf_counter() - start
        print(f"[book] {name}: {timings[name]:.1f} s", flush=True)
    if html:
        never_executed = [name for name in chapter_notebooks() if not (site_dir / "book" / f"{name}.ipynb").exists()]
        if never_executed:
            raise ValueError(f"cannot render the HTML book: chapters {', '.join(never_executed)} have never been "
                             f"executed in {site_dir}. Build once without --only, or pass --no-html.")
        start = time.perf_counter()
        stage_mathjax(build_directory, site_dir)
        command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(site_dir),
                   "--path-output", str(build_directory.parent), "-W", "-n", "--keep-going", "--all"]
        subprocess.run(command, check=True)
        timings["html"] = time.perf_counter() - start
        print(f"[book] HTML: {build_directory / 'html' / 'index.html'} ({timings['html']:.1f} s)", flush=True)
    return timings


#: What the last ``python -m slampaper.bookbuild`` spent per chapter (``_build/<file>``; read by
#: ``benchmarks/book_build.py``).
BUILD_TIMES_FILE = "build_times.json"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; writes the time per chapter to ``_build/build_times.json``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", choices=profile_names())
    parser.add_argument("--only", nargs="*", help="execute only these notebooks")
    parser.add_argument("--no-html", action="store_true", help="execute notebooks without rendering HTML")
    arguments = parser.parse_args(argv)
    timings = build_book(arguments.profile, only=arguments.only, html=not arguments.no_html)
    print("[book] done: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items()))
    write_json_atomically(build_dir() / BUILD_TIMES_FILE,
                          {"profile": arguments.profile, "only": arguments.only, "html": not arguments.no_html,
                           "seconds": timings, "total_seconds": sum(timings.values()),
                           "load_average": list(os.getloadavg())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
