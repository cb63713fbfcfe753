"""Tests of slamlib.data.crossmatch on invented positions with known separations.

Offsets are placed along a meridian (pure declination offsets, where the separation
equals the offset) or across RA = 0 on the equator (where it equals the RA offset
times 3600), so every expected separation is known without astropy.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from slamlib.data import crossmatch

ARCSEC = 1.0 / 3600.0


def apogee_table() -> Table:
    return Table({
        "apogee_id": ["A", "B", "C", "D", "D"],
        "ra": [10.0, 50.0, 0.0, 120.0, 120.0],
        "dec": [20.0, -30.0, 0.0, 60.0, 60.0],
        "snr": [100.0, 80.0, 90.0, 200.0, 150.0],
        "teff": [4500.0, 4700.0, 4900.0, 4300.0, 4300.0],
    })


def lamost_table() -> Table:
    rows = [
        # obsid, ra, dec, snrg: three spectra of star A (0.5", 0.8", 0.3"), one far away
        (1, 10.0, 20.0 + 0.5 * ARCSEC, 40.0),
        (2, 10.0, 20.0 - 0.8 * ARCSEC, 90.0),
        (3, 10.0, 20.0 + 0.3 * ARCSEC, 60.0),
        (4, 50.0, -30.0 + 1.5 * ARCSEC, 70.0),  # 1.5" from B: only within a 2" radius
        (5, 359.9999, 0.0, 30.0),  # 0.36" from C, across RA = 0
        (6, 120.0, 60.0 + 0.2 * ARCSEC, 50.0),  # the duplicated APOGEE star D
        (7, 200.0, 10.0, 100.0),  # nothing near
    ]
    table = Table(rows=rows, names=["obsid", "ra", "dec", "snrg"])
    table["teff"] = 5000.0
    return table


def test_unique_match_keeps_highest_snrg_spectrum():
    matched = crossmatch(lamost_table(), apogee_table(), radius_arcsec=1.0)
    assert list(matched["obsid"]) == [2, 5, 6]
    assert list(matched["apogee_id"]) == ["A", "C", "D"]
    assert np.allclose(matched["sep_arcsec"], [0.8, 0.36, 0.2], atol=1e-6)
    # pairs within 1": obsids 1, 2, 3 with A; 5 with C; 6 with both entries of D
    assert matched.meta == {"xmradius": 1.0, "xmpairs": 6, "xmunique": True}


def test_duplicate_apogee_entries_go_to_the_higher_snr_one():
    matched = crossmatch(lamost_table(), apogee_table())
    row = matched[matched["obsid"] == 6][0]
    assert row["snr"] == 200.0  # D has two entries at the same place: the SNR=200 one is taken


def test_radius_controls_matches():
    matched = crossmatch(lamost_table(), apogee_table(), radius_arcsec=2.0)
    assert list(matched["obsid"]) == [2, 4, 5, 6]
    assert matched["sep_arcsec"][1] == pytest.approx(1.5, abs=1e-6)
    assert len(crossmatch(lamost_table(), apogee_table(), radius_arcsec=0.25)) == 1  # only obsid 6 (0.2")


def test_all_pairs_when_not_unique():
    matched = crossmatch(lamost_table(), apogee_table(), unique=False)
    pairs = sorted(zip(matched["obsid"].tolist(), matched["apogee_id"].tolist(), matched["snr"].tolist()))
    assert pairs == [(1, "A", 100.0), (2, "A", 100.0), (3, "A", 100.0), (5, "C", 90.0), (6, "D", 150.0),
                     (6, "D", 200.0)]
    assert matched.meta["xmpairs"] == len(matched) == 6 and matched.meta["xmunique"] is False


def test_a_spectrum_between_two_stars_goes_to_the_nearer():
    apogee = Table({"apogee_id": ["E", "F"], "ra": [0.0, 0.0], "dec": [30.0, 30.0 + 1.0 * ARCSEC],
                    "snr": [100.0, 300.0]})
    lamost = Table({"obsid": [8], "ra": [0.0], "dec": [30.0 + 0.6 * ARCSEC], "snrg": [50.0]})
    matched = crossmatch(lamost, apogee)
    assert list(matched["apogee_id"]) == ["F"] and matched["sep_arcsec"][0] == pytest.approx(0.4, abs=1e-6)


def test_shared_column_names_get_a_lamost_suffix():
    matched = crossmatch(lamost_table(), apogee_table())
    assert matched.colnames == ["obsid", "ra_lamost", "dec_lamost", "snrg", "teff_lamost", "apogee_id", "ra", "dec",
                                "snr", "teff", "sep_arcsec"]
    assert np.allclose(matched["teff_lamost"], 5000.0) and list(matched["teff"]) == [4500.0, 4900.0, 4300.0]
    assert matched["ra_lamost"][1] == pytest.approx(359.9999) and matched["ra"][1] == 0.0


def test_rows_without_positions_and_empty_tables():
    lamost = lamost_table()
    lamost["dec"] = np.ma.masked_array(lamost["dec"], mask=[False, True, False, False, False, False, False])
    lamost["ra"][2] = np.nan
    matched = crossmatch(lamost, apogee_table())
    assert list(matched["obsid"]) == [1, 5, 6]  # obsids 2 and 3 have no position
    empty = crossmatch(lamost_table()[:0], apogee_table())
    assert len(empty) == 0 and "apogee_id" in empty.colnames and "sep_arcsec" in empty.colnames


def test_bad_arguments():
    with pytest.raises(ValueError, match="radius_arcsec"):
        crossmatch(lamost_table(), apogee_table(), radius_arcsec=0.0)
    with pytest.raises(ValueError, match="snrg"):
        crossmatch(lamost_table()["obsid", "ra", "dec"], apogee_table())
    with pytest.raises(ValueError, match="'ra' and 'dec'"):
        crossmatch(lamost_table(), apogee_table()["apogee_id", "snr"])


def test_matched_table_can_be_written_to_fits(tmp_path):
    crossmatch(lamost_table(), apogee_table()).write(tmp_path / "common.fits")  # no warning: meta is FITS-safe
    assert Table.read(tmp_path / "common.fits").meta["XMPAIRS"] == 6
