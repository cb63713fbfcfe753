"""Tests of slamlib.data catalogues: LAMOST DR5 via (mocked) VizieR, APOGEE allStar files.

Nothing here reaches the internet: astroquery's VizieR query is replaced by a stub
(either ``VizierClass.query_constraints``, or its HTTP layer ``VizierClass._request``
answering with the hand-written stub VOTable ``tests/data/vizier_v164_stellar5_stub.xml``),
and an autouse fixture makes any name lookup fail. The allStar files are tiny stubs
written here (``write_allstar_stub``), with invented values: none of it is real data.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import numpy as np
import pytest
import requests
from astropy.io import fits
from astropy.table import Table
from astroquery.utils import TableList
from astroquery.vizier import VizierClass

from slamlib.data import (
    APOGEE_COLUMNS,
    LAMOST_COLUMNS,
    DownloadError,
    apogee_catalog,
    lamost_catalog,
    read_allstar,
)
from slamlib.data.catalogs import LAMOST_VIZIER_COLUMNS, standardize_columns

DATA = Path(__file__).parent / "data"
VIZIER_NAMES = ["ObsID", "RAJ2000", "DEJ2000", "snrg", "Teff", "e_Teff", "logg", "e_logg", "[Fe/H]", "e_[Fe/H]", "HRV"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any name lookup fails: a query that escaped its stub cannot reach VizieR."""

    def refuse(host, *args, **kwargs):
        raise OSError(f"test tried to resolve {host!r}: tests must not reach the internet")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# --------------------------------------------------------------------------------------
# LAMOST via VizieR
# --------------------------------------------------------------------------------------
def vizier_table() -> Table:
    """Three invented rows with the VizieR names and units of V/164/stellar5."""
    table = Table(
        [[11, 12, 13], [1.0, 2.0, 3.0], [-1.0, 0.0, 1.0], [130.0, 50.0, 10.0], [4800.0, 5200.0, 6100.0],
         [40.0, 60.0, 90.0], [2.5, 4.1, 4.0], [0.05, 0.08, 0.2], [-0.3, 0.0, 0.2], [0.04, 0.06, 0.1],
         [-10.0, 3.0, -9999.0]],
        names=VIZIER_NAMES,
        units=[None, "deg", "deg", None, "K", "K", None, None, None, None, "km/s"],
    )
    table["e_[Fe/H]"] = np.ma.masked_array(table["e_[Fe/H]"], mask=[False, True, False])
    return table


@pytest.fixture
def fake_vizier(monkeypatch):
    """Replace VizierClass.query_constraints; record each call's settings and arguments."""
    calls: list[dict] = []

    def query_constraints(self, *, catalog=None, cache=True, **constraints):
        calls.append({"catalog": catalog, "columns": list(self.columns), "row_limit": self.ROW_LIMIT,
                      "cache": cache, "constraints": constraints, "timeout": self.TIMEOUT})
        return TableList({catalog: vizier_table()})

    monkeypatch.setattr(VizierClass, "query_constraints", query_constraints)
    return calls


def test_lamost_catalog_asks_vizier_for_the_papers_table(fake_vizier, tmp_path):
    table = lamost_catalog(cache_dir=tmp_path)
    (call,) = fake_vizier
    assert call["catalog"] == "V/164/stellar5" and call["row_limit"] == -1
    assert call["columns"] == VIZIER_NAMES and call["constraints"] == {} and call["cache"] is False
    assert table.colnames == list(LAMOST_COLUMNS) == [
        "obsid", "ra", "dec", "snrg", "teff", "teff_err", "logg", "logg_err", "feh", "feh_err", "rv"]
    assert table["obsid"].dtype == np.int64 and list(table["obsid"]) == [11, 12, 13]
    assert np.allclose(table["teff"], [4800.0, 5200.0, 6100.0]) and table["teff"].unit is None
    assert np.isnan(table["feh_err"][1]) and np.isnan(table["rv"][2])  # masked and -9999 become NaN
    assert np.allclose(table["rv"][:2], [-10.0, 3.0])


def test_lamost_catalog_is_cached_per_query(fake_vizier, tmp_path):
    first = lamost_catalog(cache_dir=tmp_path, constraints={"snrg": ">100"})
    second = lamost_catalog(cache_dir=tmp_path, constraints={"snrg": ">100"})
    assert len(fake_vizier) == 1 and fake_vizier[0]["constraints"] == {"snrg": ">100"}
    assert second.colnames == first.colnames and np.array_equal(second["obsid"], first["obsid"])
    assert np.array_equal(second["feh_err"], first["feh_err"], equal_nan=True)
    lamost_catalog(cache_dir=tmp_path, constraints={"snrg": ">50"})
    lamost_catalog(cache_dir=tmp_path, constraints={"snrg": ">100"}, refresh=True)
    assert len(fake_vizier) == 3
    assert not list(tmp_path.glob("*.partial")) and len(list(tmp_path.glob("*.fits"))) == 2


def test_lamost_catalog_through_a_recorded_vizier_answer(monkeypatch, tmp_path):
    """astroquery's own payload building and VOTable parsing, with the HTTP call stubbed."""
    sent: list[dict] = []

    class Response:
        content = (DATA / "vizier_v164_stellar5_stub.xml").read_bytes()

    def request(self, method, url, **kwargs):
        sent.append({"method": method, "url": url, **kwargs})
        return Response()

    monkeypatch.setattr(VizierClass, "_request", request)
    table = lamost_catalog(cache_dir=tmp_path, constraints={"snrg": ">5"})
    (call,) = sent
    payload = dict(line.split("=", 1) for line in call["data"].splitlines())
    assert call["method"] == "POST" and call["url"].endswith("/viz-bin/votable")
    assert payload["-source"] == "V/164/stellar5" and payload["-out.max"] == "unlimited"
    assert payload["-out"].split(",") == VIZIER_NAMES and payload["snrg"] == ">5"
    assert list(table["obsid"]) == [101001, 101002, 101003, 101004, 101005, 101006]
    assert np.allclose(table["feh"], [-0.2, 0.1, -1.0, -2.4, 0.0, 0.2])
    assert np.isnan(table["feh_err"][4]) and np.isnan(table["rv"][5]) and table["rv"][0] == pytest.approx(-12.3)


def test_vizier_failure_is_a_clear_connection_error(monkeypatch, tmp_path):
    def fail(self, **kwargs):
        raise requests.exceptions.ConnectionError("Name or service not known")

    monkeypatch.setattr(VizierClass, "query_constraints", fail)
    with pytest.raises(ConnectionError, match='data_source="mock"') as caught:
        lamost_catalog(cache_dir=tmp_path)
    assert isinstance(caught.value, DownloadError) and "V/164/stellar5" in str(caught.value)
    assert "vizier" in caught.value.url and list(tmp_path.iterdir()) == []


def test_vizier_without_a_table_is_a_value_error(monkeypatch, tmp_path):
    monkeypatch.setattr(VizierClass, "query_constraints", lambda self, **kwargs: TableList({}))
    with pytest.raises(ValueError, match="no table"):
        lamost_catalog(cache_dir=tmp_path, constraints={"snrg": ">1000"})


def test_lamost_catalog_from_a_local_lamost_file(tmp_path):
    path = tmp_path / "dr5_v3_stellar_stub.csv"
    Table({"obsid": [7, 8], "designation": ["J1", "J2"], "ra": [1.0, 2.0], "dec": [3.0, 4.0],
           "snrg": [10.0, 20.0], "teff": [5000.0, -9999.0], "teff_err": [50.0, -9999.0], "logg": [3.0, 4.0],
           "logg_err": [0.1, 0.1], "feh": [0.0, 0.1], "feh_err": [0.05, 0.05], "rv": [1.0, 2.0]}).write(path)
    table = lamost_catalog(path=path)
    assert table.colnames == list(LAMOST_COLUMNS) and list(table["obsid"]) == [7, 8]
    assert table["teff"][0] == 5000.0 and np.isnan(table["teff"][1]) and np.isnan(table["teff_err"][1])


def test_missing_column_is_named():
    table = vizier_table()
    table.remove_column("HRV")
    with pytest.raises(ValueError, match="'rv'"):
        standardize_columns(table, {name: [viz] for viz, name in LAMOST_VIZIER_COLUMNS.items()})


# --------------------------------------------------------------------------------------
# APOGEE allStar
# --------------------------------------------------------------------------------------
DR14_SYMBOLS = ["TEFF", "LOGG", "LOG10VDOP", "METALS", "C", "N", "O Mg Si S Ca Ti"]
#: Invented PARAM rows (Teff, logg, vmicro, [M/H], [C/M], [N/M], [alpha/M]) in DR14 order.
STUB_PARAM = np.array([
    [4500.0, 2.4, 0.2, -0.10, 0.05, 0.20, 0.08],
    [4700.0, 2.8, 0.2, -0.30, -0.10, 0.30, 0.15],
    [5200.0, 3.5, 0.2, 0.10, 0.00, 0.10, 0.02],
    [-9999.0, -9999.0, -9999.0, -9999.0, -9999.0, -9999.0, -9999.0],
])
STUB_VARIANCE = np.array([0.0025, 0.0016, 0.0009, 0.0004, 0.0001, 0.0036, 0.0049])


def write_allstar_stub(path: Path, *, symbols: list[str] | None = DR14_SYMBOLS, named: bool = True) -> Path:
    """A 4-row allStar-like FITS file (invented values; not real APOGEE data).

    ``symbols`` orders PARAM (None: no HDU 3); ``named`` adds TEFF, M_H, ... columns.
    """
    order = [DR14_SYMBOLS.index(symbol) for symbol in (symbols or DR14_SYMBOLS)]
    param = STUB_PARAM[:, order]
    cov = np.zeros((4, 7, 7))
    cov[:, np.arange(7), np.arange(7)] = STUB_VARIANCE[order]
    columns = {
        "APOGEE_ID": ["2M00000001+0000001 ", "2M00000002+0000002", "2M00000002+0000002", "2M00000004+0000004"],
        "RA": [10.0, 10.1, 10.1, 10.3], "DEC": [20.0, 20.1, 20.1, 20.3], "SNR": [150.0, 90.0, 60.0, 30.0],
        "ASPCAPFLAG": np.array([0, 1 << 7, 0, 1 << 23], dtype=np.int64),
        "STARFLAG": np.array([0, 0, 4, 0], dtype=np.int32),
        "EXTRATARG": np.array([0, 0, 16, 0], dtype=np.int16),
        "PARAM": param.astype(np.float32), "PARAM_COV": cov.astype(np.float32),
    }
    if named:
        for name, index in (("TEFF", 0), ("LOGG", 1), ("M_H", 3), ("ALPHA_M", 6)):
            columns[name] = STUB_PARAM[:, index].astype(np.float32)
            columns[f"{name}_ERR"] = np.full(4, np.sqrt(STUB_VARIANCE[index]), dtype=np.float32)
    hdus = [fits.PrimaryHDU(), fits.BinTableHDU(Table(columns)), fits.ImageHDU()]
    if symbols is not None:
        hdus.append(fits.BinTableHDU(Table({"PARAM_SYMBOL": np.array([symbols])})))
    hdus[0].header["COMMENT"] = "STUB for slamlib tests: invented values, not APOGEE data"
    fits.HDUList(hdus).writeto(path)
    return path


def check_labels(table: Table) -> None:
    """The stub's labels, read back in standard form."""
    assert table.colnames == list(APOGEE_COLUMNS)
    assert list(table["apogee_id"]) == ["2M00000001+0000001", "2M00000002+0000002", "2M00000002+0000002",
                                        "2M00000004+0000004"]
    for label, index in (("teff", 0), ("logg", 1), ("m_h", 3), ("c_m", 4), ("n_m", 5), ("alpha_m", 6)):
        assert np.allclose(table[label][:3], STUB_PARAM[:3, index], atol=1e-4), label
        assert np.isnan(table[label][3]), f"{label}: -9999 must read as NaN"
        assert np.allclose(table[f"{label}_err"], np.sqrt(STUB_VARIANCE[index]), rtol=1e-5), label
    assert list(table["aspcapflag"]) == [0, 128, 0, 1 << 23] and list(table["extratarg"]) == [0, 0, 16, 0]
    assert table["extratarg"].dtype == np.int64


def test_read_allstar_dr14_layout(tmp_path):
    check_labels(read_allstar(write_allstar_stub(tmp_path / "allStar.fits")))


def test_read_allstar_finds_labels_by_param_symbol(tmp_path):
    shuffled = ["LOGG", "TEFF", "N", "O Mg Si S Ca Ti", "C", "LOG10VDOP", "METALS"]
    check_labels(read_allstar(write_allstar_stub(tmp_path / "allStar.fits", symbols=shuffled, named=False)))


def test_read_allstar_without_param_symbol_uses_documented_order(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="slamlib.data"):
        check_labels(read_allstar(write_allstar_stub(tmp_path / "allStar.fits", symbols=None)))
    assert "PARAM_SYMBOL" in caplog.text


def test_read_allstar_rejects_other_files(tmp_path):
    path = tmp_path / "other.fits"
    Table({"RA": [1.0]}).write(path)
    with pytest.raises(ValueError, match="APOGEE_ID"):
        read_allstar(path)


def test_apogee_catalog_local_file_and_release_check(tmp_path):
    table = apogee_catalog(path=write_allstar_stub(tmp_path / "allStar.fits"))
    assert len(table) == 4
    with pytest.raises(ValueError, match="release"):
        apogee_catalog(release="dr99", cache_dir=tmp_path)


def test_apogee_default_is_the_dr14_file_for_dr15():
    from slamlib.data.apogee import ALLSTAR_FILES

    assert ALLSTAR_FILES["dr15"] == ALLSTAR_FILES["dr14"]
    assert ALLSTAR_FILES["dr15"].filename == "allStar-l31c.2.fits"
    assert ALLSTAR_FILES["dr15"].sha1 == "a7e1801924661954da792e377ad54f412219b105"
