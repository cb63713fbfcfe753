"""Figure 10 (paper Section 6): coefficients of dependence per pixel, with line identifications."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from slamlib.cod import CodResult
from slampaper.plotting.lasp import LABEL_TEX, percentile_spectra, wavelength_panels
from slampaper.plotting.style import annotate_source

__all__ = ["plot_cods", "LINE_IDENTIFICATIONS"]

def _label_name(name: str) -> str:
    """The label's symbol without its unit (CODs are dimensionless)."""
    return LABEL_TEX.get(name, name).replace(" [K]", "")


#: Features marked on Figure 10 (vacuum Angstrom).
LINE_IDENTIFICATIONS = {
    "Ca II K": 3934.8, "Ca II H": 3969.6, r"H$\delta$": 4102.9, "CN": 4216.0, "Ca I": 4227.9, "G band": 4300.0,
    r"H$\gamma$": 4341.7, "Fe I": 4384.8, r"H$\beta$": 4862.7, "Mg b": 5174.0, "Fe I ": 5271.0, "Fe I  ": 5329.0,
    "MgH": 5211.0, "C$_2$": 5165.0, "Fe I   ": 5709.0, "Fe I    ": 5782.0,
}


def plot_cods(wave: np.ndarray, cods: CodResult, *, flux: np.ndarray, ivar: np.ndarray, source_label: str,
              lines: dict[str, float] | None = None):
    """Figure 10 laid out as the paper's: the wavelength range over three panels, each with the filled
    COD of every label (stacked, so their top is COD_full) over the 16/50/84 percentile spectra of the
    training set, and the features the paper names.

    Parameters
    ----------
    wave : ndarray, shape (n_pix,)
    cods : CodResult
    flux, ivar : ndarray, shape (n_star, n_pix)
        The training spectra (for the percentile spectra).
    source_label : str
    lines : dict of str to float, optional
        Features to mark (default :data:`LINE_IDENTIFICATIONS`).
    """
    lines = LINE_IDENTIFICATIONS if lines is None else lines
    panels = wavelength_panels(wave)
    percentiles = percentile_spectra(flux, ivar)
    cod_label = np.nan_to_num(np.clip(cods.cod_label, 0, None))
    figure, axes = plt.subplots(len(panels), 1, figsize=(13, 3.0 * len(panels)), layout="constrained")
    for axis, pixels in zip(axes, panels):
        axis.stackplot(wave[pixels], cod_label[:, pixels], labels=[f"COD({_label_name(n)})" for n in cods.label_names],
                       colors=[f"C{index}" for index in range(len(cods.label_names))], alpha=0.75)
        for percentile, style in ((16, "--"), (50, "-"), (84, "--")):
            axis.plot(wave[pixels], percentiles[percentile][pixels], color="hotpink", ls=style, lw=0.7,
                      label="training spectra: 50th" if percentile == 50 else ("16th, 84th percentiles" if percentile == 16 else None))
        axis.set_xlim(wave[pixels][0], wave[pixels][-1])
        axis.set_ylim(0, 1.35)
        axis.set_ylabel("COD, normalized flux")
        for name, wavelength in lines.items():
            if wave[pixels][0] <= wavelength <= wave[pixels][-1]:
                axis.axvline(wavelength, color="0.5", lw=0.5, ls=":")
                axis.text(wavelength, 1.33, name.strip(), rotation=90, fontsize=7, ha="center", va="top")
    axes[0].legend(fontsize=7, ncol=len(cods.label_names) + 2, loc="lower left")
    axes[-1].set_xlabel(r"wavelength [$\AA$]")
    annotate_source(figure, source_label)
    return figure
