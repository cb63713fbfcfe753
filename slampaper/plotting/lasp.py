"""Figures 2-4 (paper Section 3): per-pixel CV statistics, Kiel and one-to-one diagrams, errors vs S/N."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from astropy.table import Table
from matplotlib.colors import LogNorm
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from slampaper.plotting.style import annotate_source

__all__ = ["wavelength_panels", "percentile_spectra", "plot_pixel_statistics", "plot_kiel_and_one_to_one", "plot_errors_vs_snr", "plot_ensemble_errors", "LABEL_TEX"]

LABEL_TEX = {"teff": r"$T_\mathrm{eff}$ [K]", "logg": r"$\log g$", "m_h": "[M/H]", "feh": "[Fe/H]",
             "alpha_m": r"[$\alpha$/M]", "c_m": "[C/M]", "n_m": "[N/M]"}


def _tex(name: str) -> str:
    return LABEL_TEX.get(name, name)


def wavelength_panels(wave: np.ndarray, n_panels: int = 3) -> list[np.ndarray]:
    """Pixel masks cutting the wavelength range into ``n_panels`` equal parts (the paper's Figures 2 and 10)."""
    edges = np.linspace(wave[0], wave[-1], n_panels + 1)
    return [(wave >= low) & (wave <= high) for low, high in zip(edges[:-1], edges[1:])]


def percentile_spectra(flux: np.ndarray, ivar: np.ndarray) -> dict[int, np.ndarray]:
    """The 16th, 50th and 84th percentile of the flux at each pixel over the good pixels (ivar > 0)."""
    masked = np.where(ivar > 0, flux, np.nan)
    with np.errstate(all="ignore"):
        return {percentile: np.nanpercentile(masked, percentile, axis=0) for percentile in (16, 50, 84)}


def _draw_percentile_spectra(axis, wave: np.ndarray, percentiles: dict[int, np.ndarray], pixels: np.ndarray,
                             colour: str = "k"):
    for percentile, style in ((16, "--"), (50, "-"), (84, "--")):
        axis.plot(wave[pixels], percentiles[percentile][pixels], color=colour, ls=style, lw=0.5, alpha=0.7,
                  label="50th" if percentile == 50 else ("16th, 84th" if percentile == 16 else None))


def plot_pixel_statistics(
    wave: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    statistics: dict[str, dict[str, np.ndarray]],
    *,
    source_label: str,
):
    """Figure 2 laid out as the paper's: CV MSE in the upper three panels and CV MD^2 in the lower three,
    the wavelength range split over the three, each over the 16/50/84 percentile training spectra, with
    dashed lines at each model's median level.

    Parameters
    ----------
    wave : ndarray, shape (n_pix,)
    flux, ivar : ndarray, shape (n_star, n_pix)
        Training spectra (bad pixels, ivar = 0, are left out of the percentiles).
    statistics : dict
        ``{"SLAM": {"cv_mse": ..., "cv_md": ...}, "The Cannon": {...}}``, arrays (n_pix,)
        in standardized flux units.
    """
    panels = wavelength_panels(wave)
    percentiles = percentile_spectra(flux, ivar)
    figure, axes = plt.subplots(6, 1, figsize=(12, 13), layout="constrained")
    colours = {"SLAM": "C3", "The Cannon": "C0"}   # the paper draws The Cannon in grey, the spectra in black
    quantities = (("cv_mse", lambda values: values, "CV MSE"), ("cv_md", np.square, r"CV MD$^2$"))
    for row, (key, transform, name) in enumerate(quantities):
        for column, pixels in enumerate(panels):
            axis = axes[3 * row + column]
            for model, values in statistics.items():
                shown = transform(np.asarray(values[key], dtype=float))
                median = float(np.nanmedian(shown))
                axis.plot(wave[pixels], shown[pixels], lw=0.6, color=colours.get(model),
                          label=f"{model} (median {median:.3g})")
                axis.axhline(median, color=colours.get(model), ls="--", lw=0.8)
            axis.set_yscale("log")
            axis.set_ylabel(name)
            axis.set_xlim(wave[pixels][0], wave[pixels][-1])
            spectra = axis.twinx()
            _draw_percentile_spectra(spectra, wave, percentiles, pixels)
            spectra.set_ylim(0, 1.4)
            spectra.set_ylabel("normalized flux", fontsize=7)
            if column == 0:
                axis.legend(fontsize=7, loc="lower left", ncol=2)
                if row == 0:
                    spectra.legend(fontsize=7, loc="lower right", title="training spectra, percentiles",
                                   title_fontsize=7)
    axes[-1].set_xlabel(r"wavelength [$\AA$]")
    annotate_source(figure, source_label)
    return figure


def _hist2d(axis, x, y, bins, vmax=None):
    finite = np.isfinite(x) & np.isfinite(y)
    counts, x_edges, y_edges = np.histogram2d(x[finite], y[finite], bins=bins)
    counts = np.where(counts > 0, counts, np.nan)
    return axis.pcolormesh(x_edges, y_edges, counts.T, norm=LogNorm(vmin=1, vmax=vmax), cmap="viridis")


def plot_kiel_and_one_to_one(
    reference: Table,
    predicted: Table,
    snr_bins: list[tuple[float, float]],
    snr: np.ndarray,
    label_names: list[str],
    *,
    reference_name: str,
    source_label: str,
):
    """Figure 3 as the paper's: per S/N bin, the Kiel diagram of the reference (catalogue) labels, that
    of SLAM's labels, then SLAM against the reference for every label.

    Parameters
    ----------
    reference, predicted : astropy Table
        Columns named after ``label_names`` (Teff and log g first), one row per test star.
    snr_bins : list of (low, high)
    snr : ndarray, shape (n_star,)
    """
    n_bin = len(snr_bins)
    n_kiel = 2   # the paper's first two panels: the reference labels' Kiel diagram, then SLAM's
    figure, axes = plt.subplots(n_bin, n_kiel + len(label_names), figsize=(3.0 * (n_kiel + len(label_names)), 2.6 * n_bin),
                                layout="constrained", squeeze=False)
    limits = {name: np.nanpercentile(np.asarray(reference[name], float), [0.5, 99.5]) for name in label_names}
    kiel_bins = (np.linspace(*limits[label_names[0]], 40), np.linspace(*limits[label_names[1]], 40))
    # One colour scale for every panel (the largest count of any 40 x 40 cell), so colours compare.
    vmax = 1.0
    for low, high in snr_bins:
        in_bin = (snr >= low) & (snr < high)
        for name in label_names:
            x, y = np.asarray(reference[name], float)[in_bin], np.asarray(predicted[name], float)[in_bin]
            finite = np.isfinite(x) & np.isfinite(y)
            edges = np.linspace(*limits[name], 40)
            vmax = max(vmax, float(np.histogram2d(x[finite], y[finite], bins=(edges, edges))[0].max(initial=1.0)))
    for row, (low, high) in enumerate(snr_bins):
        in_bin = (snr >= low) & (snr < high)
        for column, table in enumerate((reference, predicted)):
            teff, logg = (np.asarray(table[name], float)[in_bin] for name in label_names[:2])
            image = _hist2d(axes[row, column], teff, logg, bins=kiel_bins, vmax=vmax)
            axes[row, column].invert_xaxis()
            axes[row, column].invert_yaxis()
        axes[row, 0].set_ylabel(f"S/N$_g$ {low:g}–{high:g}\n{_tex(label_names[1])}")
        for column, name in enumerate(label_names, start=n_kiel):
            axis = axes[row, column]
            x = np.asarray(reference[name], float)[in_bin]
            y = np.asarray(predicted[name], float)[in_bin]
            edges = np.linspace(*limits[name], 40)
            _hist2d(axis, x, y, bins=(edges, edges), vmax=vmax)
            axis.plot(limits[name], limits[name], "r-", lw=0.6)
            difference = y - x
            ok = np.isfinite(difference)
            axis.text(0.04, 0.96, f"bias {np.mean(difference[ok]):.3g}\nscatter {np.std(difference[ok]):.3g}\nN = {ok.sum()}",
                      transform=axis.transAxes, va="top", fontsize=7)
            if row == 0:
                axis.set_title(f"{_tex(name)}: SLAM vs {reference_name}", fontsize=8)
            if row == n_bin - 1:
                axis.set_xlabel(f"{reference_name}")
        if row == 0:
            axes[row, 0].set_title(f"Kiel diagram: {reference_name}", fontsize=8)
            axes[row, 1].set_title("Kiel diagram: SLAM", fontsize=8)
        if row == n_bin - 1:
            axes[row, 0].set_xlabel(_tex(label_names[0]))
            axes[row, 1].set_xlabel(_tex(label_names[0]))
    colorbar = figure.colorbar(image, ax=axes, label="stars per cell", location="right", shrink=0.25, aspect=15)
    colorbar.set_ticks([tick for tick in (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000) if tick <= vmax],
                       labels=None)
    colorbar.ax.yaxis.set_major_formatter(FormatStrFormatter("%d"))
    colorbar.ax.yaxis.set_minor_formatter(NullFormatter())
    figure.supylabel("SLAM labels (one-to-one panels: y axis)", fontsize=9)
    annotate_source(figure, source_label)
    return figure


def plot_errors_vs_snr(
    table: Table,
    label_names: list[str],
    *,
    source_label: str,
    paper_scatter: dict[str, float] | None = None,
    comparison: dict[str, Table] | None = None,
    error_models: Table | None = None,
    reference_errors: Table | None = None,
):
    """Figure 4 (and 7): CV scatter, CV bias and median formal error against S/N, one panel per label.

    Parameters
    ----------
    table : astropy Table
        Output of :func:`slamlib.metrics.scatter_by_snr` with ``errors`` given.
    paper_scatter : dict, optional
        The paper's high-S/N scatter per label, drawn as a horizontal line.
    comparison : dict of name to Table, optional
        Other methods' scatter tables (e.g. The Cannon), drawn as dashed lines.
    error_models : astropy Table, optional
        Rows of :func:`slamlib.metrics.fit_error_models`; the fitted a exp(-b S/N) + c is drawn.
    reference_errors : astropy Table, optional
        Formal errors of synthetic reference stars against S/N (``star``, ``snr``,
        ``<label>_err_median``; :func:`slampaper.lasp_test.simulated_formal_errors`), the paper's
        red and purple curves of Figure 4.
    """
    n_label = len(label_names)
    n_column = min(n_label, 3)
    n_row = int(np.ceil(n_label / n_column))
    figure, axes = plt.subplots(n_row, n_column, figsize=(4.2 * n_column, 3.2 * n_row), layout="constrained", squeeze=False)
    snr = np.asarray(table["snr_median"], float)
    for axis, name in zip(axes.flat, label_names):
        axis.plot(snr, table[f"{name}_scatter"], "o-", color="C3", label="SLAM CV scatter")
        axis.plot(snr, np.abs(table[f"{name}_bias"]), "s:", color="C1", label="|SLAM CV bias|")
        if f"{name}_err_median" in table.colnames:
            axis.plot(snr, table[f"{name}_err_median"], "^--", color="C2", label="SLAM formal error (median)")
        for other_name, other in (comparison or {}).items():
            axis.plot(np.asarray(other["snr_median"], float), other[f"{name}_scatter"], "d--", color="C0",
                      label=f"{other_name} CV scatter")
        if error_models is not None:
            row = error_models[list(error_models["label"]).index(name)]
            grid = np.linspace(max(np.nanmin(snr), 1.0), np.nanmax(snr), 100)
            axis.plot(grid, row["a"] * np.exp(-row["b"] * grid) + row["c"], "k-", lw=0.8, label=r"$a\,e^{-b\,S/N}+c$")
        if reference_errors is not None and f"{name}_err_median" in reference_errors.colnames:
            stars = list(dict.fromkeys(str(star) for star in reference_errors["star"]))
            for star, colour in zip(stars, ("tab:red", "tab:purple")):
                rows = np.asarray(reference_errors["star"]) == star
                axis.plot(np.asarray(reference_errors["snr"], float)[rows],
                          np.asarray(reference_errors[f"{name}_err_median"], float)[rows], "-", color=colour, lw=1.0,
                          label=f"formal error, synthetic {star}")
        if paper_scatter and name in paper_scatter:
            axis.axhline(paper_scatter[name], color="0.5", lw=0.8, ls="-.", label="paper, high S/N")
        axis.set_xlabel(r"S/N$_g$")
        axis.set_ylabel(_tex(name))
        axis.set_yscale("log")
    for axis in list(axes.flat)[n_label:]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    annotate_source(figure, source_label)
    return figure


def plot_ensemble_errors(table: Table, label_names: list[str], *, source_label: str):
    """Formal, ensemble and total errors against the scatter they should describe, per S/N bin.

    Parameters
    ----------
    table : astropy Table
        Output of :func:`slampaper.lasp_test.ensemble_error_table`.
    """
    figure, axes = plt.subplots(1, len(label_names), figsize=(4.2 * len(label_names), 3.2), layout="constrained", squeeze=False)
    snr = np.asarray(table["snr_median"], float)
    reference = table.meta.get("reference", "reference labels")
    for axis, name in zip(axes.flat, label_names):
        axis.plot(snr, table[f"{name}_scatter"], "o-", color="C3", label=f"scatter vs {reference}")
        axis.plot(snr, table[f"{name}_err_formal"], "^--", color="C2", label="formal error (median)")
        axis.plot(snr, table[f"{name}_err_ensemble"], "v:", color="C4", label="CV sub-model ensemble (median)")
        axis.plot(snr, table[f"{name}_err_total"], "s-", color="C0", label="total: formal + ensemble (median)")
        axis.set_xlabel(r"S/N$_g$")
        axis.set_ylabel(_tex(name))
        axis.set_yscale("log")
    axes.flat[0].legend(fontsize=7)
    annotate_source(figure, source_label)
    return figure
