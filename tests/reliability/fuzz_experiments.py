"""Hypothesis strategies for experiment files: valid documents, and bad ones with the key their error must name.

A document is the dict a TOML file parses to; :func:`fuzz_strategies.toml_document` writes it. Bad documents
are valid ones with one thing broken (a section, a key, a value, an option, a parameter, the TOML itself).
"""

import sys
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from fuzz_strategies import BAD_NUMBERS, bad_spec, names, text, valid_spec
from tunekit.experiment import SECTIONS

PROGRAM = ["{params_path}", "{results_path}"]
folder_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
# Free text for argv items and env values: braces doubled (a literal brace), no NUL.
argv_text = text.filter(lambda s: "\x00" not in s).map(lambda s: s.replace("{", "{{").replace("}", "}}"))


@dataclass(frozen=True)
class BadFile:
    """A document (or raw text/bytes) with one problem; ``key`` is where its error must point, ``culprit`` a
    name the message must hold besides."""

    document: Any
    key: str
    why: str
    culprit: str = ""


@st.composite
def valid_document(draw) -> dict:
    """A document that must validate: every section, optional keys drawn, searcher options kept valid."""
    experiment = {"name": draw(folder_names), "metric": draw(argv_text), "mode": draw(st.sampled_from(["min", "max"])),
                  "storage_path": "runs"}
    optional = {"num_samples": st.integers(1, 10**6), "max_concurrent": st.integers(1, 64),
                "cpu": st.sampled_from([0.5, 1, 2]), "gpu": st.sampled_from([0, 0.25, 1, 2])}
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True)):
        experiment[key] = draw(optional[key])
    command = {"argv": [sys.executable, *PROGRAM, *draw(st.lists(argv_text, max_size=3))]}
    if draw(st.booleans()):
        command["env"] = draw(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
                                              argv_text, max_size=3))
    if draw(st.booleans()):
        command["timeout_s"] = draw(st.floats(1e-3, 1e6))
    if draw(st.booleans()):
        command["cwd"] = "."
    searcher = draw(st.sampled_from([
        {"name": "random"}, {"name": "random", "seed": 3}, {"name": "gp_ei", "random_starts": 3, "seed": 1},
        {"name": "nevergrad", "optimizer": "OnePlusOne", "seed": 2}, {}]))
    scheduler = draw(st.sampled_from([
        {}, {"name": "fifo"}, {"name": "asha", "time_attr": "epoch", "max_t": 20, "grace_period": 2},
        {"name": "asha", "rule": "stopping"}, {"name": "median", "grace_period": 1, "hard_stop": True}]))
    document = {"experiment": experiment, "command": command, "parameters": draw(valid_spec(toml=True))}
    for section, table in (("searcher", searcher), ("scheduler", scheduler)):
        if table or draw(st.booleans()):
            document[section] = table
    return document


def _with(document: dict, section: str, **changes: Any) -> dict:
    return {**document, section: {**document.get(section, {}), **changes}}


def _without(document: dict, section: str, key: str = "") -> dict:
    if not key:
        return {k: v for k, v in document.items() if k != section}
    return {**document, section: {k: v for k, v in document[section].items() if k != key}}


BAD_VALUES = {
    ("experiment", "name"): ["", "../elsewhere", "a b", "é", "name\n", ".hidden", "a" * 300, 5, ["x"]],
    ("experiment", "metric"): ["", 0, ["loss"], "\x00"],
    ("experiment", "mode"): ["minimize", "MIN", 1, True],
    ("experiment", "num_samples"): [0, -1, 1.5, "ten", True, float("nan")],
    ("experiment", "max_concurrent"): [0, -3, 2.0, "4"],
    ("experiment", "storage_path"): ["", 5, "runs\x00", ["runs"]],
    ("experiment", "cpu"): [-1, "1", True, *BAD_NUMBERS[:5], 1e-7],
    ("experiment", "gpu"): [-0.5, 1.5, "1", *BAD_NUMBERS[:5]],
    ("command", "argv"): [[], "python train.py", [1, 2], ["a\x00b"], [["nested"]]],
    ("command", "cwd"): ["no/such/folder", 5, "", "x\x00"],
    ("command", "env"): [5, "A=1", {"A": 1}, {"A": "x\x00"}, {"A": ["x"]}],
    ("command", "timeout_s"): [0, -1, "5", True, *BAD_NUMBERS[:5]],
}
# Values whose error names one item: (section, key, value, the key the error names).
BAD_ITEMS = [
    ("command", "argv", ["prog", "{param_path}"], "[command] argv[1]"),
    ("command", "argv", ["prog", "{"], "[command] argv[1]"),
    ("command", "argv", ["prog", "}"], "[command] argv[1]"),
    ("command", "argv", ["prog", "{params_path!r}"], "[command] argv[1]"),
    ("command", "argv", ["prog", "{params_path:>10}"], "[command] argv[1]"),
    ("command", "env", {"A": "{home}"}, "[command] env.A"),
    ("command", "env", {"A=B": "x"}, "[command] env.A=B"),
    ("command", "env", {"": "x"}, "[command] env."),
    ("command", "env", {"1A": "x"}, "[command] env.1A"),
]
SEARCHER_PROBLEMS = [
    ({"name": "bayes"}, "[searcher] name", "unknown searcher"),
    ({"name": 5}, "[searcher] name", "searcher name not a string"),
    ({"name": ["gp_ei"]}, "[searcher] name", "searcher name a list"),
    ({"name": "dyhpo"}, "[searcher]", "dyhpo pauses trials"),
    ({"name": "random", "seeed": 1}, "[searcher] seeed", "unknown option"),
    ({"name": "gp_ei", "space": "x"}, "[searcher] space", "option tunekit sets"),
    ({"name": "gp_ei", "metric": "x"}, "[searcher] metric", "option tunekit sets"),
    ({"name": "gp_ei", "kernel": "rbf2"}, "[searcher]", "unknown kernel"),
    ({"name": "gp_ei", "random_starts": -1}, "[searcher]", "negative random_starts"),
    ({"name": "nevergrad", "optimizer": "NoSuchOptimizer"}, "[searcher]", "unknown nevergrad optimizer"),
    ({"name": "random", "points_to_evaluate": 5}, "[searcher] points_to_evaluate", "points not a list"),
    ({"name": "random", "points_to_evaluate": [5]}, "[searcher] points_to_evaluate", "point not a table"),
    ({"name": "random", "points_to_evaluate": [{"no such parameter": 1}]}, "[searcher] points_to_evaluate",
     "point with an unknown key"),
    ({"name": "grid"}, "[searcher]", "grid over a continuous space"),
]
SCHEDULER_PROBLEMS = [
    ({"name": "hyperband"}, "[scheduler] name", "unknown scheduler"),
    ({"name": {"a": 1}}, "[scheduler] name", "scheduler name a table"),
    ({"name": "fifo", "grace_period": 2}, "[scheduler] grace_period", "option fifo does not take"),
    ({"name": "asha", "rule": "promotion"}, "[scheduler] rule", "ASHA promotion pauses trials"),
    ({"name": "median", "hard_stop": False}, "[scheduler] hard_stop", "median without hard stop pauses trials"),
    ({"name": "asha", "max_t": -1}, "[scheduler]", "negative max_t"),
    ({"name": "asha", "max_t": 2, "grace_period": 5}, "[scheduler]", "grace_period > max_t"),
    ({"name": "asha", "reduction_factor": float("nan")}, "[scheduler]", "NaN reduction_factor"),
    ({"name": "median", "min_samples_required": 0}, "[scheduler]", "min_samples_required 0"),
    ({"name": "asha", "mode": "max"}, "[scheduler] mode", "option tunekit sets"),
]


@st.composite
def bad_document(draw) -> BadFile:
    """A valid document with exactly one problem, and the key its one error line must name."""
    document = draw(valid_document())
    kind = draw(st.sampled_from(["value", "unknown key", "missing", "section", "searcher", "scheduler",
                                 "parameters"]))
    if kind == "value":
        if draw(st.booleans()):
            section, key, value, where = draw(st.sampled_from(BAD_ITEMS))
            return BadFile(_with(document, section, **{key: value}), where, f"{key}={value!r}")
        section, key = draw(st.sampled_from(sorted(BAD_VALUES)))
        value = draw(st.sampled_from(BAD_VALUES[section, key]))
        return BadFile(_with(document, section, **{key: value}), f"[{section}] {key}", f"{key}={value!r}")
    if kind == "unknown key":
        section = draw(st.sampled_from(["experiment", "command"]))
        key = draw(names.filter(lambda k: k not in SECTIONS[section]))
        return BadFile(_with(document, section, **{key: 1}), f"[{section}] {key}", "unknown key")
    if kind == "missing":
        section, key = draw(st.sampled_from([("experiment", "name"), ("experiment", "metric"),
                                             ("experiment", "mode"), ("command", "argv"), ("command", ""),
                                             ("parameters", "")]))
        where = f"[{section}] {key}" if key else f"[{section}]"
        return BadFile(_without(document, section, key), where, f"missing {where}")
    if kind == "section":
        name = draw(names.filter(lambda k: k not in ("experiment", "command", "searcher", "scheduler",
                                                     "parameters")))
        problem = draw(st.sampled_from(["unknown", "not a table", "empty parameters"]))
        if problem == "unknown":
            return BadFile({**document, name: {"x": 1}}, f"[{name}]", "unknown section")
        if problem == "not a table":
            section = draw(st.sampled_from(["experiment", "command", "searcher", "scheduler"]))
            return BadFile({**document, section: draw(st.sampled_from([5, "x", [1]]))}, f"[{section}]",
                           f"[{section}] not a table")
        return BadFile({**document, "parameters": {}}, "[parameters]", "empty parameters")
    if kind in ("searcher", "scheduler"):
        table, where, why = draw(st.sampled_from(SEARCHER_PROBLEMS if kind == "searcher" else SCHEDULER_PROBLEMS))
        if kind == "searcher" and table.get("name") == "grid":
            document = {**document, "parameters": {"x": {"type": "float", "low": 0.0, "high": 1.0}}}
        return BadFile({**document, kind: table}, where, why)
    bad = draw(bad_spec(toml=True))
    return BadFile({**document, "parameters": bad.value}, "[parameters", f"parameter {bad.culprit!r}: {bad.why}",
                   bad.culprit)


def broken_text() -> st.SearchStrategy:
    """Raw file contents that are not a TOML document at all, with the key their error names."""
    return st.one_of(
        st.builds(lambda t: BadFile(t, "TOML syntax", "garbage text"),
                  st.text(min_size=1).filter(lambda t: not _parses(t))),
        st.builds(lambda d: BadFile("x = " + "[" * d + "]" * d, "TOML syntax", f"arrays {d} deep"),
                  st.integers(1000, 3000)),
        st.builds(lambda d: BadFile("x = " + "{a = " * d + "1" + "}" * d, "TOML syntax", f"tables {d} deep"),
                  st.integers(1000, 3000)),
        st.builds(lambda b: BadFile(b"[experiment]\nname = \"" + b + b"\"\n", "file", "not UTF-8"),
                  st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])),
    )


def _parses(text: str) -> bool:
    import tomllib

    try:
        tomllib.loads(text)
        return True
    except (tomllib.TOMLDecodeError, RecursionError):
        return False
