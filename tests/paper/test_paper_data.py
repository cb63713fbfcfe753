"""The paper's constants and claims are data (data/paper/), and every claim can be judged from them."""

import math

import pytest

from slampaper import scorecard
from slampaper.paper import CLAIM_COLUMNS, load_claims, paper_constants, paper_value


def test_every_claim_names_a_readable_paper_value_and_criterion():
    claims = load_claims()
    assert len(claims) >= 50
    for claim in claims:
        assert set(CLAIM_COLUMNS) <= set(claim)
        assert claim["section"] and claim["notebook"] and claim["quantity"]
        if claim["paper"] and claim["kind"] != "funnel":
            value = scorecard._paper_number(claim)
            assert math.isfinite(value), claim
        if claim["kind"] == "number":
            scorecard._number_test(claim["criterion"])  # readable
        if claim["kind"] == "claim":
            test = scorecard._criterion_test(claim["criterion"], scorecard._paper_number(claim))
            assert isinstance(test(0.0), bool)
            assert claim["combine"] in scorecard._COMBINE


def test_table_1_holds_all_eighteen_coefficients_of_the_paper():
    table1 = paper_constants()["section4"]["table1"]
    assert set(table1) == {"teff", "logg", "m_h", "alpha_m", "c_m", "n_m"}
    assert all(set(coefficients) == {"a", "b", "c"} for coefficients in table1.values())
    assert paper_value("section4.table1.teff.a") == 204.8 and paper_value("section4.table1.n_m.c") == 0.072
    claimed = {claim["records"] for claim in load_claims() if claim["section"] == "Table 1"}
    assert len(claimed) == 18


def test_an_unknown_constant_or_criterion_is_refused_with_its_name():
    with pytest.raises(ValueError, match="section9"):
        paper_value("section9.nothing")
    with pytest.raises(ValueError, match="criterion"):
        scorecard._criterion_test("better than the paper")


def test_the_tolerances_of_numbers_judge_both_ways():
    assert scorecard._number_test("within a factor 1.5")(60.0, 50.0)
    assert not scorecard._number_test("within a factor 1.5")(80.0, 50.0)
    assert not scorecard._number_test("within a factor 1.5")(-50.0, 50.0)   # the sign counts
    assert scorecard._number_test("within ± 0.03")(0.95, 0.97) and not scorecard._number_test("within ± 0.03")(0.9, 0.97)
    assert scorecard._number_test("equal")(5000, 5000.0) and not scorecard._number_test("equal")(400, 5000)
    with pytest.raises(ValueError, match="tolerance"):
        scorecard._number_test("close enough")


def test_the_criteria_judge_both_ways():
    assert scorecard._criterion_test("< paper", 10.0)(9.0) and not scorecard._criterion_test("< paper", 10.0)(11.0)
    assert scorecard._criterion_test("in [0, 4]")(2.0) and not scorecard._criterion_test("in [0, 4]")(4.5)
    assert scorecard._criterion_test("ratio < 1")(0.5) and not scorecard._criterion_test("ratio < 1")(1.5)
    assert scorecard._criterion_test("ratio ≤ 0.25")(0.25) and not scorecard._criterion_test("ratio ≤ 0.25")(0.3)
    assert scorecard._criterion_test("< 1e-6")(1e-7) and not scorecard._criterion_test("< 1e-6")(1e-5)
