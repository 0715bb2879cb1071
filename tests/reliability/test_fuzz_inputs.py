"""Fuzzed input: every malformed space or experiment file gives exactly one clear error naming its culprit.

Hypothesis draws search spaces in every accepted form (plain dicts in tunekit's, maggy's and DeepHyper's
formats, Ray Tune domains, ConfigSpace objects, hpman hints) and experiment files, valid ones (which must
be accepted and round-trip, so the tests fail both ways) and bad ones: structurally wrong or near-valid
mutations that break one rule. A bad one must raise a ValueError/TypeError whose one-line message names
the parameter or key; from the command line it is one stderr line, exit code 2, nothing started.
The ``@example``s are the inputs that once crashed (OverflowError, RecursionError, ZeroDivisionError...).
"""

import contextlib
import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings

from fuzz_experiments import BadFile, bad_document, broken_text, valid_document
from fuzz_foreign import (bad_configspace, bad_hpman, bad_param_space, hpman_source, valid_configspace, valid_hpman,
                          valid_param_space)
from fuzz_strategies import Bad, bad_spec, deeply_nested, toml_document, valid_spec
from tunekit import cli
from tunekit.experiment import ExperimentFileError, parse_experiment, printable
from tunekit.parameters import same_value
from tunekit.space import Space
from tunekit.searchers import GPEISearch, NevergradSearch
from tunekit.schedulers import ASHAScheduler, MedianStoppingScheduler

ROOT = Path(__file__).resolve().parents[2]


def fuzz(examples: int) -> settings:
    """Reproducible in CI: derandomized, no example database, no per-example deadline."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def names_culprit(message: str, culprit: str) -> bool:
    return culprit in message or repr(culprit)[1:-1] in message


def assert_one_clear_error(make, bad: Bad) -> None:
    """``make(bad.value)`` raises ValueError/TypeError (nothing else) with one line naming the culprit."""
    with pytest.raises((ValueError, TypeError)) as raised:
        make(bad.value)
    message = str(raised.value)
    assert "\n" not in message, message
    assert names_culprit(message, bad.culprit), f"{bad.why}: {message}"


def assert_round_trips(space: Space) -> None:
    """An accepted space is usable: plain data back and forth, sampled and default configs valid and fixed
    points of encode/decode."""
    assert Space.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    configs = space.sample(3, seed=0) + [space.default()]
    for config in configs:
        space.validate(config)
    decoded = space.decode(space.encode(configs))
    assert all(same_value(a, b) for a, b in zip(decoded, configs)), (decoded, configs)


# --- spaces -------------------------------------------------------------------------------------------------


@fuzz(80)
@given(spec=valid_spec())
@example(spec={"x": {"type": "float", "low": -3.3118389500930616e-289, "high": 1.0,
                     "default": -3.3118389500930616e-289}})
def test_valid_plain_specs_in_every_format_are_accepted_and_round_trip(spec):
    assert_round_trips(Space.from_dict(spec))


@fuzz(120)
@given(bad=bad_spec())
@example(bad=Bad({"x": {"type": "int", "low": 0, "high": 10, "default": 10**400}}, "x", "huge default"))
@example(bad=Bad({"x": {"type": "float", "low": 10**400, "high": 10**401}}, "x", "bounds past a float"))
@example(bad=Bad({"x": {"type": "int", "low": 0, "high": 2**62}}, "x", "int past exact floats"))
@example(bad=Bad({"x": {"type": "float", "low": -1.7e308, "high": 1.7e308}}, "x", "range past a float"))
@example(bad=Bad({"x": {"type": "float", "low": 0.0, "high": 1.0, "step": 5e-324}}, "x", "1e324 grid points"))
@example(bad=Bad({"x": {"type": ["float"]}}, "x", "unhashable type"))
@example(bad=Bad({"x": (0, 1, [1])}, "x", "unhashable DeepHyper prior"))
@example(bad=Bad({"x": {"type": "float", "low": 0.0, "high": 1.0, "default": 10**400}}, "x", "huge default"))
def test_bad_plain_specs_give_one_error_naming_the_parameter(bad):
    assert_one_clear_error(Space.from_dict, bad)
    assert_one_clear_error(Space.from_any, bad)


@fuzz(25)
@given(param_space=valid_param_space())
def test_valid_ray_param_spaces_are_accepted_and_ray_samples_are_valid(param_space):
    from ray.tune.search.variant_generator import generate_variants

    space = Space.from_tune(param_space)
    assert Space.from_any(param_space) == space
    for source in (param_space, space.to_tune()):
        for _, config in list(generate_variants(source))[:1]:
            space.validate(space.flatten(config))
    assert_round_trips(Space.from_dict(space.to_dict()))


@fuzz(40)
@given(bad=bad_param_space())
def test_bad_ray_param_spaces_give_one_error_naming_the_parameter(bad):
    assert_one_clear_error(Space.from_tune, bad)
    assert_one_clear_error(Space.from_any, bad)


def test_ray_quantizations_that_once_crashed_are_refused_by_name():
    from ray import tune

    for q in (0, -2, float("nan"), float("inf")):
        assert_one_clear_error(Space.from_tune, Bad({"x": tune.qrandint(0, 10, q)}, "x", f"q={q}"))
    assert_one_clear_error(Space.from_tune, Bad({"x": deeply_nested(5000, tune.uniform(0, 1))}, "x", "5000 deep"))
    # A range of exactly one step may round below the step: Ray's domain is valid and must be accepted.
    assert Space.from_tune({"x": tune.quniform(0.0624, 0.078, 0.0156)})["x"].cardinality == 2


@fuzz(15)
@given(configspace=valid_configspace())
def test_valid_configspaces_are_accepted_and_their_samples_are_valid(configspace):
    space = Space.from_configspace(configspace)
    assert Space.from_any(configspace) == space
    for config in configspace.sample_configuration(3):
        space.validate(dict(config))
    assert_round_trips(space)


@fuzz(20)
@given(bad=bad_configspace())
def test_bad_configspaces_give_one_error_naming_the_parameter(bad):
    assert_one_clear_error(Space.from_configspace, bad)


def hpman_manager(declarations):
    from hpman import HyperParameterManager

    manager = HyperParameterManager("_")
    manager.parse_source(hpman_source(declarations))
    return manager


@fuzz(20)
@given(declarations=valid_hpman())
def test_valid_hpman_hints_give_a_space_and_a_nevergrad_parametrization(declarations):
    from tunekit.hpman import hpng

    manager = hpman_manager(declarations)
    space = Space.from_hpman(manager)
    assert space.names == [name for name, _, _ in declarations]
    assert_round_trips(space)
    assert sorted(hpng(manager).kwargs) == sorted(space.names)


@fuzz(40)
@given(bad=bad_hpman())
@example(bad=Bad([("z", 5, {"range": [0, float("inf")]})], "z", "infinite int range"))
@example(bad=Bad([("f", 5, {"range": [0, 10**400]})], "f", "range past a float"))
def test_bad_hpman_hints_give_one_error_naming_the_hyperparameter(bad):
    from tunekit.hpman import hpng

    manager = hpman_manager(bad.value)
    assert_one_clear_error(Space.from_hpman, Bad(manager, bad.culprit, bad.why))
    try:
        hpng(manager)  # nevergrad holds arrays and unbounded numbers a Space refuses
    except (ValueError, TypeError) as error:
        assert "\n" not in str(error) and names_culprit(str(error), bad.culprit), str(error)


# --- experiment files ---------------------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``tunekit ARGV`` in this process: exit code, stdout, stderr (Python warnings count as stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = cli.main(list(argv))
        except SystemExit as stop:
            code = stop.code
    shown = [f"{w.category.__name__}: {w.message}" for w in caught if "tunekit" in str(w.filename)]
    return code, out.getvalue(), err.getvalue() + "".join(line + "\n" for line in shown)


def write_file(folder: Path, content) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "experiment.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else toml_document(content))
    return path


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A fresh folder per example (hypothesis runs many examples in one test call)."""
    base = tmp_path_factory.mktemp("fuzz")
    counter = iter(range(10**9))
    return lambda: base / f"case{next(counter)}"


@fuzz(20)
@given(document=valid_document())
def test_valid_experiment_files_validate_and_keep_what_they_say(document, scratch):
    path = write_file(scratch(), document)
    experiment = parse_experiment(path.read_text(), path)
    by_name = lambda space: Space(sorted(space.params, key=lambda param: param.name))  # noqa: E731
    assert by_name(experiment.space) == by_name(Space.from_dict(document["parameters"]))
    assert experiment.settings.name == document["experiment"]["name"]
    assert experiment.settings.metric == document["experiment"]["metric"]
    assert experiment.command.argv[1:3] == ("{params_path}", "{results_path}")
    code, out, err = run_cli("validate", str(path))
    assert (code, err) == (0, ""), err
    assert out.startswith(f"{path}: ok: {len(experiment.space)} parameters")


def assert_refused_on_one_line(path: Path, key: str, culprit: str = "") -> None:
    """`tunekit validate` and `tunekit run` both: exit code 2, one stderr line naming file and key, nothing
    on stdout, no experiment folder (nothing started)."""
    for command in ("validate", "run"):
        code, out, err = run_cli(command, str(path))
        lines = err.splitlines()
        assert code == 2 and out == "" and len(lines) == 1, (command, code, out, err)
        assert lines[0].startswith(f"tunekit: error: {path}: {printable(key)}"), (key, lines[0])
        assert not culprit or names_culprit(lines[0], culprit), (culprit, lines[0])
        assert sorted(p.name for p in path.parent.iterdir()) == ["experiment.toml"]


@fuzz(100)
@given(bad=bad_document())
@example(bad=BadFile({"experiment": {"name": "ok\n", "metric": "m", "mode": "min"}, "command": {"argv": ["p"]},
                      "parameters": {"x": 1}}, "[experiment] name", "trailing newline in the name"))
@example(bad=BadFile({"experiment": {"name": "n", "metric": "m", "mode": "min", "storage_path": "a\x00b"},
                      "command": {"argv": ["p"]}, "parameters": {"x": 1}}, "[experiment] storage_path", "NUL"))
@example(bad=BadFile({"experiment": {"name": "n", "metric": "m", "mode": "min"},
                      "command": {"argv": ["p"], "timeout_s": float("nan")}, "parameters": {"x": 1}},
                     "[command] timeout_s", "NaN timeout"))
@example(bad=BadFile({"experiment": {"name": "n", "metric": "m", "mode": "min"}, "command": {"argv": ["p"]},
                      "searcher": {"name": "grid"}, "parameters": {"x": {"type": "int", "low": 0, "high": 10**9}}},
                     "[searcher]", "grid of 1e9 combinations"))
@example(bad=BadFile({"experiment": {"name": "n", "metric": "m", "mode": "min"}, "command": {"argv": ["p"]},
                      "searcher": {"name": "random", "points_to_evaluate": [{"x": 5.0}]},
                      "parameters": {"x": {"type": "float", "low": 0.0, "high": 1.0}}},
                     "[searcher] points_to_evaluate", "point outside the space"))
def test_bad_experiment_files_give_one_line_exit_code_2_and_start_nothing(bad, scratch):
    path = write_file(scratch(), bad.document)
    with pytest.raises(ExperimentFileError) as raised:
        parse_experiment(path.read_text(), path)
    assert raised.value.key.startswith(printable(bad.key)), (bad.why, str(raised.value))
    assert_refused_on_one_line(path, bad.key, bad.culprit)


@fuzz(20)
@given(bad=broken_text())
def test_files_that_are_not_toml_give_one_line(bad, scratch):
    assert_refused_on_one_line(write_file(scratch(), bad.document), bad.key)


@pytest.mark.parametrize("command, content, key", [
    ("validate", "x = " + "[" * 3000 + "]" * 3000, "TOML syntax"),
    ("validate", toml_document({"experiment": {"name": "n", "metric": "m", "mode": "min"}, "command": {"argv": ["p"]},
                                "parameters": {"x": {"type": "int", "low": 0, "high": 10**400}}}), "[parameters.x]"),
    ("run", toml_document({"experiment": {"name": "n", "metric": "m", "mode": "min"}, "command": {"argv": ["p"]},
                           "scheduler": {"name": "asha", "rule": "promotion"}, "parameters": {"x": 1}}),
     "[scheduler] rule"),
])
def test_the_console_command_prints_one_line_and_no_traceback_for_fuzzed_files(command, content, key, tmp_path):
    path = write_file(tmp_path, content)
    done = subprocess.run([sys.executable, "-m", "tunekit.cli", command, str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"tunekit: error: {path}: {key}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiment.toml"]


def test_plain_spaces_and_values_nested_5000_deep_are_refused_by_name():
    assert_one_clear_error(Space.from_any, Bad({"top": deeply_nested(5000, {"type": "int"})}, "top", "deep"))
    deep_values = Bad({"x": {"type": "categorical", "values": [deeply_nested(5000)]}}, "x", "values 5000 deep")
    assert_one_clear_error(Space.from_dict, deep_values)
    assert_one_clear_error(Space.from_dict, Bad({"x": {"type": "constant", "value": deeply_nested(5000)}}, "x",
                                                "constant 5000 deep"))


@pytest.mark.parametrize("build, culprit", [
    (lambda: GPEISearch(points_to_evaluate=[5]),
     "points_to_evaluate"),
    (lambda: NevergradSearch(seed="x"), "seed"),
    (lambda: GPEISearch(optimizer_restarts=10**20),
     "optimizer_restarts"),
    (lambda: ASHAScheduler(max_t=10**400), "max_t"),
    (lambda: ASHAScheduler(
        max_t=1e300, grace_period=1e-300, reduction_factor=1.0000001), "reduction_factor"),
    (lambda: ASHAScheduler(stop_last_trials="no"),
     "stop_last_trials"),
    (lambda: MedianStoppingScheduler(
        hard_stop="no"), "hard_stop"),
], ids=["points", "seed", "restarts", "huge_max_t", "rung_count", "stop_last_trials", "hard_stop"])
def test_searcher_and_scheduler_arguments_found_by_fuzzing_are_refused_by_name(build, culprit):
    """Regressions: each of these once raised deep inside (OverflowError, 'int' is not iterable, a numpy cast),
    hung validation (1e10 rungs) or was silently taken as True."""
    with pytest.raises((TypeError, ValueError), match=culprit):
        build()
