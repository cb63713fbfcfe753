"""Figures 5-9 (paper Section 4): the APOGEE-trained K-giant model."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from astropy.table import Table
from matplotlib.colors import LogNorm
from scipy.stats import binned_statistic_2d

from slampaper.plotting.lasp import LABEL_TEX, plot_errors_vs_snr
from slampaper.plotting.style import annotate_source

__all__ = ["plot_kiel_with_polygon", "plot_label_distance_histogram", "plot_cv_scatter_vs_snr", "plot_one_to_one",
           "plot_alpha_vs_metallicity"]

TEFF_RANGE = (3300.0, 6500.0)
LOGG_RANGE = (-0.2, 5.2)


def _kiel(axis, teff, logg, title):
    finite = np.isfinite(teff) & np.isfinite(logg)
    counts, x_edges, y_edges = np.histogram2d(teff[finite], logg[finite], bins=(np.linspace(*TEFF_RANGE, 70), np.linspace(*LOGG_RANGE, 60)))
    image = axis.pcolormesh(x_edges, y_edges, np.where(counts > 0, counts, np.nan).T, norm=LogNorm(vmin=1), cmap="viridis")
    axis.set_xlim(TEFF_RANGE[::-1])
    axis.set_ylim(LOGG_RANGE[::-1])
    axis.set_xlabel(LABEL_TEX["teff"])
    axis.set_ylabel(LABEL_TEX["logg"])
    axis.set_title(title, fontsize=10)
    return image


def _polygon(axis, polygon):
    closed = np.vstack([polygon, polygon[:1]])
    axis.plot(closed[:, 0], closed[:, 1], "r-", lw=1.2, label="K-giant polygon")


def plot_kiel_with_polygon(predicted: Table, lamost: Table, apogee: Table, polygon: np.ndarray, *, selected: np.ndarray,
                           selection_name: str, slam_shows_all: bool, source_label: str):
    """Figures 5 and 6 laid out as the paper's: SLAM's Kiel diagram with the K-giant polygon, then the
    LAMOST and the APOGEE labels of the selected stars.

    Parameters
    ----------
    predicted : Table
        SLAM's ``teff``, ``logg`` and ``converged`` for every star.
    lamost, apogee : Table
        ``teff`` and ``logg`` of the same stars from LAMOST (LASP) and APOGEE.
    polygon : ndarray, shape (n_vertex, 2)
    selected : ndarray of bool, shape (n_star,)
        The stars of the middle and right panels (Figure 5: inside the polygon; Figure 6: D < 2.5).
    selection_name : str
        How they were selected, for the titles.
    slam_shows_all : bool
        The left panel shows all converged stars (Figure 5) or only the selected ones (Figure 6).
    """
    converged = np.asarray(predicted["converged"], bool)
    selected = np.asarray(selected, bool) & converged
    left = converged if slam_shows_all else selected
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained", sharey=True)
    panels = ((axes[0], predicted, left, f"SLAM, {'all converged' if slam_shows_all else selection_name} ({left.sum()})"),
              (axes[1], lamost, selected, f"LAMOST labels, {selection_name} ({selected.sum()})"),
              (axes[2], apogee, selected, f"APOGEE labels, {selection_name} ({selected.sum()})"))
    for axis, table, rows, title in panels:
        image = _kiel(axis, np.asarray(table["teff"], float)[rows], np.asarray(table["logg"], float)[rows], title)
        _polygon(axis, polygon)
    axes[0].legend(fontsize=8, loc="upper left")
    figure.colorbar(image, ax=axes, label="count")
    annotate_source(figure, source_label)
    return figure


def plot_label_distance_histogram(distance: np.ndarray, threshold: float, *, source_label: str):
    """The distribution of the label distance D (Eq. 11) with the paper's D < 2.5 cut (beyond the paper)."""
    figure, axis = plt.subplots(figsize=(6, 3.6), layout="constrained")
    finite = np.isfinite(distance)
    axis.hist(np.log10(np.clip(distance[finite], 1e-3, None)), bins=60, color="0.4")
    axis.axvline(np.log10(threshold), color="r", label=f"D = {threshold:g}")
    axis.set_xlabel(r"log$_{10}$ D")
    axis.set_ylabel("stars")
    axis.legend(fontsize=8)
    annotate_source(figure, source_label)
    return figure


def _mark_samples(axis, table: Table) -> None:
    """Shade the S/N_g range of every sample of bins but the highest-S/N one (Figure 7: the low-S/N test
    stars), with a dashed line where the samples change; each sample's name goes into the legend.

    Parameters
    ----------
    axis : matplotlib Axes
    table : Table
        ``snr_low``, ``snr_high`` and ``sample`` per bin, bins in increasing S/N.
    """
    samples = [str(value) for value in table["sample"]]
    low, high = np.asarray(table["snr_low"], float), np.asarray(table["snr_high"], float)
    names = list(dict.fromkeys(samples))
    for index, name in enumerate(names):
        rows = np.asarray(samples) == name
        if index < len(names) - 1:
            axis.axvspan(max(low[rows].min(), 1.0), high[rows].max(), color="0.85", alpha=0.6, lw=0, label=name)
            axis.axvline(high[rows].max(), color="0.4", lw=0.8, ls="--")
        else:
            axis.plot([], [], ls="none", label=f"unshaded: {name}")


def plot_cv_scatter_vs_snr(table: Table, cannon_table: Table, label_names: list[str], error_models: Table,
                           paper_scatter: dict[str, float], *, source_label: str):
    """Figure 7: scatter against S/N_g for every label, SLAM and The Cannon, the fitted
    a exp(-b S/N) + c, and a 1/(S/N) trend anchored at SLAM's lowest-S/N bin.

    Parameters
    ----------
    table, cannon_table : Table
        Per-bin tables (:func:`slampaper.kgiants.figure7_table`); with a ``sample`` column, the bins of
        each sample but the highest-S/N one (the low-S/N test stars) are shaded and named in the legend.
    label_names : list of str
    error_models : Table
        Table 1 rows (``label``, ``a``, ``b``, ``c``).
    paper_scatter : dict of str to float
        The paper's scatter at S/N_g ~ 100, drawn as a horizontal line.
    source_label : str
        The data, written on the figure.

    Returns
    -------
    matplotlib.figure.Figure
        S/N_g on a logarithmic axis, so the low-S/N bins are visible.
    """
    figure = plot_errors_vs_snr(table, label_names, source_label=source_label, paper_scatter=paper_scatter,
                                comparison={"The Cannon": cannon_table}, error_models=error_models)
    snr = np.asarray(table["snr_median"], float)
    grid = np.linspace(np.nanmin(snr), np.nanmax(snr), 100)
    for axis, name in zip(figure.axes, label_names):
        anchor = np.flatnonzero(np.isfinite(np.asarray(table[f"{name}_scatter"], float)))
        if anchor.size:
            first = anchor[0]
            axis.plot(grid, table[f"{name}_scatter"][first] * snr[first] / grid, color="0.6", lw=0.8, ls=":",
                      label=r"$\propto 1/(S/N)$")
        if "sample" in table.colnames:
            _mark_samples(axis, table)
        axis.set_xscale("log")
    first = figure.axes[0]
    if first.get_legend() is not None:
        first.get_legend().remove()
    handles, labels = first.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside upper center", ncols=4, fontsize=7)
    return figure


def plot_one_to_one(reference: np.ndarray, predicted: np.ndarray, label_names: list[str], *, title: str,
                    source_label: str, reference_name: str):
    """Figure 8: SLAM (cross-validated) against the reference labels, one panel per label."""
    n_label = len(label_names)
    figure, axes = plt.subplots(2, (n_label + 1) // 2, figsize=(4 * ((n_label + 1) // 2), 7.5), layout="constrained")
    for axis, index in zip(axes.flat, range(n_label)):
        x, y = reference[:, index], predicted[:, index]
        finite = np.isfinite(x) & np.isfinite(y)
        limits = np.nanpercentile(x[finite], [0.5, 99.5]) if finite.any() else (0, 1)
        axis.scatter(x[finite], y[finite], s=3, alpha=0.5)
        axis.plot(limits, limits, "r-", lw=0.8)
        difference = y[finite] - x[finite]
        axis.text(0.04, 0.96, f"bias {np.mean(difference):.3g}\nscatter {np.std(difference):.3g}\nN = {finite.sum()}",
                  transform=axis.transAxes, va="top", fontsize=8)
        axis.set_xlabel(f"{LABEL_TEX.get(label_names[index], label_names[index])} ({reference_name})")
        axis.set_ylabel(f"{LABEL_TEX.get(label_names[index], label_names[index])} (SLAM)")
    for axis in list(axes.flat)[n_label:]:
        axis.set_visible(False)
    figure.suptitle(title)
    annotate_source(figure, source_label)
    return figure


def plot_alpha_vs_metallicity(panels: dict[str, Table], *, source_label: str):
    """Figure 9 laid out as the paper's: for each sample (columns), the counts (top row) and the median
    [C/N] = [C/M] - [N/M] (bottom row) in the [alpha/M]-[M/H] plane, counts contoured (black here; white in the paper) on the
    last median panel. Only empty bins are blank; no star is masked out.

    Parameters
    ----------
    panels : dict of str to Table
        Column title -> ``m_h``, ``alpha_m``, ``c_m``, ``n_m`` (the paper: SLAM and APOGEE labels of the
        common stars, SLAM labels of all K giants with S/N_g > 80).
    """
    x_edges, y_edges = np.linspace(-2.0, 0.6, 45), np.linspace(-0.2, 0.45, 40)
    figure, axes = plt.subplots(2, len(panels), figsize=(5.0 * len(panels), 8.0), layout="constrained", squeeze=False)
    for column, (title, table) in enumerate(panels.items()):
        m_h, alpha_m = np.asarray(table["m_h"], float), np.asarray(table["alpha_m"], float)
        carbon_to_nitrogen = np.asarray(table["c_m"], float) - np.asarray(table["n_m"], float)
        finite = np.isfinite(m_h) & np.isfinite(alpha_m) & np.isfinite(carbon_to_nitrogen)
        counts, _, _ = np.histogram2d(m_h[finite], alpha_m[finite], bins=(x_edges, y_edges))
        image = axes[0, column].pcolormesh(x_edges, y_edges, np.where(counts > 0, counts, np.nan).T, norm=LogNorm(vmin=1),
                                           cmap="viridis")
        figure.colorbar(image, ax=axes[0, column], label="count")
        axes[0, column].set_title(f"{title} ({finite.sum()} stars)", fontsize=9)
        median, _, _, _ = binned_statistic_2d(m_h[finite], alpha_m[finite], carbon_to_nitrogen[finite], statistic="median",
                                              bins=(x_edges, y_edges))
        image = axes[1, column].pcolormesh(x_edges, y_edges, median.T, cmap="RdYlBu_r", vmin=-0.8, vmax=0.4)
        figure.colorbar(image, ax=axes[1, column], label="median [C/N]")
        if column == len(panels) - 1 and counts.max() > 0:
            centres_x, centres_y = 0.5 * (x_edges[1:] + x_edges[:-1]), 0.5 * (y_edges[1:] + y_edges[:-1])
            axes[1, column].contour(centres_x, centres_y, counts.T, levels=np.geomspace(2, max(counts.max(), 3), 4),
                                    colors="black", linewidths=0.5)  # the paper: white, on its darker map
        for axis in axes[:, column]:
            axis.set_xlabel(LABEL_TEX["m_h"])
            axis.set_ylabel(LABEL_TEX["alpha_m"])
    annotate_source(figure, source_label)
    return figure
