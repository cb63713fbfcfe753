"""Recorded results: every notebook's headline numbers, figures and tables in one place.

A notebook creates one :class:`Recorder`, records numbers with the paper's value beside
them, and saves its figures and tables through it. On :meth:`Recorder.save` (and after
every record) the results land as ``<results_dir>/<notebook>.json`` together with the
notebook's parameters and data source, so the scorecard and the sweeps read numbers from
files instead of re-running anything.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slamlib.files import write_json_atomically
from slampaper.paths import results_dir as default_results_dir

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["Recorder", "load_records", "glue_name", "readable"]


def glue_name(key: str) -> str:
    """The myst-nb glue name of a record key: dots and dashes become underscores."""
    return key.replace(".", "_").replace("-", "_")


def _glue(name: str, value: Any) -> None:
    """Glue a plain value for the book's prose when running inside a notebook kernel."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return
    if get_ipython() is None:
        return
    from myst_nb import glue

    glue(name, value, display=False)


def _json_value(value: Any) -> Any:
    """Plain JSON for numpy scalars and arrays; non-finite floats become None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    return value


def _show_in_notebook(figure, caption: str) -> None:
    """Display a figure and its caption in a notebook kernel, then close it (shown exactly once)."""
    import matplotlib.pyplot as plt

    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(figure)
        display(Markdown(f"*{caption}*"))
    plt.close(figure)


def _plain(value: Any) -> Any:
    """Python scalars and lists for numpy values, NaN kept (prose shows "nan", not a crash)."""
    return value.tolist() if hasattr(value, "tolist") else value


@dataclass
class Recorder:
    """Collects one notebook's results.

    Parameters
    ----------
    notebook : str
        Notebook name without extension (names the JSON file).
    parameters : dict
        The notebook's parameters (as executed).
    data_source : str
        ``"mock"`` or the real survey the numbers come from.
    output_dir : str or Path, optional
        Where to write (default ``<root>/_build/results``).
    """

    notebook: str
    parameters: dict[str, Any]
    data_source: str
    output_dir: str | Path | None = None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: dict[str, dict[str, str]] = field(default_factory=dict)
    tables: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.output_dir = default_results_dir(self.output_dir)

    @property
    def path(self) -> Path:
        """The JSON file of this notebook's results."""
        return Path(self.output_dir) / f"{self.notebook}.json"

    def record(self, key: str, value: Any, *, unit: str = "", paper: Any = None, description: str = "") -> Any:
        """Record one number (or small list); returns ``value`` for use in prose.

        Parameters
        ----------
        key : str
            A stable name, e.g. ``"cv_scatter.teff.snr100"``.
        value : number or list
            Our value.
        unit : str
            Physical unit, e.g. ``"K"`` or ``"dex"``.
        paper : number or list, optional
            The paper's value for the same quantity.
        description : str
            What the number is, in words.

        Notes
        -----
        Inside a notebook the value is also glued (myst-nb) under :func:`glue_name` of the
        key, and the paper's value under that name plus ``_paper``, so prose quotes the
        recorded numbers, e.g. ``{glue:text}`cv_scatter_teff:.0f```.
        """
        self.records[key] = {"value": _json_value(value), "unit": unit, "paper": _json_value(paper),
                             "description": description}
        self.save()
        _glue(glue_name(key), _plain(value))
        if paper is not None:
            _glue(glue_name(key) + "_paper", _plain(paper))
        return value

    def save_figure(self, figure, name: str, *, caption: str) -> Path:
        """Save a matplotlib figure as ``figures/<notebook>-<name>.png`` and register it.

        Inside a notebook the figure is shown once, followed by its caption, and closed.
        """
        directory = Path(self.output_dir) / "figures"
        directory.mkdir(exist_ok=True)
        path = directory / f"{self.notebook}-{name}.png"
        figure.savefig(path, dpi=110, bbox_inches="tight")
        self.figures[name] = {"path": str(path.relative_to(self.output_dir)), "caption": caption}
        self.save()
        _show_in_notebook(figure, caption)
        return path

    def save_table(self, table, name: str, *, caption: str, formats: tuple[str, ...] = ("ecsv",)) -> list[Path]:
        """Write an astropy Table as ``tables/<notebook>-<name>.<format>`` and register it."""
        directory = Path(self.output_dir) / "tables"
        directory.mkdir(exist_ok=True)
        paths = []
        for file_format in formats:
            path = directory / f"{self.notebook}-{name}.{file_format}"
            table.write(path, overwrite=True, format={"ecsv": "ascii.ecsv", "csv": "ascii.csv", "fits": "fits"}[file_format])
            paths.append(path)
        self.tables[name] = {"paths": [str(p.relative_to(self.output_dir)) for p in paths], "caption": caption}
        self.save()
        return paths

    def save(self) -> Path:
        """Write the JSON file (atomically)."""
        content = {"notebook": self.notebook, "data_source": self.data_source,
                   "parameters": _json_value(self.parameters), "records": self.records,
                   "figures": self.figures, "tables": self.tables}
        write_json_atomically(self.path, content)
        return self.path


def load_records(directory: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """All notebooks' result files in ``directory``, keyed by notebook name."""
    directory = default_results_dir(directory)
    return {path.stem: json.loads(path.read_text()) for path in sorted(Path(directory).glob("*.json"))}


def _cell_text(value: Any, significant: int) -> str:
    """A table cell as a reader sees it: masked or NaN as "–", floats to ``significant`` digits."""
    if value is None or np.ma.is_masked(value):
        return "–"
    if isinstance(value, (float, np.floating)):
        return "–" if not math.isfinite(float(value)) else f"{float(value):.{significant}g}"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


class ReadableTable:
    """A table shown to readers: an HTML table of formatted cells, without astropy's "Table length" line,
    dtype row or -1-style placeholders (masked values show as "–")."""

    def __init__(self, table: Table, significant: int = 4) -> None:
        self.table = table
        self.significant = significant

    def _rows(self) -> list[list[str]]:
        return [[_cell_text(row[name], self.significant) for name in self.table.colnames] for row in self.table]

    def _repr_html_(self) -> str:
        import html

        header = "".join(f"<th>{html.escape(str(name))}</th>" for name in self.table.colnames)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in self._rows())
        return f'<table class="table"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'

    def __repr__(self) -> str:
        rows = [list(map(str, self.table.colnames))] + self._rows()
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))] if rows[0] else []
        return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows)


def readable(table: Table, significant: int = 4) -> ReadableTable:
    """``table`` for showing in a chapter: formatted cells (floats to ``significant`` digits, masked
    values as "–"), no "Table length" or dtype rows. The saved files keep full precision."""
    return ReadableTable(table, significant)
