"""Reading Ray's experiment snapshot: the trial table and the search generator's counters.

Ray snapshots an experiment as several files in its folder (``experiment_state-*.json``: the trial table;
``searcher-state-*.pkl``: the searcher; ``search_gen_state-*.json``: Ray's trial counter and concurrency
limiter; ``callback-states-*.pkl``: callbacks, tunekit's scheduler state among them). Each is written whole,
but they are copied to storage one by one, so a driver killed during the copy leaves files from two
moments. The trial table is what Ray resumes from; tunekit's searchers read it here to bring their own state
to the same moment (see :meth:`tunekit.searchers.base.SpaceSearcher.reconcile`).

These are Ray's own files, written by this experiment: they are read with Ray's own loaders, which
unpickle, as Ray's restore does (see the README, "Reliability": what is trusted).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import pyarrow.fs
from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint
from ray.tune.experiment import Trial
from ray.tune.search import SearchGenerator
from ray.tune.utils.serialization import _loads_with_cloudpickle
from ray.tune.utils.util import _load_newest_checkpoint


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


def trial_table(folder: str) -> Optional[list[TrialRecord]]:
    """The trial table of the newest experiment snapshot in ``folder`` (the one ``Tuner.restore`` resumes
    from), None when the folder holds none."""
    path = _find_newest_experiment_checkpoint(folder, fs=pyarrow.fs.LocalFileSystem())
    if path is None:
        return None
    with open(path, encoding="utf-8") as file:
        snapshot = _loads_with_cloudpickle(file.read())
    records = []
    for trial_state, run_metadata in snapshot["trial_data"]:
        trial = Trial.from_json_state(trial_state, stub=True)
        trial.restore_run_metadata(run_metadata)
        records.append(TrialRecord(trial.trial_id, trial.status, dict(trial.config),
                                   dict(trial.run_metadata.last_result)))
    return records


def trial_counter(folder: str) -> Optional[tuple[int, int]]:
    """``(trials created, trials asked for)`` in the newest search-generator snapshot of ``folder``."""
    if not os.path.isdir(folder):
        return None
    state = _load_newest_checkpoint(folder, SearchGenerator.CKPT_FILE_TMPL.format("*"))
    if not state:
        return None
    return state["counter"], state["total_samples"]
