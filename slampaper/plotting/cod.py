"""Figure 10 (paper Section 6): coefficients of dependence per pixel, with line identifications."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from slamlib.cod import CodResult
from slampaper.plotting.lasp import LABEL_TEX
from slampaper.plotting.style import annotate_source

__all__ = ["plot_cods", "LINE_IDENTIFICATIONS"]

def _label_name(name: str) -> str:
    """The label's symbol without its unit (CODs are dimensionless)."""
    return LABEL_TEX.get(name, name).replace(" [K]", "")


#: Features marked on Figure 10 (vacuum Angstrom).
LINE_IDENTIFICATIONS = {
    "Ca II K": 3934.8, "Ca II H": 3969.6, r"H$\delta$": 4102.9, "CN": 4216.0, "Ca I": 4227.9, "G band": 4300.0,
    r"H$\gamma$": 4341.7, "Fe I": 4384.8, r"H$\beta$": 4862.7, "Mg b": 5174.0, "Fe I ": 5271.0, "Fe I  ": 5329.0,
    "MgH": 5211.0, "C$_2$": 5165.0,
}


def plot_cods(wave: np.ndarray, cods: CodResult, *, source_label: str, lines: dict[str, float] | None = None):
    """One panel with COD_full and the stacked COD_l of every label, then one panel per label."""
    lines = LINE_IDENTIFICATIONS if lines is None else lines
    n_label = len(cods.label_names)
    figure, axes = plt.subplots(n_label + 1, 1, figsize=(13, 1.9 * (n_label + 1)), sharex=True, layout="constrained")
    cod_label = np.nan_to_num(np.clip(cods.cod_label, 0, None))
    axes[0].stackplot(wave, cod_label, labels=[_label_name(n) for n in cods.label_names], alpha=0.8)
    axes[0].plot(wave, cods.cod_full, "k-", lw=0.6, label=r"COD$_\mathrm{full}$")
    axes[0].set_ylabel("COD")
    axes[0].set_ylim(0, 1.05)
    axes[0].legend(fontsize=7, ncol=n_label + 1, loc="upper right")
    for axis, index in zip(axes[1:], range(n_label)):
        axis.plot(wave, cods.cod_label[index], lw=0.6, color=f"C{index}")
        axis.set_ylabel(f"COD of {_label_name(cods.label_names[index])}", fontsize=8)
        axis.set_ylim(0, max(0.05, float(np.nanmax(cods.cod_label[index])) * 1.1))
    for axis in axes:
        for name, wavelength in lines.items():
            if wave[0] <= wavelength <= wave[-1]:
                axis.axvline(wavelength, color="0.6", lw=0.5, ls=":")
    for name, wavelength in lines.items():
        if wave[0] <= wavelength <= wave[-1]:
            axes[0].text(wavelength, 1.06, name.strip(), rotation=90, fontsize=7, ha="center", va="bottom")
    axes[-1].set_xlabel(r"wavelength [$\AA$]")
    annotate_source(figure, source_label)
    return figure
