"""DyHPO (Wistuba, Kadra, Grabocka, NeurIPS 2022): multi-fidelity BO over learning curves, asynchronous.

:class:`DyHPOSearch` holds everything the method knows: a pool of ``num_configurations`` sampled
configurations, every trial's learning curve, the deep-kernel GP (:mod:`tunekit.gp.deep_kernel`) and the
budget. It answers one question, "which candidate deserves the next epoch?", where a candidate is a paused
trial (scored at its next budget b+1) or a new configuration from the pool (scored at budget 1), by the
multi-fidelity expected improvement over the best value seen at that budget. :class:`tunekit.schedulers.DyHPOScheduler`
asks it after every result (continue the trial, or pause it) and when a worker is free (resume a paused
trial); Ray asks ``suggest`` when a new trial may start. The searcher answers None there when resuming is better.

Designed against the known failure of pure DyHPO (spending the budget on first epochs):
- with probability ``PROMOTION_PROBABILITY`` a decision only considers paused trials ranked in the top
  1/``PROMOTION_ETA`` at their budget (a successive-halving promotion), chosen among themselves by EI;
- the trial that just reported competes as a paused trial, and continues without a pause/resume round trip
  when it wins;
- while other trials wait for a worker process that Ray is still starting, the trial that just reported keeps
  its worker (at most ``MAX_KEPT_EPOCHS`` epochs in a row against the choice): pausing it would hand its process
  to the waiting trial, Ray would discard the process it is starting, and the pool of workers would stay below
  ``max_concurrent_trials``;
- trials running on other workers are excluded and fantasized at their next budget, so N workers spread out;
- the surrogate sees at most ``MAX_FIT_POINTS`` observations and is refitted (warm) every ``REFIT_EVERY``
  observations, only conditioned on new data in between; once it sees ``MAX_FIT_POINTS``, a refit is spread
  over decisions, ``REFIT_SLICE`` training steps each, the last weights serving until it is done, so that no
  decision pays for a whole refit.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from tunekit._ray_snapshot import TrialRecord
from tunekit.gp.acquisition import fantasize, log_expected_improvement
from tunekit.gp.deep_kernel import DeepKernelGP, DeepKernelTraining, fit_deep_kernel_gp
from tunekit.gp.model import DTYPE, GPFitError, single_threaded
from tunekit.searchers.base import SpaceSearcher, config_key

logger = logging.getLogger(__name__)

PROMOTION_PROBABILITY = 0.5
PROMOTION_ETA = 3
MIN_POINTS = 3
MAX_FIT_POINTS = 128
REFIT_EVERY = 10
COLD_FIT_STEPS = 100
WARM_FIT_STEPS = 25
REFIT_SLICE = 3
#: Epochs in a row a trial may train against DyHPO's choice while Ray starts a worker process for another (a start
#: takes a few seconds; with epochs of milliseconds the choices must still win).
MAX_KEPT_EPOCHS = 4

RUNNING, PAUSED, DONE, FAILED = "running", "paused", "done", "failed"
NEW = "new"


@dataclass
class TrialCurve:
    """One trial: its pool entry, its losses at budgets 1..len(losses), its status (running/paused/done/failed)."""

    pool_index: int
    losses: list = field(default_factory=list)
    status: str = RUNNING


#: Decision times kept for inspection and benchmarks (the latest ones), so the state does not grow per decision.
DECISION_TIMES_KEPT = 10_000


@dataclass
class DyHPOState:
    """All of DyHPO's state, pickled by ``save``: pool, curves, budget, model weights, decision statistics."""

    pool: list = field(default_factory=list)
    unused: list = field(default_factory=list)
    curves: dict = field(default_factory=dict)
    spent: int = 0
    points_at_fit: int = 0
    model_weights: Optional[dict] = None
    max_concurrent: Optional[int] = None
    waiting_to_start: int = 0
    next_new: Optional[int] = None
    decision_seconds: deque = field(default_factory=lambda: deque(maxlen=DECISION_TIMES_KEPT))
    counts: dict = field(default_factory=lambda: {"new": 0, "continue": 0, "resume": 0, "pause": 0})


class DyHPOSearch(SpaceSearcher):
    """DyHPO's searcher; use it with :class:`tunekit.schedulers.DyHPOScheduler` built on it::

        searcher = DyHPOSearch(max_epochs=27, max_budget=1000)
        tune.TuneConfig(search_alg=searcher, scheduler=DyHPOScheduler(searcher), metric=..., mode=...)

    Args:
        space: a :class:`tunekit.Space`, Ray ``param_space`` dict or ConfigSpace; None takes the Tuner's.
        metric, mode: what to optimise; None takes ``tune.TuneConfig``'s. Any scale: values are standardized inside.
        max_epochs: budget steps (values of ``time_attr``) one trial may reach.
        max_budget: total budget steps across all trials (HPO4DL's meaning); None: until the pool is used up.
        num_configurations: size of the pool of sampled configurations new trials are drawn from.
        time_attr: the result key counting budget steps (one result per step).
        seed: makes pool, model initialisation and promotion draws reproducible.
    """

    def __init__(self, space: Any = None, metric: Optional[str] = None, mode: Optional[str] = None,
                 max_epochs: int = 50, max_budget: Optional[int] = None, num_configurations: int = 1000,
                 time_attr: str = "training_iteration", seed: Optional[int] = None):
        for name, value in (("max_epochs", max_epochs), ("num_configurations", num_configurations)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if max_budget is not None and (isinstance(max_budget, bool) or not isinstance(max_budget, int)
                                       or max_budget < 1):
            raise ValueError(f"max_budget={max_budget!r} must be an integer >= 1 or None")
        if not isinstance(time_attr, str) or not time_attr:
            raise TypeError(f"time_attr={time_attr!r} must be the name of a reported result key")
        self.max_epochs, self.max_budget = max_epochs, max_budget
        self.num_configurations, self.time_attr = num_configurations, time_attr
        self._dyhpo = DyHPOState()
        self._rng = np.random.default_rng(seed)
        self._model: Optional[DeepKernelGP] = None
        self._refit: Optional[DeepKernelTraining] = None
        self._cache: Optional[tuple] = None
        self._pool_features: Optional[tuple] = None  # (network, features of every pool configuration at budget 1)
        self._starting = 0
        self._kept: dict = {}
        self._new_trials_allowed = True
        self._version = 0
        self.scheduler = None
        super().__init__(space=space, metric=metric, mode=mode, seed=seed)

    # -- pool ---------------------------------------------------------------------------------------------
    def on_space_set(self) -> None:
        """Build the pool: queued points (space defaults) first, then distinct random samples."""
        state, seen, pool = self._dyhpo, set(), []
        for config in self._state.queued_points + self._space.sample(self.num_configurations, seed=self._seed):
            key = config_key(config)
            if key not in seen and len(pool) < self.num_configurations:
                seen.add(key)
                pool.append(config)
        self._state.queued_points = []
        state.pool, state.unused = pool, list(range(len(pool)))
        self._pool_X = torch.as_tensor(self._space.encode(pool), dtype=DTYPE)

    def propose(self, trial_id: str) -> Optional[dict]:
        state = self._dyhpo
        index, state.next_new = state.next_new, None
        return None if index is None else state.pool[index]

    # -- Ray's Searcher contract ------------------------------------------------------------------------
    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Take Ray's ``max_concurrent_trials`` as the number of workers (paused trials do not count)."""
        self._dyhpo.max_concurrent = max_concurrent
        return True

    def suggest(self, trial_id: str) -> Optional[dict]:
        """A new trial's config when a new pool configuration is the best use of a free worker, None when a
        paused trial should be resumed instead (or no worker is free), FINISHED when nothing new can start."""
        self.check_paired()
        self._require_ready()
        state = self._dyhpo
        if not state.unused or self.budget_spent():
            return Searcher.FINISHED
        if not self._free_worker() or self.budget_left(exclude=None) <= 0 or self.decide() != NEW:
            return None
        index = state.next_new if state.next_new in state.unused else state.unused[0]
        state.unused.remove(index)
        state.next_new = index
        config = super().suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return config
        state.curves[trial_id] = TrialCurve(pool_index=index)
        state.counts["new"] += 1
        self._changed()
        return config

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        super().on_trial_complete(trial_id, result, error)
        self._kept.pop(trial_id, None)
        curve = self._dyhpo.curves.get(trial_id)
        if curve is not None and curve.status not in (DONE, FAILED):
            curve.status = FAILED if error else DONE
            if error:
                logger.warning("DyHPO: trial %s failed; it is never resumed and the search goes on", trial_id)
            self._changed()

    # -- restore ------------------------------------------------------------------------------------------
    def reconcile(self, table: Sequence[TrialRecord], counter: Optional[tuple[int, int]] = None) -> None:
        """The shell's reconciliation with Ray's trial table, plus each known curve caught up with the last
        result Ray holds (the budget it spent included)."""
        for record in table:
            if record.trial_id in self._dyhpo.curves:
                self._catch_up(record)
        super().reconcile(table, counter)

    def adopt(self, record: TrialRecord) -> bool:
        """A trial Ray holds that DyHPO never saw: its pool entry is taken and its curve starts from Ray's last
        result."""
        if not super().adopt(record):
            return False
        key = config_key(self._state.live[record.trial_id])
        index = next((i for i, config in enumerate(self._dyhpo.pool) if config_key(config) == key), None)
        if index is None:
            logger.warning("DyHPO: trial %s in Ray's trial table is not in the pool; it runs unscheduled",
                           record.trial_id)
            return True
        if index in self._dyhpo.unused:
            self._dyhpo.unused.remove(index)
        self._dyhpo.curves[record.trial_id] = TrialCurve(pool_index=index)
        self._catch_up(record)
        return True

    def forget(self, trial_id: str) -> None:
        """A suggestion Ray never recorded: its curve is kept as finished if it has results, else its pool
        entry goes back to the unused ones."""
        super().forget(trial_id)
        curve = self._dyhpo.curves.get(trial_id)
        if curve is not None and curve.losses:
            curve.status = DONE
        elif curve is not None:
            del self._dyhpo.curves[trial_id]
            self._dyhpo.unused.insert(0, curve.pool_index)
        self._changed()

    def _catch_up(self, record: TrialRecord) -> None:
        """Extend a curve to Ray's last result for the trial, and hold it paused when Ray does."""
        curve = self._dyhpo.curves[record.trial_id]
        step = record.last_result.get(self.time_attr)
        if isinstance(step, (int, float)) and step > len(curve.losses):
            self.record(record.trial_id, record.last_result)
        if record.status == Trial.PAUSED and curve.status == RUNNING:
            curve.status = PAUSED
        self._changed()

    def get_state(self) -> dict:
        model = self._model.state() if self._model is not None else self._dyhpo.model_weights
        self._dyhpo.model_weights = model
        return {**super().get_state(), "dyhpo": self._dyhpo, "rng": self._rng.bit_generator.state,
                "max_epochs": self.max_epochs, "max_budget": self.max_budget}

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._dyhpo = state["dyhpo"]
        self._rng.bit_generator.state = state["rng"]
        self.max_epochs, self.max_budget = state["max_epochs"], state["max_budget"]
        self._pool_X = torch.as_tensor(self._space.encode(self._dyhpo.pool), dtype=DTYPE)
        self._model, self._refit, self._dyhpo.points_at_fit = None, None, 0
        self._changed()

    # -- what the scheduler asks ----------------------------------------------------------------------------
    def check_paired(self) -> None:
        """Raise when this searcher is not used together with its DyHPOScheduler in the same Tuner."""
        if self.scheduler is None or not self.scheduler.in_use:
            raise ValueError(
                "DyHPOSearch decides together with DyHPOScheduler: use tune.TuneConfig(search_alg=searcher, "
                "scheduler=DyHPOScheduler(searcher)) with the same DyHPOSearch object")

    def budget_left(self, exclude: Optional[str]) -> float:
        """Budget steps not spent and not committed to running trials (``exclude``: a trial not counted)."""
        if self.max_budget is None:
            return math.inf
        running = sum(1 for tid, c in self._dyhpo.curves.items() if c.status == RUNNING and tid != exclude)
        return self.max_budget - self._dyhpo.spent - running

    def budget_spent(self) -> bool:
        """Whether ``max_budget`` epochs have been trained (epochs committed to running trials may still fail)."""
        return self.max_budget is not None and self._dyhpo.spent >= self.max_budget

    def waiting_to_start(self, count: int, starting: int = 0) -> None:
        """Ray's count of trials waiting for resources (without ``max_concurrent_trials`` a worker is free
        only when none waits), and of those waiting while Ray may still be starting new worker processes."""
        self._dyhpo.waiting_to_start = count
        self._starting = starting

    def new_trials_allowed(self, allowed: bool) -> None:
        """Whether Ray will still create trials (``num_samples`` not reached). When it will not, a new
        configuration is no candidate: choosing one would leave every paused trial waiting forever."""
        if allowed != self._new_trials_allowed:
            self._new_trials_allowed = allowed
            self._changed()

    def running_count(self) -> int:
        return sum(1 for curve in self._dyhpo.curves.values() if curve.status == RUNNING)

    def _free_worker(self) -> bool:
        state = self._dyhpo
        if state.max_concurrent is not None:
            return self.running_count() < state.max_concurrent
        return state.waiting_to_start == 0

    def record(self, trial_id: str, result: dict) -> Optional[float]:
        """Add a result to the trial's curve and spend its budget; returns its loss (None: not finite)."""
        curve = self._dyhpo.curves[trial_id]
        step = int(result[self.time_attr])
        loss = self._to_loss(result.get(self._metric))
        self._dyhpo.spent += max(1, step - len(curve.losses))
        self._changed()
        if loss is None:
            return None
        del curve.losses[max(step - 1, 0):]
        fill = curve.losses[-1] if curve.losses else loss
        curve.losses += [fill] * (step - 1 - len(curve.losses)) + [loss]
        return loss

    def on_result(self, trial_id: str, result: dict) -> str:
        """CONTINUE, PAUSE or STOP for a trial that just reported (Ray's action strings)."""
        curve = self._dyhpo.curves.get(trial_id)
        if curve is None or self.time_attr not in result:
            return TrialScheduler.CONTINUE
        loss = self.record(trial_id, result)
        if loss is None:
            logger.warning("DyHPO: trial %s reported %s=%r: stopped as failed", trial_id, self._metric,
                           result.get(self._metric))
            curve.status = FAILED
            return TrialScheduler.STOP
        if len(curve.losses) >= self.max_epochs or self.budget_left(exclude=trial_id) <= 0:
            curve.status = DONE
            return TrialScheduler.STOP
        curve.status = PAUSED
        if self._keeps_worker(trial_id, self.decide()):
            curve.status = RUNNING
            self._dyhpo.counts["continue"] += 1
            self._changed()
            return TrialScheduler.CONTINUE
        self._dyhpo.counts["pause"] += 1
        return TrialScheduler.PAUSE

    def _keeps_worker(self, trial_id: str, choice: Optional[str]) -> bool:
        """Whether the trial that just reported continues: it is the choice, or Ray is still starting a worker
        process for a waiting trial and the trial has not yet trained MAX_KEPT_EPOCHS epochs in a row for that."""
        kept = self._kept.pop(trial_id, 0)
        if choice == trial_id:
            return True
        if self._starting > 0 and kept < MAX_KEPT_EPOCHS:
            self._kept[trial_id] = kept + 1
            return True
        return False

    def choose_paused(self, paused: dict) -> Optional[str]:
        """The paused trial (id among ``paused``, those Ray holds PAUSED) to resume now, or None."""
        if not self._free_worker() or self.budget_left(exclude=None) <= 0:
            return None
        chosen = self.decide()
        if chosen in paused:
            self._dyhpo.curves[chosen].status = RUNNING
            self._dyhpo.counts["resume"] += 1
            self._changed()
            return chosen
        return None

    def resumable(self) -> bool:
        """Whether any paused trial could still get budget (else the scheduler stops the paused ones)."""
        has_paused = any(c.status == PAUSED for c in self._dyhpo.curves.values())
        return has_paused and not self.budget_spent()

    def is_paused(self, trial_id: str) -> bool:
        """Whether DyHPO holds this trial paused (it may still be resumed)."""
        curve = self._dyhpo.curves.get(trial_id)
        return curve is not None and curve.status == PAUSED

    def restarted(self, trial_id: str) -> None:
        """A trial Ray starts again after ``Tuner.restore`` without a checkpoint to pause at: count it as running."""
        curve = self._dyhpo.curves.get(trial_id)
        if curve is not None and curve.status == PAUSED:
            curve.status = RUNNING
            self._changed()

    # -- the decision -------------------------------------------------------------------------------------
    def decide(self) -> Optional[str]:
        """The candidate that deserves the next budget step: a paused trial's id, NEW, or None (no candidate).

        Cached until the state changes, so Ray's repeated calls cost nothing and see one consistent answer.
        """
        if self._cache is not None and self._cache[0] == self._version:
            return self._cache[1]
        started = time.perf_counter()
        with single_threaded():
            choice = self._decide()
        self._dyhpo.decision_seconds.append(time.perf_counter() - started)
        self._cache = (self._version, choice)
        return choice

    def _changed(self) -> None:
        self._version += 1

    def _decide(self) -> Optional[str]:
        state = self._dyhpo
        state.next_new = None
        paused = [tid for tid, c in state.curves.items() if c.status == PAUSED and len(c.losses) < self.max_epochs]
        candidates = paused + ([NEW] if state.unused and self._new_trials_allowed else [])
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        observed = sum(len(c.losses) for c in state.curves.values())
        if observed < MIN_POINTS:
            return NEW if state.unused else self._best_paused(paused)
        points = self._points()
        if paused and self._rng.random() < PROMOTION_PROBABILITY:
            promotable = self._promotable(paused)
            if promotable:
                candidates = promotable
        model = self._fitted_model(points)
        if model is None:
            return NEW if NEW in candidates else self._best_paused(candidates)
        scores = self._scores(model, candidates)
        return candidates[int(np.argmax(scores))]

    def _best_paused(self, paused: list) -> Optional[str]:
        return min(paused, key=lambda tid: self._dyhpo.curves[tid].losses[-1]) if paused else None

    def _promotable(self, paused: list) -> list:
        """Paused trials in the top 1/PROMOTION_ETA (at least the best one) of the trials that reached their budget."""
        at_budget = {}
        for curve in self._dyhpo.curves.values():
            for step, loss in enumerate(curve.losses, 1):
                at_budget.setdefault(step, []).append(loss)
        cutoffs = {}
        for step, values in at_budget.items():
            values.sort()
            cutoffs[step] = values[max(1, len(values) // PROMOTION_ETA) - 1]
        curves = self._dyhpo.curves
        return [tid for tid in paused if curves[tid].losses[-1] <= cutoffs[len(curves[tid].losses)]]

    # -- surrogate ------------------------------------------------------------------------------------------
    def _inputs(self, pool_indices: list, budgets: list, prefixes: list) -> tuple:
        """Model inputs for (config, budget, curve before it): X (n, d), budget (n,), curves (n, L) as -loss."""
        length = max(self.max_epochs - 1, 1)
        curves = np.full((len(budgets), length), np.nan)
        for row, prefix in enumerate(prefixes):
            curves[row, : len(prefix)] = -np.asarray(prefix[:length], dtype=float)
        X = self._pool_X[pool_indices]
        return X, torch.as_tensor(np.asarray(budgets, dtype=float) / self.max_epochs), torch.as_tensor(curves)

    def _points(self) -> tuple:
        """Training data, at most MAX_FIT_POINTS: every trial's latest point (best trials first), then random ones.

        A failed trial adds one point at its next budget with the worst value seen, so the acquisition stops
        proposing configurations near it (otherwise unobserved, they would look maximally uncertain).
        """
        worst = max(loss for c in self._dyhpo.curves.values() for loss in c.losses)
        latest, others = [], []
        for curve in self._dyhpo.curves.values():
            if curve.status == FAILED and len(curve.losses) < self.max_epochs:
                latest.append((curve, len(curve.losses) + 1, worst))
            elif curve.losses:
                latest.append((curve, len(curve.losses), curve.losses[-1]))
            others += [(curve, b, curve.losses[b - 1]) for b in range(1, len(curve.losses))]
        latest.sort(key=lambda item: item[2])
        chosen = latest[: MAX_FIT_POINTS // 2] if len(latest) + len(others) > MAX_FIT_POINTS else latest
        rest = latest[len(chosen):] + others
        room = MAX_FIT_POINTS - len(chosen)
        if len(rest) > room:
            rest = [rest[i] for i in sorted(self._rng.choice(len(rest), size=room, replace=False))]
        chosen += rest
        X, budget, curves = self._inputs([c.pool_index for c, _, _ in chosen], [b for _, b, _ in chosen],
                                         [c.losses[: b - 1] for c, b, _ in chosen])
        return X, budget, curves, torch.as_tensor([-loss for _, _, loss in chosen], dtype=DTYPE)

    def _fitted_model(self, points: tuple) -> Optional[DeepKernelGP]:
        """The surrogate conditioned on ``points``: a cold fit at the first decision; then a warm refit started
        every REFIT_EVERY new observations, trained at once while the training set is smaller than
        MAX_FIT_POINTS (cheap, and early decisions need the fresh model), else REFIT_SLICE steps per decision,
        the last weights serving until it is done."""
        state = self._dyhpo
        observed = sum(len(c.losses) for c in state.curves.values())
        conditioned = False  # whether self._model was made from ``points`` in this call
        try:
            if self._model is None:
                cold = state.model_weights is None
                self._model = fit_deep_kernel_gp(*points, steps=COLD_FIT_STEPS if cold else 0,
                                                 warm_start=state.model_weights, seed=self._seed or 0)
                conditioned = True
                if cold:
                    state.points_at_fit = observed
                    return self._model
            started_now = self._refit is None and observed - state.points_at_fit >= REFIT_EVERY
            if started_now:
                self._refit = DeepKernelTraining(*points, warm_start=self._model.state(), seed=self._seed or 0)
                state.points_at_fit = observed
            if self._refit is not None:
                slice_steps = REFIT_SLICE if len(points[-1]) >= MAX_FIT_POINTS else WARM_FIT_STEPS
                self._refit.advance(min(slice_steps, WARM_FIT_STEPS - self._refit.steps_done))
                if self._refit.steps_done >= WARM_FIT_STEPS or self._refit.stopped:
                    refit, self._refit = self._refit, None
                    self._model, conditioned = refit.result(), started_now
        except GPFitError as error:
            logger.warning("DyHPO: surrogate fit failed (%s); deciding without it", error)
            self._refit = None
            if self._model is None:
                return None
        if not conditioned:
            self._model = self._model.with_data(*points)
        return self._model

    def _scores(self, model: DeepKernelGP, candidates: list) -> np.ndarray:
        """log-EI of each candidate at its next budget over the best value seen at that budget.

        NEW scores as its best pool configuration at budget 1, which is remembered for ``suggest``.
        """
        curves, unused = self._dyhpo.curves, self._dyhpo.unused
        paused = [c for c in candidates if c != NEW]
        budgets = [len(curves[c].losses) + 1 for c in paused]
        features = [model.features(*self._inputs([curves[c].pool_index for c in paused], budgets,
                                                 [curves[c].losses for c in paused]))] if paused else []
        if NEW in candidates:
            features.append(self._new_features(model)[unused])
            budgets += [1] * len(unused)
        gp = fantasize(model.gp, self._running_features(model))
        mean, var = model.feature_posterior(torch.cat(features), gp=gp)
        best_at = self._best_by_budget()
        best = model.standardize_values(torch.as_tensor([best_at[budget - 1] for budget in budgets]))
        log_ei = log_expected_improvement(mean, var, best).numpy()
        scores = dict(zip(paused, log_ei[: len(paused)]))
        if NEW in candidates:
            best_new = int(np.argmax(log_ei[len(paused):]))
            self._dyhpo.next_new = unused[best_new]
            scores[NEW] = log_ei[len(paused) + best_new]
        return np.asarray([scores[c] for c in candidates])

    def _new_features(self, model: DeepKernelGP) -> torch.Tensor:
        """Features of every pool configuration at budget 1 (no curve yet): they depend on the network alone,
        so they are computed once per trained network instead of at every decision."""
        if self._pool_features is None or self._pool_features[0] is not model.network:
            size = len(self._dyhpo.pool)
            features = model.features(*self._inputs(list(range(size)), [1] * size, [[]] * size))
            self._pool_features = (model.network, features)
        return self._pool_features[1]

    def _running_features(self, model: DeepKernelGP) -> Optional[torch.Tensor]:
        """Features of running trials at their next budget (fantasized so workers spread out)."""
        running = [c for c in self._dyhpo.curves.values() if c.status == RUNNING]
        if not running:
            return None
        X, budget, prefixes = self._inputs([c.pool_index for c in running],
                                           [min(len(c.losses) + 1, self.max_epochs) for c in running],
                                           [c.losses for c in running])
        return model.features(X, budget, prefixes)

    def _best_by_budget(self) -> list:
        """Index b-1: the best value (-loss) observed at budget b, or at the highest lower budget reached when
        none reached b."""
        best = [-math.inf] * self.max_epochs
        for curve in self._dyhpo.curves.values():
            for step, loss in enumerate(curve.losses[: self.max_epochs]):
                best[step] = max(best[step], -loss)
        for step in range(1, self.max_epochs):
            if best[step] == -math.inf:
                best[step] = best[step - 1]
        return best

    def debug_string(self) -> str:
        """One line: budget spent, trials by status, decisions taken."""
        statuses = {}
        for curve in self._dyhpo.curves.values():
            statuses[curve.status] = statuses.get(curve.status, 0) + 1
        return (f"DyHPOSearch: spent {self._dyhpo.spent}/{self.max_budget} epochs, trials {statuses}, "
                f"decisions {self._dyhpo.counts}")
