"""Multi-node Tune scenarios on Ray's test cluster, run as a script by tests/test_multinode.py.

A ``ray.cluster_utils.Cluster`` needs its own Ray, which must never meet the test session's
``ray.init()``; so this runs in a subprocess, with a private Ray temp folder (see
``private_ray_temp_dir``), and writes a JSON summary for the test to assert on.

Cluster: a head node without GPUs and two worker nodes with 2 CPUs and 2 logical GPUs each. Every trial
attempt writes a record (node id, GPU ids, wall-clock interval, first and last iteration) to a shared
folder, updated after each step, so placement and restarts are observed from inside the trials.
Scenarios, in order on the same cluster:
  placement   -- {"gpu": 1} per trial on 2 nodes x 2 GPUs
  fault       -- one worker node removed mid-experiment; trials restore from checkpoints
  fractional  -- {"gpu": 0.5} per trial on the surviving 2-GPU node

Usage: python tests/multinode_scenarios.py WORK_DIR SUMMARY_JSON
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import ray
from ray import tune
from ray.cluster_utils import Cluster
from ray.tune.search.basic_variant import BasicVariantGenerator

from tunekit.resources import trial_device, trial_resources, trial_slots

STEP_SECONDS = 0.25
NODE_MEMORY = 80 * 1024**2
# Mark a killed node dead after ~1.5 s instead of Ray's default ~30 s, so the fault scenario stays short.
FAST_NODE_DEATH = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def steps_trainable(config: dict) -> None:
    """``config["iterations"]`` steps of STEP_SECONDS, a checkpoint after each, resuming from the last one."""
    context = ray.get_runtime_context()
    checkpoint = tune.get_checkpoint()
    first = 0
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            first = json.loads((Path(folder) / "state.json").read_text())["iteration"] + 1
    record = {
        "trial_id": tune.get_context().get_trial_id(),
        "node_id": context.get_node_id(),
        "gpu_ids": sorted(str(i) for i in ray.get_gpu_ids()),
        "device": str(trial_device()),
        "start": time.time(),
        "first_iteration": first,
        "last_iteration": None,
    }
    records = Path(config["records"])
    record_path = records / f"{record['trial_id']}-{uuid.uuid4().hex[:8]}.json"
    _write_json(record_path, {**record, "end": record["start"]})
    wait_for_peers(records, config["barrier"])
    for iteration in range(first, config["iterations"]):
        time.sleep(STEP_SECONDS)
        record.update(last_iteration=iteration, end=time.time())
        _write_json(record_path, record)
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "state.json").write_text(json.dumps({"iteration": iteration}))
            tune.report({"iteration": iteration, "loss": config["x"] / (iteration + 1)},
                        checkpoint=tune.Checkpoint.from_directory(folder))


def wait_for_peers(records: Path, count: int, timeout: float = 30.0) -> None:
    """Hold a trial until ``count`` attempts have started, so that slow worker start-up on a busy machine
    cannot hide whether Ray runs them concurrently (placement is what is tested, not start-up speed)."""
    deadline = time.time() + timeout
    while len(list(records.glob("*.json"))) < count and time.time() < deadline:
        time.sleep(0.05)


def read_records(folder: Path) -> list[dict]:
    """All trial-attempt records written so far under ``folder``."""
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def run_experiment(name: str, work_dir: Path, num_samples: int, iterations: int, cpu: float, gpu: float,
                   barrier: int = 0, max_failures: int = 0) -> dict:
    """One Tune experiment with random search; returns each trial's final iteration and any errors.

    Actors are reused: a finished trial's process (and its GPU) goes to the next trial, which saves a
    process start per trial -- the slow part on a busy 2-core machine."""
    records = work_dir / name
    records.mkdir(parents=True)
    tuner = tune.Tuner(
        tune.with_resources(steps_trainable, trial_resources(cpu=cpu, gpu=gpu)),
        param_space={"x": tune.uniform(0.0, 1.0), "iterations": iterations, "records": str(records),
                     "barrier": barrier},
        tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=num_samples,
                                    search_alg=BasicVariantGenerator(random_state=0), reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(work_dir / "storage"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    )
    started = time.time()
    results = tuner.fit()
    return {
        "seconds": time.time() - started,
        "final_iterations": {r.metrics["trial_id"]: r.metrics.get("iteration") for r in results if r.metrics},
        "errors": [repr(r.error) for r in results if r.error is not None],
        "records": read_records(records),
    }


def kill_when_checkpointed(cluster: Cluster, node, records: Path, report: dict) -> None:
    """Remove ``node`` once two of its trials have each finished two steps, so both have a checkpoint."""
    deadline = time.time() + 60
    while time.time() < deadline:
        on_node = [r for r in read_records(records) if r["node_id"] == node.node_id
                   and (r["last_iteration"] or 0) >= 1] if records.exists() else []
        if len(on_node) >= 2:
            report["killed_at"] = time.time()
            cluster.remove_node(node, allow_graceful=False)
            return
        time.sleep(0.05)


def private_ray_temp_dir() -> str:
    """Point Ray's temp folder at a fresh one, before any Ray process starts.

    ``Cluster`` records its address in ``<temp>/ray/ray_current_cluster``, and a plain ``ray.init()`` in
    any other process on the machine connects to the address found there instead of starting its own
    Ray; a private folder keeps this cluster invisible to them (and to the suite's ``ray_session``).
    """
    folder = tempfile.mkdtemp(prefix="tk-ray-")
    os.environ["RAY_TMPDIR"] = folder
    return folder


def run_scenarios(cluster: Cluster, workers: list, work_dir: Path) -> dict:
    """The three scenarios in order on ``cluster``; returns the summary the tests read."""
    summary: dict = {"head_node_id": cluster.head_node.node_id,
                     "worker_node_ids": [w.node_id for w in workers],
                     "slots_before_fault": trial_slots(trial_resources(cpu=1, gpu=1))}
    summary["placement"] = run_experiment("placement", work_dir, num_samples=8, iterations=4, cpu=1, gpu=1,
                                          barrier=4)

    victim = workers[1]
    fault: dict = {"killed_node_id": victim.node_id}
    killer = threading.Thread(target=kill_when_checkpointed, daemon=True,
                              args=(cluster, victim, work_dir / "fault", fault))
    killer.start()
    fault.update(run_experiment("fault", work_dir, num_samples=6, iterations=10, cpu=1, gpu=1,
                                max_failures=3))
    killer.join()
    summary["fault"] = fault

    summary["slots_after_fault"] = trial_slots(trial_resources(cpu=1, gpu=1))
    summary["half_gpu_slots_after_fault"] = trial_slots(trial_resources(cpu=0.5, gpu=0.5))
    summary["fractional"] = run_experiment("fractional", work_dir, num_samples=4, iterations=6, cpu=0.5, gpu=0.5,
                                           barrier=4)
    summary["fractional"]["surviving_node_id"] = workers[0].node_id
    summary["scenario_seconds"] = {name: summary[name]["seconds"] for name in ("placement", "fault", "fractional")}
    return summary


def main(work_dir: Path, summary_path: Path) -> None:
    ray_temp = private_ray_temp_dir()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "include_dashboard": False, "object_store_memory": NODE_MEMORY,
        "_system_config": FAST_NODE_DEATH})
    try:
        workers = [cluster.add_node(num_cpus=2, num_gpus=2, object_store_memory=NODE_MEMORY) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        _write_json(summary_path, run_scenarios(cluster, workers, work_dir))
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(ray_temp, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
