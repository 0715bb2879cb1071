"""Hypothesis strategies for spaces from other libraries: Ray Tune param_spaces, ConfigSpace objects, hpman
declarations (as Python source). Valid ones a Space must accept; bad ones with the culprit the error must name.
"""

import keyword
import math
from typing import Any

from hypothesis import reject, strategies as st

from fuzz_strategies import (Bad, deeply_nested, float_entry, int_entry, json_key, names, text, toml_values,
                             unique_values)

# ConfigSpace keeps values in numpy arrays, whose strings lose trailing NULs: no control characters there.
printable = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8)


# --- Ray Tune param_space -------------------------------------------------------------------------------


@st.composite
def valid_tune_domain(draw) -> Any:
    """A Ray Tune domain (or plain constant) that tunekit's Space can represent."""
    from ray import tune

    kind = draw(st.sampled_from(["float", "int", "qint", "choice", "constant"]))
    if kind == "float":
        entry = draw(float_entry())
        low, high, log, step = entry["low"], entry["high"], entry.get("log", False), entry.get("step")
        if step is None:
            return (tune.loguniform if log else tune.uniform)(low, high)
        step = float(f"{step:.3g}")
        low = math.ceil(low / step) * step
        high = low + step * draw(st.integers(1, 1000))
        if log:
            return tune.qloguniform(max(low, step), high + step, step)
        return tune.quniform(low, high, step)
    if kind in ("int", "qint"):
        log = draw(st.booleans())
        low = draw(st.integers(1, 10**5)) if log else draw(st.integers(-10**6, 10**6))
        high = low + draw(st.integers(2, 10**6))
        if kind == "int":
            return (tune.lograndint if log else tune.randint)(low, high)
        q = draw(st.integers(2, 50))
        high = max(high, low + 2 * q)
        return (tune.qlograndint if log else tune.qrandint)(low, high, q)
    if kind == "choice":
        return tune.choice(draw(unique_values))
    return draw(toml_values.filter(lambda v: not isinstance(v, dict)))


@st.composite
def valid_param_space(draw) -> dict:
    keys = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    space: dict = {}
    for i, key in enumerate(keys):
        node = space.setdefault("g", {}) if i % 2 and "g" not in keys else space
        node[key] = draw(valid_tune_domain())
    return space


@st.composite
def bad_param_space(draw) -> Bad:
    """A valid param_space with one entry replaced by something Space cannot represent."""
    from ray import tune

    space = draw(valid_param_space())
    name = draw(names.filter(lambda k: k not in space))
    bad, why = draw(st.sampled_from([
        (lambda: tune.uniform(1.0, 0.0), "uniform low > high"),
        (lambda: tune.uniform(0.0, 10**400), "uniform bound past a float"),
        (lambda: tune.uniform(-1.7e308, 1.7e308), "uniform range past a float"),
        (lambda: tune.quniform(0.0, 1.0, 1e-300), "quniform with 1e300 steps"),
        (lambda: tune.qrandint(0, 10, 0), "qrandint q=0"),
        (lambda: tune.qrandint(0, 10, -2), "qrandint negative q"),
        (lambda: tune.qrandint(0, 10, float("nan")), "qrandint q=NaN"),
        (lambda: tune.randint(5, 5), "empty randint"),
        (lambda: tune.randint(0, 2**62), "randint past 2**40"),
        (lambda: tune.choice([]), "empty choice"),
        (lambda: tune.choice([1, 1]), "duplicate choice"),
        (lambda: tune.choice([object()]), "choice of an object"),
        (lambda: tune.choice([float("nan")]), "choice of NaN"),
        (lambda: tune.grid_search([1, 2]), "grid_search"),
        (lambda: tune.sample_from(lambda _: 1), "sample_from"),
        (lambda: tune.randn(0, 1), "randn"),
        (lambda: [tune.uniform(0, 1)], "domain in a list"),
        (lambda: {"inner": tune.choice([])}, "bad domain nested"),
        (lambda: deeply_nested(200, tune.uniform(0, 1)), "nested 200 deep"),
    ]))
    return Bad({**space, name: bad()}, name, why)


# --- ConfigSpace -----------------------------------------------------------------------------------------


@st.composite
def valid_configspace(draw) -> Any:
    import ConfigSpace as CS

    cs = CS.ConfigurationSpace(seed=0)
    for i, key in enumerate(draw(st.lists(names, min_size=1, max_size=5, unique=True))):
        kind = draw(st.sampled_from(["float", "int", "categorical", "ordinal", "constant"]))
        if kind == "float":
            e = draw(float_entry().filter(lambda e: "step" not in e))
            hp = _configspace_accepts(lambda: CS.UniformFloatHyperparameter(
                key, e["low"], e["high"], log=e.get("log", False), default_value=e.get("default")))
        elif kind == "int":
            e = draw(int_entry().filter(lambda e: e["high"] - e["low"] <= 10**6))
            hp = CS.UniformIntegerHyperparameter(key, e["low"], e["high"], log=e.get("log", False),
                                                 default_value=e.get("default"))
        elif kind == "categorical":
            choices = draw(st.lists(printable, min_size=1, max_size=4, unique=True))
            hp = _configspace_accepts(lambda: CS.CategoricalHyperparameter(key, choices))
        elif kind == "ordinal":
            hp = CS.OrdinalHyperparameter(key, draw(st.lists(st.integers(-100, 100), min_size=1, max_size=4,
                                                             unique=True)))
        else:
            value = draw(printable)
            hp = _configspace_accepts(lambda: CS.Constant(key, value))
        cs.add(hp)
    return cs


def _configspace_accepts(make: Any) -> Any:
    """``make()``, or a rejected example when ConfigSpace itself refuses the hyperparameter (its own check)."""
    try:
        return make()
    except (ValueError, TypeError):
        reject()


@st.composite
def bad_configspace(draw) -> Bad:
    """A valid ConfigurationSpace plus one hyperparameter (or clause) a Space cannot hold."""
    import ConfigSpace as CS

    cs = draw(valid_configspace())
    name = draw(names.filter(lambda k: k not in cs))
    kind = draw(st.sampled_from(["normal", "beta", "weights", "condition", "forbidden", "huge int"]))
    if kind == "normal":
        cs.add(CS.NormalFloatHyperparameter(name, mu=0.0, sigma=1.0, lower=-3.0, upper=3.0))
    elif kind == "beta":
        cs.add(CS.BetaFloatHyperparameter(name, alpha=2.0, beta=2.0, lower=0.0, upper=1.0))
    elif kind == "weights":
        cs.add(CS.CategoricalHyperparameter(name, ["a", "b"], weights=[0.9, 0.1]))
    elif kind == "huge int":
        cs.add(CS.UniformIntegerHyperparameter(name, 0, 2**62))
    else:
        switch = CS.CategoricalHyperparameter(name, ["on", "off"])
        cs.add(switch)
        other = CS.UniformFloatHyperparameter(name + "_x", 0.0, 1.0)
        cs.add(other)
        clause = (CS.EqualsCondition(other, switch, "on") if kind == "condition"
                  else CS.ForbiddenEqualsClause(switch, "off"))
        cs.add(clause)
    return Bad(cs, name, kind)


# --- hpman declarations ------------------------------------------------------------------------------------


def _literal(value: Any) -> str:
    """Python literal source of ``value`` (infinities as 1e999, which ``ast.literal_eval`` reads)."""
    if isinstance(value, float) and math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def hpman_source(declarations: list[tuple[str, Any, dict]]) -> str:
    """Python source declaring each ``(name, default, hints)`` with hpman's ``_``."""
    lines = []
    for name, default, hints in declarations:
        args = "".join(f", {key}={_literal(value)}" for key, value in hints.items())
        lines.append(f"{name} = _({name!r}, {_literal(default)}{args})")
    return "\n".join(lines) + "\n"


identifiers = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(lambda s: not keyword.iskeyword(s))


@st.composite
def valid_hpman(draw) -> list:
    declarations = []
    for name in draw(st.lists(identifiers, min_size=1, max_size=4, unique=True)):
        kind = draw(st.sampled_from(["float", "int", "choices"]))
        if kind == "choices":
            choices = draw(st.lists(st.one_of(st.integers(-5, 5), text), min_size=1, max_size=4, unique_by=json_key))
            hints = {"choices": choices}
            if draw(st.booleans()):
                hints["transitions"] = draw(st.booleans())
            declarations.append((name, draw(st.sampled_from(choices)), hints))
            continue
        e = draw((float_entry() if kind == "float" else int_entry()).filter(lambda e: "step" not in e))
        low, high = e["low"], e["high"]
        default = e.get("default", low)
        hints = {"range": [low, high]}
        if e.get("log"):
            hints["scale"] = "log"
        if draw(st.booleans()):
            hints["sigma"] = draw(st.floats(1e-3, 10))
        declarations.append((name, default, hints))
    return declarations


@st.composite
def bad_hpman(draw) -> Bad:
    declarations = draw(valid_hpman())
    name = draw(identifiers.filter(lambda n: n not in {d[0] for d in declarations}))
    default, hints, why = draw(st.sampled_from([
        (0.5, {"range": [1.0, 0.0]}, "range low > high"),
        (0.5, {"range": [0.0]}, "range of one bound"),
        (0.5, {"range": [0.0, 1e999]}, "infinite range"),
        (5, {"range": [0, 1e999]}, "infinite int range"),
        (5, {"range": [0, 10**400]}, "huge int range"),
        (0.5, {"range": ["a", "b"]}, "range of strings"),
        (2.0, {"range": [0.0, 1.0]}, "default outside the range"),
        (0.5, {"range": [0.0, 1.0], "scale": "log"}, "log scale from 0"),
        (0.5, {"range": [0.0, 1.0], "scale": "cubic"}, "unknown scale"),
        (0.5, {"range": [0.0, 1.0], "scale": ["log"]}, "scale as a list"),
        (0.5, {"range": [0.0, 1.0], "method": "wrap"}, "unknown bound method"),
        (0.5, {"range": [0.0, 1.0], "sigma": -1.0}, "negative sigma"),
        (0.5, {"range": [0.0, 1.0], "custom": "laplace"}, "unknown mutation"),
        (0.5, {"range": [0.0, 1.0], "transitions": True}, "transitions without choices"),
        (0.5, {"rnage": [0.0, 1.0]}, "misspelt hint"),
        ("a", {"choices": []}, "empty choices"),
        ("a", {"choices": ["b", "c"]}, "default not a choice"),
        ("a", {"choices": "abc"}, "choices as a string"),
        ("a", {"choices": ["a", "a"]}, "duplicate choices"),
        ("a", {"choices": ["a"], "range": [0, 1]}, "choices with a range"),
        ("a", {"range": [0.0, 1.0]}, "range for a string default"),
        ([0.5], {"range": [0.0, 1.0]}, "array default"),
        (0.5, {"scale": "log"}, "no range"),
    ]))
    return Bad(declarations + [(name, default, hints)], name, why)
