import numpy as np
import pytest
from astropy.table import Table

from slampaper.kgiants import KGIANT_POLYGON, compare_with_published, in_polygon


def test_comparison_with_the_published_catalogue_matches_by_obsid_and_spelling():
    ours = Table({"obsid": [1, 2, 3, 4], "teff": [4500.0, 4600.0, 4700.0, 4800.0], "m_h": [0.0, -0.1, -0.2, -0.3]})
    published = Table({"OBSID": [4, 3, 2, 9], "TEFF": [4790.0, 4690.0, 4590.0, 5000.0], "[M/H]": [-0.3, -0.2, -0.1, 0.5]})
    table = compare_with_published(ours, published, labels=("teff", "logg", "m_h"))
    assert list(table["label"]) == ["teff", "m_h"]  # logg is not in the published table
    teff = table[0]
    assert teff["n_star"] == 3 and teff["bias"] == pytest.approx(10.0) and teff["scatter"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="obsid"):
        compare_with_published(ours, Table({"teff": [1.0]}))


def test_polygon_membership():
    inside = in_polygon(np.array([4600.0, 6000.0, np.nan]), np.array([2.0, 4.5, 2.0]), KGIANT_POLYGON)
    assert inside.tolist() == [True, False, False]


def test_label_distance_is_the_papers_equation_11():
    from slampaper.kgiants import paper_label_distance

    slam = np.zeros((3, 6))
    slam[:, 0] = [4600.0, 4700.0, 4600.0]   # Teff
    slam[:, 1] = [2.5, 2.5, 2.9]             # log g
    slam[:, 2] = [0.0, 0.0, 0.3]             # [M/H]
    lamost_teff, lamost_logg, lamost_feh = np.full(3, 4600.0), np.full(3, 2.5), np.zeros(3)
    distance = paper_label_distance(slam, lamost_teff, lamost_logg, lamost_feh)
    # 100 K off in Teff is D = 1; 0.4 dex in log g and 0.3 dex in metallicity are 2 and 3 in quadrature.
    np.testing.assert_allclose(distance, [0.0, 1.0, np.sqrt(4.0 + 9.0)])
    assert np.isnan(paper_label_distance(slam[:1], np.array([np.nan]), lamost_logg[:1], lamost_feh[:1]))[0]
