"""GPEISearch: Ray's Searcher contract driven directly, then real tune.Tuner runs."""

import logging
import math
import sys

import numpy as np
import pytest
import ray.cloudpickle
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher

from tunekit.searchers import GPEISearch
from tunekit.space import Categorical, Float, Int, Space
from searcher_driver import run_sequentially as drive

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/ modules

BRANIN_SPACE = Space([Float("x1", -5.0, 10.0), Float("x2", 0.0, 15.0)])


def branin(config: dict) -> float:
    x1, x2 = config["x1"], config["x2"]
    return ((x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2
            + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10)


def run_sequentially(searcher: Searcher, n: int, loss=None, start: int = 0) -> list:
    return drive(searcher, n, loss or branin, start)


def make(**kwargs) -> GPEISearch:
    return GPEISearch(**{"space": BRANIN_SPACE, "metric": "loss", "mode": "min", "random_starts": 5, **kwargs})


# -- arguments --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"kernel": "linear"}, "kernel='linear'.*matern52.*matern32.*rbf"),
    ({"acquisition": "EI"}, "acquisition='EI'.*logei.*ei.*ucb.*pi"),
    ({"random_starts": -1}, "random_starts=-1"),
    ({"random_starts": 2.5}, "random_starts=2.5"),
    ({"optimizer_restarts": 0}, "optimizer_restarts=0"),
    ({"kernel_scale": -1.0}, "kernel_scale=-1.0"),
    ({"beta": 0}, "beta=0"),
    ({"mode": "maximize"}, "mode='maximize'"),
])
def test_bad_arguments_fail_in_the_constructor(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPEISearch(**kwargs)


# -- the searcher on its own ----------------------------------------------------------------------------
@pytest.mark.parametrize("kernel, acquisition", [("matern52", "logei"), ("matern32", "ei"), ("rbf", "ucb"),
                                                 ("matern52", "pi")])
def test_every_kernel_and_acquisition_improves_on_the_initial_design(kernel, acquisition):
    searcher = make(kernel=kernel, acquisition=acquisition, kernel_scale=1.0 if kernel == "rbf" else None, seed=0)
    losses = [branin(c) for c in run_sequentially(searcher, 16)]
    assert min(losses[5:]) < min(losses[:5])
    if acquisition != "pi":  # PI is greedy: it improves, but slowly
        assert min(losses) < 3.0  # the optimum is 0.398; random search's median best of 16 is about 1.9


def test_same_seed_same_run_and_restore_continues_identically(tmp_path):
    first, second = make(seed=3), make(seed=3)
    assert run_sequentially(first, 12) == run_sequentially(second, 12)
    pending = first.suggest("running")
    first.save(str(tmp_path / "state.pkl"))
    restored = make(seed=99)
    restored.restore(str(tmp_path / "state.pkl"))
    assert restored.suggest("next") == first.suggest("next")
    assert restored.pending_configs == first.pending_configs == [pending, first.pending_configs[1]]


def test_pending_points_spread_parallel_suggestions():
    searcher = make(seed=1)  # a seed where the batch mixes exploration and exploitation of one basin
    run_sequentially(searcher, 12)
    batch = BRANIN_SPACE.encode([searcher.suggest(f"p{i}") for i in range(4)])
    distances = np.linalg.norm(batch[:, None] - batch[None], axis=-1)[np.triu_indices(4, 1)]
    # Here one point explores and three refine the best basin, where the fitted noise (about 1e-6 in
    # standardized units) still leaves the believer GP uncertain: they sit 3e-4 to 9e-3 apart, far above the
    # optimiser's own resolution (about 1e-7), i.e. not piled onto one spot.
    assert distances.min() > 1e-4
    assert np.median(distances) > 0.1


def test_failed_trials_are_skipped_and_never_proposed_again():
    searcher = make(seed=2)
    configs = []
    for i in range(14):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        if i % 3 == 0:
            searcher.on_trial_complete(f"t{i}", {"loss": float("nan")})
        elif i % 3 == 1:
            searcher.on_trial_complete(f"t{i}", error=True)
        else:
            searcher.on_trial_complete(f"t{i}", {"loss": branin(config)})
    keys = [tuple(sorted(c.items())) for c in configs]
    assert len(set(keys)) == len(keys)
    assert sum(o.loss is None for o in searcher.observations) == 10


def test_no_repeats_on_a_small_discrete_space_then_finished(caplog):
    space = Space([Int("n", 0, 3), Categorical("c", ("a", "b"))])
    searcher = GPEISearch(space=space, metric="score", mode="max", random_starts=2, seed=0)
    seen = []
    for i in range(8):
        config = searcher.suggest(f"t{i}")
        seen.append((config["n"], config["c"]))
        searcher.on_trial_complete(f"t{i}", {"score": config["n"] + (config["c"] == "b")})
    assert len(set(seen)) == 8
    with caplog.at_level(logging.WARNING):
        assert searcher.suggest("t8") == Searcher.FINISHED
    assert "all 8 configurations" in caplog.text


def test_many_observations_still_give_a_new_valid_suggestion():
    """Past MAX_FIT_POINTS the hyperparameters are fitted on a subset, past MAX_CONDITION_POINTS the posterior
    too (tests/gp/test_model.py). Its speed is measured in benchmarks/bo.py, not here."""
    searcher = make(seed=4)
    observed = BRANIN_SPACE.sample(300, seed=0)
    for config in observed:
        searcher.add_evaluated_point(config, branin(config))
    suggestion = searcher.suggest("late")
    BRANIN_SPACE.validate(suggestion)
    assert suggestion not in observed
    assert branin(suggestion) < np.median([branin(c) for c in observed])


# -- real tune.Tuner runs -----------------------------------------------------------------------------------
def quadratic(config):
    tune.report({"loss": (config["x"] - 0.3) ** 2 + (config["y"] + 0.2) ** 2})


def test_beats_random_search_at_equal_budget_over_several_seeds():
    def best(searcher_or_none, seed, budget=16):
        if searcher_or_none is None:
            return min(branin(c) for c in BRANIN_SPACE.sample(budget, seed=seed))
        return min(branin(c) for c in run_sequentially(searcher_or_none, budget))

    gp = [best(make(seed=seed, random_starts=6), seed) for seed in range(4)]
    random = [best(None, seed) for seed in range(4)]
    assert np.median(gp) < 0.5 * np.median(random)
    assert all(g < r for g, r in zip(gp, random))


def test_in_a_tuner_beats_random_search_at_equal_budget(ray_session, tmp_path):
    budget = 14
    param_space = {"x": tune.uniform(-1, 1), "y": tune.uniform(-1, 1)}
    tuner = tune.Tuner(
        quadratic, param_space=param_space,
        tune_config=tune.TuneConfig(metric="loss", mode="min", search_alg=GPEISearch(random_starts=6, seed=0),
                                    num_samples=budget, max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert len(results) == budget and not results.errors
    gp = results.get_best_result().metrics["loss"]
    space = Space.from_tune(param_space)
    random = [min((c["x"] - 0.3) ** 2 + (c["y"] + 0.2) ** 2 for c in space.sample(budget, seed=seed))
              for seed in range(20)]
    assert gp < 1e-3 and gp < 0.1 * np.median(random)


def test_in_a_tuner_an_exhausted_discrete_space_ends_the_run(ray_session, tmp_path):
    tuner = tune.Tuner(
        quadratic, param_space={"x": tune.choice([0.0, 0.3]), "y": tune.choice([-0.2, 0.5])},
        tune_config=tune.TuneConfig(metric="loss", mode="min", search_alg=GPEISearch(random_starts=1, seed=0),
                                    num_samples=10, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert sorted((r.config["x"], r.config["y"]) for r in results) == [(0.0, -0.2), (0.0, 0.5), (0.3, -0.2), (0.3, 0.5)]


def mixed_trainable(config):
    assert isinstance(config["opt"]["name"], str) and isinstance(config["layers"], int)
    tune.report({"acc": -abs(math.log10(config["opt"]["lr"]) + 2) - 0.1 * abs(config["layers"] - 3)
                 + (config["opt"]["name"] == "adam")})


def test_mixed_nested_space_points_to_evaluate_and_two_concurrent_trials(ray_session, tmp_path):
    param_space = {"opt": {"lr": tune.loguniform(1e-5, 1.0), "name": tune.choice(["sgd", "adam"])},
                   "layers": tune.randint(1, 9), "fixed": 7}
    searcher = GPEISearch(points_to_evaluate=[{"opt": {"lr": 0.5, "name": "sgd"}, "layers": 8}],
                          random_starts=4, seed=0)
    tuner = tune.Tuner(
        mixed_trainable, param_space=param_space,
        tune_config=tune.TuneConfig(metric="acc", mode="max", search_alg=searcher, num_samples=8,
                                    max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    configs = [r.config for r in results]
    assert len(results) == 8 and not results.errors
    assert {"opt": {"lr": 0.5, "name": "sgd"}, "layers": 8, "fixed": 7} in configs
    assert all(c["fixed"] == 7 and set(c["opt"]) == {"lr", "name"} for c in configs)
    assert results.get_best_result().config["opt"]["name"] == "adam"


def flaky_trainable(config):
    if config["x"] > 0.7:
        raise RuntimeError("this configuration crashes")
    for step in range(4):
        loss = float("nan") if config["x"] < -0.7 else (config["x"] - 0.2) ** 2 + 1.0 / (step + 1)
        tune.report({"loss": loss})


def test_nan_and_raising_trials_under_asha_do_not_stop_the_search(ray_session, tmp_path):
    searcher = GPEISearch(points_to_evaluate=[{"x": 0.9}, {"x": -0.9}], random_starts=4, seed=0)
    tuner = tune.Tuner(
        flaky_trainable, param_space={"x": tune.uniform(-1, 1)},
        tune_config=tune.TuneConfig(metric="loss", mode="min", search_alg=searcher, num_samples=8,
                                    scheduler=ASHAScheduler(max_t=4, grace_period=1, reduction_factor=2),
                                    reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert len(results) == 8 and len(results.errors) >= 1
    best = results.get_best_result(metric="loss", mode="min", filter_nan_and_inf=True)
    assert abs(best.config["x"] - 0.2) < 0.2
