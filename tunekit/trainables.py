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
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import json
import runpy
import shutil
import sys
import tempfile
import threading
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
        report_outcome(call_with_values(function, config, placeholder=placeholder, sources=sources), metric)

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
        namespace = run_script(str(script), config, args=args, placeholder=placeholder,
                               with_cli_options=with_cli_options)
        if result is None:
            return
        if result not in namespace:
            raise ValueError(f"hpman script {script} left no global {result!r} to report (result={result!r})")
        report_outcome(namespace[result], metric)

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
    """Copy the trial's Ray checkpoint (if any) into ``work``; return its history (``epoch``/``metric`` rows)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as directory:
        shutil.copytree(directory, work, dirs_exist_ok=True)
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
