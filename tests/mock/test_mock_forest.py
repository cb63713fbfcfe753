"""The line forest and line-by-line molecules of slamlib.mock, the real-spectrum check, the
LASP-like catalogue labels and the label information in a small SLAM model."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from astropy.table import Table

from slamlib.mock import lasp_test_sample, synthesize
from slamlib.mock.atmosphere import photosphere
from slamlib.mock.atoms import log_abundances
from slamlib.mock.forest import forest_equivalent_widths, load_forest
from slamlib.mock.grid import wavelength_grid
from slamlib.mock.samples import lasp_systematics

WAVE = wavelength_grid()


def layer(teff, logg, m_h=0.0, alpha_m=0.0, c_m=0.0, n_m=0.0):
    """Photospheres for broadcast labels."""
    values = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=float)) for v in (teff, logg, m_h, alpha_m, c_m, n_m)))
    teff, logg, m_h, alpha_m, c_m, n_m = (np.array(v) for v in values)
    return photosphere(teff, logg, log_abundances(m_h, alpha_m, c_m, n_m))


def noiseless(**columns) -> np.ndarray:
    n = max(np.size(value) for value in columns.values())
    table = Table({name: np.broadcast_to(np.asarray(value, dtype=float), (n,)) for name, value in columns.items()})
    return synthesize(table, noiseless=True).flux_norm


def mean_depth(flux: np.ndarray, low: float, high: float) -> np.ndarray:
    band = (WAVE >= low) & (WAVE <= high)
    return 1.0 - flux[:, band].mean(axis=1)


# ---------------------------------------------------------------- the line list


def test_forest_holds_atoms_and_the_three_molecules_without_the_strong_lines():
    forest = load_forest()
    assert len(forest) > 19_000
    for name in ("CH", "CN", "MgH", "Fe I", "Ti II"):
        assert forest.lines_of(name).size > 50
    assert forest.is_molecular.sum() == 2627 + 5205 + 3502
    assert np.all(np.diff(forest.wave) >= 0) and 3850.0 < forest.wave.min() and forest.wave.max() < 5905.0
    assert "H I" not in forest.species
    # Mg b1 and Fe I 5270 are strong lines of lines.csv and must not be synthesized twice.
    for species, wave in (("Mg I", 5185.05), ("Fe I", 5271.00)):
        lines = forest.lines_of(species)
        assert np.min(np.abs(forest.wave[lines] - wave)) > 0.05
    with pytest.raises(ValueError, match="no species"):
        forest.lines_of("TiO")


# ---------------------------------------------------------------- line strengths follow the labels


def test_every_atomic_line_strengthens_with_metallicity():
    widths = forest_equivalent_widths(layer(5500.0, 4.4, m_h=[-1.0, -0.5, 0.0, 0.4]))
    atomic = ~load_forest().is_molecular
    assert np.all(np.diff(widths[:, atomic], axis=0) > 0)
    # Weak lines grow about linearly with the abundance (x 10^0.5 per 0.5 dex) ...
    weak = atomic & (widths[0] < 1e-3)
    ratio = widths[1, weak] / widths[0, weak]
    assert 2.0 < np.median(ratio) < 3.5
    # ... saturated ones much more slowly.
    strong = atomic & (widths[2] > 0.2)
    assert np.median(widths[3, strong] / widths[2, strong]) < 1.5


def test_alpha_element_lines_follow_alpha_and_iron_lines_do_not():
    forest = load_forest()
    widths = forest_equivalent_widths(layer(5200.0, 4.5, alpha_m=[0.0, 0.3]))
    titanium = forest.lines_of("Ti I")
    iron = forest.lines_of("Fe I")
    assert np.all(widths[1, titanium] > widths[0, titanium])
    # Fe I lines change only through the changed electron pressure and opacity: < 10 %.
    assert np.median(np.abs(widths[1, iron] / widths[0, iron] - 1.0)) < 0.1


def test_ionized_lines_strengthen_with_lower_gravity_neutral_lines_do_not():
    forest = load_forest()
    widths = forest_equivalent_widths(layer(5000.0, [4.5, 2.5]))
    ion = forest.lines_of("Ti II")
    assert np.median(widths[1, ion] / widths[0, ion]) > 1.3


def test_ch_lines_follow_carbon_and_the_g_band_deepens():
    forest = load_forest()
    c_m = np.array([-0.4, 0.0, 0.4])
    widths = forest_equivalent_widths(layer(5000.0, 4.5, c_m=c_m))
    ch = forest.lines_of("CH")
    assert np.all(np.diff(widths[:, ch].sum(axis=1)) > 0)
    assert np.all(np.diff(widths[:, ch], axis=0) >= 0)
    flux = noiseless(teff=5000.0, logg=4.5, c_m=c_m)
    g_band = mean_depth(flux, 4290.0, 4318.0)
    assert np.all(np.diff(g_band) > 0.005)
    # The carbon signal is strongest in the G band, not spread evenly.
    change = np.abs(flux[-1] - flux[0])
    in_band = (WAVE > 4250.0) & (WAVE < 4330.0)
    red = (WAVE > 5500.0) & (WAVE < 5800.0)
    assert change[in_band].mean() > 5.0 * change[red].mean()


def test_cn_lines_follow_nitrogen_in_giants():
    forest = load_forest()
    n_m = np.array([-0.3, 0.2, 0.7])
    widths = forest_equivalent_widths(layer(4700.0, 2.3, n_m=n_m))
    cn = forest.lines_of("CN")
    assert np.all(np.diff(widths[:, cn].sum(axis=1)) > 0)
    # CH does not care about nitrogen (beyond the carbon CN takes).
    ch = forest.lines_of("CH")
    assert np.all(np.diff(widths[:, ch].sum(axis=1)) <= 0)
    flux = noiseless(teff=4700.0, logg=2.3, n_m=n_m)
    assert np.all(np.diff(mean_depth(flux, 4150.0, 4216.0)) > 0.002)


def test_mgh_grows_with_gravity_in_cool_dwarfs():
    forest = load_forest()
    logg = np.array([3.5, 4.0, 4.5, 5.0])
    widths = forest_equivalent_widths(layer(4200.0, logg))
    mgh = widths[:, forest.lines_of("MgH")].sum(axis=1)
    assert np.all(np.diff(mgh) > 0)
    assert mgh[-1] > 1.5 * mgh[0]
    # ... and is negligible in a giant of the same temperature.
    giant = forest_equivalent_widths(layer(4200.0, 1.5))[0, forest.lines_of("MgH")].sum()
    assert giant < 0.2 * mgh[-1]


def test_forest_fills_the_spectrum_between_the_strong_lines():
    # Solar spectrum, 4500-4800 A: most pixels absorb by more than 2 % (the old, line-poor
    # mock had a flat continuum over most of it).
    flux = noiseless(teff=5772.0, logg=4.44)[0]
    band = (WAVE > 4500.0) & (WAVE < 4800.0)
    assert np.mean(1.0 - flux[band] > 0.02) > 0.6
    # Cooler and more metal-rich means more absorbed.
    cool = noiseless(teff=[6500.0, 5500.0, 4500.0], logg=4.5)
    assert np.all(np.diff(mean_depth(cool, 4500.0, 5500.0)) > 0)


def test_forest_widths_do_not_depend_on_the_star_block():
    photospheres = layer(np.linspace(4000.0, 8000.0, 7), np.linspace(1.0, 5.0, 7), m_h=np.linspace(-2.0, 0.4, 7))
    one = forest_equivalent_widths(photospheres, star_block=1)
    many = forest_equivalent_widths(photospheres, star_block=5)
    assert np.array_equal(one, many)
    with pytest.raises(ValueError, match="star_block"):
        forest_equivalent_widths(photospheres, star_block=0)


# ---------------------------------------------------------------- real LAMOST spectra

#: rms of (real - mock) normalized flux on the 3900-5800 A grid, per DR1 obsid, for the
#: mock before the line forest (slamlib.mock of MOCK_VERSION 1: 418 lines, parametric
#: CH/CN/MgH bands), measured with exactly the procedure of the test below.
RMS_BEFORE_FOREST = {
    906020: 0.1373,  # K5 dwarf, S/N_g 43
    906045: 0.0970,  # K1 giant, S/N_g 10
    906202: 0.1049,  # K1 dwarf, S/N_g 20
    906040: 0.0647,  # G5, S/N_g 31
    906153: 0.0768,  # G2, S/N_g 12
    906026: 0.0364,  # F5, S/N_g 28
    906078: 0.0579,  # F5, S/N_g 15
    906207: 0.0353,  # A3V, S/N_g 36
}


def test_mock_matches_the_real_dr1_spectra_better_than_before(lamost_dr1_dir):
    from slamlib.io import read_lamost
    from slamlib.preprocess import prepare

    with open(lamost_dr1_dir / "labels.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    spectra = [read_lamost(lamost_dr1_dir / row["filename"], obsid=int(row["obsid"])) for row in rows]
    real = prepare(spectra)
    labels = Table(
        dict(
            teff=[float(row["teff"]) for row in rows],
            logg=[float(row["logg"]) for row in rows],
            m_h=[float(row["feh"]) for row in rows],
        )
    )
    mock = prepare(synthesize(labels, seed=0, noiseless=True))
    after = {}
    for i, row in enumerate(rows):
        good = (real.ivar[i] > 0) & (mock.ivar[i] > 0)
        after[int(row["obsid"])] = float(np.sqrt(np.mean((real.flux[i][good] - mock.flux[i][good]) ** 2)))
    print("rms before -> after:", {key: (RMS_BEFORE_FOREST[key], round(value, 4)) for key, value in after.items()})
    assert set(after) == set(RMS_BEFORE_FOREST)
    for obsid, rms in after.items():
        assert rms < RMS_BEFORE_FOREST[obsid], f"obsid {obsid}: rms {rms:.4f} did not fall below {RMS_BEFORE_FOREST[obsid]}"
    # Where the model, not the noise, dominated the residual (the K and G dwarfs), it falls by > 15 %.
    for obsid in (906202, 906040):
        assert after[obsid] < 0.85 * RMS_BEFORE_FOREST[obsid]


# ---------------------------------------------------------------- LASP-like labels


@pytest.fixture(scope="module")
def lasp_sample() -> Table:
    return lasp_test_sample(n_train=2000, n_test_per_bin=600, seed=3)


def _random_part(sample: Table, label: str, truth: str) -> np.ndarray:
    offsets = dict(zip(("teff", "logg", "feh"), lasp_systematics(np.asarray(sample["logg"]))))
    return np.asarray(sample[f"{label}_cat"]) - np.asarray(sample[truth]) - offsets[label]


@pytest.mark.parametrize("label, truth, paper_cv_scatter", [("teff", "teff", 50.0), ("logg", "logg", 0.10), ("feh", "m_h", 0.07)])
def test_lasp_errors_fall_with_snr_to_a_floor_below_the_paper_scatter(lasp_sample, label, truth, paper_cv_scatter):
    test = np.asarray(lasp_sample["set"]) == "test"
    bins = ["5-20", "20-40", "40-60", "60-80", "80-100", "100-120"]
    scatter = []
    for name in bins:
        rows = test & (np.asarray(lasp_sample["snr_bin"]) == name)
        scatter.append(np.std(_random_part(lasp_sample, label, truth)[rows]))
    scatter = np.array(scatter)
    assert np.all(np.diff(scatter) < 0), scatter
    assert scatter[-1] < 0.8 * paper_cv_scatter
    assert scatter[0] > 3.0 * scatter[-1]
    # The reported errors describe the random errors (conservatively: a little larger).
    high = test & (np.asarray(lasp_sample["snr_g"]) > 80)
    ratio = np.median(np.asarray(lasp_sample[f"{label}_err"])[high]) / np.std(_random_part(lasp_sample, label, truth)[high])
    assert 0.9 < ratio < 1.6


def test_lasp_catalogue_has_systematic_offsets_and_keeps_the_truth(lasp_sample):
    assert {"teff", "logg", "m_h", "teff_cat", "logg_cat", "feh_cat"} <= set(lasp_sample.colnames)
    train = np.asarray(lasp_sample["set"]) == "train"
    giants = train & (np.asarray(lasp_sample["logg"]) < 3.0)
    dwarfs = train & (np.asarray(lasp_sample["logg"]) > 4.0)
    offset = np.asarray(lasp_sample["logg_cat"]) - np.asarray(lasp_sample["logg"])
    assert np.median(offset[giants]) > np.median(offset[dwarfs]) + 0.08
    assert 30.0 < np.median((lasp_sample["teff_cat"] - lasp_sample["teff"])[train]) < 90.0


def test_paper_section3_error_cuts_keep_most_of_the_training_set(lasp_sample):
    train = np.asarray(lasp_sample["set"]) == "train"
    kept = (
        train
        & (np.asarray(lasp_sample["teff_err"]) < 200.0)
        & (np.asarray(lasp_sample["logg_err"]) < 0.1)
        & (np.asarray(lasp_sample["feh_err"]) < 0.1)
    )
    assert kept.sum() > 0.8 * train.sum()
    # At low S/N the same cuts remove most stars, as they do in LAMOST.
    low = np.asarray(lasp_sample["snr_bin"]) == "5-20"
    kept_low = low & (np.asarray(lasp_sample["logg_err"]) < 0.1)
    assert kept_low.sum() < 0.1 * low.sum()


# ---------------------------------------------------------------- label information in the spectra


@pytest.mark.slow
def test_small_section3_model_learns_flux_from_labels_over_the_whole_window():
    from slamlib.model import SlamModel
    from slamlib.preprocess import prepare

    sample = lasp_test_sample(n_train=300, n_test_per_bin=0, seed=11)
    prepared = prepare(synthesize(sample, seed=11))
    keep = prepared.n_bad < 50
    labels = np.column_stack([np.asarray(sample[name], dtype=float) for name in ("teff_cat", "logg_cat", "feh_cat")])
    model = SlamModel(param_grid={"C": [10.0], "gamma": [0.1]}, cv=3, n_jobs=1, random_state=0).fit(
        prepared.flux[keep], prepared.ivar[keep], labels[keep], ["teff", "logg", "feh"], wave=prepared.wave
    )
    cod_full = 1.0 - np.asarray(model.cv_mse_)
    assert prepared.wave[0] <= 3901.0 and prepared.wave[-1] >= 5799.0
    print("median COD_full", float(np.median(cod_full)), "fraction > 0.1", float(np.mean(cod_full > 0.1)))
    assert np.median(cod_full) > 0.3
    assert np.mean(cod_full > 0.1) > 0.6
