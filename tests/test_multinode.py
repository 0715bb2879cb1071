"""Trials on a multi-node, multi-GPU Ray cluster: placement, node failure, fractional GPUs.

The scenarios run in a subprocess (tests/multinode_scenarios.py) on ``ray.cluster_utils.Cluster`` --
a head and two worker nodes with 2 logical GPUs each -- because that cluster needs its own Ray, apart
from the suite's shared ``ray_session``. Each trial attempt records, from inside the trial, the node and
GPU ids Ray gave it and when it ran; the tests check those records and Tune's results.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "tests" / "multinode_scenarios.py"


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> dict:
    """Run all scenarios once (one cluster start on 2 cores is the expensive part) and load the summary."""
    work_dir = tmp_path_factory.mktemp("multinode")
    summary_path = work_dir / "summary.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(REPO)) if p)
    env.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)  # Tune's result files keep its warnings out of the log
    completed = subprocess.run([sys.executable, str(SCENARIOS), str(work_dir), str(summary_path)],
                               cwd=work_dir, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0 and summary_path.exists(), completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(summary_path.read_text())


def overlap(a: dict, b: dict) -> bool:
    """Whether two attempts' [start, end] intervals (seconds) intersect."""
    return a["start"] < b["end"] and b["start"] < a["end"]


def max_concurrency(records: list[dict]) -> int:
    """The largest number of attempts running at one moment (checked at every attempt's start)."""
    return max(sum(r["start"] <= s["start"] < r["end"] or r is s for r in records) for s in records)


def assert_complete(result: dict, num_trials: int, last_iteration: int) -> None:
    assert result["errors"] == []
    assert len(result["final_iterations"]) == num_trials
    assert set(result["final_iterations"].values()) == {last_iteration}


def test_whole_gpu_trials_spread_over_both_worker_nodes(summary):
    result = summary["placement"]
    records = result["records"]
    assert_complete(result, num_trials=8, last_iteration=3)
    assert {r["trial_id"] for r in records} == set(result["final_iterations"])
    assert all(len(r["gpu_ids"]) == 1 for r in records)
    slots = {(r["node_id"], r["gpu_ids"][0]) for r in records}
    workers = summary["worker_node_ids"]
    assert slots == {(node, gpu) for node in workers for gpu in ("0", "1")}
    assert max_concurrency(records) == 4
    for a, b in itertools.combinations(records, 2):
        if (a["node_id"], a["gpu_ids"]) == (b["node_id"], b["gpu_ids"]):
            assert not overlap(a, b), (a, b)


def test_trials_on_a_killed_node_resume_from_checkpoint_elsewhere(summary):
    result = summary["fault"]
    records = result["records"]
    killed, killed_at = result["killed_node_id"], result["killed_at"]
    survivor = next(node for node in summary["worker_node_ids"] if node != killed)
    assert_complete(result, num_trials=6, last_iteration=9)

    attempts = {trial: sorted((r for r in records if r["trial_id"] == trial), key=lambda r: r["start"])
                for trial in result["final_iterations"]}
    interrupted = {t: a for t, a in attempts.items() if a[0]["node_id"] == killed and len(a) > 1}
    assert len(interrupted) >= 2
    for trial_attempts in interrupted.values():
        before, retry = trial_attempts[0], trial_attempts[-1]
        assert retry["start"] > killed_at and retry["node_id"] == survivor
        assert 1 <= retry["first_iteration"] <= before["last_iteration"] + 1
        assert retry["last_iteration"] == 9
    assert all(r["node_id"] == survivor for r in records if r["start"] > killed_at)
    for trial, trial_attempts in attempts.items():
        if trial not in interrupted:
            assert len(trial_attempts) == 1 and trial_attempts[0]["first_iteration"] == 0, trial_attempts


def test_trial_slots_counts_the_live_nodes(summary):
    assert summary["slots_before_fault"] == 4
    assert summary["slots_after_fault"] == 2
    assert summary["half_gpu_slots_after_fault"] == 4


def test_half_gpu_trials_pair_up_on_each_gpu(summary):
    result = summary["fractional"]
    records = result["records"]
    assert_complete(result, num_trials=4, last_iteration=5)
    assert {r["node_id"] for r in records} == {result["surviving_node_id"]}
    assert all(len(r["gpu_ids"]) == 1 for r in records)
    assert Counter(r["gpu_ids"][0] for r in records) == {"0": 2, "1": 2}
    assert max_concurrency(records) == 4
    for gpu in ("0", "1"):
        on_gpu = [r for r in records if r["gpu_ids"] == [gpu]]
        assert max_concurrency(on_gpu) <= 2
