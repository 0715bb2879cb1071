"""The `tunekit` command: bad input is one line and exit code 2 with nothing started; a killed run resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunekit import cli, registry

PROGRAM = Path(__file__).parent / "programs" / "trial.py"
ROOT = Path(__file__).resolve().parent.parent

GOOD = {
    "experiment": 'name = "bad"\nmetric = "loss"\nmode = "min"\nstorage_path = "runs"',
    "command": f'argv = [{json.dumps(sys.executable)}, {json.dumps(str(PROGRAM))}, "{{params_path}}", '
               '"{results_path}"]',
    "searcher": 'name = "random"',
    "parameters.x": 'type = "float"\nlow = 0.0\nhigh = 1.0',
}


def compose(**sections: str) -> str:
    """An experiment file: GOOD with sections replaced (a value of None drops the section)."""
    merged = {**GOOD, **{name.replace("__", "."): text for name, text in sections.items()}}
    return "\n".join(f"[{name}]\n{text}\n" for name, text in merged.items() if text is not None)


BAD_FILES = {
    "unknown key": (compose(experiment=GOOD["experiment"] + "\nnum_sample = 3"),
                    "[experiment] num_sample", "accepted: name, metric, mode, num_samples"),
    "wrong type": (compose(experiment=GOOD["experiment"] + '\nnum_samples = "ten"'),
                   "[experiment] num_samples", "expected an integer >= 1, got 'ten'"),
    "bool for an integer": (compose(experiment=GOOD["experiment"] + "\nmax_concurrent = true"),
                            "[experiment] max_concurrent", "expected an integer"),
    "bad mode": (compose(experiment=GOOD["experiment"].replace('"min"', '"minimize"')),
                 "[experiment] mode", "one of 'min', 'max'"),
    "missing metric": (compose(experiment='name = "bad"\nmode = "min"'), "[experiment] metric", "missing"),
    "unsafe name": (compose(experiment=GOOD["experiment"].replace('"bad"', '"../elsewhere"')),
                    "[experiment] name", "not a folder name"),
    "fractional gpus": (compose(experiment=GOOD["experiment"] + "\ngpu = 1.5"), "[experiment] gpu",
                        "whole number"),
    "unknown section": (compose() + "\n[experimnt]\nname = 'x'\n", "[experimnt]", "accepted: experiment, command"),
    "missing command": (compose(command=None), "[command]", "argv"),
    "argv as one string": (compose(command='argv = "python train.py {params_path}"'), "[command] argv",
                           "list of strings"),
    "unknown placeholder": (compose(command='argv = ["prog", "{param_path}"]'), "[command] argv[1]",
                            "accepted: {params_path}, {results_path}, {progress_path}, {trial_dir}, {device_id}"),
    "placeholder with a conversion": (compose(command='argv = ["prog", "{params_path!r}"]'),
                                      "[command] argv[1]", "unknown placeholder"),
    "unknown placeholder in env": (compose(command='argv = ["prog"]\nenv = {OUT = "{home}"}'),
                                   "[command] env.OUT", "unknown placeholder {home}"),
    "env value not a string": (compose(command='argv = ["prog"]\nenv = {SEED = 3}'), "[command] env",
                               "table of strings"),
    "negative timeout": (compose(command='argv = ["prog"]\ntimeout_s = -1'), "[command] timeout_s", "> 0"),
    "missing cwd": (compose(command='argv = ["prog"]\ncwd = "no/such/folder"'), "[command] cwd", "not a folder"),
    "unknown searcher": (compose(searcher='name = "bayes"'), "[searcher] name",
                         "accepted: " + ", ".join(registry.names("searcher"))),
    "unknown searcher option": (compose(searcher='name = "random"\nkernal = "rbf"'), "[searcher] kernal",
                                "unknown option 'kernal' for searcher 'random'; accepted: points_to_evaluate, seed"),
    "option tunekit sets": (compose(searcher='name = "random"\nspace = "x"'), "[searcher] space",
                            "set by tunekit"),
    "searcher rejects a value": (compose(searcher='name = "gp_ei"\nkernel = "rbf2"'), "[searcher]", "kernel='rbf2'"),
    "grid over a continuous space": (compose(searcher='name = "grid"'), "[searcher]", "'x'"),
    "unknown scheduler": (compose(scheduler='name = "hyperband"'), "[scheduler] name",
                          "accepted: " + ", ".join(registry.names("scheduler"))),
    "unknown scheduler option": (compose(scheduler='name = "fifo"\ngrace_period = 2'), "[scheduler] grace_period",
                                 "accepted: none"),
    "space rejected": (compose(parameters__x='type = "float"\nlow = 2.0\nhigh = 1.0'), "[parameters.x]",
                       "low=2.0 must be < high=1.0"),
    "unknown parameter key": (compose(parameters__x='type = "float"\nlwo = 0.0\nhigh = 1.0'), "[parameters.x]",
                              "accepted: ['default', 'high', 'log', 'low', 'step']"),
    "no parameters": (compose(parameters__x=None), "[parameters]", "missing or empty"),
    "TOML syntax": ("[experiment]\nname = \n", "TOML syntax", "line 2"),
    "ASHA promotion pauses trials": (compose(scheduler='name = "asha"\nrule = "promotion"'), "[scheduler] rule",
                                     "rule='promotion' pauses trials"),
    "median without hard stop pauses trials": (compose(scheduler='name = "median"\nhard_stop = false'),
                                               "[scheduler] hard_stop", 'use hard_stop = true'),
    "name with a newline": (compose(experiment=GOOD["experiment"].replace('"bad"', '"bad\\n"')),
                            "[experiment] name", "not a folder name"),
    "control character in a key": (compose(experiment=GOOD["experiment"] + '\n"\\u001b[2J" = 1'),
                                   "[experiment] \\x1b[2J", "unknown key"),
    "NUL in argv": (compose(command='argv = ["prog\\u0000"]'), "[command] argv", "without NUL"),
    "bad env name": (compose(command='argv = ["prog"]\nenv = {"A=B" = "x"}'), "[command] env.A=B",
                     "not an environment variable name"),
    "NaN timeout": (compose(command='argv = ["prog"]\ntimeout_s = nan'), "[command] timeout_s", "finite"),
    "deeply nested TOML": ("x = " + "[" * 2000 + "]" * 2000, "TOML syntax", "nested too deeply"),
    "int bound past exact floats": (compose(parameters__x='type = "int"\nlow = 0\nhigh = 9007199254740993'),
                                    "[parameters.x]", "[-2**40, 2**40]"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_input_is_one_line_naming_file_and_key_with_exit_code_2_and_nothing_started(case, tmp_path, capsys):
    text, key, accepted = BAD_FILES[case]
    path = tmp_path / "experiment.toml"
    path.write_text(text)
    assert cli.main(["run", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"tunekit: error: {path}: {key}")
    assert accepted in lines[0]
    assert captured.out == ""
    assert not (tmp_path / "runs").exists()


def test_a_missing_file_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nothing.toml"
    assert cli.main(["validate", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"tunekit: error: {missing}: file: no such file; give the path " \
                                              "of an experiment .toml file"
    assert cli.main(["show", str(tmp_path / "nowhere")]) == 2


def test_dyhpo_is_refused_with_the_reason_and_what_to_use(tmp_path, capsys):
    path = tmp_path / "experiment.toml"
    path.write_text(compose(searcher='name = "dyhpo"'))
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "[searcher]: searcher 'dyhpo' cannot run in an experiment file" in err
    assert "epoch_trainable" in err and len(err.strip().splitlines()) == 1


def test_validate_accepts_a_good_file(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text(compose())
    assert cli.main(["validate", str(good)]) == 0
    assert "ok: 1 parameters, searcher random, scheduler fifo, 10 samples" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_the_hypered_example_validates(capsys):
    assert cli.main(["validate", str(ROOT / "examples" / "hypered" / "experiment.toml")]) == 0
    assert "ok: 2 parameters, searcher gp_ei, scheduler fifo, 30 samples, min loss" in capsys.readouterr().out


def test_the_console_command_prints_one_line_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(compose(searcher='name = "random"\nseeed = 1'))
    refused = subprocess.run([sys.executable, "-m", "tunekit.cli", "validate", str(bad)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"tunekit: error: {bad}: [searcher] seeed: unknown option 'seeed' for searcher 'random'; "
        "accepted: points_to_evaluate, seed"]


def test_a_killed_run_resumes_without_rerunning_finished_trials(ray_session, tmp_path, capsys):
    counter = tmp_path / "counter.txt"
    path = tmp_path / "resume.toml"
    path.write_text(compose(
        experiment=GOOD["experiment"].replace('"bad"', '"resume"') + "\nnum_samples = 4\nmax_concurrent = 1",
        command=GOOD["command"].replace("]", f', "--counter", {json.dumps(str(counter))}]'),
        searcher='name = "gp_ei"\nrandom_starts = 2\nseed = 7',
        parameters__sleep_s='type = "constant"\nvalue = 1.0'))
    driver = subprocess.Popen([sys.executable, "-m", "tunekit.cli", "run", str(path), "--quiet"], cwd=ROOT,
                              env={**os.environ, "RAY_ADDRESS": "local"}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not counter.exists() or len(counter.read_text().splitlines()) < 2:
            assert time.monotonic() < deadline and driver.poll() is None, "the first run never finished 2 trials"
            time.sleep(0.2)
        time.sleep(1.0)  # the experiment state is snapshotted every second
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finished_before = counter.read_text().splitlines()
    assert 2 <= len(finished_before) < 4

    assert cli.main(["run", str(path), "--quiet"]) == 0
    finished = counter.read_text().splitlines()
    # Distinct configs: the restored GP-EI searcher did not start over with its seeded first suggestions.
    assert len(finished) == 4 and len(set(finished)) == 4
    summary = json.loads((tmp_path / "runs" / "resume" / "best.json").read_text())
    assert summary["trials"] == {"succeeded": 4}


LOCK_HOLDER = """
import sys, time
from tunekit.experiment import experiment_lock, load_experiment
with experiment_lock(load_experiment(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(600)
"""
# A trial program that reports whether its experiment's lock is held while it runs.
LOCK_PROBE = """
import fcntl, json, sys
results, lock = sys.argv[1:3]
with open(lock, "a") as handle:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held = 0
    except BlockingIOError:
        held = 1
with open(results, "w") as out:
    json.dump({"loss": 0.0, "lock_held": held}, out)
"""


def test_one_run_at_a_time_per_experiment_and_a_killed_runs_lock_is_taken_over(ray_session, tmp_path, capsys,
                                                                               caplog):
    folder = tmp_path / "runs" / "locked"
    probe = tmp_path / "probe.py"
    probe.write_text(LOCK_PROBE)
    path = tmp_path / "locked.toml"
    path.write_text(compose(
        experiment=GOOD["experiment"].replace('"bad"', '"locked"') + "\nnum_samples = 1",
        command=f'argv = [{json.dumps(sys.executable)}, {json.dumps(str(probe))}, "{{results_path}}", '
                f'{json.dumps(str(folder / ".tunekit.lock"))}]'))
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in ([], ["--restart"]):
            assert cli.main(["run", str(path), "--quiet", *extra]) == 2
            (line,) = capsys.readouterr().err.strip().splitlines()
            assert f"folder '{folder}' is in use by another tunekit run (pid {holder.pid} on " in line
        assert sorted(p.name for p in folder.parent.iterdir()) == ["locked"]
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()

    with caplog.at_level("WARNING", logger="tunekit.experiment"):
        assert cli.main(["run", str(path), "--quiet"]) == 0
    assert f"taking over the lock of {folder}" in caplog.text and f"pid {holder.pid}" in caplog.text
    (trial,) = folder.glob("trial_*")
    assert json.loads((trial / "results.json").read_text())["lock_held"] == 1
    assert (folder / ".tunekit.lock").read_text() == ""  # released


def test_a_storage_path_that_cannot_hold_folders_is_one_line_before_anything_starts(tmp_path, capsys):
    (tmp_path / "runs").write_text("a file, not a folder")
    path = tmp_path / "experiment.toml"
    path.write_text(compose())
    assert cli.main(["run", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"tunekit: error: {path}: [experiment] storage_path: cannot create the experiment folder")
