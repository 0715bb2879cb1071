"""DyHPO's scheduler: the Ray side of :class:`tunekit.searchers.DyHPOSearch`'s decisions.

After every result the trial either continues (it is still the candidate that deserves the next epoch, so it
keeps its worker without a pause/resume round trip), pauses (Ray checkpoints it) or stops (it reached
``max_epochs``, or the total budget is spent). When a worker is free, ``choose_trial_to_run`` resumes the paused
trial the searcher picks; a new configuration is started by Ray through the searcher's ``suggest``. All state
lives in the searcher, so the two always agree and one ``save`` holds everything.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Dict, Optional

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from tunekit._ray_snapshot import align_trial_counter
from tunekit.searchers.dyhpo import DyHPOSearch

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

logger = logging.getLogger(__name__)

#: A trial that has waited longer than this for a worker waits for a new worker process: handing it the process
#: of a trial that paused takes a fraction of a second.
HANDOVER_S = 1.0
#: While a trial waits for a new worker process (up to this many seconds of its wait), trials that report keep
#: their workers (a few epochs at most, see ``DyHPOSearch``): a pause would cache its process for the waiting trial
#: and Ray would discard the process it is starting, which holds a CPU until it is up; with a pause every second
#: this went on all run, one worker's CPU lost to discarded starts. Bounded so that a cluster too small for
#: ``max_concurrent_trials`` cannot stop all pauses.
WORKER_START_GRACE_S = 30.0

_USAGE = ("use them together: searcher = DyHPOSearch(...); tune.TuneConfig(search_alg=searcher, "
          "scheduler=DyHPOScheduler(searcher))")


def _wraps(search_alg, searcher: DyHPOSearch) -> bool:
    """Whether Ray's search algorithm (SearchGenerator, ConcurrencyLimiter... wrappers) holds ``searcher``."""
    seen = 0
    while search_alg is not None and seen < 8:
        if search_alg is searcher:
            return True
        search_alg, seen = getattr(search_alg, "searcher", None), seen + 1
    return False


class DyHPOScheduler(TrialScheduler):
    """Continue, pause, stop and resume trials as the shared :class:`DyHPOSearch` decides.

    Args:
        searcher: the DyHPOSearch that is also the Tuner's ``search_alg``.

    Trainables must checkpoint with every report (``tune.report(metrics, checkpoint=...)``) and resume from
    ``tune.get_checkpoint()``; :func:`tunekit.trainables.epoch_trainable` does this for HPO4DL objectives.
    """

    def __init__(self, searcher: DyHPOSearch):
        if not isinstance(searcher, DyHPOSearch):
            raise TypeError(f"DyHPOScheduler(searcher={searcher!r}): pass the DyHPOSearch it decides with; {_USAGE}")
        self.searcher = searcher
        self.in_use = False
        self._pending_since: Dict[str, float] = {}
        self._seen_trials = False
        searcher.scheduler = self

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec) -> bool:
        """Metric and mode live in the searcher; this only records that a Tuner uses this scheduler."""
        self.in_use = True
        return True

    def on_trial_add(self, tune_controller: "TuneController", trial: Trial) -> None:
        """Check the pairing; after ``Tuner.restore``, keep the trials DyHPO had paused paused.

        Ray re-queues every unfinished trial as PENDING on restore and would start them all, each training an
        epoch DyHPO did not choose (past ``max_budget`` when it was nearly spent). A trial DyHPO holds paused
        and that has a checkpoint is set back to PAUSED here, before Ray files it by status, so it resumes only
        when ``choose_trial_to_run`` picks it; any other restored trial is counted as running again.
        """
        if not _wraps(getattr(tune_controller, "search_alg", None), self.searcher):
            raise ValueError(f"DyHPOScheduler runs only with the DyHPOSearch it was built on as search_alg; {_USAGE}")
        if not self._seen_trials:
            self._seen_trials = True
            align_trial_counter(tune_controller)
        if trial.status == Trial.PENDING and trial.checkpoint is not None and self.searcher.is_paused(trial.trial_id):
            trial.set_status(Trial.PAUSED)
        else:
            self.searcher.restarted(trial.trial_id)

    def on_trial_result(self, tune_controller: "TuneController", trial: Trial, result: Dict) -> str:
        self._note_waiting(tune_controller)
        return self.searcher.on_result(trial.trial_id, result)

    def _note_waiting(self, tune_controller: "TuneController") -> list:
        """Tell the searcher whether Ray will create more trials, how many trials wait for a worker, and how many
        of them wait for a worker process Ray is starting; returns the waiting trials, the latest to wait first."""
        search_alg = getattr(tune_controller, "search_alg", None)
        self.searcher.new_trials_allowed(search_alg is None or not search_alg.is_finished())
        now = time.monotonic()
        pending = [trial for trial in tune_controller.get_trials() if trial.status == Trial.PENDING]
        self._pending_since = {trial.trial_id: self._pending_since.get(trial.trial_id, now) for trial in pending}
        starting = sum(HANDOVER_S <= now - since < WORKER_START_GRACE_S for since in self._pending_since.values())
        self.searcher.waiting_to_start(len(pending), starting)
        return sorted(pending, key=lambda trial: self._pending_since[trial.trial_id], reverse=True)

    def on_trial_complete(self, tune_controller: "TuneController", trial: Trial, result: Dict) -> None:
        """Nothing to do: Ray tells the searcher too, which records the trial as done."""

    def on_trial_error(self, tune_controller: "TuneController", trial: Trial) -> None:
        """Nothing to do: Ray calls the searcher's ``on_trial_complete(error=True)``, which marks it failed."""

    def on_trial_remove(self, tune_controller: "TuneController", trial: Trial) -> None:
        """Nothing to do: Ray calls the searcher's ``on_trial_complete`` for removed trials."""

    def choose_trial_to_run(self, tune_controller: "TuneController") -> Optional[Trial]:
        """A trial already waiting to start, else the paused trial the searcher resumes, else None.

        Of the waiting trials the latest to wait is named, so that the process of a trial that just paused goes to
        it: its own worker request is the least likely to be placed yet, while an earlier waiter's process may be
        starting, and a process Ray discards while it starts holds its CPU until it is up (with a pause every
        second, naming the earliest waiter lost one worker's CPU to discarded starts for the rest of the run).
        Paused trials that can never get budget again (the total budget is spent) are stopped, so the experiment
        ends.
        """
        pending = self._note_waiting(tune_controller)
        if pending:
            return pending[0]
        paused = {trial.trial_id: trial for trial in tune_controller.get_trials() if trial.status == Trial.PAUSED}
        if not paused:
            return None
        if not self.searcher.resumable():
            for trial in paused.values():
                logger.info("DyHPO: stopping paused trial %s: the budget is spent", trial.trial_id)
                tune_controller.stop_trial(trial)
            return None
        chosen = self.searcher.choose_paused(paused)
        if chosen is None:
            return None
        trial = paused[chosen]
        if trial.checkpoint is None:
            raise ValueError(
                f"DyHPOScheduler cannot resume trial {chosen}: it has no checkpoint, so Ray would restart it "
                "from scratch. Report a checkpoint with every result (tune.report(metrics, checkpoint=...)) and "
                "load it from tune.get_checkpoint(), or use tunekit.trainables.epoch_trainable.")
        return trial

    def debug_string(self) -> str:
        return self.searcher.debug_string()

    def save(self, checkpoint_path: str) -> None:
        """The shared state is the searcher's: write it (same file format as ``DyHPOSearch.save``)."""
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)
