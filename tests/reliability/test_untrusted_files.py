"""Untrusted files are data: experiment files, params/results/status JSON and progress lines are parsed, never
evaluated, unpickled or handed to a shell.

Two kinds of test: an AST scan of the whole package that fails on any way to execute text (eval, exec,
compile, os.system, shell=True...) and on any unpickling outside the known restore paths of Ray's own
checkpoints (the only trusted files); and behavioural tests that plant Python, shell and pickle payloads in
every file tunekit reads from an experiment folder and check they come back as plain strings or are
refused with a clear reason, and that nothing ran (no sentinel file appears).
"""

import ast
import json
import os
import pickle
import sys
from pathlib import Path

import pytest

from tunekit import cli
from tunekit.command_trainable import ProgressReader, TrialFailure, read_results
from tunekit.experiment import ExperimentFileError, parse_experiment
from tunekit.summary import collect_trials, write_summary

PACKAGE = Path(__file__).resolve().parents[2] / "tunekit"

# Calls that run text as code, or hand it to a shell, anywhere in the package.
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "os.system", "os.popen", "os.execl", "os.execlp",
                   "os.execv", "os.execvp", "os.spawnl", "os.spawnv", "subprocess.getoutput",
                   "subprocess.getstatusoutput", "pty.spawn", "code.interact"}
# Deserializers that can run code; each use must be one of the trusted restore paths below.
UNPICKLERS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "cloudpickle.load", "cloudpickle.loads",
              "dill.load", "dill.loads", "torch.load", "marshal.load", "marshal.loads", "shelve.open",
              "yaml.load", "yaml.unsafe_load", "yaml.full_load", "numpy.load", "np.load", "jsonpickle.decode",
              # Ray's own readers of its snapshot files, which unpickle
              "_loads_with_cloudpickle", "Trial.from_json_state", "_load_newest_checkpoint"}
# (file, function): the state of searchers and schedulers that Ray checkpoints in the experiment folder
# (Ray's own files, written by this experiment, as Ray's own searchers pickle theirs).
TRUSTED_UNPICKLING = {("searchers/base.py", "restore"), ("schedulers/_common.py", "load_state_bytes"),
                      ("schedulers/_common.py", "_snapshot_entry"), ("_ray_snapshot.py", "_newest_snapshot"),
                      ("_ray_snapshot.py", "trial_table"),
                      ("_ray_snapshot.py", "trial_counter")}
# (file, function, call): code the user chose to run, not data: their hpman script; registry targets from
# a fixed table (a name from a file is looked up in the table, never imported).
TRUSTED_CODE_LOADERS = {("trainables.py", "run_script", "runpy.run_path"),
                        ("registry.py", "resolve", "importlib.import_module")}
CODE_LOADERS = {"runpy.run_path", "runpy.run_module", "importlib.import_module", "importlib.__import__"}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def calls_in_package():
    """(relative file, enclosing function, dotted callee, call node) for every call in tunekit/."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        functions = [(n, n.lineno, n.end_lineno) for n in ast.walk(tree)
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                inside = [f for f, start, end in functions if start <= node.lineno <= end]
                name = min(inside, key=lambda f: f.end_lineno - f.lineno).name if inside else "<module>"
                yield str(path.relative_to(PACKAGE)), name, dotted(node.func), node


def test_the_package_never_executes_text_or_uses_a_shell():
    found = []
    for file, function, callee, node in calls_in_package():
        where = f"{file}:{node.lineno} in {function}: {callee}"
        if callee in FORBIDDEN_CALLS or callee.split(".")[-1] in {"system", "popen"} and "os" in callee:
            found.append(where)
        for keyword in node.keywords:
            no_shell = isinstance(keyword.value, ast.Constant) and keyword.value.value is False
            if keyword.arg == "shell" and not no_shell:
                found.append(f"{where} with shell=")
        if callee in CODE_LOADERS and (file, function, callee) not in TRUSTED_CODE_LOADERS:
            found.append(where)
        if callee.startswith("subprocess.") and node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr)):
            found.append(f"{where} with a command string")
    assert found == []


def test_only_the_restore_paths_of_ray_checkpoints_unpickle():
    uses = {(file, function): callee for file, function, callee, _ in calls_in_package() if callee in UNPICKLERS}
    assert set(uses) <= TRUSTED_UNPICKLING, set(uses) - TRUSTED_UNPICKLING
    assert uses, "the scan found no unpickling at all: the trusted paths moved, update this test"


def test_the_scan_catches_what_it_forbids(tmp_path):
    """The scan itself can fail: a planted eval, shell=True and pickle.load are each reported."""
    source = "import os, pickle, subprocess\ndef f(x):\n    eval(x)\n    subprocess.run(x, shell=True)\n" \
             "    os.system(x)\n    return pickle.load(x)\n"
    tree = ast.parse(source)
    callees = [dotted(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert {"eval", "os.system"} <= FORBIDDEN_CALLS & set(callees)
    assert "pickle.load" in UNPICKLERS & set(callees)
    shells = [k for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords if k.arg == "shell"]
    assert len(shells) == 1


class Payload:
    """Unpickling this touches ``sentinel``: if any reader unpickled a planted file, the sentinel appears."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


PYTHON_AND_SHELL = ["__import__('os').system('touch {s}')", "$(touch {s})", "`touch {s}`", "; touch {s}",
                    "{{params_path.__class__.__mro__}}", "eval(compile('open(\"{s}\", \"w\")', '', 'exec'))"]


@pytest.fixture
def planted(tmp_path):
    """An experiment folder whose trial files hold payloads: strings of code in JSON, and pickles."""
    sentinel = tmp_path / "pwned"
    texts = [t.format(s=sentinel) for t in PYTHON_AND_SHELL]
    folder = tmp_path / "runs" / "untrusted"
    (folder / "trial_a").mkdir(parents=True)
    (folder / "trial_b").mkdir()
    (folder / "trial_c").mkdir()
    (folder / "experiment.toml").write_text('[experiment]\nname = "untrusted"\nmetric = "loss"\nmode = "min"\n')
    a = folder / "trial_a"
    (a / "params.json").write_text(json.dumps({f"p{i}": text for i, text in enumerate(texts)}))
    (a / "results.json").write_text(json.dumps({"loss": 0.5, **{f"r{i}": text for i, text in enumerate(texts)}}))
    (a / "status.json").write_text(json.dumps({"status": "succeeded", "trial_id": texts[0], "reason": texts[1],
                                               "started_at": texts[2], "duration_s": texts[3]}))
    b = folder / "trial_b"
    (b / "params.json").write_text(json.dumps({"x": 1}))
    (b / "status.json").write_text(json.dumps({"status": texts[0], "trial_id": 7, "stderr_tail": ["x"],
                                               "progress_reports": texts[1], "started_at": 10**400}))
    (b / "progress.jsonl").write_text(json.dumps({"loss": texts[4]}) + "\n" + "[" * 100000 + "\n")
    c = folder / "trial_c"
    for name in ("params.json", "results.json", "status.json", "progress.jsonl"):
        (c / name).write_bytes(pickle.dumps(Payload(sentinel)) + b"\n")
    return folder, sentinel, texts


def test_planted_payloads_in_a_finished_experiment_are_read_as_strings(planted, capsys):
    folder, sentinel, texts = planted
    records = {r.trial_dir.name: r for r in collect_trials(folder, "loss")}
    assert set(records) == {"trial_a", "trial_b"}  # trial_c's pickles are not JSON: not a trial folder
    a, b = records["trial_a"], records["trial_b"]
    assert a.config == {f"p{i}": text for i, text in enumerate(texts)}
    assert a.results["r0"] == texts[0] and a.value == 0.5 and a.trial_id == texts[0]
    assert (b.status, b.trial_id, b.value, b.progress_reports) == ("unfinished", "b", None, 0)
    summary = write_summary(folder, "loss", "min")
    assert summary["best"]["config"]["p1"] == texts[1]
    assert texts[0] in (folder / "results.csv").read_text()
    assert cli.main(["show", str(folder)]) == 0
    assert texts[1][:20] in capsys.readouterr().out
    assert not sentinel.exists()


def test_planted_results_and_progress_lines_are_refused_with_a_reason_never_run(planted):
    folder, sentinel, texts = planted
    with pytest.raises(TrialFailure, match="metric 'loss' is .*__import__.*, not a number"):
        check = folder / "code.json"
        check.write_text(json.dumps({"loss": texts[0]}))
        read_results(check, "loss")
    for name in ("results.json", "params.json"):
        with pytest.raises(TrialFailure, match="malformed results file"):
            read_results(folder / "trial_c" / name, "loss")
    deep = folder / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(TrialFailure, match="malformed results file deep.json"):
        read_results(deep, "loss")
    with pytest.raises(TrialFailure, match="not a number"):
        ProgressReader(folder / "trial_b" / "progress.jsonl", "loss").read()
    with pytest.raises(TrialFailure, match="malformed line 1"):
        ProgressReader(folder / "trial_c" / "progress.jsonl", "loss").read()
    assert not sentinel.exists()


def test_a_planted_experiment_file_or_stored_copy_is_refused_as_data(planted, capsys):
    folder, sentinel, texts = planted
    with pytest.raises(ExperimentFileError, match="TOML syntax"):
        parse_experiment(pickle.dumps(Payload(sentinel)).decode("latin-1"), folder / "x.toml")
    bait = (f'[experiment]\nname = "n"\nmetric = "m"\nmode = "min"\n[command]\n'
            f'argv = ["prog", "{{params_path.__class__.__mro__}}"]\n[parameters]\nx = {json.dumps(texts[0])}\n')
    with pytest.raises(ExperimentFileError, match=r"argv\[1\]: unknown placeholder"):
        parse_experiment(bait, folder / "x.toml")
    (folder / "experiment.toml").write_text("experiment = 5\n")  # a hand-edited stored copy
    assert cli.main(["show", str(folder)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is not a tunekit experiment folder" in line
    (folder / "experiment.toml").write_bytes(pickle.dumps(Payload(sentinel)))
    assert cli.main(["show", str(folder)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not sentinel.exists()


def test_the_payload_itself_works_so_the_tests_above_could_fail(tmp_path):
    sentinel = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Payload(sentinel)))
    assert sentinel.exists() and sys.platform != "win32"
