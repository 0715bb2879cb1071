"""Tests for tunekit.Space: encoding invariants over random spaces, every converter, every input error."""

import json
import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunekit.space import Categorical, Constant, Float, Int, Ordinal, Space

# --- random spaces ----------------------------------------------------------------------------------

json_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(-1e3, 1e3, allow_nan=False),
    st.text(alphabet="abc", max_size=3), st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from("xy"), st.integers(0, 2), max_size=1),
)
unique_values = st.lists(json_values, min_size=1, max_size=5, unique_by=lambda v: json.dumps(v, sort_keys=True))


@st.composite
def floats(draw, name):
    log = draw(st.booleans())
    if log:
        low = 10.0 ** draw(st.floats(-6, 3))
        high = low * 10.0 ** draw(st.floats(0.01, 6))
    else:
        low = draw(st.floats(-100, 100))
        high = low + draw(st.floats(1e-2, 1e4))
    step = (high - low) * draw(st.floats(1e-3, 1.0)) if draw(st.booleans()) else None
    return Float(name, low, high, log=log, step=step)


@st.composite
def ints(draw, name):
    log = draw(st.booleans())
    low = draw(st.integers(1, 1000)) if log else draw(st.integers(-1000, 1000))
    return Int(name, low, low + draw(st.integers(1, 10**6)), log=log)


@st.composite
def params(draw, name):
    kind = draw(st.sampled_from(["float", "int", "categorical", "ordinal", "constant"]))
    if kind == "float":
        param = draw(floats(name))
    elif kind == "int":
        param = draw(ints(name))
    elif kind == "constant":
        return Constant(name, draw(json_values))
    else:
        param = (Categorical if kind == "categorical" else Ordinal)(name, tuple(draw(unique_values)))
    if draw(st.booleans()):
        default = param.sample(np.random.default_rng(draw(st.integers(0, 2**32))), 1)[0]
        param = replace(param, default=default)
    return param


@st.composite
def spaces(draw):
    n = draw(st.integers(1, 6))
    return Space([draw(params(f"{'group/' if i % 3 == 2 else ''}p{i}")) for i in range(n)])


property_settings = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@property_settings
@given(space=spaces(), seed=st.integers(0, 2**32))
def test_sampled_configs_round_trip_exactly_through_the_unit_cube(space, seed):
    configs = space.sample(5, seed=seed)
    for config in configs:
        space.validate(config)
    X = space.encode(configs)
    assert X.shape == (5, space.dim) and X.dtype == np.float64
    assert np.all((X >= 0.0) & (X <= 1.0))
    assert space.decode(X) == configs


@property_settings
@given(space=spaces(), seed=st.integers(0, 2**32))
def test_decoding_any_point_gives_valid_configs_and_project_is_idempotent(space, seed):
    X = np.random.default_rng(seed).uniform(-0.2, 1.2, size=(6, space.dim))
    for config in space.decode(X):
        space.validate(config)
    projected = space.project(X)
    assert np.all((projected >= 0.0) & (projected <= 1.0))
    assert np.array_equal(space.project(projected), projected)
    free = space.continuous_mask
    assert free.shape == (space.dim,)


@property_settings
@given(space=spaces())
def test_default_validates_and_uses_given_defaults(space):
    default = space.default()
    space.validate(default)
    assert space.decode(space.encode([default])) == [default]
    for param in space.params:
        if param.default is not None:
            assert default[param.name] == param.default


@property_settings
@given(space=spaces())
def test_to_dict_survives_json_and_flatten_inverts_unflatten(space):
    assert Space.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    config = space.default()
    assert space.flatten(space.unflatten(config)) == config


# --- encoding details -------------------------------------------------------------------------------

def test_encoding_layout_follows_the_interface():
    space = Space([Float("lr", 1e-4, 1e-0, log=True), Int("n", 2, 10), Categorical("act", ("relu", "tanh", "gelu")),
                   Ordinal("depth", (1, 2, 4)), Constant("k", 3), Float("q", 0.0, 1.0, step=0.25)])
    X = space.encode([{"lr": 1e-2, "n": 6, "act": "tanh", "depth": 4, "k": 3, "q": 0.75}])
    np.testing.assert_allclose(X, [[0.5, 0.5, 0.0, 1.0, 0.0, 1.0, 0.75]])
    assert space.dim == 7 and space.names == ["lr", "n", "act", "depth", "k", "q"]
    assert space.continuous_mask.tolist() == [True, False, False, False, False, False, False]
    assert space.cardinality is None
    assert Space([Int("n", 2, 10), Categorical("a", (1, 2)), Float("q", 0, 1, step=0.25)]).cardinality == 9 * 2 * 5
    assert space.default() == {"lr": 1e-2, "n": 6, "act": "relu", "depth": 2, "k": 3, "q": 0.5}
    assert space.decode(np.array([[2.0, -1.0, 0.1, 0.9, 0.9, 0.4, 0.6]])) == [
        {"lr": 1.0, "n": 2, "act": "tanh", "depth": 2, "k": 3, "q": 0.5}]
    assert Ordinal("one", ("x",)).encode(["x"]).tolist() == [[0.5]]


def test_sampling_is_uniform_over_integers_and_log_uniform_on_log_scales():
    space = Space([Int("n", 0, 3), Float("lr", 1e-6, 1.0, log=True), Float("q", 0.0, 1.0, step=0.5)])
    configs = space.sample(4000, seed=0)
    assert space.sample(3, seed=1) == space.sample(3, seed=1)
    counts = np.bincount([c["n"] for c in configs], minlength=4)
    assert counts.min() > 850, counts
    assert np.bincount([int(c["q"] * 2) for c in configs]).min() > 1200
    exponents = np.log10([c["lr"] for c in configs])
    assert abs(np.median(exponents) + 3.0) < 0.2 and np.mean(exponents < -5) > 0.12


def test_values_that_compare_equal_in_python_stay_distinct():
    space = Space([Categorical("v", (1, True, 1.0, None, [1, 2]))])
    for value in (1, True, 1.0, None, [1, 2]):
        [decoded] = space.decode(space.encode([{"v": value}]))
        assert type(decoded["v"]) is type(value) and decoded["v"] == value


def test_validate_names_the_missing_unknown_or_bad_key():
    space = Space([Int("n", 2, 8), Constant("k", 3)])
    space.validate({"n": 3})
    with pytest.raises(ValueError, match="misses parameter 'n'"):
        space.validate({"k": 3})
    with pytest.raises(ValueError, match="'m' is not a parameter"):
        space.validate({"n": 3, "m": 1})
    with pytest.raises(ValueError, match=r"'n': value 9 is not an integer in \[2, 8\]"):
        space.validate({"n": 9})
    with pytest.raises(ValueError, match="'k': value 4 differs from the constant 3"):
        space.validate({"n": 3, "k": 4})
    with pytest.raises(ValueError, match="shape"):
        space.decode(np.zeros((2, 3)))


def test_space_import_stays_light():
    code = ("import sys, tunekit.space; bad = [m for m in ('torch', 'ray.tune', 'ConfigSpace') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- converters -------------------------------------------------------------------------------------

def test_from_tune_maps_every_domain_and_matches_ray_sampling():
    from ray import tune

    param_space = {
        "lr": tune.loguniform(1e-4, 1e-1), "mom": tune.uniform(0.5, 0.99), "q": tune.quniform(0.0, 1.0, 0.1),
        "ql": tune.qloguniform(1e-3, 1.0, 1e-3), "n": tune.randint(2, 9), "n1": tune.qrandint(1, 5),
        "n8": tune.qrandint(0, 64, 8), "ln": tune.lograndint(1, 1025), "lq": tune.qlograndint(8, 32, 8),
        "act": tune.choice(["relu", "tanh"]), "one": tune.randint(3, 4), "k": 3,
        "opt": {"wd": tune.loguniform(1e-6, 1e-2), "name": "sgd", "betas": (0.9, 0.999)},
    }
    space = Space.from_tune(param_space)
    assert space.params == (
        Float("lr", 1e-4, 1e-1, log=True), Float("mom", 0.5, 0.99), Float("q", 0.0, 1.0, step=0.1),
        Float("ql", 1e-3, 1.0, log=True, step=1e-3), Int("n", 2, 8), Int("n1", 1, 4),
        Ordinal("n8", tuple(range(0, 65, 8))),
        Int("ln", 1, 1024, log=True), Ordinal("lq", (8, 16, 24, 32)), Categorical("act", ("relu", "tanh")),
        Constant("one", 3), Constant("k", 3), Float("opt/wd", 1e-6, 1e-2, log=True), Constant("opt/name", "sgd"),
        Constant("opt/betas", (0.9, 0.999)))
    rng = np.random.default_rng(0)
    for name in ("lr", "mom", "q", "ql", "n", "n1", "n8", "ln", "lq", "act"):
        seen = set()
        for value in param_space[name].sample(size=400, random_state=rng):
            space[name].check(value)
            seen.add(value)
        if space[name].cardinality is not None and space[name].cardinality <= 9:
            assert len(seen) == space[name].cardinality, name
    assert space.unflatten(space.default())["opt"]["name"] == "sgd"


def test_to_tune_round_trips_and_ray_samples_are_valid():
    from ray import tune

    space = Space([Float("lr", 1e-4, 1e-1, log=True), Float("q", 0.0, 1.0, step=0.25),
                   Float("off", 0.05, 1.0, step=0.1),
                   Int("n", 2, 8), Int("ln", 1, 1024, log=True), Categorical("act", ("relu", "tanh")),
                   Ordinal("depth", (1, 2, 4)), Constant("opt/name", "sgd"), Float("opt/wd", 0.0, 0.1)])
    param_space = space.to_tune()
    assert param_space["opt"]["name"] == "sgd" and isinstance(param_space["opt"]["wd"], tune.search.sample.Float)
    back = Space.from_tune(param_space)
    assert back.params[:2] == space.params[:2] and back.params[3:5] == space.params[3:5]
    assert back["depth"] == Categorical("depth", (1, 2, 4))
    rng = np.random.default_rng(0)
    for name in space.names:
        domain = space.flatten(param_space)[name]
        for value in (domain.sample(size=200, random_state=rng) if hasattr(domain, "sample") else [domain]):
            space[name].check(value)


def test_from_configspace_keeps_kinds_and_defaults():
    import ConfigSpace as CS

    cs = CS.ConfigurationSpace(seed=0)
    cs.add([CS.UniformFloatHyperparameter("lr", 1e-4, 1e-1, log=True, default_value=1e-3),
            CS.UniformFloatHyperparameter("dropout", 0.0, 0.5),
            CS.UniformIntegerHyperparameter("width", 16, 512, log=True, default_value=64),
            CS.CategoricalHyperparameter("act", ["relu", "tanh"], default_value="tanh"),
            CS.OrdinalHyperparameter("depth", [1, 2, 4]), CS.Constant("opt", "adam")])
    space = Space.from_configspace(cs)
    assert {p.name: p for p in space.params} == {
        "lr": Float("lr", 1e-4, 1e-1, log=True, default=1e-3), "dropout": Float("dropout", 0.0, 0.5, default=0.25),
        "width": Int("width", 16, 512, log=True, default=64),
        "act": Categorical("act", ("relu", "tanh"), default="tanh"),
        "depth": Ordinal("depth", (1, 2, 4), default=1), "opt": Constant("opt", "adam")}
    assert space.default() == {k: v for k, v in cs.get_default_configuration().items()}
    for config in cs.sample_configuration(50):
        space.validate(dict(config))


def test_from_dict_reads_own_maggy_and_deephyper_forms():
    space = Space.from_dict({
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "default": 1e-3},
        "q": {"type": "float", "low": 0, "high": 1, "step": 0.1}, "n": {"type": "int", "low": 1, "high": 4},
        "act": {"type": "categorical", "values": ["relu", "tanh"]}, "depth": {"type": "ordinal", "values": [1, 2, 4]},
        "k": {"type": "constant", "value": 3}})
    assert space["lr"] == Float("lr", 1e-4, 1e-1, log=True, default=1e-3) and space["q"].step == 0.1
    assert space["depth"] == Ordinal("depth", (1, 2, 4)) and space["k"] == Constant("k", 3)

    maggy = Space.from_dict(dict(kernel=("INTEGER", [2, 8]), dropout=("DOUBLE", [0.01, 0.99]),
                                 pool=["DISCRETE", [4, 1, 2]], opt=("CATEGORICAL", ["adam", "sgd"])))
    assert maggy.params == (Int("kernel", 2, 8), Float("dropout", 0.01, 0.99), Ordinal("pool", (1, 2, 4)),
                            Categorical("opt", ("adam", "sgd")))

    problem = {"epochs": (5, 500), "nunits": (8, 1024), "activation": ["relu", "elu", "tanh"],
               "batch_size": [64, 8, 32], "dropout": (0.0, 1.0), "learning_rate": (1e-4, 1e-1, "log-uniform"),
               "seed": 42}
    start = {"epochs": 5, "nunits": 8, "activation": "relu", "batch_size": 8, "dropout": 0.0, "learning_rate": 1e-4}
    deephyper = Space.from_dict(problem, starting_point=start)
    assert deephyper.params == (
        Int("epochs", 5, 500, default=5), Int("nunits", 8, 1024, default=8),
        Categorical("activation", ("relu", "elu", "tanh"), default="relu"),
        Ordinal("batch_size", (8, 32, 64), default=8),
        Float("dropout", 0.0, 1.0, default=0.0), Float("learning_rate", 1e-4, 1e-1, log=True, default=1e-4),
        Constant("seed", 42))
    assert deephyper.default() == {**start, "seed": 42}


def test_from_any_dispatches_on_the_kind_of_input():
    import ConfigSpace as CS
    from ray import tune

    space = Space([Int("n", 1, 3)])
    assert Space.from_any(space) is space
    assert Space.from_any({"n": tune.randint(1, 4)}) == space
    assert Space.from_any({"n": {"type": "int", "low": 1, "high": 3}}) == space
    assert Space.from_any(CS.ConfigurationSpace({"n": (1, 3)})) == Space([Int("n", 1, 3, default=2)])
    assert Space.from_any([Int("n", 1, 3)]) == space
    with pytest.raises(TypeError, match="cannot make a Space from int"):
        Space.from_any(3)


def test_from_hpman_delegates_to_tunekit_hpman():
    pytest.importorskip("tunekit.hpman")
    import hpman

    manager = hpman.HyperParameterManager("_")
    manager.parse_source("_('lr', 1e-3, range=[1e-4, 1e-1], scale='log')\n_('act', 'relu', choices=['relu', 'tanh'])")
    space = Space.from_hpman(manager)
    assert isinstance(space, Space) and set(space.names) == {"lr", "act"}
    assert Space.from_any(manager) == space


def test_equality_and_repr():
    a = Space([Categorical("c", ((1, 2), "x"))])
    assert a == Space.from_dict({"c": {"type": "categorical", "values": [[1, 2], "x"]}})
    assert a != Space([Ordinal("c", ((1, 2), "x"))])
    assert repr(a) == "Space([Categorical(name='c', values=((1, 2), 'x'), default=None)])"


# --- errors: one per case, each naming the parameter --------------------------------------------------

def _tune_space(key):
    from ray import tune

    return {"grid": {"lr": tune.grid_search([0.1, 0.2])}, "fn": {"lr": tune.sample_from(lambda _: 0.1)},
            "randn": {"lr": tune.randn(0.0, 1.0)}, "list": {"lr": [tune.uniform(0, 1)]},
            "empty": {"lr": tune.randint(3, 3)}}[key]


def _configspace(kind):
    import ConfigSpace as CS

    cs = CS.ConfigurationSpace()
    a, b = CS.CategoricalHyperparameter("opt", ["sgd", "adam"]), CS.UniformFloatHyperparameter("mom", 0.0, 1.0)
    if kind == "normal":
        cs.add(CS.NormalFloatHyperparameter("mom", mu=0.5, sigma=0.1, lower=0.0, upper=1.0))
    elif kind == "weights":
        cs.add(CS.CategoricalHyperparameter("opt", ["sgd", "adam"], weights=[0.9, 0.1]))
    elif kind == "condition":
        cs.add([a, b, CS.EqualsCondition(b, a, "sgd")])
    else:
        cs.add([a, b, CS.ForbiddenAndConjunction(CS.ForbiddenEqualsClause(a, "adam"),
                                                  CS.ForbiddenEqualsClause(b, 0.5))])
    return cs


ERROR_CASES = {
    "low_not_below_high": (lambda: Float("lr", 1.0, 1.0), ValueError, "'lr': low=1.0 must be < high=1.0"),
    "int_low_not_below_high": (lambda: Int("n", 5, 2), ValueError, "'n': low=5 must be < high=2"),
    "log_with_low_zero": (lambda: Float("lr", 0.0, 1.0, log=True), ValueError, "'lr': a log scale needs low > 0"),
    "int_log_with_low_zero": (lambda: Int("n", 0, 8, log=True), ValueError, "'n': a log scale needs low > 0"),
    "nan_bound": (lambda: Float("lr", math.nan, 1.0), ValueError, "'lr': low must be a finite number"),
    "inf_bound": (lambda: Float("lr", 0.0, math.inf), ValueError, "'lr': high must be a finite number"),
    "non_number_bound": (lambda: Float("lr", "0", 1.0), TypeError, "'lr': low must be a finite number"),
    "fractional_int_bound": (lambda: Int("n", 0.5, 4), TypeError, "'n': low must be an integer"),
    "step_zero": (lambda: Float("q", 0.0, 1.0, step=0.0), ValueError, "'q': step=0.0 must be > 0"),
    "step_over_range": (lambda: Float("q", 0.0, 1.0, step=1.5), ValueError, "'q': step=1.5 must be > 0 and at most"),
    "empty_choices": (lambda: Categorical("act", ()), ValueError, "'act': values must hold at least one value"),
    "duplicate_values": (lambda: Ordinal("d", (1, 2, 2)), ValueError, "'d': value 2 appears more than once"),
    "values_not_a_list": (lambda: Categorical("act", "relu"), TypeError, "'act': values must be a list or tuple"),
    "non_json_value": (lambda: Categorical("act", (object(),)), TypeError, "'act': value .* is not JSON-able"),
    "nan_value": (lambda: Categorical("act", (math.nan,)), TypeError, "'act': value nan is not JSON-able"),
    "float_default_outside": (lambda: Float("lr", 0.0, 1.0, default=2.0), ValueError,
        r"'lr': default 2.0 is not a float in \[0.0, 1.0\]"),
    "default_off_grid": (lambda: Float("q", 0.0, 1.0, step=0.25, default=0.3), ValueError,
        "'q': default 0.3 is not on the grid"),
    "int_default_outside": (lambda: Int("n", 1, 4, default=9), ValueError, "'n': default 9 is not an integer"),
    "categorical_default_outside": (lambda: Categorical("act", ("relu",), default="tanh"), ValueError,
        "'act': default 'tanh' is not one of"),
    "bad_name": (lambda: Int("a//b", 1, 2), ValueError, "parameter name must be a non-empty string"),
    "duplicate_name": (lambda: Space([Int("n", 1, 2), Int("n", 1, 3)]), ValueError,
        "parameter 'n' appears more than once"),
    "name_is_value_and_group": (lambda: Space([Int("opt", 1, 2), Int("opt/lr", 1, 3)]), ValueError,
        "'opt/lr' is nested under parameter 'opt'"),
    "not_a_parameter": (lambda: Space([("lr", 0, 1)]), TypeError, "Space takes Float, Int, Categorical"),
    "unknown_type": (lambda: Space.from_dict({"lr": {"type": "double", "low": 0, "high": 1}}), ValueError,
        "'lr': type 'double' is not one of"),
    "missing_type": (lambda: Space.from_dict({"lr": {"low": 0, "high": 1}}), ValueError,
        "'lr': type None is not one of"),
    "unknown_key": (lambda: Space.from_dict({"lr": {"type": "float", "low": 0, "high": 1, "lg": True}}), ValueError,
        r"'lr': unknown key\(s\) \['lg'\]"),
    "missing_key": (lambda: Space.from_dict({"lr": {"type": "float", "low": 0}}), ValueError,
        r"'lr': type 'float' needs key\(s\) \['high'\]"),
    "bad_deephyper_tuple": (lambda: Space.from_dict({"lr": (0.1, 0.2, 0.3)}), ValueError,
        "'lr': a tuple is a DeepHyper range"),
    "bad_maggy_range": (lambda: Space.from_dict({"k": ("INTEGER", [2, 4, 8])}), ValueError,
        r"'k': maggy INTEGER takes \[low, high\]"),
    "maggy_discrete_strings": (lambda: Space.from_dict({"k": ("DISCRETE", ["a"])}), ValueError,
        "'k': maggy DISCRETE takes numbers"),
    "starting_point_unknown": (lambda: Space.from_dict({"lr": (0.1, 0.2)}, starting_point={"lrr": 0.1}), ValueError,
        "starting_point names 'lrr'"),
    "starting_point_outside": (lambda: Space.from_dict({"n": (1, 4)}, starting_point={"n": 7}), ValueError,
        "'n': default 7 is not an integer"),
    "tune_grid_search": (lambda: Space.from_tune(_tune_space("grid")), ValueError,
        "'lr': tune.grid_search is not supported"),
    "tune_sample_from": (lambda: Space.from_tune(_tune_space("fn")), ValueError,
        "'lr': tune.sample_from is not supported"),
    "tune_randn": (lambda: Space.from_tune(_tune_space("randn")), ValueError,
        "'lr': sampler Normal .* is not supported"),
    "tune_domain_in_list": (lambda: Space.from_tune(_tune_space("list")), ValueError,
        "'lr': Ray domains inside a list"),
    "tune_empty_randint": (lambda: Space.from_tune(_tune_space("empty")), ValueError,
        r"'lr': tune.randint\(3, 3\) holds no integer"),
    "configspace_normal": (lambda: Space.from_configspace(_configspace("normal")), ValueError,
        "'mom': NormalFloatHyperparameter is not supported"),
    "configspace_weights": (lambda: Space.from_configspace(_configspace("weights")), ValueError,
        "'opt': non-uniform categorical weights"),
    "configspace_condition": (lambda: Space.from_configspace(_configspace("condition")), ValueError,
        "conditions are not supported.*mom"),
    "configspace_forbidden": (lambda: Space.from_configspace(_configspace("forbidden")), ValueError,
        "forbidden clauses are not supported.*opt"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_bad_input_fails_in_the_constructor_naming_the_parameter(case):
    build, error, message = ERROR_CASES[case]
    with pytest.raises(error, match=message):
        build()


def test_to_dict_rejects_a_constant_that_is_not_json():
    with pytest.raises(TypeError, match="'fn': constant .* is not JSON-able"):
        Space([Constant("fn", print)]).to_dict()
