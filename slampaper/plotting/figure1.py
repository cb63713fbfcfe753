"""Figure 1: normalized flux against Teff at Mg b and H-alpha, coloured by log g, with a quadratic fit."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from slampaper.flux_teff import FluxTeffSample, quadratic_in_teff
from slampaper.plotting.style import annotate_source

__all__ = ["plot_flux_vs_teff"]


def plot_flux_vs_teff(sample: FluxTeffSample, *, source_label: str):
    """One panel per wavelength: flux against Teff coloured by log g, and the best quadratic."""
    names = list(sample.flux)
    figure, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.2), layout="constrained", squeeze=False)
    teff = np.asarray(sample.labels["teff"], float)
    grid = np.linspace(teff.min(), teff.max(), 300)
    for axis, name in zip(axes[0], names):
        points = axis.scatter(teff, sample.flux[name], c=sample.labels["logg"], s=8, cmap="viridis")
        coefficients, rms = quadratic_in_teff(teff, sample.flux[name])
        axis.plot(grid, np.polyval(coefficients, grid / 1000.0), "r-", lw=1.5, label=f"quadratic in Teff (rms {rms:.3f})")
        axis.set_title(f"{name} ({sample.wavelengths[name]:.0f} Å)")
        axis.set_xlabel(r"$T_\mathrm{eff}$ [K]")
        axis.set_ylabel("normalized flux")
        axis.legend(fontsize=8, loc="lower right")
    figure.colorbar(points, ax=axes[0, -1], label=r"$\log g$")
    annotate_source(figure, source_label)
    return figure
