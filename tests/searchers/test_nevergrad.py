"""NevergradSearch: Ray's Searcher contract over nevergrad's ask/tell, checked against nevergrad itself."""

import math
import sys
from pathlib import Path

import ConfigSpace as CS
import nevergrad as ng
import numpy as np
import pytest
import ray.cloudpickle
from hpman import HyperParameterManager
from ray import tune
from ray.tune.search import Searcher

from tunekit.hpman import hpng
from tunekit.searchers.nevergrad import NevergradSearch, space_to_parametrization
from tunekit.space import Categorical, Constant, Float, Int, Ordinal, Space
from tunekit.trainables import hpman_trainable

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
import hpman_training  # noqa: E402
from searcher_driver import run_sequentially as drive

ray.cloudpickle.register_pickle_by_value(hpman_training)  # Ray workers cannot import tests/ modules


def seed_manager() -> HyperParameterManager:
    manager = HyperParameterManager("_")
    manager.parse_file(str(TESTS / "hpman_training.py"))
    return manager


def objective(config: dict) -> float:
    return hpman_training.fake_training(config["learning_rate"], config["batch_size"], config["architecture"])


def run_sequentially(searcher: Searcher, n: int, loss=None, start: int = 0) -> list:
    return drive(searcher, n, loss or objective, start)


def hand_written_loop(optimizer_name: str, seed: int, n: int) -> list:
    parametrization = hpng(seed_manager())
    parametrization.random_state = np.random.RandomState(seed)
    optimizer = ng.optimizers.registry[optimizer_name](parametrization=parametrization, budget=n)
    asked = []
    for _ in range(n):
        candidate = optimizer.ask()
        asked.append(candidate.kwargs)
        optimizer.tell(candidate, objective(candidate.kwargs))
    return asked


@pytest.mark.parametrize("name", ["OnePlusOne", "TwoPointsDE"])
def test_same_seed_asks_what_a_hand_written_loop_asks(name):
    searcher = NevergradSearch(name, space=hpng(seed_manager()), metric="loss", mode="min", budget=30, seed=7)
    assert run_sequentially(searcher, 30) == hand_written_loop(name, seed=7, n=30)


def test_optimizer_by_name_class_or_family_and_errors():
    space = hpng(seed_manager())
    for optimizer in ("CMA", ng.optimizers.OnePlusOne, ng.families.DifferentialEvolution(crossover="twopoints")):
        searcher = NevergradSearch(optimizer, space=space, metric="loss", mode="min", seed=0)
        run_sequentially(searcher, 3)
        assert searcher.optimizer.num_tell == 3
    with pytest.raises(ValueError, match="OnePlusOne"):
        NevergradSearch("OnePlusOnee")
    with pytest.raises(TypeError, match="registry"):
        NevergradSearch(ng.optimizers.OnePlusOne(parametrization=2, budget=3))
    with pytest.raises(ValueError, match="budget"):
        NevergradSearch(budget=0)
    with pytest.raises(ValueError, match="mode"):
        NevergradSearch(mode="maximum")
    with pytest.raises(ValueError, match="positional"):
        NevergradSearch(space=ng.p.Instrumentation(ng.p.Scalar()))
    with pytest.raises(TypeError, match="Instrumentation"):
        NevergradSearch(space=ng.p.Scalar())


def test_mode_max_tells_the_negated_metric():
    minimising = NevergradSearch(space=hpng(seed_manager()), metric="loss", mode="min", seed=3)
    maximising = NevergradSearch(space=hpng(seed_manager()), metric="loss", mode="max", seed=3)
    assert run_sequentially(maximising, 40, loss=lambda c: -objective(c)) == run_sequentially(minimising, 40)
    best = maximising.optimizer.provide_recommendation().kwargs
    assert best["architecture"] == "conv" and abs(best["batch_size"] - 4) <= 1


def test_failures_and_nan_are_told_as_the_worst_loss():
    searcher = NevergradSearch(space=hpng(seed_manager()), metric="loss", mode="min", seed=1)
    first = searcher.suggest("ok")
    searcher.on_trial_complete("ok", {"loss": 1.0})
    for trial_id, result, error in (("nan", {"loss": float("nan")}, False), ("err", None, True),
                                    ("inf", {"loss": math.inf}, False)):
        searcher.suggest(trial_id)
        searcher.on_trial_complete(trial_id, result, error=error)
    optimizer = searcher.optimizer
    assert optimizer.num_tell == 4 and optimizer.num_tell_not_asked == 0
    losses = sorted(value.mean for value in optimizer.archive.values())
    assert losses[0] == 1.0 and losses[-1] == 5.0e20  # nevergrad's own worst-loss sentinel
    assert optimizer.provide_recommendation().kwargs == first
    assert [obs.loss for obs in searcher.observations] == [1.0, None, None, None]


def test_save_and_restore_ask_the_same_next_candidate(tmp_path):
    searcher = NevergradSearch("TwoPointsDE", space=hpng(seed_manager()), metric="loss", mode="min", seed=5)
    run_sequentially(searcher, 6)
    live = searcher.suggest("live")
    path = str(tmp_path / "searcher.pkl")
    searcher.save(path)
    restored = NevergradSearch("TwoPointsDE")
    restored.restore(path)
    for copy in (searcher, restored):
        copy.on_trial_complete("live", {"loss": objective(live)})
    assert run_sequentially(restored, 5, start=10) == run_sequentially(searcher, 5, start=10)
    assert restored.optimizer.num_tell == 12 and restored.optimizer.num_tell_not_asked == 0


def test_points_to_evaluate_are_asked_first_and_added_points_told():
    points = [{"learning_rate": 0.3, "batch_size": 2, "architecture": "fc"}, {"learning_rate": 0.05}]
    searcher = NevergradSearch(space=hpng(seed_manager()), metric="loss", mode="min", points_to_evaluate=points,
                               seed=0)
    configs = run_sequentially(searcher, 3)
    assert configs[0] == points[0]
    assert configs[1]["learning_rate"] == 0.05 and configs[1]["architecture"] in ("conv", "fc")
    searcher.add_evaluated_point({"learning_rate": 0.2, "batch_size": 4, "architecture": "conv"}, 0.0)
    # nevergrad counts its own suggestions as told-not-asked: 2 points + 1 added point
    assert searcher.optimizer.num_tell_not_asked == 3 and searcher.optimizer.num_tell == 4
    with pytest.raises(ValueError, match="not a value"):
        searcher.add_evaluated_point({"learning_rate": 7.0, "batch_size": 4, "architecture": "conv"}, 0.0)


def test_a_dict_parametrization_works_the_same_way():
    space = ng.p.Dict(x=ng.p.Scalar(lower=0.0, upper=1.0), widths=ng.p.Array(init=[1.0, 2.0]))
    searcher = NevergradSearch(space=space, metric="score", mode="max", points_to_evaluate=[{"x": 0.25}], seed=0)
    first = searcher.suggest("a")
    assert first == {"x": 0.25, "widths": [1.0, 2.0]}
    searcher.on_trial_complete("a", {"score": 1.0})
    second = searcher.suggest("b")
    assert 0.0 <= second["x"] <= 1.0 and len(second["widths"]) == 2 and isinstance(second["widths"], list)


def test_budget_finishes_the_search():
    searcher = NevergradSearch(space=hpng(seed_manager()), metric="loss", mode="min", budget=3, seed=0)
    run_sequentially(searcher, 3)
    assert searcher.suggest("more") == Searcher.FINISHED


def test_space_param_space_and_configspace_are_converted_once():
    space = Space([Float("opt/lr", 1e-4, 1.0, log=True, default=0.01), Int("units", 8, 64, log=True),
                   Int("layers", 1, 4), Categorical("act", ("relu", "tanh")), Ordinal("depth", (1, 2, 4)),
                   Float("dropout", 0.0, 0.5, step=0.1), Constant("seed", 3)])
    kwargs = space_to_parametrization(space)[1]
    assert type(kwargs["opt/lr"]) is ng.p.Log and type(kwargs["act"]) is ng.p.Choice
    assert type(kwargs["depth"]) is ng.p.TransitionChoice and type(kwargs["dropout"]) is ng.p.TransitionChoice
    searcher = NevergradSearch(space=space, metric="loss", mode="min", seed=0)
    configs = [searcher.suggest(f"t{i}") for i in range(20)]
    assert configs[0] == space.unflatten(space.default())  # the Space's defaults are asked first
    for config in configs:
        space.validate(space.flatten(config))
        assert isinstance(config["units"], int) and config["seed"] == 3 and set(config["opt"]) == {"lr"}
    ray_searcher = NevergradSearch(metric="loss", mode="min", seed=0)
    ray_searcher.set_search_properties(None, None, {"x": tune.loguniform(1e-3, 1.0), "k": tune.choice([1, 2])})
    assert set(ray_searcher.suggest("r")) == {"x", "k"}
    configspace = CS.ConfigurationSpace({"a": (0.0, 1.0), "b": ["u", "v"]})
    cs_config = NevergradSearch(space=configspace, metric="loss", mode="min").suggest("c")
    assert 0.0 <= cs_config["a"] <= 1.0 and cs_config["b"] in ("u", "v")
    hp_config = NevergradSearch(space=seed_manager(), metric="loss", mode="min").suggest("h")
    assert set(hp_config) == {"learning_rate", "batch_size", "architecture"}


class RecordingNevergradSearch(NevergradSearch):
    """Records how many candidates were already out each time nevergrad is asked for one more."""

    def propose(self, trial_id):
        self.out_at_ask = getattr(self, "out_at_ask", []) + [len(self.pending_configs)]
        return super().propose(trial_id)


def test_parallel_trials_get_their_own_asks_in_a_real_tuner(ray_session, tmp_path):
    nan_point = {"learning_rate": 0.321, "batch_size": 4, "architecture": "conv"}  # train_slowly: NaN
    raising_point = {"learning_rate": 0.123, "batch_size": 4, "architecture": "conv"}  # train_slowly: raises
    searcher = RecordingNevergradSearch("OnePlusOne", space=hpng(seed_manager()), metric="loss", mode="min",
                                        points_to_evaluate=[nan_point, raising_point], seed=0)
    tuner = tune.Tuner(
        hpman_trainable(hpman_training.train_slowly),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=4, max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert len(results.errors) == 1
    rows = [r.metrics for r in results if r.error is None]
    assert len(rows) == 3 and sum(math.isnan(m["loss"]) for m in rows) == 1
    assert max(searcher.out_at_ask) == 1 and searcher.out_at_ask[:2] == [0, 1]  # 2 asks out at once
    optimizer = searcher.optimizer  # the Tuner drove this very searcher
    assert optimizer.num_workers == 2 and optimizer.num_ask == 4 and optimizer.num_tell == 4
    losses = {tuple(sorted(o.config.items())): o.loss for o in searcher.observations}
    assert losses[tuple(sorted(nan_point.items()))] is None and losses[tuple(sorted(raising_point.items()))] is None
    assert sorted(v.mean for v in optimizer.archive.values())[-2:] == [5.0e20, 5.0e20]
    assert len(losses) == 4  # four distinct candidates
