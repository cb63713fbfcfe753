"""Tests of slamlib.io: reading every LAMOST layout, writing and reading back, bad files.

The real files are in ../shared/data (8 DR1 spectra with their catalogue labels, and one
DR6, DR7 and DR9 file); tests that need them skip when the folder is absent. The
expected values come from labels.csv, the folders' README tables, and the FITS files
read directly with astropy, never from slamlib itself.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.table import Table

from slamlib.io import (
    LAYOUTS,
    SPEED_OF_LIGHT_KM_S,
    Spectrum,
    SpectrumBatch,
    read_lamost,
    write_lamost,
)

#: From ../shared/data/lamost_layouts/README.md: file suffix -> (layout, DATA_V, n_pix, OBSID, SNRG, subclass).
LAYOUT_TABLE = {
    "dr6": ("dr5", "LAMOST DR6", 3909, 359910161, 87.6, "F5"),
    "dr7": ("dr5", "LAMOST DR7", 3908, 101001, 12.2, "G7"),
    "dr9": ("dr9", "LAMOST DR9", 3908, 101013, 5.6, "A2"),
}


def dr1_labels(lamost_dr1_dir: Path) -> list[dict[str, str]]:
    with open(lamost_dr1_dir / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    return rows


def layout_file(lamost_layouts_dir: Path, release: str) -> Path:
    matches = sorted(lamost_layouts_dir.glob(f"*_{release}.fits.gz"))
    assert len(matches) == 1, f"expected one *_{release}.fits.gz in {lamost_layouts_dir}"
    return matches[0]


# --------------------------------------------------------------------------------------
# DR1 files
# --------------------------------------------------------------------------------------
def test_read_dr1_sample_matches_file_and_catalogue(lamost_dr1_dir):
    for row in dr1_labels(lamost_dr1_dir):
        path = lamost_dr1_dir / row["filename"]
        spectrum = read_lamost(path)
        with fits.open(path) as hdul:
            header = hdul[0].header
            data = np.asarray(hdul[0].data, dtype=float)
        assert spectrum.meta["layout"] == "dr1"
        assert spectrum.n_pix == data.shape[1] == 3904
        # the wavelength follows COEFF0/COEFF1 (DR1 files store no wavelength row)
        expected_wave = 10.0 ** (header["COEFF0"] + header["COEFF1"] * np.arange(3904))
        np.testing.assert_allclose(spectrum.wave, expected_wave, rtol=1e-12)
        assert 3699.9 < spectrum.wave[0] < 3700.1 and 9088.5 < spectrum.wave[-1] < 9088.8
        np.testing.assert_array_equal(spectrum.flux, data[0])
        np.testing.assert_array_equal(spectrum.ivar, data[1])
        np.testing.assert_array_equal(spectrum.ormask, data[4])
        # header values against the catalogue
        meta = spectrum.meta
        assert meta["obsid"] is None  # DR1 headers have no OBSID
        assert meta["designation"] == row["designation"]
        assert meta["subclass"] == row["subclass"]
        assert meta["ra"] == pytest.approx(float(row["ra"]), abs=1e-6)
        assert meta["dec"] == pytest.approx(float(row["dec"]), abs=1e-6)
        assert meta["snrg"] == pytest.approx(float(row["snrg"]), abs=0.005)
        assert meta["z"] == header["Z"]
        assert meta["z"] * SPEED_OF_LIGHT_KM_S == pytest.approx(float(row["rv"]), abs=0.1)
        assert meta["rv"] == pytest.approx(float(row["rv"]), abs=0.1)
        assert meta["filename"] == row["filename"]
        assert meta["vacuum"] is True
        assert (meta["planid"], meta["spid"], meta["fiberid"]) == ("B6212", 6, int(row["filename"][-8:-5]))


def test_read_dr1_with_obsid(lamost_dr1_dir):
    row = dr1_labels(lamost_dr1_dir)[0]
    spectrum = read_lamost(lamost_dr1_dir / row["filename"], obsid=int(row["obsid"]))
    assert spectrum.meta["obsid"] == int(row["obsid"]) and isinstance(spectrum.meta["obsid"], int)
    # a str path works as well as a Path
    assert read_lamost(str(lamost_dr1_dir / row["filename"])).n_pix == 3904


# --------------------------------------------------------------------------------------
# DR6, DR7, DR9 files
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("release", sorted(LAYOUT_TABLE))
def test_read_later_layouts(lamost_layouts_dir, release):
    layout, data_release, n_pix, obsid, snrg, subclass = LAYOUT_TABLE[release]
    path = layout_file(lamost_layouts_dir, release)
    spectrum = read_lamost(path)
    assert spectrum.meta["layout"] == layout
    assert spectrum.n_pix == n_pix
    assert spectrum.meta["obsid"] == obsid
    assert spectrum.meta["snrg"] == pytest.approx(snrg, abs=0.05)
    assert spectrum.meta["data_release"] == data_release
    assert spectrum.meta["subclass"] == subclass
    with fits.open(path) as hdul:
        if layout == "dr9":
            row = hdul["COADD"].data[0]
            flux, ivar, wave = (np.asarray(row[name], dtype=float) for name in ("FLUX", "IVAR", "WAVELENGTH"))
        else:
            data = np.asarray(hdul[0].data, dtype=float)
            flux, ivar, wave = data[0], data[1], data[2]
        z = hdul[0].header["Z"]
    np.testing.assert_array_equal(spectrum.wave, wave)
    np.testing.assert_array_equal(spectrum.flux, flux)
    np.testing.assert_array_equal(spectrum.ivar, ivar)
    # the stored wavelengths follow the log-linear LAMOST grid (to <= 0.003 A)
    np.testing.assert_allclose(spectrum.wave, 10 ** (3.5682 + 1e-4 * np.arange(n_pix)), atol=0.003)
    assert spectrum.meta["rv"] == pytest.approx(z * SPEED_OF_LIGHT_KM_S, rel=1e-12)


# --------------------------------------------------------------------------------------
# Writing and reading back
# --------------------------------------------------------------------------------------
def synthetic_spectrum(n_pix: int = 500) -> Spectrum:
    """A made-up spectrum on LAMOST's log-linear grid (not real data)."""
    rng = np.random.default_rng(7)
    wave = 10.0 ** (3.5682 + 1e-4 * np.arange(n_pix))
    ormask = np.zeros(n_pix)
    ormask[[3, 40]] = [1.0, 16.0]
    meta = {
        "obsid": 123456789,
        "designation": "J000000.00+000000.0",
        "ra": 12.345678,
        "dec": -45.678901,
        "z": 1.2345e-4,
        "class": "STAR",
        "subclass": "G2",
        "snru": 5.5,
        "snrg": 20.25,
        "snrr": 30.5,
        "snri": 35.0,
        "snrz": 25.75,
    }
    return Spectrum(wave, rng.normal(100.0, 5.0, n_pix), rng.uniform(0.0, 0.04, n_pix), ormask, meta)


#: Keys the writer stores in every layout (OBSID is absent from DR1-layout headers).
WRITTEN_KEYS = ("designation", "ra", "dec", "z", "class", "subclass", "snru", "snrg", "snrr", "snri", "snrz")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_write_and_read_back_synthetic(tmp_path, layout):
    spectrum = synthetic_spectrum()
    path = write_lamost(spectrum, tmp_path / f"spec-{layout}.fits", layout=layout)
    assert path == tmp_path / f"spec-{layout}.fits" and path.is_file()
    back = read_lamost(path)
    assert back.meta["layout"] == layout
    assert back.n_pix == spectrum.n_pix
    np.testing.assert_array_equal(back.flux, spectrum.flux.astype(np.float32))
    np.testing.assert_array_equal(back.ivar, spectrum.ivar.astype(np.float32))
    np.testing.assert_array_equal(back.ormask, spectrum.ormask.astype(np.float32))
    np.testing.assert_allclose(back.wave, spectrum.wave, rtol=2**-23)
    for key in WRITTEN_KEYS:
        assert back.meta[key] == spectrum.meta[key], key
    assert back.meta["obsid"] == (None if layout == "dr1" else spectrum.meta["obsid"])
    assert back.meta["rv"] == pytest.approx(spectrum.meta["z"] * SPEED_OF_LIGHT_KM_S, rel=1e-12)
    assert back.meta["vacuum"] is True
    assert back.meta["filename"] == path.name


@pytest.mark.parametrize("layout", LAYOUTS)
def test_write_and_read_back_real_dr1(lamost_dr1_dir, tmp_path, layout):
    row = dr1_labels(lamost_dr1_dir)[0]
    spectrum = read_lamost(lamost_dr1_dir / row["filename"], obsid=int(row["obsid"]))
    back = read_lamost(write_lamost(spectrum, tmp_path / "spec.fits.gz", layout=layout))
    np.testing.assert_array_equal(back.flux, spectrum.flux)  # the file held float32 already
    np.testing.assert_array_equal(back.ivar, spectrum.ivar)
    np.testing.assert_allclose(back.wave, spectrum.wave, rtol=2**-23)
    for key in WRITTEN_KEYS:
        assert back.meta[key] == spectrum.meta[key], key


def test_write_refuses_dr1_layout_for_a_linear_grid(tmp_path):
    spectrum = synthetic_spectrum()
    linear = Spectrum(np.linspace(3700.0, 9000.0, 500), spectrum.flux, spectrum.ivar, spectrum.ormask, {})
    with pytest.raises(ValueError, match="log-linear"):
        write_lamost(linear, tmp_path / "linear.fits", layout="dr1")
    # the layouts with a wavelength row take any grid
    back = read_lamost(write_lamost(linear, tmp_path / "linear.fits", layout="dr5"))
    np.testing.assert_allclose(back.wave, linear.wave, rtol=2**-23)


def test_write_rejects_unknown_layout(tmp_path):
    with pytest.raises(ValueError, match="layout must be one of"):
        write_lamost(synthetic_spectrum(), tmp_path / "x.fits", layout="dr7")


def test_dr1_layout_keeps_any_log_linear_grid(tmp_path):
    n_pix = 3000
    wave = 10.0 ** (3.61234567 + 1.23456789e-4 * np.arange(n_pix))
    spectrum = Spectrum(wave, np.ones(n_pix), np.ones(n_pix), np.zeros(n_pix), {})
    back = read_lamost(write_lamost(spectrum, tmp_path / "grid.fits", layout="dr1"))
    assert np.max(np.abs(back.wave - wave)) < 1e-3


def test_round_trip_keeps_plate_keywords(lamost_dr1_dir, tmp_path):
    row = dr1_labels(lamost_dr1_dir)[0]
    spectrum = read_lamost(lamost_dr1_dir / row["filename"])
    back = read_lamost(write_lamost(spectrum, tmp_path / "spec.fits", layout="dr5"))
    for key in ("z_err", "lmjd", "mjd", "planid", "spid", "fiberid"):
        assert back.meta[key] == spectrum.meta[key], key


# --------------------------------------------------------------------------------------
# Files that are not LAMOST spectra
# --------------------------------------------------------------------------------------
def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_lamost(tmp_path / "absent.fits")
    (tmp_path / "empty.fits").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_lamost(tmp_path / "empty.fits")


def test_non_fits_files(tmp_path):
    (tmp_path / "page.fits").write_text("<html><body>Error: token expired</body></html>\n" * 20)
    (tmp_path / "noise.fits").write_bytes(np.random.default_rng(8).integers(0, 256, 6000, dtype=np.uint8).tobytes())
    for name in ("page.fits", "noise.fits"):
        with pytest.raises(ValueError, match="not a readable FITS file"):
            read_lamost(tmp_path / name)


def test_gzipped_non_fits_file(tmp_path):
    (tmp_path / "page.fits.gz").write_bytes(gzip.compress(b'{"error": "not found"}' * 50))
    with pytest.raises(ValueError, match="not a readable FITS file"):
        read_lamost(tmp_path / "page.fits.gz")


def test_truncated_download(lamost_layouts_dir, tmp_path):
    content = layout_file(lamost_layouts_dir, "dr7").read_bytes()
    (tmp_path / "cut.fits.gz").write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="not a readable FITS file"):
        read_lamost(tmp_path / "cut.fits.gz")


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros((3, 100), np.float32), r"shape \(3, 100\)"),
        (np.zeros(100, np.float32), r"shape \(100,\)"),
        (np.zeros((2, 5, 100), np.float32), r"shape \(2, 5, 100\)"),
        (None, "shape None"),
    ],
)
def test_fits_with_wrong_shape(tmp_path, data, match):
    fits.PrimaryHDU(data).writeto(tmp_path / "wrong.fits")
    with pytest.raises(ValueError, match=match):
        read_lamost(tmp_path / "wrong.fits")


def test_image_without_wavelength_information(tmp_path):
    fits.PrimaryHDU(np.ones((5, 100), np.float32)).writeto(tmp_path / "nowave.fits")
    with pytest.raises(ValueError, match="COEFF0/COEFF1"):
        read_lamost(tmp_path / "nowave.fits")


def test_table_without_required_columns(tmp_path):
    columns = [fits.Column(name=name, format="10E", array=np.ones((1, 10), np.float32)) for name in ("FLUX", "IVAR")]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns, name="COADD")]).writeto(tmp_path / "t.fits")
    with pytest.raises(ValueError, match="lacks columns"):
        read_lamost(tmp_path / "t.fits")


def test_table_without_rows(tmp_path):
    columns = [
        fits.Column(name=name, format="10E", array=np.zeros((0, 10), np.float32))
        for name in ("FLUX", "IVAR", "WAVELENGTH", "ANDMASK", "ORMASK")
    ]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns, name="COADD")]).writeto(tmp_path / "t.fits")
    with pytest.raises(ValueError):
        read_lamost(tmp_path / "t.fits")


# --------------------------------------------------------------------------------------
# The containers
# --------------------------------------------------------------------------------------
def test_spectrum_checks_shapes():
    with pytest.raises(ValueError, match="equal length"):
        Spectrum(np.arange(5.0), np.ones(5), np.ones(4), np.zeros(5))
    with pytest.raises(ValueError, match="1-D"):
        Spectrum(np.ones((2, 5)), np.ones((2, 5)), np.ones((2, 5)), np.zeros((2, 5)))


def test_spectrum_batch_indexing_and_checks():
    wave = np.arange(4.0)
    flux = np.arange(12.0).reshape(3, 4)
    meta = Table({"obsid": [1, 2, 3], "snrg": [10.0, 20.0, 30.0]})
    batch = SpectrumBatch(wave, flux, np.ones((3, 4)), np.zeros((3, 4)), meta)
    assert len(batch) == 3
    second = batch[1]
    np.testing.assert_array_equal(second.flux, flux[1])
    assert second.meta == {"obsid": 2, "snrg": 20.0} and type(second.meta["obsid"]) is int
    assert [s.meta["obsid"] for s in batch] == [1, 2, 3]
    with pytest.raises(ValueError, match="ivar"):
        SpectrumBatch(wave, flux, np.ones((3, 5)), np.zeros((3, 4)), meta)
    with pytest.raises(ValueError, match="meta has 2 rows"):
        SpectrumBatch(wave, flux, np.ones((3, 4)), np.zeros((3, 4)), meta[:2])
