"""Figure 11 (Appendix A): SVR fits for varying hyperparameters, and the CV MSE map."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

from slampaper.hyperparameters import CvMap, ToyData, quadratic_curve, svr_curve
from slampaper.plotting.style import annotate_source

__all__ = ["plot_toy_fits", "plot_cv_mse_map"]

DEFAULT_SETTINGS = {"C": 10.0, "epsilon": 0.05, "gamma": 1.0}
VARIED = {"C": [0.01, 1.0, 100.0], "epsilon": [0.05, 0.5, 1.0], "gamma": [0.1, 1.0, 100.0]}


def plot_toy_fits(data: ToyData, *, title: str, source_label: str):
    """Three panels: the data with SVR fits varying C, epsilon and gamma (others at defaults),
    and the quadratic fit for comparison."""
    x_grid = np.linspace(data.x_std.min(), data.x_std.max(), 400)
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True, layout="constrained")
    for axis, (name, values) in zip(axes, VARIED.items()):
        axis.scatter(data.x_std, data.y_std, s=6, color="0.6", label="data")
        for value in values:
            settings = {**DEFAULT_SETTINGS, name: value}
            curve = svr_curve(data, x_grid, c=settings["C"], epsilon=settings["epsilon"], gamma=settings["gamma"])
            axis.plot(x_grid, curve, lw=1.5, label=f"{name} = {value:g}")
        axis.plot(x_grid, quadratic_curve(data, x_grid), "k--", lw=1, label="quadratic")
        fixed = ", ".join(f"{key}={val:g}" for key, val in DEFAULT_SETTINGS.items() if key != name)
        axis.set_title(f"varying {name} ({fixed})", fontsize=9)
        axis.set_xlabel("x (standardized)")
        axis.legend(fontsize=7, loc="lower left")
    axes[0].set_ylabel("y (standardized)")
    figure.suptitle(title)
    annotate_source(figure, source_label)
    return figure


def plot_cv_mse_map(maps: dict[str, CvMap], *, source_label: str):
    """One panel per data set: CV MSE over (log C, log gamma), the best point marked."""
    figure, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 4), layout="constrained", squeeze=False)
    for axis, (name, cv_map) in zip(axes[0], maps.items()):
        image = axis.pcolormesh(cv_map.log_gamma, cv_map.log_c, cv_map.cv_mse, shading="nearest", cmap="viridis",
                                  norm=LogNorm(vmin=cv_map.cv_mse.min(), vmax=cv_map.cv_mse.max()))
        axis.plot(cv_map.best_log_gamma, cv_map.best_log_c, "r*", ms=14, label=f"minimum {cv_map.best_cv_mse:.3f}")
        axis.set_xlabel(r"log$_{10}\,\gamma$")
        axis.set_ylabel(r"log$_{10}\,C$")
        axis.set_title(name)
        axis.legend(fontsize=8, loc="upper right")
        figure.colorbar(image, ax=axis, label="CV MSE")
    annotate_source(figure, source_label)
    return figure
