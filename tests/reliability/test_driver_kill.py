"""Driver killed: SIGKILL the process driving a Tune run (and the Ray it started), restore, finish; nothing lost.

The real kills run kill_child.py in subprocesses with their own Ray (kill_harness.py spawns, kills, restores and
judges from the event log the child writes). Three runs go concurrently, one per searcher family, each with a
different kill: while trials are paused (GP-EI + ASHA promotion), inside the searcher's ``save`` (nevergrad +
median stopping), at a random moment (DyHPO). The long sweep with many kill points per combination is
benchmarks/reliability_kill.py.

The save tests kill a forked process inside ``save`` itself: the previous state must stay readable.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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


#: One real kill per searcher family: GP-EI while ASHA holds trials paused, nevergrad inside the searcher's
#: save (median stopping), DyHPO at a random moment.
PLANS = {
    "gp_ei+asha_promotion": [("paused", 5.0)],
    "nevergrad+median": [("save", 30.0)],
    "dyhpo+dyhpo": [("random", 1.5)],
}


@pytest.fixture(scope="module")
def kill_runs(tmp_path_factory):
    """The three real kill-and-restore runs, concurrently (each driver life starts its own Ray)."""
    root = tmp_path_factory.mktemp("driver_kill")
    with ThreadPoolExecutor(len(PLANS)) as pool:
        futures = {name: pool.submit(run_with_kills, root / name.replace("+", "_"), name, kills, num_samples=4,
                                     steps=3, step_s=0.25, seed=3, snapshot_s="1", life_timeout=150)
                   for name, kills in PLANS.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("combination", list(PLANS))
def test_killed_driver_restores_and_finishes(kill_runs, combination):
    report = kill_runs[combination]
    assert report.errors == []
    assert report.kills_injected == report.kills_survived == 1
    assert report.results_lost == []
    assert report.final_trials == report.asked_trials
    assert report.paused_from_scratch == []


def test_paused_trials_resume_from_their_checkpoints_with_the_scheduler_state(kill_runs):
    report = kill_runs["gp_ei+asha_promotion"]
    assert report.paused_resumed >= 1 and report.paused_from_scratch == []
    # Ray never saves a scheduler itself: the restored ASHA knows the trial it had paused at a rung
    (restored,) = report.scheduler_restored
    assert not re.search(r"\b0 paused", restored) and "t=1: 0 trials" not in restored


def test_kill_inside_save_restores_the_previous_snapshot(kill_runs):
    report = kill_runs["nevergrad+median"]
    # the save in progress is lost, the snapshot before it is what comes back (a prefix of what was observed)
    assert all(not d["restored"] or d["at_kill"][:len(d["restored"])] == d["restored"]
               for d in report.observations_differing)
