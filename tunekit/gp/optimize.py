"""Maximise an acquisition function over a :class:`tunekit.Space`'s unit-cube encoding (mixed types).

Strategy (the common recipe of practical BO libraries, written for tunekit's Space):
1. a small finite space is enumerated outright;
2. otherwise many scrambled-Sobol candidates plus perturbations of the best observed points are scored, all
   projected to valid configurations first;
3. the best ``n_restarts`` distinct candidates and the best observed point are refined: L-BFGS-B moves the
   continuous columns (and integer-like columns with many levels, projected afterwards) with autograd
   gradients, then every discrete parameter tries all its levels (a categorical's one-hot block, an
   ordinal's ranks) keeping the best; the two steps alternate until nothing changes.
Every returned row is the encoding of a valid configuration.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import scipy.optimize
import torch

from tunekit.gp.model import single_threaded
from tunekit.space import Categorical, Float, Space

AcquisitionFunction = Callable[[torch.Tensor], torch.Tensor]
MAX_LEVELS = 64
MAX_ENUMERATE = 4096
LOCAL_SCALES = (0.01, 0.05, 0.2)


@dataclass(frozen=True)
class DiscreteBlock:
    """A parameter optimised by trying its values: its encoding columns and the encodings of its values.

    ``levels`` is (L, width): one row per value (one-hot rows for a categorical, one column otherwise).
    """

    columns: slice
    levels: np.ndarray


@dataclass(frozen=True)
class Layout:
    """How the optimiser treats each encoding column of a space.

    ``relaxed`` holds (columns, one-parameter Space) for discrete parameters moved like continuous ones.
    """

    free_mask: np.ndarray
    blocks: tuple[DiscreteBlock, ...]
    relaxed: tuple[tuple[slice, Space], ...] = ()


def _levels(param) -> np.ndarray:
    """Encodings (L, width) of every value of a discrete parameter."""
    single = Space([param])
    if isinstance(param, Categorical):
        return np.eye(len(param.values))
    grid = np.linspace(0.0, 1.0, 8 * single.cardinality + 1)[:, None]
    return np.unique(single.project(grid), axis=0)


def space_layout(space: Space, max_levels: int = MAX_LEVELS) -> Layout:
    """Continuous columns (and discrete ones with more than ``max_levels`` values) are free for L-BFGS-B;
    the other parameters become :class:`DiscreteBlock` s."""
    free = np.array(space.continuous_mask, dtype=bool)
    blocks, relaxed, offset = [], [], 0
    for param in space.params:
        width = param.width
        columns = slice(offset, offset + width)
        offset += width
        if width == 0 or (isinstance(param, Float) and param.step is None):
            continue
        if not isinstance(param, Categorical) and Space([param]).cardinality > max_levels:
            free[columns] = True
            relaxed.append((columns, Space([param])))
        else:
            blocks.append(DiscreteBlock(columns, _levels(param)))
    return Layout(free, tuple(blocks), tuple(relaxed))


def sobol(n: int, dim: int, seed: int) -> np.ndarray:
    """(n, dim) scrambled Sobol points in [0, 1)."""
    engine = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed)
    return engine.draw(n, dtype=torch.float64).numpy()


def project(layout: Layout, X: np.ndarray) -> np.ndarray:
    """Snap (n, dim) rows to encodings of valid configs, column block by column block.

    Continuous columns are clipped, a discrete parameter takes its nearest level (argmax for one-hot blocks),
    a relaxed one is snapped by its one-parameter Space. Equivalent to ``Space.project`` up to which of two
    equidistant neighbours wins, and much faster on thousands of rows.
    """
    X = np.clip(X, 0.0, 1.0)
    for block in layout.blocks:
        part = X[:, block.columns]
        if block.levels.shape[1] > 1:
            nearest = part.argmax(axis=1)
        else:
            nearest = np.abs(part - block.levels[:, 0][None]).argmin(axis=1)
        X[:, block.columns] = block.levels[nearest]
    for columns, single in layout.relaxed:
        X[:, columns] = single.project(X[:, columns])
    return X


def evaluate(acquisition: AcquisitionFunction, X: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Acquisition values (n,) of rows X (n, dim), without gradients, NaN mapped to -inf."""
    values = []
    with torch.no_grad():
        for start in range(0, len(X), chunk):
            values.append(acquisition(torch.from_numpy(X[start: start + chunk])).numpy())
    out = np.concatenate(values) if values else np.zeros(0)
    return np.where(np.isnan(out), -np.inf, out)


def enumerate_space(space: Space, layout: Layout) -> np.ndarray:
    """Encodings (cardinality, dim) of every configuration of a space without free columns."""
    rows = []
    for combo in itertools.product(*(block.levels for block in layout.blocks)):
        row = np.zeros(space.dim)
        for block, level in zip(layout.blocks, combo):
            row[block.columns] = level
        rows.append(row)
    return np.array(rows).reshape(-1, space.dim)


def local_candidates(layout: Layout, X_best: np.ndarray, n: int,
                     rng: np.random.Generator) -> np.ndarray:
    """(n, dim) perturbations of the rows of ``X_best`` (k, dim): Gaussian steps of mixed scales on free
    columns, and each discrete parameter resampled with probability 1/(number of discrete parameters)."""
    X = X_best[rng.integers(0, len(X_best), size=n)].copy()
    scales = rng.choice(LOCAL_SCALES, size=(n, 1))
    X[:, layout.free_mask] += scales * rng.standard_normal((n, int(layout.free_mask.sum())))
    for block in layout.blocks:
        change = rng.random(n) < 1.0 / len(layout.blocks)
        X[change, block.columns] = block.levels[rng.integers(0, len(block.levels), size=int(change.sum()))]
    return project(layout, X)


def refine_free(acquisition: AcquisitionFunction, X: np.ndarray, free_mask: np.ndarray,
                length_scales: Optional[np.ndarray] = None, max_iter: int = 100) -> np.ndarray:
    """L-BFGS-B on the free columns of the rows of X (r, dim) at once (the objective is their sum, so each
    row follows its own gradient); the other columns stay fixed.

    With the GP's ``length_scales`` (dim,), L-BFGS-B moves z = x / length_scale instead of x: one unit of z
    changes the acquisition about equally in every direction, which conditions the problem far better when
    lengthscales differ by orders of magnitude (ARD); Optuna's GPSampler preconditions the same way.
    """
    if not free_mask.any():
        return X
    base = torch.from_numpy(X.copy())
    free = torch.from_numpy(free_mask)
    scale = np.ones(int(free_mask.sum())) if length_scales is None else np.asarray(length_scales)[free_mask]
    scale_t = torch.from_numpy(np.tile(scale, len(X)))

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        moving = torch.from_numpy(flat).requires_grad_(True)
        full = base.clone()
        full[:, free] = (moving * scale_t).view(len(X), -1)
        values = acquisition(full)
        total = -torch.nan_to_num(values, nan=-1e6, neginf=-1e6).sum()
        total.backward()
        return float(total.detach()), np.nan_to_num(moving.grad.numpy())

    start = (X[:, free_mask] / scale).reshape(-1)
    bounds = [(0.0, 1.0 / s) for s in np.tile(scale, len(X))]
    result = scipy.optimize.minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
                                     options={"maxiter": max_iter})
    out = X.copy()
    out[:, free_mask] = np.clip(result.x.reshape(len(X), -1) * scale, 0.0, 1.0)
    return out


def discrete_moves(acquisition: AcquisitionFunction, X: np.ndarray,
                   blocks: tuple[DiscreteBlock, ...]) -> tuple[np.ndarray, bool]:
    """For each discrete parameter in turn, set every row of X (r, dim) to its best level. Returns (X, changed)."""
    X, changed = X.copy(), False
    for block in blocks:
        trial = np.repeat(X[:, None, :], len(block.levels), axis=1)
        trial[:, :, block.columns] = block.levels[None]
        values = evaluate(acquisition, trial.reshape(-1, X.shape[1])).reshape(len(X), -1)
        best = trial[np.arange(len(X)), values.argmax(axis=1)]
        changed = changed or not np.array_equal(best, X)
        X = best
    return X, changed


def refine(acquisition: AcquisitionFunction, layout: Layout, X: np.ndarray,
           length_scales: Optional[np.ndarray] = None, rounds: int = 3) -> np.ndarray:
    """Alternate :func:`refine_free` and :func:`discrete_moves` on starting rows X (r, dim) until stable."""
    for _ in range(rounds):
        X = project(layout, refine_free(acquisition, X, layout.free_mask, length_scales))
        X, changed = discrete_moves(acquisition, X, layout.blocks)
        if not changed or not layout.free_mask.any():
            break
    return X


@single_threaded()
def maximize_acquisition(acquisition: AcquisitionFunction, space: Space, n_restarts: int = 5,
                         X_best: Optional[np.ndarray] = None, seed: int = 0, n_candidates: int = 2048,
                         n_local: int = 512, length_scales: Optional[np.ndarray] = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Maximise ``acquisition`` over ``space``.

    Args:
        acquisition: maps (..., dim) encodings to (...) values, differentiable in the free columns.
        n_restarts: local refinements started from the best distinct candidates.
        X_best: (k, dim) encodings of the best observed points, best first: refinement starts from the
            first and local candidates are drawn around all of them.
        seed: seeds the Sobol candidates and the perturbations.
        length_scales: (dim,) the GP's lengthscales, to precondition the local refinement (:func:`refine_free`).

    Returns:
        (X (m, dim), values (m,)): distinct valid encodings sorted by decreasing acquisition value, so a caller
        can skip rows it must not repeat (observed or pending configurations).
    """
    cardinality = space.cardinality
    if cardinality is not None and cardinality <= MAX_ENUMERATE:
        X = enumerate_space(space, space_layout(space, max_levels=MAX_ENUMERATE))
        return _ranked(X, evaluate(acquisition, X))
    layout = space_layout(space)
    rng = np.random.default_rng(seed)
    parts = [project(layout, sobol(n_candidates, space.dim, seed))]
    if X_best is not None and len(X_best):
        parts += [local_candidates(layout, X_best, n_local, rng), X_best]
    X = np.unique(np.concatenate(parts), axis=0)
    values = evaluate(acquisition, X)
    starts = X[np.argsort(-values, kind="stable")[:n_restarts]]
    if X_best is not None and len(X_best):
        starts = np.concatenate([starts, X_best[:1]])
    refined = refine(acquisition, layout, starts, length_scales)
    X = np.concatenate([refined, X])
    values = np.concatenate([evaluate(acquisition, refined), values])
    return _ranked(X, values)


def _ranked(X: np.ndarray, values: np.ndarray, keep: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of X sorted by decreasing value, at most ``keep`` of them."""
    X, index = np.unique(X, axis=0, return_index=True)
    values = values[index]
    order = np.argsort(-values, kind="stable")[:keep]
    return X[order], values[order]
