"""Figures 5-9 (paper Section 4): the APOGEE-trained K-giant model."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from astropy.table import Table
from matplotlib.colors import LogNorm
from scipy.stats import binned_statistic_2d

from slampaper.plotting.lasp import LABEL_TEX, plot_errors_vs_snr
from slampaper.plotting.style import annotate_source

__all__ = ["plot_kiel_with_polygon", "plot_label_distance", "plot_cv_scatter_vs_snr", "plot_one_to_one",
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


def plot_kiel_with_polygon(reference: Table, predicted: Table, polygon: np.ndarray, *, source_label: str, reference_name: str):
    """Figure 5: Kiel diagrams of the reference (APOGEE) and SLAM labels of all common stars, with the polygon."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.3), layout="constrained", sharey=True)
    for axis, table, title in ((axes[0], reference, reference_name), (axes[1], predicted, "SLAM")):
        image = _kiel(axis, np.asarray(table["teff"], float), np.asarray(table["logg"], float), title)
        _polygon(axis, polygon)
    axes[1].legend(fontsize=8, loc="upper left")
    figure.colorbar(image, ax=axes, label="count")
    annotate_source(figure, source_label)
    return figure


def plot_label_distance(predicted: Table, distance: np.ndarray, threshold: float, *, source_label: str):
    """Figure 6: the label distance D to the training set: its histogram and the Kiel diagram split at D = threshold."""
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    finite = np.isfinite(distance)
    axes[0].hist(np.log10(np.clip(distance[finite], 1e-3, None)), bins=60, color="0.4")
    axes[0].axvline(np.log10(threshold), color="r", label=f"D = {threshold:g}")
    axes[0].set_xlabel(r"log$_{10}$ D")
    axes[0].set_ylabel("stars")
    axes[0].legend(fontsize=8)
    teff, logg = np.asarray(predicted["teff"], float), np.asarray(predicted["logg"], float)
    near = finite & (distance < threshold)
    _kiel(axes[1], teff[near], logg[near], f"D < {threshold:g} ({near.sum()} stars)")
    image = _kiel(axes[2], teff[finite & ~near], logg[finite & ~near], f"D ≥ {threshold:g} ({(finite & ~near).sum()} stars)")
    figure.colorbar(image, ax=axes[1:], label="count")
    annotate_source(figure, source_label)
    return figure


def plot_cv_scatter_vs_snr(table: Table, cannon_table: Table, label_names: list[str], error_models: Table,
                           paper_scatter: dict[str, float], *, source_label: str):
    """Figure 7: CV scatter against S/N_g for every label, SLAM and The Cannon, the fitted
    a exp(-b S/N) + c, and a 1/(S/N) trend anchored at SLAM's lowest-S/N bin."""
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
    figure.axes[0].legend(fontsize=6)
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


def plot_alpha_vs_metallicity(predicted: Table, *, source_label: str, title: str):
    """Figure 9: [alpha/M] against [M/H], coloured by the median [C/N] = [C/M] - [N/M] in each bin."""
    m_h = np.asarray(predicted["m_h"], float)
    alpha_m = np.asarray(predicted["alpha_m"], float)
    carbon_to_nitrogen = np.asarray(predicted["c_m"], float) - np.asarray(predicted["n_m"], float)
    finite = np.isfinite(m_h) & np.isfinite(alpha_m) & np.isfinite(carbon_to_nitrogen)
    statistic, x_edges, y_edges, _ = binned_statistic_2d(m_h[finite], alpha_m[finite], carbon_to_nitrogen[finite],
                                                         statistic="median", bins=(np.linspace(-2.0, 0.6, 45), np.linspace(-0.2, 0.45, 40)))
    counts, _, _, _ = binned_statistic_2d(m_h[finite], alpha_m[finite], None, statistic="count", bins=(x_edges, y_edges))
    statistic = np.where(counts >= 3, statistic, np.nan)
    figure, axis = plt.subplots(figsize=(6.5, 4.6), layout="constrained")
    image = axis.pcolormesh(x_edges, y_edges, statistic.T, cmap="RdYlBu_r")
    figure.colorbar(image, ax=axis, label="median [C/N]")
    axis.set_xlabel(LABEL_TEX["m_h"])
    axis.set_ylabel(LABEL_TEX["alpha_m"])
    axis.set_title(title, fontsize=10)
    annotate_source(figure, source_label)
    return figure
