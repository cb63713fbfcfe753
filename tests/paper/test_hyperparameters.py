import numpy as np
import pytest

from slampaper import hyperparameters


def test_sine_cv_map_finds_the_noise_floor_and_noise_finds_nothing():
    sine = hyperparameters.sine_data(200, noise_variance=0.16, seed=1)
    noise = hyperparameters.noise_data(200, noise_variance=0.16, seed=1)
    log_c, log_gamma = np.linspace(-2, 2, 5), np.linspace(-2, 1, 4)
    sine_map = hyperparameters.cv_mse_map(sine, log_c, log_gamma, n_folds=5)
    noise_map = hyperparameters.cv_mse_map(noise, log_c, log_gamma, n_folds=5)
    floor = 0.16 / np.var(sine.y)
    assert sine_map.cv_mse.shape == (5, 4)
    assert sine_map.best_cv_mse == sine_map.cv_mse.min()
    assert floor * 0.8 < sine_map.best_cv_mse < floor * 1.3
    assert noise_map.best_cv_mse > 0.95  # nothing beats predicting the mean of pure noise


def test_standardized_data_and_quadratic_falls_short_of_the_sine():
    sine = hyperparameters.sine_data(300, seed=2)
    assert abs(sine.y_std.mean()) < 1e-12 and abs(sine.y_std.std() - 1) < 1e-12
    grid = sine.x_std
    quadratic_mse = np.mean((hyperparameters.quadratic_curve(sine, grid) - sine.y_std) ** 2)
    svr_mse = np.mean((hyperparameters.svr_curve(sine, grid, c=10.0, epsilon=0.05, gamma=1.0) - sine.y_std) ** 2)
    assert svr_mse < 0.6 * quadratic_mse


def test_bad_toy_arguments_raise():
    with pytest.raises(ValueError, match="n_points"):
        hyperparameters.sine_data(3)
    with pytest.raises(ValueError, match="noise_variance"):
        hyperparameters.noise_data(50, noise_variance=0.0)
