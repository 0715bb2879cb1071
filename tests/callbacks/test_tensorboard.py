"""TensorBoardCallback in real Tuner runs, read back with TensorBoard's own reader and its HParams HTTP API."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest
import ray.cloudpickle
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.util import tensor_util

from tunekit.callbacks import TensorBoardCallback

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/ modules

PARAM_SPACE = {
    "lr": tune.loguniform(1e-3, 1e-1),
    "act": tune.choice(["relu", "tanh"]),
    "layers": tune.choice([None, [16], [16, 16]]),
    "depth": tune.choice([None, 2, 3]),
    "opt": {"momentum": tune.uniform(0.0, 0.9)},
    "epochs": 3,
}
FAILING_TRIAL = "_00002"


def _train_mixed(config):
    for step in range(1, config["epochs"] + 1):
        if tune.get_context().get_trial_name().endswith(FAILING_TRIAL) and step == 2:
            raise RuntimeError("this trial fails at step 2")
        tune.report({"loss": config["lr"] * step, "eval": {"acc": step / 10}})


class _Run:
    """One run read back as the `tensorboard` server reads it (its plugin EventAccumulator, which also
    applies TensorBoard's purge of steps a restarted writer repeats)."""

    def __init__(self, run_dir):
        self.accumulator = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
        self.accumulator.Reload()

    def scalar_tags(self):
        if "scalars" not in self.accumulator.ActivePlugins():
            return set()
        return set(self.accumulator.PluginTagToContent("scalars"))

    def scalars(self, tag):
        """[(step, value)] of a scalar time series (values stored as float32)."""
        return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in self.accumulator.Tensors(tag)]

    def hparams(self, tag):
        return plugin_data_pb2.HParamsPluginData.FromString(self.accumulator.PluginTagToContent("hparams")[tag])

    def count(self, tag):
        return len(self.accumulator.Tensors(tag))


def _run_name(result):
    """The trial's run name: its Ray name (trainable name + trial id), as in Ray's progress table."""
    return f"_train_mixed_{result.metrics['trial_id']}"


class _LiveProbe(tune.Callback):
    """Runs after TensorBoardCallback and reads its files while the experiment runs: what a live
    TensorBoard would see when a trial starts and after its first result."""

    def __init__(self, tensorboard_callback):
        self.tensorboard_callback = tensorboard_callback
        self.seen = {}

    def _read(self, trial):
        return _Run(os.path.join(self.tensorboard_callback.logdir, str(trial)))

    def on_trial_start(self, iteration, trials, trial, **info):
        run = self._read(trial)
        self.seen[trial.trial_id, "start"] = (set(run.accumulator.PluginTagToContent("hparams")),
                                             run.scalar_tags())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result["training_iteration"] == 1:
            self.seen[trial.trial_id, "result"] = [step for step, _ in self._read(trial).scalars("loss")]


@pytest.fixture(scope="module")
def mixed_run(ray_session, tmp_path_factory):
    """Three trials over mixed parameters (log float, str / None+list / None+int categoricals, nested float,
    constant), three steps each; trial 2 fails at step 2. Space and metrics given: config written early."""
    storage = tmp_path_factory.mktemp("tb_mixed")
    callback = TensorBoardCallback(space=PARAM_SPACE, metrics=["loss", "eval/acc"])
    probe = _LiveProbe(callback)
    tuner = tune.Tuner(_train_mixed, param_space=PARAM_SPACE, tune_config=tune.TuneConfig(num_samples=3),
                       run_config=tune.RunConfig(storage_path=str(storage), name="mixed", verbose=0,
                                                 callbacks=[callback, probe]))
    results = tuner.fit()
    logdir = os.path.join(storage, "mixed", "tensorboard")
    assert callback.logdir == logdir
    return results, logdir, probe.seen


def test_session_appears_at_start_and_metrics_while_running(mixed_run):
    results, _, seen = mixed_run
    for result in results:
        trial_id = result.metrics["trial_id"]
        assert seen[trial_id, "start"] == ({metadata.SESSION_START_INFO_TAG}, set())
        assert seen[trial_id, "result"] == [1]


def test_scalars_per_trial_and_step(mixed_run):
    results, logdir, _ = mixed_run
    assert len(results) == 3 and len(results.errors) == 1
    for result in results:
        run = _Run(os.path.join(logdir, _run_name(result)))
        tags = run.scalar_tags()
        assert {"loss", "eval/acc", "time_total_s"} <= tags
        assert not {"time_this_iter_s", "training_iteration", "timestamp", "pid"} & tags
        steps = list(range(1, 2 if result.error else 4))
        assert [step for step, _ in run.scalars("loss")] == steps
        assert [value for _, value in run.scalars("loss")] == pytest.approx(
            [result.config["lr"] * step for step in steps], rel=1e-6)
        assert [value for _, value in run.scalars("eval/acc")] == pytest.approx([s / 10 for s in steps], rel=1e-6)


def _expected_hparams(config):
    """What a session must show: numbers as numbers, None / lists / None-or-int categoricals as strings."""
    return {"lr": config["lr"], "act": config["act"], "layers": str(config["layers"]),
            "depth": str(config["depth"]), "opt/momentum": config["opt"]["momentum"], "epochs": 3.0}


def test_sessions_and_experiment_config(mixed_run):
    results, logdir, _ = mixed_run
    for result in results:
        run = _Run(os.path.join(logdir, _run_name(result)))
        start = run.hparams(metadata.SESSION_START_INFO_TAG).session_start_info
        shown = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
        assert shown == pytest.approx(_expected_hparams(result.config))
        assert start.group_name == _run_name(result)
        end = run.hparams(metadata.SESSION_END_INFO_TAG).session_end_info
        assert end.status == (api_pb2.STATUS_FAILURE if result.error else api_pb2.STATUS_SUCCESS)
        assert run.count(metadata.SESSION_START_INFO_TAG) == 1
    experiment = _Run(logdir).hparams(metadata.EXPERIMENT_TAG).experiment
    infos = {info.name: info for info in experiment.hparam_infos}
    assert set(infos) == {"lr", "act", "layers", "depth", "opt/momentum", "epochs"}
    # Domains come from the Space, not from the three sampled values.
    assert (infos["lr"].domain_interval.min_value, infos["lr"].domain_interval.max_value) == (1e-3, 1e-1)
    assert infos["opt/momentum"].domain_interval.max_value == pytest.approx(0.9)
    assert infos["layers"].type == api_pb2.DATA_TYPE_STRING
    assert sorted(v.string_value for v in infos["layers"].domain_discrete.values) == ["None", "[16, 16]", "[16]"]
    assert sorted(v.string_value for v in infos["depth"].domain_discrete.values) == ["2", "3", "None"]
    assert infos["lr"].differs and not infos["epochs"].differs
    assert [m.name.tag for m in experiment.metric_infos] == ["loss", "eval/acc"]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url, request):
    body = json.dumps(request).encode()
    http_request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(http_request, timeout=10) as response:
        return json.loads(response.read())


def _ask_hparams_plugin(base, n_groups, timeout_s=45.0):
    """The experiment and session groups as the HParams dashboard requests them, once all groups are loaded."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            experiment = _post(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
            columns = [{"hparam": info["name"], "includeInResult": True} for info in experiment["hparamInfos"]]
            columns += [{"metric": info["name"], "includeInResult": True} for info in experiment["metricInfos"]]
            groups = _post(f"{base}/data/plugin/hparams/session_groups", {
                "experimentName": "", "colParams": columns, "startIndex": 0, "sliceSize": 100,
                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
            if len(groups.get("sessionGroups", [])) == n_groups:
                return experiment, groups["sessionGroups"]
        except (urllib.error.URLError, ConnectionError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"TensorBoard at {base} did not list {n_groups} session groups in {timeout_s} s")
        time.sleep(0.5)


def test_tensorboard_server_hparams_api(mixed_run):
    """What users see: a real `tensorboard --logdir <experiment dir>` lists every trial with its values."""
    results, logdir, _ = mixed_run
    port = _free_port()
    tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    server = subprocess.Popen([tensorboard, "--logdir", os.path.dirname(logdir), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        experiment, groups = _ask_hparams_plugin(f"http://127.0.0.1:{port}", n_groups=len(results))
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert {info["name"] for info in experiment["hparamInfos"]} == set(_expected_hparams(results[0].config))
    assert [info["name"]["tag"] for info in experiment["metricInfos"]] == ["loss", "eval/acc"]
    by_name = {group["name"]: group for group in groups}
    for result in results:
        group = by_name[_run_name(result)]
        assert group["hparams"] == pytest.approx(_expected_hparams(result.config))
        final = {m["name"]["tag"]: (m["trainingStep"], m["value"]) for m in group["metricValues"]}
        step = result.metrics["training_iteration"]
        assert final["loss"] == (step, pytest.approx(result.metrics["loss"], rel=1e-6))
        assert final["eval/acc"] == (step, pytest.approx(result.metrics["eval"]["acc"], rel=1e-6))
        status = "STATUS_FAILURE" if result.error else "STATUS_SUCCESS"
        assert [session["status"] for session in group["sessions"]] == [status]


class _PauseOnce(FIFOScheduler):
    """Pauses every trial once at step 3 and records the decision through the callback's scheduler hook."""

    def __init__(self, callback):
        super().__init__()
        self.callback = callback
        self.paused = set()

    def on_trial_result(self, tune_controller, trial, result):
        if result["training_iteration"] == 3 and trial.trial_id not in self.paused:
            self.paused.add(trial.trial_id)
            self.callback.log_scalar(trial, "scheduler/paused", 1.0, step=3)
            self.callback.log_scalar(None, "scheduler/n_paused", len(self.paused), step=len(self.paused))
            return TrialScheduler.PAUSE
        return TrialScheduler.CONTINUE


def _train_checkpointing(config):
    """Five steps; checkpoints at even steps only, so a trial paused at step 3 resumes from step 2 and
    reports step 3 again (loss + 100 after a restore)."""
    start, offset = 0, 0.0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder, open(os.path.join(folder, "step.json")) as f:
            start, offset = json.load(f), 100.0
    for step in range(start + 1, 6):
        metrics = {"loss": step + offset}
        if step % 2:
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "step.json"), "w") as f:
                json.dump(step, f)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def test_paused_trial_keeps_one_continuous_run(ray_session, tmp_path, monkeypatch):
    """No space (types and domains inferred), Ray's own loggers on: TensorBoardCallback replaces Ray's
    TensorBoard logger, a paused trial keeps one run, replayed steps replace the old ones."""
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
    param_space = {"width": tune.choice([None, [8]]),
                   "tag": tune.sample_from(lambda spec: (spec.config.width, "x"))}
    callback = TensorBoardCallback()
    tuner = tune.Tuner(_train_checkpointing, param_space=param_space,
                       tune_config=tune.TuneConfig(num_samples=2, scheduler=_PauseOnce(callback)),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="pause", verbose=0,
                                                 callbacks=[callback]))
    results = tuner.fit()
    assert not results.errors
    logdir = tmp_path / "pause" / "tensorboard"
    assert sorted(p.name for p in logdir.iterdir() if p.is_dir()) == sorted(
        f"_train_checkpointing_{r.metrics['trial_id']}" for r in results)
    assert not list(tmp_path.glob("pause/_train_checkpointing_*/events.out.tfevents*"))
    for result in results:
        run = _Run(logdir / f"_train_checkpointing_{result.metrics['trial_id']}")
        assert run.scalars("loss") == [(1, 1.0), (2, 2.0), (3, 103.0), (4, 104.0), (5, 105.0)]
        assert run.scalars("scheduler/paused") == [(3, 1.0)]
        assert run.count(metadata.SESSION_START_INFO_TAG) == 1
        start = run.hparams(metadata.SESSION_START_INFO_TAG).session_start_info
        config = result.config
        assert {k: v.string_value for k, v in start.hparams.items()} == {
            "width": str(config["width"]), "tag": str((config["width"], "x"))}
    root = _Run(logdir)
    assert root.scalars("scheduler/n_paused") == [(1, 1.0), (2, 2.0)]
    experiment = root.hparams(metadata.EXPERIMENT_TAG).experiment
    seen = {name: {str(r.config[name]) for r in results} for name in ("width",)}
    infos = {info.name: info for info in experiment.hparam_infos}
    assert {v.string_value for v in infos["width"].domain_discrete.values} == seen["width"]
    assert infos["tag"].type == api_pb2.DATA_TYPE_STRING
    assert [m.name.tag for m in experiment.metric_infos] == ["loss", "time_total_s"]


class _CrashOnce(tune.Callback):
    """Crashes the driver loop the first time a trial reports step 2 (a marker file makes it once only:
    Tuner.restore unpickles its own copy of this callback)."""

    def __init__(self, marker):
        self.marker = marker

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result["training_iteration"] == 2 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            raise RuntimeError("simulated driver crash")


def _train_slow(config):
    for step in range(1, 4):
        time.sleep(0.1)
        tune.report({"loss": config["x"] * step})


def test_restored_experiment_appends_to_the_same_run(ray_session, tmp_path):
    """A driver crash at step 2, then Tuner.restore: the trial reruns into the same run, steps 1-3 once."""
    callbacks = [TensorBoardCallback(), _CrashOnce(str(tmp_path / "crashed"))]
    tuner = tune.Tuner(_train_slow, param_space={"x": tune.uniform(1.0, 2.0)},
                       tune_config=tune.TuneConfig(num_samples=1),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="restore", verbose=0,
                                                 callbacks=callbacks))
    with pytest.raises(Exception, match="simulated driver crash"):
        tuner.fit()
    logdir = tmp_path / "restore" / "tensorboard"
    assert not list(logdir.glob("events.out.tfevents*")), "no experiment config for an unfinished experiment"
    results = tune.Tuner.restore(str(tmp_path / "restore"), _train_slow, resume_unfinished=True).fit()
    assert not results.errors
    for result in results:
        run_dir = logdir / f"_train_slow_{result.metrics['trial_id']}"
        assert len(list(run_dir.glob("events.out.tfevents*"))) >= 2
        run = _Run(run_dir)
        loss = run.scalars("loss")
        assert [step for step, _ in loss] == [1, 2, 3]
        assert [value for _, value in loss] == pytest.approx([result.config["x"] * s for s in (1, 2, 3)], rel=1e-6)
        assert run.count(metadata.SESSION_START_INFO_TAG) == 1
        end = run.hparams(metadata.SESSION_END_INFO_TAG).session_end_info
        assert end.status == api_pb2.STATUS_SUCCESS
    experiment = _Run(logdir).hparams(metadata.EXPERIMENT_TAG).experiment
    interval = experiment.hparam_infos[0].domain_interval
    assert interval.min_value == interval.max_value == results[0].config["x"]


def test_bad_arguments_are_rejected():
    with pytest.raises(TypeError, match="metrics"):
        TensorBoardCallback(metrics="loss")
    callback = TensorBoardCallback()
    with pytest.raises(ValueError, match="tag"):
        callback.log_scalar(None, "", 1.0, step=1)
    with pytest.raises(TypeError, match="real number"):
        callback.log_scalar(None, "cutoff", "high", step=1)


def _train_ranked(config):
    for step in range(1, 9):
        tune.report({"score": config["quality"] * step, "quality": config["quality"]})


def test_scheduler_decisions_reach_the_trial_runs(ray_session, tmp_path):
    from tunekit.schedulers import ASHAScheduler

    scheduler = ASHAScheduler(max_t=8, grace_period=2, reduction_factor=2)
    callback = TensorBoardCallback(scheduler=scheduler)
    results = tune.Tuner(  # best first, one at a time: the later, worse trials fall under the rung cut-offs
        _train_ranked,
        param_space={"quality": tune.grid_search([4.0, 3.0, 2.0, 1.0])},
        tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=scheduler, max_concurrent_trials=1,
                                    reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0, callbacks=[callback]),
    ).fit()
    logdir = os.path.join(results.experiment_path, "tensorboard")
    runs = [_Run(os.path.join(logdir, name)) for name in os.listdir(logdir) if name.startswith("_train_ranked")]
    by_quality = {run.scalars("quality")[0][1]: run for run in runs}
    assert sorted(by_quality) == [1.0, 2.0, 3.0, 4.0]
    best, worst = by_quality[4.0], by_quality[1.0]
    assert max(step for step, _ in best.scalars("score")) == 8
    assert all(step == 8 for step, _ in best.scalars("scheduler/stop"))  # only the stop at max_t
    last_step = max(step for step, _ in worst.scalars("score"))
    assert last_step < 8
    assert worst.scalars("scheduler/stop") == [(last_step, 1.0)]
    cutoff = dict(worst.scalars("scheduler/cutoff"))[last_step]
    assert 1.0 * last_step < cutoff <= 4.0 * last_step


def test_scheduler_without_decisions_is_rejected():
    with pytest.raises(TypeError, match="scheduler"):
        TensorBoardCallback(scheduler=FIFOScheduler())
