"""Survey inputs for the command line: label tables, spectrum files and flux/ivar array files.

A *table* (FITS, CSV or ECSV) has one row per star: label columns for training and,
optionally, a column of spectrum file paths (relative paths are taken relative to the
table's folder). An *arrays file* (``.npz``) holds spectra that are already
continuum-normalized on one wavelength grid:

* ``wave``: shape (n_pix,), Angstrom, strictly increasing;
* ``flux``, ``ivar``: shape (n_spec, n_pix); ``ivar <= 0`` or non-finite marks a bad pixel.

Its rows are in the order of the table's rows. Arrays files are read chunk by chunk
without loading the whole file (:class:`ArraysFile`), so a catalogue of millions of spectra
fits in memory a chunk at a time.

Reading never stops at a bad spectrum: :func:`load_spectrum_files` returns, per file,
either the prepared spectrum or the reason it could not be used (``"unreadable file: ..."``,
``"unusable spectrum: ..."``).
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from slamlib.files import atomic_write
from slamlib.io import SPEED_OF_LIGHT_KM_S, read_lamost
from slamlib.metrics import median_snr
from slamlib.pipeline.progress import make_progress_bar
from slamlib.preprocess import prepare

__all__ = ["ArraysFile", "PreparedInput", "file_fingerprint", "load_spectrum_files", "median_snr", "read_table",
           "spectrum_paths", "write_arrays_file"]

_LOG = logging.getLogger(__name__)
_TABLE_FORMATS = {".fits": "fits", ".fit": "fits", ".fts": "fits", ".csv": "ascii.csv", ".ecsv": "ascii.ecsv"}


@dataclass(frozen=True)
class PreparedInput:
    """Normalized spectra on the model grid, with the reason for every unusable one.

    Attributes
    ----------
    flux, ivar : ndarray, shape (n_spec, n_pix)
        Normalized flux and inverse variance; rows that could not be read or prepared
        hold flux 1 and ivar 0.
    reason : ndarray of str, shape (n_spec,)
        Empty for usable rows, otherwise why the row is unusable.
    """

    flux: np.ndarray
    ivar: np.ndarray
    reason: np.ndarray

    def __len__(self) -> int:
        return int(self.flux.shape[0])


def read_table(path: str | Path) -> Table:
    """Read a FITS, CSV or ECSV table (format from the file name).

    Raises
    ------
    ValueError
        If the file is missing, empty, of an unknown kind or unreadable, or has no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"table {path} does not exist.")
    if path.stat().st_size == 0:
        raise ValueError(f"table {path} is an empty file.")
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".fz") and len(suffixes) > 1:
        suffixes = suffixes[:-1]
    table_format = _TABLE_FORMATS.get(suffixes[-1] if suffixes else "")
    if table_format is None:
        raise ValueError(f"table {path}: unknown file type; use .fits, .csv or .ecsv.")
    try:
        table = Table.read(path, format=table_format)
    except Exception as error:  # astropy raises many types for damaged files
        raise ValueError(
            f"table {path} could not be read as {table_format} ({type(error).__name__}: {error})."
        ) from error
    if len(table) == 0:
        raise ValueError(f"table {path} has no rows.")
    return table


def spectrum_paths(table: Table, column: str, table_path: str | Path) -> list[Path]:
    """The spectrum file of every row; relative paths are relative to the table's folder."""
    if column not in table.colnames:
        raise ValueError(f"the table has no column {column!r} of spectrum paths; its columns are {table.colnames}.")
    base = Path(table_path).resolve().parent
    paths = []
    for value in table[column]:
        text = "" if np.ma.is_masked(value) else str(value).strip()
        path = Path(text)
        paths.append(path if path.is_absolute() or not text else base / path)
    return paths


def _read_npy_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype of an ``.npy`` stream, leaving it at the first data byte."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f"npy format version {version} is not supported; save the arrays with numpy.savez.")


class ArraysFile:
    """A flux/ivar arrays file (``.npz``), read by rows without loading it whole.

    Parameters
    ----------
    path : str or Path

    Attributes
    ----------
    wave : ndarray, shape (n_pix,)
    n_spec, n_pix : int

    Raises
    ------
    ValueError
        If the file is missing, not an npz archive, lacks ``wave``, ``flux`` or ``ivar``,
        holds object arrays, or the shapes disagree.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"arrays file {self.path} does not exist.")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as error:
            raise ValueError(f"{self.path} is not an npz arrays file ({error}).") from error
        try:
            self._check()
        except BaseException:
            self._zip.close()
            raise

    def _check(self) -> None:
        members = {name[:-4] for name in self._zip.namelist() if name.endswith(".npy")}
        missing = {"wave", "flux", "ivar"} - members
        if missing:
            raise ValueError(
                f"arrays file {self.path} lacks {sorted(missing)}; it needs wave (n_pix,), flux and ivar "
                "(n_spec, n_pix) of continuum-normalized spectra."
            )
        self._headers = {name: self._header(name) for name in ("flux", "ivar")}
        try:
            with self._zip.open("wave.npy") as handle:
                self.wave = np.asarray(np.lib.format.read_array(handle, allow_pickle=False), dtype=float)
        except (ValueError, OSError, zipfile.BadZipFile) as error:
            raise ValueError(f"{self.path}: wave is not a readable numeric array ({error}).") from error
        shape = self._headers["flux"][0]
        if len(shape) != 2 or self._headers["ivar"][0] != shape:
            raise ValueError(f"{self.path}: flux {shape} and ivar {self._headers['ivar'][0]} must be 2-D of one shape.")
        if self.wave.shape != (shape[1],):
            raise ValueError(f"{self.path}: wave has shape {self.wave.shape}, flux has {shape[1]} pixels.")
        if not (np.all(np.isfinite(self.wave)) and np.all(np.diff(self.wave) > 0)):
            raise ValueError(f"{self.path}: wave must be finite and strictly increasing.")
        self.n_spec, self.n_pix = int(shape[0]), int(shape[1])

    def _header(self, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
        with self._zip.open(f"{name}.npy") as handle:
            try:
                shape, fortran_order, dtype = _read_npy_header(handle)
            except ValueError as error:
                raise ValueError(f"{self.path}: member {name} is not a numpy array ({error}).") from error
        if dtype.kind not in "biuf":
            raise ValueError(f"{self.path}: {name} has dtype {dtype}; arrays files hold plain numbers only.")
        return shape, fortran_order, dtype

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``start:stop`` of flux and ivar, as float arrays."""
        return self._read_rows("flux", start, stop), self._read_rows("ivar", start, stop)

    def _read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        shape, fortran_order, dtype = self._headers[name]
        start, stop = max(0, start), min(stop, shape[0])
        row_bytes = shape[1] * dtype.itemsize
        try:
            with self._zip.open(f"{name}.npy") as handle:
                if fortran_order:
                    return np.asarray(np.lib.format.read_array(handle, allow_pickle=False)[start:stop], dtype=float)
                _read_npy_header(handle)
                handle.seek(handle.tell() + start * row_bytes)
                buffer = handle.read((stop - start) * row_bytes)
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
            raise ValueError(
                f"{self.path}: {name} rows {start}-{stop} are unreadable ({error}); the file is damaged."
            ) from error
        if len(buffer) != (stop - start) * row_bytes:
            raise ValueError(f"{self.path}: {name} is truncated (rows {start}-{stop}).")
        return np.frombuffer(buffer, dtype=dtype).reshape(stop - start, shape[1]).astype(float)

    def close(self) -> None:
        """Close the archive."""
        self._zip.close()

    def __enter__(self) -> "ArraysFile":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def write_arrays_file(path: str | Path, wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray) -> Path:
    """Write an arrays file (uncompressed npz, written to a temporary name and renamed)."""
    arrays = {"wave": np.asarray(wave, dtype=float), "flux": np.asarray(flux, dtype=float),
              "ivar": np.asarray(ivar, dtype=float)}
    return atomic_write(path, lambda handle: np.savez(handle, **arrays))


def file_fingerprint(paths: list[Path]) -> str:
    """SHA-256 over the paths, sizes and modification times of files (missing files included)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            status = path.stat()
            digest.update(f"{path}|{status.st_size}|{status.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()


def load_spectrum_files(
    paths: list[Path], wave_grid: np.ndarray, *, n_jobs: int = 1, progress: bool = False
) -> PreparedInput:
    """Read LAMOST spectrum files and prepare them onto ``wave_grid``, never stopping at a bad one.

    Parameters
    ----------
    paths : list of Path
    wave_grid : ndarray, shape (n_pix,)
        The common wavelength grid (the model's).
    n_jobs : int
        Processes for :func:`slamlib.preprocess.prepare`.
    progress : bool
        Show a progress bar over the files (subject to :func:`slamlib.pipeline.progress.progress_bars`).

    Returns
    -------
    PreparedInput
        A file that cannot be read gets reason ``"unreadable file: ..."``; a spectrum that
        cannot be prepared (e.g. unusable wavelengths) ``"unusable spectrum: ..."``.
    """
    n_spec, n_pix = len(paths), np.size(wave_grid)
    flux = np.ones((n_spec, n_pix))
    ivar = np.zeros((n_spec, n_pix))
    reason = np.full(n_spec, "", dtype=object)
    spectra, positions = [], []
    bar = make_progress_bar(total=n_spec, unit="file", desc="reading") if progress else None
    for position, path in enumerate(paths):
        if bar is not None:
            bar.update(1)
        try:
            if path == Path(""):
                raise ValueError("no file name given")
            spectra.append(read_lamost(path))
            positions.append(position)
        except Exception as error:  # any damaged file must become a flagged row, never a crash
            reason[position] = f"unreadable file: {error}"
    if bar is not None:
        bar.close()
    if spectra:
        spectrum_of_row = {row: index for index, row in enumerate(positions)}
        try:
            prepared = [prepare(spectra, wave_grid, n_jobs=n_jobs)]
            groups = [positions]
        except ValueError:
            prepared, groups = [], []
            for position, spectrum in zip(positions, spectra):
                try:
                    prepared.append(prepare(spectrum, wave_grid))
                    groups.append([position])
                except ValueError as error:
                    reason[position] = f"unusable spectrum: {error}"
        for result, group in zip(prepared, groups):
            flux[group] = result.flux
            ivar[group] = result.ivar
            for row, rv_km_s in zip(group, result.rv_km_s):
                spectrum = spectra[spectrum_of_row[row]]
                if not np.any(ivar[row] > 0) and not reason[row]:
                    reason[row] = _coverage_reason(spectrum, float(rv_km_s), wave_grid)
    return PreparedInput(flux, ivar, reason.astype(str))


def _coverage_reason(spectrum, rv_km_s: float, wave_grid: np.ndarray) -> str:
    """Why a read spectrum has no good pixel on the grid: its wavelengths miss the grid, or its pixels are bad."""
    wave = np.asarray(spectrum.wave, dtype=float)
    finite = wave[np.isfinite(wave)]
    if finite.size == 0:
        return "unusable spectrum: no finite wavelength"
    rest = finite / (1.0 + rv_km_s / SPEED_OF_LIGHT_KM_S)
    grid_low, grid_high = float(np.min(wave_grid)), float(np.max(wave_grid))
    if rest.max() < grid_low or rest.min() > grid_high:
        return (f"unusable spectrum: its wavelengths ({rest.min():.0f}-{rest.max():.0f} A in the rest frame, "
                f"rv {rv_km_s:.4g} km/s) do not overlap the model grid ({grid_low:.0f}-{grid_high:.0f} A); check "
                "the file's wavelength calibration and its redshift (header Z).")
    return ("unusable spectrum: no good pixel on the model grid (ivar <= 0, masked or non-finite everywhere there); "
            "check the file's ivar and OR mask.")
