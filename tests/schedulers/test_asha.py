"""ASHAScheduler: Ray's decisions on recorded traces, NaN robustness, promotion invariants, real Tuner runs."""

import math
import pickle
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ray.train import Checkpoint
from ray.train._internal.session import _TrainingResult
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from tunekit._ray_snapshot import TrialRecord
from tunekit.schedulers import ASHAScheduler
from tunekit.schedulers.asha import linear_percentile

from sched_support import BAD_LRS, GOOD_LRS, fit, make_trace, replay

CONTINUE, PAUSE, STOP = TrialScheduler.CONTINUE, TrialScheduler.PAUSE, TrialScheduler.STOP


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6) | st.sampled_from([0.0, 0.25, 1.0]), min_size=1, max_size=30),
       st.sampled_from([1.5, 2, 3, 4, 7]))
def test_linear_percentile_is_numpys(values, reduction_factor):
    q = (1 - 1 / reduction_factor) * 100
    assert linear_percentile(sorted(values), q / 100) == np.nanpercentile(values, q)


ARGS = [
    dict(max_t=100, grace_period=1, reduction_factor=4),
    dict(max_t=30, grace_period=2, reduction_factor=3),
    dict(max_t=27, grace_period=1, reduction_factor=3, brackets=3),
    dict(max_t=16, grace_period=1, reduction_factor=2, stop_last_trials=False),
    dict(max_t=20, grace_period=3, reduction_factor=2.5, brackets=2),
]


@pytest.mark.parametrize("args", ARGS)
@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("kind", ["dense", "sparse", "ties"])
def test_stopping_rule_decides_as_rays_asha(args, mode, kind):
    events = make_trace(zlib.crc32(f"{kind}{mode}{args}".encode()), sparse=kind == "sparse", ties=kind == "ties")
    ray_asha = AsyncHyperBandScheduler(metric="score", mode=mode, **args)
    ours = ASHAScheduler(metric="score", mode=mode, **args)
    decisions = replay([ray_asha, ours], events, seed=len(events))
    assert STOP in decisions and CONTINUE in decisions
    assert ours.debug_string().count("t=") == sum(len(b._rungs) for b in ray_asha._brackets)


def test_rung_at_max_t_is_kept_where_rays_log_ratio_rounds_down():
    """log(1000)/log(10) = 2.9999999999999996: Ray drops the rung at 1000, tunekit keeps it."""
    args = dict(metric="score", mode="max", max_t=1000, reduction_factor=10)
    assert [m for m, _ in AsyncHyperBandScheduler(**args)._brackets[0]._rungs] == [100, 10, 1]
    assert "t=1000" in ASHAScheduler(**args).debug_string()


@pytest.mark.parametrize("bad", [float("nan"), None, float("inf"), float("-inf")])
@pytest.mark.parametrize("mode", ["max", "min"])
def test_non_finite_trial_is_stopped_and_changes_no_other_fate(bad, mode):
    events = make_trace(7, n_trials=20, ties=True)
    bad_events = [(20, t, bad, t == 30) for t in range(1, 31)]
    mixed = [e for pair in zip(events, bad_events) for e in pair] + events[len(bad_events):]
    args = dict(metric="score", mode=mode, max_t=40, grace_period=1, reduction_factor=3)
    alone = ASHAScheduler(**args)
    with_bad = ASHAScheduler(**args)
    expected = replay([alone], events)
    got = replay([with_bad], mixed)
    assert [d for d, e in zip(got, mixed) if e[0] == 20 and d] == [STOP]
    assert [d for d, e in zip(got, mixed) if e[0] != 20] == expected
    assert with_bad.debug_string().splitlines()[1:] == alone.debug_string().splitlines()[1:]
    assert with_bad.decisions[[d.trial_id for d in with_bad.decisions].index("t020")].reason == "metric not finite"


def test_missing_keys_and_bad_arguments_raise_clear_errors():
    scheduler = ASHAScheduler(metric="acc", mode="max")
    trial = Trial("__fake", stub=True, trial_id="x")
    scheduler.on_trial_add(None, trial)
    with pytest.raises(ValueError, match="'acc'.*metric.*'loss'"):
        scheduler.on_trial_result(None, trial, {"training_iteration": 1, "loss": 0.3})
    with pytest.raises(ValueError, match="'epoch'.*time_attr"):
        ASHAScheduler(time_attr="epoch", metric="acc", mode="max").on_trial_result(
            None, trial, {"training_iteration": 1, "acc": 0.3})
    with pytest.raises(TypeError, match="acc='high'"):
        scheduler.on_trial_result(None, trial, {"training_iteration": 1, "acc": "high"})
    nothing_reported = {"training_iteration": 1, "done": True, "config/lr": 0.1, "trial_id": "x"}
    assert scheduler.on_trial_result(None, trial, nothing_reported) == CONTINUE
    for bad in [dict(mode="best"), dict(reduction_factor=1), dict(grace_period=0), dict(max_t=5, grace_period=6),
                dict(brackets=0), dict(rule="halving"), dict(rule="promotion", stop_last_trials=False)]:
        with pytest.raises((ValueError, TypeError), match=next(iter(bad))):
            ASHAScheduler(**bad)
    unset = ASHAScheduler()
    with pytest.raises(ValueError, match="metric=None, mode=None"):
        unset.on_trial_add(None, trial)
    assert unset.set_search_properties("acc", "max") and unset.metric == "acc" and unset.mode == "max"
    assert not ASHAScheduler(metric="a", mode="min").set_search_properties("b", "max")


def test_save_restore_round_trips_mid_run(tmp_path):
    events = make_trace(3, ties=True)
    half = len(events) // 2
    args = dict(metric="score", mode="max", max_t=40, reduction_factor=2, brackets=2)
    expected = replay([ASHAScheduler(**args)], events)
    first, second, ended = ASHAScheduler(**args), ASHAScheduler(**args), set()
    decisions = replay([first], events[:half], ended=ended)
    first.save(str(tmp_path / "asha.pkl"))
    second.restore(str(tmp_path / "asha.pkl"))
    assert second.debug_string() == first.debug_string()
    decisions += replay([second], events[half:], ended=ended, add=False)
    assert decisions == expected
    assert pickle.loads(pickle.dumps(second.decisions)) == second.decisions


class SimulatedController:
    """Just the TuneController calls a scheduler makes (get_trials, get_live_trials, stop_trial, search_alg),
    over real Trial objects, with a searcher that hands out ``n_trials`` while fewer than ``limit`` are live."""

    def __init__(self, scheduler, n_trials, limit):
        self.scheduler, self.n_trials, self.limit, self.trials = scheduler, n_trials, limit, []
        self.search_alg = self

    def is_finished(self):
        return len(self.trials) == self.n_trials

    def add_trials(self):
        while not self.is_finished() and len(self.get_live_trials()) < self.limit:
            trial = Trial("__fake", stub=True, trial_id=f"t{len(self.trials):03d}")
            self.trials.append(trial)
            self.scheduler.on_trial_add(self, trial)

    def get_trials(self):
        return self.trials

    def get_live_trials(self):
        return {t for t in self.trials if not t.is_finished()}

    def stop_trial(self, trial):
        self.scheduler.on_trial_remove(self, trial)
        trial.set_status(Trial.TERMINATED)


def checkpoint(trial, time):
    trial.run_metadata.checkpoint_manager.register_checkpoint(
        _TrainingResult(checkpoint=Checkpoint("/tmp"), metrics={"training_iteration": time}))


def run_promotion(curves, reduction_factor, grace_period, max_t, workers, limit, picks):
    """Drive promotion-mode ASHA like Ray's loop; check each promotion against an independent rung table."""
    scheduler = ASHAScheduler(metric="score", mode="max", max_t=max_t, grace_period=grace_period,
                              reduction_factor=reduction_factor, rule="promotion")
    control = SimulatedController(scheduler, len(curves), limit)
    progress, rungs, promoted = {}, {}, set()
    milestones = [grace_period * reduction_factor ** k for k in range(20)
                  if grace_period * reduction_factor ** k < max_t]

    def check_promotion(trial_id, stalled):
        time = progress[trial_id]
        rung = rungs[max(m for m in milestones if m <= time)]
        allowed = len(rung) // reduction_factor
        if stalled:
            allowed = max(allowed, 1)
        better = sum(v > rung[trial_id] for v in rung.values())
        assert better < allowed, (trial_id, time, rung)
        assert (trial_id, time) not in promoted
        promoted.add((trial_id, time))

    for step in range(len(curves) * (max_t + 5) * 3):
        control.add_trials()
        running = [t for t in control.trials if t.status == Trial.RUNNING]
        while len(running) < workers:
            stalled = not running and not any(t.status == Trial.PENDING for t in control.trials)
            chosen = scheduler.choose_trial_to_run(control)
            if chosen is None:
                break
            if chosen.status == Trial.PAUSED:
                check_promotion(chosen.trial_id, stalled)
            chosen.set_status(Trial.RUNNING)
            running.append(chosen)
        if not running:
            if not control.get_live_trials() and control.is_finished():
                return scheduler, progress
            continue
        trial = running[picks[step % len(picks)] % len(running)]
        index = int(trial.trial_id[1:])
        time = progress[trial.trial_id] = progress.get(trial.trial_id, 0) + 1
        assert time <= max_t
        value = curves[index][min(time, len(curves[index])) - 1]
        if time in milestones and not (value is None or math.isnan(value)):
            rungs.setdefault(time, {})[trial.trial_id] = value
        action = scheduler.on_trial_result(control, trial, {"training_iteration": time, "score": value})
        if action == CONTINUE and time in milestones and value is not None and not math.isnan(value):
            check_promotion(trial.trial_id, stalled=False)
        if action == STOP:
            scheduler.on_trial_complete(control, trial, {"training_iteration": time, "score": value})
            trial.set_status(Trial.TERMINATED)
        elif action == PAUSE:
            checkpoint(trial, time)
            trial.set_status(Trial.PAUSED)
    raise AssertionError("promotion-mode ASHA did not finish: a trial was starved or the run deadlocked")


curve_values = st.sampled_from([0.0, 0.5, 1.0]) | st.floats(-10, 10) | st.just(float("nan"))


@settings(max_examples=60, deadline=None)
@given(curves=st.lists(st.lists(curve_values, min_size=1, max_size=30), min_size=1, max_size=25),
       reduction_factor=st.sampled_from([2, 3, 4]), grace_period=st.sampled_from([1, 2]),
       max_t=st.integers(2, 30), workers=st.integers(1, 4), limit=st.sampled_from([3, 6, 100]),
       picks=st.lists(st.integers(0, 7), min_size=1, max_size=10))
def test_promotion_respects_rungs_and_finishes(curves, reduction_factor, grace_period, max_t, workers, limit, picks):
    max_t = max(max_t, grace_period)
    scheduler, progress = run_promotion(curves, reduction_factor, grace_period, max_t, workers, limit, picks)
    assert "0 paused" in scheduler.debug_string()
    if not any(math.isnan(v) for curve in curves for v in curve):
        assert max(progress.values()) == max_t, "the best of each rung goes on, so someone reaches max_t"


def test_promotion_refuses_a_trainable_without_checkpoints():
    scheduler = ASHAScheduler(metric="score", mode="max", max_t=4, reduction_factor=2, rule="promotion")
    control = SimulatedController(scheduler, 2, 2)
    control.add_trials()
    for trial in control.trials:
        trial.set_status(Trial.RUNNING)
        assert scheduler.on_trial_result(control, trial, {"training_iteration": 1, "score": 0.5}) == PAUSE
        trial.set_status(Trial.PAUSED)
    with pytest.raises(ValueError, match="no checkpoint.*tune.get_checkpoint"):
        scheduler.choose_trial_to_run(control)


def test_tuner_stopping_asha_stops_bad_trials_keeps_good(ray_session, tmp_path):
    lrs = [lr for pair in zip(GOOD_LRS[:3], BAD_LRS[:3]) for lr in pair]
    scheduler = ASHAScheduler(max_t=6, grace_period=1, reduction_factor=2)
    rows = fit(scheduler, tmp_path, lrs, epochs=6, concurrent=1)
    epochs = {lr: rows[lr][-1][0] for lr in lrs}
    assert all(epochs[lr] == 1 for lr in BAD_LRS[:3]), epochs
    best = max(lrs, key=lambda lr: max(row[2] for row in rows[lr]))
    assert best in GOOD_LRS and epochs[best] == 6 and rows[best][-1][2] > 0.8, rows
    assert {d.action for d in scheduler.decisions} == {CONTINUE, STOP}


def test_tuner_promotion_asha_resumes_paused_trials_from_checkpoints(ray_session, tmp_path):
    lrs = [BAD_LRS[0], GOOD_LRS[3], BAD_LRS[1], GOOD_LRS[0]]
    scheduler = ASHAScheduler(max_t=4, grace_period=1, reduction_factor=2, rule="promotion")
    rows = fit(scheduler, tmp_path, lrs, epochs=4, concurrent=2)
    for lr in lrs:
        epochs = [row[0] for row in rows[lr]]
        assert epochs == list(range(1, len(epochs) + 1)), (lr, epochs)
        assert [row[1] for row in rows[lr]] == epochs
    paused = {d.trial_id for d in scheduler.decisions if d.action == PAUSE}
    resumed = {d.trial_id for d in scheduler.decisions if d.action == "PROMOTE" and d.trial_id in paused}
    assert resumed, scheduler.decisions
    epochs = {lr: len(rows[lr]) for lr in lrs}
    assert max(epochs.values()) == 4 and all(epochs[lr] < 4 for lr in BAD_LRS[:2]), epochs


def test_tuner_promotion_without_checkpoints_fails_clearly(ray_session, tmp_path):
    scheduler = ASHAScheduler(max_t=2, grace_period=1, reduction_factor=2, rule="promotion")
    with pytest.raises(ValueError, match="no checkpoint.*tune.get_checkpoint"):
        fit(scheduler, tmp_path, [0.05], epochs=2, concurrent=1, checkpoint=False)


def test_decision_log_stays_bounded_while_counting_every_decision(monkeypatch):
    """A long experiment must not grow the scheduler's state with every result: only the most recent
    decisions are kept, the running count covers them all, and the saved state stays the same size."""
    import tunekit.schedulers._common as common

    monkeypatch.setattr(common, "DECISIONS_KEPT", 50)
    scheduler = ASHAScheduler(metric="score", mode="max", max_t=40, grace_period=1, reduction_factor=2)
    events, ended = make_trace(7, n_trials=80), set()
    replay([scheduler], events[:400], ended=ended)
    made_early, size_early = scheduler.decisions_made, len(pickle.dumps(scheduler.decisions))
    replay([scheduler], events[400:], ended=ended, add=False)
    assert len(scheduler.decisions) == 50 < made_early < scheduler.decisions_made
    assert len(pickle.dumps(scheduler.decisions)) <= 1.2 * size_early


class _Controller:
    """The three things ASHA's promotion rule asks of Ray's controller."""

    def __init__(self, trials, finished=False):
        self.trials = trials
        self.search_alg = type("Search", (), {"is_finished": lambda self: finished})()

    def get_live_trials(self):
        return [t for t in self.trials if not t.is_finished()]

    def get_trials(self):
        return self.trials


def test_after_restore_a_trial_waiting_at_a_rung_is_not_started_as_a_new_one():
    """Tuner.restore re-queues paused trials as PENDING; the promotion rule must keep them waiting (not run
    them past their rung unpromoted) and start the genuinely new trial, and finished trials take no bracket."""
    scheduler = ASHAScheduler(metric="score", mode="max", max_t=9, grace_period=1, reduction_factor=3,
                              rule="promotion")
    waiting, new, done = (Trial("__fake", stub=True, trial_id=name) for name in ("waiting", "new", "done"))
    done.status = Trial.TERMINATED
    for trial in (waiting, new, done):
        scheduler.on_trial_add(None, trial)
    assert "done" not in scheduler._bracket_of
    assert scheduler.on_trial_result(None, waiting, {"training_iteration": 1, "score": 0.5}) == PAUSE
    assert waiting.status == Trial.PENDING  # as Ray leaves it after a restore
    assert scheduler.choose_trial_to_run(_Controller([waiting, new, done])) is new
    new.status = Trial.RUNNING
    assert scheduler.choose_trial_to_run(_Controller([waiting, new, done])) is None


def test_restored_state_older_than_rays_trial_table_is_brought_to_it():
    """A kill during Ray's snapshot copy can leave the scheduler's state a step older than the trial table Ray
    resumes: ``reconcile`` records the rung results the state missed, keeps a trial the table holds PAUSED
    waiting at its rung (else it would run on unpromoted), and forgets trials the table never recorded."""
    def make():
        return ASHAScheduler(metric="score", mode="max", max_t=9, grace_period=1, reduction_factor=3,
                             rule="promotion")

    scheduler = make()
    first, second, unrecorded = (Trial("__fake", stub=True, trial_id=name) for name in ("first", "second", "gone"))
    for trial in (first, second, unrecorded):
        scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, first, {"training_iteration": 1, "score": 0.9}) == PAUSE
    stale = scheduler.state_bytes()  # taken before "second" reported
    assert scheduler.on_trial_result(None, second, {"training_iteration": 1, "score": 0.5}) == PAUSE
    table = [TrialRecord("first", Trial.PAUSED, {}, {"training_iteration": 1, "score": 0.9}),
             TrialRecord("second", Trial.PAUSED, {}, {"training_iteration": 1, "score": 0.5})]

    restored = make()
    restored.load_state_bytes(stale)
    assert restored._waiting == {"first": 0}
    restored.reconcile(table)
    assert restored._waiting == {"first": 0, "second": 0} and "gone" not in restored._bracket_of
    assert restored.debug_string() == scheduler.debug_string()
    restored.reconcile(table)
    assert restored._brackets[0].rungs[0].scores == {"first": 0.9, "second": 0.5}, "reconciling twice adds nothing"


def test_reconcile_counts_a_trial_the_table_shows_running_past_its_rung_as_promoted():
    """A trial promoted after the scheduler's snapshot (here on arrival) is RUNNING in Ray's table: the restored
    state must record it as promoted, so it equals the state the scheduler had at the table's moment."""
    def make():
        return ASHAScheduler(metric="score", mode="max", max_t=9, grace_period=1, reduction_factor=3,
                             rule="promotion")

    scheduler = make()
    trials = [Trial("__fake", stub=True, trial_id=name) for name in ("a", "b", "c")]
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, trials[0], {"training_iteration": 1, "score": 0.5}) == PAUSE
    stale = scheduler.state_bytes()
    assert scheduler.on_trial_result(None, trials[1], {"training_iteration": 1, "score": 0.9}) == PAUSE
    assert scheduler.on_trial_result(None, trials[2], {"training_iteration": 1, "score": 0.95}) == CONTINUE
    restored = make()
    restored.load_state_bytes(stale)
    restored.reconcile([TrialRecord("a", Trial.PAUSED, {}, {"training_iteration": 1, "score": 0.5}),
                        TrialRecord("b", Trial.PAUSED, {}, {"training_iteration": 1, "score": 0.9}),
                        TrialRecord("c", Trial.RUNNING, {}, {"training_iteration": 1, "score": 0.95})])
    assert restored.debug_string() == scheduler.debug_string()
    assert restored._waiting == {"a": 0, "b": 0} and restored._brackets[0].rungs[0].promoted == {"c"}
