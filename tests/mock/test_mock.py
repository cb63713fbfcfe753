"""API, reproducibility, validation, FITS output and label samples of slamlib.mock."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

import slamlib.mock as mock
from slamlib.io import SpectrumBatch, read_lamost
from slamlib.mock import (
    apogee_common_sample,
    lasp_test_sample,
    synthesize,
    write_lamost_fits,
)
from slamlib.mock.observe import MASK_COSMIC_RAY, MASK_SKY_RESIDUAL
from slamlib.mock.samples import ASPCAP_STAR_BAD, LASP_SNR_BINS

LABEL_NAMES = ("teff", "logg", "m_h", "alpha_m", "c_m", "n_m", "rv", "snr_g")


@pytest.fixture(scope="module")
def labels() -> Table:
    return Table(
        dict(
            teff=[4300.0, 5800.0, 7200.0, 9500.0, 4700.0],
            logg=[4.6, 4.4, 4.0, 4.0, 2.3],
            m_h=[0.1, 0.0, -0.5, -0.2, -1.2],
            alpha_m=[0.0, 0.0, 0.1, 0.0, 0.3],
            rv=[-40.0, 10.0, 0.0, 25.0, 150.0],
            snr_g=[20.0, 60.0, 100.0, 35.0, 8.0],
        )
    )


@pytest.fixture(scope="module")
def batch(labels) -> SpectrumBatch:
    return synthesize(labels, seed=7)


def test_synthesize_returns_lamost_shaped_batch(batch, labels):
    assert isinstance(batch, SpectrumBatch)
    assert batch.wave.shape == (3904,)
    np.testing.assert_allclose(np.log10(batch.wave), 3.5682 + 1e-4 * np.arange(3904), atol=1e-12)
    for name in ("flux", "ivar", "ormask"):
        assert getattr(batch, name).shape == (len(labels), 3904)
    assert batch.flux_norm is None
    for column in ("obsid", "ra", "dec", "z", "rv", "snrg", "snru", "snrr", "snri", "snrz", "designation", "subclass"):
        assert column in batch.meta.colnames
    assert len(set(batch.meta["obsid"])) == len(labels)
    assert np.all(np.isfinite(batch.flux)) and np.all(batch.ivar >= 0)


def test_flagged_pixels_have_zero_ivar_and_flags_occur(labels):
    many = Table({name: np.tile(labels[name], 8) for name in labels.colnames})
    result = synthesize(many, seed=3)
    flagged = result.ormask > 0
    assert flagged.any()
    assert np.all(result.ivar[flagged] == 0)
    mask = result.ormask.astype(np.int64)
    assert np.any(mask & MASK_SKY_RESIDUAL) and np.any(mask & MASK_COSMIC_RAY)
    # 5577 A sky line (5578.9 A vacuum) is among the flagged sky residuals.
    sky_pixel = np.argmin(np.abs(result.wave - 5578.88))
    assert np.any(mask[:, sky_pixel] & MASK_SKY_RESIDUAL)


def test_same_seed_reproduces_bit_for_bit_and_other_seeds_differ(labels, batch):
    again = synthesize(labels, seed=7, chunk_size=2)
    for name in ("flux", "ivar", "ormask"):
        assert np.array_equal(getattr(batch, name), getattr(again, name))
    assert all(np.array_equal(batch.meta[c], again.meta[c]) for c in batch.meta.colnames)
    other = synthesize(labels, seed=8)
    assert not np.array_equal(batch.flux, other.flux)


def test_noiseless_mode_gives_flux_norm_and_no_flags(labels):
    clean = synthesize(labels, seed=7, noiseless=True)
    assert clean.flux_norm is not None and clean.flux_norm.shape == clean.flux.shape
    assert np.all(clean.ormask == 0) and np.all(clean.ivar > 0)
    assert np.all((clean.flux_norm > 0) & (clean.flux_norm <= 1 + 1e-12))
    # snr_g is ignored when noiseless, even if invalid.
    bad = labels.copy()
    bad["snr_g"] = -1.0
    synthesize(bad, noiseless=True)


def test_missing_optional_labels_take_defaults():
    defaults = dict(m_h=[0.0], alpha_m=[0.0], c_m=[0.0], n_m=[0.0], rv=[0.0], snr_g=[100.0])
    explicit = synthesize(dict(teff=[5000.0], logg=[3.0]) | defaults, seed=1)
    implicit = synthesize(dict(teff=[5000.0], logg=[3.0]), seed=1)
    assert np.array_equal(explicit.flux, implicit.flux)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"teff": [2000.0]}, "teff"),
        ({"teff": [16000.0]}, "teff"),
        ({"snr_g": [0.0]}, "snr_g"),
        ({"snr_g": [-5.0]}, "snr_g"),
        ({"logg": [np.nan]}, "logg"),
        ({"m_h": [3.0]}, "m_h"),
    ],
)
def test_invalid_labels_raise(change, message):
    labels = dict(teff=[5000.0], logg=[4.0], snr_g=[50.0]) | change
    with pytest.raises(ValueError, match=message):
        synthesize(labels)


def test_missing_required_label_raises():
    with pytest.raises(ValueError, match="teff"):
        synthesize(dict(logg=[4.0]))


def test_caller_labels_are_not_modified(labels):
    before = labels.copy()
    synthesize(labels, seed=1)
    assert all(np.array_equal(before[c], labels[c]) for c in labels.colnames)


@pytest.mark.parametrize("layout", ["dr5", "dr1", "dr9"])
def test_fits_round_trip_through_read_lamost(batch, tmp_path, layout):
    paths = write_lamost_fits(batch, tmp_path / layout, layout=layout)
    assert len(paths) == len(batch)
    assert paths[0].name == "spec-58000-MOCK000_sp01-001.fits"
    for i, path in enumerate(paths):
        spectrum = read_lamost(path, obsid=int(batch.meta["obsid"][i]) if layout == "dr1" else None)
        np.testing.assert_allclose(spectrum.wave, batch.wave, rtol=1e-6)
        np.testing.assert_allclose(spectrum.flux, batch.flux[i], rtol=1e-6, atol=1e-6 * np.abs(batch.flux[i]).max())
        np.testing.assert_allclose(spectrum.ivar, batch.ivar[i], rtol=1e-6)
        np.testing.assert_array_equal(spectrum.ormask, batch.ormask[i])
        assert spectrum.meta["obsid"] == batch.meta["obsid"][i]
        assert spectrum.meta["ra"] == pytest.approx(batch.meta["ra"][i])
        assert spectrum.meta["snrg"] == pytest.approx(batch.meta["snrg"][i])
        assert spectrum.meta["rv"] == pytest.approx(batch.meta["rv"][i], abs=1e-6)
        assert spectrum.meta["fiberid"] == batch.meta["fiberid"][i]


def test_write_refuses_to_overwrite(batch, tmp_path):
    write_lamost_fits(batch, tmp_path)
    with pytest.raises(OSError):
        write_lamost_fits(batch, tmp_path)
    write_lamost_fits(batch, tmp_path, overwrite=True)


def test_lasp_test_sample_columns_sets_and_bins():
    sample = lasp_test_sample(n_train=300, n_test_per_bin=40, seed=5)
    assert len(sample) == 300 + 6 * 40
    catalogue = ("teff_cat", "teff_err", "logg_cat", "logg_err", "feh_cat", "feh_err")
    for column in (*LABEL_NAMES, "set", "snr_bin", "obsid", "ra", "dec", *catalogue):
        assert column in sample.colnames
    train = sample["set"] == "train"
    assert train.sum() == 300
    assert np.all((sample["snr_g"][train] > 120) & (sample["snr_g"][train] < 140))
    for low, high in LASP_SNR_BINS:
        rows = sample["snr_bin"] == f"{low}-{high}"
        assert rows.sum() == 40 and np.all(sample["set"][rows] == "test")
        assert np.all((sample["snr_g"][rows] >= low) & (sample["snr_g"][rows] <= high))
    assert np.all((sample["teff"] >= 4000) & (sample["teff"] <= 8000))
    assert -2.5 <= sample["m_h"].min() and sample["m_h"].max() <= 0.5
    assert len(set(sample["obsid"])) == len(sample)
    giants = sample["logg"] < 3.5
    assert 0.15 < giants.mean() < 0.6
    # Catalogue errors: a few tens of K at high S/N (below the paper's 50 K CV scatter),
    # several times larger at low S/N (details in test_mock_forest.py).
    high = sample["snr_g"] > 100
    low = sample["snr_g"] < 20
    scatter_high = np.std(sample["teff_cat"][high] - sample["teff"][high])
    scatter_low = np.std(sample["teff_cat"][low] - sample["teff"][low])
    assert 15 < scatter_high < 50 and scatter_low > 3.0 * scatter_high
    assert lasp_test_sample(300, 40, 5).pformat() == sample.pformat()


def test_apogee_common_sample_populations_and_flags():
    sample = apogee_common_sample(3000, seed=2)
    apogee = ("SNR", "ASPCAPFLAG", "STARFLAG", "TEFF", "TEFF_ERR", "LOGG", "M_H", "ALPHA_M", "C_M", "N_M")
    for column in (*LABEL_NAMES, *apogee, "snrg", "teff_cat"):
        assert column in sample.colnames
    giants = sample["population"] == "red_giant_branch"
    assert 0.6 < giants.mean() < 0.9
    assert np.any(sample["population"] == "red_clump") and np.any(sample["population"] == "main_sequence")
    assert np.all(sample["logg"][sample["population"] == "main_sequence"] > 3.7)
    # Thick disc: high-alpha at low metallicity; thin disc: low alpha at solar metallicity.
    metal_poor = sample["m_h"] < -0.8
    solar = np.abs(sample["m_h"]) < 0.1
    assert np.median(sample["alpha_m"][metal_poor]) > np.median(sample["alpha_m"][solar]) + 0.1
    # First dredge-up: [C/N] lower on the upper giant branch than near its base.
    c_n = sample["c_m"] - sample["n_m"]
    assert np.median(c_n[giants & (sample["logg"] < 2.0)]) < np.median(c_n[giants & (sample["logg"] > 3.2)]) - 0.1
    # Every quality cut has something to cut.
    assert np.any(sample["ASPCAPFLAG"] & ASPCAP_STAR_BAD) and not np.all(sample["ASPCAPFLAG"] & ASPCAP_STAR_BAD)
    assert np.any(sample["STARFLAG"] != 0)
    assert np.any(sample["SNR"] < 70) and np.any(sample["snrg"] < 20)
    assert np.any(np.isnan(sample["C_M"]))
    assert np.any(sample["TEFF_ERR"] > 150)
    # LAMOST-like labels carry a systematic offset relative to the APOGEE-like ones.
    assert 30 < np.median(sample["teff_cat"] - sample["TEFF"]) < 90


@pytest.mark.parametrize(
    "call",
    [
        lambda: lasp_test_sample(-1, 5, 0),
        lambda: lasp_test_sample(0, 0, 0),
        lambda: apogee_common_sample(0, 1),
        lambda: apogee_common_sample(10, -3),
    ],
)
def test_sample_arguments_are_validated(call):
    with pytest.raises(ValueError):
        call()


def test_samples_synthesize_without_errors():
    sample = lasp_test_sample(5, 1, seed=1)
    spectra = synthesize(sample, seed=1)
    assert np.array_equal(spectra.meta["obsid"], sample["obsid"])
    apogee = apogee_common_sample(20, seed=4)
    synthesize(apogee, seed=4)


def test_public_api_names():
    for name in ("synthesize", "write_lamost_fits", "lasp_test_sample", "apogee_common_sample", "survey", "measure_snr"):
        assert callable(getattr(mock, name))


def test_lasp_test_sample_training_snr_range_moves_only_the_training_set():
    paper = lasp_test_sample(n_train=200, n_test_per_bin=10, seed=5)
    noisy = lasp_test_sample(n_train=200, n_test_per_bin=10, seed=5, train_snr_range=(20.0, 40.0))
    train = np.asarray(noisy["set"]) == "train"
    snr = np.asarray(noisy["snr_g"])
    assert np.all((snr[train] >= 20.0) & (snr[train] <= 40.0))
    assert set(np.asarray(noisy["snr_bin"])[train]) == {"20-40"}
    assert np.all(np.asarray(paper["snr_g"])[train] >= 120.0)
    # the test sets keep their own S/N bins
    np.testing.assert_array_equal(np.asarray(noisy["snr_bin"])[~train], np.asarray(paper["snr_bin"])[~train])


@pytest.mark.parametrize("bad", [(40.0, 20.0), (1.0, 30.0), (np.nan, 30.0), (20.0,), "high"])
def test_lasp_test_sample_refuses_a_bad_training_snr_range(bad):
    with pytest.raises(ValueError, match="train_snr_range"):
        lasp_test_sample(n_train=10, n_test_per_bin=1, seed=0, train_snr_range=bad)
