"""Reading and writing LAMOST low-resolution spectra (paper Section 3.1).

Every LAMOST LRS file layout is read by :func:`read_lamost`; the layout is detected
from the file itself, never from the release number:

* DR1: primary image (5, N): flux, ivar, sub-continuum, AND mask, OR mask; the
  wavelength is not stored but follows ``10**(COEFF0 + COEFF1 * i)``.
* DR2-DR7: primary image (5, N): flux, ivar, wavelength, AND mask, OR mask.
* DR9 onward: empty primary plus a binary table ``COADD`` with one row of vector
  columns ``FLUX, IVAR, WAVELENGTH, ANDMASK, ORMASK``.

:func:`write_lamost` writes any of the three layouts, so mock spectra go through the
same reader as real ones.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyWarning

__all__ = ["Spectrum", "SpectrumBatch", "read_lamost", "write_lamost", "LAYOUTS"]

#: File layouts :func:`write_lamost` can produce (and :func:`read_lamost` reads).
LAYOUTS = ("dr1", "dr5", "dr9")

SPEED_OF_LIGHT_KM_S = 299792.458

# Header keyword spellings differ between releases: (meta key, [keywords in order of preference]).
_HEADER_KEYS: dict[str, tuple[str, ...]] = {
    "obsid": ("OBSID",),
    "designation": ("DESIG",),
    "ra": ("RA",),
    "dec": ("DEC",),
    "z": ("Z",),
    "z_err": ("Z_ERR",),
    "snru": ("SNRU", "SN_U"),
    "snrg": ("SNRG", "SN_G"),
    "snrr": ("SNRR", "SN_R"),
    "snri": ("SNRI", "SN_I"),
    "snrz": ("SNRZ", "SN_Z"),
    "class": ("CLASS",),
    "subclass": ("SUBCLASS",),
    "lmjd": ("LMJD",),
    "mjd": ("MJD",),
    "planid": ("PLANID",),
    "spid": ("SPID",),
    "fiberid": ("FIBERID",),
    "data_release": ("DATA_V",),
}


@dataclass(frozen=True)
class Spectrum:
    """One spectrum on its own wavelength grid.

    Attributes
    ----------
    wave : ndarray, shape (n_pix,)
        Wavelength in Angstrom (vacuum; observed frame unless stated in ``meta``).
    flux : ndarray, shape (n_pix,)
        Flux (relative calibration for LAMOST).
    ivar : ndarray, shape (n_pix,)
        Inverse variance of ``flux``; 0 marks a pixel without information.
    ormask : ndarray, shape (n_pix,)
        LAMOST OR mask; non-zero marks a bad pixel.
    meta : dict
        Header information, at least ``obsid``, ``ra``, ``dec``, ``snrg``, ``z``
        (``None`` where the file does not say).
    """

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    ormask: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shapes = {name: np.shape(getattr(self, name)) for name in ("wave", "flux", "ivar", "ormask")}
        if len(set(shapes.values())) != 1 or len(shapes["wave"]) != 1:
            raise ValueError(
                f"Spectrum arrays must be 1-D and of equal length, got shapes {shapes}; "
                "use SpectrumBatch for several spectra on one grid."
            )

    @property
    def n_pix(self) -> int:
        """Number of pixels."""
        return int(self.wave.size)


@dataclass(frozen=True)
class SpectrumBatch:
    """Several spectra sharing one wavelength grid.

    Attributes
    ----------
    wave : ndarray, shape (n_pix,)
        Common wavelength grid in Angstrom.
    flux, ivar, ormask : ndarray, shape (n_spec, n_pix)
        Flux, inverse variance and OR mask of each spectrum.
    meta : astropy.table.Table
        One row per spectrum (``obsid``, ``ra``, ``dec``, ``snrg``, ``z``, ...).
    flux_norm : ndarray, shape (n_spec, n_pix), optional
        Continuum-normalized noiseless flux, when the generator knows it (mock spectra).
    """

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    ormask: np.ndarray
    meta: Table
    flux_norm: np.ndarray | None = None

    def __post_init__(self) -> None:
        n_pix = np.size(self.wave)
        for name in ("flux", "ivar", "ormask") + (("flux_norm",) if self.flux_norm is not None else ()):
            shape = np.shape(getattr(self, name))
            if len(shape) != 2 or shape[1] != n_pix or shape[0] != np.shape(self.flux)[0]:
                raise ValueError(
                    f"SpectrumBatch.{name} must have shape (n_spec, {n_pix}), got {shape}."
                )
        if len(self.meta) != np.shape(self.flux)[0]:
            raise ValueError(
                f"SpectrumBatch.meta has {len(self.meta)} rows for {np.shape(self.flux)[0]} spectra."
            )

    def __len__(self) -> int:
        return int(np.shape(self.flux)[0])

    def __getitem__(self, index: int) -> Spectrum:
        row = self.meta[index]
        meta = {name: _python_scalar(row[name]) for name in self.meta.colnames}
        return Spectrum(self.wave, self.flux[index], self.ivar[index], self.ormask[index], meta)

    def __iter__(self) -> Iterator[Spectrum]:
        return (self[i] for i in range(len(self)))


def _python_scalar(value: Any) -> Any:
    """Convert a numpy scalar from a table row to the matching Python scalar."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _meta_from_header(header: fits.Header, path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, keywords in _HEADER_KEYS.items():
        meta[key] = next((header[k] for k in keywords if k in header), None)
    if isinstance(meta["designation"], str) and meta["designation"].startswith("LAMOST "):
        meta["designation"] = meta["designation"][len("LAMOST "):]
    meta["rv"] = None if meta["z"] is None else float(meta["z"]) * SPEED_OF_LIGHT_KM_S
    meta["vacuum"] = bool(header.get("VACUUM", True))
    meta["filename"] = path.name
    return meta


def read_lamost(path: str | Path, *, obsid: int | None = None) -> Spectrum:
    """Read a LAMOST low-resolution spectrum of any release.

    Parameters
    ----------
    path : str or Path
        A ``spec-*.fits`` or ``spec-*.fits.gz`` file.
    obsid : int, optional
        The spectrum's obsid, for DR1 files whose header lacks ``OBSID``; overrides
        the header value when given.

    Returns
    -------
    Spectrum
        Wavelength in vacuum Angstrom in the observed (heliocentric) frame, flux,
        ivar, OR mask and ``meta`` with the keys ``obsid``, ``ra``, ``dec``,
        ``snrg``, ``z``, ``rv`` (km/s, c z), ``designation``, ``class``,
        ``subclass``, ``layout``, ``filename`` and more.

    Raises
    ------
    ValueError
        If the file is not a LAMOST low-resolution spectrum in a known layout.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a LAMOST spectrum file; name the FITS file itself "
                         "(e.g. a path column entry spectra/spec-....fits).")
    if not path.is_file():
        raise ValueError(f"LAMOST spectrum file {path} does not exist.")
    if path.stat().st_size == 0:
        raise ValueError(f"LAMOST spectrum file {path} is empty; download it again.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AstropyWarning)
        try:
            header, flux, ivar, wave, ormask, layout = _read_arrays(path)
        except _LayoutError:
            raise
        except (OSError, ValueError, TypeError, IndexError, KeyError, AttributeError, fits.VerifyError) as error:
            raise ValueError(f"{path} is not a readable FITS file ({error}); download it again.") from error
    problems = [str(w.message) for w in caught if issubclass(w.category, AstropyWarning)]
    if problems:
        raise ValueError(f"{path} looks corrupted or truncated ({problems[0]}); download it again.")
    meta = _meta_from_header(header, path)
    meta["layout"] = layout
    if obsid is not None:
        meta["obsid"] = int(obsid)
    return Spectrum(wave=wave, flux=flux, ivar=ivar, ormask=ormask, meta=meta)


class _LayoutError(ValueError):
    """A readable FITS file that is not a LAMOST spectrum in a known layout."""


def _read_arrays(path: Path) -> tuple[fits.Header, np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Header, flux, ivar, wave, OR mask and layout of a LAMOST file (raises _LayoutError)."""
    # Our own handle: astropy leaves its file open when a damaged header makes fits.open fail.
    with open(path, "rb") as handle, fits.open(handle, memmap=False) as hdul:
        header = hdul[0].header.copy()
        if len(hdul) > 1 and isinstance(hdul[1], fits.BinTableHDU):
            if hdul[1].data is None or len(hdul[1].data) == 0:
                raise _LayoutError(f"{path}: the {hdul[1].name or 'binary'} table has no rows.")
            row = hdul[1].data[0]
            names = {n.upper() for n in hdul[1].columns.names}
            missing = {"FLUX", "IVAR", "WAVELENGTH", "ORMASK"} - names
            if missing:
                raise _LayoutError(f"{path}: table layout lacks columns {sorted(missing)}.")
            flux, ivar, wave, ormask = (
                np.asarray(row[name], dtype=float) for name in ("FLUX", "IVAR", "WAVELENGTH", "ORMASK")
            )
            layout = "dr9"
        else:
            data = hdul[0].data
            if data is None or data.ndim != 2 or data.shape[0] < 5:
                raise _LayoutError(
                    f"{path}: expected a (5, n_pix) primary image or a COADD table, "
                    f"found data of shape {None if data is None else data.shape}."
                )
            data = np.asarray(data, dtype=float)
            flux, ivar, ormask = data[0], data[1], data[4]
            if "WAVELENGTH" in str(header.get("EXTEN0", "")).upper():
                wave = data[2]
                layout = "dr5"
            else:
                if "COEFF0" not in header or "COEFF1" not in header:
                    raise _LayoutError(f"{path}: no wavelength row and no COEFF0/COEFF1 keywords.")
                wave = 10.0 ** (header["COEFF0"] + header["COEFF1"] * np.arange(data.shape[1]))
                layout = "dr1"
    return header, flux, ivar, wave, ormask, layout


def _header_for(spectrum: Spectrum, layout: str) -> fits.Header:
    meta = spectrum.meta
    header = fits.Header()
    snr_keys = ("SN_U", "SN_G", "SN_R", "SN_I", "SN_Z") if layout == "dr1" else ("SNRU", "SNRG", "SNRR", "SNRI", "SNRZ")
    cards: list[tuple[str, Any, str]] = [
        ("OBSID", meta.get("obsid"), "Unique spectrum id"),
        ("DESIG", None if meta.get("designation") is None else f"LAMOST {meta['designation']}", "Designation"),
        ("RA", meta.get("ra"), "Right ascension [deg]"),
        ("DEC", meta.get("dec"), "Declination [deg]"),
        ("Z", meta.get("z"), "Redshift"),
        ("CLASS", meta.get("class"), "Spectral class"),
        ("SUBCLASS", meta.get("subclass"), "Spectral subclass"),
        ("Z_ERR", meta.get("z_err"), "Redshift error"),
        ("LMJD", meta.get("lmjd"), "Local modified Julian day"),
        ("MJD", meta.get("mjd"), "Modified Julian day"),
        ("PLANID", meta.get("planid"), "Plan name"),
        ("SPID", meta.get("spid"), "Spectrograph id"),
        ("FIBERID", meta.get("fiberid"), "Fiber id"),
    ] + [(keyword, meta.get(key), f"Signal-to-noise ratio, {key[-1]} band")
         for keyword, key in zip(snr_keys, ("snru", "snrg", "snrr", "snri", "snrz"))]
    if layout == "dr1":
        cards = [card for card in cards if card[0] != "OBSID"]  # DR1 headers lack OBSID
    else:
        cards.append(("DATA_V", {"dr5": "LAMOST DR5", "dr9": "LAMOST DR9"}[layout], "Data release"))
    for keyword, value, comment in cards:
        if value is not None:
            header[keyword] = (value, comment)
    header["VACUUM"] = (True, "Wavelengths are in vacuum")
    log_wave = np.log10(spectrum.wave)
    header["COEFF0"] = (float(log_wave[0]), "log10 of the first wavelength [Angstrom]")
    header["COEFF1"] = (float((log_wave[-1] - log_wave[0]) / max(log_wave.size - 1, 1)), "log10 wavelength step")
    return header


def write_lamost(spectrum: Spectrum, path: str | Path, *, layout: str = "dr5", overwrite: bool = False) -> Path:
    """Write a spectrum as a LAMOST-format FITS file.

    Parameters
    ----------
    spectrum : Spectrum
        The spectrum; ``meta`` supplies the header keywords (``obsid``, ``ra``,
        ``dec``, ``z``, ``snrg``...).
    path : str or Path
        Output file.
    layout : {"dr1", "dr5", "dr9"}
        ``"dr1"``: 5-row image without wavelength (COEFF0/COEFF1 define it; the
        grid must be log-linear); ``"dr5"``: 5-row image with a wavelength row
        (DR2-DR7); ``"dr9"``: binary table ``COADD``.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        The path written.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    path = Path(path)
    header = _header_for(spectrum, layout)
    andmask = np.zeros_like(spectrum.flux, dtype=np.float32)
    if layout == "dr1":
        grid = 10.0 ** (header["COEFF0"] + header["COEFF1"] * np.arange(spectrum.n_pix))
        if not np.allclose(grid, spectrum.wave, rtol=1e-6, atol=0):
            raise ValueError("The DR1 layout needs a log-linear wavelength grid; use layout='dr5'.")
        header["EXTEN0"] = "Flux Inverse Subcontinuum Andmask Ormask"
        subcontinuum = np.ones_like(spectrum.flux)
        rows = [spectrum.flux, spectrum.ivar, subcontinuum, andmask, spectrum.ormask]
        hdul = fits.HDUList([fits.PrimaryHDU(np.asarray(rows, dtype=np.float32), header=header)])
    elif layout == "dr5":
        header["EXTEN0"] = "Flux, Inverse, Wavelength, Andmask, Ormask"
        rows = [spectrum.flux, spectrum.ivar, spectrum.wave, andmask, spectrum.ormask]
        hdul = fits.HDUList([fits.PrimaryHDU(np.asarray(rows, dtype=np.float32), header=header)])
    else:
        n_pix = spectrum.n_pix
        columns = [
            fits.Column(name=name, format=f"{n_pix}E", array=np.asarray(values, dtype=np.float32)[None, :])
            for name, values in (
                ("FLUX", spectrum.flux), ("IVAR", spectrum.ivar), ("WAVELENGTH", spectrum.wave),
                ("ANDMASK", andmask), ("ORMASK", spectrum.ormask),
            )
        ]
        table = fits.BinTableHDU.from_columns(columns, name="COADD")
        hdul = fits.HDUList([fits.PrimaryHDU(header=header), table])
    hdul.writeto(path, overwrite=overwrite)
    return path
