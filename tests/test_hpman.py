"""hpman -> nevergrad / Space mappings, their errors, and trial-scoped value injection (threads and Ray)."""

import threading
from pathlib import Path

import hpargparse
import nevergrad as ng
import numpy as np
import pytest
from hpman import HyperParameterManager
from hpman.m import _
from ray import tune

import hpman_training
import ray.cloudpickle
from tunekit.hpman import hinted_declarations, hpng, injected_values, space_from_hpman
from tunekit.space import Categorical, Float, Int, Ordinal, Space
from tunekit.trainables import (call_with_values, cli_options, hpman_script, hpman_trainable, report_outcome,
                                run_script)

SCRIPT = Path(__file__).with_name("hpman_cli_script.py")
TRAINING = Path(__file__).with_name("hpman_training.py")
ray.cloudpickle.register_pickle_by_value(hpman_training)  # Ray workers cannot import tests/ modules
SEED_DECLARATIONS = """
lr = _('learning_rate', 1e-3, range=[1e-3, 1.0], scale='log')
bs = _('batch_size', 1, range=[1, 12])
arch = _('architecture', 'conv', choices=['conv', 'fc'])
epochs = _('epochs', 3)
"""


def manager_of(source: str) -> HyperParameterManager:
    manager = HyperParameterManager("_")
    manager.parse_source(source, "declarations.py")
    return manager


def parameter(source: str):
    """The one nevergrad parameter hpng builds from a one-declaration source."""
    kwargs = hpng(manager_of(source))[1]
    (name,) = kwargs.keys()
    return kwargs[name]


def samples(param, n=400, seed=0):
    param.random_state = np.random.RandomState(seed)
    return np.array([param.sample().value for _ in range(n)], dtype=float)


# -- hpng: the seed's example and every hint ------------------------------------------------------------
def test_seed_example_is_the_documented_instrumentation():
    parametrization = hpng(manager_of(SEED_DECLARATIONS))
    assert isinstance(parametrization, ng.p.Instrumentation)
    kwargs = parametrization[1]
    assert sorted(kwargs.keys()) == ["architecture", "batch_size", "learning_rate"]  # epochs has no hint
    assert type(kwargs["learning_rate"]) is ng.p.Log
    assert type(kwargs["architecture"]) is ng.p.Choice
    lr = samples(kwargs["learning_rate"])
    assert lr.min() >= 1e-3 and lr.max() <= 1.0 and np.median(lr) < 0.1  # log-uniform over [1e-3, 1]
    batch = samples(kwargs["batch_size"])
    assert set(batch) <= set(range(1, 13)) and len(set(batch)) > 6
    optimizer = ng.optimizers.OnePlusOne(parametrization=parametrization, budget=100)
    parametrization.random_state = np.random.RandomState(0)

    def fake_training(learning_rate, batch_size, architecture):
        return (learning_rate - 0.2) ** 2 + (batch_size - 4) ** 2 + (0 if architecture == "conv" else 10)

    best = optimizer.minimize(fake_training).kwargs
    assert best["architecture"] == "conv" and best["batch_size"] == 4
    assert abs(best["learning_rate"] - 0.2) < 0.05


def test_choices_and_transitions():
    assert type(parameter("_('a', 'x', choices=['x', 'y'])")) is ng.p.Choice
    ordered = parameter("_('a', 2, choices=[1, 2, 3], transitions=True)")
    assert type(ordered) is ng.p.TransitionChoice
    assert set(samples(ordered, 50)) <= {1, 2, 3}


def test_linear_range_and_integer_casting():
    floats = parameter("_('a', 0.5, range=[0.0, 2.0])")
    values = samples(floats)
    assert values.min() >= 0 and values.max() <= 2 and len(set(values)) > 100
    ints = samples(parameter("_('a', 5, range=[0, 10])"))
    assert np.all(ints == np.round(ints)) and ints.min() >= 0 and ints.max() <= 10
    forced = samples(parameter("_('a', 0.5, range=[0.0, 10.0], set_integer_casting=True)"))
    assert np.all(forced == np.round(forced))
    released = samples(parameter("_('a', 5, range=[0, 10], set_integer_casting=False)"))
    assert not np.all(released == np.round(released))


def test_log_scale_unbounded_starts_at_default_and_takes_exponent():
    param = parameter("_('a', 2.0, scale='log', exponent=4.0)")
    assert type(param) is ng.p.Log and param.value == pytest.approx(2.0)
    child = param.spawn_child()
    child.mutate()
    assert child.value > 0 and child.value != pytest.approx(2.0)
    assert "exp=4.00" in repr(param)


def test_list_default_is_an_array_with_bounds_and_casting():
    param = parameter("_('a', [1, 2, 3], range=[0, 8])")
    assert type(param) is ng.p.Array
    values = np.array([param.sample().value for _ in range(50)])
    assert values.shape == (50, 3) and np.all(values == np.round(values)) and values.max() <= 8
    unbounded = parameter("_('a', [0.5, 1.5], sigma=0.1)")
    assert unbounded.value.tolist() == [0.5, 1.5] and unbounded.sigma.value == pytest.approx(0.1)


def test_set_bounds_method_and_full_range_sampling():
    assert "At(0,1)" in repr(parameter("_('a', 0.5, range=[0, 1], method='arctan')"))
    assert "Cl(0,1)" in repr(parameter("_('a', 0.5, range=[0, 1], method='clipping')"))
    spread = samples(parameter("_('a', 0.5, range=[0, 1], method='clipping', full_range_sampling=True)"))
    narrow = samples(parameter("_('a', 0.5, range=[0, 1], method='clipping', full_range_sampling=False)"))
    middle = lambda v: np.mean((v > 0.4) & (v < 0.6))  # noqa: E731
    assert 0.15 < middle(spread) < 0.25 and middle(narrow) > 0.4  # uniform: 0.2; mutations of the middle: more
    logs = samples(parameter("_('a', 0.1, range=[0.01, 1.0], scale='log', method='clipping')"))
    assert logs.min() >= 0.01 and logs.max() <= 1.0 and np.median(logs) < 0.3


def test_sigma_exponent_and_custom_mutations():
    assert parameter("_('a', 1.0, sigma=0.25)").sigma.value == pytest.approx(0.25)
    assert "exp=2.00" in repr(parameter("_('a', 1.0, exponent=2.0)"))
    cauchy = parameter("_('a', 1.0, custom='cauchy')")
    gaussian = parameter("_('a', 1.0, custom='gaussian')")
    assert "Cauchy" in repr(cauchy) and "Cauchy" not in repr(gaussian)
    far = []
    for param in (cauchy, gaussian):
        param.random_state = np.random.RandomState(0)
        moves = []
        for _draw in range(400):
            child = param.spawn_child()
            child.mutate()
            moves.append(abs(child.value - 1.0))
        far.append(np.mean(np.array(moves) > 10))
    assert far[0] > 0.05 and far[1] < 0.03  # Cauchy's heavy tail: P(|C| > 10) = 0.06


def test_argparse_hints_are_allowed_and_not_searched():
    manager = manager_of("_('a', 1, help='documentation only')\n_('b', 2, required=False, range=[0, 4])")
    assert [decl.name for decl in hinted_declarations(manager)] == ["b"]


def test_hints_spread_over_occurrences_are_merged():
    manager = manager_of("_('a', 0.5, range=[0, 1])\nx = _('a', method='clipping')")
    assert "Cl(0,1)" in repr(hpng(manager)[1]["a"])


# -- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source, hint", [
    ("_('lr', 0.1, rnage=[0, 1])", "rnage"),
    ("_('lr', 0.1, range=[0.0, 1.0], scale='log')", "scale"),
    ("_('lr', 0.1, range=[-1, 1], scale='log')", "scale"),
    ("_('lr', -0.1, scale='log')", "scale"),
    ("_('lr', 2.0, range=[0, 1])", "range"),
    ("_('lr', 0.1, range=[1, 0])", "range"),
    ("_('lr', 0.1, range=[0, 1, 2])", "range"),
    ("_('lr', 'z', choices=['x', 'y'])", "choices"),
    ("_('lr', 'x', choices=[])", "choices"),
    ("_('lr', 'x', choices=['x', 'y'], range=[0, 1])", "range"),
    ("_('lr', 'x', choices=['x', 'y'], sigma=1.0)", "sigma"),
    ("_('lr', 0.1, transitions=True)", "transitions"),
    ("_('lr', 0.1, method='clipping')", "method"),
    ("_('lr', 0.1, full_range_sampling=True)", "full_range_sampling"),
    ("_('lr', 0.1, range=[0, 1], method='wrap')", "method"),
    ("_('lr', 0.1, custom='uniform')", "custom"),
    ("_('lr', 0.1, sigma=0)", "sigma"),
    ("_('lr', 0.1, exponent=-2)", "exponent"),
    ("_('lr', 0.1, scale='cubic')", "scale"),
    ("_('lr', 'x', range=[0, 1])", "range"),
    ("_('lr', [0.5, 2.0], range=[0, 1])", "range"),
    ("_('lr', [1.0, 2.0], scale='log')", "scale"),
    ("_('lr', 1, range=[0, 4], set_integer_casting='yes')", "set_integer_casting"),
    ("_('lr', 0.1, range=[0, 1])\nx = _('lr', range=[0, 2])", "range"),
    ("_('lr', some_variable, range=[0, 1])", "range"),
])
def test_bad_hints_raise_one_error_naming_parameter_and_hint(source, hint):
    with pytest.raises(ValueError) as caught:
        hpng(manager_of(source))
    message = str(caught.value)
    assert "'lr'" in message and hint in message


def test_hpng_rejects_what_is_not_a_manager():
    with pytest.raises(TypeError, match="HyperParameterManager"):
        hpng({"lr": 0.1})


# -- Space view ---------------------------------------------------------------------------------------
def test_space_from_hpman_maps_each_kind():
    manager = manager_of(SEED_DECLARATIONS + "_('depth', 2, choices=[1, 2, 4], transitions=True)\n"
                         "_('units', 64, range=[8, 512], scale='log')\n_('drop', 0.5, range=[0, 1], sigma=0.1)")
    space = space_from_hpman(manager)
    assert space["learning_rate"] == Float("learning_rate", 1e-3, 1.0, log=True, default=1e-3)
    assert space["batch_size"] == Int("batch_size", 1, 12, default=1)
    assert space["architecture"] == Categorical("architecture", ("conv", "fc"), default="conv")
    assert space["depth"] == Ordinal("depth", (1, 2, 4), default=2)
    assert space["units"] == Int("units", 8, 512, log=True, default=64)
    assert space["drop"] == Float("drop", 0.0, 1.0, default=0.5)
    assert "epochs" not in space
    assert Space.from_any(manager).params == space.params  # what every tunekit searcher reads


@pytest.mark.parametrize("source", ["_('w', [0.1, 0.2], range=[0, 1])", "_('w', 0.1, sigma=0.5)"])
def test_space_from_hpman_refuses_what_a_space_cannot_hold(source):
    with pytest.raises(ValueError, match="'w'.*NevergradSearch"):
        space_from_hpman(manager_of(source))


# -- value injection ----------------------------------------------------------------------------------
def test_two_concurrent_trials_in_one_process_never_see_each_others_values():
    sources = [(str(TRAINING), TRAINING.read_text())]
    configs = [{"learning_rate": 0.5, "batch_size": 7, "architecture": "fc"}, {"learning_rate": 0.01}]
    seen = [None, None]

    def trial(i):
        seen[i] = call_with_values(hpman_training.read_values_together, configs[i], sources=sources)

    threads = [threading.Thread(target=trial, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen[0] == {"learning_rate": 0.5, "batch_size": 7, "architecture": "fc"}
    assert seen[1] == {"learning_rate": 0.01, "batch_size": 1, "architecture": "conv"}
    assert "learning_rate" not in _.get_values()  # nothing leaked to the process-wide manager


def test_values_are_restored_after_a_trial_and_parsed_defaults_are_visible():
    manager = manager_of(SEED_DECLARATIONS)
    with injected_values(manager, {"batch_size": 9}, sources=[("d.py", SEED_DECLARATIONS)]):
        assert manager.get_value("batch_size") == 9
        with injected_values(manager, {"epochs": 5}, sources=[("d.py", SEED_DECLARATIONS)]):
            assert manager.get_value("batch_size") == 1 and manager.get_value("epochs") == 5
        assert manager.get_value("batch_size") == 9 and manager.get_value("epochs") == 3
    assert manager.get_values() == {"learning_rate": 1e-3, "batch_size": 1, "architecture": "conv", "epochs": 3}


def test_a_function_taking_the_config_gets_it_and_bad_outcomes_are_refused():
    seen = call_with_values(lambda config: (config["batch_size"], _("batch_size", 1)), {"batch_size": 3})
    assert seen == (3, 3)
    with pytest.raises(TypeError, match="return a number"):
        report_outcome("0.5", "loss")


def test_cli_options_parse_back_exactly_with_hpargparse():
    import argparse

    manager = manager_of("_('learning_rate', 0.1)\n_('widths', [1, 2])\n_('arch', 'conv')\n_('flag', False)")
    parser = argparse.ArgumentParser()
    hpargparse.bind(parser, manager)
    config = {"learning_rate": 1 / 3, "widths": [4, 5, 6], "arch": "fc", "flag": True}
    parser.parse_args(cli_options(config))
    assert manager.get_values() == config


def test_unmodified_hpargparse_script_runs_with_injected_values_in_two_threads():
    configs = [{"learning_rate": 0.25, "batch_size": 5, "architecture": "fc"},
               {"learning_rate": 0.2, "batch_size": 4, "architecture": "conv"}]
    outcomes = [None, None]

    def trial(i):
        outcomes[i] = run_script(str(SCRIPT), configs[i], args=["--repeats", "2"])["outcome"]

    threads = [threading.Thread(target=trial, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for config, outcome in zip(configs, outcomes):
        expected = 2 * ((config["learning_rate"] - 0.2) ** 2 + (config["batch_size"] - 4) ** 2
                        + (0 if config["architecture"] == "conv" else 10))
        assert outcome["loss"] == pytest.approx(expected)
        for name, value in config.items():
            assert outcome[name] == value and outcome[f"cli_{name}"] == value


def test_script_failures_and_bad_paths_are_reported(tmp_path):
    failing = tmp_path / "failing.py"
    failing.write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(RuntimeError, match="exited with code 3"):
        run_script(str(failing), {})
    with pytest.raises(ValueError, match="not a file"):
        hpman_script(str(tmp_path / "missing.py"))


def test_reused_ray_worker_runs_trials_with_their_own_values(ray_session, tmp_path):
    """Four trials, one at a time, in one reused worker process: two run a function, two the script; the
    second of each pair sets fewer values and must see the defaults, not the first trial's values."""
    adapters = {"function": hpman_trainable(hpman_training.train),
                "script": hpman_script(str(SCRIPT), result="outcome")}
    first = {"learning_rate": 0.5, "batch_size": 7, "architecture": "fc"}
    grid = [{"adapter": name, "hp": hp} for name in adapters for hp in (first, {"learning_rate": 0.1})]
    tuner = tune.Tuner(
        lambda config: adapters[config["run"]["adapter"]](config["run"]["hp"]),
        param_space={"run": tune.grid_search(grid)},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True, metric="loss", mode="min"),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    results = [result.metrics for result in tuner.fit()]
    assert len(results) == 4 and len({m["pid"] for m in results}) == 1  # one worker process, reused
    for metrics in results:
        run = metrics["config"]["run"]
        seen = {name: metrics[("seen_" if run["adapter"] == "function" else "") + name]
                for name in ("learning_rate", "batch_size", "architecture")}
        assert seen == {**{"batch_size": 1, "architecture": "conv"}, **run["hp"]}
        assert metrics["loss"] == pytest.approx(hpman_training.fake_training(**seen))
