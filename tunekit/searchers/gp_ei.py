"""GP-EI: Gaussian-process Bayesian optimisation as a Ray Tune searcher (a thin shell over ``tunekit.gp``).

Each suggestion: points to evaluate and the space's defaults first (the shell), then ``random_starts``
scrambled-Sobol points, then the maximiser of the acquisition over a GP fitted to finished trials' losses,
with running trials fantasized at their posterior mean ("kriging believer", :mod:`tunekit.gp.acquisition`)
so parallel workers spread out. Failed trials (errors, NaN/inf) are left out of the model but never
proposed again. A numerical failure falls back to a random configuration with a warning instead of stopping
the run.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

from tunekit.gp import (ACQUISITIONS, KERNELS, Acquisition, GPFitError, fit_gp, maximize_acquisition, single_threaded,
                        sobol)
from tunekit.searchers.base import Observation, SpaceSearcher, config_key

logger = logging.getLogger(__name__)

N_BEST_STARTS = 5
MAX_DESIGN_TRIES = 64


def _check_int(name: str, value: Any, minimum: int, maximum: Optional[int] = None) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum
            or (maximum is not None and value > maximum)):
        accepted = f"an integer >= {minimum}" + ("" if maximum is None else f" and <= {maximum}")
        raise ValueError(f"{name}={value!r} is not accepted: use {accepted}")
    return int(value)


def _check_positive(name: str, value: Any, allow_none: bool) -> Optional[float]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        accepted = "None or a positive finite number" if allow_none else "a positive finite number"
        raise ValueError(f"{name}={value!r} is not accepted: use {accepted}")
    return float(value)


class GPEISearch(SpaceSearcher):
    """Gaussian-process Bayesian optimisation (``ray.tune.search.Searcher``) for any :class:`tunekit.Space`.

    Args:
        space, metric, mode, points_to_evaluate, seed: as for every tunekit searcher (see ``SpaceSearcher``).
        random_starts: suggestions (points to evaluate included) made before the GP takes over.
        kernel: "matern52", "matern32" or "rbf", with one lengthscale per encoded column.
        kernel_scale: fixes the kernel's output scale (standardized-loss units) instead of learning it.
        acquisition: "logei" (log expected improvement, numerically safe), "ei", "ucb" or "pi".
        optimizer_restarts: starting points of the acquisition optimizer's local refinement.
        beta: UCB's exploration weight (mean + sqrt(beta * variance)).

    Cost stays bounded however many trials finish: the GP conditions on at most
    ``tunekit.gp.model.MAX_CONDITION_POINTS`` (500) observations and fits its hyperparameters on at most
    ``MAX_FIT_POINTS`` (200) of them, each time the best half plus a random rest of the others (the best
    observed points always count, and every observation still blocks repeats). With 2,000 observations a
    suggestion then costs what it costs with 500.
    """

    def __init__(self, space: Any = None, metric: Optional[str] = None, mode: Optional[str] = None,
                 points_to_evaluate: Optional[Sequence[dict]] = None, random_starts: int = 10,
                 kernel: str = "matern52", kernel_scale: Optional[float] = None, acquisition: str = "logei",
                 optimizer_restarts: int = 5, seed: Optional[int] = None, beta: float = 2.0):
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r} is not accepted: use one of {list(KERNELS)}")
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"acquisition={acquisition!r} is not accepted: use one of {list(ACQUISITIONS)}")
        if seed is not None:
            _check_int("seed", seed, 0)
        self._random_starts = _check_int("random_starts", random_starts, 0)
        self._optimizer_restarts = _check_int("optimizer_restarts", optimizer_restarts, 1, 1000)
        self._kernel_scale = _check_positive("kernel_scale", kernel_scale, allow_none=True)
        self._beta = _check_positive("beta", beta, allow_none=False)
        self._kernel, self._acquisition = kernel, acquisition
        self._rng = np.random.default_rng(seed)
        self._design_seed = int(self._rng.integers(2**31))
        self._n_design = 0
        self._warm_start: Optional[dict] = None
        super().__init__(space=space, metric=metric, mode=mode, points_to_evaluate=points_to_evaluate, seed=seed)

    def propose(self, trial_id: str) -> Optional[dict]:
        observed = [o for o in self._state.observations if o.loss is not None]
        if self._space.dim == 0:
            return self._space.decode(np.zeros((1, 0)))[0]
        if len(self._state.observations) + len(self._state.live) < self._random_starts or len(observed) < 2:
            return self._design_point()
        try:
            with single_threaded():
                return self._model_point(observed)
        except (GPFitError, RuntimeError, ValueError, ArithmeticError):
            logger.warning("GPEISearch: the GP step failed; suggesting a random configuration instead",
                           exc_info=True)
            return self._random_point()

    def _design_point(self) -> dict:
        """The next scrambled-Sobol point that was not suggested before (random when none is found)."""
        for _ in range(MAX_DESIGN_TRIES):
            self._n_design += 1
            row = sobol(self._n_design, self._space.dim, self._design_seed)[-1:]
            config = self._space.decode(row)[0]
            if config_key(config) not in self._state.suggested_keys:
                return config
        return self._random_point()

    def _random_point(self) -> dict:
        """A uniformly random configuration, avoiding repeats when the space allows."""
        for _ in range(MAX_DESIGN_TRIES):
            config = self._space.sample(1, seed=self._rng)[0]
            if config_key(config) not in self._state.suggested_keys:
                return config
        return config

    def _model_point(self, observed: list[Observation]) -> dict:
        """Fit the GP on finished trials, fantasize running ones, maximise the acquisition, skip repeats."""
        space = self._space
        X = space.encode([o.config for o in observed])
        y = -np.array([o.loss for o in observed])
        gp = fit_gp(X, y, self._kernel, self._kernel_scale, warm_start=self._warm_start, generator=self._rng)
        self._warm_start = {name: value.clone() for name, value in gp.hyper.state_dict().items()}
        pending = self.pending_configs
        X_pending = torch.from_numpy(space.encode(pending)) if pending else None
        acquisition = Acquisition(gp, self._acquisition, X_pending=X_pending, beta=self._beta)
        X_best = X[np.argsort(-y, kind="stable")[:N_BEST_STARTS]]
        length_scales = gp.hyper.covar_module.base_kernel.lengthscale.detach().reshape(-1).numpy()
        candidates, _ = maximize_acquisition(acquisition, space, n_restarts=self._optimizer_restarts,
                                             X_best=X_best, seed=int(self._rng.integers(2**31)),
                                             length_scales=length_scales)
        for start in range(0, len(candidates), 32):
            for config in space.decode(candidates[start: start + 32]):
                if config_key(config) not in self._state.suggested_keys:
                    return config
        logger.info("GPEISearch: every acquisition candidate was tried before; suggesting a random configuration")
        return self._random_point()

    def get_state(self) -> dict:
        state = super().get_state()
        state["gp_ei"] = {"rng": self._rng.bit_generator.state, "design_seed": self._design_seed,
                          "n_design": self._n_design, "warm_start": self._warm_start}
        return state

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        own = state["gp_ei"]
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = own["rng"]
        self._design_seed, self._n_design = own["design_seed"], own["n_design"]
        self._warm_start = own["warm_start"]
