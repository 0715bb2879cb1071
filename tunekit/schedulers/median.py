"""Median stopping rule (Golovin et al. 2017, Google Vizier): stop a trial that is worse than the median.

At a check at time ``t`` (in units of ``time_attr``) a trial stops when its best result so far is strictly
worse than the median, over the *other* trials that have reported up to ``t``, of their running averages of
the results reported between ``grace_period`` and ``t``. Checks start at ``grace_period``, repeat every
``eval_interval`` and need ``min_samples_required`` other trials with a running average at ``t``.

The running averages at a check time are computed once per trial and kept sorted, so a decision costs
O(log n) per result instead of Ray's pass over every result of every trial.
"""

import logging
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from ray.tune.experiment import Trial

from tunekit.schedulers._common import Decision, MetricScheduler, check_bool, check_positive

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

logger = logging.getLogger(__name__)

#: Check times whose sorted running averages are kept; the oldest are dropped (and rebuilt if asked again)
#: so that a float time_attr such as time_total_s, where every check time is new, keeps memory bounded.
MAX_CHECK_TIMES = 4096


@dataclass
class _Curve:
    """One trial's recorded scores: times at or past the grace period, their prefix sums, best so far."""

    times: List[float] = field(default_factory=list)
    sums: List[float] = field(default_factory=list)
    last_time: float = float("-inf")
    best: Optional[float] = None
    last_check: Optional[float] = None

    def mean_until(self, time: float) -> Optional[float]:
        """Running average of the scores from the grace period up to ``time``; None if there are none."""
        count = bisect_right(self.times, time)
        return self.sums[count - 1] / count if count else None


def median_without(ascending: List[float], own: Optional[float]) -> float:
    """Median of sorted ``ascending`` after removing one occurrence of ``own`` (None: remove nothing)."""
    skip = len(ascending) if own is None else bisect_left(ascending, own)
    size = len(ascending) - (own is not None)

    def at(position: int) -> float:
        return ascending[position if position < skip else position + 1]

    middle = size // 2
    return at(middle) if size % 2 else (at(middle - 1) + at(middle)) / 2


class MedianStoppingScheduler(MetricScheduler):
    """Median stopping as a Ray Tune scheduler, deciding as Ray's ``MedianStoppingRule``.

    Args:
        time_attr: Monotonic progress key of the results (iterations, epochs, seconds).
        metric, mode: The metric and "min"/"max"; taken from ``tune.TuneConfig`` when None.
        grace_period: No check before this time; running averages start here.
        min_samples_required: Other trials needed at the check time for a median (maggy's ``es_min``).
        eval_interval: Time between two checks of one trial (maggy's ``es_interval``); 0 checks every result.
        hard_stop: Stop a trial below the median; False pauses it instead (it is resumed once nothing is
            pending, then runs to its end unchecked, as in Ray).

    Equal to Ray's ``MedianStoppingRule(time_attr, metric, mode, grace_period, min_samples_required,
    min_time_slice=float("inf"), hard_stop)`` when ``eval_interval`` is no longer than the step between
    results: tunekit never pauses a trial merely to yield to waiting trials. Differences by design: each time
    step of a trial counts once (Ray counts a finished trial's last result again for each duplicate
    notification); a NaN, +-inf or None metric is not recorded (it changes no other trial's median) and
    stops its trial at once when past ``grace_period``, also with ``hard_stop=False`` (pausing would resume it
    later to run on unchecked); results of errored or stopped trials stay in the medians, as in Ray.
    maggy's median rule (``es_interval``, ``es_min``) is ``eval_interval``, ``min_samples_required``; maggy
    counts only finished trials towards the median, here (as in Ray) every trial that has reached ``t`` does.
    """

    _logger = logger

    def __init__(
        self,
        time_attr: str = "training_iteration",
        metric: Optional[str] = None,
        mode: Optional[str] = None,
        grace_period: float = 1,
        min_samples_required: int = 3,
        eval_interval: float = 1,
        hard_stop: bool = True,
    ):
        super().__init__(time_attr, metric, mode)
        check_positive("grace_period", grace_period, allow_zero=True)
        check_positive("eval_interval", eval_interval, allow_zero=True)
        samples = min_samples_required
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"min_samples_required={min_samples_required!r} must be an integer >= 1.")
        self._grace_period = grace_period
        self._min_samples_required = min_samples_required
        self._eval_interval = eval_interval
        check_bool("hard_stop", hard_stop)
        self._hard_stop = hard_stop
        self._curves: Dict[str, _Curve] = {}
        self._check_times: List[float] = []
        self._means_at: Dict[float, List[float]] = {}
        self._stopped: Set[str] = set()
        self._last_median: Optional[Tuple[float, float, int]] = None

    def on_trial_result(self, tune_controller: "TuneController", trial: Trial, result: Dict) -> str:
        read = self._read(trial.trial_id, result)
        trial_id = trial.trial_id
        if read is None or trial_id in self._stopped:
            return self.CONTINUE
        time, score = read
        curve = self._curves.setdefault(trial_id, _Curve())
        self._record(curve, time, score)
        if time < self._grace_period:
            return self.CONTINUE
        if score is None:
            # Stopped even without hard_stop: a paused trial is resumed later and runs on unchecked, and a
            # diverged (NaN/inf) trial is not worth resuming.
            self._stopped.add(trial_id)
            return self._decide(Decision(trial_id, time, self.STOP, None, None, "metric not finite"))
        if curve.last_check is not None and time - curve.last_check < self._eval_interval:
            return self.CONTINUE
        curve.last_check = time
        means = self._means(time)
        own = curve.mean_until(time)
        samples = len(means) - (own is not None)
        if samples < self._min_samples_required:
            return self.CONTINUE
        median = median_without(means, own)
        self._last_median = (time, self._value(median), samples)
        if median > curve.best:
            reason = f"best so far worse than the median of {samples} trials' running averages"
            return self._halt(Decision(trial_id, time, self.STOP, self._value(curve.best), self._value(median), reason))
        return self.CONTINUE

    def on_trial_complete(self, tune_controller: "TuneController", trial: Trial, result: Dict) -> None:
        """Record a final result that was not seen yet (a repeat of the last one is ignored)."""
        if self._metric in result and self._time_attr in result:
            time, score = self._read(trial.trial_id, result)
            self._record(self._curves.setdefault(trial.trial_id, _Curve()), time, score)

    def _halt(self, decision: Decision) -> str:
        """Stop the trial, or pause it when ``hard_stop`` is False; it is not checked again."""
        self._stopped.add(decision.trial_id)
        if not self._hard_stop:
            decision.action = self.PAUSE
        return self._decide(decision)

    def _record(self, curve: _Curve, time: float, score: Optional[float]) -> None:
        """Add a finite score at a new, later time, and its running average to the check times it passes."""
        if score is None or time <= curve.last_time:
            return
        curve.best = score if curve.best is None else max(curve.best, score)
        previous, curve.last_time = curve.last_time, time
        if time >= self._grace_period:
            curve.times.append(time)
            curve.sums.append(score + (curve.sums[-1] if curve.sums else 0.0))
        first, last = bisect_right(self._check_times, previous), bisect_right(self._check_times, time)
        for check_time in self._check_times[first:last]:
            mean = curve.mean_until(check_time)
            if mean is not None:
                insort(self._means_at[check_time], mean)

    def _means(self, time: float) -> List[float]:
        """Sorted running averages at ``time`` of every trial that has reported up to ``time``."""
        if time not in self._means_at:
            means = (curve.mean_until(time) for curve in self._curves.values() if curve.last_time >= time)
            self._means_at[time] = sorted(mean for mean in means if mean is not None)
            insort(self._check_times, time)
            if len(self._check_times) > MAX_CHECK_TIMES:
                del self._means_at[self._check_times.pop(0)]
        return self._means_at[time]

    def debug_string(self) -> str:
        """Number stopped and the latest median a trial was compared with."""
        text = f"MedianStoppingScheduler: {len(self._stopped)} stopped"
        if self._last_median is not None:
            time, median, samples = self._last_median
            text += f"; median at {self._time_attr}={time:g}: {median:.4g} over {samples} trials"
        return text
