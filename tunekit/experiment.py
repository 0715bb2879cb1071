"""Experiment files: data-only TOML -> validated dataclasses -> a configured ``tune.Tuner``.

The file is parsed with ``tomllib`` and never evaluated. Every key is checked before anything starts: an
unknown key, a wrong type, an unknown searcher or scheduler (or option of one), an unknown placeholder or a
space that :class:`tunekit.Space` rejects raises :class:`ExperimentFileError`, whose one-line message names
the file, the key and what is accepted. Relative paths (``storage_path``, ``cwd``) are relative to the
folder of the experiment file.

:func:`run_experiment` starts the experiment, or continues it with ``tune.Tuner.restore`` when its folder
holds an interrupted run of the same file (finished trials are never rerun), then writes ``results.csv``
and ``best.json`` beside the trial folders.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import time
import tomllib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from tunekit import registry
from tunekit.command_trainable import CommandSpec, placeholders_in
from tunekit.resources import trial_resources
from tunekit.parameters import _is_finite
from tunekit.space import Space
from tunekit.summary import STORED_FILE, write_summary

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "tunekit_runs"
DEFAULT_SEARCHER = "random"
DEFAULT_SCHEDULER = "fifo"
DEFAULT_NUM_SAMPLES = 10
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAMETER_IN_MESSAGE = re.compile(r"^parameter '([^']+)'")
# Seconds between snapshots of the experiment state (trial statuses, searcher state) that a resume reads.
_STATE_SNAPSHOT_S = "1"


class ExperimentFileError(ValueError):
    """A problem in an experiment file: ``"<file>: <key>: <what is wrong and what is accepted>"``."""

    def __init__(self, path: Path | str, key: str, detail: str):
        self.path, self.key = printable(str(path)), printable(key)
        self.detail = " ".join(printable(str(detail)).split())
        super().__init__(f"{self.path}: {self.key}: {self.detail}")


def printable(text: str) -> str:
    """``text`` with control and other unprintable characters escaped (``\\n``, ``\\x1b``), so that a key or
    value from a file can neither break an error line in two nor drive the terminal."""
    return "".join(char if char.isprintable() or char == " " else repr(char)[1:-1] for char in text)


@dataclass(frozen=True)
class Key:
    """One accepted key of a section: its kind ("str", "int", "number", "str_list", "str_table"), bounds."""

    kind: str
    required: bool = False
    default: Any = None
    choices: tuple = ()
    minimum: Optional[float] = None


SECTIONS: dict[str, dict[str, Key]] = {
    "experiment": {
        "name": Key("str", required=True),
        "metric": Key("str", required=True),
        "mode": Key("str", required=True, choices=("min", "max")),
        "num_samples": Key("int", minimum=1),
        "max_concurrent": Key("int", minimum=1),
        "storage_path": Key("str", default=DEFAULT_STORAGE),
        "cpu": Key("number", default=1, minimum=0),
        "gpu": Key("number", default=0, minimum=0),
    },
    "command": {
        "argv": Key("str_list", required=True),
        "cwd": Key("str"),
        "env": Key("str_table", default={}),
        "timeout_s": Key("number"),
    },
}
OPEN_SECTIONS = ("searcher", "scheduler", "parameters")
_KIND_WORDS = {"str": "a string", "int": "an integer", "number": "a finite number",
               "str_list": "a non-empty list of strings", "str_table": "a table of strings"}


@dataclass(frozen=True)
class ExperimentSettings:
    """The ``[experiment]`` table; ``storage_path`` absolute; ``max_concurrent`` None means no limit."""

    name: str
    metric: str
    mode: str
    num_samples: int
    max_concurrent: Optional[int]
    storage_path: Path
    cpu: float
    gpu: float


@dataclass(frozen=True)
class Component:
    """A searcher or scheduler as named in the file, with its options (Python argument names)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Experiment:
    """A validated experiment file; ``search_alg`` and ``scheduler`` are built and ready for a Tuner."""

    path: Path
    text: str
    document: dict
    settings: ExperimentSettings
    command: CommandSpec
    space: Space
    searcher: Component
    scheduler: Component
    search_alg: Any
    trial_scheduler: Any

    @property
    def experiment_dir(self) -> Path:
        """The folder of this experiment: ``<storage_path>/<name>``."""
        return self.settings.storage_path / self.settings.name


def _is_text(value: Any) -> bool:
    """A string a program can receive (argv, environment, paths): no NUL character."""
    return isinstance(value, str) and "\x00" not in value


def _check_value(key: Key, value: Any) -> Optional[str]:
    """What is wrong with ``value`` for ``key`` (None when nothing is)."""
    if key.kind == "str":
        ok = _is_text(value) and value != ""
    elif key.kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif key.kind == "number":
        ok = isinstance(value, (int, float)) and _is_finite(value)
    elif key.kind == "str_list":
        ok = isinstance(value, list) and bool(value) and all(_is_text(item) for item in value)
    else:
        ok = isinstance(value, dict) and all(_is_text(item) for item in value.values())
    expected = _KIND_WORDS[key.kind] + (f" >= {key.minimum:g}" if key.minimum is not None else "")
    if key.kind in ("str", "str_list", "str_table"):
        expected += " (without NUL characters)"
    if ok and key.minimum is not None:
        ok = value >= key.minimum
    if ok and key.choices:
        ok, expected = value in key.choices, "one of " + ", ".join(repr(c) for c in key.choices)
    return None if ok else f"expected {expected}, got {value!r}"


def _read_section(path: Path, document: dict, section: str) -> dict:
    """The keys of a fixed section with defaults filled in; ExperimentFileError for any bad key."""
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise ExperimentFileError(path, f"[{section}]", f"expected a table, got {table!r}")
    accepted = SECTIONS[section]
    for name, value in table.items():
        if name not in accepted:
            raise ExperimentFileError(path, f"[{section}] {name}",
                                      f"unknown key; accepted: {', '.join(accepted)}")
        problem = _check_value(accepted[name], value)
        if problem:
            raise ExperimentFileError(path, f"[{section}] {name}", problem)
    for name, key in accepted.items():
        if key.required and name not in table:
            raise ExperimentFileError(path, f"[{section}] {name}", f"missing; [{section}] needs "
                                      + ", ".join(n for n, k in accepted.items() if k.required))
    return {name: table.get(name, key.default) for name, key in accepted.items()}


def _read_component(path: Path, document: dict, kind: str, default: str) -> Component:
    table = document.get(kind, {})
    if not isinstance(table, dict):
        raise ExperimentFileError(path, f"[{kind}]", f"expected a table, got {table!r}")
    options = dict(table)
    name = options.pop("name", default)
    if not isinstance(name, str) or name not in registry.KINDS[kind]:
        raise ExperimentFileError(path, f"[{kind}] name",
                                  f"unknown {kind} {name!r}; accepted: {', '.join(registry.names(kind))}")
    return Component(name, options)


def _settings(path: Path, document: dict, searcher: Component) -> ExperimentSettings:
    table = _read_section(path, document, "experiment")
    if not _NAME_PATTERN.fullmatch(table["name"]):
        raise ExperimentFileError(path, "[experiment] name", f"{table['name']!r} is not a folder name; "
                                  "use 1 to 200 letters, digits, '.', '_' and '-', starting with a letter or digit")
    try:
        trial_resources(cpu=table["cpu"], gpu=table["gpu"])
    except (ValueError, TypeError) as error:
        key = "gpu" if str(error).startswith("gpu") else "cpu"
        raise ExperimentFileError(path, f"[experiment] {key}", str(error)) from None
    num_samples = table["num_samples"] or (1 if searcher.name == "grid" else DEFAULT_NUM_SAMPLES)
    return ExperimentSettings(
        name=table["name"], metric=table["metric"], mode=table["mode"], num_samples=num_samples,
        max_concurrent=table["max_concurrent"], storage_path=(path.parent / table["storage_path"]).resolve(),
        cpu=float(table["cpu"]), gpu=float(table["gpu"]))


def _command(path: Path, document: dict, settings: ExperimentSettings) -> CommandSpec:
    table = _read_section(path, document, "command")
    templates = [(f"[command] argv[{i}]", item) for i, item in enumerate(table["argv"])]
    templates += [(f"[command] env.{name}", value) for name, value in table["env"].items()]
    for name in table["env"]:
        if not _ENV_NAME_PATTERN.fullmatch(name):
            raise ExperimentFileError(path, f"[command] env.{name}", f"{name!r} is not an environment variable "
                                      "name; use letters, digits and '_', not starting with a digit")
    for key, template in templates:
        try:
            placeholders_in(template)
        except ValueError as error:
            raise ExperimentFileError(path, key, str(error)) from None
    cwd = (path.parent / table["cwd"]).resolve() if table["cwd"] else path.parent.resolve()
    if not cwd.is_dir():
        raise ExperimentFileError(path, "[command] cwd", f"{str(cwd)!r} is not a folder")
    timeout_s = table["timeout_s"]
    if timeout_s is not None and timeout_s <= 0:
        raise ExperimentFileError(path, "[command] timeout_s", f"expected a number > 0, got {timeout_s!r}")
    return CommandSpec(argv=tuple(table["argv"]), metric=settings.metric,
                       experiment_dir=str(settings.storage_path / settings.name), cwd=str(cwd),
                       env=dict(table["env"]), timeout_s=None if timeout_s is None else float(timeout_s))


def _space(path: Path, document: dict) -> Space:
    spec = document.get("parameters")
    if not isinstance(spec, dict) or not spec:
        raise ExperimentFileError(path, "[parameters]", "missing or empty; give at least one "
                                  "[parameters.NAME] table with type = float | int | categorical | ordinal "
                                  "| constant")
    try:
        return Space.from_dict(spec)
    except (ValueError, TypeError) as error:
        named = _PARAMETER_IN_MESSAGE.match(str(error))
        key = f"[parameters.{named.group(1)}]" if named and named.group(1) in spec else "[parameters]"
        raise ExperimentFileError(path, key, str(error)) from None


def _build(path: Path, kind: str, build: Any) -> Any:
    try:
        return build()
    except registry.OptionError as error:
        raise ExperimentFileError(path, f"[{kind}] {error.option}", str(error)) from None
    except (ValueError, TypeError) as error:
        raise ExperimentFileError(path, f"[{kind}]", str(error)) from None


def parse_experiment(text: str, path: Path | str = "<string>") -> Experiment:
    """Validate an experiment file's text; ExperimentFileError naming the key at the first problem."""
    path = Path(path)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ExperimentFileError(path, "TOML syntax", str(error)) from None
    except RecursionError:
        raise ExperimentFileError(path, "TOML syntax", "arrays or tables nested too deeply") from None
    sections = (*SECTIONS, *OPEN_SECTIONS)
    for name in document:
        if name not in sections:
            raise ExperimentFileError(path, f"[{name}]", f"unknown section; accepted: {', '.join(sections)}")
    if "command" not in document:
        raise ExperimentFileError(path, "[command]", "missing; it needs argv = [...]")
    searcher = _read_component(path, document, "searcher", DEFAULT_SEARCHER)
    scheduler = _read_component(path, document, "scheduler", DEFAULT_SCHEDULER)
    settings = _settings(path, document, searcher)
    command = _command(path, document, settings)
    space = _space(path, document)
    search_alg = _build(path, "searcher", lambda: registry.build_searcher(
        searcher.name, searcher.options, space, settings.metric, settings.mode))
    trial_scheduler = _build(path, "scheduler", lambda: registry.build_scheduler(scheduler.name, scheduler.options))
    return Experiment(path=path, text=text, document=document, settings=settings, command=command, space=space,
                      searcher=searcher, scheduler=scheduler, search_alg=search_alg,
                      trial_scheduler=trial_scheduler)


def load_experiment(path: Path | str) -> Experiment:
    """Read and validate the experiment file at ``path`` (see :func:`parse_experiment`)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ExperimentFileError(path, "file", "no such file; give the path of an experiment .toml file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ExperimentFileError(path, "file", f"cannot be read as UTF-8 text: {error}") from None
    return parse_experiment(text, path)


@contextmanager
def _tune_environment() -> Iterator[None]:
    """Frequent state snapshots (so a resume loses little); of Ray's logger files only progress.csv (Ray's
    params.json would overwrite the one the program reads).

    Both are read by Ray when the run starts; a value the user exported wins.
    """
    wanted = {"TUNE_GLOBAL_CHECKPOINT_S": _STATE_SNAPSHOT_S, "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    added = [name for name in wanted if name not in os.environ]
    os.environ.update({name: wanted[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _trainable(experiment: Experiment) -> Any:
    from ray import tune

    from tunekit.command_trainable import CommandTrainable

    settings = experiment.settings
    trainable = tune.with_parameters(CommandTrainable, spec=experiment.command)
    return tune.with_resources(trainable, {"cpu": settings.cpu, "gpu": settings.gpu})


def build_tuner(experiment: Experiment, verbose: int = 1) -> Any:
    """A fresh ``tune.Tuner`` for ``experiment`` (failed trials are not retried: ``max_failures=0``)."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback
    from ray.tune.search import BasicVariantGenerator

    from tunekit.callbacks.tensorboard import TensorBoardCallback
    from tunekit.command_trainable import trial_dirname
    from tunekit.files import crash_safe_filesystem

    settings = experiment.settings
    search_alg, limit = experiment.search_alg, settings.max_concurrent
    if isinstance(search_alg, BasicVariantGenerator):
        search_alg.max_concurrent, limit = limit or 0, None  # Ray limits only Searchers by max_concurrent_trials
    tune_config = tune.TuneConfig(
        metric=settings.metric, mode=settings.mode, search_alg=search_alg,
        scheduler=experiment.trial_scheduler, num_samples=settings.num_samples,
        max_concurrent_trials=limit, trial_dirname_creator=trial_dirname)
    run_config = tune.RunConfig(
        name=settings.name, storage_path=str(settings.storage_path), storage_filesystem=crash_safe_filesystem(),
        verbose=verbose,
        failure_config=tune.FailureConfig(max_failures=0),
        checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
        callbacks=[TensorBoardCallback(space=experiment.space), CSVLoggerCallback()])
    return tune.Tuner(_trainable(experiment), param_space=getattr(experiment.search_alg, "param_space", {}),
                      tune_config=tune_config, run_config=run_config)


LOCK_FILE = ".tunekit.lock"


def _holds_a_run(folder: Path) -> bool:
    """True when ``folder`` holds anything besides its lock file."""
    return folder.is_dir() and any(entry.name != LOCK_FILE for entry in folder.iterdir())


@contextmanager
def experiment_lock(experiment: Experiment) -> Iterator[None]:
    """Hold the lock of the experiment folder (created if missing) while the block runs.

    Two runs of one experiment at once would run trials twice and corrupt Ray's state, so a second run is
    refused with an :class:`ExperimentFileError` naming the folder and the holder's pid. The lock is an
    ``flock`` on ``<folder>/.tunekit.lock``: the kernel releases it when its holder exits in any way, SIGKILL
    included, so the lock of a dead run is taken over (logged). The file holds the holder's pid and host
    while held and is emptied on release.
    """
    folder = experiment.experiment_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ExperimentFileError(experiment.path, "[experiment] storage_path",
                                  f"cannot create the experiment folder {str(folder)!r}: {error}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "pid unknown"
            raise ExperimentFileError(experiment.path, "[experiment] name", f"folder {str(folder)!r} is in use by "
                                      f"another tunekit run ({holder}); wait for it to end or stop it") from None
        previous = os.pread(fd, 256, 0).decode(errors="replace").strip()
        if previous:
            logger.warning("taking over the lock of %s from a run that ended without releasing it (%s)",
                           folder, previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _prepare_folder(experiment: Experiment) -> bool:
    """Make the (locked) experiment folder ready; True when an interrupted run of the same file is to be
    continued."""
    from ray import tune

    folder = experiment.experiment_dir
    if not _holds_a_run(folder):
        (folder / STORED_FILE).write_text(experiment.text)
        return False
    stored = folder / STORED_FILE
    if not tune.Tuner.can_restore(str(folder)) or not stored.is_file():
        raise ExperimentFileError(experiment.path, "[experiment] name", f"folder {str(folder)!r} exists but "
                                  "holds no run tunekit can continue; use --restart to start afresh")
    try:
        same = tomllib.loads(stored.read_text()) == experiment.document
    except (ValueError, RecursionError):
        same = False
    if not same:
        raise ExperimentFileError(experiment.path, "[experiment] name", f"folder {str(folder)!r} holds a run "
                                  f"of a different experiment file ({stored}); use --restart to replace it "
                                  "or change the name")
    return True


def _move_aside(experiment: Experiment) -> None:
    """--restart: move the previous run's folder to ``<name>.replaced-<time>``."""
    folder = experiment.experiment_dir
    aside = folder.with_name(f"{folder.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        folder.rename(aside)
    except OSError as error:
        raise ExperimentFileError(experiment.path, "[experiment] name",
                                  f"cannot move {str(folder)!r} aside for --restart: {error}") from None
    logger.warning("--restart: the previous run of %s was moved to %s", folder.name, aside)


def run_experiment(experiment: Experiment, restart: bool = False, verbose: int = 1,
                   address: Optional[str] = None) -> dict:
    """Run (or continue) ``experiment``; write results.csv and best.json; return what best.json holds.

    Continuing uses ``tune.Tuner.restore``: the searcher's state comes back, finished and failed trials
    stay as they were, and trials that were running start again. When Ray is not initialized yet it is
    started on ``address``: "local" (a new Ray on this machine, the default), "auto" or a cluster address
    (default: the ``RAY_ADDRESS`` environment variable, else "local"). The experiment folder is locked for
    the whole run (:func:`experiment_lock`).
    """
    with ExitStack() as held:
        held.enter_context(experiment_lock(experiment))
        if restart and _holds_a_run(experiment.experiment_dir):
            _move_aside(experiment)
            held.enter_context(experiment_lock(experiment))
        resume = _prepare_folder(experiment)
        return _fit(experiment, resume, verbose, address)


def _fit(experiment: Experiment, resume: bool, verbose: int, address: Optional[str]) -> dict:
    import ray
    from ray import tune

    from tunekit.files import crash_safe_filesystem

    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", log_to_driver=verbose > 0)
    with _tune_environment():
        if resume:
            logger.info("continuing the interrupted run in %s", experiment.experiment_dir)
            tuner = tune.Tuner.restore(str(experiment.experiment_dir), trainable=_trainable(experiment),
                                       resume_unfinished=True, resume_errored=False,
                                       storage_filesystem=crash_safe_filesystem())
        else:
            tuner = build_tuner(experiment, verbose=verbose)
        results = tuner.fit()
    ray_errors = {Path(result.path).name: str(result.error) for result in results if result.error}
    return write_summary(experiment.experiment_dir, experiment.settings.metric, experiment.settings.mode,
                         ray_errors)
