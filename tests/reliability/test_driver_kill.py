"""Driver killed: SIGKILL the process driving a Tune run (and the Ray it started), restore, finish; nothing lost.

The real kills run kill_child.py in a subprocess with its own Ray (kill_harness.py spawns, kills, restores and
judges from the event log the child writes): one GP-EI + ASHA-promotion run killed twice, while trials are
paused and inside the searcher's ``save``. Every Ray start costs the suite's 2 cores ~10 s, so the kills of the
other searchers and schedulers (nevergrad, DyHPO, median stopping, FIFO; 11-12 kill points each) are in the
sweep ``benchmarks/reliability.py kill``, whose figures are in benchmarks/results/reliability.md.

The save tests kill a forked process inside ``save`` itself: the previous state must stay readable.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from ray.tune.experiment import Trial

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kill_harness import run_with_kills  # noqa: E402

from tunekit.schedulers.asha import ASHAScheduler  # noqa: E402
from tunekit.searchers.gp_ei import GPEISearch  # noqa: E402
from tunekit.searchers.nevergrad import NevergradSearch  # noqa: E402
from tunekit.space import Space  # noqa: E402

SPACE = {"x": {"type": "float", "low": -2.0, "high": 2.0}, "c": {"type": "categorical", "values": ["a", "b"]}}


def loss(config: dict) -> float:
    return (config["x"] - 0.3) ** 2 + (config["c"] == "b")


def killed_inside_save(save, path: Path, block) -> None:
    """Run ``save(path)`` in a forked process after ``block(marker)`` made a part of the save announce itself
    (touch ``marker``) and hang; SIGKILL the process once it hangs there."""
    marker = path.with_suffix(".inside")

    def child():
        block(marker)
        save(str(path))

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    deadline = time.time() + 30
    while not marker.exists():
        assert time.time() < deadline and process.is_alive(), "the forked save never got going"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    assert process.exitcode == -signal.SIGKILL


class HangWhenPickled:
    """An attribute that touches ``marker`` and hangs while the object holding it is pickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        self.marker.touch()
        time.sleep(60)
        return (str, ())


def hang_in_pickling(obj, attribute: str):
    def block(marker: Path) -> None:
        setattr(obj, attribute, HangWhenPickled(marker))
    return block


def drive(searcher, first: int, count: int) -> None:
    for number in range(first, first + count):
        config = searcher.suggest(f"t{number}")
        searcher.on_trial_complete(f"t{number}", {"loss": loss(config)})


@pytest.mark.parametrize("make", [lambda: GPEISearch(Space.from_dict(SPACE), "loss", "min", random_starts=3, seed=1),
                                  lambda: NevergradSearch("OnePlusOne", Space.from_dict(SPACE), "loss", "min", seed=1)],
                         ids=["gp_ei", "nevergrad"])
def test_searcher_killed_inside_save_leaves_the_previous_state(tmp_path, make):
    path = tmp_path / "searcher.pkl"
    searcher = make()
    drive(searcher, 0, 4)
    searcher.save(str(path))
    saved = searcher.observations
    drive(searcher, 4, 2)
    # the searcher's state holds its observations: one that hangs when pickled stops the save half-way
    searcher._state.observations.append(None)
    killed_inside_save(searcher.save, path, lambda marker: searcher._state.observations.__setitem__(
        -1, HangWhenPickled(marker)))
    restored, again = make(), make()
    restored.restore(str(path))
    again.restore(str(path))
    assert restored.observations == saved
    assert restored.suggest("next") == again.suggest("next")


def test_scheduler_killed_inside_save_leaves_the_previous_state(tmp_path):
    path = tmp_path / "asha.pkl"

    def make():
        return ASHAScheduler(time_attr="step", metric="loss", mode="min", max_t=4, grace_period=1, reduction_factor=2)

    scheduler = make()
    for number in range(6):
        trial = Trial("objective", trial_id=f"t{number}", stub=True)
        scheduler.on_trial_add(None, trial)
        scheduler.on_trial_result(None, trial, {"step": 1, "loss": float(number)})
        if number == 2:
            scheduler.save(str(path))
            saved = scheduler.debug_string()
    assert scheduler.debug_string() != saved
    killed_inside_save(scheduler.save, path, hang_in_pickling(scheduler, "_hang"))
    restored = make()
    restored.restore(str(path))
    assert restored.debug_string() == saved


#: Killed while ASHA holds trials paused, then (after the restore) inside the searcher's save.
KILLS = [("paused", 5.0), ("save", 30.0)]


@pytest.fixture(scope="module")
def kill_run(tmp_path_factory):
    """The real kill-and-restore run (each driver life starts its own Ray)."""
    return run_with_kills(tmp_path_factory.mktemp("driver_kill"), "gp_ei+asha_promotion", KILLS, num_samples=4,
                          steps=3, step_s=0.25, seed=3, snapshot_s="1", life_timeout=150)


def test_killed_driver_restores_and_finishes(kill_run):
    assert kill_run.errors == []
    assert kill_run.kills_injected == kill_run.kills_survived == len(KILLS)
    assert kill_run.results_lost == []
    assert kill_run.final_trials == kill_run.asked_trials
    assert kill_run.paused_from_scratch == []


def test_paused_trials_resume_from_their_checkpoints_with_the_scheduler_state(kill_run):
    assert kill_run.paused_resumed >= 1 and kill_run.paused_from_scratch == []
    # Ray never saves a scheduler itself: the restored ASHA knows the trial it had paused at a rung
    restored = kill_run.scheduler_restored[0]
    assert not re.search(r"\b0 paused", restored) and "t=1: 0 trials" not in restored


def test_kill_inside_save_restores_the_previous_snapshot(kill_run):
    # the save in progress is lost, the snapshot before it is what comes back (a prefix of what was observed)
    assert all(not d["restored"] or d["at_kill"][:len(d["restored"])] == d["restored"]
               for d in kill_run.observations_differing)
