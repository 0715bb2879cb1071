"""DyHPOSearch + DyHPOScheduler in real tune.Tuner runs on a cheap synthetic learning-curve objective.

The objective is HPO4DL-style (run through ``epoch_trainable``) and keeps a state file in its checkpoint
folder: it fails loudly when it is resumed without the state of the epoch it stopped at, so every pause/resume
in these runs is also a check that Ray restored the right checkpoint.
"""

import json
import math
import os
import sys
from pathlib import Path

import pytest
import ray.cloudpickle
import torch
from ray import tune

from tunekit.parameters import Float
from tunekit.schedulers.dyhpo import DyHPOScheduler
from tunekit.searchers.dyhpo import MAX_FIT_POINTS, MAX_KEPT_EPOCHS, DyHPOSearch
from tunekit.space import Space
from tunekit.trainables import epoch_trainable, write_hpo4dl_outputs

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/ modules

CRASH_AT = 0.99  # the space's default: random pool configurations never hit it exactly


def learning_curve(config: dict, epoch: int, previous_epoch: int, checkpoint_path: str) -> dict:
    """Loss (x - 0.7)^2 + exp(-(0.2 + x) epoch); the configuration x = CRASH_AT raises at its first epoch."""
    state = Path(checkpoint_path) / "state.json"
    if previous_epoch:
        saved = json.loads(state.read_text())["epoch"]
        assert saved == previous_epoch, f"resumed at epoch {previous_epoch} with the state of epoch {saved}"
    if config["x"] == CRASH_AT:
        raise RuntimeError("simulated training crash")
    state.write_text(json.dumps({"epoch": epoch}))
    return {"epoch": epoch, "metric": (config["x"] - 0.7) ** 2 + math.exp(-(0.2 + config["x"]) * epoch)}


class History(tune.Callback):
    """Every result as (training_iteration, epoch) per trial id."""

    def __init__(self):
        self.rows = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.rows.setdefault(trial.trial_id, []).append((result["training_iteration"], result["epoch"]))


def make_searcher(max_budget: int, max_epochs: int = 6) -> DyHPOSearch:
    # the default is the first configuration tried, so exactly one crash is certain
    space = Space([Float("x", 0.0, 1.0, default=CRASH_AT)])
    return DyHPOSearch(space=space, metric="metric", mode="min", max_epochs=max_epochs, max_budget=max_budget,
                       num_configurations=200, seed=0)


def run(tmp_path, searcher, concurrent, callbacks=(), name="dyhpo"):
    tuner = tune.Tuner(
        epoch_trainable(learning_curve),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=DyHPOScheduler(searcher), num_samples=-1,
                                    max_concurrent_trials=concurrent, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name=name, verbose=0, callbacks=list(callbacks)),
    )
    return tuner.fit()


def check_continuity(rows: dict, max_epochs: int) -> None:
    for trial_id, trial_rows in rows.items():
        iterations = [iteration for iteration, _ in trial_rows]
        assert iterations == list(range(1, len(iterations) + 1)), (trial_id, trial_rows)
        assert all(iteration == epoch for iteration, epoch in trial_rows), (trial_id, trial_rows)
        assert len(iterations) <= max_epochs


@pytest.mark.parametrize("concurrent", [1, 2])
def test_budget_spent_exactly_with_pauses_resumes_and_a_crash(ray_session, tmp_path, concurrent):
    searcher, history = make_searcher(max_budget=18), History()
    results = run(tmp_path, searcher, concurrent, [history])
    rows = history.rows
    assert sum(len(r) for r in rows.values()) == 18
    check_continuity(rows, max_epochs=6)
    assert len(results.errors) == 1 and "simulated training crash" in str(results.errors[0])
    counts = searcher._dyhpo.counts
    assert counts["resume"] >= 1 and counts["continue"] >= 1, counts
    assert any(len(r) >= 3 for r in rows.values()), "some trial must be trained past its first epochs"
    assert len(rows) < 18, "not every epoch may go to a new configuration"
    best = min(results, key=lambda r: r.metrics.get("metric", math.inf) if r.metrics else math.inf)
    assert abs(best.config["x"] - 0.7) < 0.25
    out = write_hpo4dl_outputs(results, str(tmp_path / "hpo4dl"), mode="min")
    lines = (tmp_path / "hpo4dl" / "hpo4dl_results.csv").read_text().splitlines()
    assert len(lines) == 1 + 18  # the crashed trial reported nothing
    best_curve = json.loads((out / "tunekit_epoch.json").read_text())
    best_value = json.loads((tmp_path / "hpo4dl" / "best_configuration.json").read_text())["metric"]
    assert min(row["metric"] for row in best_curve) == best_value


def test_once_ray_has_created_num_samples_trials_paused_trials_are_resumed(ray_session, tmp_path):
    """With num_samples below the pool size, Ray stops asking for new trials; DyHPO must then resume paused
    trials instead of waiting for a new configuration that never comes (the run used to hang here). One trial at a
    time, so no worker is ever starting when a trial reports: DyHPO's first steps (too few points for its model)
    then pause every trial for a new configuration, for certain."""
    searcher, history = make_searcher(max_budget=None, max_epochs=4), History()
    tuner = tune.Tuner(
        epoch_trainable(learning_curve),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=DyHPOScheduler(searcher), num_samples=4,
                                    max_concurrent_trials=1, time_budget_s=90, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="samples", verbose=0, callbacks=[history]))
    results = tuner.fit()
    assert len(results) == 4 and len(results.errors) == 1  # the crashing default configuration
    trained = sorted(len(rows) for rows in history.rows.values())
    assert trained == [4, 4, 4], f"every trial that does not crash is trained to max_epochs: {history.rows}"
    assert searcher._dyhpo.counts["pause"] >= 1, "DyHPO paused trials (else this tests nothing)"


class _CrashDriver(tune.Callback):
    """Raises in the driver loop at the 6th result (once: a marker file)."""

    def __init__(self, marker):
        self.marker, self.seen = marker, 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.seen += 1
        if self.seen == 6 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            raise RuntimeError("simulated driver crash")


def test_tuner_restore_continues_the_search(ray_session, tmp_path):
    history = History()
    with pytest.raises(Exception, match="simulated driver crash"):
        run(tmp_path, make_searcher(max_budget=12), 1, [history, _CrashDriver(str(tmp_path / "crashed"))],
            name="restore")
    assert sum(len(r) for r in history.rows.values()) < 12
    results = tune.Tuner.restore(str(tmp_path / "restore"), epoch_trainable(learning_curve), resume_unfinished=True,
                                 resume_errored=False).fit()
    assert len(results.errors) <= 1, results.errors  # only the configuration that always crashes
    state_files = sorted((tmp_path / "restore").glob("searcher-state-*.pkl"))
    restored = make_searcher(max_budget=12)
    restored.restore(str(state_files[-1]))
    # Ray re-queues every paused trial on restore; the scheduler keeps them paused, so none trains an epoch
    # DyHPO did not choose and the budget is spent exactly
    assert restored._dyhpo.spent == 12
    finished = [r.metrics for r in results if r.metrics and "epoch" in r.metrics]
    assert all(metrics["training_iteration"] == metrics["epoch"] for metrics in finished)
    assert max(metrics["epoch"] for metrics in finished) >= 3


def test_the_hpo4dl_seed_example_runs_unchanged_with_a_configspace(ray_session, tmp_path, monkeypatch):
    from ConfigSpace import ConfigurationSpace

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "examples"))
    import hpo4dl_quickstart

    ray.cloudpickle.register_pickle_by_value(hpo4dl_quickstart)
    searcher = DyHPOSearch(space=ConfigurationSpace({"x": (-5.0, 10.0)}), metric="metric", mode="min",
                           max_epochs=27, max_budget=8, num_configurations=1000, seed=0)
    tuner = tune.Tuner(
        epoch_trainable(hpo4dl_quickstart.objective_function),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=DyHPOScheduler(searcher), num_samples=-1,
                                    max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert not results.errors and searcher._dyhpo.spent == 8
    write_hpo4dl_outputs(results, str(tmp_path / "out"))
    rows = (tmp_path / "out" / "hpo4dl_results.csv").read_text().splitlines()
    assert rows[0].startswith("configuration_id,trial_id,epoch,metric,x") and len(rows) == 1 + 8
    assert rows[1].endswith(",2.5")  # ConfigSpace's default configuration is tried first


def test_searcher_without_its_scheduler_is_refused(ray_session, tmp_path):
    searcher = make_searcher(max_budget=4)
    with pytest.raises(ValueError, match="DyHPOScheduler"):
        searcher.suggest("t1")
    tuner = tune.Tuner(epoch_trainable(learning_curve),
                       tune_config=tune.TuneConfig(search_alg=searcher, num_samples=2),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    with pytest.raises(Exception, match="DyHPOScheduler"):
        tuner.fit()


def test_scheduler_without_its_searcher_is_refused(ray_session, tmp_path):
    with pytest.raises(TypeError, match="DyHPOSearch"):
        DyHPOScheduler(object())
    scheduler = DyHPOScheduler(make_searcher(max_budget=4))
    tuner = tune.Tuner(epoch_trainable(learning_curve, max_epochs=2), param_space={"x": tune.uniform(0, 0.9)},
                       tune_config=tune.TuneConfig(metric="metric", mode="min", scheduler=scheduler, num_samples=1),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    with pytest.raises(Exception, match="search_alg"):
        tuner.fit()


def drive(searcher: DyHPOSearch, epochs: int, after_each=lambda: None) -> set:
    """Drive ``searcher`` as Ray's controller would on one worker (no Ray) for ``epochs`` results of
    (x - 0.7)^2 + 1/epoch; returns the trials left paused."""
    DyHPOScheduler(searcher).set_search_properties(None, None)
    current, paused = None, set()
    for number in range(epochs):
        if current is None:
            config = searcher.suggest(f"t{number}")
            current = f"t{number}" if isinstance(config, dict) else searcher.choose_paused(dict.fromkeys(paused))
            paused.discard(current)
        curve = searcher._dyhpo.curves[current]
        x, epoch = searcher._dyhpo.pool[curve.pool_index]["x"], len(curve.losses) + 1
        action = searcher.on_result(current, {"training_iteration": epoch, "metric": (x - 0.7) ** 2 + 1 / epoch})
        if action == "PAUSE":
            paused.add(current)
        elif action == "STOP":
            searcher.on_trial_complete(current)
        current = current if action == "CONTINUE" else None
        after_each()
    return paused


def test_save_and_restore_round_trip_curves_budget_pool_and_model(tmp_path):
    """Driven without Ray, then saved and restored into a new searcher."""
    searcher = make_searcher(max_budget=40)
    paused = drive(searcher, 14)
    searcher.save(str(tmp_path / "dyhpo.pkl"))
    restored = make_searcher(max_budget=40)
    DyHPOScheduler(restored).set_search_properties(None, None)
    restored.restore(str(tmp_path / "dyhpo.pkl"))
    assert restored._dyhpo.spent == searcher._dyhpo.spent == 14
    assert restored._dyhpo.curves == searcher._dyhpo.curves
    assert restored._dyhpo.unused == searcher._dyhpo.unused and restored._dyhpo.pool == searcher._dyhpo.pool
    assert restored._dyhpo.model_weights is not None
    assert restored.decide() in set(paused) | {"new"}


def test_refits_run_at_once_until_the_fit_set_is_full_then_over_several_decisions():
    """Early decisions need the fresh model and a small refit is cheap; later no decision pays a whole refit."""
    searcher = make_searcher(max_budget=None)
    spread, weights = [], []

    def watch():
        observed = sum(len(curve.losses) for curve in searcher._dyhpo.curves.values())
        if searcher._refit is not None:
            spread.append(observed)
        if searcher._model is not None:
            weights.append(searcher._model.state()["network"]["mlp.2.bias"].clone())

    drive(searcher, 200, watch)
    assert spread and min(spread) >= MAX_FIT_POINTS
    assert any(later - earlier == 1 for earlier, later in zip(spread, spread[1:])), "a refit spans decisions"
    changes = [i for i in range(1, len(weights)) if not torch.equal(weights[i], weights[i - 1])]
    assert changes and max(changes) > MAX_FIT_POINTS, "refits in slices still end in new weights"


def test_keeping_the_pools_features_between_decisions_changes_no_decision(monkeypatch):
    """The unused configurations' features are kept per trained network; every refit's new network must
    replace them, so the search goes exactly as when they are recomputed at every decision."""

    def curves(recompute: bool) -> dict:
        searcher = make_searcher(max_budget=None)
        if recompute:
            kept_features = searcher._new_features

            def fresh(model):
                searcher._pool_features = None  # forget the kept features: computed anew at every decision
                return kept_features(model)
            monkeypatch.setattr(searcher, "_new_features", fresh)
        drive(searcher, 80)
        return {tid: curve.losses for tid, curve in searcher._dyhpo.curves.items()}

    kept = curves(recompute=False)
    assert len(kept) >= 10 and kept == curves(recompute=True)


@pytest.mark.parametrize("starting, expected", [(1, ["CONTINUE"] * MAX_KEPT_EPOCHS + ["PAUSE"]), (0, ["PAUSE"])])
def test_a_trial_keeps_its_worker_while_ray_starts_a_worker_process_for_another(starting, expected, monkeypatch):
    """Pausing would hand the worker to the waiting trial and Ray would discard the process it is starting; but
    only for a few epochs, so that with very short epochs DyHPO's choices still win."""
    searcher = make_searcher(max_budget=40)
    DyHPOScheduler(searcher).set_search_properties(None, None)
    searcher.set_max_concurrency(2)
    assert isinstance(searcher.suggest("t0"), dict) and isinstance(searcher.suggest("t1"), dict)
    monkeypatch.setattr(searcher, "decide", lambda: "new")  # DyHPO would rather start a new configuration
    searcher.waiting_to_start(1, starting=starting)
    actions = []
    for epoch in range(1, 7):
        actions.append(searcher.on_result("t0", {"training_iteration": epoch, "metric": 1.0 / epoch}))
        if actions[-1] != "CONTINUE":
            break
    assert actions == expected


class Controller:
    """What DyHPOScheduler reads of Ray's TuneController: the trials (statuses set by the test)."""

    search_alg = None

    def __init__(self, trials):
        self.trials = trials

    def get_trials(self):
        return self.trials


def test_waiting_past_a_handover_counts_as_waiting_for_a_new_worker_process(monkeypatch):
    """Only a wait longer than HANDOVER_S (Ray starting a process) keeps reporting trials on their workers, and
    only until WORKER_START_GRACE_S; the latest trial to wait is named to take a freed worker, since an earlier
    waiter's own process may be starting already, and Ray would discard it."""
    from ray.tune.experiment import Trial

    from tunekit.schedulers import dyhpo as dyhpo_scheduler

    clock = [100.0]
    monkeypatch.setattr(dyhpo_scheduler.time, "monotonic", lambda: clock[0])
    searcher = make_searcher(max_budget=40)
    scheduler = DyHPOScheduler(searcher)
    early, late = Trial("__fake", stub=True), Trial("__fake", stub=True)
    controller = Controller([early])
    assert scheduler.choose_trial_to_run(controller) is early and searcher._starting == 0
    clock[0] += 0.9 * dyhpo_scheduler.HANDOVER_S
    controller.trials.append(late)
    assert scheduler.choose_trial_to_run(controller) is late and searcher._starting == 0
    clock[0] += 0.2 * dyhpo_scheduler.HANDOVER_S
    assert scheduler.choose_trial_to_run(controller) is late and searcher._starting == 1
    clock[0] += dyhpo_scheduler.HANDOVER_S
    assert scheduler.choose_trial_to_run(controller) is late and searcher._starting == 2
    assert searcher._dyhpo.waiting_to_start == 2
    clock[0] += dyhpo_scheduler.WORKER_START_GRACE_S - 2.0 * dyhpo_scheduler.HANDOVER_S
    assert scheduler.choose_trial_to_run(controller) is late and searcher._starting == 1
    late.set_status(Trial.RUNNING)
    assert scheduler.choose_trial_to_run(controller) is early and searcher._starting == 0


@pytest.mark.parametrize("name, value", [("max_epochs", 0), ("num_configurations", 1.5), ("max_budget", -3)])
def test_bad_arguments_name_themselves(name, value):
    with pytest.raises(ValueError, match=name):
        DyHPOSearch(**{name: value})
