"""The ``slam`` command line: mock -> train -> predict -> cod, resumable chunks, flagged bad input, clear errors."""

from __future__ import annotations

import json
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from survey_files import write_survey
from synthetic_data import LABEL_NAMES

import slamlib.pipeline.catalog_prediction as catalog_prediction
from slamlib import SlamModel, modelfile
from slamlib.pipeline.cli import build_parser, main

TINY_MODEL = ["--grid-c", "10", "--grid-gamma", "0.1", "--cv", "3", "--n-jobs", "1"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLAMLIB_CACHE", str(tmp_path / "cache"))


def read_catalogue(path: Path) -> Table:
    return Table.read(path, mask_invalid=False, character_as_bytes=False)


@pytest.fixture(scope="module")
def mock_survey(tmp_path_factory):
    """Mock LAMOST FITS files: 30 training and 6 test stars, and a model trained on 4000-4100 A."""
    directory = tmp_path_factory.mktemp("mock")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLAMLIB_CACHE", str(directory / "cache"))
        assert main(["mock", str(directory / "train"), "--n-stars", "30", "--seed", "1", "--n-jobs", "1"]) == 0
        assert main(["mock", str(directory / "test"), "--n-stars", "6", "--seed", "2", "--snr", "60",
                     "--layout", "dr9", "--n-jobs", "1"]) == 0
        assert main(["train", str(directory / "train" / "labels.csv"), "--labels", "teff", "logg", "m_h",
                     "--spectra-column", "path", "--output", str(directory / "model.npz"),
                     "--wave-min", "4000", "--wave-max", "4100", *TINY_MODEL]) == 0
    return directory


def test_console_script_and_help_with_examples(capsys):
    scripts = {entry.name: entry.value for entry in entry_points(group="console_scripts")}
    assert scripts.get("slam") == "slamlib.pipeline.cli:main"
    for command in ([], ["mock"], ["train"], ["predict"], ["cod"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        assert "examples" in capsys.readouterr().out
    assert set(build_parser()._subparsers._group_actions[0].choices) == {"mock", "train", "predict", "cod"}


def test_mock_writes_an_arrays_file_on_the_requested_grid(tmp_path):
    assert main(["mock", str(tmp_path), "--n-stars", "3", "--format", "arrays", "--wave-min", "4000",
                 "--wave-max", "4050", "--n-jobs", "1"]) == 0
    with np.load(tmp_path / "spectra.npz") as arrays:
        assert arrays["flux"].shape == arrays["ivar"].shape == (3, 51)
        np.testing.assert_array_equal(arrays["wave"], 4000.0 + np.arange(51))
    assert "path" not in Table.read(tmp_path / "labels.csv").colnames


def test_mock_writes_a_table_and_lamost_files(mock_survey):
    table = Table.read(mock_survey / "train" / "labels.csv")
    assert len(table) == 30 and {"obsid", "teff", "logg", "m_h", "snr_g", "path"} <= set(table.colnames)
    assert all((mock_survey / "train" / path).is_file() for path in table["path"])


def test_mock_train_predict_with_spectrum_files(mock_survey, capsys):
    model = SlamModel.load(mock_survey / "model.npz")
    assert model.label_names_ == ["teff", "logg", "m_h"] and model.n_pix_ == 101
    assert not (mock_survey / "model.npz.checkpoint").exists()
    output = mock_survey / "labels.fits"
    assert main(["predict", str(mock_survey / "model.npz"), str(mock_survey / "test" / "labels.csv"),
                 "--spectra-column", "path", "--output", str(output), "--n-jobs", "1"]) == 0
    assert "6 spectra" in capsys.readouterr().out
    catalogue = read_catalogue(output)
    assert catalogue.colnames == ["row", "obsid", "path", "teff", "teff_err", "teff_err_cv", "logg", "logg_err",
                                  "logg_err_cv", "m_h", "m_h_err", "m_h_err_cv", "rchi2", "rms", "max_residual",
                                  "converged", "good_fit", "extrapolated", "trusted", "n_iter", "n_good_pixels",
                                  "n_clipped", "snr", "err_cv_extrapolated", "reason"]
    truth = Table.read(mock_survey / "test" / "labels.csv")
    np.testing.assert_array_equal(catalogue["obsid"], truth["obsid"])
    assert np.all(catalogue["snr"] > 10)
    assert np.all(catalogue["converged"] == (catalogue["reason"] == ""))
    assert not (mock_survey / "labels.fits.chunks").exists()


def test_unreadable_files_are_flagged_and_the_run_goes_on(mock_survey, tmp_path):
    table = Table.read(mock_survey / "test" / "labels.csv")
    table["path"] = [str(mock_survey / "test" / path) for path in table["path"]]
    good_file = Path(table["path"][0]).read_bytes()
    (tmp_path / "empty.fits").write_bytes(b"")
    (tmp_path / "truncated.fits").write_bytes(good_file[: len(good_file) // 3])
    (tmp_path / "noise.fits").write_bytes(np.random.default_rng(0).bytes(5000))
    table["path"][1:5] = [str(tmp_path / name) for name in ("empty.fits", "truncated.fits", "noise.fits", "gone.fits")]
    table.write(tmp_path / "targets.fits")
    assert main(["predict", str(mock_survey / "model.npz"), str(tmp_path / "targets.fits"), "--spectra-column",
                 "path", "--output", str(tmp_path / "out.fits"), "--n-jobs", "1", "--chunk-size", "4"]) == 0
    catalogue = read_catalogue(tmp_path / "out.fits")
    assert len(catalogue) == 6
    for row in catalogue[1:5]:
        assert row["reason"].startswith("unreadable file: ") and not row["converged"] and np.isnan(row["teff"])
    assert "empty" in catalogue["reason"][1] and "does not exist" in catalogue["reason"][4]
    assert catalogue["converged"][0] and catalogue["converged"][5]


@pytest.fixture(scope="module")
def arrays_survey(tmp_path_factory):
    """A synthetic training set and a target set as arrays files, and a model trained on 20 of 30 pixels."""
    directory = tmp_path_factory.mktemp("arrays")
    train_table, train_arrays = write_survey(directory, n_star=40, n_pix=30, seed=0, name="train")
    target_table, target_arrays = write_survey(directory, n_star=11, n_pix=30, seed=1, name="targets")
    assert main(["train", str(train_table), "--labels", *LABEL_NAMES, "--arrays", str(train_arrays),
                 "--output", str(directory / "model.npz"), "--wave-min", "4005", "--wave-max", "4024",
                 *TINY_MODEL]) == 0
    return directory


def test_predict_from_an_arrays_file_selects_the_model_grid(arrays_survey):
    model = SlamModel.load(arrays_survey / "model.npz")
    np.testing.assert_array_equal(model.wave_, 4005.0 + np.arange(20))
    output = arrays_survey / "labels.fits"
    assert main(["predict", str(arrays_survey / "model.npz"), str(arrays_survey / "targets.csv"),
                 "--arrays", str(arrays_survey / "targets.npz"), "--output", str(output), "--n-jobs", "1"]) == 0
    catalogue = read_catalogue(output)
    assert len(catalogue) == 11 and catalogue["converged"].all()
    truth = Table.read(arrays_survey / "targets.csv")
    assert np.median(np.abs(catalogue["teff"] - truth["teff"])) < 150


def test_train_backend_option_chooses_the_training_engine(arrays_survey, tmp_path):
    """--backend libsvm trains with the reference; the default model (batched) agrees with it."""
    assert SlamModel.load(arrays_survey / "model.npz").backend == "batched"
    assert main(["train", str(arrays_survey / "train.csv"), "--labels", *LABEL_NAMES, "--arrays",
                 str(arrays_survey / "train.npz"), "--output", str(tmp_path / "libsvm.npz"), "--wave-min", "4005",
                 "--wave-max", "4024", "--backend", "libsvm", *TINY_MODEL]) == 0
    reference = SlamModel.load(tmp_path / "libsvm.npz")
    batched = SlamModel.load(arrays_survey / "model.npz")
    assert reference.backend == "libsvm"
    np.testing.assert_allclose(reference.cv_mse_, batched.cv_mse_, rtol=1e-2)


def test_rerun_skips_finished_chunks(arrays_survey, tmp_path, monkeypatch):
    arguments = ["predict", str(arrays_survey / "model.npz"), "--arrays", str(arrays_survey / "targets.npz"),
                 "--output", str(tmp_path / "out.fits"), "--chunk-size", "4", "--keep-chunks", "--n-jobs", "1"]
    assert main(arguments) == 0
    first = read_catalogue(tmp_path / "out.fits")
    chunks = sorted((tmp_path / "out.fits.chunks").glob("rows-*.fits"))
    assert [path.name for path in chunks] == ["rows-0000000000-0000000004.fits", "rows-0000000004-0000000008.fits",
                                              "rows-0000000008-0000000011.fits"]
    chunks[1].unlink()  # as if the run had been killed while fitting this chunk
    fitted_rows = []
    original = catalog_prediction.predict_rows

    def counting(model, prepared, **options):
        fitted_rows.append(len(prepared))
        return original(model, prepared, **options)

    monkeypatch.setattr(catalog_prediction, "predict_rows", counting)
    assert main(arguments) == 0
    assert fitted_rows == [4]
    second = read_catalogue(tmp_path / "out.fits")
    for name in first.colnames:
        np.testing.assert_array_equal(first[name], second[name])


def test_chunks_of_another_model_are_recomputed(arrays_survey, tmp_path, monkeypatch):
    arguments = ["--arrays", str(arrays_survey / "targets.npz"), "--output", str(tmp_path / "out.fits"),
                 "--chunk-size", "6", "--keep-chunks", "--n-jobs", "1"]
    assert main(["predict", str(arrays_survey / "model.npz"), *arguments]) == 0
    other = tmp_path / "other.npz"
    assert main(["train", str(arrays_survey / "train.csv"), "--labels", *LABEL_NAMES, "--arrays",
                 str(arrays_survey / "train.npz"), "--output", str(other), "--wave-min", "4005", "--wave-max", "4024",
                 "--grid-c", "100", "--grid-gamma", "0.1", "--cv", "3", "--n-jobs", "1"]) == 0
    fitted_rows = []
    original = catalog_prediction.predict_rows

    def counting(model, prepared, **options):
        fitted_rows.append(len(prepared))
        return original(model, prepared, **options)

    monkeypatch.setattr(catalog_prediction, "predict_rows", counting)
    assert main(["predict", str(other), *arguments]) == 0
    assert fitted_rows == [6, 5]
    assert read_catalogue(tmp_path / "out.fits").meta["MODELSHA"] == modelfile.load_arrays(other)[1]["sha256"]


def test_cod_writes_one_row_per_pixel(arrays_survey, tmp_path):
    output = tmp_path / "cods.fits"
    assert main(["cod", str(arrays_survey / "train.csv"), "--labels", "teff", "logg", "--arrays",
                 str(arrays_survey / "train.npz"), "--output", str(output), "--wave-max", "4009", *TINY_MODEL]) == 0
    cods = Table.read(output)
    assert len(cods) == 10
    assert cods.colnames == ["wave", "mse_full", "cod_full", "cod_teff", "mse_without_teff", "cod_logg",
                             "mse_without_logg"]
    np.testing.assert_allclose(cods["cod_teff"] + cods["cod_logg"], cods["cod_full"], atol=1e-12)


def test_training_leaves_out_bad_rows_and_says_how_many(arrays_survey, tmp_path, capsys):
    table = Table.read(arrays_survey / "train.csv")
    table["teff"][0] = np.nan
    table.write(tmp_path / "train.csv")
    with np.load(arrays_survey / "train.npz") as arrays:
        wave, flux, ivar = arrays["wave"], arrays["flux"].copy(), arrays["ivar"].copy()
    ivar[1, :] = 0.0
    ivar[2, :25] = -1.0
    ivar[3, :] = 0.0
    from slamlib.pipeline.catalog_input import write_arrays_file

    write_arrays_file(tmp_path / "train.npz", wave, flux, ivar)
    assert main(["train", str(tmp_path / "train.csv"), "--labels", *LABEL_NAMES, "--arrays", str(tmp_path / "train.npz"),
                 "--output", str(tmp_path / "model.npz"), "--max-bad-pixels", "20", *TINY_MODEL]) == 0
    error = capsys.readouterr().err
    assert "left out 4 of 40 training spectra" in error
    assert "1 with missing or non-finite labels, 0 with sentinel or unphysical labels, 3 with more than 20 bad pixels" \
        in error
    assert SlamModel.load(tmp_path / "model.npz").file_header_["metadata"]["n_train"] == 36


def test_a_checkpoint_of_other_parameters_stops_training_until_restart(arrays_survey, tmp_path, capsys):
    common = ["train", str(arrays_survey / "train.csv"), "--labels", *LABEL_NAMES, "--arrays",
              str(arrays_survey / "train.npz"), "--output", str(tmp_path / "model.npz"), "--keep-checkpoint",
              "--wave-max", "4009", "--n-jobs", "1", "--cv", "3", "--grid-gamma", "0.1"]
    assert main([*common, "--grid-c", "10"]) == 0
    assert (tmp_path / "model.npz.checkpoint" / "checkpoint.json").exists()
    capsys.readouterr()
    assert main([*common, "--grid-c", "100"]) == 1
    assert "belongs to a different training" in capsys.readouterr().err
    assert main([*common, "--grid-c", "100", "--restart"]) == 0
    assert SlamModel.load(tmp_path / "model.npz").param_grid["C"] == [100.0]


def corrupt_copies(model_path: Path, directory: Path) -> dict[str, Path]:
    data = model_path.read_bytes()
    copies = {"truncated": directory / "truncated.npz", "tampered": directory / "tampered.npz",
              "newer": directory / "newer.npz", "pickle": directory / "pickle.npz", "empty": directory / "empty.npz"}
    copies["truncated"].write_bytes(data[: len(data) // 2])
    copies["empty"].write_bytes(b"")
    arrays, header = modelfile.load_arrays(model_path)
    arrays["intercept"] = arrays["intercept"] + 1e-12
    with zipfile.ZipFile(copies["tampered"], "w") as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, value)
        with archive.open("__metadata__.npy", "w") as member:
            np.lib.format.write_array(member, np.array(json.dumps(header)))
    with zipfile.ZipFile(model_path) as source, zipfile.ZipFile(copies["newer"], "w") as archive:
        for name in source.namelist():
            if name == "__metadata__.npy":
                with archive.open(name, "w") as member:
                    newer_header = {**header, "format_version": modelfile.FORMAT_VERSION + 1}
                    np.lib.format.write_array(member, np.array(json.dumps(newer_header)))
            else:
                archive.writestr(name, source.read(name))
    np.savez(copies["pickle"], dual_coef=np.array([{"exploit": 1}], dtype=object))
    return copies


def test_damaged_or_foreign_model_files_give_clear_errors(arrays_survey, tmp_path, capsys):
    expected = {"truncated": "truncated or damaged", "tampered": "checksum mismatch", "newer": "newer than this slamlib",
                "pickle": "not a readable slamlib model file", "empty": "not a slamlib model file: it is empty"}
    for kind, path in corrupt_copies(arrays_survey / "model.npz", tmp_path).items():
        status = main(["predict", str(path), "--arrays", str(arrays_survey / "targets.npz"),
                       "--output", str(tmp_path / "out.fits"), "--n-jobs", "1"])
        error = capsys.readouterr().err
        assert status == 1 and error.startswith("slam: error: ") and expected[kind] in error, (kind, error)
    assert not (tmp_path / "out.fits").exists()


@pytest.mark.parametrize("arguments, message", [
    (["train", "{dir}/train.csv", "--labels", "teff", "vmic", "--arrays", "{dir}/train.npz", "--output", "{tmp}/m.npz"],
     "no label column(s) ['vmic']"),
    (["train", "{tmp}/missing.csv", "--labels", "teff", "--arrays", "{dir}/train.npz", "--output", "{tmp}/m.npz"],
     "does not exist"),
    (["train", "{dir}/train.csv", "--labels", "teff", "--output", "{tmp}/m.npz"], "--spectra-column"),
    (["train", "{dir}/train.csv", "--labels", "teff", "--arrays", "{dir}/targets.npz", "--output", "{tmp}/m.npz"],
     "has 11 spectra, the table 40 rows"),
    (["train", "{dir}/train.csv", "--labels", "teff", "--arrays", "{dir}/train.npz", "--output", "{tmp}/m.npz",
      "--epsilon", "-1"], "epsilon must be a non-negative number"),
    (["train", "{dir}/train.csv", "--labels", "teff", "--arrays", "{dir}/train.npz", "--output", "{tmp}/m.npz",
      "--wave-min", "6000"], "no pixels of"),
    (["predict", "{dir}/model.npz", "--arrays", "{tmp}/shifted.npz", "--output", "{tmp}/c.fits"],
     "does not contain the model's grid"),
    (["predict", "{dir}/model.npz", "--arrays", "{dir}/train.csv", "--output", "{tmp}/c.fits"],
     "is not an npz arrays file"),
])
def test_bad_input_stops_with_an_actionable_message(arrays_survey, tmp_path, capsys, arguments, message):
    from slamlib.pipeline.catalog_input import write_arrays_file

    write_arrays_file(tmp_path / "shifted.npz", 4000.5 + np.arange(30), np.ones((2, 30)), np.ones((2, 30)))
    arguments = [argument.format(dir=arrays_survey, tmp=tmp_path) for argument in arguments]
    assert main([*arguments, "--n-jobs", "1"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("slam: error: ") and message in error, error


def test_spectra_column_and_arrays_together_is_a_usage_error(arrays_survey, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(arrays_survey / "model.npz"), str(arrays_survey / "targets.csv"), "--arrays",
              str(arrays_survey / "targets.npz"), "--spectra-column", "path", "--output", "x.fits"])
    assert exit_info.value.code == 2
    assert "not both" in capsys.readouterr().err


def test_progress_bars_on_request_and_quiet_by_default(arrays_survey, tmp_path, capsys):
    train = ["train", str(arrays_survey / "train.csv"), "--labels", *LABEL_NAMES, "--arrays",
             str(arrays_survey / "train.npz"), "--output", str(tmp_path / "model.npz"), "--wave-max", "4009", *TINY_MODEL]
    predict = ["predict", str(tmp_path / "model.npz"), "--arrays", str(arrays_survey / "targets.npz"),
               "--output", str(tmp_path / "out.fits"), "--n-jobs", "1"]
    assert main(train) == 0 and main(predict) == 0
    assert capsys.readouterr().err == ""  # quiet: no log lines, no bars off a terminal
    assert main([*train, "--progress"]) == 0 and main([*predict, "--progress", "-v"]) == 0
    error = capsys.readouterr().err
    assert "training: 100%" in error and "10/10" in error and "predicting: 100%" in error and "11/11" in error
    assert "slam: INFO: 11 spectra: 0 not converged" in error


# ----------------------------------------------------------------------------- progress and resuming (#20)
def _cod_arguments(arrays_survey, output):
    return ["cod", str(arrays_survey / "train.csv"), "--labels", "teff", "logg", "--arrays",
            str(arrays_survey / "train.npz"), "--output", str(output), "--wave-max", "4009", *TINY_MODEL]


def test_an_interrupted_cod_resumes_from_its_checkpoints_and_says_so(arrays_survey, tmp_path, monkeypatch, capsys):
    from slamlib.pipeline import cli
    from slamlib.pipeline.checkpoint import ResumableTraining

    reference = tmp_path / "reference.fits"
    assert main(_cod_arguments(arrays_survey, reference)) == 0
    assert not (tmp_path / "reference.fits.checkpoint").exists()  # removed once the output is written
    capsys.readouterr()

    calls = []
    original = ResumableTraining.train

    def interrupting(self, problem, backend, *, n_jobs):
        calls.append(self.checkpoint_dir.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, problem, backend, n_jobs=n_jobs)

    output = tmp_path / "cods.fits"
    monkeypatch.setattr(cli.ResumableTraining, "train", interrupting)
    assert main(_cod_arguments(arrays_survey, output)) == 130
    assert calls == ["all-labels", "without-teff", "without-logg"]
    checkpoint = tmp_path / "cods.fits.checkpoint"
    assert sorted(path.name for path in checkpoint.iterdir()) == ["all-labels", "without-teff"]
    monkeypatch.setattr(cli.ResumableTraining, "train", original)
    capsys.readouterr()
    assert main(_cod_arguments(arrays_survey, output)) == 0
    err = capsys.readouterr().err
    assert "resuming from" in err and "all-labels" in err and "without-teff" in err
    assert not checkpoint.exists()
    resumed, uninterrupted = Table.read(output), Table.read(reference)
    for name in uninterrupted.colnames:
        assert resumed[name].tobytes() == uninterrupted[name].tobytes(), name


def test_mock_cod_and_train_show_progress_and_announce_the_compilation(arrays_survey, tmp_path, capsys):
    assert main(["mock", str(tmp_path / "mock"), "--n-stars", "3", "--format", "arrays", "--progress",
                 "--n-jobs", "1"]) == 0
    err = capsys.readouterr().err
    assert "mock: synthesizing" in err and "mock: normalizing" in err and "6/6" in err
    assert main([*_cod_arguments(arrays_survey, tmp_path / "cods.fits"), "--progress"]) == 0
    err = capsys.readouterr().err
    assert "cod trainings" in err and "3/3" in err
    assert main(["train", str(arrays_survey / "train.csv"), "--labels", *LABEL_NAMES, "--arrays",
                 str(arrays_survey / "train.npz"), "--output", str(tmp_path / "model.npz"), *TINY_MODEL,
                 "--progress", "-v"]) == 0
    err = capsys.readouterr().err
    assert "first block: compiling numba kernels" in err
    assert "compiles the batched backend's numba kernels" in err


def test_prediction_progress_advances_per_batch_not_per_chunk(arrays_survey, monkeypatch):
    from slamlib.pipeline.catalog_input import PreparedInput

    monkeypatch.setattr(catalog_prediction, "PREDICTION_BATCH", 4)
    model = SlamModel.load(arrays_survey / "model.npz")
    with np.load(arrays_survey / "targets.npz") as arrays:
        flux, ivar = arrays["flux"][:, 5:25], arrays["ivar"][:, 5:25]
    reason = np.full(11, "", dtype=object)
    reason[3] = "unreadable file: x.fits"
    steps = []
    batched = catalog_prediction.predict_rows(model, PreparedInput(flux, ivar, reason.astype(str)),
                                              progress=steps.append)
    assert steps == [4, 4, 2, 1]  # ten fitted spectra in batches of four, then the unreadable row
    monkeypatch.setattr(catalog_prediction, "PREDICTION_BATCH", 100)
    whole = catalog_prediction.predict_rows(model, PreparedInput(flux, ivar, reason.astype(str)))
    np.testing.assert_allclose(batched["teff"], whole["teff"], rtol=1e-10, equal_nan=True)


def test_a_resumed_prediction_says_it_resumed(arrays_survey, tmp_path, capsys):
    arguments = ["predict", str(arrays_survey / "model.npz"), str(arrays_survey / "targets.csv"), "--arrays",
                 str(arrays_survey / "targets.npz"), "--output", str(tmp_path / "out.fits"), "--chunk-size", "6",
                 "--keep-chunks", "--n-jobs", "1"]
    assert main(arguments) == 0
    assert "resumed" not in capsys.readouterr().err
    assert main(arguments) == 0
    assert "resumed: 2 of 2 chunks" in capsys.readouterr().err
