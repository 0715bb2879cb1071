"""Experiment files run for real: a small real program (tests/programs/trial.py) as every trial, on Ray.

One module-scoped run covers success, crash, timeout, malformed results, a missing metric, progress lines,
shell metacharacters in values and GPU ids; the others cover what `tunekit run` does a second time.
"""

import csv
import json
import os
import sys
from pathlib import Path

import pytest

from tunekit import cli, registry
from tunekit.experiment import load_experiment, run_experiment
from tunekit.summary import TrialRecord, best_trial

PROGRAM = Path(__file__).parent / "programs" / "trial.py"
# Values the program does not know make it succeed: shell metacharacters must reach it verbatim.
SHELL_BAIT = ["a; rm -rf ~ && touch w", "$(touch x) `touch y` {params_path} | tee z"]
BEHAVIORS = ["crash", "hang", "malformed", "no_metric", "progress", *SHELL_BAIT]


def q(value) -> str:
    """A TOML basic string (JSON's string syntax is valid TOML for these values)."""
    return json.dumps(str(value))


def write_experiment(folder: Path, name: str, parameters: str, extra_argv: str = "", experiment: str = "",
                     command: str = "", searcher: str = 'name = "grid"') -> Path:
    argv = f'{q(sys.executable)}, {q(PROGRAM)}, "{{params_path}}", "{{results_path}}"{extra_argv}'
    text = f"""
[experiment]
name = {q(name)}
metric = "loss"
mode = "min"
storage_path = "runs"
{experiment}

[command]
argv = [{argv}]
{command}

[searcher]
{searcher}

{parameters}
"""
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def trial_dirs(experiment_dir: Path) -> dict:
    """Trial folders by the behavior they ran."""
    return {json.loads((d / "params.json").read_text())["behavior"]: d for d in experiment_dir.glob("trial_*")}


def status(trial_dir: Path) -> dict:
    return json.loads((trial_dir / "status.json").read_text())


def read_rows(experiment_dir: Path) -> dict:
    with open(experiment_dir / "results.csv", newline="") as handle:
        return {row["config/behavior"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def failures_run(ray_session, tmp_path_factory):
    """One grid experiment: a trial per behavior of the test program, each on half a (logical) GPU."""
    folder = tmp_path_factory.mktemp("failures")
    path = write_experiment(
        folder, "failures",
        parameters=f"""
[parameters.behavior]
type = "categorical"
values = {json.dumps(BEHAVIORS)}

[parameters.x]
type = "constant"
value = 0.5
""",
        extra_argv=', "--progress", "{progress_path}", "--device-id", "{device_id}"',
        experiment="cpu = 0.5\ngpu = 0.5",
        command='timeout_s = 2\nenv = {TRIAL_GREETING = "hello from {trial_dir}"}')
    experiment = load_experiment(path)
    summary = run_experiment(experiment, verbose=0)
    return folder, experiment.experiment_dir, summary


def test_each_failure_is_recorded_with_its_reason_and_the_experiment_goes_on(failures_run):
    _, experiment_dir, summary = failures_run
    rows = read_rows(experiment_dir)
    assert sorted(rows) == sorted(BEHAVIORS)
    assert {b: rows[b]["status"] for b in BEHAVIORS} == {
        "progress": "succeeded", "crash": "failed", "hang": "failed", "malformed": "failed",
        "no_metric": "failed", **{bait: "succeeded" for bait in SHELL_BAIT}}
    assert rows["crash"]["failure_reason"] == "the program ended with exit code 3; stderr: boom: the model diverged"
    assert rows["hang"]["failure_reason"].startswith("timed out after 2 s")
    assert rows["malformed"]["failure_reason"].startswith("malformed results file results.json")
    assert rows["no_metric"]["failure_reason"].startswith("results file results.json has no metric 'loss'")
    assert summary["trials"] == {"succeeded": 1 + len(SHELL_BAIT), "failed": 4}
    assert summary["best"]["loss"] == pytest.approx(0.04)
    assert summary["best"]["config"]["x"] == 0.5
    assert json.loads((experiment_dir / "best.json").read_text()) == summary


def test_trial_folders_hold_params_results_logs_and_the_failure_text(failures_run):
    folder, experiment_dir, _ = failures_run
    folders = trial_dirs(experiment_dir)
    ok = folders[SHELL_BAIT[0]]
    for name in ("params.json", "results.json", "stdout.log", "stderr.log", "status.json"):
        assert (ok / name).is_file(), name
    results = json.loads((ok / "results.json").read_text())
    assert results["received"] == {"behavior": SHELL_BAIT[0], "x": 0.5}
    assert results["greeting"] == f"hello from {ok}"
    assert results["cwd"] == str(folder)
    failure = (folders["crash"] / "failure.txt").read_text()
    assert "exit code 3" in failure and "about to fail\nboom: the model diverged" in failure
    hang = status(folders["hang"])
    assert hang["status"] == "failed" and hang["returncode"] < 0
    assert list(experiment_dir.glob("tensorboard/*/events.out.tfevents.*"))


def test_progress_lines_reach_ray_one_by_one_while_the_program_runs(failures_run):
    _, experiment_dir, _ = failures_run
    with open(trial_dirs(experiment_dir)["progress"] / "progress.csv", newline="") as handle:
        reported = list(csv.DictReader(handle))
    losses = [float(row["loss"]) for row in reported]
    assert losses == pytest.approx([1.04, 0.54, 0.04 + 1 / 3, 0.04])
    assert [int(row["training_iteration"]) for row in reported] == [1, 2, 3, 4]
    # The program writes a line every 0.3 s and its results 0.9 s after the first line: the first line must
    # reach Ray well before the end (all at once at the end would give ~0). Ray's report can lag a little
    # under load, so only a third of the 0.9 s is required.
    assert float(reported[-1]["time_total_s"]) - float(reported[0]["time_total_s"]) > 0.3


def test_show_and_plot_read_the_experiment_folder(failures_run, capsys):
    _, experiment_dir, summary = failures_run
    assert cli.main(["show", str(experiment_dir)]) == 0
    out = capsys.readouterr().out
    assert "timed out after 2 s" in out and "exit code 3" in out
    assert f"best: {summary['best']['trial_id']}  loss=0.04" in out
    assert cli.main(["plot", str(experiment_dir)]) == 0
    written = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in written) == ["learning_curves.png", "metric_over_trials.png"]
    for png in written:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_values_reach_the_program_verbatim_and_never_a_shell(failures_run):
    folder, experiment_dir, _ = failures_run
    folders = trial_dirs(experiment_dir)
    for bait in SHELL_BAIT:
        assert json.loads((folders[bait] / "results.json").read_text())["received"]["behavior"] == bait
    for trial_dir in folders.values():
        assert not any((trial_dir / name).exists() for name in "xyzw")
    assert not any((folder / name).exists() or Path(name).exists() for name in "xyzw")


def test_the_program_sees_the_gpus_ray_assigned_to_its_trial(failures_run):
    _, experiment_dir, _ = failures_run
    for bait in SHELL_BAIT:
        results = json.loads((trial_dirs(experiment_dir)[bait] / "results.json").read_text())
        assert results["device_id"] in {"0", "1", "2", "3"}
        assert results["cuda_visible_devices"] == results["device_id"]


def test_run_again_reruns_nothing_restart_starts_afresh_and_another_file_is_refused(ray_session, tmp_path,
                                                                                     capsys):
    counter = tmp_path / "counter.txt"
    path = write_experiment(
        tmp_path, "again", parameters='[parameters.x]\ntype = "float"\nlow = 0.0\nhigh = 1.0',
        extra_argv=f', "--counter", {q(counter)}', experiment="num_samples = 1",
        searcher='name = "random"\nseed = 3')
    assert cli.main(["run", str(path), "--quiet"]) == 0
    first = capsys.readouterr().out
    assert len(counter.read_text().splitlines()) == 1
    assert cli.main(["run", str(path), "--quiet"]) == 0
    assert len(counter.read_text().splitlines()) == 1
    assert capsys.readouterr().out.splitlines()[-1] == first.splitlines()[-1]
    assert cli.main(["run", str(path), "--quiet", "--restart"]) == 0
    assert len(counter.read_text().splitlines()) == 2
    assert len(list((tmp_path / "runs").glob("again.replaced-*"))) == 1
    path.write_text(path.read_text().replace("high = 1.0", "high = 2.0"))
    capsys.readouterr()
    assert cli.main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different experiment file" in err and "--restart" in err
    assert len(counter.read_text().splitlines()) == 2


def test_a_trial_ray_stops_has_its_program_killed_and_is_recorded_as_stopped(ray_session, tmp_path):
    from ray import tune

    from tunekit.command_trainable import CommandSpec, CommandTrainable, trial_dirname

    spec = CommandSpec(argv=(sys.executable, str(PROGRAM), "{params_path}", "{results_path}", "--progress",
                             "{progress_path}"), metric="loss", experiment_dir=str(tmp_path / "stop"))
    tuner = tune.Tuner(
        tune.with_parameters(CommandTrainable, spec=spec), param_space={"behavior": "progress_then_hang"},
        tune_config=tune.TuneConfig(trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name="stop", storage_path=str(tmp_path), stop={"training_iteration": 1},
                                  checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False), verbose=0))
    assert not tuner.fit().errors
    (trial_dir,) = (tmp_path / "stop").glob("trial_*")
    assert status(trial_dir)["status"] == "stopped"
    pid = json.loads((trial_dir / "progress.jsonl").read_text())["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_restarted_trial_whose_program_already_wrote_results_is_not_run_again(ray_session, tmp_path,
                                                                               monkeypatch):
    from ray import tune

    from tunekit.command_trainable import CommandSpec, CommandTrainable, trial_dirname

    monkeypatch.setenv("_TEST_TUNE_TRIAL_UUID", "again")  # Ray's hook for predictable trial ids
    earlier = tmp_path / "rerun" / "trial_again_00000"
    earlier.mkdir(parents=True)
    (earlier / "status.json").write_text(json.dumps({"status": "running", "trial_id": "again_00000"}))
    (earlier / "results.json").write_text(json.dumps({"loss": 7.0}))
    spec = CommandSpec(argv=(sys.executable, str(PROGRAM), "{params_path}", "{results_path}"), metric="loss",
                       experiment_dir=str(tmp_path / "rerun"))
    tuner = tune.Tuner(
        tune.with_parameters(CommandTrainable, spec=spec), param_space={"behavior": "crash"},
        tune_config=tune.TuneConfig(trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name="rerun", storage_path=str(tmp_path),
                                  checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False), verbose=0))
    (result,) = tuner.fit()
    assert result.error is None and result.metrics["loss"] == 7.0
    assert not (earlier / "stderr.log").exists()
    assert status(earlier)["status"] == "succeeded"


@pytest.mark.parametrize("kind, name", [(kind, name) for kind, table in registry.KINDS.items()
                                         for name in registry.names(kind) if not table[name].pauses])
def test_every_registered_name_resolves_and_exposes_only_its_own_options(kind, name):
    factory, entry = registry.resolve(kind, name)
    accepted = registry.accepted_options(factory, entry)
    assert not {"space", "metric", "mode"} & set(accepted)
    for pausing in entry.pausing_options:
        assert pausing.option in accepted
    if name == "asha":
        assert {"time_attr", "max_t", "grace_period", "reduction_factor"} <= set(accepted)


@pytest.mark.parametrize("name, option, pausing, running", [
    ("asha", "rule", "promotion", "stopping"), ("median", "hard_stop", False, True),
    ("median", "hard_stop", 0, True)])
def test_scheduler_options_that_pause_trials_are_refused_before_anything_starts(name, option, pausing, running):
    """Command trials cannot pause: these options once failed only at a trial's first pause, mid-run."""
    with pytest.raises(registry.OptionError) as refused:
        registry.build_scheduler(name, {option: pausing})
    assert refused.value.option == option
    assert f"{option}={pausing!r} pauses trials" in str(refused.value) and "use " in str(refused.value)
    assert registry.build_scheduler(name, {option: running}) is not None
    assert registry.SCHEDULERS[name].pausing_options and not registry.SCHEDULERS[name].pauses
    assert registry.SEARCHERS["dyhpo"].pauses


def test_points_to_evaluate_and_grids_are_checked_against_the_space():
    from tunekit.space import Space

    space = Space.from_dict({"x": {"type": "float", "low": 0.0, "high": 1.0}, "n": {"type": "int", "low": 0,
                                                                                   "high": 10**6}})
    for points, named in (([{"x": 5.0}], "parameter 'x'"), ([{"y": 1}], "'y' is not a parameter"),
                          ([3], r"points_to_evaluate\[0\] must be a table"), ("x", "must be a list")):
        with pytest.raises(registry.OptionError, match=named):
            registry.build_searcher("random", {"points_to_evaluate": points}, space, "loss", "min")
    assert registry.build_searcher("random", {"points_to_evaluate": [{"x": 0.5}]}, space, "loss", "min")
    grid = Space.from_dict({"a": {"type": "int", "low": 0, "high": 1000}, "b": {"type": "int", "low": 0,
                                                                               "high": 1000}})
    with pytest.raises(ValueError, match=r"1002001 combinations \('a': 1001, 'b': 1001\), more than 100000"):
        registry.grid_search(grid)


def test_the_best_trial_is_the_best_final_metric_of_trials_that_ended_with_one(tmp_path):
    records = [TrialRecord("a", "succeeded", tmp_path, {}, value=0.5),
               TrialRecord("b", "stopped", tmp_path, {}, value=0.2),
               TrialRecord("c", "failed", tmp_path, {}, value=None, reason="exit code 1"),
               TrialRecord("d", "unfinished", tmp_path, {}, value=0.1),
               TrialRecord("e", "succeeded", tmp_path, {}, value=float("nan"))]
    assert best_trial(records, "min").trial_id == "b"
    assert best_trial(records, "max").trial_id == "a"
    assert best_trial(records[2:4], "min") is None
