"""Write mock spectra as LAMOST-format FITS files (read back by :func:`slamlib.io.read_lamost`)."""

from __future__ import annotations

import math
from pathlib import Path

from astropy.io import fits

from slamlib.io import LAYOUTS, Spectrum, SpectrumBatch, write_lamost

__all__ = ["write_lamost_fits", "lamost_file_name"]


def lamost_file_name(meta: dict) -> str:
    """LAMOST file name ``spec-{lmjd}-{planid}_sp{spid:02d}-{fiberid:03d}.fits`` of a spectrum.

    Falls back to ``spec-mock-{obsid}.fits`` when the plate keywords are missing.
    """
    keys = ("lmjd", "planid", "spid", "fiberid")
    if all(meta.get(key) is not None for key in keys):
        return f"spec-{int(meta['lmjd']):05d}-{meta['planid']}_sp{int(meta['spid']):02d}-{int(meta['fiberid']):03d}.fits"
    if meta.get("obsid") is None:
        raise ValueError("a spectrum needs lmjd/planid/spid/fiberid or an obsid to be named.")
    return f"spec-mock-{int(meta['obsid'])}.fits"


def write_lamost_fits(
    spectra: SpectrumBatch,
    directory: str | Path,
    *,
    layout: str = "dr5",
    overwrite: bool = False,
) -> list[Path]:
    """Write every spectrum of a batch as its own LAMOST-format FITS file.

    Parameters
    ----------
    spectra : SpectrumBatch
        From :func:`slamlib.mock.synthesize` (``meta`` supplies OBSID, RA, DEC, Z,
        SNRG, ... and the plate keywords used in the file name).
    directory : str or Path
        Output directory (created if missing).
    layout : {"dr1", "dr5", "dr9"}
        File layout, see :func:`slamlib.io.write_lamost`; default the DR2-DR7 image with
        a wavelength row.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of Path
        The files written, in the order of the batch.

    Header keywords whose value is NaN (e.g. the S/N of a band without good pixels) are
    left out. LMJD, MJD, PLANID, SPID, FIBERID, Z_ERR, HELIO and ORIGIN ('slamlib.mock')
    are added to what :func:`slamlib.io.write_lamost` writes.

    Raises
    ------
    ValueError
        For an unknown layout or two spectra that would get the same file name.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spectra_list = list(spectra)
    names = [lamost_file_name(spectrum.meta) for spectrum in spectra_list]
    if len(set(names)) != len(names):
        raise ValueError("several spectra map to the same LAMOST file name; give them distinct plate/fibre ids.")
    paths = []
    for spectrum, name in zip(spectra_list, names):
        # FITS headers cannot hold NaN (e.g. the S/N of a band without good pixels): drop those keywords.
        clean = {
            key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in spectrum.meta.items()
        }
        spectrum = Spectrum(spectrum.wave, spectrum.flux, spectrum.ivar, spectrum.ormask, clean)
        path = write_lamost(spectrum, directory / name, layout=layout, overwrite=overwrite)
        meta = spectrum.meta
        extra = [
            ("LMJD", meta.get("lmjd"), "Local modified Julian day"),
            ("MJD", meta.get("mjd"), "Modified Julian day"),
            ("PLANID", meta.get("planid"), "Plan id"),
            ("SPID", meta.get("spid"), "Spectrograph id"),
            ("FIBERID", meta.get("fiberid"), "Fibre id"),
            ("Z_ERR", meta.get("z_err"), "Redshift error"),
        ]
        with fits.open(path, mode="update") as hdul:
            header = hdul[0].header
            for keyword, value, comment in extra:
                if value is not None:
                    header[keyword] = (value, comment)
            header["HELIO"] = (True, "Heliocentric wavelengths")
            header["ORIGIN"] = ("slamlib.mock", "Mock spectrum, not an observation")
        paths.append(Path(path))
    return paths
