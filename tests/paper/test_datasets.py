"""The chapters' data layer: mock samples, and the real-data path served from a loopback server."""

import functools
import http.server
import threading

import numpy as np
import pytest
from astropy.table import Table

from slamlib import mock
from slampaper import datasets


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SLAMLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def spectrum_server(tmp_path):
    """A loopback HTTP server for LAMOST-format files in ``tmp_path / 'archive'``."""
    archive = tmp_path / "archive"
    archive.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield archive, f"http://127.0.0.1:{server.server_address[1]}/{{obsid}}.fits"
    server.shutdown()
    server.server_close()


def _catalogue_with_archive(archive, n_train, n_test_per_bin):
    """A LAMOST-catalogue-like table and its spectra as files named <obsid>.fits."""
    sample = mock.lasp_test_sample(n_train, n_test_per_bin, seed=3)
    spectra = mock.synthesize(sample, seed=3)
    for spectrum, path in zip(spectra, mock.write_lamost_fits(spectra, archive)):
        path.rename(archive / f"{spectrum.meta['obsid']}.fits")
    catalog = Table({"obsid": sample["obsid"], "ra": sample["ra"], "dec": sample["dec"], "snrg": sample["snr_g"],
                     "teff": sample["teff_cat"], "teff_err": np.full(len(sample), 80.0),
                     "logg": sample["logg_cat"], "logg_err": np.full(len(sample), 0.05),
                     "feh": sample["feh_cat"], "feh_err": np.full(len(sample), 0.05), "rv": sample["rv"]})
    return catalog


def test_lamost_source_downloads_reads_and_prepares_the_paper_selection(cache, spectrum_server):
    archive, base_url = spectrum_server
    catalog = _catalogue_with_archive(archive, n_train=12, n_test_per_bin=3)
    missing = int(catalog["obsid"][0])
    (archive / f"{missing}.fits").unlink()  # one spectrum the archive does not have
    sample = datasets.load_lasp_test("lamost", n_train=12, n_test_per_bin=2, seed=0, catalog=catalog, base_url=base_url)
    assert sample.data_source == "lamost"
    selected_train = np.asarray(sample.labels["set"]) == "train"
    # the paper's cuts: 120 < S/N_g < 140 for training, six test bins; all 12 candidates asked for, one missing
    assert np.all((sample.labels["snr_g"][selected_train] > 120) & (sample.labels["snr_g"][selected_train] < 140))
    assert sample.labels.meta["n_missing"] == 1 and selected_train.sum() == 11
    assert set(np.asarray(sample.labels["snr_bin"])[~selected_train]) <= {f"{lo:g}-{hi:g}" for lo, hi in datasets.LASP_TEST_SNR_BINS}
    assert missing not in set(np.asarray(sample.labels["obsid"]))
    assert sample.flux.shape == (len(sample), 1901) and np.all(np.isfinite(sample.flux))
    assert np.median(sample.flux[sample.ivar > 0]) == pytest.approx(1.0, abs=0.1)
    for column in ("teff_cat", "logg_cat", "feh_cat", "snr_g"):
        assert column in sample.labels.colnames
    # a second call reads the prepared cache instead of downloading again
    (archive / f"{int(catalog['obsid'][1])}.fits").unlink()
    again = datasets.load_lasp_test("lamost", n_train=12, n_test_per_bin=2, seed=0, catalog=catalog, base_url=base_url)
    np.testing.assert_array_equal(again.flux, sample.flux)


def test_lamost_source_without_any_spectrum_says_what_to_do(cache, spectrum_server):
    archive, base_url = spectrum_server
    catalog = _catalogue_with_archive(archive, n_train=4, n_test_per_bin=1)
    for path in archive.iterdir():
        path.unlink()
    with pytest.raises(ValueError, match='data_source="mock"'):
        datasets.load_lasp_test("lamost", n_train=4, n_test_per_bin=1, catalog=catalog, base_url=base_url)


def test_mock_sample_is_cached_and_restricts_wavelengths(cache):
    sample = datasets.load_lasp_test("mock", n_train=12, n_test_per_bin=2, seed=1)
    again = datasets.load_lasp_test("mock", n_train=12, n_test_per_bin=2, seed=1)
    np.testing.assert_array_equal(sample.flux, again.flux)
    assert sample.cache_key == again.cache_key
    window = sample.restrict_wavelengths(5000.0, 5100.0)
    assert window.wave[0] >= 5000.0 and window.wave[-1] <= 5100.0 and window.flux.shape[1] == window.wave.size
    assert window.cache_key != sample.cache_key
    # The bad-pixel count keeps describing the whole spectrum (the paper's cut is on all pixels).
    np.testing.assert_array_equal(window.n_bad, sample.n_bad)
    with pytest.raises(ValueError, match="increasing"):
        sample.restrict_wavelengths(5100.0, 5000.0)
    with pytest.raises(ValueError, match="data_source"):
        datasets.load_lasp_test("sdss")


def test_subsets_with_the_same_name_but_other_rows_get_other_cache_keys(cache):
    sample = datasets.load_lasp_test("mock", n_train=12, n_test_per_bin=2, seed=1)
    first = sample.subset(np.arange(len(sample)) < 10, "train")
    same = sample.subset(np.arange(10), "train")
    other = sample.subset(np.arange(len(sample)) < 11, "train")
    assert first.cache_key == same.cache_key
    assert other.cache_key != first.cache_key
