"""Acquisition functions against their closed forms, log-EI's numerics, the kriging believer for pending points."""

import numpy as np
import pytest
import torch
from scipy.stats import norm

from tunekit.gp import (ACQUISITIONS, Acquisition, expected_improvement, fantasize, fit_gp,
                        log_expected_improvement, probability_of_improvement, sobol, upper_confidence_bound)
from tunekit.gp.acquisition import incumbent, log_h, log_probability_of_improvement

rng = np.random.default_rng(0)
MEAN = torch.from_numpy(rng.normal(size=200))
VAR = torch.from_numpy(rng.uniform(0.01, 4.0, size=200))
BEST = 0.7


def closed_form_ei(mean, var, best):
    sigma = np.sqrt(var)
    z = (mean - best) / sigma
    return sigma * (z * norm.cdf(z) + norm.pdf(z))


def test_ei_pi_ucb_match_closed_forms():
    mean, var = MEAN.numpy(), VAR.numpy()
    z = (mean - BEST) / np.sqrt(var)
    np.testing.assert_allclose(expected_improvement(MEAN, VAR, BEST).numpy(), closed_form_ei(mean, var, BEST),
                               rtol=1e-7)
    np.testing.assert_allclose(probability_of_improvement(MEAN, VAR, BEST).numpy(), norm.cdf(z), rtol=1e-8)
    np.testing.assert_allclose(log_probability_of_improvement(MEAN, VAR, BEST).numpy(), norm.logcdf(z), rtol=1e-8)
    np.testing.assert_allclose(upper_confidence_bound(MEAN, VAR, 2.0).numpy(), mean + np.sqrt(2.0 * var), rtol=1e-12)


def test_log_ei_equals_log_of_ei_where_ei_is_representable():
    z = torch.linspace(-35.0, 8.0, 2000, dtype=torch.float64)
    var = torch.full_like(z, 0.3)
    mean = BEST + z * var.sqrt()
    ei = closed_form_ei(mean.numpy(), var.numpy(), BEST)
    assert ei.min() > 0  # representable over this whole range
    np.testing.assert_allclose(log_expected_improvement(mean, var, BEST).numpy(), np.log(ei), rtol=1e-9)


def test_log_ei_stays_finite_and_monotone_where_ei_underflows():
    z = -torch.logspace(1.6, 12, 400, dtype=torch.float64).flip(0)  # -1e12 ... -40
    z.requires_grad_(True)
    values = log_h(z)
    assert expected_improvement(z.detach(), torch.ones_like(z), 0.0).min() == 0.0  # plain EI underflows here
    assert torch.isfinite(values).all()
    assert (values[1:] > values[:-1]).all()
    values.sum().backward()
    assert torch.isfinite(z.grad).all() and (z.grad > 0).all()
    # asymptotics: log h(z) ~ -z^2/2 - log(sqrt(2 pi)) - 2 log|z| for z -> -inf
    far = torch.tensor([-1e6], dtype=torch.float64)
    expected = -0.5 * 1e12 - 0.5 * np.log(2 * np.pi) - 2 * np.log(1e6)
    assert float(log_h(far)) == pytest.approx(expected, rel=1e-12)


def test_log_h_is_smooth_across_its_branch_point():
    z = torch.tensor([-1.0 - 1e-9, -1.0 + 1e-9], dtype=torch.float64)
    left, right = log_h(z)
    assert float(left) == pytest.approx(float(right), abs=1e-8)


def fitted_gp():
    X = 0.7 * torch.from_numpy(sobol(12, 2, seed=1))
    y = -((X - 0.6) ** 2).sum(-1)
    return fit_gp(X, y)


def test_fantasies_keep_the_mean_and_collapse_the_variance_at_pending_points():
    gp = fitted_gp()
    pending = torch.tensor([[0.9, 0.1], [0.95, 0.97]], dtype=torch.float64)
    mean_before, var_before = gp.posterior(pending)
    mean_after, var_after = fantasize(gp, pending).posterior(pending)
    torch.testing.assert_close(mean_after, mean_before, rtol=0, atol=1e-6)
    assert (var_after < 0.05 * var_before).all()
    assert (var_after <= 1.01 * gp.hyper.noise).all()


def test_the_believer_incumbent_counts_pending_points_predicted_above_the_best():
    gp = fitted_gp()
    grid = torch.from_numpy(sobol(1024, 2, seed=5))
    mean, _ = gp.posterior(grid)
    above, below = grid[mean.argmax()].unsqueeze(0), grid[mean.argmin()].unsqueeze(0)
    assert float(mean.max()) > float(incumbent(gp))  # the model predicts an improvement somewhere
    assert float(Acquisition(gp, "logei", X_pending=below).best) == pytest.approx(float(incumbent(gp)))
    assert float(Acquisition(gp, "logei", X_pending=above).best) == pytest.approx(float(mean.max()), abs=1e-6)


@pytest.mark.parametrize("name", ACQUISITIONS)
def test_a_pending_point_lowers_the_acquisition_around_it(name):
    gp = fitted_gp()
    grid = torch.from_numpy(sobol(1024, 2, seed=2))
    plain = Acquisition(gp, name)
    x_star = grid[plain(grid).argmax()].unsqueeze(0)
    with_pending = Acquisition(gp, name, X_pending=x_star)
    assert float(with_pending(x_star)) < float(plain(x_star))
    assert float(with_pending.best) >= float(plain.best) - 1e-9


def test_unknown_acquisition_is_refused():
    with pytest.raises(ValueError, match="acquisition='qei'.*logei"):
        Acquisition(fitted_gp(), "qei")


def test_acquisition_is_differentiable_in_x():
    acquisition = Acquisition(fitted_gp(), "logei")
    X = torch.from_numpy(sobol(8, 2, seed=3)).requires_grad_(True)
    acquisition(X).sum().backward()
    assert torch.isfinite(X.grad).all() and X.grad.abs().sum() > 0
