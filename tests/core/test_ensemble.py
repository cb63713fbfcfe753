"""The grouped-jackknife errors of the CV sub-model ensemble, against hand-computed values."""

import numpy as np
import pytest

from slamlib.ensemble import jackknife_errors


def test_grouped_jackknife_of_three_members():
    # Members 1, 2, 3: mean 2, sum of squares 2, variance (k-1)/k * 2 = 4/3.
    members = np.array([1.0, 2.0, 3.0]).reshape(3, 1, 1)
    errors = jackknife_errors(members, np.ones((3, 1), bool))
    assert errors.shape == (1, 1)
    assert errors[0, 0] == pytest.approx(np.sqrt(4.0 / 3.0))


def test_unconverged_members_are_left_out_and_too_few_give_nan():
    members = np.array([[[1.0, 10.0]], [[3.0, 30.0]], [[100.0, 100.0]]])      # (3 members, 1 spectrum, 2 labels)
    converged = np.array([[True], [True], [False]])
    errors = jackknife_errors(members, converged)
    # Two members 1 and 3: mean 2, sum of squares 2, variance 1/2 * 2 = 1.
    np.testing.assert_allclose(errors, [[1.0, 10.0]])
    assert np.all(np.isnan(jackknife_errors(members, np.array([[True], [False], [False]]))))


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="member_labels"):
        jackknife_errors(np.zeros((3, 4)), np.ones((3, 4), bool))
