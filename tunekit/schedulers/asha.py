"""Asynchronous successive halving (ASHA) with Ray's stopping rule or the promotion rule of Li et al. (2020).

Rungs sit at ``grace_period * reduction_factor**k`` (k = 0, 1, ... while <= ``max_t``), in units of
``time_attr``. A trial is judged once per rung, at its first result at or past the rung's milestone.

* ``rule="stopping"`` (Ray's ASHAScheduler): the trial continues when its score is not below the
  ``1 - 1/reduction_factor`` percentile of the scores already recorded at that rung, else it stops.
* ``rule="promotion"`` (ASHA as published, https://arxiv.org/abs/1810.05934): the trial pauses at the rung
  (Ray checkpoints it) and is resumed (promoted) only when it ranks in the top ``floor(n / reduction_factor)``
  of the ``n`` trials recorded there. A trial already in the top when it arrives continues without pausing.
  When no paused trial is promotable, ``choose_trial_to_run`` lets a new pending trial start; when nothing is
  running or pending (the search is exhausted or blocked), the best paused trial of each rung that has not
  promoted one yet is promoted, and the rest are stopped, so every run ends.

maggy's ``Asha(reduction_factor, resource_min, resource_max)`` is
``ASHAScheduler(reduction_factor=reduction_factor, grace_period=resource_min, max_t=resource_max,
rule="promotion")`` with ``time_attr`` the resource the trainable reports (e.g. "epoch").
"""

import heapq
import logging
import math
from bisect import insort
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
from ray.tune.experiment import Trial

from tunekit._ray_snapshot import TrialRecord
from tunekit.schedulers._common import PROMOTE, Decision, MetricScheduler, check_bool, check_positive

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

logger = logging.getLogger(__name__)

RULES = ("stopping", "promotion")

#: Most rungs a bracket may have: more only comes from a reduction_factor barely above 1 (validation would hang).
MAX_RUNGS = 1000


def linear_percentile(ascending: List[float], fraction: float) -> float:
    """The ``fraction`` quantile of sorted, non-empty ``ascending`` by linear interpolation.

    The interpolation is written the way numpy's "linear" method rounds it (from the upper neighbour when
    the weight is >= 0.5), so the cut-off equals Ray's ``np.nanpercentile`` bit for bit and ties decide alike.
    """
    position = (len(ascending) - 1) * fraction
    below = math.floor(position)
    weight = position - below
    low = ascending[below]
    high = ascending[min(below + 1, len(ascending) - 1)]
    if weight >= 0.5:
        return high - (high - low) * (1 - weight)
    return low + (high - low) * weight


@dataclass
class _Rung:
    """Scores recorded at one milestone: by trial id (arrival order), sorted, and which trials left it."""

    milestone: float
    scores: Dict[str, float] = field(default_factory=dict)
    ascending: List[float] = field(default_factory=list)
    promoted: Set[str] = field(default_factory=set)

    def add(self, trial_id: str, score: float) -> None:
        self.scores[trial_id] = score
        insort(self.ascending, score)

    def cutoff(self, fraction: float) -> Optional[float]:
        """The score at the ``fraction`` quantile of this rung, None while the rung is empty."""
        return linear_percentile(self.ascending, fraction) if self.ascending else None

    def top(self, reduction_factor: float, at_least_one: bool) -> List[str]:
        """Trial ids of the best ``floor(n / reduction_factor)`` scores (ties: earlier arrival first)."""
        count = int(len(self.scores) // reduction_factor)
        if at_least_one:
            count = max(count, 1)
        return heapq.nlargest(count, self.scores, key=self.scores.__getitem__)


class _Bracket:
    """The rungs of one bracket; bracket ``offset`` starts at ``grace_period * reduction_factor**offset``."""

    def __init__(self, grace_period: float, max_t: float, reduction_factor: float, offset: int):
        # Counted exactly (with a relative tolerance) instead of through log ratios, which lose the rung
        # at max_t when e.g. log(1000) / log(10) rounds to 2.9999999999999996.
        count = 0
        while grace_period * reduction_factor ** count <= max_t * (1 + 1e-9):
            count += 1
        self.rungs = [_Rung(grace_period * reduction_factor ** k) for k in range(offset, count)]

    def rung_for(self, trial_id: str, time: float, stop_last_trials: bool) -> Optional[int]:
        """Index of the rung this result is judged at: the highest passed milestone not yet recorded.

        With ``stop_last_trials=False`` a trial already recorded at its highest passed milestone is not judged
        again at a lower one (it may run past ``max_t``), as in Ray.
        """
        for index in range(len(self.rungs) - 1, -1, -1):
            rung = self.rungs[index]
            if time < rung.milestone:
                continue
            if trial_id not in rung.scores:
                return index
            if not stop_last_trials:
                return None
        return None


class ASHAScheduler(MetricScheduler):
    """Asynchronous successive halving as a Ray Tune scheduler; see the module docstring for both rules.

    Args:
        time_attr: Monotonic progress key of the results (iterations, epochs, seconds).
        metric, mode: The metric and "min"/"max"; taken from ``tune.TuneConfig`` when None.
        max_t: A trial stops when ``time_attr`` reaches ``max_t``.
        grace_period: The first rung; no trial is judged before it.
        reduction_factor: Keep the top ``1/reduction_factor`` at each rung; rungs are this factor apart.
        brackets: Number of brackets (bracket s starts at ``grace_period * reduction_factor**s``); trials are
            assigned at random, weighted by a softmax of the bracket sizes, with numpy's global generator
            (as Ray does, so ``np.random.seed`` makes both assign alike).
        rule: "stopping" (decides as Ray's ASHAScheduler) or "promotion" (pause and promote; the trainable
            must save ``tune.report(..., checkpoint=...)`` and resume from ``tune.get_checkpoint()``).
        stop_last_trials: Stop trials at ``max_t``; False lets them run on (stopping rule only).

    A result whose metric is NaN, +-inf or None at a rung stops the trial and is not recorded, so it changes
    no other trial's cut-off (Ray records it and lets the trial continue; None crashes Ray's). An errored
    trial keeps the scores it recorded. Every rung decision is kept in ``decisions`` (``Decision`` records);
    STOP, PAUSE and PROMOTE are logged at INFO. maggy's ``Asha(reduction_factor, resource_min, resource_max)``
    is ``ASHAScheduler(reduction_factor=..., grace_period=resource_min, max_t=resource_max, rule="promotion")``.
    """

    _logger = logger

    def __init__(
        self,
        time_attr: str = "training_iteration",
        metric: Optional[str] = None,
        mode: Optional[str] = None,
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 4,
        brackets: int = 1,
        rule: str = "stopping",
        stop_last_trials: bool = True,
    ):
        super().__init__(time_attr, metric, mode)
        check_positive("max_t", max_t)
        check_positive("grace_period", grace_period)
        check_positive("reduction_factor", reduction_factor)
        if grace_period > max_t:
            raise ValueError(f"grace_period={grace_period!r} must be <= max_t={max_t!r}.")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor={reduction_factor!r} must be > 1.")
        check_bool("stop_last_trials", stop_last_trials)
        rungs = math.log(max(max_t / grace_period, 1.0)) / math.log(reduction_factor)
        if rungs > MAX_RUNGS:
            raise ValueError(f"reduction_factor={reduction_factor!r} with grace_period={grace_period!r} and "
                             f"max_t={max_t!r} gives about {rungs:.3g} rungs; at most {MAX_RUNGS} are accepted.")
        if isinstance(brackets, bool) or not isinstance(brackets, int) or brackets < 1:
            raise ValueError(f"brackets={brackets!r} must be an integer >= 1.")
        if rule not in RULES:
            raise ValueError(f"rule={rule!r} is not accepted; use one of {RULES}.")
        if rule == "promotion" and not stop_last_trials:
            raise ValueError("rule='promotion' needs stop_last_trials=True: promoted trials end at max_t.")
        self._max_t = max_t
        self._reduction_factor = reduction_factor
        self._rule = rule
        self._stop_last_trials = stop_last_trials
        # Ray's percentile q, divided by 100 as numpy does, so the cut-offs round alike.
        self._fraction = ((1 - 1 / reduction_factor) * 100) / 100
        self._brackets = [_Bracket(grace_period, max_t, reduction_factor, s) for s in range(brackets)]
        self._bracket_of: Dict[str, int] = {}
        self._waiting: Dict[str, int] = {}
        self._paused_at: Dict[str, float] = {}
        self._num_stopped = 0

    def on_trial_add(self, tune_controller: "TuneController", trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if not trial.is_finished():  # Tuner.restore adds finished trials too: they take no bracket
            self._assign(trial.trial_id)

    def _assign(self, trial_id: str) -> _Bracket:
        if trial_id not in self._bracket_of:
            sizes = np.array([len(b.rungs) for b in self._brackets], dtype=float)
            weights = np.exp(sizes - sizes.max())
            self._bracket_of[trial_id] = int(np.random.choice(len(self._brackets), p=weights / weights.sum()))
        return self._brackets[self._bracket_of[trial_id]]

    def on_trial_result(self, tune_controller: "TuneController", trial: Trial, result: Dict) -> str:
        read = self._read(trial.trial_id, result)
        if read is None:
            return self.CONTINUE
        time, score = read
        trial_id = trial.trial_id
        if time >= self._max_t and self._stop_last_trials:
            return self._stop(Decision(trial_id, time, self.STOP, self._value(score), None, "reached max_t"))
        if trial_id in self._paused_at and trial_id not in self._waiting:
            self._check_resumed(trial_id, time)
        bracket = self._assign(trial_id)
        index = bracket.rung_for(trial_id, time, self._stop_last_trials)
        if index is None:
            return self.CONTINUE
        rung = bracket.rungs[index]
        if score is None:
            return self._stop(Decision(trial_id, time, self.STOP, None, None, "metric not finite", rung.milestone))
        if self._rule == "promotion":
            return self._arrive(trial_id, time, score, index, bracket)
        cutoff = rung.cutoff(self._fraction)
        rung.add(trial_id, score)
        below = cutoff is not None and score < cutoff
        decision = Decision(
            trial_id, time, self.STOP if below else self.CONTINUE, self._value(score), self._value(cutoff),
            "below rung cutoff" if below else "at or above rung cutoff", rung.milestone,
        )
        return self._stop(decision) if below else self._decide(decision)

    def _stop(self, decision: Decision) -> str:
        self._num_stopped += 1
        return self._decide(decision)

    def _arrive(self, trial_id: str, time: float, score: float, index: int, bracket: _Bracket) -> str:
        """Promotion rule at a rung: continue if already in the top 1/reduction_factor, else pause and wait."""
        rung = bracket.rungs[index]
        rung.add(trial_id, score)
        top = rung.top(self._reduction_factor, at_least_one=False)
        cutoff = self._value(rung.scores[top[-1]]) if top else None
        if trial_id in top:
            rung.promoted.add(trial_id)
            reason = "in the top 1/reduction_factor on arrival"
            return self._decide(Decision(trial_id, time, PROMOTE, self._value(score), cutoff, reason, rung.milestone))
        self._waiting[trial_id] = index
        self._paused_at[trial_id] = time
        reason = "not in the top 1/reduction_factor: waits for promotion"
        return self._decide(Decision(trial_id, time, self.PAUSE, self._value(score), cutoff, reason, rung.milestone))

    def _check_resumed(self, trial_id: str, time: float) -> None:
        """Warn when a promoted trial comes back behind the point it paused at (restored an older checkpoint)."""
        paused_at = self._paused_at.pop(trial_id)
        if time <= paused_at:
            logger.warning(
                "Trial %s paused at %s=%s but resumed at %s: it restored an older checkpoint and repeats work. "
                "Report a checkpoint with every result for rule='promotion'.",
                trial_id, self._time_attr, paused_at, time,
            )

    def choose_trial_to_run(self, tune_controller: "TuneController") -> Optional[Trial]:
        """Stopping rule: FIFO. Promotion rule: a promotable paused trial, else a pending one, else unblock."""
        if self._rule == "stopping":
            return super().choose_trial_to_run(tune_controller)
        live = tune_controller.get_live_trials()
        # Tuner.restore re-queues paused trials as PENDING: one waiting at a rung still waits for promotion
        paused = {trial.trial_id: trial for trial in live
                  if trial.status == Trial.PAUSED or (trial.status == Trial.PENDING and trial.trial_id in self._waiting)}
        waiting = [trial_id for trial_id in self._waiting if trial_id in paused]
        chosen = self._best_promotable(waiting, at_least_one=False)
        if chosen is not None:
            return self._promote(paused[chosen], "in the top 1/reduction_factor of its rung")
        for trial in tune_controller.get_trials():
            if trial.status == Trial.PENDING and trial.trial_id not in paused:
                return trial
        if any(trial.status == Trial.RUNNING for trial in live):
            return None
        chosen = self._best_promotable(waiting, at_least_one=True)
        if chosen is not None:
            return self._promote(paused[chosen], "nothing running or pending: best of a rung of < reduction_factor")
        if waiting:
            self._retire(tune_controller, [paused[trial_id] for trial_id in waiting])
            return None
        return super().choose_trial_to_run(tune_controller)

    def _waiting_rung(self, trial_id: str) -> _Rung:
        """The rung a paused trial waits at."""
        return self._brackets[self._bracket_of[trial_id]].rungs[self._waiting[trial_id]]

    def _best_promotable(self, waiting: List[str], at_least_one: bool) -> Optional[str]:
        """The waiting trial to promote first: highest rung, then best score; None if none may leave."""
        tops: Dict[Tuple[int, int], Set[str]] = {}
        best, best_key = None, None
        for trial_id in waiting:
            rung, where = self._waiting_rung(trial_id), (self._bracket_of[trial_id], self._waiting[trial_id])
            if where not in tops:
                tops[where] = set(rung.top(self._reduction_factor, at_least_one)) - rung.promoted
            key = (rung.milestone, rung.scores[trial_id])
            if trial_id in tops[where] and (best_key is None or key > best_key):
                best, best_key = trial_id, key
        return best

    def _promote(self, trial: Trial, reason: str) -> Trial:
        trial_id = trial.trial_id
        if trial.checkpoint is None:
            raise ValueError(
                f"ASHAScheduler(rule='promotion') cannot resume trial {trial_id}: it has no checkpoint, so Ray "
                "would restart it from scratch. The trainable must save state with "
                "tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(...)) and load it at start from "
                "tune.get_checkpoint(); otherwise use rule='stopping'."
            )
        rung = self._waiting_rung(trial_id)
        del self._waiting[trial_id]
        rung.promoted.add(trial_id)
        value = self._value(rung.scores[trial_id])
        self._decide(Decision(trial_id, self._paused_at[trial_id], PROMOTE, value, None, reason, rung.milestone))
        return trial

    def _retire(self, tune_controller: "TuneController", waiting: List[Trial]) -> None:
        """Stop paused trials that can no longer be promoted: all of them once the search is finished,
        else the worst of the lowest rung, which frees a slot for the searcher's next trial."""
        if not tune_controller.search_alg.is_finished():
            waiting = [min(waiting, key=self._rank_key)]
        for trial in waiting:
            trial_id = trial.trial_id
            rung = self._waiting_rung(trial_id)
            self._stop(Decision(trial_id, self._paused_at[trial_id], self.STOP, self._value(rung.scores[trial_id]),
                                None, "paused and not promotable when nothing else can run", rung.milestone))
            tune_controller.stop_trial(trial)

    def _rank_key(self, trial: Trial) -> Tuple[float, float]:
        rung = self._waiting_rung(trial.trial_id)
        return rung.milestone, rung.scores[trial.trial_id]

    def on_trial_complete(self, tune_controller: "TuneController", trial: Trial, result: Dict) -> None:
        """Record the final result at its rung (as Ray does), then forget the trial."""
        self._record_last(trial.trial_id, result)
        self._forget(trial.trial_id)

    def _record_last(self, trial_id: str, result: Dict) -> None:
        """Add a known trial's result to the rung it reaches, if not there yet."""
        if self._metric not in result or self._time_attr not in result or trial_id not in self._bracket_of:
            return
        time, score = self._read(trial_id, result)
        bracket = self._brackets[self._bracket_of[trial_id]]
        index = bracket.rung_for(trial_id, time, self._stop_last_trials)
        if index is not None and score is not None:
            bracket.rungs[index].add(trial_id, score)

    def reconcile(self, table: Sequence[TrialRecord]) -> None:
        """Bring the rungs to Ray's trial table: each trial's last result joins the rung it reached if the
        restored state lacks it; with the promotion rule, trials wait or count as promoted as the table shows
        them (see :meth:`_settle_promotion`); trials the table lacks are forgotten."""
        in_table = {record.trial_id for record in table}
        for trial_id in [trial_id for trial_id in self._bracket_of if trial_id not in in_table]:
            self._forget(trial_id)
        for record in table:
            if record.trial_id not in self._bracket_of:
                if record.finished:
                    continue
                self._assign(record.trial_id)
            try:
                self._record_last(record.trial_id, record.last_result)
            except (TypeError, ValueError):  # a malformed result: it raised when reported; nothing to record
                continue
            if record.finished:
                self._forget(record.trial_id)
            elif self._rule == "promotion":
                self._settle_promotion(record)

    def _settle_promotion(self, record: TrialRecord) -> None:
        """A live trial whose last result is the one a rung recorded left that rung's decision: waiting, if the
        table holds it PAUSED (or PENDING while this state has it waiting: Ray re-queues paused trials on a
        restore), else Ray's restore would run it on unpromoted; promoted, if it runs on."""
        trial_id = record.trial_id
        time, score = self._read(trial_id, record.last_result)
        rungs = self._brackets[self._bracket_of[trial_id]].rungs
        index = next((i for i in range(len(rungs) - 1, -1, -1)
                      if rungs[i].milestone <= time and trial_id in rungs[i].scores), None)
        if index is None or rungs[index].scores[trial_id] != score:
            return
        if record.status == Trial.PAUSED or (record.status == Trial.PENDING and trial_id in self._waiting):
            if trial_id not in self._waiting:
                self._waiting[trial_id] = index
                self._paused_at[trial_id] = time
        else:
            self._waiting.pop(trial_id, None)
            rungs[index].promoted.add(trial_id)

    def on_trial_remove(self, tune_controller: "TuneController", trial: Trial) -> None:
        self._forget(trial.trial_id)

    def on_trial_error(self, tune_controller: "TuneController", trial: Trial) -> None:
        """An errored trial keeps the scores it recorded (they were measured) but is never resumed."""
        self._forget(trial.trial_id)

    def _forget(self, trial_id: str) -> None:
        self._bracket_of.pop(trial_id, None)
        self._waiting.pop(trial_id, None)
        self._paused_at.pop(trial_id, None)

    def debug_string(self) -> str:
        """One line of totals, then per bracket each rung's milestone, count, cut-off and promotions."""
        lines = [f"ASHAScheduler(rule={self._rule}): {self._num_stopped} stopped, {len(self._waiting)} paused"]
        for number, bracket in enumerate(self._brackets):
            rungs = []
            for rung in bracket.rungs:
                cutoff = self._value(rung.cutoff(self._fraction))
                shown = "-" if cutoff is None else f"{cutoff:.4g}"
                text = f"t={rung.milestone:g}: {len(rung.scores)} trials, cutoff {shown}"
                if self._rule == "promotion":
                    text += f", {len(rung.promoted)} promoted"
                rungs.append(text)
            lines.append(f"Bracket {number}: " + " | ".join(rungs))
        return "\n".join(lines)
