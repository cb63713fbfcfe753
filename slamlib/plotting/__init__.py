"""One function per figure of the paper; notebooks only call these.

Every function returns a matplotlib Figure and takes a ``source_label`` naming the data
(e.g. "mock survey") that is written on the figure.
"""

from slamlib.plotting.appendix import plot_cv_mse_map, plot_toy_fits
from slamlib.plotting.figure1 import plot_flux_vs_teff
from slamlib.plotting.lasp import plot_errors_vs_snr, plot_kiel_and_one_to_one, plot_pixel_statistics
from slamlib.plotting.style import annotate_source

__all__ = ["plot_flux_vs_teff", "plot_toy_fits", "plot_cv_mse_map", "plot_pixel_statistics", "plot_kiel_and_one_to_one",
           "plot_errors_vs_snr", "annotate_source"]
