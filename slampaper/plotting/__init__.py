"""One function per figure of the paper; notebooks only call these.

Every function returns a matplotlib Figure and takes a ``source_label`` naming the data
(e.g. "mock survey") that is written on the figure.
"""

from slampaper.plotting.appendix import plot_cv_mse_map, plot_toy_fits
from slampaper.plotting.cod import plot_cods
from slampaper.plotting.figure1 import plot_flux_vs_teff
from slampaper.plotting.kgiants import (
                                      plot_alpha_vs_metallicity,
                                      plot_cv_scatter_vs_snr,
                                      plot_kiel_with_polygon,
                                      plot_label_distance_histogram,
                                      plot_one_to_one,
)
from slampaper.plotting.lasp import (
                                      plot_ensemble_errors,
                                      plot_errors_vs_snr,
                                      plot_kiel_and_one_to_one,
                                      plot_pixel_statistics,
)
from slampaper.plotting.style import annotate_source

__all__ = ["plot_cods", "plot_flux_vs_teff", "plot_toy_fits", "plot_cv_mse_map", "plot_pixel_statistics", "plot_kiel_and_one_to_one",
           "plot_errors_vs_snr", "plot_ensemble_errors", "plot_kiel_with_polygon", "plot_label_distance_histogram", "plot_cv_scatter_vs_snr",
           "plot_one_to_one", "plot_alpha_vs_metallicity", "annotate_source"]
