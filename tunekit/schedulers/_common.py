"""What tunekit's schedulers share: metric/mode resolution, reading a result, decision records, save/restore.

Internally every scheduler works on a *score*: the metric multiplied by +1 (``mode="max"``) or -1
(``mode="min"``), so that higher is always better. A metric that is NaN, +-inf or None has no score
(``None``): it is never recorded in a rung or a median and the trial reporting it is treated as the worst.
"""

import glob
import logging
import math
import os
import pickle
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Deque, Dict, Optional, Sequence, Tuple

from ray.tune.callback import Callback
from ray.tune.experiment import Trial
from ray.tune.result import (
    AUTO_RESULT_KEYS,
    DEBUG_METRICS,
    DEFAULT_METRIC,
    DONE,
    RESULT_DUPLICATE,
    SHOULD_CHECKPOINT,
)
from ray.tune.schedulers.trial_scheduler import FIFOScheduler

from tunekit._ray_snapshot import TrialRecord, align_trial_counter, trial_table
from tunekit.files import write_atomically
from tunekit.parameters import _is_finite

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

#: Keys Ray fills in by itself; a result holding nothing else carries no report from the trainable
#: (e.g. a function that returned before its first ``tune.report``), so it is skipped, not rejected.
_RAY_KEYS = frozenset(AUTO_RESULT_KEYS + DEBUG_METRICS + (DONE, RESULT_DUPLICATE, SHOULD_CHECKPOINT))

#: The action a scheduler took, as recorded in ``decisions``: Ray's three plus PROMOTE (a paused trial resumed).
PROMOTE = "PROMOTE"

#: How many of the most recent decisions a scheduler keeps: enough for TensorBoard (which reads them every
#: loop step) and for inspection, bounded so that a long experiment's scheduler state does not grow with it.
DECISIONS_KEPT = 10_000


@dataclass
class Decision:
    """One scheduling decision, kept in ``scheduler.decisions`` for logging and TensorBoard.

    ``value`` and ``cutoff`` are in the metric's own units (not sign-flipped); ``cutoff`` is the rung
    cut-off (ASHA) or the median (median stopping) the value was compared with, None when there was none.
    """

    trial_id: str
    time: float
    action: str
    value: Optional[float]
    cutoff: Optional[float]
    reason: str
    rung: Optional[float] = None


def check_mode(mode: Optional[str]) -> None:
    """Reject a ``mode`` other than "min", "max" or None (None: taken from the Tuner later)."""
    if mode not in (None, "min", "max"):
        raise ValueError(f"mode={mode!r} is not accepted; use 'min', 'max' or None (taken from tune.TuneConfig).")


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """Reject a non-numeric or non-positive scheduler argument, naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _is_finite(value):
        raise TypeError(f"{name}={value!r} must be a finite number.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} must be {bound}.")


class MetricScheduler(FIFOScheduler):
    """Base for schedulers that compare one metric over one time attribute.

    Holds ``metric``/``mode``/``time_attr``, takes metric and mode from the Tuner when not given
    (``set_search_properties``), reads results into ``(time, score)``, keeps ``decisions`` and
    round-trips its state through ``save``/``restore``. ``decisions`` holds the last ``DECISIONS_KEPT``
    decisions, ``decisions_made`` counts them all. Subclasses only store trial ids, never Trial
    objects, so the state pickles on its own.
    """

    _logger = logging.getLogger(__name__)

    def __init__(self, time_attr: str, metric: Optional[str], mode: Optional[str]):
        super().__init__()
        check_mode(mode)
        if not isinstance(time_attr, str) or not time_attr:
            raise TypeError(f"time_attr={time_attr!r} must be the name of a reported result key.")
        self._time_attr = time_attr
        self._metric = metric
        self._mode = mode
        self.decisions: Deque[Decision] = deque(maxlen=DECISIONS_KEPT)
        self.decisions_made = 0

    @property
    def mode(self) -> Optional[str]:
        return self._mode

    @property
    def _sign(self) -> float:
        return 1.0 if self._mode == "max" else -1.0

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec) -> bool:
        """Take metric/mode from the Tuner; refuse (False) to overwrite ones given to the constructor."""
        if (self._metric and metric) or (self._mode and mode):
            return False
        check_mode(mode)
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        if self._metric is None and self._mode:
            self._metric = DEFAULT_METRIC
        return True

    def on_trial_add(self, tune_controller: "TuneController", trial: Trial) -> None:
        _join_experiment_snapshots(self, tune_controller)
        if not self._metric or not self._mode:
            raise ValueError(
                f"{type(self).__name__} has metric={self._metric!r}, mode={self._mode!r}: pass both to the "
                "scheduler or to tune.TuneConfig(metric=..., mode=...)."
            )

    def _read(self, trial_id: str, result: Dict) -> Optional[Tuple[float, Optional[float]]]:
        """``(time, score)`` of a result; None for a result with nothing reported by the trainable.

        Raises ValueError when the trainable reported something but not the metric or the time attribute,
        TypeError when either is not a number. ``score`` is None for NaN, +-inf or None metrics.
        """
        missing = [key for key in (self._metric, self._time_attr) if key not in result]
        if missing:
            reported = sorted(key for key in result if key not in _RAY_KEYS and not key.startswith("config/"))
            if not reported:
                return None
            role = "metric" if missing[0] == self._metric else "time_attr"
            raise ValueError(
                f"{type(self).__name__}: trial {trial_id} reported a result without {missing[0]!r} "
                f"(the scheduler's {role}); it reported {reported}. Report it with tune.report({{...}}) "
                f"or set {role}= to one of the reported keys."
            )
        time = _as_number(self._time_attr, result[self._time_attr], trial_id)
        if time is None:
            raise ValueError(
                f"time_attr {self._time_attr!r}={result[self._time_attr]!r} of trial {trial_id} is not finite."
            )
        value = _as_number(self._metric, result[self._metric], trial_id)
        return time, None if value is None else self._sign * value

    def _value(self, score: Optional[float]) -> Optional[float]:
        """A score back in the metric's units."""
        return None if score is None else self._sign * score

    def _decide(self, decision: Decision) -> str:
        """Keep and log one decision, returning its Ray action (PROMOTE is CONTINUE for Ray)."""
        self.decisions.append(decision)
        self.decisions_made += 1
        level = logging.DEBUG if decision.action == self.CONTINUE else logging.INFO
        if self._logger.isEnabledFor(level):
            self._logger.log(
                level, "%s trial %s at %s=%s: %s=%s, cutoff=%s (%s)", decision.action, decision.trial_id,
                self._time_attr, decision.time, self._metric, decision.value, decision.cutoff, decision.reason,
            )
        return self.CONTINUE if decision.action == PROMOTE else decision.action

    def reconcile(self, table: Sequence[TrialRecord]) -> None:
        """After ``Tuner.restore``: bring the restored state to Ray's trial table, which a kill during Ray's
        snapshot copy can leave a step newer than this scheduler's snapshot (see :mod:`tunekit._ray_snapshot`).
        The base keeps its state as restored (the median rule's running means only miss the newest steps)."""

    def state_bytes(self) -> bytes:
        """The whole scheduler state (plain ids, numbers and records), pickled: what ``save`` and Ray's
        experiment snapshot (:class:`SchedulerSnapshot`) keep."""
        return pickle.dumps(vars(self))

    def load_state_bytes(self, data: bytes) -> None:
        """Take back a state made by :meth:`state_bytes` (Ray's own checkpoint files only)."""
        vars(self).update(pickle.loads(data))

    def save(self, checkpoint_path: str) -> None:
        """Write :meth:`state_bytes` to ``checkpoint_path`` atomically (a kill in the middle leaves the previous
        file readable)."""
        write_atomically(checkpoint_path, self.state_bytes())

    def restore(self, checkpoint_path: str) -> None:
        """Load the state written by ``save``."""
        with open(checkpoint_path, "rb") as file:
            self.load_state_bytes(file.read())


#: Key of a scheduler's entry in Ray's callback-state snapshot (``callback-states-*.pkl``).
SNAPSHOT_KEY = "tunekit_scheduler_state"


class SchedulerSnapshot(Callback):
    """Puts a scheduler's state into every experiment snapshot Ray takes.

    Ray's ``TuneController`` snapshots the trial table, the searcher and the callbacks' states together
    (``experiment_state-*.json``, ``searcher-state-*.pkl``, ``callback-states-*.pkl`` in the experiment folder)
    but never the scheduler, so after ``Tuner.restore`` a scheduler would start empty (no rung scores, no
    medians, no paused trials) while Ray resumes the trials it was deciding about. As one of the callbacks,
    the scheduler's state is saved at the same moment as the trials it describes.
    """

    def __init__(self, scheduler: MetricScheduler):
        self.scheduler = scheduler

    def get_state(self) -> Dict:
        return {SNAPSHOT_KEY: {"scheduler": type(self.scheduler).__name__, "state": self.scheduler.state_bytes()}}

    def set_state(self, state: Dict) -> None:
        """Nothing: the scheduler reads its entry itself (this callback joins a run only at its first trial)."""


def _join_experiment_snapshots(scheduler: MetricScheduler, tune_controller: Any) -> None:
    """At a run's first trial: take back the state of the snapshot a restored run resumes from, then join
    Ray's snapshots (see :class:`SchedulerSnapshot`).

    A restored run is recognised by this scheduler's entry in the snapshot folder (``Tuner.restore`` copies
    the snapshot there before re-adding the trials; a fresh run has written none yet). Needs Ray's own
    controller; a stand-in without one (unit tests) leaves the state in memory only.
    """
    controller = getattr(tune_controller, "_tune_controller", None)
    callbacks = getattr(controller, "_callbacks", None)
    if callbacks is None or any(isinstance(c, SchedulerSnapshot) and c.scheduler is scheduler for c in callbacks):
        return
    folder = controller._storage.experiment_driver_staging_path
    table = trial_table(folder)
    state = _snapshot_entry(folder, type(scheduler).__name__)
    if state is not None:
        scheduler.load_state_bytes(state)
        scheduler._logger.info("%s: state restored from the experiment snapshot in %s", type(scheduler).__name__,
                               folder)
    if table is not None:
        align_trial_counter(tune_controller, len(table))
        scheduler.reconcile(table)
    callbacks._callbacks = [*callbacks._callbacks, SchedulerSnapshot(scheduler)]


def _snapshot_entry(folder: str, scheduler_name: str) -> Optional[bytes]:
    """The pickled scheduler state in the newest callback snapshot of ``folder`` (Ray's own, trusted file)."""
    paths = glob.glob(os.path.join(folder, "callback-states-*.pkl"))
    if not paths:
        return None
    with open(max(paths), "rb") as file:
        states = pickle.load(file)
    for entry in states.values():
        if isinstance(entry, dict) and entry.get(SNAPSHOT_KEY, {}).get("scheduler") == scheduler_name:
            return entry[SNAPSHOT_KEY]["state"]
    return None


def check_bool(name: str, value: Any) -> None:
    """Reject a flag that is not a bool (a string such as "no" would count as True)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r} must be True or False.")


def _as_number(name: str, value: Any, trial_id: str) -> Optional[float]:
    """``float(value)``, None when it is None or not finite; TypeError for non-numbers (strings included)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name}={value!r} reported by trial {trial_id} is not a number.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}={value!r} reported by trial {trial_id} is not a number.") from None
    return number if math.isfinite(number) else None
