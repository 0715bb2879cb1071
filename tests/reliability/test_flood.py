"""Flood, the fast version: 120 trivial trials, 4 at a time, through NevergradSearch + ASHAScheduler + the
TensorBoard callback with the scheduler's decisions, measured by the flood benchmark's own probe
(benchmarks/reliability_flood.py; the full-size run with every searcher is there).

The flood must complete with every trial learned and judged, leave no per-trial leftovers in the searcher or
the scheduler, and let only the algorithms' own data grow with the number of trials.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

FLOOD_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "reliability_flood.py"
TRIALS = 120


def _load_flood():
    spec = importlib.util.spec_from_file_location("reliability_flood", FLOOD_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reliability_flood"] = module  # it registers itself with Ray's cloudpickle while loading
    spec.loader.exec_module(module)
    return module


flood_module = _load_flood()


@pytest.fixture(scope="module")
def flood(ray_session, tmp_path_factory):
    """One flood of TRIALS trials (ASHA stopping rule, NevergradSearch("RandomSearch"), TensorBoard)."""
    storage = tmp_path_factory.mktemp("flood")
    return flood_module.run_flood("asha_stopping", TRIALS, str(storage), seed=0, marks=[30, 60, 90, TRIALS])


def _sizes(result, which: str) -> dict:
    """Container sizes at the last point during the run ("during") or after the experiment ended ("end")."""
    during = [s for s in result.snapshots if not s.end]
    return (during[-1] if which == "during" else result.snapshots[-1]).sizes


def test_every_trial_finishes_is_learned_and_judged(flood):
    assert (flood.finished, flood.errored) == (TRIALS, 0)
    end = _sizes(flood, "end")
    assert end["searcher._state.observations"] == TRIALS
    assert end["searcher._optimizer.archive.bytesdict"] == TRIALS
    # every trial reaches the first rung (t=1) exactly once; later rungs hold fewer
    assert end["scheduler._brackets[*].rungs[*].scores"] >= TRIALS
    answered = [call for call in flood.suggest.calls if call[2]]
    assert len(answered) == TRIALS
    runs = os.listdir(Path(flood.experiment_path) / "tensorboard")
    assert len([run for run in runs if run.startswith("curve_reports")]) == TRIALS


def test_nothing_per_trial_is_left_behind_once_trials_end(flood):
    end = _sizes(flood, "end")
    leftovers = {path: end[path] for path in ("searcher._state.live", "searcher._state.last_loss",
                                              "searcher._candidates", "scheduler._bracket_of", "scheduler._waiting",
                                              "scheduler._paused_at", "callback._writers", "callback._pending",
                                              "callback._resuming")}
    assert leftovers == dict.fromkeys(leftovers, 0)


def test_only_the_algorithms_data_grows_with_the_trials(flood):
    rows = flood_module.growth(flood)
    growing = {path for path, _, _, verdict in rows if verdict != "bounded"}
    assert {"searcher._state.observations", "scheduler._brackets[*].rungs[*].scores"} <= growing
    assert not {path for path, _, _, verdict in rows if verdict == "UNBOUNDED"}


def test_saved_state_grows_at_most_linearly(flood):
    """What Ray pickles with every experiment checkpoint: bytes per trial must not rise through the run."""
    during = [s for s in flood.snapshots if not s.end]
    first, last = during[0], during[-1]
    assert last.searcher_bytes / last.count <= 1.2 * first.searcher_bytes / first.count
    assert last.scheduler_bytes / last.count <= 1.2 * first.scheduler_bytes / first.count


def test_tensorboard_writers_and_threads_stay_bounded_during_the_flood(flood):
    during = [s for s in flood.snapshots if not s.end]
    assert during[-1].sizes["callback._writers"] <= flood_module.CONCURRENT + 1
    assert during[-1].threads - during[0].threads <= 10


def test_tensorboard_replay_records_are_dropped_when_trials_end(flood):
    assert _sizes(flood, "end").get("callback._logged[*][*]", 0) <= 3 * flood_module.CONCURRENT
