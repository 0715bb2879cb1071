"""The GP model on its own: interpolation of known functions, standardization, kernels, fallbacks."""

import math

import numpy as np
import pytest
import torch

from tunekit.gp import KERNELS, GPFitError, fit_gp, sobol
from tunekit.gp.model import GPHyperparameters, robust_cholesky, select_subset


def smooth(X: torch.Tensor) -> torch.Tensor:
    return torch.sin(3 * X[:, 0]) + torch.cos(2 * X[:, 1]) + 0.5 * X[:, 0] * X[:, 1]


def test_fit_interpolates_a_smooth_function():
    X = torch.from_numpy(sobol(40, 2, seed=0))
    X_test = torch.from_numpy(np.random.default_rng(1).random((200, 2)))
    gp = fit_gp(X, smooth(X))
    mean, var = gp.predict(X_test)
    rmse = float((mean - smooth(X_test)).pow(2).mean().sqrt())
    assert rmse < 0.02 * float(smooth(X_test).std())
    train_mean, train_var = gp.predict(X)
    assert torch.allclose(train_mean, smooth(X), atol=1e-3)
    assert float(train_var.max()) < 1e-4 * float(smooth(X).var())
    assert float(var.mean()) > float(train_var.mean())


def test_outputs_are_standardized_and_mapped_back():
    X = torch.from_numpy(sobol(30, 2, seed=3))
    y = 1000.0 + 50.0 * smooth(X)
    gp = fit_gp(X, y)
    assert abs(float(gp.y.mean())) < 1e-9 and abs(float(gp.y.std()) - 1.0) < 1e-9
    mean, _ = gp.predict(X)
    assert torch.allclose(mean, y, rtol=0, atol=0.05)


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_kernel_fits_with_one_lengthscale_per_column(kernel):
    X = torch.from_numpy(sobol(30, 3, seed=4))
    y = torch.sin(4 * X[:, 0])  # columns 1 and 2 are irrelevant
    gp = fit_gp(X, y, kernel=kernel)
    lengthscale = gp.hyper.covar_module.base_kernel.lengthscale.reshape(-1)
    assert lengthscale.shape == (3,)
    assert float(lengthscale[0]) < float(lengthscale[1:].min())


def test_kernel_scale_fixes_the_output_scale():
    X = torch.from_numpy(sobol(20, 2, seed=5))
    gp = fit_gp(X, smooth(X), kernel_scale=2.5)
    assert float(gp.hyper.covar_module.outputscale) == pytest.approx(2.5)


def test_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="kernel='linear'.*matern52"):
        GPHyperparameters("linear", 2)


def test_duplicates_and_constant_targets_do_not_crash():
    X = torch.from_numpy(np.repeat(sobol(5, 2, seed=6), 4, axis=0))
    gp = fit_gp(X, torch.ones(len(X), dtype=torch.float64))
    mean, var = gp.predict(X)
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()
    assert torch.allclose(mean, torch.ones_like(mean))


def test_near_noiseless_fit_reaches_the_noise_floor_region():
    X = torch.from_numpy(sobol(30, 1, seed=7))
    gp = fit_gp(X, torch.sin(6 * X[:, 0]))
    assert float(gp.hyper.noise) < 1e-3


def test_robust_cholesky_adds_jitter_and_raises_when_hopeless():
    v = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    singular = v @ v.T
    L = robust_cholesky(singular)
    assert torch.allclose(L @ L.T, singular, atol=1e-2)
    with pytest.raises(GPFitError):
        robust_cholesky(torch.full((3, 3), math.nan, dtype=torch.float64))


def test_condition_on_shrinks_variance_at_the_new_points():
    X = 0.5 * torch.from_numpy(sobol(10, 2, seed=8))
    gp = fit_gp(X, smooth(X))
    new = torch.tensor([[0.95, 0.9]], dtype=torch.float64)
    _, before = gp.posterior(new)
    _, after = gp.condition_on(new, torch.zeros(1, dtype=torch.float64)).posterior(new)
    assert float(after) < 0.01 * float(before)
    assert float(after) <= 1.01 * float(gp.hyper.noise)


def test_large_data_is_modelled_on_bounded_subsets_that_keep_the_best_points():
    rng = np.random.default_rng(9)
    X = torch.from_numpy(rng.random((400, 3)))
    y = -(X - 0.4).pow(2).sum(-1)
    index = select_subset(y, 100, rng)
    assert len(index) == 100 and len(set(index.tolist())) == 100
    assert set(torch.argsort(-y)[:50].tolist()) <= set(index.tolist())
    gp = fit_gp(X, y, max_fit_points=50, max_points=150, generator=rng)
    assert len(gp.X) == 150
    assert float(gp.predict(X[torch.argmax(y)].unsqueeze(0))[0]) == pytest.approx(float(y.max()), abs=1e-3)
    mean, _ = gp.predict(X[:20])
    assert float((mean - y[:20]).abs().max()) < 0.05 * float(y.std())  # unseen rows too: the subset generalises
    assert len(fit_gp(X, y, generator=rng).X) == 400  # below MAX_CONDITION_POINTS every observation is kept


def test_warm_start_is_used_and_a_mismatched_one_ignored():
    X = torch.from_numpy(sobol(25, 2, seed=10))
    first = fit_gp(X, smooth(X))
    again = fit_gp(X, smooth(X), warm_start=first.hyper.state_dict())
    assert torch.allclose(again.hyper.covar_module.base_kernel.lengthscale,
                          first.hyper.covar_module.base_kernel.lengthscale, rtol=0.05)
    X3 = torch.from_numpy(sobol(25, 3, seed=10))
    other = fit_gp(X3, smooth(X3), warm_start=first.hyper.state_dict())
    assert other.hyper.covar_module.base_kernel.lengthscale.shape[-1] == 3
