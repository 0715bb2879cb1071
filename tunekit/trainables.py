"""Adapters that turn user code into Ray Tune function trainables.

hpman-declared code reads its hyperparameters with ``_('name', default, ...)`` instead of taking arguments.
:func:`hpman_trainable` (a function) and :func:`hpman_script` (an unmodified script file, hpargparse options
included) run such code in the trial's own process with the trial's config injected by hpman's
``set_values`` (:func:`tunekit.hpman.injected_values`), scoped to the trial so that trials sharing a worker
process never see each other's values. The code may call ``ray.tune.report`` itself; otherwise what it
returns (a function) or leaves in a global (a script) is reported for it.

HPO4DL-style epoch-wise objectives ``objective(configuration, epoch, previous_epoch, checkpoint_path)`` run
through :func:`epoch_trainable` (one report and one Ray checkpoint per epoch, so schedulers can pause and
resume them); :func:`write_hpo4dl_outputs` writes HPO4DL's results CSV and best-trial checkpoint afterwards.

Guards for any function trainable: :func:`with_timeout` fails a trial that runs (or stays silent) too long and
frees its worker; :func:`require_metric` fails a trial that reports without the metric or never reports,
which Ray would otherwise treat as an error of the whole experiment.
"""

from __future__ import annotations

import contextlib
import csv
import faulthandler
import inspect
import json
import math
import runpy
import shutil
import sys
import tempfile
import threading
import time
import traceback
from numbers import Real
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import hpman.m
from hpman import HyperParameterManager
from ray import tune

from tunekit.hpman import injected_values

# sys.argv is one list per process: scripts in one process run one at a time (values never go through
# argv alone, so this only guards argv itself).
_ARGV_LOCK = threading.Lock()


def report_outcome(outcome: Any, metric: str) -> None:
    """Report what user code returned: a number as ``{metric: number}``, a dict as is, None as nothing."""
    if outcome is None:
        return
    if isinstance(outcome, Mapping):
        tune.report(dict(outcome))
    elif isinstance(outcome, Real) and not isinstance(outcome, bool):
        tune.report({metric: float(outcome)})
    else:
        raise TypeError(f"the trained code returned {outcome!r}: return a number, a dict of metrics, or None "
                        "(after calling ray.tune.report itself)")


def _fail_if_nothing_reported(run: Callable[[], Any], nothing_reported: Exception) -> Any:
    """``run()`` in a Ray trial; raise ``nothing_reported`` when it reported nothing (and did not resume from a
    checkpoint); returns what ``run`` returned.

    Ray would record such a trial as a success without a result, or, when the config has two or more keys,
    end the whole experiment (see :func:`require_metric`); failing the trial names the cause instead.
    """
    from ray.train._internal.session import get_session

    session = get_session()
    if session is None:
        return run()
    before, resumed = session.iteration, session.loaded_checkpoint is not None
    value = run()
    if session.iteration == before and not resumed:
        raise nothing_reported
    return value


def _reported_nothing(what: str) -> ValueError:
    """The error of an hpman trainable (``what``) that ended without a report."""
    return ValueError(f"{what} ended without reporting anything: return a number or a dict of metrics, or call "
                      "ray.tune.report(...)")


def _manager_of(function: Callable, placeholder: str) -> HyperParameterManager:
    """The manager ``function`` reads: the global named ``placeholder`` in its module, else ``hpman.m``'s."""
    candidate = getattr(inspect.unwrap(function), "__globals__", {}).get(placeholder)
    if isinstance(candidate, HyperParameterManager):
        return candidate
    return getattr(hpman.m, placeholder)


def _takes_config(function: Callable) -> bool:
    parameters = inspect.signature(function).parameters.values()
    return any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)


def call_with_values(function: Callable, config: Mapping[str, Any], *, placeholder: str = "_",
                     sources: Sequence[tuple[str, str]] = ()) -> Any:
    """Call ``function()`` (or ``function(config)`` when it takes one argument) with ``config`` injected into
    its hpman manager for the duration of the call; returns what it returns."""
    manager = _manager_of(function, placeholder)
    with injected_values(manager, config, sources=sources):
        return function(dict(config)) if _takes_config(function) else function()


def hpman_trainable(function: Callable, *, metric: str = "loss", placeholder: str = "_",
                    source_files: Optional[Sequence[str]] = None) -> Callable[[dict], None]:
    """A Ray function trainable running the hpman-declared ``function`` with each trial's config injected.

    Args:
        function: reads its hyperparameters with ``_(...)``; takes no argument or the config dict; returns a
            number (reported as ``metric``), a dict of metrics, or None when it calls ``tune.report`` itself.
        metric: the name a returned number is reported under.
        placeholder: the name of the manager variable (hpman's convention is ``_``).
        source_files: files whose declarations (defaults, hints) the trial parses; default: the file that
            defines ``function``. Their text is read here, so trials on other machines need no copy.
    """
    files = source_files if source_files is not None else [inspect.getsourcefile(inspect.unwrap(function))]
    sources = [(str(path), Path(path).read_text()) for path in files]

    def trainable(config: dict) -> None:
        def run() -> None:
            report_outcome(call_with_values(function, config, placeholder=placeholder, sources=sources), metric)

        name = getattr(function, "__name__", function)
        _fail_if_nothing_reported(run, _reported_nothing(f"the hpman function {name!r}"))

    # a name for Ray's trial names, but no __wrapped__: Ray inspects the signature for its `config` argument
    trainable.__name__ = getattr(function, "__name__", "hpman_trainable")
    return trainable


def cli_options(config: Mapping[str, Any]) -> list[str]:
    """hpargparse's command-line options for ``config``: ``--learning-rate 0.1`` per value (``_`` -> ``-``),
    numbers by ``repr`` so they parse back exactly, lists and dicts as Python literals."""
    options = []
    for name, value in config.items():
        options += [f"--{name.replace('_', '-')}", value if isinstance(value, str) else repr(value)]
    return options


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    with _ARGV_LOCK:
        saved, sys.argv = sys.argv, argv
        try:
            yield
        finally:
            sys.argv = saved


def run_script(path: str, config: Mapping[str, Any], *, args: Sequence[str] = (), placeholder: str = "_",
               with_cli_options: bool = True) -> dict:
    """Run the hpman script at ``path`` as ``__main__`` in this process with ``config`` injected into
    ``hpman.m.<placeholder>``, and, when ``with_cli_options``, also given as hpargparse options
    (``sys.argv = [path, *cli_options(config), *args]``). Returns the script's globals.

    A ``sys.exit(0)`` ends the script normally; another exit code raises a RuntimeError.
    """
    argv = [str(path), *(cli_options(config) if with_cli_options else []), *args]
    with _argv(argv), injected_values(getattr(hpman.m, placeholder), config):
        try:
            return runpy.run_path(str(path), run_name="__main__")
        except SystemExit as stop:
            if stop.code not in (None, 0):
                raise RuntimeError(f"hpman script {path} exited with code {stop.code!r} (argv {argv})") from stop
            return {}


def hpman_script(path: str, *, result: Optional[str] = None, metric: str = "loss", args: Sequence[str] = (),
                 placeholder: str = "_", with_cli_options: bool = True) -> Callable[[dict], None]:
    """A Ray function trainable running the unmodified hpman script at ``path`` once per trial
    (:func:`run_script`).

    Args:
        path: the script; it must exist at this path where trials run (it parses itself with
            ``_.parse_file(__file__)``, as hpman scripts do).
        result: the name of a global the script leaves holding its outcome (a number, reported as ``metric``,
            or a dict of metrics); None when the script calls ``ray.tune.report`` itself.
        args: further command-line arguments, after the hyperparameter options.
        with_cli_options: also pass the values as hpargparse options; turn off for a script whose own
            argparse parser does not know them.
    """
    script = Path(path).resolve()
    if not script.is_file():
        raise ValueError(f"hpman_script: path={path!r} is not a file")

    def trainable(config: dict) -> None:
        def run() -> None:
            namespace = run_script(str(script), config, args=args, placeholder=placeholder,
                                   with_cli_options=with_cli_options)
            if result is None:
                return
            if result not in namespace:
                raise ValueError(f"hpman script {script} left no global {result!r} to report (result={result!r})")
            report_outcome(namespace[result], metric)

        _fail_if_nothing_reported(run, _reported_nothing(f"hpman script {script}"))

    trainable.__name__ = script.stem
    return trainable


EPOCH_FILE = "tunekit_epoch.json"


def _epoch_rows(outcome: Any, epoch: int) -> list[dict]:
    """An HPO4DL objective's return value (a dict or a list of dicts with ``epoch`` and ``metric``) as rows."""
    rows = [outcome] if isinstance(outcome, Mapping) else outcome
    if not isinstance(rows, (list, tuple)) or not rows:
        raise TypeError(f"the objective returned {outcome!r} for epoch {epoch}: return a dict or a non-empty list "
                        "of dicts, each with 'epoch' and 'metric'")
    for row in rows:
        if not isinstance(row, Mapping) or "epoch" not in row or "metric" not in row:
            raise TypeError(f"the objective returned {row!r} for epoch {epoch}: each dict needs 'epoch' and 'metric'")
    return [dict(row) for row in rows]


def epoch_trainable(objective: Callable[..., Any], *, checkpoint_dir_name: str = "checkpoint",
                    max_epochs: Optional[int] = None) -> Callable[[dict], None]:
    """A Ray function trainable running an HPO4DL objective one epoch at a time, unchanged.

    ``objective(configuration, epoch, previous_epoch, checkpoint_path)`` trains from ``previous_epoch`` to
    ``epoch`` saving what it needs under ``checkpoint_path`` and returns a dict or list of dicts with
    ``epoch`` and ``metric``. Each returned row is reported (``metric``, ``epoch`` and any other keys) with a
    Ray checkpoint holding ``checkpoint_dir_name/`` (the objective's files) and the epoch reached, so a paused
    or restored trial resumes where it stopped. The trial runs until the scheduler stops it, or until
    ``max_epochs`` when given. Optimise ``metric="metric"`` (mode as for HPO4DL's ``minimize``).
    """
    if not isinstance(checkpoint_dir_name, str) or not checkpoint_dir_name or "/" in checkpoint_dir_name:
        raise ValueError(f"checkpoint_dir_name={checkpoint_dir_name!r} must be a plain folder name")
    if max_epochs is not None and (isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1):
        raise ValueError(f"max_epochs={max_epochs!r} must be an integer >= 1 or None")

    def trainable(config: dict) -> None:
        with tempfile.TemporaryDirectory(prefix="tunekit_epochs_") as work:
            history = _restore_epoch_state(Path(work))
            previous = history[-1]["epoch"] if history else 0
            objective_dir = Path(work) / checkpoint_dir_name
            objective_dir.mkdir(exist_ok=True)
            while max_epochs is None or previous < max_epochs:
                epoch = previous + 1
                rows = _epoch_rows(objective(dict(config), epoch, previous, str(objective_dir)), epoch)
                for row in rows:
                    previous = max(previous, int(row["epoch"]))
                    history.append({"epoch": int(row["epoch"]), "metric": row["metric"]})
                    (Path(work) / EPOCH_FILE).write_text(json.dumps(history))
                    tune.report(row, checkpoint=tune.Checkpoint.from_directory(work))

    trainable.__name__ = getattr(objective, "__name__", "epoch_trainable")
    return trainable


def _restore_epoch_state(work: Path) -> list[dict]:
    """Copy the trial's Ray checkpoint (if any) into ``work``; return its history (``epoch``/``metric`` rows).

    Downloaded straight into ``work``: ``as_directory`` would first copy a checkpoint on remote storage to a
    temporary folder, one more full copy of the objective's files at every resume."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return []
    checkpoint.to_directory(str(work))
    return json.loads((work / EPOCH_FILE).read_text())


def write_hpo4dl_outputs(result_grid: Any, path: str, *, mode: str = "min") -> Path:
    """Write HPO4DL's outputs for a finished ``tune.ResultGrid`` of :func:`epoch_trainable` trials into ``path``.

    ``hpo4dl_results.csv``: one row per configuration and epoch (configuration id, trial id, epoch, metric,
    then the configuration's values), read from each trial's last checkpoint, which carries its whole curve
    (so it does not depend on Ray's result loggers); ``best_configuration.json``: the best configuration and
    value; ``best_trial/``: the last checkpoint of the trial that reached the best metric. Returns ``best_trial``.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode={mode!r} is not accepted: use 'min' or 'max'")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    rows, best = [], None
    sign = 1.0 if mode == "min" else -1.0
    for number, result in enumerate(result_grid):
        if result.checkpoint is None:
            continue
        with result.checkpoint.as_directory() as directory:
            history = json.loads((Path(directory) / EPOCH_FILE).read_text())
        for row in history:
            rows.append({"configuration_id": number, "trial_id": Path(result.path).name, **row, **result.config})
            if best is None or sign * float(row["metric"]) < sign * best[0]:
                best = (float(row["metric"]), result)
    if not rows:
        raise ValueError("write_hpo4dl_outputs: no trial left an epoch_trainable checkpoint")
    with open(out / "hpo4dl_results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
    value, result = best
    (out / "best_configuration.json").write_text(json.dumps({"configuration": result.config, "metric": value},
                                                            default=str, indent=2))
    best_dir = out / "best_trial"
    shutil.rmtree(best_dir, ignore_errors=True)
    result.checkpoint.to_directory(str(best_dir))
    return best_dir


#: Seconds a trial that passed its time limit but could not be ended gets before its process is killed.
DEFAULT_GRACE_S = 30.0


class TrialTimeout(TimeoutError):
    """A trial ran past its :func:`with_timeout` limit; Ray records it as the trial's error."""


def with_timeout(trainable: Callable[[dict], Any], seconds: float, *, between_reports: bool = False,
                 grace_s: float = DEFAULT_GRACE_S) -> Callable[[dict], Any]:
    """A Ray function trainable that fails with :class:`TrialTimeout` when ``trainable`` runs too long.

    Ray runs a function trainable in a thread of the trial's actor and waits for its next ``tune.report``
    without any limit, so a trial that hangs holds its worker (CPU/GPU) forever and Ray's stop criteria,
    which only see reported results, never fire. Here the function runs in a thread of its own while a
    watchdog (the thread Ray started) keeps its clock:

    * ``seconds`` is the limit of one run of the trial (a paused and resumed trial starts a new clock); with
      ``between_reports=True`` the clock restarts at every report, so it bounds the silence between two
      reports (and before the first) instead of the whole run: the setting for long trials that report often.
    * Time spent inside ``tune.report`` does not count (there the trial waits for Ray's driver, which may be
      busy fitting a searcher's model), so a slow driver never times out a healthy trial.
    * Past the limit the trial raises ``TrialTimeout`` naming the limit and where the code was, Ray records the
      trial as ERROR (the searcher learns it as failed, the scheduler drops it), ends its actor and so frees
      its worker, and the experiment goes on. Reports the abandoned thread might still make are ignored.
    * A hang in C code that holds the GIL stops Python threads, the watchdog included. For that case a
      C-level timer (``faulthandler.dump_traceback_later``) kills the trial's process ``grace_s`` seconds after
      the limit, having written every thread's stack to the worker's stderr: Ray then records the trial as
      ERROR with an "actor died" error (not a ``TrialTimeout``). That timer is one per process, so it is armed
      only inside a Ray trial, and code that sets its own ``faulthandler.dump_traceback_later`` (or nests two
      ``with_timeout``) replaces it.

    C code that releases the GIL (``time.sleep``, I/O, most numpy/torch kernels) is ended by the watchdog
    like Python code. External programs have their own limit: ``CommandSpec(timeout_s=...)`` (``timeout_s`` in an
    experiment file's ``[command]``), which kills the program's process group.
    """
    _check_function_trainable("with_timeout", trainable)
    for name, value in (("seconds", seconds), ("grace_s", grace_s)):
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"with_timeout({name}={value!r}): use a number of seconds")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"with_timeout({name}={value!r}): use a positive finite number of seconds")
    if not isinstance(between_reports, bool):
        raise TypeError(f"with_timeout(between_reports={between_reports!r}): use True or False")

    def timed_trainable(config: dict) -> Any:
        return _run_with_watchdog(trainable, config, float(seconds), between_reports, float(grace_s))

    return _like(timed_trainable, trainable)


def _check_function_trainable(wrapper: str, trainable: Any) -> None:
    """TypeError unless ``trainable`` is a plain function trainable ``f(config)``."""
    if inspect.isclass(trainable) or not callable(trainable) or inspect.isgeneratorfunction(trainable):
        raise TypeError(f"{wrapper}(trainable={trainable!r}): pass a function trainable `f(config)` that calls "
                        "tune.report (not a class, not a generator); external programs have their own checks "
                        "(CommandSpec)")
    try:
        inspect.signature(trainable).bind({})
    except TypeError:
        raise TypeError(f"{wrapper}(trainable={trainable!r}): it must take the trial's config as its one "
                        "argument") from None
    except ValueError:
        pass


def _like(wrapper: Callable, trainable: Callable) -> Callable:
    """``wrapper`` carrying ``trainable``'s name and what tune.with_resources / tune.with_parameters set on it."""
    wrapper.__name__ = getattr(trainable, "__name__", "trainable")
    for attribute in ("_resources", "__mixins__"):
        if hasattr(trainable, attribute):
            setattr(wrapper, attribute, getattr(trainable, attribute))
    return wrapper


class _TrialClock:
    """Seconds the trial has used against its limit, sampled by the watchdog every ``poll`` seconds."""

    def __init__(self, seconds: float, between_reports: bool, session: Any):
        self.seconds, self.between_reports, self.session = seconds, between_reports, session
        self.used, self.last = 0.0, time.monotonic()
        self.reports = self._reports()

    def _reports(self) -> int:
        return getattr(self.session, "iteration", 0)

    def tick(self, waiting_in_report: bool) -> None:
        now = time.monotonic()
        if not waiting_in_report:
            self.used += now - self.last
        self.last = now
        reports = self._reports()
        if reports != self.reports:
            self.reports = reports
            if self.between_reports:
                self.used = 0.0

    @property
    def left(self) -> float:
        return max(self.seconds - self.used, 0.0)

    def message(self, where: str) -> str:
        if self.between_reports:
            what = f"went {self.used:.1f} s without a tune.report (with_timeout(seconds={self.seconds:g}, " \
                   "between_reports=True))"
        else:
            what = f"ran {self.used:.1f} s without finishing (with_timeout(seconds={self.seconds:g}))"
        return f"trial timed out: it {what}; it was at:\n{where}"


def _report_codes() -> frozenset:
    """Code objects of Ray's ``tune.report`` path, to tell a trial waiting for the driver from one working."""
    from ray.train._internal.session import _TrainSession

    return frozenset(method.__code__ for method in (_TrainSession.report, _TrainSession._report_training_result))


def _waiting_in_report(thread: threading.Thread, report_codes: frozenset) -> bool:
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code in report_codes:
            return True
        frame = frame.f_back
    return False


def _where(thread: threading.Thread) -> str:
    """The last lines of ``thread``'s stack (where a timed-out trial was)."""
    frame = sys._current_frames().get(thread.ident)
    return "".join(traceback.format_stack(frame)[-4:]).rstrip() if frame is not None else "(thread ended)"


def _run_with_watchdog(trainable: Callable[[dict], Any], config: dict, seconds: float, between_reports: bool,
                       grace_s: float) -> Any:
    """Run ``trainable(config)`` in its own thread; raise TrialTimeout when its clock passes ``seconds``."""
    from ray.train._internal.session import get_session

    session = get_session()
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = trainable(config)
        except BaseException as error:  # SystemExit(0) included: Ray's "stop", re-raised below as is
            outcome["error"] = error

    worker = threading.Thread(target=target, name=f"tunekit-{getattr(trainable, '__name__', 'trial')}", daemon=True)
    clock, codes = _TrialClock(seconds, between_reports, session), _report_codes()
    poll = min(1.0, max(0.02, seconds / 20))
    hard_limit = session is not None
    if hard_limit:
        faulthandler.dump_traceback_later(seconds + grace_s, exit=True)
    worker.start()
    while worker.is_alive():
        worker.join(poll)
        clock.tick(_waiting_in_report(worker, codes))
        if not worker.is_alive():
            break
        if clock.left <= 0:
            # The kill timer stays armed: Ray ends this actor after the error, and if it cannot, the timer does.
            if session is not None:
                session.pause_reporting()
            raise TrialTimeout(clock.message(_where(worker)))
        if hard_limit:
            faulthandler.dump_traceback_later(clock.left + grace_s, exit=True)
    if hard_limit:
        faulthandler.cancel_dump_traceback_later()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


class MissingMetric(ValueError):
    """A trial reported a result without the metric, or ended without reporting it (see :func:`require_metric`)."""


def require_metric(trainable: Callable[[dict], Any], metric: str) -> Callable[[dict], Any]:
    """A Ray function trainable that fails (raises :class:`MissingMetric`) when ``trainable`` reports a result
    without ``metric`` or ends without ever reporting.

    Ray treats both as the experiment's error, not the trial's: a result without the Tuner's metric stops the
    whole experiment, and so does a trial that returns before its first report whenever the config has two or
    more keys (Ray 2.x's strict metric check counts the flattened ``config/...`` keys of the auto-filled
    result as reported metrics). Wrapped, the trial fails with the reason and the others go on; searchers
    record it as failed. A run resumed from a checkpoint may end without a new report (it had reported
    before the checkpoint). Combine with :func:`with_timeout` in any order.
    """
    _check_function_trainable("require_metric", trainable)
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"require_metric(metric={metric!r}): pass the name of the metric the Tuner optimises")

    def checked_trainable(config: dict) -> Any:
        from ray.train._internal.session import get_session

        session = get_session()
        if session is None:
            return trainable(config)
        ray_report = session.report

        def report(metrics: dict, checkpoint: Any = None) -> None:
            if metric not in metrics:
                raise MissingMetric(f"the trial reported {sorted(metrics)} without the metric {metric!r}")
            ray_report(metrics, checkpoint=checkpoint)

        session.report = report
        try:
            return _fail_if_nothing_reported(
                lambda: trainable(config), MissingMetric(f"the trial ended without reporting the metric {metric!r}"))
        finally:
            del session.report

    return _like(checked_trainable, trainable)
