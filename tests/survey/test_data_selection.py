"""Tests of slamlib.data.selection: the paper's cuts (Sections 3.2 and 4.2) and their funnels.

Every table is built here, one row per way to fail a criterion, plus rows that pass;
the expected counts are written out by hand from the rows, never computed by slamlib.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import Table

from slamlib.data import (
    Criterion,
    Selection,
    apogee_common_criteria,
    apply_criteria,
    lasp_criteria,
    select_apogee_common,
    select_lasp_test,
    select_lasp_training,
)
from slamlib.data.selection import LASP_TEST_SNR_BINS

NAN = np.nan


# --------------------------------------------------------------------------------------
# LASP (Section 3.2)
# --------------------------------------------------------------------------------------
#: (teff, logg, feh, teff_err, logg_err, feh_err, snrg) -- a passing star and one failure per cut.
GOOD = (5000.0, 3.0, -0.5, 100.0, 0.05, 0.05, 130.0)
LASP_ROWS = {
    "good_training": GOOD,
    "good_training_2": (7999.0, 5.4, 0.9, 199.0, 0.09, 0.09, 120.5),
    "teff_low": (4000.0, 3.0, -0.5, 100.0, 0.05, 0.05, 130.0),  # boundary: strict
    "teff_high": (8100.0, 3.0, -0.5, 100.0, 0.05, 0.05, 130.0),
    "teff_missing": (NAN, 3.0, -0.5, 100.0, 0.05, 0.05, 130.0),
    "logg_low": (5000.0, 0.4, -0.5, 100.0, 0.05, 0.05, 130.0),
    "logg_high": (5000.0, 5.5, -0.5, 100.0, 0.05, 0.05, 130.0),
    "feh_low": (5000.0, 3.0, -2.6, 100.0, 0.05, 0.05, 130.0),
    "feh_high": (5000.0, 3.0, 1.0, 100.0, 0.05, 0.05, 130.0),
    "teff_err": (5000.0, 3.0, -0.5, 200.0, 0.05, 0.05, 130.0),
    "logg_err": (5000.0, 3.0, -0.5, 100.0, 0.10, 0.05, 130.0),
    "feh_err": (5000.0, 3.0, -0.5, 100.0, 0.05, 0.15, 130.0),
    "feh_err_missing": (5000.0, 3.0, -0.5, 100.0, 0.05, NAN, 130.0),
    "snr_140": (5000.0, 3.0, -0.5, 100.0, 0.05, 0.05, 140.0),  # not training (strict), in no test bin
    "snr_120": (5000.0, 3.0, -0.5, 100.0, 0.05, 0.05, 120.0),  # not training, test bin (100, 120]
    "snr_5": (5000.0, 3.0, -0.5, 100.0, 0.05, 0.05, 5.0),  # in no bin: (5, 20] excludes 5
    "snr_12": (5000.0, 3.0, -0.5, 100.0, 0.05, 0.05, 12.0),  # bin 0
    "snr_20": (5000.0, 3.0, -0.5, 100.0, 0.05, 0.05, 20.0),  # bin 0: upper edge included
    "snr_20_01": (5000.0, 3.0, -0.5, 100.0, 0.05, 0.05, 20.01),  # bin 1
    "snr_55": (5000.0, 3.0, -0.5, 100.0, 0.05, 0.05, 55.0),  # bin 2
    "snr_79": (5000.0, 3.0, -0.5, 100.0, 0.05, 0.05, 79.0),  # bin 3
    "snr_95": (5000.0, 3.0, -0.5, 100.0, 0.05, 0.05, 95.0),  # bin 4
    "snr_95_bad_logg": (5000.0, 6.0, -0.5, 100.0, 0.05, 0.05, 95.0),  # fails logg first
}


def lasp_table() -> Table:
    names = ["teff", "logg", "feh", "teff_err", "logg_err", "feh_err", "snrg"]
    table = Table(rows=list(LASP_ROWS.values()), names=names, dtype=[float] * 7)
    table.add_column(list(LASP_ROWS), name="star", index=0)
    table["obsid"] = np.arange(1, len(table) + 1)
    return table


def test_lasp_training_funnel_and_rows():
    selection = select_lasp_training(lasp_table())
    assert list(selection.table["star"]) == ["good_training", "good_training_2"]
    # 23 rows; each cut removes the rows listed against it (and nothing removed earlier).
    assert selection.counts == {
        "input": 23,
        "teff_range": 23 - 3,  # teff_low, teff_high, teff_missing
        "logg_range": 20 - 3,  # logg_low, logg_high, snr_95_bad_logg
        "feh_range": 17 - 2,
        "teff_err": 15 - 1,
        "logg_err": 14 - 1,
        "feh_err": 13 - 2,  # feh_err, feh_err_missing
        "snrg_training": 2,
    }
    assert selection.mask.shape == (23,) and selection.mask.sum() == 2


def test_lasp_test_bins():
    selection = select_lasp_test(lasp_table())
    stars = dict(zip(selection.table["star"], selection.table["snr_bin"]))
    assert stars == {"snr_120": 5, "snr_12": 0, "snr_20": 0, "snr_20_01": 1, "snr_55": 2, "snr_79": 3,
                     "snr_95": 4}
    assert selection.counts["snrg_test_bins"] == 7 and selection.counts["feh_err"] == 11
    assert np.bincount(selection.table["snr_bin"], minlength=6).tolist() == [2, 1, 1, 1, 1, 1]
    assert [tuple(pair) for pair in json.loads(selection.table.meta["snr_bins"])] == list(LASP_TEST_SNR_BINS)


def test_lasp_cuts_are_parameters():
    loose = lasp_criteria(max_logg_err=1.0, feh_range=(-3.0, 1.5))
    selection = select_lasp_training(lasp_table(), criteria=loose, snr_range=(100.0, 150.0))
    # now also: feh_low, feh_high, logg_err, snr_140, snr_120
    assert set(selection.table["star"]) == {"good_training", "good_training_2", "feh_low", "feh_high", "logg_err",
                                            "snr_140", "snr_120"}


def test_overlapping_test_bins_are_rejected():
    with pytest.raises(ValueError, match="non-overlapping"):
        select_lasp_test(lasp_table(), snr_bins=[(5.0, 30.0), (20.0, 40.0)])


def test_selection_leaves_input_untouched():
    table = lasp_table()
    before = table.copy()
    select_lasp_test(table)
    assert table.colnames == before.colnames and all(np.array_equal(table[c], before[c], equal_nan=True)
                                                     for c in table.colnames if c != "star")


def test_funnel_table():
    funnel = select_lasp_training(lasp_table()).funnel_table()
    assert list(funnel["step"])[:2] == ["input", "teff_range"]
    assert list(funnel["n_removed"]) == [0, 3, 3, 2, 1, 1, 2, 9]
    assert funnel["description"][1] == "4000 < teff < 8000"


def test_masked_values_fail_their_criteria():
    table = lasp_table()[:2]
    table["teff"] = np.ma.masked_array(table["teff"], mask=[True, False])
    assert list(select_lasp_training(table).table["star"]) == ["good_training_2"]


# --------------------------------------------------------------------------------------
# APOGEE x LAMOST (Section 4.2: the paper's ten criteria)
# --------------------------------------------------------------------------------------
APOGEE_NAMES = ["snr", "snrg", "aspcapflag", "teff", "logg", "m_h", "alpha_m", "c_m", "n_m", "teff_lamost"]
K_GIANT = dict(snr=150.0, snrg=60.0, aspcapflag=0, teff=4600.0, logg=2.5, m_h=-0.2, alpha_m=0.1, c_m=0.0,
               n_m=0.3, teff_lamost=4700.0)
#: One row per way to fail, in the paper's order, and the criterion that removes it.
APOGEE_FAILURES = {
    "low_apogee_snr": ("apogee_snr", dict(snr=100.0)),          # the paper's S/N > 100 is strict
    "faint_lamost": ("lamost_snrg", dict(snrg=39.0)),
    "star_warn": ("aspcapflag_zero", dict(aspcapflag=1 << 7)),   # any flag: ASPCAPFLAG = 0
    "too_hot": ("teff", dict(teff=5600.0, teff_lamost=5500.0)),
    "teff_sentinel": ("teff", dict(teff=-9999.0)),
    "logg_nan": ("logg", dict(logg=NAN)),
    "too_high_logg": ("logg", dict(logg=5.1)),
    "m_h_sentinel": ("m_h", dict(m_h=-9999.0)),
    "alpha_nan": ("alpha_m", dict(alpha_m=NAN)),
    "carbon_poor": ("c_fe", dict(c_m=-0.5)),
    "nitrogen_poor": ("n_fe", dict(n_m=-0.6)),
    "teff_disagrees": ("teff_consistency", dict(teff_lamost=5401.0)),
}
PASSING = {
    "k_giant": {},
    "cool_dwarf_edge": dict(teff=3001.0, logg=4.9, teff_lamost=3700.0),
    "supergiant_edge": dict(logg=-0.9, m_h=-3.9),
}


def apogee_table() -> Table:
    rows = {**{name: changes for name, (_, changes) in APOGEE_FAILURES.items()}, **PASSING}
    table = Table(rows=[{**K_GIANT, **changes} for changes in rows.values()], names=APOGEE_NAMES)
    table.add_column(list(rows), name="star", index=0)
    return table


def test_apogee_common_ten_criteria_funnel_in_the_papers_order():
    selection = select_apogee_common(apogee_table())
    assert sorted(selection.table["star"]) == sorted(PASSING)
    names = [step.name for step in selection.funnel]
    assert names == ["input", "apogee_snr", "lamost_snrg", "aspcapflag_zero", "teff", "logg", "m_h", "alpha_m",
                     "c_fe", "n_fe", "teff_consistency"]
    removed_by = [criterion for criterion, _ in APOGEE_FAILURES.values()]
    expected, left = [15], 15
    for name in names[1:]:
        left -= removed_by.count(name)
        expected.append(left)
    assert [step.n_remaining for step in selection.funnel] == expected
    assert expected == [15, 14, 13, 12, 10, 8, 7, 6, 5, 4, 3]


def test_apogee_criteria_defaults_are_the_papers_constants():
    from slampaper.paper import paper_value

    paper = paper_value("section4.selection")
    descriptions = {criterion.name: criterion.description for criterion in apogee_common_criteria()}
    assert descriptions["apogee_snr"] == f"snr > {paper['snr_apogee_min']:g}"
    assert descriptions["lamost_snrg"] == f"snrg > {paper['snr_g_min']:g}"
    for name in ("teff", "logg", "m_h", "alpha_m"):
        low, high = paper[name]
        assert descriptions[name] == f"{low:g} < {name} < {high:g}"
    assert descriptions["c_fe"] == f"{paper['c_fe'][0]:g} < [C/Fe] < {paper['c_fe'][1]:g}"
    assert descriptions["n_fe"] == f"{paper['n_fe'][0]:g} < [N/Fe] < {paper['n_fe'][1]:g}"
    assert descriptions["teff_consistency"] == f"|teff - teff_lamost| < {paper['teff_difference_max']:g}"


def test_carbon_and_nitrogen_over_iron_come_from_the_columns_the_table_has():
    table = apogee_table()
    table = table[table["star"] == "k_giant"]
    table["c_m"] = [-0.35]                       # [C/M] alone passes -0.4 < [C/Fe]
    assert len(select_apogee_common(table).table) == 1
    table["m_h"], table["fe_h"] = [-0.2], [0.0]  # with [Fe/H]: [C/Fe] = [C/M] + [M/H] - [Fe/H] = -0.55
    assert len(select_apogee_common(table).table) == 0
    table["c_fe"] = [0.1]                        # a c_fe column is used as it is
    assert len(select_apogee_common(table).table) == 1


def test_apogee_criteria_are_parameters():
    criteria = apogee_common_criteria(min_apogee_snr=60.0, teff_range=(3500.0, 5700.0))
    kept = set(select_apogee_common(apogee_table(), criteria=criteria).table["star"])
    assert kept == (set(PASSING) - {"cool_dwarf_edge"}) | {"low_apogee_snr", "too_hot"}


def test_missing_lamost_column_is_explained():
    table = apogee_table()
    table.remove_column("snrg")
    with pytest.raises(ValueError, match="lamost_snrg.*snrg.*crossmatch"):
        select_apogee_common(table)


def test_custom_criteria_and_name_checks():
    table = apogee_table()
    even = Criterion("even_rows", "every other row", (), lambda t: np.arange(len(t)) % 2 == 0)
    selection = apply_criteria(table, [even])
    assert isinstance(selection, Selection) and selection.counts == {"input": 15, "even_rows": 8}
    with pytest.raises(ValueError, match="unique"):
        apply_criteria(table, [even, even])
    wrong = Criterion("wrong_shape", "bad", (), lambda t: np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        apply_criteria(table, [wrong])


def test_selected_tables_can_be_written_to_fits(tmp_path):
    selection = select_lasp_test(lasp_table())
    selection.table.write(tmp_path / "test_set.fits")  # no warning: meta is FITS-safe
    back = Table.read(tmp_path / "test_set.fits")
    assert list(back["snr_bin"]) == list(selection.table["snr_bin"])
