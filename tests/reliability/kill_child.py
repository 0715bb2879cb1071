"""The driver that tests/reliability/test_driver_kill.py and benchmarks/reliability_kill.py SIGKILL and restore.

``python kill_child.py SPEC.json`` runs one tunekit searcher/scheduler combination in its own local Ray, either
fresh or (``"restore": true``) through ``tune.Tuner.restore``. It writes what the killer needs to judge a kill
into ``<log_dir>/events.jsonl``, one JSON line per event, appended and flushed at once:

* ``attempt`` / ``report`` (from the trial processes): where each run of a trial started (``step`` 1 is from
  scratch, more is from its checkpoint) and every step it reported;
* ``observed`` (from the searcher, after ``on_trial_complete``): the searcher's whole list of observations;
* ``restored`` (from the searcher's ``restore`` and the scheduler's first call after a restore): the state read
  back, to compare with what was observed before the kill;
* ``scheduler`` (after every scheduler call that changed it): the scheduler's ``debug_string``;
* ``paused`` (from the driver loop): the trials Ray holds PAUSED, with the step each reached;
* ``suggested`` (from the searcher): every configuration it handed to Ray, in order;
* ``in_save`` (from the searcher, when ``KILL_SAVE_SLEEP_S`` is set): the searcher is inside ``save`` and sleeps
  there, so that a kill lands in the middle of it;
* ``done`` after ``Tuner.fit`` returned, with the final results.

The objective is deterministic (a re-run trial reports the same values), checkpoints every step and resumes from
its checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import ray
import ray.cloudpickle
from ray import tune

from tunekit.files import crash_safe_filesystem
from tunekit.schedulers.asha import ASHAScheduler
from tunekit.schedulers.dyhpo import DyHPOScheduler
from tunekit.schedulers.median import MedianStoppingScheduler
from tunekit.searchers.dyhpo import DyHPOSearch
from tunekit.searchers.gp_ei import GPEISearch
from tunekit.searchers.nevergrad import NevergradSearch

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: Searchers and schedulers a combination "<searcher>+<scheduler>" may name ("fifo": no tunekit scheduler, one
#: trial at a time, so that a run's configurations do not depend on timing).
SEARCHERS = ("gp_ei", "nevergrad", "dyhpo")
SCHEDULERS = ("asha_stopping", "asha_promotion", "median", "median_pause", "dyhpo", "fifo")


def parse(combination: str) -> tuple:
    """``(searcher, scheduler, concurrent trials)`` of a combination name such as "gp_ei+asha_promotion"."""
    searcher, _, scheduler = combination.partition("+")
    if searcher not in SEARCHERS or scheduler not in SCHEDULERS or (searcher == "dyhpo") != (scheduler == "dyhpo"):
        raise ValueError(f"combination={combination!r}: use <searcher>+<scheduler> with a searcher of {SEARCHERS} "
                         f"and a scheduler of {SCHEDULERS} (dyhpo goes only with dyhpo)")
    return searcher, scheduler, 1 if scheduler == "fifo" else 2


PARAM_SPACE = {"x": tune.uniform(-2.0, 2.0), "lr": tune.loguniform(1e-3, 1.0), "act": tune.choice(["a", "b", "c"])}
ACT_PENALTY = {"a": 0.0, "b": 0.2, "c": 0.5}


def emit(log_dir: str, event: str, **fields) -> None:
    """Append one event line (O_APPEND: lines from the driver and the trial processes never interleave)."""
    line = json.dumps({"event": event, "time": time.time(), "pid": os.getpid(), **fields}, default=str) + "\n"
    fd = os.open(os.path.join(log_dir, "events.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def loss_at(config: dict, step: int) -> float:
    """A learning curve whose final value depends on all three parameters."""
    final = (config["x"] - 0.5) ** 2 + 0.1 * (math.log10(config["lr"]) + 2) ** 2 + ACT_PENALTY[config["act"]]
    return final + 1.0 / step


def objective(config: dict) -> None:
    """Report ``loss`` for steps 1..steps (sleeping ``step_s`` each), with a checkpoint holding the step."""
    trial_id = tune.get_context().get_trial_id()
    step = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            step = json.loads((Path(folder) / "step.json").read_text())["step"]
    emit(config["log_dir"], "attempt", trial=trial_id, step=step + 1)
    while step < config["steps"]:
        time.sleep(config["step_s"])
        step += 1
        loss = loss_at(config, step)
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "step.json").write_text(json.dumps({"step": step}))
            emit(config["log_dir"], "report", trial=trial_id, step=step, loss=loss)
            tune.report({"loss": loss, "step": step}, checkpoint=tune.Checkpoint.from_directory(folder))


def observation_rows(searcher) -> list:
    return [[o.trial_id, o.loss] for o in searcher.observations]


def logged_searcher(base: type, log_dir: str):
    """``base`` with its calls recorded in the event log, and a sleep inside ``save`` when the environment asks
    (``KILL_SAVE_SLEEP_S`` seconds, once it has ``KILL_SAVE_AFTER`` observations): read at call time, because a
    restored driver unpickles this class from the experiment folder."""

    class Logged(base):
        def suggest(self, trial_id):
            config = super().suggest(trial_id)
            if isinstance(config, dict):
                emit(log_dir, "suggested", trial=trial_id, index=self._state.num_suggested,
                     config={name: config[name] for name in PARAM_SPACE})
            return config

        def on_trial_complete(self, trial_id, result=None, error=False):
            super().on_trial_complete(trial_id, result, error)
            emit(log_dir, "observed", trial=trial_id, observations=observation_rows(self))

        def get_state(self):
            save_sleep_s = float(os.environ.get("KILL_SAVE_SLEEP_S", "0"))
            if save_sleep_s and len(self.observations) >= int(os.environ.get("KILL_SAVE_AFTER", "0")):
                emit(log_dir, "in_save", observations=observation_rows(self))
                time.sleep(save_sleep_s)
            return super().get_state()

        def restore(self, checkpoint_path):
            super().restore(checkpoint_path)
            emit(log_dir, "restored", who="searcher", observations=observation_rows(self),
                 live=sorted(self._state.live))

    Logged.__name__ = Logged.__qualname__ = base.__name__
    return Logged


#: What this driver process last logged of the scheduler (kept outside the scheduler, whose state is saved).
_SCHEDULER_LOG = {"last": None}


def logged_scheduler(base: type, log_dir: str):
    """``base`` with its state (``debug_string``) recorded after every call that changed it."""

    class Logged(base):
        def _log(self):
            text = self.debug_string()
            if text != _SCHEDULER_LOG["last"]:
                _SCHEDULER_LOG["last"] = text
                emit(log_dir, "scheduler", state=text)

        def on_trial_add(self, tune_controller, trial):
            super().on_trial_add(tune_controller, trial)
            if _SCHEDULER_LOG["last"] is None:
                _SCHEDULER_LOG["last"] = self.debug_string()
                emit(log_dir, "restored", who="scheduler", state=_SCHEDULER_LOG["last"])

        def on_trial_result(self, tune_controller, trial, result):
            action = super().on_trial_result(tune_controller, trial, result)
            self._log()
            return action

        def on_trial_complete(self, tune_controller, trial, result):
            super().on_trial_complete(tune_controller, trial, result)
            self._log()

        def choose_trial_to_run(self, tune_controller):
            chosen = super().choose_trial_to_run(tune_controller)
            self._log()
            return chosen

    Logged.__name__ = Logged.__qualname__ = base.__name__
    return Logged


class PausedTrials(tune.Callback):
    """Records the trials Ray holds PAUSED whenever that set changes."""

    def __init__(self, log_dir: str):
        self.log_dir, self.last = log_dir, None

    def on_step_end(self, iteration, trials, **info):
        paused = sorted((t.trial_id, (t.last_result or {}).get("step")) for t in trials if t.status == "PAUSED")
        if paused != self.last:
            self.last = paused
            emit(self.log_dir, "paused", trials=paused)


def build(spec: dict):
    """The searcher and scheduler of ``spec["combination"]``, logging into ``spec["log_dir"]``."""
    searcher_name, scheduler_name, _ = parse(spec["combination"])
    log_dir, seed, steps = spec["log_dir"], spec["seed"], spec["steps"]
    if searcher_name == "dyhpo":
        searcher = logged_searcher(DyHPOSearch, log_dir)(
            max_epochs=steps, max_budget=None, num_configurations=spec["num_samples"],
            time_attr="step", seed=seed)
        return searcher, logged_scheduler(DyHPOScheduler, log_dir)(searcher)
    if searcher_name == "gp_ei":
        searcher = logged_searcher(GPEISearch, log_dir)(random_starts=4, seed=seed)
    else:
        searcher = logged_searcher(NevergradSearch, log_dir)("OnePlusOne", seed=seed)
    if scheduler_name == "fifo":
        return searcher, None
    if scheduler_name.startswith("asha"):
        scheduler = logged_scheduler(ASHAScheduler, log_dir)(
            time_attr="step", max_t=steps, grace_period=1, reduction_factor=2, rule=scheduler_name[5:])
    else:
        scheduler = logged_scheduler(MedianStoppingScheduler, log_dir)(
            time_attr="step", grace_period=2, min_samples_required=2, hard_stop=scheduler_name == "median")
    return searcher, scheduler


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    ray.init(address="local", num_cpus=4, num_gpus=0, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    trainable = tune.with_resources(objective, {"cpu": 1})
    param_space = {**PARAM_SPACE, "steps": spec["steps"], "step_s": spec["step_s"], "log_dir": spec["log_dir"]}
    if spec["restore"]:
        tuner = tune.Tuner.restore(spec["experiment_path"], trainable, resume_unfinished=True, param_space=param_space,
                                   storage_filesystem=crash_safe_filesystem())
    else:
        searcher, scheduler = build(spec)
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(metric="loss", mode="min", search_alg=searcher, scheduler=scheduler,
                                        num_samples=spec["num_samples"],
                                        max_concurrent_trials=parse(spec["combination"])[2]),
            run_config=tune.RunConfig(storage_path=str(Path(spec["experiment_path"]).parent),
                                      name=Path(spec["experiment_path"]).name, verbose=0,
                                      storage_filesystem=crash_safe_filesystem(),
                                      callbacks=[PausedTrials(spec["log_dir"])],
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=spec["num_to_keep"])))
    results = tuner.fit()
    final = {r.metrics["trial_id"]: [r.metrics.get("step"), r.metrics.get("loss")] for r in results
             if r.metrics and "trial_id" in r.metrics}
    errors = [str(r.error)[:300] for r in results if r.error]
    emit(spec["log_dir"], "done", results=final, num_results=len(results), errors=errors)


if __name__ == "__main__":
    main(sys.argv[1])
