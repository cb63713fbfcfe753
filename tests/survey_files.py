"""Tiny on-disk surveys for the command-line tests: a label table plus an arrays file.

None of this is real or mock-survey data: the spectra come from the analytic flux-label
relation of :mod:`synthetic_data`, on a made-up wavelength grid.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from astropy.table import Table
from synthetic_data import LABEL_NAMES, make_data

from slamlib.pipeline.catalog_input import write_arrays_file

WAVE_START = 4000.0


def write_survey(directory: Path, *, n_star: int = 40, n_pix: int = 30, seed: int = 0,
                 name: str = "survey") -> tuple[Path, Path]:
    """Write ``<name>.csv`` (obsid and labels) and ``<name>.npz`` (wave, flux, ivar); return both paths."""
    labels, flux, ivar = make_data(n_star=n_star, n_pix=n_pix, rng=np.random.default_rng(seed))
    table = Table({"obsid": np.arange(n_star, dtype=np.int64) + 1000 * (seed + 1)})
    for index, label in enumerate(LABEL_NAMES):
        table[label] = labels[:, index]
    directory.mkdir(parents=True, exist_ok=True)
    table_path = directory / f"{name}.csv"
    table.write(table_path, format="ascii.csv", overwrite=True)
    arrays_path = write_arrays_file(directory / f"{name}.npz", WAVE_START + np.arange(n_pix), flux, ivar)
    return table_path, arrays_path


def run_slam(*arguments: str | Path, check: bool = True, **options) -> subprocess.CompletedProcess:
    """Run ``python -m slamlib.pipeline.cli`` in a subprocess (the installed ``slam`` command does the same)."""
    command = [sys.executable, "-m", "slamlib.pipeline.cli", *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, check=check, **options)
