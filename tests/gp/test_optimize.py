"""The acquisition optimizer finds the maximum of known surfaces on mixed spaces and returns valid configs."""

import numpy as np
import pytest
import torch

from tunekit.gp import maximize_acquisition, sobol
from tunekit.gp.optimize import enumerate_space, refine_free, space_layout
from tunekit.space import Categorical, Float, Int, Ordinal, Space

MIXED = Space([
    Float("a", 0.0, 1.0),
    Float("lr", 1e-4, 1.0, log=True),
    Int("width", 1, 200),            # many levels: moved by L-BFGS-B, then rounded
    Int("depth", 0, 5),              # few levels: tried one by one
    Categorical("act", ("relu", "tanh", "gelu")),
    Ordinal("batch", (16, 32, 64, 128)),
    Float("drop", 0.0, 0.5, step=0.1),
])
TARGET = {"a": 0.3, "lr": 1e-2, "width": 137, "depth": 4, "act": "tanh", "batch": 64, "drop": 0.2}


def surface(space: Space, target: dict):
    """A smooth surface peaked at ``target``'s encoding, with a separate bonus for the target category."""
    centre = torch.from_numpy(space.encode([target])[0])
    cat = torch.from_numpy(np.concatenate([np.full(len(p.values) if isinstance(p, Categorical) else 1,
                                                   isinstance(p, Categorical)) for p in space.params]))

    def acquisition(X: torch.Tensor) -> torch.Tensor:
        numeric = ((X - centre) ** 2)[..., ~cat].sum(-1)
        category = (X[..., cat] * centre[cat]).sum(-1)
        return -numeric + 0.5 * category

    return acquisition


def test_finds_the_maximum_on_a_mixed_space():
    X, values = maximize_acquisition(surface(MIXED, TARGET), MIXED, n_restarts=5, seed=0)
    best = MIXED.decode(X[:1])[0]
    assert {k: best[k] for k in ("width", "depth", "act", "batch", "drop")} == \
        {k: TARGET[k] for k in ("width", "depth", "act", "batch", "drop")}
    assert best["a"] == pytest.approx(0.3, abs=1e-4)
    assert best["lr"] == pytest.approx(1e-2, rel=1e-3)
    assert np.all(np.diff(values) <= 0)


def test_every_returned_row_is_a_valid_distinct_configuration():
    X, _ = maximize_acquisition(surface(MIXED, TARGET), MIXED, n_restarts=3, seed=1)
    np.testing.assert_allclose(MIXED.project(X), X, rtol=0, atol=1e-9)  # floats differ by canonical rounding only
    assert len(np.unique(X, axis=0)) == len(X)


def test_local_refinement_beats_the_candidates_alone_on_a_narrow_peak():
    space = Space([Float(f"x{i}", 0.0, 1.0) for i in range(6)])
    target = {f"x{i}": v for i, v in enumerate([0.12, 0.87, 0.45, 0.33, 0.71, 0.05])}
    acquisition = surface(space, target)
    X, values = maximize_acquisition(acquisition, space, n_restarts=3, seed=2, n_candidates=256)
    with torch.no_grad():
        raw_best = float(acquisition(torch.from_numpy(sobol(256, 6, seed=2))).max())
    assert values[0] > raw_best
    np.testing.assert_allclose(X[0], space.encode([target])[0], atol=1e-4)


def test_best_observed_points_seed_the_search():
    space = Space([Float(f"x{i}", 0.0, 1.0) for i in range(8)])
    target = {f"x{i}": 0.5 + 0.04 * i for i in range(8)}
    near = space.encode([{k: v + 0.01 for k, v in target.items()}])
    X, _ = maximize_acquisition(surface(space, target), space, n_restarts=1, X_best=near, seed=3, n_candidates=16)
    np.testing.assert_allclose(X[0], space.encode([target])[0], atol=1e-4)


def test_small_finite_spaces_are_enumerated_exactly():
    space = Space([Int("n", 0, 9), Categorical("c", ("x", "y", "z")), Ordinal("o", (1, 2, 3))])
    target = {"n": 7, "c": "z", "o": 1}
    X, values = maximize_acquisition(surface(space, target), space, seed=4)
    assert len(X) == space.cardinality == 90
    assert space.decode(X[:1])[0] == target
    assert len({tuple(row) for row in enumerate_space(space, space_layout(space, max_levels=100))}) == 90


def test_layout_separates_free_columns_from_discrete_blocks():
    layout = space_layout(MIXED)
    names = [p.name for p in MIXED.params for _ in range(3 if p.name == "act" else 1)]
    free = {name for name, f in zip(names, layout.free_mask) if f}
    assert free == {"a", "lr", "width"}
    assert [len(block.levels) for block in layout.blocks] == [6, 3, 4, 6]


def test_refinement_preconditioned_by_length_scales_reaches_an_anisotropic_peak():
    length_scales = np.array([0.002, 0.3, 40.0])
    centre = torch.tensor([0.4012, 0.77, 0.2], dtype=torch.float64)
    scale = torch.from_numpy(length_scales)

    def acquisition(X: torch.Tensor) -> torch.Tensor:
        return -(((X - centre) / scale) ** 2).sum(-1).clamp_max(50.0).sqrt()  # flat beyond ~7 lengthscales

    starts = np.array([[0.4, 0.1, 0.9], [0.403, 0.95, 0.0]])
    X = refine_free(acquisition, starts, np.ones(3, dtype=bool), length_scales)
    assert (X >= 0).all() and (X <= 1).all()
    np.testing.assert_allclose(X[:, :2], np.tile(centre[:2].numpy(), (2, 1)), atol=1e-4)
    # the long-lengthscale column barely moves the value, yet reaches its optimum too (without
    # preconditioning L-BFGS-B stops with it where it started)
    np.testing.assert_allclose(X[:, 2], [0.2, 0.2], atol=1e-3)
