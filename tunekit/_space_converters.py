"""Converters between :class:`tunekit.space.Space` parameters and Ray Tune, ConfigSpace and plain data.

Each converter turns foreign objects into parameter records once, at the boundary, and raises one clear
error naming the parameter for anything it cannot represent. Ray Tune and ConfigSpace are imported lazily.
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import Any, Mapping

from tunekit.parameters import (Categorical, Constant, Float, Int, Ordinal, Parameter, _is_number, _json_key,
                           _plain)

_TUNE_ACCEPTED = ("accepted: tune.uniform, quniform, loguniform, qloguniform, randint, qrandint, lograndint, "
                  "qlograndint, choice, plain constants and nested dicts")
# Deepest nesting of param_space dicts: deeper ones are refused by name instead of exhausting the stack.
MAX_NESTING = 64


# --- Ray Tune ---------------------------------------------------------------------------------------

def holds_tune_domain(node: Any, depth: int = 0) -> bool:
    """True when a (nested) dict holds a Ray Tune domain or a ``grid_search`` spec (checked without
    importing Ray) within ``MAX_NESTING`` levels."""
    if depth > MAX_NESTING:
        return False
    if isinstance(node, Mapping):
        return "grid_search" in node or any(holds_tune_domain(v, depth + 1) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(holds_tune_domain(v, depth + 1) for v in node)
    return (type(node).__module__ or "").startswith("ray.tune")


def params_from_tune(param_space: Mapping[str, Any]) -> list[Parameter]:
    """Ray Tune ``param_space`` -> parameter records; nested dict keys join into "a/b" path names."""
    if not isinstance(param_space, Mapping):
        raise TypeError(f"from_tune takes a param_space dict, got {param_space!r}")
    params: list[Parameter] = []
    _walk_tune(param_space, "", params)
    return params


def _walk_tune(node: Mapping[str, Any], prefix: str, params: list[Parameter]) -> None:
    from ray.tune.search import sample

    for key, value in node.items():
        if not isinstance(key, str) or "/" in key:
            raise ValueError(f"param_space key {prefix}{key!r} must be a string without '/' "
                             "('/' joins nested keys into path names)")
        name = prefix + key
        if name.count("/") >= MAX_NESTING:
            raise ValueError(f"parameter {name[:200]!r}...: param_space is nested more than {MAX_NESTING} levels "
                             "deep")
        if isinstance(value, Mapping) and "grid_search" in value:
            raise ValueError(f"parameter {name!r}: tune.grid_search is not supported by tunekit's Space "
                             f"(searchers choose the points); use tune.choice instead; {_TUNE_ACCEPTED}")
        if isinstance(value, Mapping) and value:
            _walk_tune(value, name + "/", params)
        elif isinstance(value, sample.Domain):
            params.append(_param_from_domain(name, value, sample))
        elif holds_tune_domain(value):
            raise ValueError(f"parameter {name!r}: Ray domains inside a list or tuple are not supported; "
                             f"use a dict of domains instead; {_TUNE_ACCEPTED}")
        else:
            params.append(Constant(name, value))


def _param_from_domain(name: str, domain: Any, sample: Any) -> Parameter:
    """One Ray ``Domain`` -> one parameter record (``sample`` is ``ray.tune.search.sample``)."""
    if isinstance(domain, sample.Function):
        raise ValueError(f"parameter {name!r}: tune.sample_from is not supported (a Space needs a known "
                         f"range); {_TUNE_ACCEPTED}")
    if domain.is_grid():
        raise ValueError(f"parameter {name!r}: a grid domain is not supported; {_TUNE_ACCEPTED}")
    sampler = domain.get_sampler()
    q = None
    if isinstance(sampler, sample.Quantized):
        q, sampler = sampler.q, sampler.get_sampler()
    log = isinstance(sampler, sample.LogUniform)
    if isinstance(domain, sample.Categorical):
        return Categorical(name, tuple(domain.categories))
    if not isinstance(sampler, (sample.Uniform, sample.LogUniform)):
        raise ValueError(f"parameter {name!r}: sampler {sampler} (e.g. tune.randn) is not supported; "
                         f"{_TUNE_ACCEPTED}")
    if isinstance(domain, sample.Float):
        return Float(name, domain.lower, domain.upper, log=log, step=q)
    if isinstance(domain, sample.Integer):
        return _param_from_integer(name, domain.lower, domain.upper, q, log)
    raise TypeError(f"parameter {name!r}: Ray domain {domain!r} is not supported; {_TUNE_ACCEPTED}")


def _param_from_integer(name: str, lower: int, upper: int, q: float | None, log: bool) -> Parameter:
    """Ray integer domain -> Int (upper exclusive when q is None or 1), or the multiples of q > 1
    (upper inclusive) as an Ordinal."""
    if q is not None and not (_is_number(q) and 0 < q < math.inf):
        raise ValueError(f"parameter {name!r}: quantization q={q!r} must be a finite number > 0")
    if q is None or q == 1:
        if upper - 1 < lower:
            raise ValueError(f"parameter {name!r}: tune.randint({lower}, {upper}) holds no integer "
                             "(Ray's upper bound is exclusive)")
        if upper - 1 == lower:
            return Constant(name, int(lower))
        return Int(name, lower, upper - 1, log=log)
    first, last = _grid_index(lower / q, math.ceil), _grid_index(upper / q, math.floor)
    values = tuple(int(k * q) for k in range(first, last + 1))
    if not values:
        raise ValueError(f"parameter {name!r}: no multiple of q={q} lies in [{lower}, {upper}]")
    return Constant(name, values[0]) if len(values) == 1 else Ordinal(name, values)


def _grid_index(scaled: float, round_inwards: Any) -> int:
    nearest = round(scaled)
    return int(nearest if math.isclose(scaled, nearest) else round_inwards(scaled))


def param_to_tune(param: Parameter) -> Any:
    """One parameter record -> a Ray Tune domain (a plain value for a Constant)."""
    from ray import tune

    if isinstance(param, Float):
        if param.step is None:
            return (tune.loguniform if param.log else tune.uniform)(param.low, param.high)
        top = param.low + param.n_steps * param.step
        if all(math.isclose(b / param.step, round(b / param.step)) for b in (param.low, top)):
            return (tune.qloguniform if param.log else tune.quniform)(param.low, top, param.step)
        return tune.choice([param._grid_value(k) for k in range(param.n_steps + 1)])
    if isinstance(param, Int):
        return (tune.lograndint if param.log else tune.randint)(param.low, param.high + 1)
    if isinstance(param, (Categorical, Ordinal)):
        return tune.choice(list(param.values))
    return param.value


# --- ConfigSpace ------------------------------------------------------------------------------------

def params_from_configspace(configspace: Any) -> list[Parameter]:
    """ConfigSpace 1.x ``ConfigurationSpace`` -> parameter records, with its defaults."""
    import ConfigSpace as CS

    if not isinstance(configspace, CS.ConfigurationSpace):
        raise TypeError(f"from_configspace takes a ConfigSpace.ConfigurationSpace, got {configspace!r}")
    if configspace.conditions:
        raise ValueError("ConfigSpace conditions are not supported by tunekit's Space (every parameter is "
                         f"always active); remove them: {[str(c) for c in configspace.conditions]}")
    if configspace.forbidden_clauses:
        raise ValueError("ConfigSpace forbidden clauses are not supported by tunekit's Space; remove them: "
                         f"{[str(c) for c in configspace.forbidden_clauses]}")
    return [_param_from_hyperparameter(name, hp, CS) for name, hp in configspace.items()]


def _param_from_hyperparameter(name: str, hp: Any, CS: Any) -> Parameter:
    default = _plain(getattr(hp, "default_value", None))
    if isinstance(hp, CS.UniformFloatHyperparameter):
        return Float(name, float(hp.lower), float(hp.upper), log=bool(hp.log), default=default)
    if isinstance(hp, CS.UniformIntegerHyperparameter):
        return Int(name, int(hp.lower), int(hp.upper), log=bool(hp.log), default=default)
    if isinstance(hp, CS.CategoricalHyperparameter):
        if hp.weights is not None and len(set(hp.weights)) > 1:
            raise ValueError(f"parameter {name!r}: non-uniform categorical weights {hp.weights} are not "
                             "supported; remove the weights")
        return Categorical(name, tuple(hp.choices), default=default)
    if isinstance(hp, CS.OrdinalHyperparameter):
        return Ordinal(name, tuple(hp.sequence), default=default)
    if isinstance(hp, CS.Constant):
        return Constant(name, hp.value)
    raise ValueError(f"parameter {name!r}: {type(hp).__name__} is not supported (normal and beta priors "
                     "cannot be represented); accepted: UniformFloat, UniformInteger, Categorical, "
                     "Ordinal, Constant")


# --- plain data: tunekit's own form, maggy's and DeepHyper's ----------------------------------------

_ENTRY_KEYS = {
    "float": ({"low", "high"}, {"log", "step", "default"}),
    "int": ({"low", "high"}, {"log", "default"}),
    "categorical": ({"values"}, {"default"}),
    "ordinal": ({"values"}, {"default"}),
    "constant": ({"value"}, set()),
}
_MAGGY_TYPES = ("INTEGER", "DOUBLE", "DISCRETE", "CATEGORICAL")
_DEEPHYPER_PRIORS = {"uniform": False, "log-uniform": True}


def params_from_dict(spec: Mapping[str, Any], starting_point: Mapping[str, Any] | None) -> list[Parameter]:
    """Plain-data spec -> parameter records; ``starting_point`` entries become defaults."""
    if not isinstance(spec, Mapping):
        raise TypeError(f"from_dict takes a dict of parameter entries, got {spec!r}")
    starting_point = dict(starting_point or {})
    for name in starting_point:
        if name not in spec:
            raise ValueError(f"starting_point names {name!r}, which is not a parameter; names are {list(spec)}")
    params = []
    for name, entry in spec.items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be strings, got {name!r}")
        param = _param_from_entry(name, entry)
        if name in starting_point:
            param = _with_default(param, starting_point[name])
        params.append(param)
    return params


def _with_default(param: Parameter, default: Any) -> Parameter:
    if isinstance(param, Constant):
        param.check(default, "starting point")
        return param
    fields = {k: v for k, v in vars(param).items() if not k.startswith("_")}
    return type(param)(**{**fields, "default": default})


def _param_from_entry(name: str, entry: Any) -> Parameter:
    if isinstance(entry, Mapping):
        return _param_from_typed_entry(name, entry)
    if isinstance(entry, (tuple, list)) and len(entry) == 2 and entry[0] in _MAGGY_TYPES:
        return _param_from_maggy(name, entry[0], entry[1])
    if isinstance(entry, tuple):
        return _param_from_deephyper_range(name, entry)
    if isinstance(entry, list):
        if entry and all(_is_number(v) for v in entry):
            return Ordinal(name, tuple(sorted(entry)))
        return Categorical(name, tuple(entry))
    return Constant(name, entry)


def _param_from_typed_entry(name: str, entry: Mapping[str, Any]) -> Parameter:
    kind = entry.get("type")
    if not isinstance(kind, str) or kind not in _ENTRY_KEYS:
        raise ValueError(f"parameter {name!r}: type {kind!r} is not one of {sorted(_ENTRY_KEYS)}")
    required, optional = _ENTRY_KEYS[kind]
    keys = set(entry) - {"type"}
    if keys - required - optional:
        raise ValueError(f"parameter {name!r}: unknown key(s) {sorted(keys - required - optional)} for type "
                         f"{kind!r}; accepted: {sorted(required | optional)}")
    if required - keys:
        raise ValueError(f"parameter {name!r}: type {kind!r} needs key(s) {sorted(required - keys)}")
    fields = {k: v for k, v in entry.items() if k != "type"}
    if kind in ("categorical", "ordinal"):
        if not isinstance(fields["values"], (list, tuple)):
            raise TypeError(f"parameter {name!r}: values must be a list, got {fields['values']!r}")
        fields["values"] = tuple(fields["values"])
    kinds = {"float": Float, "int": Int, "categorical": Categorical, "ordinal": Ordinal, "constant": Constant}
    return kinds[kind](name, **fields)


def _param_from_maggy(name: str, kind: str, values: Any) -> Parameter:
    """maggy ``Searchspace`` entry: INTEGER/DOUBLE [low, high] (inclusive), DISCRETE/CATEGORICAL [values]."""
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"parameter {name!r}: maggy {kind} takes a list, got {values!r}")
    if kind in ("INTEGER", "DOUBLE"):
        if len(values) != 2:
            raise ValueError(f"parameter {name!r}: maggy {kind} takes [low, high], got {list(values)!r}")
        return (Int if kind == "INTEGER" else Float)(name, values[0], values[1])
    if kind == "DISCRETE":
        if not all(_is_number(v) for v in values):
            raise ValueError(f"parameter {name!r}: maggy DISCRETE takes numbers, got {list(values)!r}")
        return Ordinal(name, tuple(sorted(values)))
    return Categorical(name, tuple(values))


def _param_from_deephyper_range(name: str, entry: tuple) -> Parameter:
    """DeepHyper ``(low, high)`` or ``(low, high, prior)``: ints -> Int, else Float; prior "log-uniform"."""
    prior = entry[2] if len(entry) == 3 else "uniform"
    if (len(entry) not in (2, 3) or not all(_is_number(v) for v in entry[:2]) or not isinstance(prior, str)
            or prior not in _DEEPHYPER_PRIORS):
        raise ValueError(f"parameter {name!r}: a tuple is a DeepHyper range (low, high) or (low, high, prior) "
                         f"with prior in {sorted(_DEEPHYPER_PRIORS)}, got {entry!r}; write a list for a set "
                         "of values")
    low, high = entry[:2]
    kind = Int if all(isinstance(v, Integral) for v in (low, high)) else Float
    return kind(name, low, high, log=_DEEPHYPER_PRIORS[prior])


def param_to_spec(param: Parameter) -> dict:
    """One parameter record -> its JSON-able :func:`params_from_dict` entry."""
    if isinstance(param, Constant):
        try:
            _json_key(param.value)
        except (TypeError, ValueError):
            raise TypeError(f"parameter {param.name!r}: constant {param.value!r} is not JSON-able, so the "
                            "space cannot be written as plain data") from None
        return {"type": "constant", "value": param.value}
    kinds = {Float: "float", Int: "int", Categorical: "categorical", Ordinal: "ordinal"}
    entry: dict[str, Any] = {"type": kinds[type(param)]}
    if isinstance(param, (Float, Int)):
        entry.update(low=param.low, high=param.high)
        if param.log:
            entry["log"] = True
        if getattr(param, "step", None) is not None:
            entry["step"] = param.step
    else:
        entry["values"] = list(param.values)
    if param.default is not None:
        entry["default"] = param.default
    return entry
