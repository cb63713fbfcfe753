"""SlamModel end to end on synthetic data with a known nonlinear flux-label relation."""

import json
import zipfile

import numpy as np
import pytest
from synthetic_data import LABEL_NAMES, make_data, true_flux

from slamlib import GaussianPrior, SlamModel, modelfile

N_TRAIN = 250


@pytest.fixture(scope="module")
def data():
    return make_data(n_star=300, n_pix=40, noise=0.01, rng=np.random.default_rng(11))


@pytest.fixture(scope="module")
def fitted(data):
    labels, flux, ivar = data
    model = SlamModel(param_grid={"C": [10.0, 100.0], "gamma": [0.1, 0.01]}, cv=5, n_jobs=2, random_state=0)
    return model.fit(flux[:N_TRAIN], ivar[:N_TRAIN], labels[:N_TRAIN], LABEL_NAMES)


@pytest.fixture(scope="module")
def prediction(fitted, data):
    labels, flux, ivar = data
    return fitted.predict(flux[N_TRAIN:], ivar[N_TRAIN:])


def test_fitted_attributes_have_one_entry_per_pixel(fitted):
    assert len(fitted.best_params_) == 40
    assert all(p["C"] in (10.0, 100.0) and p["gamma"] in (0.1, 0.01) for p in fitted.best_params_)
    for name in ("cv_mse_", "cv_md_", "mse_", "md_"):
        values = getattr(fitted, name)
        assert values.shape == (40,) and np.all(np.isfinite(values))
    # The refit on all stars is scored on its own training stars, so it fits them at least as well as CV.
    assert np.median(fitted.mse_) <= np.median(fitted.cv_mse_)
    # The best grid point is the one with the lowest CV MSE.
    np.testing.assert_array_equal(fitted.cv_mse_, fitted.cv_mse_grid_.min(axis=1))


def test_held_back_labels_are_recovered(prediction, data):
    labels = data[0][N_TRAIN:]
    assert prediction.converged.all()
    residual = prediction.labels - labels
    # Tolerances: a few per cent of each label's training range (2000 K, 2 dex, 1 dex).
    assert np.all(np.abs(np.median(residual, axis=0)) < [15.0, 0.02, 0.02])
    assert np.all(np.std(residual, axis=0) < [40.0, 0.05, 0.05])
    # Formal errors describe the actual scatter to within a factor of two.
    ratio = np.std(residual, axis=0) / np.median(prediction.errors, axis=0)
    assert np.all((ratio > 0.5) & (ratio < 2.0))
    assert np.all((prediction.rchi2 > 0.2) & (prediction.rchi2 < 3.0))


def test_predict_spectrum_follows_the_truth(fitted, data):
    labels = data[0][N_TRAIN:N_TRAIN + 10]
    model_flux = fitted.predict_spectrum(labels)
    assert model_flux.shape == (10, 40)
    assert np.sqrt(np.mean((model_flux - true_flux(labels)) ** 2)) < 0.01
    assert fitted.predict_spectrum(labels[0]).shape == (40,)


def test_one_spectrum_and_batch_give_the_same_labels(fitted, data, prediction):
    _, flux, ivar = data
    single = fitted.predict(flux[N_TRAIN], ivar[N_TRAIN])
    np.testing.assert_allclose(single.labels[0], prediction.labels[0], rtol=1e-10)


def test_unfittable_spectra_are_flagged_and_the_batch_goes_on(fitted, data):
    _, flux, ivar = data
    flux_batch = flux[N_TRAIN:N_TRAIN + 4].copy()
    ivar_batch = ivar[N_TRAIN:N_TRAIN + 4].copy()
    flux_batch[0] = np.nan
    ivar_batch[1] = 0.0
    ivar_batch[2] = -1.0
    flux_batch[3, :5] = np.inf  # a few bad pixels inside a good spectrum only lose weight
    result = fitted.predict(flux_batch, ivar_batch)
    assert result.converged.tolist() == [False, False, False, True]
    assert np.all(np.isnan(result.labels[:3])) and np.all(np.isfinite(result.labels[3]))
    assert result.reason[0] == "no finite flux"
    assert "no good pixels" in result.reason[1] and "no good pixels" in result.reason[2]
    assert result.n_good_pixels[3] == 35
    table = result.to_table()
    assert table.colnames[:2] == ["teff", "teff_err"] and len(table) == 4


def test_a_tight_prior_pulls_labels_to_its_mean(fitted, data):
    _, flux, ivar = data
    prior = GaussianPrior(mean=np.array([5000.0, 2.5, -0.2]), sigma=np.array([1e-3, 1e-5, 1e-5]))
    result = fitted.predict(flux[N_TRAIN:N_TRAIN + 2], ivar[N_TRAIN:N_TRAIN + 2], prior=prior)
    np.testing.assert_allclose(result.labels, np.tile(prior.mean, (2, 1)), atol=1e-2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"param_grid": {"C": [], "gamma": [0.1]}}, "empty"),
        ({"param_grid": {"C": [1.0]}}, '"C" and "gamma"'),
        ({"param_grid": {"C": [-1.0], "gamma": [0.1]}}, "positive"),
        ({"cv": 1}, "at least 2"),
        ({"epsilon": -0.1}, "epsilon"),
        ({"backend": "gpu"}, "backend"),
        ({"n_jobs": 0}, "n_jobs"),
        ({"random_state": 1.5}, "random_state"),
    ],
)
def test_bad_parameters_raise_at_fit_naming_the_parameter(kwargs, message, data):
    labels, flux, ivar = data
    model = SlamModel(**kwargs)  # scikit-learn convention: the constructor only stores
    with pytest.raises(ValueError, match=message):
        model.fit(flux, ivar, labels)
    assert not hasattr(model, "state_")


def test_the_estimator_follows_scikit_learn_conventions(fitted):
    from sklearn.base import clone

    grid = {"C": [1.0, 10.0], "gamma": [0.1]}
    model = SlamModel(param_grid=grid, cv=3, backend="libsvm")
    assert model.param_grid is grid  # stored as given
    params = model.get_params(deep=True)
    assert params == {"param_grid": grid, "epsilon": 0.05, "cv": 3, "n_jobs": -1, "random_state": 0,
                      "backend": "libsvm"}
    assert model.set_params(cv=4, epsilon=0.1) is model and (model.cv, model.epsilon) == (4, 0.1)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "state_") and hasattr(fitted, "state_")
    learned = [name for name in vars(fitted) if name not in fitted.get_params()]
    assert learned and all(name.endswith("_") for name in learned)


def test_bad_training_input_raises(data):
    labels, flux, ivar = data
    model = SlamModel(cv=5, n_jobs=1)
    with pytest.raises(ValueError, match="n_star"):
        model.fit(flux[:50], ivar[:50], labels[:49])
    with pytest.raises(ValueError, match="one shape"):
        model.fit(flux[:50], ivar[:50, :10], labels[:50])
    bad_labels = labels[:50].copy()
    bad_labels[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"rows \[3\]"):
        model.fit(flux[:50], ivar[:50], bad_labels)
    with pytest.raises(ValueError, match="too few"):
        model.fit(flux[:8], ivar[:8], labels[:8])
    empty_ivar = ivar[:50].copy()
    empty_ivar[7] = 0.0
    with pytest.raises(ValueError, match=r"spectra \[7\] have no good pixel"):
        model.fit(flux[:50], empty_ivar, labels[:50])
    with pytest.raises(ValueError, match="not fitted"):
        model.predict(flux[:1], ivar[:1])


def test_predict_on_the_wrong_grid_raises(fitted, data):
    _, flux, ivar = data
    with pytest.raises(ValueError, match="grid"):
        fitted.predict(flux[:2, :30], ivar[:2, :30])


def test_save_load_round_trip_is_exact(fitted, data, prediction, tmp_path):
    _, flux, ivar = data
    path = fitted.save(tmp_path / "model.npz")
    loaded = SlamModel.load(path)
    assert loaded.label_names_ == LABEL_NAMES
    assert loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.cv_mse_, fitted.cv_mse_)
    again = loaded.predict(flux[N_TRAIN:], ivar[N_TRAIN:])
    np.testing.assert_array_equal(again.labels, prediction.labels)
    assert loaded.file_header_["library_versions"]["slamlib"]
    # Saving twice gives the same bytes (no timestamps).
    assert fitted.save(tmp_path / "again.npz").read_bytes() == path.read_bytes()


def test_training_is_bit_reproducible(data, fitted):
    labels, flux, ivar = data
    again = SlamModel(param_grid={"C": [10.0, 100.0], "gamma": [0.1, 0.01]}, cv=5, n_jobs=1, random_state=0)
    again.fit(flux[:N_TRAIN], ivar[:N_TRAIN], labels[:N_TRAIN], LABEL_NAMES)
    np.testing.assert_array_equal(again.training_.expansion.dual_coef, fitted.training_.expansion.dual_coef)
    np.testing.assert_array_equal(again.cv_mse_, fitted.cv_mse_)


def _rewrite_member(path, target, name, transform):
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as sink:
        for item in source.infolist():
            content = source.read(item.filename)
            sink.writestr(item, transform(content) if item.filename == name else content)


def test_damaged_tampered_and_newer_files_are_refused(fitted, tmp_path):
    path = fitted.save(tmp_path / "model.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or damaged"):
        SlamModel.load(truncated)

    def flip_intercept(content):
        array = np.lib.format.read_array(__import__("io").BytesIO(content))
        array[0] += 1.0
        buffer = __import__("io").BytesIO()
        np.lib.format.write_array(buffer, array)
        return buffer.getvalue()

    tampered = tmp_path / "tampered.npz"
    _rewrite_member(path, tampered, "intercept.npy", flip_intercept)
    with pytest.raises(ValueError, match="checksum mismatch"):
        SlamModel.load(tampered)

    def bump_version(content):
        array = np.lib.format.read_array(__import__("io").BytesIO(content))
        header = json.loads(str(array))
        header["format_version"] = modelfile.FORMAT_VERSION + 1
        buffer = __import__("io").BytesIO()
        np.lib.format.write_array(buffer, np.array(json.dumps(header)))
        return buffer.getvalue()

    newer = tmp_path / "newer.npz"
    _rewrite_member(path, newer, "__metadata__.npy", bump_version)
    with pytest.raises(ValueError, match="upgrade slamlib"):
        SlamModel.load(newer)
    with pytest.raises(ValueError, match="does not exist"):
        SlamModel.load(tmp_path / "missing.npz")


def test_cv_labels_come_from_models_that_never_saw_the_star(fitted, data, tmp_path):
    labels, flux, ivar = data
    cv_prediction = fitted.predict_cv(flux[:N_TRAIN], ivar[:N_TRAIN])
    assert len(cv_prediction) == N_TRAIN and cv_prediction.converged.all()
    cv_residual = cv_prediction.labels - labels[:N_TRAIN]
    in_sample = fitted.predict(flux[:N_TRAIN], ivar[:N_TRAIN]).labels - labels[:N_TRAIN]
    held_out = fitted.predict(flux[N_TRAIN:], ivar[N_TRAIN:]).labels - labels[N_TRAIN:]
    # CV labels behave like labels of unseen stars, not like the (slightly optimistic) in-sample ones.
    # Robust scatter: the toy flux depends on sin(3 logg), so a rare star at the range edge finds
    # the mirror solution.
    def robust_scatter(residual):
        return 1.4826 * np.median(np.abs(residual - np.median(residual, axis=0)), axis=0)

    assert np.all(robust_scatter(cv_residual) >= robust_scatter(in_sample))
    assert np.all(robust_scatter(cv_residual) < 2.0 * robust_scatter(held_out))
    # Each star's CV model has zero weight on the star itself.
    result = fitted.training_
    for fold_number, fold_model in enumerate(result.fold_expansions):
        assert np.all(fold_model.dual_coef[:, result.fold_of_star == fold_number] == 0)
    loaded = SlamModel.load(fitted.save(tmp_path / "with_folds.npz"))
    np.testing.assert_array_equal(loaded.predict_cv(flux[:N_TRAIN], ivar[:N_TRAIN]).labels, cv_prediction.labels)
    slim = SlamModel.load(fitted.save(tmp_path / "slim.npz", include_cv_models=False))
    with pytest.raises(ValueError, match="no CV fold models"):
        slim.predict_cv(flux[:N_TRAIN], ivar[:N_TRAIN])
    with pytest.raises(ValueError, match="training spectra"):
        fitted.predict_cv(flux[:10], ivar[:10])


def test_batched_levenberg_marquardt_agrees_with_the_scipy_reference(fitted, data):
    labels, flux, ivar = data
    batched = fitted.predict(flux[N_TRAIN:], ivar[N_TRAIN:], method="batched")
    reference = fitted.predict(flux[N_TRAIN:], ivar[N_TRAIN:], method="reference")
    assert batched.converged.all() and reference.converged.all()
    difference_in_errors = np.abs(batched.labels - reference.labels) / reference.errors
    assert np.median(difference_in_errors) < 1e-3
    assert np.mean(difference_in_errors < 0.01) >= 0.95  # "within 1% of the formal errors"
    np.testing.assert_allclose(batched.errors, reference.errors, rtol=0.02)
    np.testing.assert_allclose(batched.rchi2, reference.rchi2, rtol=0.01)
    with pytest.raises(ValueError, match="method"):
        fitted.predict(flux[:2], ivar[:2], method="newton")


def test_batched_prediction_flags_unfittable_spectra_like_the_reference(fitted, data):
    _, flux, ivar = data
    flux_batch, ivar_batch = flux[N_TRAIN:N_TRAIN + 3].copy(), ivar[N_TRAIN:N_TRAIN + 3].copy()
    flux_batch[0] = np.nan
    ivar_batch[1, :] = 0.0
    for method in ("batched", "reference"):
        result = fitted.predict(flux_batch, ivar_batch, method=method)
        assert result.converged.tolist() == [False, False, True]
        assert result.reason[0] == "no finite flux" and "no good pixels" in result.reason[1]


def test_batched_backend_trains_a_model_close_to_libsvm(data, fitted):
    labels, flux, ivar = data
    fast = SlamModel(param_grid={"C": [10.0, 100.0], "gamma": [0.1, 0.01]}, cv=5, n_jobs=1, random_state=0,
                     backend="batched").fit(flux[:N_TRAIN], ivar[:N_TRAIN], labels[:N_TRAIN], LABEL_NAMES)
    np.testing.assert_allclose(np.median(fast.cv_mse_), np.median(fitted.cv_mse_), rtol=0.01)
    same_choice = np.mean([a == b for a, b in zip(fast.best_params_, fitted.best_params_)])
    assert same_choice >= 0.9
    held_out = fast.predict(flux[N_TRAIN:], ivar[N_TRAIN:]).labels - labels[N_TRAIN:]
    assert np.all(np.std(held_out, axis=0) < [40.0, 0.05, 0.05])


def test_batched_backend_keeps_the_cv_fold_models_at_the_chosen_grid_point(data, fitted):
    labels, flux, ivar = data
    fast = SlamModel(param_grid={"C": [10.0, 100.0], "gamma": [0.1, 0.01]}, cv=5, n_jobs=2, random_state=0,
                     backend="batched").fit(flux[:N_TRAIN], ivar[:N_TRAIN], labels[:N_TRAIN], LABEL_NAMES)
    result = fast.training_
    np.testing.assert_array_equal(result.fold_of_star, fitted.training_.fold_of_star)
    for fold_number, fold_model in enumerate(result.fold_expansions):
        held_out = result.fold_of_star == fold_number
        # A fold model never saw its held-out stars ...
        assert np.all(fold_model.dual_coef[:, held_out] == 0.0)
        assert np.any(fold_model.dual_coef[result.trained][:, ~held_out] != 0.0)
    # The fold models' held-out residuals reproduce the CV MSE the grid search chose them by.
    good = ivar[:N_TRAIN] > 0
    flux_std = np.where(good, fast.flux_scaler_.transform(np.where(good, flux[:N_TRAIN], 0.0)), 0.0)
    labels_std = fast.label_scaler_.transform(labels[:N_TRAIN])
    squared = np.zeros(flux.shape[1])
    for fold_number, fold_model in enumerate(result.fold_expansions):
        held_out = result.fold_of_star == fold_number
        residual = fold_model.evaluate(labels_std[held_out]) - flux_std[held_out]
        squared += np.sum(np.where(good[held_out], residual, 0.0) ** 2, axis=0)
    trained = result.trained
    np.testing.assert_allclose(squared[trained] / good.sum(axis=0)[trained], fast.cv_mse_[trained], rtol=1e-8)
    # CV labels from the batched fold models match those from LIBSVM's fold models.
    cv_fast = fast.predict_cv(flux[:N_TRAIN], ivar[:N_TRAIN]).labels
    cv_reference = fitted.predict_cv(flux[:N_TRAIN], ivar[:N_TRAIN]).labels
    np.testing.assert_allclose(np.std(cv_fast - labels[:N_TRAIN], axis=0),
                               np.std(cv_reference - labels[:N_TRAIN], axis=0), rtol=0.05)


def test_ensemble_prediction_adds_the_sub_models_jackknife_spread(fitted, data, prediction):
    labels, flux, ivar = data
    ensemble = fitted.predict(flux[N_TRAIN:], ivar[N_TRAIN:], ensemble=True)
    # The final model's fit is unchanged by asking for the ensemble.
    np.testing.assert_array_equal(ensemble.labels, prediction.labels)
    np.testing.assert_array_equal(ensemble.errors, prediction.errors)
    assert ensemble.member_labels.shape == (fitted.cv, len(prediction), len(LABEL_NAMES))
    assert np.all(np.isfinite(ensemble.ensemble_errors)) and np.all(ensemble.ensemble_errors > 0)
    # Five sub-models each trained on 4/5 of 250 stars: their spread is small against the labels' range.
    assert np.all(np.median(ensemble.ensemble_errors, axis=0) < 0.2 * np.ptp(labels, axis=0))
    np.testing.assert_allclose(ensemble.total_errors**2, ensemble.errors**2 + ensemble.ensemble_errors**2)
    table = ensemble.to_table()
    assert {"teff_err_ensemble", "teff_err_total", "n_members_converged"} <= set(table.colnames)


def test_ensemble_members_are_the_cv_fold_models(fitted, data):
    # Sub-model k labels the stars of fold k exactly as predict_cv does (the same model and start).
    labels, flux, ivar = data
    fold_of_star = fitted.training_.fold_of_star
    stars = np.flatnonzero(fold_of_star == 2)[:5]
    ensemble = fitted.predict(flux[stars], ivar[stars], ensemble=True)
    cv_labels = fitted.predict_cv(flux[:N_TRAIN], ivar[:N_TRAIN]).labels[stars]
    np.testing.assert_allclose((ensemble.member_labels[2] - cv_labels) / np.ptp(labels, axis=0), 0.0, atol=1e-8)


def test_ensemble_needs_the_cv_sub_models(fitted, tmp_path):
    slim = SlamModel.load(fitted.save(tmp_path / "slim.npz", include_cv_models=False))
    flux = fitted.predict_spectrum(np.array([5000.0, 4.0, 0.0]))
    with pytest.raises(ValueError, match="CV sub-models"):
        slim.predict(flux, np.full(flux.shape, 1e4), ensemble=True)


def test_labels_as_a_table_and_wavelengths_as_a_quantity(data):
    from astropy import units
    from astropy.table import Table

    labels, flux, ivar = data
    names = [f"label_{index}" for index in range(labels.shape[1])]
    table = Table(labels, names=names)
    wave = np.linspace(4000.0, 4100.0, flux.shape[1])
    grid = {"C": [10.0], "gamma": [0.1]}
    from_arrays = SlamModel(param_grid=grid, cv=3, n_jobs=1).fit(flux, ivar, labels, names, wave=wave)
    from_table = SlamModel(param_grid=grid, cv=3, n_jobs=1).fit(flux, ivar, table, wave=(wave / 10.0) * units.nm)
    assert from_table.label_names_ == names
    np.testing.assert_allclose(from_table.wave_, wave, rtol=1e-12)
    np.testing.assert_array_equal(from_table.training_.expansion.dual_coef, from_arrays.training_.expansion.dual_coef)
    with pytest.raises(ValueError, match="not a length"):
        SlamModel(param_grid=grid, cv=3, n_jobs=1).fit(flux, ivar, table, wave=wave * units.s)
    with pytest.raises(ValueError, match="no columns"):
        SlamModel(param_grid=grid, cv=3, n_jobs=1).fit(flux, ivar, table, ["teff"])
