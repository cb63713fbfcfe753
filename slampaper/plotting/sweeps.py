"""The plot of a parameter sweep: each collected quantity against the swept parameter."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from slampaper.plotting.style import annotate_source

__all__ = ["plot_sweep"]


def _is_numeric(values) -> bool:
    return np.asarray(values).dtype.kind in "fiu"


def plot_sweep(
    table,
    *,
    x: str,
    quantities: Mapping[str, str],
    units: Mapping[str, str] | None = None,
    other_axes: Sequence[str] = (),
    log_x: bool = False,
    title: str = "",
    source_label: str,
):
    """One panel per quantity, against the swept parameter ``x``.

    Parameters
    ----------
    table : astropy.table.Table
        The collected sweep table: one row per point, a column per axis and per quantity,
        and ``status``.
    x : str
        The axis on the horizontal axis (numeric, or categorical in row order).
    quantities : mapping
        Column -> panel name. Columns sharing a panel (e.g. one per S/N bin, named
        ``<column>@<row>=<value>``) are drawn as separate lines in that panel.
    units : mapping, optional
        Column -> unit, shown on the y axis.
    other_axes : sequence of str
        Further swept axes; each combination of their values is one line.
    log_x : bool
    title : str
    source_label : str
        The data the points ran on, written on the figure.
    """
    units = dict(units or {})
    panels: dict[str, list[str]] = {}
    for column, panel in quantities.items():
        panels.setdefault(panel, []).append(column)
    n_panel = max(len(panels), 1)
    n_col = min(n_panel, 3)
    n_row = math.ceil(n_panel / n_col)
    figure, axes = plt.subplots(n_row, n_col, figsize=(4.2 * n_col, 3.2 * n_row), squeeze=False, layout="constrained")
    ok = np.asarray(table["status"]) == "ok"
    x_values = np.asarray(table[x])
    numeric = _is_numeric(x_values)
    if numeric:
        positions = x_values.astype(float)
    else:
        categories = list(dict.fromkeys(str(value) for value in x_values))
        positions = np.array([categories.index(str(value)) for value in x_values], dtype=float)
    groups = [()]
    if other_axes:
        groups = list(dict.fromkeys(tuple(str(row[axis]) for axis in other_axes) for row in table))
    for axis, (panel, columns) in zip(axes.flat, panels.items()):
        for column in columns:
            for group in groups:
                rows = ok.copy()
                for name, value in zip(other_axes, group):
                    rows &= np.array([str(item) for item in table[name]]) == value
                y = np.asarray(table[column], dtype=float)
                keep = rows & np.isfinite(y)
                if not keep.any():
                    continue
                order = np.argsort(positions[keep], kind="stable")
                label_parts = []
                if len(columns) > 1:
                    label_parts.append(column.split("@", 1)[-1] if "@" in column else column)
                label_parts += [f"{name}={value}" for name, value in zip(other_axes, group)]
                axis.plot(positions[keep][order], y[keep][order], "o-", ms=4, lw=1.2,
                          label=", ".join(label_parts) or None)
        unit = next((units[column] for column in columns if units.get(column)), "")
        axis.set_title(panel, fontsize=9)
        axis.set_ylabel(f"{panel} [{unit}]" if unit else panel, fontsize=8)
        axis.set_xlabel(x)
        if numeric and log_x and np.all(positions[np.isfinite(positions)] > 0):
            axis.set_xscale("log")
            ticks = np.unique(positions[np.isfinite(positions)])
            axis.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
            axis.minorticks_off()
        if not numeric:
            axis.set_xticks(range(len(categories)), categories, rotation=20, fontsize=8)
        if axis.get_legend_handles_labels()[0] and (len(columns) > 1 or other_axes):
            axis.legend(fontsize=7)
        if not axis.lines:
            axis.text(0.5, 0.5, "not recorded by any successful point", transform=axis.transAxes, ha="center", va="center", color="0.4")
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    if not panels:
        axes.flat[0].set_visible(True)
        axes.flat[0].text(0.5, 0.5, "nothing collected", ha="center", va="center")
    if title:
        figure.suptitle(title)
    annotate_source(figure, source_label)
    return figure
