"""The shell every tunekit searcher shares: one Space, metric/mode, observations, save/restore.

A concrete searcher only answers "which flat configuration next?" (:meth:`SpaceSearcher.propose`) and, if it
learns, reacts to new observations (:meth:`SpaceSearcher.observe`). Everything that speaks Ray's
``Searcher`` contract lives here once: resolving the space from the Tuner's ``param_space``, trying
``points_to_evaluate`` and the space's defaults first, flattening nested configs, turning reported results
into losses (minimisation, whatever the ``mode``), skipping NaN/inf and errored trials, saying so when a
finite space is exhausted, and round-tripping all of it through ``save``/``restore``.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
from dataclasses import dataclass, field
from collections.abc import Iterable, Mapping
from typing import Any, Optional, Sequence

import numpy as np
from ray.tune.search import Searcher

from tunekit._ray_snapshot import TrialRecord, trial_counter, trial_table
from tunekit.files import write_atomically
from tunekit.space import Constant, Space

logger = logging.getLogger(__name__)

VALID_MODES = ("min", "max")


def check_mode(mode: Optional[str]) -> Optional[str]:
    """Return ``mode`` when it is None, "min" or "max"; raise a ValueError naming it otherwise."""
    if mode is not None and mode not in VALID_MODES:
        raise ValueError(f"mode={mode!r} is not accepted: use 'min' or 'max'")
    return mode


def finite_float(value: Any) -> Optional[float]:
    """``value`` as a float when it is a finite number, else None (NaN, inf, None, strings...)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def config_key(config: dict) -> str:
    """A canonical string for a flat config, to recognise repeats."""
    return json.dumps(config, sort_keys=True, default=str)


@dataclass
class Observation:
    """One finished trial: its flat config and its loss (None when it failed or never reported a finite value).

    ``trial_id`` is the Ray trial that produced it (None for points given by ``add_evaluated_point``).
    """

    config: dict
    loss: Optional[float]
    trial_id: Optional[str] = None


@dataclass
class SearcherState:
    """Everything the shell keeps; pickled by :meth:`SpaceSearcher.save` into Ray's experiment folder."""

    observations: list = field(default_factory=list)
    live: dict = field(default_factory=dict)
    last_loss: dict = field(default_factory=dict)
    queued_points: list = field(default_factory=list)
    suggested_keys: set = field(default_factory=set)
    num_suggested: int = 0


class SpaceSearcher(Searcher):
    """Base class for tunekit searchers (a ``ray.tune.search.Searcher``).

    Args:
        space: a :class:`tunekit.Space`, a Ray ``param_space`` dict or a ConfigSpace; None takes the Tuner's
            ``param_space``.
        metric, mode: what to optimise; None takes the Tuner's ``TuneConfig(metric=, mode=)``.
        points_to_evaluate: configs (nested like ``param_space``, possibly partial: missing keys take the
            space's defaults) tried before anything else.
        seed: makes the run reproducible.
    """

    def __init__(
        self,
        space: Any = None,
        metric: Optional[str] = None,
        mode: Optional[str] = None,
        points_to_evaluate: Optional[Sequence[dict]] = None,
        seed: Optional[int] = None,
    ):
        super().__init__(metric=metric, mode=check_mode(mode))
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed={seed!r} is not accepted: use an int or None.")
        self._seed = seed
        points = points_to_evaluate or []
        if not isinstance(points, (str, bytes, Mapping)) and isinstance(points, Iterable):
            points = list(points)
        if not isinstance(points, list) or not all(isinstance(point, Mapping) for point in points):
            raise TypeError(f"points_to_evaluate={points_to_evaluate!r} is not accepted: use a list of configs "
                            "(dicts).")
        self._raw_points = [dict(point) for point in points]
        self._space: Optional[Space] = None
        self._state = SearcherState()
        self._max_concurrent: Optional[int] = None
        self._trials_left: Optional[int] = None
        if space is not None:
            self._set_space(Space.from_any(space))

    # -- hooks for concrete searchers -------------------------------------------------------------------
    def propose(self, trial_id: str) -> Optional[dict]:
        """Return the next flat config, None when this searcher has nothing to offer right now, or
        ``Searcher.FINISHED`` when it will never offer more."""
        raise NotImplementedError

    def observe(self, observation: Observation) -> None:
        """React to a finished trial (learn from it). Default: nothing beyond the shared record."""

    def on_space_set(self) -> None:
        """Called once the space is known (from the constructor or from the Tuner)."""

    def forget(self, trial_id: str) -> None:
        """Drop a suggestion Ray never recorded (see :meth:`reconcile`)."""
        self._state.live.pop(trial_id, None)
        self._state.last_loss.pop(trial_id, None)

    def adopt(self, record: TrialRecord) -> bool:
        """Take a trial of Ray's table that this searcher never saw as live (see :meth:`reconcile`); False
        when its config is not a configuration of this space."""
        flat = self._space.flatten(record.config)
        config = {name: value for name, value in flat.items() if name in self._space.names}
        try:
            self._space.validate(config)
        except (TypeError, ValueError) as error:
            logger.warning("%s: trial %s in Ray's trial table has a config outside the search space (%s); its "
                           "result stays in Ray's results but not in the searcher", type(self).__name__,
                           record.trial_id, error)
            return False
        self._add_live(record.trial_id, config)
        return True

    def reconcile(self, table: Sequence[TrialRecord], counter: Optional[tuple[int, int]] = None) -> None:
        """Bring the state to Ray's trial table after a restore.

        Ray's snapshot files are copied to storage one by one, so a driver killed during the copy can leave
        this searcher's state a step older or newer than the trial table Ray resumes from. The table wins: a
        trial it holds as ended is observed with its last result, a trial it holds that this searcher never saw
        is adopted, and a suggestion it never recorded is forgotten (Ray will not run it). With ``counter``
        (Ray's trials created and asked for), suggestions stop once Ray's table holds as many trials as were
        asked for, whatever Ray's own counter, restored from another file, says.
        """
        state = self._state
        listed = {record.trial_id for record in table}
        observed = {o.trial_id for o in state.observations if o.trial_id is not None}
        forgotten = [trial_id for trial_id in state.live if trial_id not in listed]
        for trial_id in forgotten:
            self.forget(trial_id)
        adopted = ended = 0
        for record in table:
            if record.trial_id in observed:
                continue
            if record.trial_id not in state.live:
                if not self.adopt(record):
                    continue
                adopted += 1
            if record.finished:
                self.on_trial_complete(record.trial_id, record.last_result, error=record.failed)
                ended += 1
        if adopted or ended or forgotten:
            logger.warning("%s: its snapshot and Ray's trial table were from two moments; brought to the table: "
                           "%d ended trials observed, %d trials adopted, %d suggestions forgotten",
                           type(self).__name__, ended, adopted, len(forgotten))
        if counter is not None:
            created, asked = counter
            self._trials_left = max(asked - len(table), 0)
            if created > len(table):
                logger.warning("%s: Ray's trial counter (%d) is ahead of its trial table (%d trials); unless a "
                               "tunekit scheduler realigns it, Ray ends the experiment %d trial(s) short of "
                               "num_samples", type(self).__name__, created, len(table), created - len(table))

    # -- Ray's Searcher contract ------------------------------------------------------------------------
    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Hold Ray's ``max_concurrent_trials`` here, on this searcher's own record of running trials (which
        :meth:`reconcile` keeps true to Ray's trial table), instead of in Ray's ConcurrencyLimiter, whose record
        is restored from another snapshot file and could keep a finished trial's slot forever."""
        self._max_concurrent = max_concurrent
        return True

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec) -> bool:
        if metric and not self._metric:
            self._metric = metric
        if mode and not self._mode:
            self._mode = check_mode(mode)
        if self._space is not None and config:
            return False
        if self._space is None and config:
            self._set_space(Space.from_tune(config))
        return True

    def suggest(self, trial_id: str) -> Optional[dict]:
        self._require_ready()
        state = self._state
        if self._trials_left == 0:
            return Searcher.FINISHED
        if self._max_concurrent is not None and len(state.live) >= self._max_concurrent:
            return None
        if state.queued_points:
            config = state.queued_points.pop(0)
        else:
            exhausted = self._space.cardinality is not None and len(state.suggested_keys) >= self._space.cardinality
            if exhausted:
                logger.warning(
                    "%s: all %d configurations of this finite search space have been suggested; "
                    "no more trials will start", type(self).__name__, self._space.cardinality)
                return Searcher.FINISHED
            config = self.propose(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
        self._add_live(trial_id, config)
        if self._trials_left is not None:
            self._trials_left -= 1
        return self._space.unflatten(config)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._state.live:
            return
        if self._metric not in result:
            raise ValueError(
                f"trial {trial_id} reported a result without the metric {self._metric!r} that "
                f"{type(self).__name__} optimises; it reported: {sorted(k for k in result if not k.startswith('_'))}")
        loss = self._to_loss(result[self._metric])
        if loss is not None:
            self._state.last_loss[trial_id] = loss

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        config = self._state.live.pop(trial_id, None)
        if config is None:
            return
        last = self._state.last_loss.pop(trial_id, None)
        final = None if error or not result else self._to_loss(result.get(self._metric))
        loss = None if error else (final if final is not None else last)
        if loss is None:
            logger.info("trial %s finished without a finite %r: recorded as failed", trial_id, self._metric)
        observation = Observation(config=config, loss=loss, trial_id=trial_id)
        self._state.observations.append(observation)
        self.observe(observation)

    def add_evaluated_point(self, parameters: dict, value: float, error: bool = False,
                            pruned: bool = False, intermediate_values: Optional[list] = None) -> None:
        self._require_ready()
        config = self._space.flatten(parameters)
        self._space.validate(config)
        observation = Observation(config=config, loss=None if error else self._to_loss(value))
        self._state.observations.append(observation)
        self._state.suggested_keys.add(config_key(config))
        self.observe(observation)

    def get_state(self) -> dict:
        return {"metric": self._metric, "mode": self._mode, "space": self._space, "state": self._state}

    def set_state(self, state: dict) -> None:
        self._metric, self._mode = state["metric"], state["mode"]
        self._space = state["space"]
        self._state = state["state"]

    def save(self, checkpoint_path: str) -> None:
        """Write the whole state (a pickle in Ray's experiment folder, like Ray's own searchers).

        Atomic: the state is pickled first and written beside the target, then renamed over it, so a driver
        killed in the middle of a save leaves the previous state readable.
        """
        write_atomically(checkpoint_path, pickle.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        """Read back what :meth:`save` wrote. Only load files this process's own experiments wrote."""
        with open(checkpoint_path, "rb") as handle:
            self.set_state(pickle.load(handle))

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """Ray's restore from an experiment folder (its newest searcher state), then :meth:`reconcile` with
        the trial table there, the one ``Tuner.restore`` resumes from."""
        super().restore_from_dir(checkpoint_dir)
        table = trial_table(checkpoint_dir)
        if table is not None:
            self.reconcile(table, trial_counter(checkpoint_dir))

    # -- shared helpers for concrete searchers ---------------------------------------------------------
    def _add_live(self, trial_id: str, config: dict) -> None:
        """Record a trial as running with ``config`` (suggested here, or adopted from Ray's trial table)."""
        self._state.live[trial_id] = config
        self._state.suggested_keys.add(config_key(config))
        self._state.num_suggested += 1

    @property
    def space(self) -> Optional[Space]:
        return self._space

    @property
    def observations(self) -> list:
        """Finished trials in completion order (configs flat, losses minimised; None for failures)."""
        return list(self._state.observations)

    @property
    def pending_configs(self) -> list:
        """Flat configs of trials suggested but not finished (for fantasies / diversity)."""
        return list(self._state.live.values())

    def _to_loss(self, value: Any) -> Optional[float]:
        number = finite_float(value)
        if number is None:
            return None
        return number if self._mode == "min" else -number

    def _set_space(self, space: Space) -> None:
        self._space = space
        has_defaults = any(param.default is not None for param in space.params if not isinstance(param, Constant))
        points = [space.default()] if has_defaults else []
        points += [self._complete_point(point) for point in self._raw_points]
        self._state.queued_points = points
        self.on_space_set()

    def _complete_point(self, point: dict) -> dict:
        config = {**self._space.default(), **self._space.flatten(point)}
        self._space.validate(config)
        return config

    def _require_ready(self) -> None:
        name = type(self).__name__
        if self._space is None:
            raise ValueError(f"{name} has no search space: pass space=... or a param_space to tune.Tuner")
        if not self._metric or not self._mode:
            raise ValueError(
                f"{name} needs metric and mode: pass them to {name}(metric=..., mode=...) or to "
                "tune.TuneConfig(metric=..., mode=...)")
