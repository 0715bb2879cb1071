"""TensorBoard scalars and HParams for Ray Tune experiments, written while the trials run.

Layout, under the experiment folder (so ``tensorboard --logdir <experiment dir>`` shows it; so does
``--logdir <experiment dir>/tensorboard``)::

    <experiment dir>/tensorboard/                experiment run: HParams experiment config, log_scalar(None, ...)
    <experiment dir>/tensorboard/<trial name>/   one run per trial: its HParams session (start info when the
                                                 trial starts, end info with its status when it ends) and every
                                                 numeric reported metric against ``training_iteration``

What differs from Ray's ``TBXLoggerCallback`` (which this class replaces: it subclasses it so that Ray does
not add its own TensorBoard logger beside it and show every trial twice in the HParams dashboard):

- a trial's session appears when it starts and its metrics update while it runs;
- hyperparameter values the HParams plugin cannot take (None, lists, tuples, dicts, mixed-type
  categoricals, ``tune.sample_from`` results) are shown as strings, never dropped; a hyperparameter's type
  is fixed once per experiment (from the Space, else from the trials known when it is first seen), so one
  column never mixes numbers and strings;
- hyperparameter domains (ranges, categorical values) come from the Space when one is given;
- a paused-and-resumed or restored trial keeps one run: its writer reopens the same folder, and a trial
  that resumes from an older checkpoint purges the steps it repeats (TensorBoard's ``purge_step``).

TensorBoard keeps the first HParams record of each kind per run, so the experiment config is written once:
when the first trial starts if ``space`` and ``metrics`` are given and the space holds every config entry,
else when the experiment ends with every trial finished (domains from the Space and from the values seen,
metrics as given or as reported). Until then the HParams dashboard builds its table from the sessions
themselves.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections import defaultdict
from numbers import Real
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow.fs
from ray.air.constants import TRAINING_ITERATION
from ray.tune.experiment import Trial
from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS, TIME_TOTAL_S
from ray.tune.utils import flatten_dict
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from torch.utils.tensorboard import SummaryWriter

if TYPE_CHECKING:
    from tunekit.space import Space

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"

# Ray's bookkeeping keys are not metrics; the trial's wall time is kept (it is a trial's cost).
_RAY_KEYS = frozenset(AUTO_RESULT_KEYS) - {TIME_TOTAL_S}

HParamValue = bool | float | str
_DATA_TYPES = {bool: api_pb2.DATA_TYPE_BOOL, float: api_pb2.DATA_TYPE_FLOAT64, str: api_pb2.DATA_TYPE_STRING}


class TensorBoardCallback(TBXLoggerCallback):
    """Writes per-trial scalars and the HParams dashboard's table for a Ray Tune experiment.

    Use as ``tune.RunConfig(callbacks=[TensorBoardCallback(space=param_space)])``.

    Args:
        space: the search space (a ``tunekit.Space``, a Ray ``param_space`` dict, or anything
            ``Space.from_any`` takes); gives the HParams domains and value types. Without it both are
            inferred from the trials' configs (numbers -> real interval, else discrete strings).
            Every plain-data config entry is a hyperparameter; those outside the space (constants,
            ``tune.sample_from`` results) are shown too, their type and domain inferred.
        metrics: names of the reported metrics (nested ones as ``"a/b"``) for the HParams table;
            default: every numeric metric the trials report.
        scheduler: a tunekit scheduler (anything with ``decisions``, its most recent
            ``tunekit.schedulers.Decision`` records, and ``decisions_made``, their running count); each decision's cut-off is written to the trial's run as
            ``scheduler/cutoff`` and each STOP / PAUSE / PROMOTE as ``scheduler/<action>`` = 1 at its step,
            so a user sees why a trial stopped.
    """

    _SAVED_FILE_TEMPLATES = []

    def __init__(self, space: Space | Mapping[str, Any] | None = None, metrics: Sequence[str] | None = None,
                 scheduler: Any = None):
        if scheduler is not None and not isinstance(getattr(scheduler, "decisions_made", None), int):
            raise TypeError(f"scheduler must be a tunekit scheduler (with 'decisions' and 'decisions_made'), "
                            f"got {scheduler!r}")
        self._scheduler = scheduler
        self._decisions_logged = 0
        self._space_domains: dict[str, tuple[hp.Domain, str]] = {}
        self._kinds: dict[str, type] = {}
        if space is not None:
            from tunekit.space import Space

            self._space_domains, self._kinds = _domains_from_space(Space.from_any(space))
        self._metrics = _check_metrics(metrics)
        self._observed: dict[str, set] = defaultdict(set)
        self._metric_names: set[str] = set()
        self._experiment_written = False
        self._all_finished = False
        self._mismatch_warned: set[str] = set()
        self._logdir: str | None = None
        self._known_trials: list[Trial] = []
        self._trials: dict[str, Trial] = {}
        self._writers: dict[str | None, SummaryWriter] = {}
        self._last_step: dict[str, int] = {}
        self._resuming: set[str] = set()
        self._pending: dict[str | None, list[tuple[str, float, int]]] = defaultdict(list)
        self._logged: dict[str, list[tuple[str, float, int]]] = defaultdict(list)

    @property
    def logdir(self) -> str | None:
        """The folder to point ``tensorboard --logdir`` at; None until the first trial starts."""
        return self._logdir

    # --- Ray hooks -------------------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info):
        self._known_trials = trials
        super().on_trial_start(iteration, trials, trial, **info)

    def log_trial_start(self, trial: Trial):
        """Opens the trial's run; writes its HParams session start the first time the trial starts."""
        if self._logdir is None:
            self._logdir = os.path.join(_experiment_dir(trial), TENSORBOARD_DIR)
            logger.info("TensorBoard: tensorboard --logdir %s", self._logdir)
        self._trials[trial.trial_id] = trial
        values = self._hparam_values(trial)
        if _has_events(self._run_dir(trial.trial_id)):
            self._resuming.add(trial.trial_id)
        else:
            # A restart marker at step 0: TensorBoard's server ignores a run's first marker, so the one a
            # resumed trial writes later (see _result_writer) must not be the first.
            writer = self._writer(trial.trial_id, purge_step=0)
            start = hp.hparams_pb(values, trial_id=str(trial), start_time_secs=time.time())
            writer.file_writer.add_summary(start, global_step=0)
            writer.flush()
        self._flush_pending()
        self._write_experiment(final=False)

    def log_trial_result(self, iteration: int, trial: Trial, result: dict):
        """Writes every numeric user metric of ``result`` at step ``training_iteration``."""
        step = int(result[TRAINING_ITERATION])
        writer = self._result_writer(trial, step)
        scalars = _metric_scalars(result)
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step=step)
        writer.flush()
        self._metric_names.update(scalars)
        self._last_step[trial.trial_id] = step

    def log_trial_end(self, trial: Trial, failed: bool = False):
        """Writes the session's end (status SUCCESS, or FAILURE when the trial errored) and closes its run."""
        if trial.trial_id not in self._trials:
            self.log_trial_start(trial)
        writer = self._writer(trial.trial_id)
        end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_FAILURE if failed else api_pb2.STATUS_SUCCESS,
                                             end_time_secs=time.time())
        writer.file_writer.add_summary(_hparams_summary(metadata.SESSION_END_INFO_TAG, session_end_info=end),
                                       global_step=0)
        self._close(trial.trial_id)
        self._logged.pop(trial.trial_id, None)  # kept only to rewrite steps a resumed trial repeats

    def on_step_end(self, iteration: int, trials: list[Trial], **info):
        # Decisions first: a STOP arrives after Ray closed the trial's run and reopens it. Then free the file
        # and thread of every paused (promotion-based schedulers pause many, for long) or finished trial.
        self._log_decisions()
        for key in [k for k in self._writers if k is not None]:
            if self._trials[key].status == Trial.PAUSED or self._trials[key].is_finished():
                self._close(key)
        self._all_finished = all(trial.is_finished() for trial in trials)

    def on_experiment_end(self, trials: list[Trial], **info):
        # Ray also ends a crashed or interrupted experiment (stopping its trials first, so the last loop
        # step tells); one that Tuner.restore may continue keeps TensorBoard's own table until it really
        # ends, since a config written now could not be replaced.
        self._log_decisions()
        if self._all_finished:
            for trial in trials:  # all of them: a restored experiment did not start its finished trials
                self._hparam_values(trial)
                self._metric_names.update(_metric_scalars(trial.last_result or {}))
            self._write_experiment(final=True)
        for key in list(self._writers):
            self._close(key)

    def get_state(self) -> dict:
        # Column types stay fixed across Tuner.restore; values and metrics are read again from the trials.
        return {"kinds": {name: kind.__name__ for name, kind in self._kinds.items()},
                "experiment_written": self._experiment_written, "decisions_logged": self._decisions_logged}

    def set_state(self, state: dict):
        kinds = {"bool": bool, "float": float, "str": str}
        self._kinds.update({name: kinds[kind] for name, kind in state["kinds"].items()})
        self._experiment_written = state["experiment_written"]
        self._decisions_logged = state.get("decisions_logged", 0)

    # --- public hook for schedulers --------------------------------------------------------------

    def log_scalar(self, trial: Trial | str | None, tag: str, value: float, step: int) -> None:
        """Writes one scalar, e.g. a scheduler's decision or rung cut-off, so users see why a trial stopped.

        Args:
            trial: the trial (or its ``trial_id``) whose run gets the scalar; None for the experiment run.
                Scalars for a run not yet open are kept and written when it opens; they survive the
                purge of steps a trial repeats after resuming from an older checkpoint.
            tag: scalar name, e.g. ``"asha/rung_cutoff"``.
            value: a real number.
            step: the step on TensorBoard's x axis (the scheduler's ``time_attr`` value).
        """
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"tag must be a non-empty str, got {tag!r}")
        if not _is_number(value):
            raise TypeError(f"value for tag {tag!r} must be a real number, got {value!r}")
        key = trial.trial_id if isinstance(trial, Trial) else trial
        self._pending[key].append((tag, float(value), int(step)))
        if self._logdir is not None and (key is None or key in self._trials):
            self._flush_pending()

    def _log_decisions(self) -> None:
        """Writes the scheduler's decisions made since the last loop step (see ``scheduler`` above)."""
        if self._scheduler is None:
            return
        made, kept = self._scheduler.decisions_made, self._scheduler.decisions
        unseen = made - self._decisions_logged
        if unseen > len(kept):
            logger.warning("%d scheduler decisions were made between two loop steps; only the last %d are "
                            "written to TensorBoard.", unseen, len(kept))
        for decision in itertools.islice(kept, max(len(kept) - unseen, 0), None):
            step = int(decision.time)
            if decision.cutoff is not None and math.isfinite(decision.cutoff):
                self.log_scalar(decision.trial_id, "scheduler/cutoff", decision.cutoff, step)
            if decision.action != "CONTINUE":
                self.log_scalar(decision.trial_id, f"scheduler/{decision.action.lower()}", 1.0, step)
        self._decisions_logged = made

    # --- writers ---------------------------------------------------------------------------------

    def _run_dir(self, key: str | None) -> str:
        if key is None:
            return self._logdir
        return os.path.join(self._logdir, str(self._trials[key]).replace(os.sep, "_"))

    def _writer(self, key: str | None, purge_step: int | None = None) -> SummaryWriter:
        """The open writer of run ``key`` (None: the experiment run); opens one appending to the run's folder."""
        if key not in self._writers:
            self._writers[key] = SummaryWriter(self._run_dir(key), purge_step=purge_step, flush_secs=10)
        return self._writers[key]

    def _result_writer(self, trial: Trial, step: int) -> SummaryWriter:
        """The writer for a result at ``step``; a trial repeating steps (resumed from an older checkpoint, or
        restored with an unknown last step) gets a writer that purges the steps >= ``step`` it replaces."""
        last = self._last_step.get(trial.trial_id)
        resuming = trial.trial_id in self._resuming
        self._resuming.discard(trial.trial_id)
        if (resuming and last is None) or (last is not None and step <= last):
            logger.debug("trial %s resumes at step %d: purging later steps of its run", trial, step)
            self._close(trial.trial_id)
            writer = self._writer(trial.trial_id, purge_step=step)
            # log_scalar records are history (e.g. the pause that caused this replay): written again.
            for tag, value, logged_step in self._logged[trial.trial_id]:
                if logged_step >= step:
                    writer.add_scalar(tag, value, global_step=logged_step)
            return writer
        return self._writer(trial.trial_id)

    def _close(self, key: str | None) -> None:
        writer = self._writers.pop(key, None)
        if writer is not None:
            writer.close()

    def _flush_pending(self) -> None:
        for key in [k for k in self._pending if k is None or k in self._trials]:
            writer = self._writer(key)
            for tag, value, step in self._pending.pop(key):
                writer.add_scalar(tag, value, global_step=step)
                if key is not None and not self._trials[key].is_finished():
                    self._logged[key].append((tag, value, step))
            writer.flush()

    # --- HParams records -------------------------------------------------------------------------

    def _hparam_values(self, trial: Trial) -> dict[str, HParamValue]:
        """The trial's hyperparameter values as its HParams session shows them (recorded for the domains);
        a new name's column type is inferred from every trial known so far."""
        values = {}
        for name, value in _config_values(trial, self._space_domains).items():
            if name not in self._kinds:
                self._kinds[name] = _kind_of(_config_values(t, self._space_domains).get(name, value)
                                             for t in [*self._known_trials, trial])
            values[name] = _as_hparam(value, self._kinds[name])
            if not isinstance(values[name], self._kinds[name]) and name not in self._mismatch_warned:
                self._mismatch_warned.add(name)
                logger.warning("hyperparameter %r: value %r shown as a string in a %s column; pass the "
                               "search space to TensorBoardCallback(space=...) to fix column types",
                               name, value, self._kinds[name].__name__)
            self._observed[name].add(values[name])
        return values

    def _write_experiment(self, final: bool) -> None:
        """Writes the HParams experiment config once, as soon as it is fully known (see the module doc)."""
        if self._experiment_written or self._logdir is None:
            return
        extra = sorted(set(self._observed) - set(self._space_domains))
        if not final and (extra or not (self._space_domains and self._metrics)):
            return
        hparams = [self._hparam_info(name) for name in [*self._space_domains, *extra]]
        metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag))
                   for tag in (self._metrics or sorted(self._metric_names))]
        if not hparams and not metrics:
            return
        experiment = api_pb2.Experiment(hparam_infos=hparams, metric_infos=metrics, time_created_secs=time.time())
        writer = self._writer(None)
        writer.file_writer.add_summary(_hparams_summary(metadata.EXPERIMENT_TAG, experiment=experiment),
                                       global_step=0)
        writer.flush()
        self._experiment_written = True

    def _hparam_info(self, name: str) -> api_pb2.HParamInfo:
        """One column of the HParams table: its type, its domain (the Space's, else the values seen: a real
        interval over the numbers, or the set of values), and whether it differs between trials (TensorBoard
        shows differing columns first): a Space parameter does unless it is a constant."""
        kind = self._kinds[name]
        values = [v for v in self._observed[name] if isinstance(v, kind)]
        domain, description = self._space_domains.get(name, (None, ""))
        differs = len(self._observed[name]) > 1
        if domain is not None:
            differs = not (isinstance(domain, hp.Discrete) and len(domain.values) == 1)
        elif kind is float:
            finite = [v for v in values if math.isfinite(v)]
            domain = hp.RealInterval(min(finite), max(finite)) if finite else None
        else:
            domain = hp.Discrete(values, dtype=kind)
        info = api_pb2.HParamInfo(name=name, description=description, type=_DATA_TYPES[kind], differs=differs)
        if domain is not None:
            domain.update_hparam_info(info)
        return info


def _experiment_dir(trial: Trial) -> str:
    """The experiment folder users see: the storage path itself when local; else Ray's driver staging
    folder, which Ray uploads to the storage path with its experiment state."""
    storage = trial.storage
    if isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        return storage.experiment_fs_path
    return trial.local_experiment_path


def _has_events(run_dir: str) -> bool:
    return os.path.isdir(run_dir) and any(f.startswith("events.out.tfevents") for f in os.listdir(run_dir))


def _check_metrics(metrics: Sequence[str] | None) -> tuple[str, ...]:
    if metrics is None:
        return ()
    if isinstance(metrics, str) or not all(isinstance(m, str) and m for m in metrics):
        raise TypeError(f"metrics must be a list of metric names (non-empty str), got {metrics!r}")
    return tuple(metrics)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_))


def _metric_scalars(result: Mapping[str, Any]) -> dict[str, float]:
    """Numeric user metrics of a result, nested dicts flattened with "/"; Ray's bookkeeping left out."""
    user = {k: v for k, v in result.items() if k not in _RAY_KEYS}
    return {k: float(v) for k, v in flatten_dict(user, delimiter="/").items() if _is_number(v)}


def _kind_of(values: Iterable[Any]) -> type:
    """The HParams column type for these values: bool, float (numbers), else str (shown as text)."""
    values = list(values)
    if values and all(isinstance(v, (bool, np.bool_)) for v in values):
        return bool
    if values and all(_is_number(v) for v in values):
        return float
    return str


def _as_hparam(value: Any, kind: type) -> HParamValue:
    """``value`` in a column of type ``kind``; anything else as its string (None -> "None")."""
    if kind is bool and isinstance(value, (bool, np.bool_)):
        return bool(value)
    if kind is float and _is_number(value):
        return float(value)
    return value if isinstance(value, str) else str(value)


def _config_values(trial: Trial, space_names: Iterable[str]) -> dict[str, Any]:
    """The trial's hyperparameters by flat "a/b" name: its whole config, nested dicts flattened except at
    the Space's names and Ray's sampled names (so a dict-valued categorical stays one value). Entries that
    are not plain data (objects, arrays, functions passed through the config) are not hyperparameters."""
    stops = set(space_names) | set(trial.evaluated_params or {})
    return _flatten_config(trial.config, stops, prefix="")


def _flatten_config(config: Mapping[str, Any], stops: set[str], prefix: str) -> dict[str, Any]:
    values = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and name not in stops:
            values.update(_flatten_config(value, stops, name + "/"))
        elif _is_plain(value):
            values[name] = value
        else:
            logger.debug("config entry %r (%s) is not plain data: not shown as a hyperparameter",
                         name, type(value).__name__)
    return values


def _is_plain(value: Any) -> bool:
    """JSON-like data: None, bool, numbers, str, and lists/tuples/dicts of those."""
    if value is None or isinstance(value, (bool, np.bool_, Real, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _domains_from_space(space: Space) -> tuple[dict[str, tuple[hp.Domain, str]], dict[str, type]]:
    """HParams domains (with a description) and column types from a Space: intervals for float/int,
    value sets otherwise."""
    from tunekit.space import Float, Int

    domains, kinds = {}, {}
    for param in space.params:
        if isinstance(param, (Float, Int)):
            kind = float
            interval = hp.RealInterval if isinstance(param, Float) else hp.IntInterval
            cast = float if isinstance(param, Float) else int
            domain = interval(cast(param.low), cast(param.high))
            description = "log scale" if param.log else ""
        else:
            choices = param.values if hasattr(param, "values") else (param.value,)
            kind = _kind_of(choices)
            domain = hp.Discrete(sorted({_as_hparam(v, kind) for v in choices}), dtype=kind)
            description = ""
        domains[param.name] = (domain, description)
        kinds[param.name] = kind
    return domains, kinds


def _hparams_summary(tag: str, **plugin_data: Any) -> summary_pb2.Summary:
    """A summary holding one HParams plugin record (``experiment=`` or ``session_end_info=``)."""
    content = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(**plugin_data))
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=content,
                                                                tensor=metadata.NULL_TENSOR)])
