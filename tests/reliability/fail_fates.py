"""Injected trial failures for the reliability tests: a fate per configuration, a trainable that meets it,
a callback that records what Ray saw, and trainables that hang in the ways ``with_timeout`` must end.

A configuration's fate comes from a seeded hash of the configuration itself, so the same configuration
always fails the same way, whichever searcher proposes it and in whatever order trials finish.
"""

import ctypes
import json
import math
import tempfile
import threading
import time
import zlib
from pathlib import Path

from ray import tune

from tunekit.trainables import hpman_trainable, require_metric, with_timeout

ITERATIONS = 4
TIMEOUT_S = 3.0
#: Twenty slots: 20 % raise, 10 % NaN or inf, 5 % end without any report, 5 % report without the metric,
#: 5 % hang, 55 % train normally.
SLOTS = ["raise"] * 4 + ["nan", "inf_later", "silent", "no_metric", "hang"] + ["ok"] * 11
FAILING = ("raise", "nan", "inf_later", "silent", "no_metric", "hang")
#: Fates that end a trial as ERROR in Ray's ResultGrid ('silent' and 'no_metric' through require_metric).
ERRORING = ("raise", "hang", "silent", "no_metric")


def fate_of(config: dict, salt: int = 0) -> str:
    """The fate of a (nested or flat) configuration: a slot of SLOTS picked by a seeded hash of it."""
    text = json.dumps(config, sort_keys=True, default=str)
    return SLOTS[zlib.crc32(f"{salt}:{text}".encode()) % len(SLOTS)]


def configs_with_fates(candidates: list, fates=FAILING, salt: int = 0) -> list:
    """The first candidate of each fate in ``fates`` (points to evaluate that force every failure kind)."""
    chosen = {}
    for config in candidates:
        chosen.setdefault(fate_of(config, salt), config)
    missing = [fate for fate in fates if fate not in chosen]
    assert not missing, f"no candidate has the fates {missing}"
    return [chosen[fate] for fate in fates]


def loss_of(params: dict, step: int) -> float:
    """A smooth loss that falls with the step, least where every parameter is 0.3."""
    return sum((float(value) - 0.3) ** 2 for value in params.values()) + 1.0 / step


def failing_step(params: dict) -> int:
    """The step (1 or 2) at which a 'raise' or 'hang' configuration meets its fate."""
    return zlib.crc32(json.dumps(params, sort_keys=True, default=str).encode()) % 2 + 1


def _report(metrics: dict, step: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "step.json").write_text(json.dumps(step))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _resume_step() -> int:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / "step.json").read_text())


def meet_fate(config: dict) -> None:
    """ITERATIONS reports of ``loss`` (and ``step``), checkpointing each, unless the config's fate says
    otherwise: raise, report NaN (from the first report) or inf (from the second), end without any report,
    report without the metric, or hang in a wait that never returns."""
    params = flat(config)
    fate, first = fate_of(params, config.get("salt", 0)), failing_step(params)
    for step in range(_resume_step() + 1, ITERATIONS + 1):
        if fate == "raise" and step == first:
            raise RuntimeError(f"injected failure: fate 'raise' at step {step}")
        if fate == "hang" and step == first:
            threading.Event().wait()
        if fate == "silent":
            return
        if fate == "no_metric":
            _report({"step": step}, step)
        loss = loss_of(params, step)
        if fate == "nan" or (fate == "inf_later" and step > 1):
            loss = math.nan if fate == "nan" else math.inf
        _report({"loss": loss, "step": step}, step)


fate_trainable = require_metric(with_timeout(meet_fate, TIMEOUT_S), "loss")


class TrialLog(tune.Callback):
    """What Ray itself reported, by trial id: configs, every reported loss, errors, and the order in which
    trials first started and ended (``events``: ("start" | "end", trial id))."""

    def __init__(self):
        self.configs, self.losses, self.errored, self.events = {}, {}, set(), []

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id not in self.configs:
            self.configs[trial.trial_id] = dict(trial.config)
            self.events.append(("start", trial.trial_id))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.losses.setdefault(trial.trial_id, []).append(result["loss"])

    def on_trial_error(self, iteration, trials, trial, **info):
        self.errored.add(trial.trial_id)
        self.events.append(("end", trial.trial_id))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.events.append(("end", trial.trial_id))


def flat(config: dict) -> dict:
    """The tuned parameters of a config (without the constant ``salt`` of the fate hash)."""
    return {key: value for key, value in config.items() if key != "salt"}


def never_finite(log: TrialLog, trial_id: str) -> bool:
    return not any(math.isfinite(value) for value in log.losses.get(trial_id, []))


def _stall(config: dict) -> None:
    """One report, then (by ``config["kind"]``) spin in Python, sleep in C holding the GIL, or wait forever."""
    tune.report({"loss": 1.0})
    if config["kind"] == "spin":
        while True:
            pass
    elif config["kind"] == "gil":
        ctypes.PyDLL(None).sleep(3600)
    threading.Event().wait()


def _report_every(config: dict) -> None:
    """Seven reports, 0.25 s apart: 1.75 s in all, never silent for long."""
    for step in range(7):
        time.sleep(0.25)
        tune.report({"loss": float(step)})


def _two_reports(config: dict) -> None:
    tune.report({"loss": 2.0})
    tune.report({"loss": 1.0})


#: Trainables by kind, each with the limit under test: 1 s of the whole run, or 1 s between two reports;
#: only 'gil' (which only the process kill can end) has a short grace before that kill.
STALLS = {
    "sleep": with_timeout(_stall, 1.0),
    "spin": with_timeout(_stall, 1.0),
    "gil": with_timeout(_stall, 1.0, grace_s=1.0),
    "slow_driver": with_timeout(_two_reports, 1.0),
    "reports_often": with_timeout(_report_every, 1.0, between_reports=True),
    "silent_after_report": with_timeout(_stall, 1.0, between_reports=True),
}


def _returns_nothing() -> None:
    """An hpman-style function that neither returns a result nor calls tune.report."""


def stall_trainable(config: dict) -> None:
    """Runs the ``STALLS`` entry of ``config["kind"]``, or, for "hpman_silent", an hpman function that reports
    nothing."""
    if config["kind"] == "hpman_silent":
        hpman_trainable(_returns_nothing)(config)
    else:
        STALLS[config["kind"]](config)


class SlowDriver(tune.Callback):
    """Blocks Ray's driver for ``seconds`` at the first result of the 'slow_driver' trial."""

    def __init__(self, seconds: float):
        self.seconds, self.done = seconds, False

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.config["kind"] == "slow_driver" and not self.done:
            self.done = True
            time.sleep(self.seconds)
