"""Searchers and schedulers by name: one table, imported lazily, options checked against the signature.

An experiment file names a searcher (``gp_ei``) and a scheduler (``asha``) and gives their options by
their Python argument names. :func:`build_searcher` / :func:`build_scheduler` find the class, refuse an
option its constructor does not take (naming it and listing the accepted ones), and build it. External
programs cannot be paused and resumed from checkpoints, so whatever would pause trials is refused up front,
with its reason, as a property of the registry entry: ``dyhpo`` always, ``asha`` with ``rule="promotion"``
and ``median`` with ``hard_stop=False``. ``points_to_evaluate`` are checked against the space.

``random`` and ``grid`` are Ray's ``BasicVariantGenerator`` over ``Space.to_tune()`` or over every
combination of a finite space; such a generator carries the ``param_space`` the Tuner must expand.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from ray import tune
from ray.tune.search import BasicVariantGenerator

from tunekit.space import Constant, Float, Int, Space

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PausingOption:
    """An option value with which a scheduler pauses trials (``pauses(value)`` is True), and what to use instead."""

    option: str
    pauses: Callable[[Any], bool]
    instead: str


@dataclass(frozen=True)
class Entry:
    """Where a searcher or scheduler lives (``"module:attribute"``), which arguments tunekit sets itself, and
    whether it pauses trials and resumes them from checkpoints, which external-command trials cannot do:
    always (``pauses`` says why and what to use instead) or with some option values (``pausing_options``)."""

    target: str
    managed: tuple[str, ...]
    pauses: str = ""
    pausing_options: tuple[PausingOption, ...] = ()


# Arguments tunekit sets itself: the space and metric/mode for searchers; schedulers get metric/mode
# through tune.TuneConfig.
SEARCHERS: dict[str, Entry] = {
    "gp_ei": Entry("tunekit.searchers.gp_ei:GPEISearch", ("space", "metric", "mode")),
    "nevergrad": Entry("tunekit.searchers.nevergrad:NevergradSearch", ("space", "metric", "mode")),
    "dyhpo": Entry("tunekit.searchers:DyHPOSearch", ("space", "metric", "mode"), pauses=(
        "DyHPO pauses trials and resumes them from checkpoints, which external-command trials cannot do; use "
        "DyHPOSearch with DyHPOScheduler from Python, with tunekit.trainables.epoch_trainable")),
    "random": Entry("tunekit.registry:random_search", ("space",)),
    "grid": Entry("tunekit.registry:grid_search", ("space",)),
}
SCHEDULERS: dict[str, Entry] = {
    "asha": Entry("tunekit.schedulers.asha:ASHAScheduler", ("metric", "mode"), pausing_options=(
        PausingOption("rule", lambda rule: rule == "promotion", 'rule = "stopping" (the default)'),)),
    "median": Entry("tunekit.schedulers.median:MedianStoppingScheduler", ("metric", "mode"), pausing_options=(
        PausingOption("hard_stop", lambda hard_stop: not hard_stop, "hard_stop = true (the default)"),)),
    "fifo": Entry("ray.tune.schedulers:FIFOScheduler", ()),
}
KINDS = {"searcher": SEARCHERS, "scheduler": SCHEDULERS}


class OptionError(ValueError):
    """An option a searcher or scheduler does not take (``option`` names it)."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(message)


# Most combinations searcher 'grid' expands: Ray builds every one as a trial spec before the first runs.
MAX_GRID = 100_000


class SpaceVariantGenerator(BasicVariantGenerator):
    """Ray's ``BasicVariantGenerator`` plus the ``param_space`` (Ray domains, grid lists) it expands."""

    def __init__(self, param_space: dict, points_to_evaluate: Optional[list] = None, seed: Optional[int] = None):
        super().__init__(points_to_evaluate=points_to_evaluate, random_state=seed)
        self.param_space = param_space


def random_search(space: Space, points_to_evaluate: Optional[Sequence[dict]] = None,
                  seed: Optional[int] = None) -> SpaceVariantGenerator:
    """Independent random samples of ``space`` (Ray's random sampling of ``space.to_tune()``)."""
    points = [space.unflatten(dict(point)) for point in points_to_evaluate or []]
    return SpaceVariantGenerator(space.to_tune(), points_to_evaluate=points or None, seed=seed)


def grid_search(space: Space) -> SpaceVariantGenerator:
    """Every combination of a finite ``space`` once per sample (``num_samples`` passes over the grid), at
    most ``MAX_GRID`` combinations (Ray expands the whole grid up front)."""
    if space.cardinality is None:
        continuous = [p.name for p in space.params if isinstance(p, Float) and p.step is None]
        raise ValueError(f"searcher 'grid' needs a finite space, but parameters {continuous} are continuous "
                         "floats; give each a step, or use searcher 'random'")
    if space.cardinality > MAX_GRID:
        sizes = ", ".join(f"{p.name!r}: {p.cardinality}" for p in space.params if p.cardinality > 1)
        raise ValueError(f"searcher 'grid' would run {space.cardinality} combinations ({sizes}), more than "
                         f"{MAX_GRID}; use larger steps, fewer values, or searcher 'random'")
    grid = {param.name: tune.grid_search(grid_values(param)) for param in space.params}
    return SpaceVariantGenerator(space.unflatten(grid))


def grid_values(param: Any) -> list:
    """All values a finite parameter takes, in order."""
    if isinstance(param, Float):
        return [param.decode(param.encode([param.low + k * param.step]))[0] for k in range(param.n_steps + 1)]
    if isinstance(param, Int):
        return list(range(param.low, param.high + 1))
    if isinstance(param, Constant):
        return [param.value]
    return list(param.values)


def names(kind: str) -> list[str]:
    """The names an experiment file may give for ``kind`` ("searcher" or "scheduler")."""
    return sorted(KINDS[kind])


def resolve(kind: str, name: str) -> tuple[Callable, Entry]:
    """The class (or factory) registered as ``name``; ValueError when unknown or when it always pauses trials
    (external-command trials cannot be paused)."""
    table = KINDS[kind]
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; accepted: {', '.join(names(kind))}")
    entry = table[name]
    if entry.pauses:
        raise ValueError(f"{kind} {name!r} cannot run in an experiment file: {entry.pauses}")
    module_name, attribute = entry.target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute), entry


def accepted_options(factory: Callable, entry: Entry) -> list[str]:
    """Keyword arguments of ``factory`` a user may set (those tunekit sets itself left out)."""
    parameters = inspect.signature(factory).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in kinds and p.name not in entry.managed]


def check_options(kind: str, name: str, options: Mapping[str, Any]) -> tuple[Callable, Entry]:
    """Resolve ``name`` and refuse options its constructor does not take (:class:`OptionError`); returns the
    factory and its entry."""
    factory, entry = resolve(kind, name)
    accepted = accepted_options(factory, entry)
    for key in options:
        if key in entry.managed:
            raise OptionError(key, f"option {key!r} of {kind} {name!r} is set by tunekit "
                              "([experiment] metric/mode, [parameters]); remove it here")
        if key not in accepted:
            listed = ", ".join(accepted) if accepted else "none"
            raise OptionError(key, f"unknown option {key!r} for {kind} {name!r}; accepted: {listed}")
    for pausing in entry.pausing_options:
        if pausing.option in options and pausing.pauses(options[pausing.option]):
            raise OptionError(pausing.option, f"{kind} {name!r} with {pausing.option}="
                              f"{options[pausing.option]!r} pauses trials and resumes them from checkpoints, "
                              f"which external-command trials cannot do; use {pausing.instead}")
    return factory, entry


def build_searcher(name: str, options: Mapping[str, Any], space: Space, metric: str, mode: str) -> Any:
    """The searcher ``name`` for ``space`` with the user's ``options`` (ValueError/TypeError when refused).

    ``metric`` and ``mode`` go to the constructor: Ray hands them to a searcher only together with a
    non-empty ``param_space``, and a searcher that holds its space gets an empty one.
    """
    factory, entry = check_options("searcher", name, options)
    if "points_to_evaluate" in options:
        check_points(options["points_to_evaluate"], space)
    given = {"space": space, "metric": metric, "mode": mode}
    return factory(**{key: given[key] for key in entry.managed}, **options)


def check_points(points: Any, space: Space) -> None:
    """Refuse ``points_to_evaluate`` that are not a list of (possibly partial) configs of ``space``
    (:class:`OptionError` naming the point, the key and the value)."""
    if not isinstance(points, (list, tuple)):
        raise OptionError("points_to_evaluate", f"points_to_evaluate must be a list of tables, got {points!r}")
    for i, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise OptionError("points_to_evaluate", f"points_to_evaluate[{i}] must be a table of parameter "
                              f"values, got {point!r}")
        for key, value in space.flatten(point).items():
            if key not in space:
                raise OptionError("points_to_evaluate", f"points_to_evaluate[{i}]: {key!r} is not a parameter; "
                                  f"names are {space.names}")
            try:
                space[key].check(value)
            except ValueError as error:
                raise OptionError("points_to_evaluate", f"points_to_evaluate[{i}]: {error}") from None


def build_scheduler(name: str, options: Mapping[str, Any]) -> Any:
    """The scheduler ``name`` with the user's ``options`` (ValueError/TypeError when refused)."""
    factory, _ = check_options("scheduler", name, options)
    return factory(**options)
