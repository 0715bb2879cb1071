"""Ray's snapshot files from two moments: a searcher restored a step older or newer than Ray's trial table.

Ray copies its experiment snapshot (trial table, searcher state, trial counter, callback states) to storage
file by file, so a driver killed during the copy leaves files from two moments (seen in the kill sweep with
snapshots after every event: the searcher never observed a finished trial and one trial too many ran). After a
restore every tunekit searcher brings itself to the trial table Ray resumes from.

The Tuner tests make the inconsistency for real: they keep a copy of some snapshot files taken mid-run, put
them back after the run, and restore. They store through the crash-safe file system, as ``tunekit run`` does:
with snapshots after every event Ray's own storage can hold a torn trial table, and Ray then restarts the
experiment from scratch (see test_crash_safe_storage.py).
"""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

import sys

import pytest
import ray.cloudpickle
from ray import tune
from ray.tune.experiment import Trial

from tunekit._ray_snapshot import TrialRecord, trial_table
from tunekit.files import crash_safe_filesystem
from tunekit.schedulers import ASHAScheduler, DyHPOScheduler
from tunekit.searchers import DyHPOSearch, GPEISearch, NevergradSearch
from tunekit.space import Float, Space

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/ modules

SPACE = Space([Float("x", -2.0, 2.0)])


def loss_of(config: dict) -> float:
    return (config["x"] - 0.5) ** 2


def record(trial_id: str, status: str, config: dict, loss: float | None = None, step: int = 1) -> TrialRecord:
    result = {} if loss is None else {"loss": loss, "training_iteration": step}
    return TrialRecord(trial_id, status, config, result)


@pytest.mark.parametrize("make", [lambda: GPEISearch(SPACE, "loss", "min", random_starts=3, seed=0),
                                  lambda: NevergradSearch("OnePlusOne", SPACE, "loss", "min", seed=0)],
                         ids=["gp_ei", "nevergrad"])
def test_the_trial_table_wins_over_an_older_or_newer_searcher_state(make):
    searcher = make()
    configs = {trial_id: searcher.suggest(trial_id) for trial_id in ("a", "b", "c")}
    searcher.on_trial_complete("a", {"loss": loss_of(configs["a"])})
    table = [record("a", Trial.TERMINATED, configs["a"], loss_of(configs["a"])),
             record("b", Trial.TERMINATED, configs["b"], loss_of(configs["b"])),  # ended after the searcher's save
             record("d", Trial.ERROR, {"x": 1.25}),                              # started after it, then failed
             record("e", Trial.RUNNING, {"x": -1.0})]                            # started after it, still running
    # "c": suggested after the table's snapshot, never recorded by Ray
    searcher.reconcile(table, counter=(5, 6))

    assert [(o.trial_id, o.loss) for o in searcher.observations] == [
        ("a", loss_of(configs["a"])), ("b", loss_of(configs["b"])), ("d", None)]
    assert searcher.pending_configs == [{"x": -1.0}]
    searcher.on_trial_complete("e", {"loss": loss_of({"x": -1.0})})
    assert searcher.observations[-1].trial_id == "e" and searcher.observations[-1].loss == 2.25
    # the table holds 4 of the 6 trials asked for: two more, then finished, whatever Ray's counter says
    assert searcher.suggest("f") is not None and searcher.suggest("g") is not None
    assert searcher.suggest("h") == "FINISHED"


def test_a_searcher_limits_concurrency_on_its_own_record_of_running_trials():
    searcher = GPEISearch(SPACE, "loss", "min", random_starts=5, seed=0)
    assert searcher.set_max_concurrency(2) is True  # Ray's ConcurrencyLimiter then leaves the limit to it
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert first is not None and second is not None and searcher.suggest("c") is None
    searcher.reconcile([record("a", Trial.TERMINATED, first, loss_of(first)), record("b", Trial.RUNNING, second)])
    assert searcher.suggest("c") is not None  # a trial Ray holds as ended frees its slot


def test_dyhpo_adopts_a_trial_with_its_curve_and_gives_back_a_forgotten_pool_entry():
    searcher = DyHPOSearch(SPACE, "loss", "min", max_epochs=5, num_configurations=20, seed=0)
    DyHPOScheduler(searcher)
    searcher.scheduler.in_use = True
    state = searcher._dyhpo
    searcher.set_max_concurrency(2)
    searcher.suggest("a")
    forgotten_index = state.curves["a"].pool_index
    unseen = state.pool[state.unused[-1]]
    searcher.reconcile([record("z", Trial.PAUSED, unseen, 0.3, step=3)])

    assert "a" not in state.curves and state.unused[0] == forgotten_index
    curve = state.curves["z"]
    assert curve.losses == [0.3, 0.3, 0.3] and curve.status == "paused" and state.spent == 3
    assert state.pool.index(unseen) not in state.unused


def newest(folder: Path, pattern: str) -> Path:
    return Path(max(glob.glob(str(folder / pattern))))


class KeepStaleSnapshot(tune.Callback):
    """Copies snapshot files (``patterns``) from the experiment folder once two trials have ended and a snapshot
    exists, i.e. files older than the end of the run."""

    def __init__(self, folder: Path, into: Path, patterns=("searcher-state-*.pkl", "search_gen_state-*.json")):
        self.folder, self.into, self.patterns, self.ended = folder, into, patterns, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended += 1
        files = [file for pattern in self.patterns for file in glob.glob(str(self.folder / pattern))]
        if self.ended >= 2 and len(files) == len(self.patterns) and not any(self.into.iterdir()):
            for file in files:
                shutil.copy(file, self.into)


def report_three_steps(config: dict) -> None:
    for step in range(3):
        tune.report({"loss": loss_of(config) + 0.1 * (2 - step)})


def test_restore_from_a_searcher_snapshot_older_than_the_trial_table_loses_nothing(ray_session, tmp_path,
                                                                                    monkeypatch):
    """GP-EI in a real Tuner (the shell's reconciliation is the same for every searcher: the unit tests above
    cover nevergrad's and DyHPO's own parts)."""
    def make():
        return GPEISearch(metric="loss", mode="min", random_starts=3, seed=1)

    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")  # a snapshot after every event
    stale = tmp_path / "stale"
    stale.mkdir()
    folder = tmp_path / "runs" / "exp"
    tuner = tune.Tuner(
        report_three_steps, param_space={"x": tune.uniform(-2.0, 2.0)},
        tune_config=tune.TuneConfig(search_alg=make(), num_samples=6, max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path / "runs"),
                                  storage_filesystem=crash_safe_filesystem(),
                                  callbacks=[KeepStaleSnapshot(folder, stale)]))
    first = tuner.fit()
    assert len(first) == 6 and not first.errors
    old_searcher = make()
    old_searcher.restore(str(newest(stale, "searcher-state-*.pkl")))
    assert len(old_searcher.observations) < 6, "the copied snapshot should be older than the run's end"
    for file in stale.iterdir():  # the snapshot set now mixes two moments, as a kill during Ray's copy leaves it
        shutil.copy(file, folder / file.name)

    restored = tune.Tuner.restore(str(folder), report_three_steps,
                                  storage_filesystem=crash_safe_filesystem()).fit()

    final_losses = {r.metrics["trial_id"]: r.metrics["loss"] for r in restored}
    assert len(final_losses) == 6, "no trial may run beyond num_samples"
    searcher = make()
    searcher.restore(str(newest(folder, "searcher-state-*.pkl")))
    assert {o.trial_id: o.loss for o in searcher.observations} == pytest.approx(final_losses)
    assert searcher.pending_configs == []


def test_a_trial_table_older_than_rays_trial_counter_still_gets_num_samples_trials(ray_session, tmp_path,
                                                                                    monkeypatch):
    """The other direction: the trial table is a step older than Ray's counter file, so Ray would end the run
    short of num_samples; tunekit's schedulers realign the counter to the table."""
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")
    stale = tmp_path / "stale"
    stale.mkdir()
    folder = tmp_path / "runs" / "exp"
    tuner = tune.Tuner(
        report_three_steps, param_space={"x": tune.uniform(-2.0, 2.0)},
        tune_config=tune.TuneConfig(search_alg=GPEISearch(metric="loss", mode="min", random_starts=3, seed=1),
                                    scheduler=ASHAScheduler(metric="loss", mode="min", max_t=3),
                                    num_samples=6, max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path / "runs"),
                                  storage_filesystem=crash_safe_filesystem(),
                                  callbacks=[KeepStaleSnapshot(folder, stale, ("experiment_state-*.json",))]))
    assert len(tuner.fit()) == 6
    (old_table,) = stale.iterdir()
    assert len(trial_table(str(stale))) < 6, "the copied table should be older than the run's end"
    shutil.copy(old_table, folder / old_table.name)

    restored = tune.Tuner.restore(str(folder), report_three_steps,
                                  storage_filesystem=crash_safe_filesystem()).fit()

    assert len(restored) == 6
    assert all(result.metrics.get("training_iteration") for result in restored)
