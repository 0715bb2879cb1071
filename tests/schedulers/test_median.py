"""MedianStoppingScheduler: Ray's decisions on recorded traces, NaN robustness, state, a real Tuner run."""

import zlib

import numpy as np
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import MedianStoppingRule, TrialScheduler

from tunekit.schedulers import MedianStoppingScheduler
from tunekit.schedulers.median import median_without

from sched_support import BAD_LRS, GOOD_LRS, fit, make_trace, replay

CONTINUE, PAUSE, STOP = TrialScheduler.CONTINUE, TrialScheduler.PAUSE, TrialScheduler.STOP


class RayMedianCountingOnce(MedianStoppingRule):
    """Ray's rule without its double count: its ``on_trial_complete`` appends the trial's last result again
    when ``on_trial_result`` already saw it, which tunekit counts once. Everything else is Ray's code."""

    def on_trial_complete(self, tune_controller, trial, result):
        seen = self._results.get(trial)
        if not seen or seen[-1][self._time_attr] != result[self._time_attr]:
            super().on_trial_complete(tune_controller, trial, result)


def ray_median(**args):
    """Ray's rule with the arguments tunekit maps to: never yield (min_time_slice=inf), check every result."""
    return RayMedianCountingOnce(time_attr="training_iteration", metric="score", min_time_slice=float("inf"), **args)


def interleave(one_trial, events):
    """``one_trial``'s events alternating with the first of ``events``, then the rest of ``events``."""
    return [e for pair in zip(one_trial, events) for e in pair] + events[len(one_trial):]


def test_median_without_one_value_is_numpys():
    rng = np.random.default_rng(0)
    for size in range(1, 12):
        values = sorted(rng.integers(0, 4, size).astype(float).tolist())
        for own in values:
            rest = list(values)
            rest.remove(own)
            if rest:
                assert median_without(values, own) == np.median(rest)
        assert median_without(values, None) == np.median(values)


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("kind", ["dense", "sparse", "ties"])
@pytest.mark.parametrize("grace_period, min_samples_required, hard_stop",
                         [(1, 3, True), (4, 1, True), (2.5, 5, False), (0, 2, True)])
def test_decides_as_rays_median_stopping_rule(mode, kind, grace_period, min_samples_required, hard_stop):
    args = dict(mode=mode, grace_period=grace_period, min_samples_required=min_samples_required, hard_stop=hard_stop)
    seed = zlib.crc32(f"{mode}{kind}{grace_period}".encode())
    events = make_trace(seed, n_trials=30, max_len=25, sparse=kind == "sparse", ties=kind == "ties")
    ours = MedianStoppingScheduler(metric="score", **args)
    decisions = replay([ray_median(**args), ours], events)
    assert (STOP if hard_stop else PAUSE) in decisions and CONTINUE in decisions
    assert "median at training_iteration=" in ours.debug_string()


def test_repeated_notifications_of_a_last_result_count_once():
    """Ray's controller passes a finished function trainable's last result again (done=True) and once more to
    on_trial_complete; the other trials' decisions must be those of a trace without the repeats."""
    events = make_trace(11, n_trials=25, max_len=20, sparse=True, ties=True)
    repeated = []
    for event in events:
        repeated.append(event)
        if event[3]:
            repeated[-1] = event[:3] + (False,)
            repeated.append(event)
    expected = replay([MedianStoppingScheduler(metric="score", mode="max")], events)
    got = replay([MedianStoppingScheduler(metric="score", mode="max")], repeated)
    repeats = [e[:3] == before[:3] for e, before in zip(repeated, [()] + repeated)]
    assert [d for d, repeat in zip(got, repeats) if not repeat] == expected


@pytest.mark.parametrize("bad", [float("nan"), None, float("inf"), float("-inf")])
@pytest.mark.parametrize("mode", ["max", "min"])
def test_non_finite_trial_is_stopped_and_changes_no_other_fate(bad, mode):
    """Ray 2.60 keeps an inf trial running for ever and crashes on None; tunekit stops it and nobody else."""
    events = make_trace(5, n_trials=20, max_len=25)
    mixed = interleave([(20, t, bad, t == 25) for t in range(1, 26)], events)
    alone = MedianStoppingScheduler(metric="score", mode=mode, grace_period=2, min_samples_required=2)
    with_bad = MedianStoppingScheduler(metric="score", mode=mode, grace_period=2, min_samples_required=2)
    expected = replay([alone], events)
    got = replay([with_bad], mixed)
    assert [d for d, e in zip(got, mixed) if e[0] == 20 and d] == [CONTINUE, STOP]
    assert [d for d, e in zip(got, mixed) if e[0] != 20] == expected
    assert STOP in expected and with_bad.decisions[0].reason == "metric not finite"


def test_a_trial_turning_nan_counts_as_if_it_had_ended_before():
    events = make_trace(8, n_trials=15, max_len=20)
    diverging = interleave([(15, t, 0.1 * t if t < 6 else float("nan"), t == 20) for t in range(1, 21)], events)
    ended = interleave([(15, t, 0.1 * t, t == 5) for t in range(1, 6)], events)
    args = dict(metric="score", mode="max", min_samples_required=2)
    first = replay([MedianStoppingScheduler(**args)], diverging)
    second = replay([MedianStoppingScheduler(**args)], ended)
    assert [d for d, e in zip(first, diverging) if e[0] != 15] == [d for d, e in zip(second, ended) if e[0] != 15]


def test_eval_interval_spaces_the_checks():
    events = make_trace(2, n_trials=30, max_len=25)
    scheduler = MedianStoppingScheduler(metric="score", mode="max", grace_period=2, eval_interval=3,
                                        min_samples_required=2)
    replay([scheduler], events)
    stops = [d.time for d in scheduler.decisions if d.action == STOP]
    assert stops and all((t - 2) % 3 == 0 for t in stops), stops


def test_missing_keys_bad_arguments_and_search_properties():
    scheduler = MedianStoppingScheduler(metric="loss", mode="min")
    trial = Trial("__fake", stub=True, trial_id="x")
    with pytest.raises(ValueError, match="'loss'.*metric.*'acc'"):
        scheduler.on_trial_result(None, trial, {"training_iteration": 1, "acc": 0.3})
    with pytest.raises(ValueError, match="'step'.*time_attr"):
        MedianStoppingScheduler(time_attr="step", metric="loss", mode="min").on_trial_result(
            None, trial, {"training_iteration": 1, "loss": 0.3})
    for bad in [dict(min_samples_required=0), dict(grace_period=-1), dict(eval_interval="1"), dict(mode="up")]:
        with pytest.raises((ValueError, TypeError), match=next(iter(bad))):
            MedianStoppingScheduler(**bad)
    unset = MedianStoppingScheduler()
    with pytest.raises(ValueError, match="tune.TuneConfig"):
        unset.on_trial_add(None, trial)
    assert unset.set_search_properties("loss", "min") and (unset.metric, unset.mode) == ("loss", "min")


def test_save_restore_round_trips_mid_run(tmp_path):
    events = make_trace(4, n_trials=25, max_len=20)
    half = len(events) // 2
    args = dict(metric="score", mode="min", min_samples_required=2)
    expected = replay([MedianStoppingScheduler(**args)], events)
    first, second, ended = MedianStoppingScheduler(**args), MedianStoppingScheduler(**args), set()
    decisions = replay([first], events[:half], ended=ended)
    first.save(str(tmp_path / "median.pkl"))
    second.restore(str(tmp_path / "median.pkl"))
    assert second.debug_string() == first.debug_string()
    assert decisions + replay([second], events[half:], ended=ended, add=False) == expected


def test_tuner_median_stops_bad_trials_keeps_good(ray_session, tmp_path):
    lrs = GOOD_LRS[:2] + [BAD_LRS[0], GOOD_LRS[2], BAD_LRS[1], BAD_LRS[2]]
    scheduler = MedianStoppingScheduler(grace_period=2, min_samples_required=2)
    rows = fit(scheduler, tmp_path, lrs, epochs=5, concurrent=1)
    epochs = {lr: rows[lr][-1][0] for lr in lrs}
    assert all(epochs[lr] == 2 for lr in BAD_LRS[:3]) and all(epochs[lr] == 5 for lr in GOOD_LRS[:2]), epochs
    assert {d.action for d in scheduler.decisions} == {STOP} and "median at" in scheduler.debug_string()


def test_a_finished_trials_last_result_counts_once_unlike_ray():
    """Ray's controller passes a finished trial's last result three times (result, duplicate with done=True,
    on_trial_complete); Ray's rule averages all three, so B (6.0 > A's true average 5.0) is stopped by Ray."""
    a, b = (Trial("__fake", stub=True, trial_id=name) for name in "ab")
    outcomes = []
    for scheduler in (MedianStoppingRule(time_attr="training_iteration", metric="score", mode="max",
                                         grace_period=1, min_samples_required=1, min_time_slice=float("inf")),
                      MedianStoppingScheduler(metric="score", mode="max", min_samples_required=1)):
        for result in ({"training_iteration": 1, "score": 0.0}, {"training_iteration": 2, "score": 10.0},
                       {"training_iteration": 2, "score": 10.0, "done": True}):
            scheduler.on_trial_result(None, a, result)
        scheduler.on_trial_complete(None, a, {"training_iteration": 2, "score": 10.0, "done": True})
        scheduler.on_trial_result(None, b, {"training_iteration": 1, "score": 6.0})
        outcomes.append(scheduler.on_trial_result(None, b, {"training_iteration": 2, "score": 6.0}))
    assert outcomes == [STOP, CONTINUE]
