"""External programs as Ray Tune trials (the hypered way: a params JSON in, a results JSON out).

Each trial runs ``argv`` once, without a shell, in a process group of its own. The program reads its
parameters from ``{params_path}`` (the only way parameter values reach it), may append one JSON object
per line to ``{progress_path}`` (each line becomes one ``training_iteration`` that schedulers see as it
comes) and must write a JSON object holding the metric to ``{results_path}`` before exiting with code 0.
Anything else (a non-zero exit, a timeout, a missing or malformed file, a missing metric) fails the trial:
the reason and the last lines of stderr go to ``failure.txt`` and ``status.json`` in the trial folder and
the trial raises :class:`TrialFailure`, which Ray records as an ERROR without stopping the experiment.

A trial folder ``<experiment>/trial_<trial_id>/`` holds params.json, results.json, progress.jsonl,
stdout.log, stderr.log, status.json (and failure.txt). When Ray restarts a trial after an interrupted
experiment, a program that had already succeeded, or had written valid results before the interruption,
is not run again: its results are reported as they are.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from ray import tune

from tunekit.files import write_atomically
from tunekit.resources import assigned_gpu_ids

logger = logging.getLogger(__name__)

PLACEHOLDERS = ("params_path", "results_path", "progress_path", "trial_dir", "device_id")
TRIAL_FILES = {
    "params_path": "params.json",
    "results_path": "results.json",
    "progress_path": "progress.jsonl",
}
STATUS_FILE = "status.json"
FAILURE_FILE = "failure.txt"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
STDERR_TAIL_LINES = 20
# Seconds a program gets between SIGTERM and SIGKILL when it must stop (timeout, scheduler, shutdown).
TERMINATE_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1


class TrialFailure(RuntimeError):
    """An external program did not produce a valid result; the message is the reason (and stderr tail)."""


def trial_dirname(trial: Any) -> str:
    """Ray's ``trial_dirname_creator``: ``trial_<trial_id>``, so a trainable can find its folder from its id."""
    return f"trial_{trial.trial_id}"


def placeholders_in(text: str) -> list[str]:
    """The ``{name}`` placeholders of ``text``; ValueError naming a malformed or unknown one (``{{`` is a brace)."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(text) if name is not None]
    except ValueError as error:
        raise ValueError(f"{text!r} is not a valid template ({error}); write a literal brace as {{{{ or }}}}") from None
    accepted = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
    for name, spec, conv in fields:
        if name not in PLACEHOLDERS or spec or conv:
            raise ValueError(f"unknown placeholder {{{name}}} in {text!r}; accepted: {accepted}")
    return [name for name, _, _ in fields]


def fill_placeholders(text: str, values: Mapping[str, str]) -> str:
    """``text`` with its placeholders replaced by ``values`` (already checked by :func:`placeholders_in`)."""
    return text.format_map(values)


@dataclass(frozen=True)
class CommandSpec:
    """What every trial of an experiment runs.

    ``argv`` items and ``env`` values may hold placeholders; ``cwd`` is absolute; ``timeout_s`` is the
    wall-clock limit of one trial in seconds (None: none); ``experiment_dir`` is the absolute local folder
    that holds the trial folders; ``poll_interval_s`` is how often the progress file is read.
    """

    argv: tuple[str, ...]
    metric: str
    experiment_dir: str
    cwd: Optional[str] = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: Optional[float] = None
    poll_interval_s: float = 0.1


def to_json(value: Any) -> Any:
    """``value`` with numpy scalars and tuples turned into plain JSON types (Ray samples numpy values)."""
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (a reader never sees half a file)."""
    write_atomically(str(path), (json.dumps(data, indent=2, allow_nan=True) + "\n").encode())


def read_results(path: Path, metric: str) -> dict:
    """The results object of a finished program; TrialFailure when missing, malformed or without ``metric``."""
    if not path.is_file():
        raise TrialFailure(f"the program wrote no results file {path.name}")
    try:
        results = json.loads(path.read_text())
    except (ValueError, RecursionError) as error:
        raise TrialFailure(f"malformed results file {path.name}: {error}") from None
    check_metrics(results, metric, f"results file {path.name}")
    return results


def check_metrics(results: Any, metric: str, where: str) -> None:
    """TrialFailure unless ``results`` is a JSON object whose ``metric`` is a number."""
    if not isinstance(results, dict):
        raise TrialFailure(f"{where} holds {type(results).__name__}, not a JSON object")
    if metric not in results:
        raise TrialFailure(f"{where} has no metric {metric!r}; it has: {sorted(results)}")
    value = results[metric]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TrialFailure(f"{where}: metric {metric!r} is {value!r}, not a number")


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL when the trial's worker dies, so no program outlives it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ProgressReader:
    """Reads complete new lines of a JSON-lines file that another process appends to."""

    def __init__(self, path: Path, metric: str):
        self.path = path
        self.metric = metric
        self.offset = 0
        self.count = 0

    def read(self) -> list[dict]:
        """Metrics of the lines completed since the last call; TrialFailure for a malformed line."""
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        reports = []
        for raw in chunk[:end].splitlines():
            if not raw.strip():
                continue
            self.count += 1
            where = f"line {self.count} of {self.path.name}"
            try:
                report = json.loads(raw)
            except (ValueError, RecursionError) as error:
                raise TrialFailure(f"malformed {where}: {error}") from None
            check_metrics(report, self.metric, where)
            reports.append(report)
        return reports


class CommandTrainable(tune.Trainable):
    """A Ray Tune trainable that runs one external program per trial (see the module docstring).

    Use ``tune.with_parameters(CommandTrainable, spec=CommandSpec(...))`` with
    ``TuneConfig(trial_dirname_creator=trial_dirname)`` and ``CheckpointConfig(checkpoint_at_end=False)``
    (a running program cannot be checkpointed: a restarted trial runs its program again).
    """

    def setup(self, config: dict, spec: CommandSpec) -> None:
        self.spec = spec
        self.trial_dir = Path(spec.experiment_dir) / f"trial_{self.trial_id}"
        self.trial_dir.mkdir(parents=True, exist_ok=True)
        self.paths = {name: self.trial_dir / filename for name, filename in TRIAL_FILES.items()}
        self.pending: list[dict] = []
        self.process: Optional[subprocess.Popen] = None
        self.finished = False
        self.reused = self._previous_results()
        if self.reused is None:
            self._start(config)

    def _previous_results(self) -> Optional[dict]:
        """Results of an earlier run of this very trial in an interrupted experiment: it succeeded, or the
        interruption came after its program wrote valid results (hypered's rule: results.json exists)."""
        status_path = self.trial_dir / STATUS_FILE
        try:
            status = json.loads(status_path.read_text())
            if not isinstance(status, dict) or status.get("status") not in ("succeeded", "running"):
                return None
            results = read_results(self.paths["results_path"], self.spec.metric)
        except (OSError, ValueError, RecursionError, TrialFailure):
            return None
        if status["status"] == "running":
            write_json(status_path, {**status, "status": "succeeded", "recovered_after_interruption": True})
        logger.info("trial %s already succeeded in an earlier run: reporting its results, not rerunning",
                    self.trial_id)
        return results

    def _start(self, config: dict) -> None:
        for name in ("results_path", "progress_path"):
            self.paths[name].unlink(missing_ok=True)
        (self.trial_dir / FAILURE_FILE).unlink(missing_ok=True)
        write_json(self.paths["params_path"], to_json(config))
        gpu_ids = assigned_gpu_ids() or []
        values = {name: str(path) for name, path in self.paths.items()}
        values.update(trial_dir=str(self.trial_dir), device_id=",".join(gpu_ids))
        argv = [fill_placeholders(item, values) for item in self.spec.argv]
        env = {**os.environ, **{k: fill_placeholders(v, values) for k, v in self.spec.env.items()},
               "CUDA_VISIBLE_DEVICES": ",".join(gpu_ids)}
        self.progress = ProgressReader(self.paths["progress_path"], self.spec.metric)
        self.started_at = time.time()
        self.started = time.monotonic()
        self._write_status("running")
        with open(self.trial_dir / STDOUT_FILE, "wb") as out, open(self.trial_dir / STDERR_FILE, "wb") as err:
            try:
                self.process = subprocess.Popen(
                    argv, cwd=self.spec.cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            except OSError as error:
                self._fail(f"could not start {argv[0]!r}: {error}")
        logger.info("trial %s started %s (pid %d) in %s", self.trial_id, argv, self.process.pid, self.spec.cwd)

    def step(self) -> dict:
        if self.reused is not None:
            self.finished = True
            return {**self.reused, "done": True}
        while not self.pending:
            self.pending.extend(self._read_progress())
            if self.pending:
                break
            returncode = self.process.poll()
            if returncode is not None:
                self.pending.extend(self._read_progress())
                if not self.pending:
                    return self._finish(returncode)
                break
            if self.spec.timeout_s is not None and time.monotonic() - self.started > self.spec.timeout_s:
                self._terminate()
                self._fail(f"timed out after {self.spec.timeout_s:g} s")
            time.sleep(self.spec.poll_interval_s)
        return self.pending.pop(0)

    def _read_progress(self) -> list[dict]:
        try:
            return self.progress.read()
        except TrialFailure as failure:
            self._terminate()
            self._fail(str(failure))

    def _finish(self, returncode: int) -> dict:
        if returncode != 0:
            how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
            self._fail(f"the program ended with {how}")
        try:
            results = read_results(self.paths["results_path"], self.spec.metric)
        except TrialFailure as failure:
            self._fail(str(failure))
        self.finished = True
        self._write_status("succeeded", returncode=0)
        return {**results, "done": True}

    def _fail(self, reason: str) -> None:
        """Record why the trial failed (status.json, failure.txt) and raise TrialFailure."""
        self.finished = True
        tail = self._stderr_tail()
        returncode = self.process.returncode if self.process is not None else None
        self._write_status("failed", reason=reason, returncode=returncode, stderr_tail=tail)
        text = reason + (f"\nlast lines of stderr:\n{tail}" if tail else "\n(stderr is empty)")
        (self.trial_dir / FAILURE_FILE).write_text(text + "\n")
        raise TrialFailure(text)

    def _stderr_tail(self) -> str:
        try:
            lines = (self.trial_dir / STDERR_FILE).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-STDERR_TAIL_LINES:])

    def _write_status(self, status: str, **details: Any) -> None:
        record = {"status": status, "trial_id": self.trial_id, "started_at": self.started_at,
                  "duration_s": round(time.monotonic() - self.started, 3),
                  "progress_reports": self.progress.count, **details}
        write_json(self.trial_dir / STATUS_FILE, record)

    def _terminate(self) -> None:
        """Stop the program's whole process group: SIGTERM, then SIGKILL after a grace period."""
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, TERMINATE_GRACE_S), (signal.SIGKILL, None)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def cleanup(self) -> None:
        """Ray stops this trial (a scheduler's decision or the experiment's end): stop its program too."""
        if self.process is None or self.finished:
            return
        self._terminate()
        self._write_status("stopped", returncode=self.process.returncode)
        logger.info("trial %s stopped after %d progress reports", self.trial_id, self.progress.count)
