"""Hypothesis strategies for fuzzing every way a search space or an experiment file enters tunekit.

Two families: *valid* inputs (which tunekit must accept and round-trip) and *bad* inputs, each drawn with
the name of its culprit (the parameter or the file key the one error message must name). Bad inputs are
structurally wrong (wrong types, missing keys, NaN/inf or overflowing bounds, empty or duplicate values,
unicode, deep nesting) or near-valid mutations of a valid spec that break exactly one rule.
"""

import json
import math
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

# --- plain values -------------------------------------------------------------------------------------

# Text as users type it, unicode included (no surrogates: TOML and JSON cannot hold them alone).
text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)
names = text.filter(lambda s: "/" not in s)
toml_scalars = st.one_of(
    st.booleans(), st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    text)
toml_values = st.recursive(toml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=2)), max_leaves=5)


def json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


unique_values = st.lists(toml_values, min_size=1, max_size=5, unique_by=json_key)
unique_numbers = st.lists(st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False)),
                          min_size=1, max_size=5, unique_by=json_key)
# Values no parameter bound may take, with the reason; each is refused by every numeric field.
BAD_NUMBERS = [float("nan"), float("inf"), -float("inf"), 10**400, -(10**400), "1.0", True, [0.0], {"low": 0}]

# --- valid plain-data entries (tunekit's own form, maggy's, DeepHyper's) --------------------------------


@st.composite
def float_entry(draw) -> dict:
    """A typed float entry inside the documented exact round-trip zone (bounds <= 1e5 x the range)."""
    log = draw(st.booleans())
    if log:
        low = 10.0 ** draw(st.floats(-6, 3))
        high = low * 10.0 ** draw(st.floats(0.01, 6))
    else:
        width = draw(st.floats(1e-3, 1e6))
        low = draw(st.floats(-1e5 * width, 1e5 * width).filter(lambda v: abs(v) <= 1e9))
        high = low + width
    entry = {"type": "float", "low": low, "high": high}
    if log or draw(st.booleans()):
        entry["log"] = log
    if draw(st.booleans()):
        entry["step"] = (high - low) * draw(st.floats(1e-3, 1.0))
    if draw(st.booleans()):
        u = draw(st.floats(0, 1))
        if "step" in entry:
            k = math.floor(u * math.floor((high - low) / entry["step"] + 1e-9))
            entry["default"] = low + k * entry["step"]
        else:
            entry["default"] = min(max(low + u * (high - low), low), high)
    return entry


@st.composite
def int_entry(draw) -> dict:
    log = draw(st.booleans())
    low = draw(st.integers(1, 10**6)) if log else draw(st.integers(-2**40, 2**40 - 1))
    high = draw(st.integers(low + 1, min(2**40, low + draw(st.sampled_from([10, 10**6, 2**40])))))
    entry = {"type": "int", "low": low, "high": high}
    if log or draw(st.booleans()):
        entry["log"] = log
    if draw(st.booleans()):
        entry["default"] = draw(st.integers(low, high))
    return entry


@st.composite
def values_entry(draw, kind: str) -> dict:
    values = draw(unique_values)
    entry = {"type": kind, "values": values}
    if draw(st.booleans()):
        entry["default"] = draw(st.sampled_from(values))
    return entry


@st.composite
def maggy_entry(draw) -> list:
    kind = draw(st.sampled_from(["INTEGER", "DOUBLE", "DISCRETE", "CATEGORICAL"]))
    if kind == "INTEGER":
        low = draw(st.integers(-10**6, 10**6))
        return [kind, [low, low + draw(st.integers(1, 10**6))]]
    if kind == "DOUBLE":
        low = draw(st.floats(-1e3, 1e3))
        return [kind, [low, low + draw(st.floats(1e-2, 1e3))]]
    return [kind, draw(unique_numbers if kind == "DISCRETE" else unique_values)]


def _plain_list_is_not_maggy(values: list) -> bool:
    return not (len(values) == 2 and values[0] in ("INTEGER", "DOUBLE", "DISCRETE", "CATEGORICAL"))


def valid_entry(toml: bool = False) -> st.SearchStrategy:
    """Any accepted entry form; with ``toml`` only forms a TOML file can write (no tuples)."""
    forms = [float_entry(), int_entry(), values_entry("categorical"), values_entry("ordinal"),
             st.builds(lambda v: {"type": "constant", "value": v}, toml_values), maggy_entry(),
             unique_numbers, unique_values.filter(_plain_list_is_not_maggy), toml_scalars]
    if not toml:
        forms += [st.tuples(st.integers(-10**6, 0), st.integers(1, 10**6)),
                  st.tuples(st.floats(1e-6, 1.0), st.floats(2.0, 1e6), st.just("log-uniform")),
                  st.builds(lambda e: ("CATEGORICAL", tuple(e)), unique_values)]
    return st.one_of(forms)


@st.composite
def valid_spec(draw, toml: bool = False) -> dict:
    """A from_dict spec of 1-5 parameters, some grouped under "g/"."""
    keys = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    spec = {}
    for i, key in enumerate(keys):
        name = f"g/{key}" if i % 2 and "g" not in keys else key
        spec[name] = draw(valid_entry(toml))
    return spec


# --- bad plain-data entries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A bad input and its culprit: the name the error must contain, and why it is bad (for the report)."""

    value: Any
    culprit: str
    why: str


def _drop(entry: dict, key: str) -> dict:
    return {k: v for k, v in entry.items() if k != key}


@st.composite
def broken_entry(draw, toml: bool = False) -> tuple[Any, str]:
    """One entry that breaks exactly one rule: (entry, why); with ``toml`` no tuples (TOML has lists only)."""
    kind = draw(st.sampled_from(["float", "int", "values", "maggy", "shape"]))
    bad_number = draw(st.sampled_from(BAD_NUMBERS + ([2**62] if kind == "int" else [])))
    if kind in ("float", "int"):
        entry = draw(float_entry() if kind == "float" else int_entry())
        low, high = entry["low"], entry["high"]
        options = [
            (_drop(entry, draw(st.sampled_from(["low", "high"]))), "missing bound"),
            ({**entry, "low": bad_number}, f"low={bad_number!r}"),
            ({**entry, "high": bad_number}, f"high={bad_number!r}"),
            ({**entry, "low": high, "high": low}, "low > high"),
            ({**entry, "high": low}, "low == high"),
            ({**entry, "log": draw(st.sampled_from(["yes", 1, None, [True]]))}, "log not a bool"),
            ({**entry, draw(names.filter(lambda k: k not in entry)): 1}, "unknown key"),
            ({**entry, "default": high + (high - low) + 1}, "default above high"),
            ({**entry, "default": draw(st.sampled_from(["0", [low], float("nan")]))}, "default not a number"),
            ({**entry, "type": draw(st.sampled_from(["Float", "double", "", 3, ["float"], {"a": 1}]))},
             "unknown type"),
            ({**_drop(entry, "step"), "log": True, "low": -abs(low) - 1.0, "high": abs(high) + 1.0},
             "log scale with low <= 0"),
        ]
        if kind == "float":
            options += [({**entry, "step": draw(st.sampled_from([0.0, -1.0, (high - low) * 2, float("nan"),
                                                               "0.1", 5e-324]))}, "bad step")]
        else:
            options += [({**entry, "low": low + 0.5}, "fractional int bound"),
                        ({**entry, "step": 1}, "step on an int")]
        return draw(st.sampled_from(options))
    if kind == "values":
        entry = draw(values_entry(draw(st.sampled_from(["categorical", "ordinal"]))))
        values = entry["values"]
        return draw(st.sampled_from([
            ({**entry, "values": []}, "empty values"),
            ({**entry, "values": values + [values[0]]}, "duplicate value"),
            ({**entry, "values": draw(st.sampled_from(["abc", 3, {"a": 1}, None]))}, "values not a list"),
            ({**entry, "values": values + [float("nan")]}, "NaN value"),
            ({**entry, "default": [object()]}, "default not a value"),
            (_drop(entry, "values"), "missing values"),
            ({"type": "constant"}, "constant without value"),
        ]))
    if kind == "maggy":
        return draw(st.sampled_from([
            (["INTEGER", [5, 1]], "maggy low > high"), (["INTEGER", [1]], "maggy one bound"),
            (["DOUBLE", [0.0, float("inf")]], "maggy inf bound"), (["INTEGER", "1, 5"], "maggy bounds not a list"),
            (["DISCRETE", ["a", 1]], "maggy DISCRETE not numbers"), (["CATEGORICAL", []], "maggy no values"),
            (["DOUBLE", [0.0, 1.0, 2.0]], "maggy three bounds"),
        ]))
    shapes = [({}, "empty table"), ({"low": 0, "high": 1}, "no type"), ([], "empty list"),
              ([1, 1], "duplicate ordinal values"), ([float("nan"), 1.0], "NaN in a value list")]
    if not toml:
        shapes += [((1, 0), "DeepHyper low > high"), ((0, 1, "normal"), "unknown DeepHyper prior"),
                   ((0, 1, [1]), "unhashable DeepHyper prior"), ((0,), "one-item tuple"),
                   (("a", "b"), "tuple of strings"), ((0.0, float("inf")), "infinite DeepHyper bound")]
    return draw(st.sampled_from(shapes))


@st.composite
def bad_spec(draw, toml: bool = False) -> Bad:
    """A valid spec with one parameter broken, or a spec whose names are wrong."""
    spec = draw(valid_spec(toml))
    if draw(st.integers(0, 5)) == 0:
        key = draw(names)
        return draw(st.sampled_from([
            Bad({**spec, "": {"type": "int", "low": 0, "high": 1}}, "''", "empty name"),
            Bad({**spec, f"{key}//x": 1.0}, f"{key}//x", "empty path part"),
            Bad({**spec, key: 1, f"{key}/sub": 2}, key, "name both a value and a group"),
        ]))
    entry, why = draw(broken_entry(toml))
    if toml:
        entry = _toml_able(entry)
    name = draw(st.sampled_from(sorted(spec)))
    return Bad({**spec, name: entry}, name, why)


def _toml_able(value: Any) -> Any:
    """Tuples as lists and objects as strings: what a TOML file could hold instead."""
    if isinstance(value, (list, tuple)):
        return [_toml_able(v) for v in value]
    if isinstance(value, dict):
        return {k: _toml_able(v) for k, v in value.items()}
    if value is None or isinstance(value, object) and type(value) is object:
        return "None"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return float("inf") if value > 0 else -float("inf")
    return value


def deeply_nested(depth: int, leaf: Any = 1.0) -> dict:
    node: Any = leaf
    for _ in range(depth):
        node = {"a": node}
    return node


# --- TOML writing (tests cannot add a TOML writer dependency) ------------------------------------------


def toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def toml_document(document: dict) -> str:
    """Sections as ``[name]`` tables, ``parameters`` as ``[parameters."NAME"]`` tables (or inline values)."""
    lines = []
    for section, table in document.items():
        if section == "parameters" and isinstance(table, dict):
            lines.append("[parameters]")
            lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
            for name, entry in table.items():
                if isinstance(entry, dict):
                    lines.append(f"[parameters.{toml_string(name)}]")
                    lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in entry.items()]
        elif isinstance(table, dict):
            lines.append(f"[{toml_string(section)}]")
            lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in table.items()]
        else:
            lines.insert(0, f"{toml_string(section)} = {toml_value(table)}")
    return "\n".join(lines) + "\n"
