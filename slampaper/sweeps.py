"""Parameter sweeps: execute a chapter notebook over a grid of parameters and collect its records.

Sweeps are declared in ``sweeps.yml`` at the repository root::

    sweeps:
      learning_curve:
        title: "Learning curve"
        notebook: lasp_test                  # book/<notebook>.ipynb
        grid:                                # axes; the points are their cartesian product
          n_train: [250, 500, 1000, 2000, 5000]
        fixed:                               # parameters per run profile, on top of book/profiles.yml
          quick: {n_test_per_bin: 50, n_jobs: 1}
        profile_grid:                        # optional: replaces axes of ``grid`` for a profile
          smoke: {n_train: [60, 100]}
        collect: [cv_scatter.*.high_snr, training_seconds]   # recorded keys (glob patterns allowed)

An axis is either a list of values of one notebook parameter, or a mapping ``label -> {parameter:
value, ...}`` that sets several parameters together (e.g. ``c_grid`` and ``gamma_grid``); its name
then only labels the axis. A ``collect`` entry is a record key (``fnmatch`` patterns allowed) or a
table column per row, ``{table: scatter_by_snr, columns: [teff_scatter], row: snr_center}``, which
gives one column ``teff_scatter@snr_center=<value>`` per row of the table the notebook saved.

Each point executes ``book/<notebook>.ipynb`` with papermill, with the parameters of the run profile
(``book/profiles.yml``), then the sweep's fixed parameters, then the point's. A point is identified
by the hash of (notebook, its code, profile, full parameters), the full parameters being the
notebook's literal defaults (its ``parameters`` cell) overridden by those; the sweep's name is not
part of it. Its outputs — the executed notebook, the notebook's results JSON (figures and tables
beside it) and ``point.json`` (parameters, status, error, wall time, the sweep that executed it and
the SHA-256 of every output file) — go to the store shared by all sweeps,
``_build/sweeps/_points/<hash>/``. A point is reused, by the sweep that executed it or by any other
sweep with the same point, only when its ``point.json`` says it succeeded and every output file
still has its recorded checksum; otherwise it is executed again. Points run in parallel in a
bounded pool of processes; a failing point is reported with its error while the others finish.
The collected records of a sweep become one table, ``_build/sweeps/<name>/<name>.csv`` and
``.fits`` (with each point's hash and whether this run executed it or reused it, and from which
sweep), a plot ``<name>.png`` (each collected quantity against the swept parameter) and a summary
``<name>.json``.

Usage::

    python -m slampaper.sweeps list
    python -m slampaper.sweeps run NAME [--profile quick] [--workers 2] [--force]
    python -m slampaper.sweeps collect NAME [--profile quick]     # table and plot from the cached points
    make sweep SWEEP=NAME [PROFILE=quick]

:func:`main` takes ``argv`` so that tests and other scripts can call it.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import fnmatch
import hashlib
import html
import itertools
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from slamlib.files import file_sha256, write_json_atomically
from slamlib.pipeline.cache import parameter_hash
from slampaper.bookbuild import notebook_parameters, profile_names
from slampaper.paths import build_dir, project_root

__all__ = [
    "SweepError", "SweepSpec", "SweepPoint", "PointResult", "SweepReport",
    "sweeps_file", "load_sweeps", "get_sweep", "notebook_parameter_names", "check_sweep", "sweep_points",
    "notebook_defaults", "point_hash", "points_dir", "default_sweeps_dir", "run_sweep", "collect_sweep", "sweep_status", "sweep_html",
    "show_sweep", "main",
]

#: Parameters the sweep machinery sets itself.
RESERVED = ("output_dir",)
POINT_FILE = "point.json"
#: Folder of the sweeps directory that holds every executed point, shared by all sweeps.
POINTS_DIR = "_points"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class SweepError(ValueError):
    """A sweep that cannot run as declared (unknown sweep, notebook or parameter, bad grid)."""


# ----------------------------------------------------------------------------------------- declaring


@dataclass(frozen=True)
class SweepSpec:
    """One sweep of ``sweeps.yml``.

    Attributes
    ----------
    name, notebook, title, description : str
    grid : dict
        Axis name -> list of values, or -> mapping label -> parameter dict.
    fixed : dict
        Profile -> parameters set at every point.
    profile_grid : dict
        Profile -> axes that replace those of ``grid`` for that profile.
    collect : list
        Record keys (glob patterns allowed) and table specs.
    log_x : bool
        Plot the swept axis on a log scale.
    timeout : float or None
        Seconds a cell may run (papermill's ``execution_timeout``).
    """

    name: str
    notebook: str
    grid: dict[str, Any]
    collect: list[Any]
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)
    profile_grid: dict[str, dict[str, Any]] = field(default_factory=dict)
    title: str = ""
    description: str = ""
    log_x: bool = False
    timeout: float | None = None

    def axes(self, profile: str) -> dict[str, Any]:
        """The grid axes of ``profile`` (``grid`` with the profile's replacements)."""
        return {**self.grid, **(self.profile_grid.get(profile) or {})}

    def command(self, profile: str = "quick") -> str:
        """The shell command that runs this sweep."""
        suffix = "" if profile == "quick" else f" PROFILE={profile}"
        return f"make sweep SWEEP={self.name}{suffix}"


def sweeps_file() -> Path:
    """``<root>/sweeps.yml``."""
    return project_root() / "sweeps.yml"


def _spec(name: str, entry: Any) -> SweepSpec:
    if not isinstance(entry, dict):
        raise SweepError(f"sweep {name!r}: expected a mapping, got {type(entry).__name__}.")
    unknown = set(entry) - {"notebook", "grid", "collect", "fixed", "profile_grid", "title", "description", "log_x", "timeout"}
    if unknown:
        raise SweepError(f"sweep {name!r}: unknown keys {sorted(unknown)}.")
    if name == POINTS_DIR:
        raise SweepError(f"a sweep cannot be named {POINTS_DIR!r}: that folder holds the executed points.")
    for key in ("notebook", "grid", "collect"):
        if key not in entry:
            raise SweepError(f"sweep {name!r}: missing {key!r}.")
    grid, collect = entry["grid"], entry["collect"]
    if not isinstance(grid, dict) or not grid:
        raise SweepError(f"sweep {name!r}: 'grid' must be a non-empty mapping of axes.")
    if not isinstance(collect, list) or not collect:
        raise SweepError(f"sweep {name!r}: 'collect' must be a non-empty list of record keys or table specs.")
    for item in collect:
        if not (isinstance(item, str) or isinstance(item, dict) and set(item) == {"table", "columns", "row"}
                and isinstance(item["columns"], list)):
            raise SweepError(f"sweep {name!r}: a 'collect' entry is a record key (glob patterns allowed) or "
                             f"{{table: NAME, columns: [COLUMN, ...], row: COLUMN}}; got {item!r}.")
    fixed = entry.get("fixed") or {}
    profile_grid = entry.get("profile_grid") or {}
    for what, mapping in (("fixed", fixed), ("profile_grid", profile_grid)):
        if not isinstance(mapping, dict) or set(mapping) - set(profile_names()):
            raise SweepError(f"sweep {name!r}: {what!r} must map profiles {profile_names()} to parameters.")
    return SweepSpec(name=name, notebook=str(entry["notebook"]), grid=dict(grid), collect=list(collect),
                     fixed={key: dict(value or {}) for key, value in fixed.items()},
                     profile_grid={key: dict(value or {}) for key, value in profile_grid.items()},
                     title=str(entry.get("title", name)), description=str(entry.get("description", "")),
                     log_x=bool(entry.get("log_x", False)), timeout=entry.get("timeout"))


def load_sweeps(path: str | Path | None = None) -> dict[str, SweepSpec]:
    """All sweeps declared in ``path`` (default ``sweeps.yml``), in file order."""
    path = sweeps_file() if path is None else Path(path)
    content = yaml.safe_load(Path(path).read_text()) or {}
    sweeps = content.get("sweeps") if isinstance(content, dict) else None
    if not isinstance(sweeps, dict):
        raise SweepError(f"{path}: expected a top-level mapping 'sweeps: {{name: ...}}'.")
    return {str(name): _spec(str(name), entry) for name, entry in sweeps.items()}


def get_sweep(name: str, path: str | Path | None = None) -> SweepSpec:
    """The sweep ``name``; :class:`SweepError` listing the declared ones if there is none."""
    sweeps = load_sweeps(path)
    if name not in sweeps:
        raise SweepError(f"no sweep named {name!r}; declared sweeps: {', '.join(sweeps) or 'none'}.")
    return sweeps[name]


def notebook_path(notebook: str) -> Path:
    """``<root>/book/<notebook>.ipynb``."""
    return project_root() / "book" / f"{notebook}.ipynb"


def _parameter_assignments(notebook: str) -> list[tuple[str, ast.expr | None]]:
    """(name, value expression) of each assignment in the cell tagged ``parameters``, in cell order."""
    path = notebook_path(notebook)
    if not path.is_file():
        raise SweepError(f"notebook {path} does not exist.")
    cells = [cell for cell in json.loads(path.read_text())["cells"]
             if "parameters" in cell.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SweepError(f"{path.name} must have exactly one cell tagged 'parameters', found {len(cells)}.")
    assignments = []
    for node in ast.parse("".join(cells[0]["source"])).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        assignments += [(target.id, node.value) for target in targets if isinstance(target, ast.Name)]
    return assignments


def notebook_parameter_names(notebook: str) -> list[str]:
    """Names assigned in the cell tagged ``parameters`` of ``book/<notebook>.ipynb``."""
    return [name for name, _ in _parameter_assignments(notebook)]


def notebook_defaults(notebook: str) -> dict[str, Any]:
    """The literal default values of the parameters of ``book/<notebook>.ipynb`` (not ``output_dir``).

    A default that is not a Python literal (computed in the cell) is left out; it is part of the
    notebook's code digest all the same.
    """
    defaults = {}
    for name, value in _parameter_assignments(notebook):
        if name in RESERVED or value is None:
            continue
        try:
            defaults[name] = ast.literal_eval(value)
        except ValueError:
            defaults.pop(name, None)  # a later computed assignment replaces an earlier literal one
    return defaults


def _axis_values(spec: SweepSpec, axis: str, values: Any) -> list[tuple[Any, dict[str, Any]]]:
    """(label, parameters) per value of one axis."""
    if isinstance(values, dict):
        if not values or not all(isinstance(item, dict) for item in values.values()):
            raise SweepError(f"sweep {spec.name!r}: axis {axis!r} maps labels to parameter mappings; got {values!r}.")
        return [(str(label), dict(parameters)) for label, parameters in values.items()]
    if not isinstance(values, list) or not values:
        raise SweepError(f"sweep {spec.name!r}: axis {axis!r} must be a non-empty list (or a mapping label -> parameters).")
    return [(value, {axis: value}) for value in values]


def check_sweep(spec: SweepSpec, profile: str = "quick") -> None:
    """Raise :class:`SweepError` if ``spec`` cannot run for ``profile`` as declared.

    Checks that the profile exists, the notebook exists and has a parameters cell, every axis is
    well formed, and every parameter the sweep sets (fixed or swept) is one of the notebook's —
    papermill itself would only warn about an unknown parameter and run the notebook unchanged.
    """
    if profile not in profile_names():
        raise SweepError(f"profile must be one of {profile_names()} (book/profiles.yml), got {profile!r}.")
    known = set(notebook_parameter_names(spec.notebook))
    setting: dict[str, str] = {}
    for axis, values in spec.axes(profile).items():
        for _, parameters in _axis_values(spec, axis, values):
            setting.update({name: f"grid axis {axis!r}" for name in parameters})
    setting.update({name: f"fixed parameters of profile {profile!r}" for name in spec.fixed.get(profile, {})})
    reserved = sorted(set(setting) & set(RESERVED))
    if reserved:
        raise SweepError(f"sweep {spec.name!r} sets {reserved}; the sweep machinery sets those itself.")
    unknown = sorted(set(setting) - known)
    if unknown:
        details = "; ".join(f"{name!r} (from the {setting[name]})" for name in unknown)
        raise SweepError(
            f"sweep {spec.name!r} sets parameter(s) that book/{spec.notebook}.ipynb does not have: {details}. "
            f"The notebook's parameters are: {', '.join(sorted(known))}. "
            f"Add the parameter(s) to the notebook's parameters cell, or change the sweep in sweeps.yml.")


# ------------------------------------------------------------------------------------------- points


@dataclass(frozen=True)
class SweepPoint:
    """One grid point.

    Attributes
    ----------
    index : int
        Position in the grid (row order of the collected table).
    axes : dict
        Axis name -> value or label of this point.
    parameters : dict
        Everything papermill injects except ``output_dir``: the run profile's parameters, then the
        sweep's fixed ones, then the point's.
    hash : str
        :func:`point_hash` of ``full_parameters``: names the point's folder in the shared store.
    full_parameters : dict
        The parameters the notebook runs with: its literal defaults (:func:`notebook_defaults`)
        overridden by ``parameters``. Points of two sweeps with the same full parameters are one point.
    """

    index: int
    axes: dict[str, Any]
    parameters: dict[str, Any]
    hash: str
    full_parameters: dict[str, Any] = field(default_factory=dict)


def notebook_code_digest(notebook: str) -> str:
    """SHA-256 of the code cells of ``book/<notebook>.ipynb`` (not its prose, tags or outputs).

    Part of every point's hash, so editing a chapter's code re-executes its sweep points.
    Changes inside slamlib are not seen: rerun with ``--force`` after those.
    """
    cells = json.loads(notebook_path(notebook).read_text(encoding="utf-8"))["cells"]
    code = "\n# ---- cell ----\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def point_hash(notebook: str, parameters: dict[str, Any], profile: str, code_digest: str = "") -> str:
    """Hash of (notebook, its code, parameters, profile) naming a point's folder in the shared store.

    The sweep's name is not part of it: two sweeps with the same point share its executed result.
    """
    return parameter_hash({"notebook": notebook, "code": code_digest, "profile": profile,
                           "parameters": {key: value for key, value in parameters.items() if key not in RESERVED}})


def sweep_points(spec: SweepSpec, profile: str = "quick") -> list[SweepPoint]:
    """The grid points of ``spec`` for ``profile`` (cartesian product of the axes, first axis slowest)."""

    check_sweep(spec, profile)
    base = {**notebook_parameters(spec.notebook, profile), **spec.fixed.get(profile, {})}
    defaults = notebook_defaults(spec.notebook)
    axes = spec.axes(profile)
    choices = [_axis_values(spec, axis, values) for axis, values in axes.items()]
    code_digest = notebook_code_digest(spec.notebook)
    points = []
    for index, combination in enumerate(itertools.product(*choices)):
        parameters = dict(base)
        for _, values in combination:
            parameters.update(values)
        parameters["profile"] = profile
        full_parameters = {**defaults, **parameters}
        labels = {axis: label for axis, (label, _) in zip(axes, combination)}
        points.append(SweepPoint(index, labels, parameters, point_hash(spec.notebook, full_parameters, profile, code_digest),
                                 full_parameters))
    seen: dict[str, int] = {}
    for point in points:
        if point.hash in seen:
            raise SweepError(f"sweep {spec.name!r}: points {seen[point.hash]} and {point.index} have the same parameters.")
        seen[point.hash] = point.index
    return points


def default_sweeps_dir(results_directory: str | Path | None = None) -> Path:
    """``_build/sweeps``; beside ``results_directory`` (``_build/results``) when that is given."""
    if results_directory not in (None, ""):
        return Path(results_directory).parent / "sweeps"
    return build_dir() / "sweeps"


def _sweeps_root(sweeps_dir: str | Path | None) -> Path:
    return default_sweeps_dir() if sweeps_dir is None else Path(sweeps_dir)


def points_dir(sweeps_dir: str | Path | None = None) -> Path:
    """``<sweeps_dir>/_points`` (default ``_build/sweeps/_points``): every executed point, one folder per hash."""
    return _sweeps_root(sweeps_dir) / POINTS_DIR


@dataclass(frozen=True)
class PointResult:
    """What happened to one point.

    Attributes
    ----------
    point : SweepPoint
    status : {"ok", "failed"}
    executed : bool
        True if this run executed the point, False if it reused (or only read) the stored one.
    wall_seconds : float or None
        Wall time of the execution that produced the stored result.
    error : str or None
    directory : Path
        The point's folder in the shared store, ``<sweeps_dir>/_points/<hash>/``.
    executed_by : str or None
        The sweep whose run produced the stored result (this sweep or another with the same point).
    """

    point: SweepPoint
    status: str
    executed: bool
    wall_seconds: float | None
    error: str | None
    directory: Path
    executed_by: str | None = None

    def source(self, sweep: str) -> str:
        """Where the result shown by ``sweep`` comes from: ``executed``, ``cached`` or ``cached from <sweep>``.

        Empty for a point that neither ran now nor has a successful stored result.
        """
        if self.executed:
            return "executed"
        if self.status != "ok":
            return ""
        if self.executed_by in (None, sweep):
            return "cached"
        return f"cached from {self.executed_by}"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _output_checksums(directory: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file a point wrote into ``directory`` (all but ``point.json``)."""
    return {path.relative_to(directory).as_posix(): file_sha256(path)
            for path in sorted(directory.rglob("*")) if path.is_file() and path.name != POINT_FILE}


def _verified_point(point: SweepPoint, directory: Path, notebook: str) -> dict[str, Any] | None:
    """The point's ``point.json`` if it succeeded and every output file still has its recorded checksum.

    ``None`` when there is no such record, it is of another point, it lacks the checksums (written by
    an older version) or its results JSON, or any recorded file is missing or changed.
    """
    meta = _read_json(directory / POINT_FILE)
    if not meta or meta.get("status") != "ok" or meta.get("hash") != point.hash:
        return None
    checksums = meta.get("sha256")
    if not isinstance(checksums, dict) or f"{notebook}.json" not in checksums:
        return None
    for relative, digest in checksums.items():
        path = directory / relative
        if not path.is_file() or file_sha256(path) != digest:
            return None
    return meta


def _execute_point(task: dict[str, Any]) -> dict[str, Any]:
    """Execute one point with papermill (runs in a worker process); writes and returns ``point.json``.

    ``point.json`` names the sweep that executed the point (``sweep``, with its ``index`` and ``axes``
    there) and, when the point succeeded, the SHA-256 of each output file (``sha256``), which any
    sweep checks before it reuses the point.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    directory = Path(task["directory"])
    started, start = _utc_now(), time.perf_counter()
    status, error, trace = "ok", None, None
    try:
        papermill.execute_notebook(
            task["source"], str(directory / f"{task['notebook']}.ipynb"),
            parameters={**task["parameters"], "output_dir": str(directory)}, kernel_name="python3",
            cwd=task["cwd"], progress_bar=False, execution_timeout=task["timeout"])
    except PapermillExecutionError as exception:
        status = "failed"
        error = f"{exception.ename}: {_ANSI.sub('', str(exception.evalue))} (cell {exception.cell_index})"
        trace = _ANSI.sub("", "\n".join(exception.traceback))
    except Exception as exception:  # kernel died, timeout, unreadable notebook...
        status, error, trace = "failed", f"{type(exception).__name__}: {exception}", traceback.format_exc()
    if status == "ok" and not (directory / f"{task['notebook']}.json").is_file():
        status = "failed"
        error = f"the notebook ran but wrote no {task['notebook']}.json (does it record results into output_dir?)"
    meta = {"sweep": task["sweep"], "notebook": task["notebook"], "profile": task["profile"], "hash": task["hash"],
            "index": task["index"], "axes": task["axes"], "parameters": task["parameters"],
            "full_parameters": task["full_parameters"], "status": status,
            "error": error, "traceback": trace, "wall_seconds": time.perf_counter() - start, "started": started,
            "finished": _utc_now(), "executed_notebook": f"{task['notebook']}.ipynb", "results": f"{task['notebook']}.json",
            "sha256": _output_checksums(directory) if status == "ok" else {}}
    write_json_atomically(directory / POINT_FILE, meta)
    return meta


@dataclass
class SweepReport:
    """The outcome of :func:`run_sweep` (or :func:`collect_sweep`).

    Attributes
    ----------
    spec : SweepSpec
    profile : str
    results : list of PointResult
        One per point, in grid order.
    elapsed_seconds : float
        Wall time of this run.
    workers : int
    table_paths : list of Path
        The collected table (CSV, FITS), the plot and the summary JSON.
    missing_keys : list of str
        ``collect`` entries no successful point recorded.
    """

    spec: SweepSpec
    profile: str
    results: list[PointResult]
    elapsed_seconds: float
    workers: int
    table_paths: list[Path] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)

    @property
    def executed(self) -> list[PointResult]:
        return [result for result in self.results if result.executed]

    @property
    def cached(self) -> list[PointResult]:
        return [result for result in self.results if not result.executed]

    @property
    def failed(self) -> list[PointResult]:
        return [result for result in self.results if result.status != "ok"]

    @property
    def cached_from(self) -> dict[str, int]:
        """Other sweep -> number of this sweep's points reused from that sweep's executions."""
        counts: dict[str, int] = {}
        for result in self.cached:
            if result.status == "ok" and result.executed_by not in (None, self.spec.name):
                counts[result.executed_by] = counts.get(result.executed_by, 0) + 1
        return counts

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [f"[sweep] {self.spec.name} ({self.profile}): {len(self.results)} points, {len(self.executed)} executed, "
                 f"{len(self.cached)} cached{_cached_from_text(self.cached_from)}, {len(self.failed)} failed, "
                 f"{self.elapsed_seconds:.1f} s with {self.workers} worker(s)"]
        for result in self.failed:
            lines.append(f"[sweep]   FAILED point {result.point.index} {result.point.axes}: {result.error} "
                         f"(see {result.directory / POINT_FILE})")
        for key in self.missing_keys:
            lines.append(f"[sweep]   no successful point recorded {key!r}")
        lines += [f"[sweep]   wrote {path}" for path in self.table_paths]
        return "\n".join(lines)


def _cached_from_text(cached_from: dict[str, int]) -> str:
    """`` (1 from epsilon, 2 from train_snr)`` for the points reused from other sweeps; empty if none."""
    if not cached_from:
        return ""
    return " (" + ", ".join(f"{count} from {sweep}" for sweep, count in sorted(cached_from.items())) + ")"


def _point_task(spec: SweepSpec, profile: str, point: SweepPoint, directory: Path) -> dict[str, Any]:
    return {"sweep": spec.name, "notebook": spec.notebook, "profile": profile, "hash": point.hash, "index": point.index,
            "axes": point.axes, "parameters": point.parameters, "full_parameters": point.full_parameters,
            "directory": str(directory), "source": str(notebook_path(spec.notebook)), "cwd": str(project_root()),
            "timeout": spec.timeout}


def run_sweep(
    name: str | SweepSpec,
    profile: str = "quick",
    *,
    workers: int = 2,
    force: bool = False,
    sweeps_dir: str | Path | None = None,
    sweeps_path: str | Path | None = None,
    progress: bool = True,
) -> SweepReport:
    """Execute the missing points of a sweep, then collect its table and plot.

    Parameters
    ----------
    name : str or SweepSpec
        A sweep of ``sweeps.yml`` (or of ``sweeps_path``).
    profile : {"smoke", "quick", "paper"}
    workers : int
        Points executed at the same time (each in its own process and kernel).
    force : bool
        Execute every point of this sweep again, even those with verified stored results.
    sweeps_dir : path, optional
        Default ``_build/sweeps``. The points are executed into (or reused from) the store shared by
        all sweeps, ``<sweeps_dir>/_points/<hash>/``; the sweep's table, plot and summary go to
        ``<sweeps_dir>/<name>/``.
    sweeps_path : path, optional
        The YAML file of sweeps (default ``sweeps.yml``).
    progress : bool
        Show a progress bar (tqdm).

    Returns
    -------
    SweepReport
        A failing point does not raise: it is in ``report.failed`` with its error.

    Raises
    ------
    SweepError
        If the sweep cannot run as declared (nothing is executed then).
    """
    from tqdm import tqdm

    spec = name if isinstance(name, SweepSpec) else get_sweep(name, sweeps_path)
    if workers < 1:
        raise SweepError(f"workers must be at least 1, got {workers}.")
    points = sweep_points(spec, profile)
    root, store = _sweeps_root(sweeps_dir) / spec.name, points_dir(sweeps_dir)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    outcome: dict[int, PointResult] = {}
    pending = []
    for point in points:
        directory = store / point.hash
        meta = None if force else _verified_point(point, directory, spec.notebook)
        if meta is not None:
            outcome[point.index] = PointResult(point, "ok", False, meta.get("wall_seconds"), None, directory, meta.get("sweep"))
        else:
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir(parents=True)
            pending.append((point, directory))
    workers = max(1, min(workers, len(pending))) if pending else workers
    if pending:
        bar = tqdm(total=len(pending), desc=f"sweep {spec.name}", unit="point", disable=not progress, file=sys.stderr)
        context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context)
        try:
            futures = {pool.submit(_execute_point, _point_task(spec, profile, point, directory)): (point, directory)
                       for point, directory in pending}
            for future in concurrent.futures.as_completed(futures):
                point, directory = futures[future]
                try:
                    meta = future.result()
                except Exception as exception:  # the worker process itself died
                    meta = {"status": "failed", "error": f"worker process failed: {type(exception).__name__}: {exception}",
                            "wall_seconds": None, "hash": point.hash, "index": point.index, "axes": point.axes,
                            "parameters": point.parameters, "sweep": spec.name, "notebook": spec.notebook,
                            "profile": profile, "finished": _utc_now()}
                    write_json_atomically(directory / POINT_FILE, meta)
                outcome[point.index] = PointResult(point, meta["status"], True, meta.get("wall_seconds"), meta.get("error"),
                                                   directory, spec.name)
                if meta["status"] != "ok":
                    bar.write(f"[sweep] point {point.index} {point.axes} failed: {meta.get('error')}")
                bar.update(1)
        except BaseException:  # Ctrl-C: drop the queued points; finished points stay cached
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            bar.close()
        pool.shutdown(wait=True)
    report = SweepReport(spec, profile, [outcome[point.index] for point in points], time.perf_counter() - start, workers)
    _collect(report, root)
    return report


# ---------------------------------------------------------------------------------------- collecting


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return math.nan


def _collected_columns(spec: SweepSpec, records: list[dict[str, Any] | None], directories: list[Path]):
    """Column name -> list of values per point, units, panel of each column, and entries nobody recorded."""
    from astropy.table import Table

    columns: dict[str, list[float]] = {}
    units: dict[str, str] = {}
    panels: dict[str, str] = {}
    missing: list[str] = []
    n_points = len(records)
    for entry in spec.collect:
        if isinstance(entry, str):
            keys = []
            for content in records:
                for key in (content or {}).get("records", {}):
                    if fnmatch.fnmatchcase(key, entry) and key not in keys:
                        keys.append(key)
            if not keys:
                missing.append(entry)
                if not any(ch in entry for ch in "*?["):
                    columns[entry] = [math.nan] * n_points
                    panels[entry] = entry
                continue
            for key in sorted(keys):
                values = []
                for content in records:
                    record = (content or {}).get("records", {}).get(key)
                    values.append(_number(record.get("value")) if record else math.nan)
                    if record and record.get("unit"):
                        units[key] = record["unit"]
                columns[key], panels[key] = values, key
        else:  # {table, columns, row}, checked by load_sweeps
            found = False
            for point_index, (content, directory) in enumerate(zip(records, directories)):
                paths = ((content or {}).get("tables", {}).get(entry["table"]) or {}).get("paths", [])
                path = next((directory / p for p in paths if p.endswith(".ecsv")), None) or \
                    next((directory / p for p in paths), None)
                if path is None or not path.is_file():
                    continue
                table = Table.read(path)
                if entry["row"] not in table.colnames:
                    continue
                for column in entry["columns"]:
                    if column not in table.colnames:
                        continue
                    found = True
                    for row in table:
                        try:
                            row_label = f"{float(row[entry['row']]):g}"
                        except (TypeError, ValueError):
                            row_label = str(row[entry["row"]])
                        name = f"{column}@{entry['row']}={row_label}"
                        value = math.nan if np.ma.is_masked(row[column]) else _number(float(row[column]))
                        columns.setdefault(name, [math.nan] * n_points)[point_index] = value
                        panels[name] = column
            if not found:
                missing.append(f"table {entry['table']}: {entry['columns']}")
    return columns, units, panels, missing


def _axis_column(values: list[Any]) -> list[Any]:
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        return [float(value) for value in values]
    return [value if isinstance(value, str) else json.dumps(value) for value in values]


def _collect(report: SweepReport, root: Path) -> None:
    """Write the table (CSV, FITS), the plot and the summary of ``report`` into ``root``."""
    import matplotlib.pyplot as plt
    from astropy.table import Table

    from slampaper.plotting.sweeps import plot_sweep

    spec = report.spec
    records = []
    for result in report.results:
        content = _read_json(result.directory / f"{spec.notebook}.json") if result.status == "ok" else None
        records.append(content)
    columns, units, panels, report.missing_keys = _collected_columns(spec, records, [r.directory for r in report.results])
    table = Table()
    table["point"] = [result.point.index for result in report.results]
    axes = list(spec.axes(report.profile))
    for axis in axes:
        table[axis] = _axis_column([result.point.axes[axis] for result in report.results])
    for name, values in columns.items():
        table[name] = values
        if name in units:
            table[name].description = f"unit: {units[name]}"
    table["status"] = [result.status for result in report.results]
    table["wall_seconds"] = [math.nan if result.wall_seconds is None else float(result.wall_seconds) for result in report.results]
    table["error"] = [result.error or "" for result in report.results]
    table["source"] = [result.source(spec.name) for result in report.results]
    table["hash"] = [result.point.hash for result in report.results]
    sources = sorted({content.get("data_source", "") for content in records if content})
    table.meta.update({"sweep": spec.name, "notebook": spec.notebook, "profile": report.profile,
                       "data_source": ", ".join(sources)})
    csv_path, fits_path = root / f"{spec.name}.csv", root / f"{spec.name}.fits"
    table.write(csv_path, format="ascii.csv", overwrite=True)
    fits_table = table.copy(copy_data=True)
    fits_table.meta = {"SWEEP": spec.name, "NOTEBOOK": spec.notebook, "PROFILE": report.profile,
                       "DATASRC": ", ".join(sources)[:60]}
    for name in fits_table.colnames:
        if fits_table[name].dtype.kind == "U":  # FITS: ASCII, non-empty fixed-width strings
            fits_table[name] = [value.encode("ascii", "replace").decode() or " " for value in fits_table[name]]
    fits_table.write(fits_path, format="fits", overwrite=True)
    figure = plot_sweep(table, x=axes[0], quantities={name: panels[name] for name in columns}, units=units,
                        other_axes=axes[1:], log_x=spec.log_x,
                        title=f"{spec.title} — profile {report.profile}",
                        source_label=f"{', '.join(sources) or 'no successful point'} (book/{spec.notebook}.ipynb)")
    png_path = root / f"{spec.name}.png"
    figure.savefig(png_path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    summary_path = root / f"{spec.name}.json"
    write_json_atomically(summary_path, {
        "sweep": spec.name, "title": spec.title, "notebook": spec.notebook, "profile": report.profile,
        "axes": {axis: spec.axes(report.profile)[axis] for axis in axes}, "fixed": spec.fixed.get(report.profile, {}),
        "collect": spec.collect, "columns": list(columns), "units": units, "data_source": ", ".join(sources),
        "n_points": len(report.results), "n_ok": len(report.results) - len(report.failed), "n_failed": len(report.failed),
        "n_executed": len(report.executed), "n_cached": len(report.cached), "cached_from": report.cached_from,
        "points_dir": Path(os.path.relpath(points_dir(root.parent), root)).as_posix(), "workers": report.workers,
        "elapsed_seconds": report.elapsed_seconds,
        "point_wall_seconds_total": float(sum(r.wall_seconds or 0.0 for r in report.results)),
        "failures": [{"point": r.point.index, "axes": r.point.axes, "error": r.error} for r in report.failed],
        "missing_keys": report.missing_keys, "finished": _utc_now(), "command": spec.command(report.profile)})
    report.table_paths = [csv_path, fits_path, png_path, summary_path]


def collect_sweep(name: str | SweepSpec, profile: str = "quick", *, sweeps_dir: str | Path | None = None,
                  sweeps_path: str | Path | None = None) -> SweepReport:
    """Rebuild the table and plot from the points already executed (by any sweep); executes nothing.

    Points that never ran, or whose stored result fails its checksums, appear as ``failed`` (with
    the error "not run" when there is none recorded).
    """
    spec = name if isinstance(name, SweepSpec) else get_sweep(name, sweeps_path)
    root, store = _sweeps_root(sweeps_dir) / spec.name, points_dir(sweeps_dir)
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for point in sweep_points(spec, profile):
        directory = store / point.hash
        meta = _read_json(directory / POINT_FILE) or {}
        status = "ok" if _verified_point(point, directory, spec.notebook) else "failed"
        error = None if status == "ok" else (meta.get("error") or "not run")
        results.append(PointResult(point, status, False, meta.get("wall_seconds"), error, directory, meta.get("sweep")))
    previous = _read_json(root / f"{spec.name}.json") or {}  # keep the last run's elapsed time and workers
    report = SweepReport(spec, profile, results, float(previous.get("elapsed_seconds", 0.0)), int(previous.get("workers", 0)))
    _collect(report, root)
    return report


# ------------------------------------------------------------------------------------- the book chapter


def sweep_status(name: str, sweeps_dir: str | Path | None = None, sweeps_path: str | Path | None = None) -> dict[str, Any]:
    """What the book can show of a sweep without running it.

    Returns a dict with ``spec``, ``state`` (``"run"``, ``"not run"`` or ``"cannot run"``),
    ``message``, ``command`` and, when run, ``summary`` (the summary JSON), ``table`` (astropy
    Table) and ``plot`` (path of the PNG).
    """
    from astropy.table import Table

    spec = get_sweep(name, sweeps_path)
    root = _sweeps_root(sweeps_dir) / spec.name
    summary = _read_json(root / f"{spec.name}.json")
    status: dict[str, Any] = {"spec": spec, "command": spec.command(), "summary": summary, "table": None, "plot": None}
    problems = []
    for profile in profile_names():
        try:
            check_sweep(spec, profile)
        except SweepError as error:
            problems.append(str(error))
    if summary is None or not (root / f"{spec.name}.csv").is_file():
        status["state"] = "cannot run" if problems else "not run"
        status["message"] = problems[0] if problems else "This sweep has not been run on this machine yet."
        return status
    status["state"] = "run"
    status["command"] = summary.get("command", spec.command())
    table = Table.read(root / f"{spec.name}.csv", format="ascii.csv")
    for name in table.colnames:  # empty CSV cells come back masked: blank text, NaN numbers
        column = table[name]
        if not hasattr(column, "mask") or not np.any(column.mask):
            continue
        if np.all(column.mask) or column.dtype.kind in "US":
            table[name] = np.where(column.mask, "", np.asarray(column.data, dtype=str))
        else:
            table[name] = column.astype(float).filled(math.nan)
    status["table"] = table
    status["plot"] = root / f"{spec.name}.png" if (root / f"{spec.name}.png").is_file() else None
    status["message"] = (
        f"{summary['n_points']} points on the {summary['profile']} profile ({summary['n_ok']} ok, {summary['n_failed']} failed); "
        f"the points took {summary['point_wall_seconds_total']:.0f} s of wall time in total "
        f"(last run: {summary['elapsed_seconds']:.0f} s with {summary['workers']} worker(s), "
        f"{summary['n_executed']} executed, {summary['n_cached']} from the cache"
        f"{_cached_from_text(summary.get('cached_from') or {})}; finished {summary['finished']}). "
        f"Data: {summary.get('data_source') or 'unknown'}.")
    return status


def _format_cell(value: Any) -> str:
    if isinstance(value, float) or hasattr(value, "dtype") and getattr(value, "dtype").kind == "f":
        value = float(value)
        if not math.isfinite(value):
            return "–"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3g}"
    return html.escape(str(value))


def sweep_html(name: str, sweeps_dir: str | Path | None = None, sweeps_path: str | Path | None = None) -> str:
    """HTML for one sweep in the book: description, status or table, and how to (re)run it."""
    status = sweep_status(name, sweeps_dir, sweeps_path)
    spec: SweepSpec = status["spec"]
    parts = []
    if spec.description:
        parts.append(f"<p>{html.escape(spec.description)}</p>")
    parts.append(f"<p><b>{html.escape(status['state'].capitalize())}.</b> {html.escape(status['message'])}</p>")
    table = status["table"]
    if table is not None:
        hidden = {"point", "hash"} | ({"error"} if not any(str(value).strip() for value in table["error"]) else set())
        shown = [column for column in table.colnames if column not in hidden]
        titles = {"wall_seconds": "wall time [s]"}

        def title(column: str) -> str:  # allow line breaks after dots, underscores and "@" in long keys
            return re.sub(r"([._@])", r"\1<wbr>", html.escape(titles.get(column, column)))

        rows = ["<tr>" + "".join(f"<th>{title(column)}</th>" for column in shown) + "</tr>"]
        for row in table:
            rows.append("<tr>" + "".join(f"<td>{_format_cell(row[column])}</td>" for column in shown) + "</tr>")
        parts.append('<div style="overflow-x:auto"><table class="table" style="font-size:0.85em">' + "".join(rows)
                     + "</table></div>")
    verb = "Rerun (only missing points execute)" if status["state"] == "run" else "Run it"
    parts.append(f"<p>{verb} with:</p><pre>{html.escape(status['command'])}</pre>")
    return "\n".join(parts)


def show_sweep(name: str, sweeps_dir: str | Path | None = None, sweeps_path: str | Path | None = None) -> None:
    """Display :func:`sweep_html` and the sweep's plot in a notebook."""
    from IPython.display import HTML, Image, display

    display(HTML(sweep_html(name, sweeps_dir, sweeps_path)))
    status = sweep_status(name, sweeps_dir, sweeps_path)
    if status["plot"] is not None:
        display(Image(filename=str(status["plot"])))


# --------------------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``list``, ``run NAME`` (or just ``NAME``), ``collect NAME``.

    Returns 0 when every point succeeded, 1 when some point failed, 2 when the sweep cannot run
    as declared.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0] not in {"list", "run", "collect"}:
        argv = ["run", *argv]  # "NAME ..." is short for "run NAME ..."
    parser = argparse.ArgumentParser(prog="python -m slampaper.sweeps", description="Run the parameter sweeps of sweeps.yml.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--sweeps-file", type=Path, default=None, help="YAML file of sweeps (default: sweeps.yml)")
    common.add_argument("--sweeps-dir", type=Path, default=None, help="output directory (default: _build/sweeps)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", parents=[common], help="list the declared sweeps")
    for command in ("run", "collect"):
        sub = commands.add_parser(command, parents=[common], help="execute the missing points, then collect"
                                  if command == "run" else "collect the table and plot from the executed points")
        sub.add_argument("name")
        sub.add_argument("--profile", default="quick", choices=profile_names())
        if command == "run":
            sub.add_argument("--workers", type=int, default=2, help="points executed at the same time (default 2)")
            sub.add_argument("--force", action="store_true", help="execute every point again")
            sub.add_argument("--no-progress", action="store_true", help="no progress bar")
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "list":
            for spec in load_sweeps(arguments.sweeps_file).values():
                axes = ", ".join(f"{axis} ({len(values)})" for axis, values in spec.grid.items())
                print(f"{spec.name:24s} book/{spec.notebook}.ipynb over {axes} — {spec.title}")
            return 0
        if arguments.command == "collect":
            report = collect_sweep(arguments.name, arguments.profile, sweeps_dir=arguments.sweeps_dir,
                                   sweeps_path=arguments.sweeps_file)
        else:
            report = run_sweep(arguments.name, arguments.profile, workers=arguments.workers, force=arguments.force,
                               sweeps_dir=arguments.sweeps_dir, sweeps_path=arguments.sweeps_file,
                               progress=not arguments.no_progress)
    except SweepError as error:
        print(f"[sweep] error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
