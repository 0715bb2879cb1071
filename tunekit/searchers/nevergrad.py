"""Any nevergrad optimizer as a Ray Tune searcher, through nevergrad's own ask/tell.

Every configuration a trial runs is a candidate nevergrad *asked* for (N parallel trials: N asks), and each
finished trial is *told* back as a loss to minimise (the shell negates it for ``mode="max"``). Failed trials
and NaN/inf results are told as ``inf``, which nevergrad 1.0 itself clips to its worst-loss sentinel 5e20 (it
has no other failure channel): the candidate ranks last, never as a good value. ``points_to_evaluate`` (and a
Space's defaults) go through ``optimizer.suggest``, nevergrad's own way to have given points evaluated (it
counts them as told-not-asked).

The search space is either a nevergrad parametrization used as given (e.g. :func:`tunekit.hpman.hpng`), or
anything :class:`tunekit.Space` reads (a Space, a Ray ``param_space``, a ConfigSpace), converted once by
:func:`space_to_parametrization`. With ``seed`` the parametrization's ``random_state`` is seeded, which is how
nevergrad makes a run reproducible: the same seed asks the same candidates as a hand-written ask/tell loop.

``save`` pickles the optimizer with the rest of the state into Ray's experiment folder, as Ray's own searchers
do; ``restore`` unpickles it, so only restore checkpoints your own experiments wrote (a trusted Ray checkpoint).
"""

from __future__ import annotations

import difflib
import logging
import math
import warnings
from typing import Any, Optional, Sequence, Union

import nevergrad as ng
import numpy as np
from ray.tune.search import Searcher

from tunekit.hpman import hpng
from tunekit.searchers.base import Observation, SpaceSearcher, config_key
from tunekit.space import Categorical, Constant, Float, Int, Ordinal, Space

logger = logging.getLogger(__name__)

# A step float becomes an ordered choice of its grid values; beyond this many values that is too slow.
MAX_GRID_VALUES = 10_000

#: How often a failed configuration asked by nevergrad is told as worst and asked again before giving up.
MAX_REASKS = 32
OptimizerSpec = Union[str, type, "ng.optimizers.base.ConfiguredOptimizer"]


def resolve_optimizer(optimizer: OptimizerSpec) -> Any:
    """A callable ``(parametrization, budget, num_workers) -> Optimizer`` from a registry name, an Optimizer
    class or a configured optimizer family (e.g. ``ng.families.DifferentialEvolution(crossover="twopoints")``)."""
    registry = ng.optimizers.registry
    if isinstance(optimizer, str):
        if optimizer not in registry:
            close = difflib.get_close_matches(optimizer, list(registry), n=5)
            raise ValueError(f"optimizer={optimizer!r} is not in ng.optimizers.registry; close names: {close}")
        return registry[optimizer]
    if isinstance(optimizer, ng.optimizers.base.ConfiguredOptimizer):
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, ng.optimizers.base.Optimizer):
        return optimizer
    raise TypeError(f"optimizer={optimizer!r} is not accepted: pass a name from ng.optimizers.registry, an "
                    "Optimizer class or a ConfiguredOptimizer (NevergradSearch builds the optimizer itself)")


def _nevergrad_parameter(param: Any) -> Any:
    if isinstance(param, Constant):
        return param.value
    if isinstance(param, Categorical):
        return ng.p.Choice(list(param.values))
    if isinstance(param, Ordinal):
        return ng.p.TransitionChoice(list(param.values))
    if isinstance(param, Int):
        kind = ng.p.Log if param.log else ng.p.Scalar
        return kind(lower=param.low, upper=param.high).set_integer_casting()
    if isinstance(param, Float) and param.step is not None:
        size = param.n_steps + 1
        if size > MAX_GRID_VALUES:
            raise ValueError(f"parameter {param.name!r}: step={param.step} makes a grid of {size} values; "
                             f"NevergradSearch takes at most {MAX_GRID_VALUES} (use a coarser step or none)")
        grid = param.decode(param.encode([param.low + k * param.step for k in range(size)]))
        return ng.p.TransitionChoice(grid)
    kind = ng.p.Log if param.log else ng.p.Scalar
    return kind(lower=param.low, upper=param.high)


def space_to_parametrization(space: Space) -> Any:
    """The nevergrad parametrization of a Space: an ``ng.p.Instrumentation`` keyed by the flat names.

    Log floats -> ``ng.p.Log``; ints -> ``Scalar``/``Log`` with integer casting; categoricals -> ``Choice``;
    ordinals and step floats -> ``TransitionChoice`` (ordered); constants stay fixed. Defaults are not
    initial values here: the searcher asks for them first (``optimizer.suggest``).
    """
    return ng.p.Instrumentation(**{param.name: _nevergrad_parameter(param) for param in space.params})


def _plain(value: Any) -> Any:
    """numpy arrays and scalars -> lists and Python numbers, so configs are plain data for Ray and JSON."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _tell_worst(optimizer: Any, candidate: Any) -> None:
    """Tell nevergrad a failed candidate as its worst value (inf), without its warning about huge losses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ng.errors.LossTooLargeWarning)
        optimizer.tell(candidate, math.inf)


def config_of(parametrization: Any, candidate: Any) -> dict:
    """The flat config (plain Python values) that a candidate of ``parametrization`` stands for."""
    values = candidate.kwargs if isinstance(parametrization, ng.p.Instrumentation) else candidate.value
    return {name: _plain(value) for name, value in values.items()}


def value_of(parametrization: Any, config: dict) -> Any:
    """The nevergrad value of a flat config (inverse of :func:`config_of`)."""
    return ((), dict(config)) if isinstance(parametrization, ng.p.Instrumentation) else dict(config)


class ParametrizationSpace:
    """The part of the Space interface the searcher shell uses, for a nevergrad parametrization used as is
    (arrays, custom mutations... that a Space cannot hold). Its configs are the named values, flat.

    It holds no defaults (``params`` is empty): the parametrization's initial value is where nevergrad starts.
    """

    params: tuple = ()
    cardinality = None

    def __init__(self, parametrization: Any):
        if isinstance(parametrization, ng.p.Instrumentation):
            if parametrization.args:
                raise ValueError(f"NevergradSearch needs named parameters only; the Instrumentation has "
                                 f"{len(parametrization.args)} positional argument(s): {parametrization!r}")
        elif not isinstance(parametrization, ng.p.Dict):
            raise TypeError(f"space={parametrization!r}: a nevergrad parametrization must be an "
                            "ng.p.Instrumentation of named parameters or an ng.p.Dict")
        self.parametrization = parametrization
        self.names = sorted(config_of(parametrization, parametrization))

    def flatten(self, nested_config: dict) -> dict:
        return dict(nested_config)

    def unflatten(self, flat_config: dict) -> dict:
        return dict(flat_config)

    def default(self) -> dict:
        return config_of(self.parametrization, self.parametrization)

    def validate(self, config: dict) -> None:
        """ValueError unless ``config`` names every parameter and nevergrad accepts its values."""
        if sorted(config) != self.names:
            raise ValueError(f"config keys {sorted(config)} do not match the parametrization's {self.names}")
        try:
            self.parametrization.spawn_child(new_value=value_of(self.parametrization, config))
        except (ValueError, TypeError) as err:
            raise ValueError(f"config {config!r} is not a value of the parametrization: {err}") from err


class NevergradSearch(SpaceSearcher):
    """A nevergrad optimizer as a Ray Tune searcher (ask/tell; see the module docstring).

    Args:
        optimizer: a name from ``ng.optimizers.registry`` ("OnePlusOne", "TwoPointsDE", "CMA", "NGOpt"...),
            an Optimizer class, or a configured family such as ``ng.families.ParametrizedOnePlusOne(...)``.
        space: a nevergrad parametrization (e.g. ``hpng(_)``), an hpman manager (read by ``hpng``), a
            :class:`tunekit.Space`, a Ray ``param_space`` or a ConfigSpace; None takes the Tuner's param_space.
        metric, mode: what to optimise; None takes the Tuner's ``TuneConfig``.
        points_to_evaluate: configs asked first, in order (through ``optimizer.suggest``).
        budget: the number of evaluations nevergrad plans for (some optimizers, e.g. NGOpt, choose their
            algorithm from it); after ``budget`` suggestions the searcher reports it is finished.
        seed: seeds the parametrization's ``random_state``: the same seed asks the same candidates.
    """

    def __init__(self, optimizer: OptimizerSpec = "OnePlusOne", space: Any = None, metric: Optional[str] = None,
                 mode: Optional[str] = None, points_to_evaluate: Optional[Sequence[dict]] = None,
                 budget: Optional[int] = None, seed: Optional[int] = None):
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
            raise ValueError(f"budget={budget!r} is not accepted: use a positive int or None")
        self._optimizer_factory = resolve_optimizer(optimizer)
        self._budget = budget
        self._num_workers = 1
        self._optimizer: Any = None
        self._parametrization: Any = None
        self._candidates: dict = {}
        self._points: list = []
        self._failed_keys: set = set()
        as_is = isinstance(space, ng.p.Parameter) or type(space).__module__.startswith("hpman")
        super().__init__(space=None if as_is else space, metric=metric, mode=mode,
                         points_to_evaluate=points_to_evaluate, seed=seed)
        if as_is:
            self._set_space(ParametrizationSpace(space if isinstance(space, ng.p.Parameter) else hpng(space)))

    # -- the shell's hooks ------------------------------------------------------------------------------
    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Limit running trials (the shell's rule) and tell nevergrad how many candidates are out at once
        (``num_workers``)."""
        self._num_workers = max(1, int(max_concurrent))
        return super().set_max_concurrency(max_concurrent)

    def forget(self, trial_id: str) -> None:
        super().forget(trial_id)
        self._candidates.pop(trial_id, None)

    def on_space_set(self) -> None:
        """Build (or copy) the parametrization, seeded; take the shell's queue (defaults, points to evaluate)
        for ``optimizer.suggest`` (nevergrad's own channel for given points)."""
        self._points, self._state.queued_points = self._state.queued_points, []
        space = self.space
        parametrization = (space.parametrization.copy() if isinstance(space, ParametrizationSpace)
                           else space_to_parametrization(space))
        if self._seed is not None:
            parametrization.random_state = np.random.RandomState(self._seed)
        self._parametrization = parametrization

    def propose(self, trial_id: str) -> Optional[Union[dict, str]]:
        optimizer = self._ensure_optimizer()
        if self._budget is not None and optimizer.num_ask >= self._budget:
            logger.info("NevergradSearch: budget of %d evaluations reached", self._budget)
            return Searcher.FINISHED
        point = self._points.pop(0) if self._points else None
        if point is not None:
            if isinstance(self._parametrization, ng.p.Instrumentation):
                optimizer.suggest(**point)
            else:
                optimizer.suggest(point)
        if point is not None:
            candidate = optimizer.ask()
            self._candidates[trial_id] = candidate
            return dict(point)  # a given point runs as given (nevergrad's transforms may move a float by an ulp)
        candidate = self._ask_untried_failure(optimizer)
        self._candidates[trial_id] = candidate
        return config_of(self._parametrization, candidate)

    def _ask_untried_failure(self, optimizer: Any) -> Any:
        """nevergrad's next candidate, but never a configuration that already failed: such a candidate is
        told as worst (inf) at once and asked again, ``MAX_REASKS`` times at most (nevergrad may re-ask good
        points on purpose, to average noise; re-running a crash only wastes a trial)."""
        candidate = optimizer.ask()
        for _ in range(MAX_REASKS):
            if config_key(config_of(self._parametrization, candidate)) not in self._failed_keys:
                return candidate
            _tell_worst(optimizer, candidate)
            candidate = optimizer.ask()
        logger.warning("NevergradSearch: %s asked only failed configurations %d times in a row; running the last "
                       "one again", type(optimizer).__name__, MAX_REASKS)
        return candidate

    def observe(self, observation: Observation) -> None:
        optimizer = self._ensure_optimizer()
        candidate = self._candidates.pop(observation.trial_id, None)
        if candidate is None:
            candidate = self._parametrization.spawn_child(
                new_value=value_of(self._parametrization, observation.config))
        if observation.loss is None:
            self._failed_keys.add(config_key(observation.config))
            _tell_worst(optimizer, candidate)
        else:
            optimizer.tell(candidate, observation.loss)

    # -- state ----------------------------------------------------------------------------------------
    def get_state(self) -> dict:
        return {**super().get_state(), "optimizer": self._optimizer, "parametrization": self._parametrization,
                "candidates": self._candidates, "points": self._points, "num_workers": self._num_workers,
                "failed_keys": self._failed_keys}

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._optimizer, self._parametrization = state["optimizer"], state["parametrization"]
        self._candidates, self._points = state["candidates"], state["points"]
        self._num_workers = state["num_workers"]
        self._failed_keys = state.get("failed_keys", set())

    @property
    def optimizer(self) -> Any:
        """The nevergrad optimizer (built at the first suggestion, once ``num_workers`` is known)."""
        return self._optimizer

    def _ensure_optimizer(self) -> Any:
        self._require_ready()
        if self._optimizer is None:
            self._optimizer = self._optimizer_factory(
                parametrization=self._parametrization, budget=self._budget, num_workers=self._num_workers)
        return self._optimizer
