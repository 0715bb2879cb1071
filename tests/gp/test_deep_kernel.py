"""The deep-kernel GP on its own: learning-curve extrapolation and the acquisition's preference."""

import numpy as np
import torch

from tunekit.gp.acquisition import log_expected_improvement
from tunekit.gp.deep_kernel import CurveFeatures, fit_deep_kernel_gp

MAX_EPOCHS = 12


def curve(x: np.ndarray) -> np.ndarray:
    """Accuracy-like curve of a 2-D configuration: rises to a config-dependent plateau at a config-dependent rate."""
    final = 1.0 - (x[0] - 0.3) ** 2 - 0.5 * (x[1] - 0.6) ** 2
    rate = 0.1 + 0.5 * x[1]
    return final * (1.0 - np.exp(-rate * np.arange(1, MAX_EPOCHS + 1)))


def rows(configs, budgets):
    """Model inputs (X, budget, curves, y) for every configuration observed up to its budget."""
    X, budget, curves, y = [], [], [], []
    for x, upto in zip(configs, budgets):
        values = curve(x)
        for b in range(1, upto + 1):
            prefix = np.full(MAX_EPOCHS - 1, np.nan)
            prefix[: b - 1] = values[: b - 1]
            X.append(x), budget.append(b / MAX_EPOCHS), curves.append(prefix), y.append(values[b - 1])
    return tuple(torch.tensor(np.array(a)) for a in (X, budget, curves, y))


def partial_rows(configs, seen, target):
    """Inputs asking for ``target``'s value of each configuration after ``seen`` observed epochs."""
    prefix = np.full((len(configs), MAX_EPOCHS - 1), np.nan)
    prefix[:, :seen] = np.array([curve(x)[:seen] for x in configs])
    X = torch.tensor(np.array(configs))
    return X, torch.full((len(configs),), target / MAX_EPOCHS, dtype=torch.float64), torch.tensor(prefix)


def test_predicts_a_held_out_final_epoch_better_than_a_constant():
    rng = np.random.default_rng(0)
    train = rng.random((24, 2))
    model = fit_deep_kernel_gp(*rows(train, rng.integers(1, MAX_EPOCHS + 1, len(train))), steps=150, seed=0)
    test = rng.random((20, 2))
    truth = torch.tensor([curve(x)[-1] for x in test])
    mean, var = model.predict(*partial_rows(test, seen=4, target=MAX_EPOCHS))
    constant = model.y_mean
    model_error = float(((mean - truth) ** 2).mean())
    assert model_error < 0.5 * float(((constant - truth) ** 2).mean())
    assert torch.isfinite(var).all() and (var > 0).all()


def test_the_acquisition_prefers_the_obviously_better_candidate():
    rng = np.random.default_rng(1)
    train = rng.random((16, 2))
    model = fit_deep_kernel_gp(*rows(train, [6] * len(train)), steps=100, seed=0)
    good, bad = np.array([0.3, 0.6]), np.array([0.95, 0.05])
    X, budget, curves = partial_rows([good, bad], seen=6, target=7)
    mean, var = model.posterior(X, budget, curves)
    best = model.standardize_values(torch.tensor(max(curve(x)[6] for x in train)))
    scores = log_expected_improvement(mean, var, best)
    assert float(scores[0]) > float(scores[1]) + 1.0


def test_features_ignore_unobserved_curve_values_and_warm_start_reuses_weights():
    network = CurveFeatures(dim=2)
    X, budget = torch.rand(3, 2, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)
    curves = torch.full((3, 5), float("nan"), dtype=torch.float64)
    curves[:, :2] = 0.3
    features = network(X, budget, curves)
    assert features.shape == (3, 8) and torch.isfinite(features).all()
    model = fit_deep_kernel_gp(*rows(np.random.default_rng(2).random((6, 2)), [3] * 6), steps=20)
    again = fit_deep_kernel_gp(*rows(np.random.default_rng(2).random((6, 2)), [3] * 6), steps=0,
                               warm_start=model.state())
    inputs = partial_rows([np.array([0.5, 0.5])], seen=3, target=4)
    assert torch.allclose(model.predict(*inputs)[0], again.predict(*inputs)[0])


def test_short_warm_fits_in_a_row_train_like_one_long_fit():
    data = rows(np.random.default_rng(3).random((8, 2)), [5] * 8)
    long = fit_deep_kernel_gp(*data, steps=20, lr=0.002, seed=0)  # small steps: the loss falls at every step,
    short = fit_deep_kernel_gp(*data, steps=10, lr=0.002, seed=0)  # so each fit ends at its last weights
    continued = fit_deep_kernel_gp(*data, steps=10, lr=0.002, warm_start=short.state())
    restarted = fit_deep_kernel_gp(*data, steps=10, lr=0.002, warm_start={**short.state(), "adam": None})
    assert continued.state()["adam"]["steps"] == 20
    weights = [torch.cat([p.flatten() for p in m.network.parameters()]) for m in (long, continued, restarted)]
    assert torch.allclose(weights[0], weights[1])
    assert not torch.allclose(weights[0], weights[2])
