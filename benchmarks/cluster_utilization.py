"""How busy Tune keeps a multi-GPU cluster's GPU slots while trials are still waiting to run.

A simulated cluster (``ray.cluster_utils.Cluster``: a head without GPUs and 2 worker nodes x 2 logical
GPUs, 2 CPUs each) runs many short {"cpu": 1, "gpu": 1} trials. Each trial records, from inside, when
its work started and ended. Utilization is the share of GPU-slot time (4 slots x wall time) covered by
trial work during the window in which trials were still pending: from the first trial's start to the
last trial's start. Ray's per-trial start/stop cost and the searcher's suggestion time both show up as
idle slot time. Rows: Ray's random search (BasicVariantGenerator), without and with actor reuse, and
tunekit's GP-EI with Tune's default for custom searchers (one trial staged at a time) and with
``max_concurrent_trials`` set to the cluster's slots (:func:`tunekit.resources.trial_slots`), each
without and with actor reuse; for GP-EI also the median time of its ``suggest`` calls.

    .venv/bin/python benchmarks/cluster_utilization.py --trials 40 --seconds 0.5
    .venv/bin/python benchmarks/cluster_utilization.py --no-gp     # random search only
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray  # noqa: E402 (Tune reads RAY_AIR_NEW_OUTPUT at import)
from ray import tune  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.tune.search.basic_variant import BasicVariantGenerator  # noqa: E402

from tunekit.resources import trial_resources, trial_slots  # noqa: E402

SLOT = trial_resources(cpu=1, gpu=1)


@dataclass
class Row:
    """One experiment's figures; times in seconds."""

    searcher: str
    max_concurrent: str
    reuse_actors: bool
    utilization_pending: float
    utilization_overall: float
    makespan: float
    median_idle_gap: float
    slots_used: int
    median_suggest_ms: float | None


def short_trial(config: dict) -> None:
    """``config["seconds"]`` of work on a 2-D quadratic, timed from inside the trial."""
    start = time.time()
    time.sleep(config["seconds"])
    tune.report({"loss": (config["x"] - 0.3) ** 2 + (config["y"] + 0.2) ** 2, "work_start": start,
                 "work_end": time.time(), "node_id": ray.get_runtime_context().get_node_id(),
                 "gpu_id": ",".join(str(i) for i in ray.get_gpu_ids())})


def utilization(intervals: list[tuple[float, float]], slots: int, window: tuple[float, float]) -> float:
    """Share of ``slots`` x window length covered by the (start, end) work intervals, in [0, 1]."""
    low, high = window
    busy = sum(max(0.0, min(end, high) - max(start, low)) for start, end in intervals)
    return busy / (slots * (high - low)) if high > low else float("nan")


def idle_gaps(metrics: list[dict]) -> list[float]:
    """Seconds each GPU slot sat idle between one trial's end and the next trial's start on it."""
    gaps = []
    for slot in {(m["node_id"], m["gpu_id"]) for m in metrics}:
        runs = sorted((m["work_start"], m["work_end"]) for m in metrics if (m["node_id"], m["gpu_id"]) == slot)
        gaps += [nxt[0] - prev[1] for prev, nxt in zip(runs, runs[1:])]
    return gaps


def timed_gp_ei(suggest_seconds: list[float]):
    """tunekit's GP-EI, appending the wall time of each ``suggest`` call to ``suggest_seconds``."""
    from tunekit.searchers import GPEISearch  # only here: --no-gp runs without GP-EI's dependencies

    class TimedGPEISearch(GPEISearch):
        def suggest(self, trial_id: str):
            started = time.perf_counter()
            config = super().suggest(trial_id)
            suggest_seconds.append(time.perf_counter() - started)
            return config

    return TimedGPEISearch(seed=0)


def run_one(searcher: str, limit: bool, reuse_actors: bool, trials: int, seconds: float, storage: str) -> Row:
    """One experiment of ``trials`` trials; returns its utilization figures."""
    slots = trial_slots(SLOT)
    suggest_seconds: list[float] = []
    if searcher == "random":
        search_alg = BasicVariantGenerator(random_state=0)
    else:
        search_alg = timed_gp_ei(suggest_seconds)
    tuner = tune.Tuner(
        tune.with_resources(short_trial, SLOT),
        param_space={"x": tune.uniform(-1, 1), "y": tune.uniform(-1, 1), "seconds": seconds},
        tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=trials, search_alg=search_alg,
                                    max_concurrent_trials=slots if limit else None, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(storage_path=storage, verbose=0),
    )
    started = time.time()
    results = tuner.fit()
    makespan = time.time() - started
    metrics = [r.metrics for r in results if r.metrics and "work_start" in r.metrics]
    if len(metrics) != trials:
        raise RuntimeError(f"{searcher}: {trials - len(metrics)} of {trials} trials reported nothing")
    intervals = [(m["work_start"], m["work_end"]) for m in metrics]
    first_start, last_start = min(s for s, _ in intervals), max(s for s, _ in intervals)
    last_end = max(e for _, e in intervals)
    return Row(searcher="Ray random search" if searcher == "random" else "tunekit GP-EI",
               max_concurrent=str(slots) if limit else "unset", reuse_actors=reuse_actors,
               utilization_pending=utilization(intervals, slots, (first_start, last_start)),
               utilization_overall=utilization(intervals, slots, (first_start, last_end)),
               makespan=makespan, median_idle_gap=statistics.median(idle_gaps(metrics)),
               slots_used=len({(m["node_id"], m["gpu_id"]) for m in metrics}),
               median_suggest_ms=1000 * statistics.median(suggest_seconds) if suggest_seconds else None)


def markdown(rows: list[Row]) -> str:
    """The rows as a markdown table."""
    lines = ["| searcher | max_concurrent_trials | reuse_actors | GPU-slot utilization while trials pending "
             "| overall | makespan (s) | median idle gap per slot (s) | slots used | median suggest (ms) |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.searcher} | {r.max_concurrent} | {r.reuse_actors} | {100 * r.utilization_pending:.1f} % "
              f"| {100 * r.utilization_overall:.1f} % | {r.makespan:.1f} | {r.median_idle_gap:.2f} "
              f"| {r.slots_used} | {'-' if r.median_suggest_ms is None else f'{r.median_suggest_ms:.0f}'} |"
              for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=0.5, help="work per trial (s)")
    parser.add_argument("--no-gp", action="store_true", help="only Ray's random search")
    args = parser.parse_args()

    settings = [("random", False, False), ("random", False, True)]
    if not args.no_gp:
        settings += [("gp_ei", False, False), ("gp_ei", False, True), ("gp_ei", True, False),
                     ("gp_ei", True, True)]
    # Cluster writes its address to <Ray temp>/ray_current_cluster, where a plain ray.init() in any other
    # process on this machine would find and join it: a private temp folder keeps it to this script.
    ray_temp = tempfile.mkdtemp(prefix="tk-ray-")
    os.environ["RAY_TMPDIR"] = ray_temp
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "include_dashboard": False, "object_store_memory": 100 * 1024**2})
    rows = []
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=2, num_gpus=2, object_store_memory=100 * 1024**2)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        with tempfile.TemporaryDirectory() as storage:
            for searcher, limit, reuse in settings:
                rows.append(run_one(searcher, limit, reuse, args.trials, args.seconds, storage))
                print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(ray_temp, ignore_errors=True)
    print(f"\n{args.trials} trials x {args.seconds} s, 2 worker nodes x 2 logical GPUs; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Ray {ray.__version__}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
