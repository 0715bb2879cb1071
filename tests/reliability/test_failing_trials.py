"""Failing trials, for real, under every tunekit searcher and scheduler.

Each configuration has a fate (tests/reliability/fail_fates.py): 20 % raise, 10 % report NaN or inf, 5 %
end without reporting the metric, 5 % hang (ended by ``tunekit.trainables.with_timeout``), the rest train.
Every run must complete with every trial in the ResultGrid (failures with their errors, finished trials
with their last result), the searcher must have recorded exactly the failed trials as failed and never
proposed a failed configuration again, and the scheduler's statistics must hold no NaN or inf.
"""

import csv
import itertools
import json
import math
import sys
import time
from pathlib import Path

import pytest
from ray import cloudpickle, tune

import fail_fates
from fail_fates import (ERRORING, ITERATIONS, TrialLog, configs_with_fates, failing_step, fate_of, flat,
                        never_finite)
from tunekit.experiment import load_experiment, run_experiment
from tunekit.schedulers import ASHAScheduler, DyHPOScheduler, MedianStoppingScheduler
from tunekit.searchers import DyHPOSearch, GPEISearch, NevergradSearch

CONTINUOUS = {"x": tune.uniform(0, 1), "y": tune.uniform(0, 1)}
FINITE = {"a": tune.choice(list(range(8))), "b": tune.choice(list(range(8)))}
CONTINUOUS_CANDIDATES = [{"x": i / 97, "y": (i * 37 % 97) / 97} for i in range(97)]
FINITE_CANDIDATES = [{"a": a, "b": b} for a, b in itertools.product(range(8), range(8))]
#: Each run forces one trial of each of its fates (points to evaluate): every searcher and every scheduler
#: meets a raise, a hang, a NaN or inf and a missing metric; each searcher meets all six failing fates.
MIX_A, MIX_B = ("raise", "nan", "silent", "hang"), ("raise", "inf_later", "no_metric", "hang")
DYHPO_POOL = 6
ERROR_TEXT = {"raise": "injected failure: fate 'raise'", "hang": "trial timed out",
              "silent": "ended without reporting the metric 'loss'", "no_metric": "['step'] without the metric 'loss'"}


def dyhpo_salt() -> int:
    """The first fate salt under which DyHPO's (seeded) pool holds a raise, a hang and a NaN or an inf."""
    pool = DyHPOSearch(space=CONTINUOUS, metric="loss", mode="min", num_configurations=DYHPO_POOL, seed=0)._dyhpo.pool
    for salt in range(500):
        fates = {fate_of(config, salt) for config in pool}
        if {"raise", "hang"} <= fates and fates & {"nan", "inf_later"}:
            return salt
    raise AssertionError("no salt gives DyHPO's pool the failure mix")


def scenario(name: str):
    """(searcher, scheduler, param_space, num_samples, expected number of trials, forced fates) of one run."""
    asha = dict(max_t=ITERATIONS, grace_period=1, reduction_factor=2)
    median = dict(grace_period=1, min_samples_required=2)
    if name == "gp_ei+asha_stopping":
        return (GPEISearch(points_to_evaluate=configs_with_fates(CONTINUOUS_CANDIDATES, MIX_A), random_starts=5,
                           seed=0), ASHAScheduler(**asha), CONTINUOUS, 6, 6, MIX_A)
    if name == "nevergrad+asha_promotion":
        return (NevergradSearch("OnePlusOne", points_to_evaluate=configs_with_fates(FINITE_CANDIDATES, MIX_B), seed=0),
                ASHAScheduler(**asha, rule="promotion"), FINITE, 6, 6, MIX_B)
    if name == "gp_ei+median_hard":
        return (GPEISearch(points_to_evaluate=configs_with_fates(FINITE_CANDIDATES, MIX_B), random_starts=5, seed=1),
                MedianStoppingScheduler(**median), FINITE, 6, 6, MIX_B)
    if name == "nevergrad+median_pause":
        return (NevergradSearch("TwoPointsDE", points_to_evaluate=configs_with_fates(CONTINUOUS_CANDIDATES, MIX_A),
                                seed=1), MedianStoppingScheduler(**median, hard_stop=False), CONTINUOUS, 6, 6, MIX_A)
    searcher = DyHPOSearch(max_epochs=ITERATIONS, num_configurations=DYHPO_POOL, seed=0)
    mix = ("raise", "hang")
    return searcher, DyHPOScheduler(searcher), {**CONTINUOUS, "salt": dyhpo_salt()}, 20, DYHPO_POOL, mix


def fit(searcher, scheduler, param_space, num_samples, tmp_path):
    cloudpickle.register_pickle_by_value(fail_fates)  # Ray's workers cannot import the tests' modules
    log = TrialLog()
    tuner = tune.Tuner(
        fail_fates.fate_trainable, param_space=param_space,
        tune_config=tune.TuneConfig(metric="loss", mode="min", search_alg=searcher, scheduler=scheduler,
                                    num_samples=num_samples, max_concurrent_trials=3, reuse_actors=True,
                                    trial_dirname_creator=lambda trial: trial.trial_id),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0, callbacks=[log]))
    return tuner.fit(), log


def check_results(results, log, expected_trials):
    """Every trial is in the ResultGrid: errors where the fate raised, hung or missed the metric, last results
    otherwise; the scheduler stopped a trial at its first NaN/inf."""
    by_id = {Path(result.path).name: result for result in results}
    assert len(results) == expected_trials and set(by_id) == set(log.configs)
    assert {trial_id for trial_id, result in by_id.items() if result.error} == log.errored
    for trial_id, config in log.configs.items():
        fate, reports = fate_of(flat(config), config.get("salt", 0)), log.losses.get(trial_id, [])
        result, fails_at = by_id[trial_id], 1 if fate in ("silent", "no_metric") else failing_step(flat(config))
        if result.error is not None:
            assert fate in ERRORING and ERROR_TEXT[fate] in str(result.error), (fate, result.error)
            assert len(reports) == fails_at - 1, (fate, reports)
        else:
            assert fate not in ERRORING or len(reports) < fails_at, (fate, reports)
            last = result.metrics["loss"]
            assert last == reports[-1] or (math.isnan(last) and math.isnan(reports[-1])), (last, reports)
            finite = [math.isfinite(value) for value in reports]
            assert all(finite[:-1]), f"the scheduler let a {fate} trial go on after a non-finite loss: {reports}"
    return by_id


def check_searcher(searcher, log):
    """The searcher saw every trial once; exactly errored or never-finite trials are recorded as failed;
    no configuration was proposed again after it had failed."""
    losses = {o.trial_id: o.loss for o in searcher.observations}
    assert set(losses) == set(log.configs) and len(searcher.observations) == len(log.configs)
    failed = {trial_id for trial_id in log.configs if trial_id in log.errored or never_finite(log, trial_id)}
    assert {trial_id for trial_id, loss in losses.items() if loss is None} == failed
    assert all(loss is None or math.isfinite(loss) for loss in losses.values())
    failed_configs = set()
    for kind, trial_id in log.events:
        key = repr(sorted(flat(log.configs[trial_id]).items()))
        if kind == "start":
            assert key not in failed_configs, f"{log.configs[trial_id]} proposed again after it failed"
        elif trial_id in failed:
            failed_configs.add(key)
    return failed


def scheduler_scores(scheduler) -> list:
    """Every number a scheduler keeps for its decisions (rung scores, running sums, medians, curves)."""
    if isinstance(scheduler, ASHAScheduler):
        return [score for bracket in scheduler._brackets for rung in bracket.rungs
                for score in [*rung.scores.values(), *rung.ascending]]
    if isinstance(scheduler, MedianStoppingScheduler):
        curves = scheduler._curves.values()
        return ([value for curve in curves for value in curve.sums] + [c.best for c in curves if c.best is not None]
                + [value for means in scheduler._means_at.values() for value in means])
    return [loss for curve in scheduler.searcher._dyhpo.curves.values() for loss in curve.losses]


RUNS = ["gp_ei+asha_stopping", "nevergrad+asha_promotion", "gp_ei+median_hard", "nevergrad+median_pause",
        "dyhpo+dyhpo"]


@pytest.mark.parametrize("name", RUNS)
def test_failing_trials_never_end_the_experiment(ray_session, tmp_path, name):
    searcher, scheduler, param_space, num_samples, expected, mix = scenario(name)
    results, log = fit(searcher, scheduler, param_space, num_samples, tmp_path)
    check_results(results, log, expected)
    failed = check_searcher(searcher, log)
    fates = {fate_of(flat(config), config.get("salt", 0)) for config in log.configs.values()}
    assert set(mix) <= fates and fates & {"nan", "inf_later"}, fates
    scores = scheduler_scores(scheduler)
    assert scores and all(math.isfinite(score) for score in scores), scores
    print(f"{name}: {len(log.configs)} trials, fates {sorted(fates)}, {len(failed)} failed", file=sys.stderr)


def test_with_timeout_ends_hangs_frees_the_worker_and_spares_trials_waiting_for_the_driver(ray_session, tmp_path):
    """Trials take 2 of the 4 CPUs and four of them hang, so the run only finishes if every hung trial gave its
    worker back; the 'slow_driver' trial waits 2.5 s for the driver inside tune.report and must not time out.
    An hpman function that reports nothing fails its trial (Ray would count it a success without a result)."""
    cloudpickle.register_pickle_by_value(fail_fates)
    kinds = [*fail_fates.STALLS, "hpman_silent"]
    log = TrialLog()
    tuner = tune.Tuner(
        tune.with_resources(fail_fates.stall_trainable, {"cpu": 2}), param_space={"kind": tune.grid_search(kinds)},
        tune_config=tune.TuneConfig(metric="loss", mode="min", trial_dirname_creator=lambda trial: trial.trial_id),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0,
                                  callbacks=[log, fail_fates.SlowDriver(seconds=2.5)]))
    results = {result.config["kind"]: result for result in tuner.fit()}
    errors = {kind: str(result.error) for kind, result in results.items() if result.error is not None}
    assert sorted(errors) == ["gil", "hpman_silent", "silent_after_report", "sleep", "spin"], errors
    assert "'_returns_nothing' ended without reporting anything" in errors["hpman_silent"]
    for kind in ("sleep", "spin"):
        assert "TrialTimeout" in errors[kind] and "ran 1." in errors[kind] and "with_timeout(seconds=1)" in errors[kind]
        assert "fail_fates.py" in errors[kind], errors[kind]  # where the trial was
    assert "went 1." in errors["silent_after_report"] and "between_reports=True" in errors["silent_after_report"]
    assert "ActorDiedError" in type(results["gil"].error).__name__ or "died" in errors["gil"], errors["gil"]
    assert results["slow_driver"].metrics["loss"] == 1.0 and results["reports_often"].metrics["loss"] == 6.0


def test_with_timeout_outside_ray_and_argument_errors():
    from tunekit.trainables import TrialTimeout, require_metric, with_timeout

    def slow(config):
        time.sleep(config["sleep_s"])
        return config["sleep_s"]

    def broken(config):
        raise KeyError("lr")

    assert with_timeout(slow, 5)({"sleep_s": 0.01}) == 0.01
    started = time.monotonic()
    with pytest.raises(TrialTimeout, match=r"with_timeout\(seconds=0.2\)"):
        with_timeout(slow, 0.2)({"sleep_s": 30})
    assert time.monotonic() - started < 5
    with pytest.raises(KeyError, match="lr"):
        with_timeout(broken, 5)({})
    assert require_metric(slow, "loss")({"sleep_s": 0}) == 0
    assert with_timeout(slow, 1).__name__ == "slow"
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(ValueError, match="seconds"):
            with_timeout(slow, bad)
    for bad in (True, "5", None):
        with pytest.raises(TypeError, match="seconds"):
            with_timeout(slow, bad)
    with pytest.raises(ValueError, match="grace_s"):
        with_timeout(slow, 1, grace_s=0)
    for not_function in (tune.Trainable, lambda: None, (lambda config: (yield config)), 3):
        with pytest.raises(TypeError, match="with_timeout"):
            with_timeout(not_function, 1)
    with pytest.raises(ValueError, match="metric"):
        require_metric(slow, "")


def test_experiment_file_with_a_hanging_program_under_nevergrad_and_asha(ray_session, tmp_path):
    """`tunekit run`'s path: the command adapter's timeout ends a hanging program, a crash fails its trial with
    the reason, and the searcher's proposal after them still runs."""
    program = Path(__file__).parents[1] / "programs" / "trial.py"
    behaviors = ["hang", "crash", "ok"]
    points = ", ".join(f'{{behavior = "{b}", x = {0.1 * i:.1f}}}' for i, b in enumerate(behaviors))
    (tmp_path / "failing.toml").write_text(f"""
[experiment]
name = "failing"
metric = "loss"
mode = "min"
num_samples = 4
storage_path = "runs"

[command]
argv = [{json.dumps(sys.executable)}, {json.dumps(str(program))}, "{{params_path}}", "{{results_path}}"]
timeout_s = 1.5

[searcher]
name = "nevergrad"
seed = 0
points_to_evaluate = [{points}]

[scheduler]
name = "asha"
max_t = 3
grace_period = 1
reduction_factor = 2

[parameters.behavior]
type = "categorical"
values = {json.dumps(behaviors)}

[parameters.x]
type = "float"
low = 0.0
high = 1.0
""")
    experiment = load_experiment(tmp_path / "failing.toml")
    summary = run_experiment(experiment, verbose=0)
    with open(experiment.experiment_dir / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and sum(summary["trials"].values()) == 4
    given = {row["config/behavior"]: row for row in rows if float(row["config/x"]) in (0.0, 0.1, 0.2)}
    assert given["hang"]["status"] == "failed" and given["hang"]["failure_reason"].startswith("timed out after 1.5 s")
    assert given["crash"]["failure_reason"].startswith("the program ended with exit code 3")
    for row in rows:
        assert (row["status"] == "failed") == (row["config/behavior"] != "ok"), row


@pytest.mark.parametrize("make", [
    lambda: GPEISearch(random_starts=3, seed=0),
    lambda: NevergradSearch("OnePlusOne", seed=0),
    lambda: NevergradSearch("TwoPointsDE", seed=0),
    lambda: NevergradSearch("CMA", seed=0),
    lambda: NevergradSearch("NGOpt", seed=0),
], ids=["gp_ei", "nevergrad_oneplusone", "nevergrad_twopointsde", "nevergrad_cma", "nevergrad_ngopt"])
def test_a_failed_configuration_of_a_small_finite_space_is_not_proposed_again(make):
    """Half of a 12-configuration space fails (raises); 12 sequential trials must never rerun a failed one."""
    searcher = make()
    searcher.set_search_properties("loss", "min", {"a": tune.choice([0, 1, 2, 3]), "b": tune.choice([0, 1, 2])})
    failed, repeats = set(), []
    for number in range(12):
        config = searcher.suggest(f"t{number}")
        if not isinstance(config, dict):
            break
        key = (config["a"], config["b"])
        if key in failed:
            repeats.append(key)
        if sum(key) % 2 == 0:
            failed.add(key)
            searcher.on_trial_complete(f"t{number}", error=True)
        else:
            searcher.on_trial_complete(f"t{number}", {"loss": float(sum(key))})
    assert not repeats, f"{type(searcher).__name__} proposed failed configurations again: {repeats}"


@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_median_without_hard_stop_stops_a_diverged_trial_instead_of_pausing_it(bad):
    """Regression: with hard_stop=False a NaN trial was paused, then resumed to run to its end unchecked."""
    from ray.tune.experiment import Trial

    scheduler = MedianStoppingScheduler(metric="loss", mode="min", grace_period=1, min_samples_required=1,
                                        hard_stop=False)
    good, diverged = (Trial("__fake", stub=True, trial_id=name) for name in ("good", "diverged"))
    for trial in (good, diverged):
        scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, good, {"training_iteration": 1, "loss": 1.0}) == "CONTINUE"
    assert scheduler.on_trial_result(None, diverged, {"training_iteration": 1, "loss": bad}) == "STOP"
    assert scheduler.on_trial_result(None, good, {"training_iteration": 2, "loss": 5.0}) == "CONTINUE"
    assert [d.action for d in scheduler.decisions if d.trial_id == "diverged"] == ["STOP"]
    assert all(math.isfinite(value) for curve in scheduler._curves.values() for value in curve.sums)
