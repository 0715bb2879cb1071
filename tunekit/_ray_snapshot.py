"""Reading Ray's experiment snapshot: the trial table and the search generator's counters.

Ray snapshots an experiment as several files in its folder (``experiment_state-*.json``: the trial table;
``searcher-state-*.pkl``: the searcher; ``search_gen_state-*.json``: Ray's trial counter and concurrency
limiter; ``callback-states-*.pkl``: callbacks, tunekit's scheduler state among them). Each is written whole,
but they are copied to storage one by one, so a driver killed during the copy leaves files from two
moments. The trial table is what Ray resumes from; tunekit's searchers read it here to bring their own state
to the same moment (see :meth:`tunekit.searchers.base.SpaceSearcher.reconcile`), and tunekit's schedulers
realign Ray's trial counter to it (:func:`align_trial_counter`) and bring their own restored state to it
(``reconcile``: ASHA's rungs and paused trials).

These are Ray's own files, written by this experiment: they are read with Ray's own loaders, which
unpickle, as Ray's restore does (see the README, "Reliability": what is trusted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import pyarrow.fs
from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint
from ray.tune.experiment import Trial
from ray.tune.search import SearchGenerator
from ray.tune.utils.serialization import _loads_with_cloudpickle
from ray.tune.utils.util import _load_newest_checkpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialRecord:
    """One row of Ray's trial table: what Ray will resume."""

    trial_id: str
    status: str
    config: dict
    last_result: dict

    @property
    def finished(self) -> bool:
        """Ray holds the trial as ended (it will not run it again)."""
        return self.status in (Trial.TERMINATED, Trial.ERROR)

    @property
    def failed(self) -> bool:
        return self.status == Trial.ERROR


def _newest_snapshot(folder: str) -> Optional[dict]:
    """The newest ``experiment_state-*.json`` in ``folder`` (the one ``Tuner.restore`` resumes from), decoded;
    None when the folder holds none."""
    path = _find_newest_experiment_checkpoint(folder, fs=pyarrow.fs.LocalFileSystem())
    if path is None:
        return None
    with open(path, encoding="utf-8") as file:
        return _loads_with_cloudpickle(file.read())


def trial_table(folder: str) -> Optional[list[TrialRecord]]:
    """The trial table of the newest experiment snapshot in ``folder``, None when the folder holds none."""
    snapshot = _newest_snapshot(folder)
    if snapshot is None:
        return None
    records = []
    for trial_state, run_metadata in snapshot["trial_data"]:
        trial = Trial.from_json_state(trial_state, stub=True)
        trial.restore_run_metadata(run_metadata)
        records.append(TrialRecord(trial.trial_id, trial.status, dict(trial.config),
                                   dict(trial.run_metadata.last_result)))
    return records


def trial_counter(folder: str) -> Optional[tuple[int, int]]:
    """``(trials created, trials asked for)`` in the newest search-generator snapshot of ``folder``."""
    state = _load_newest_checkpoint(folder, SearchGenerator.CKPT_FILE_TMPL.format("*"))
    if not state:
        return None
    return state["counter"], state["total_samples"]


def align_trial_counter(tune_controller: Any, trials: Optional[int] = None) -> None:
    """After ``Tuner.restore``, set Ray's count of created trials to the number in the trial table it resumes.

    Ray restores that count from its own snapshot file, which a kill during Ray's copy can leave a step newer or
    older than the table: newer, Ray ends the run short of ``num_samples``; older, it runs extra trials. Called by
    tunekit's schedulers as the restored trials are re-added (they see Ray's controller; a searcher does not),
    with the table's number of ``trials`` when they have read it, else it is counted here. A fresh run has no
    trial table yet and is left alone.
    """
    controller = getattr(tune_controller, "_tune_controller", None)
    search_alg = getattr(controller, "_search_alg", None)
    if not isinstance(search_alg, SearchGenerator):
        return
    if trials is None:
        snapshot = _newest_snapshot(controller._storage.experiment_driver_staging_path)
        if snapshot is None:
            return
        trials = len(snapshot["trial_data"])
    state = search_alg.get_state()
    if state["counter"] != trials:
        logger.warning("Ray's trial counter (%d) did not match its trial table (%d trials) after the restore; set "
                       "to the table's", state["counter"], trials)
        search_alg.set_state({**state, "counter": trials})
