"""tunekit.resources: resource requests are validated where they enter, and trials pick their device."""

from __future__ import annotations

import logging
import math
import os

import pytest
import torch
from ray import tune

from tunekit.resources import assigned_gpu_ids, trial_device, trial_resources, trial_slots


@pytest.mark.parametrize("cpu, gpu", [(1, 0), (2, 1), (1, 0.5), (0.5, 0.25), (4, 2), (0, 1), (1, 0.0001)])
def test_trial_resources_accepts_whole_and_fractional_gpus(cpu, gpu):
    assert trial_resources(cpu=cpu, gpu=gpu) == {"cpu": float(cpu), "gpu": float(gpu)}


@pytest.mark.parametrize("cpu, gpu, error, names", [
    (1, 1.5, ValueError, "gpu"),
    (1, -1, ValueError, "gpu"),
    (-0.5, 0, ValueError, "cpu"),
    (1, math.nan, ValueError, "gpu"),
    (1, math.inf, ValueError, "gpu"),
    (1, 0.00005, ValueError, "gpu"),
    (0, 0, ValueError, "cpu and gpu"),
    ("1", 0, TypeError, "cpu"),
    (1, True, TypeError, "gpu"),
    (1, None, TypeError, "gpu"),
])
def test_trial_resources_rejects_what_ray_cannot_place(cpu, gpu, error, names):
    with pytest.raises(error, match=names):
        trial_resources(cpu=cpu, gpu=gpu)


@pytest.mark.parametrize("resources, slots", [
    ({"cpu": 1, "gpu": 1}, 4),
    ({"cpu": 1, "gpu": 0.5}, 4),
    ({"cpu": 0.5, "gpu": 0.5}, 8),
    ({"cpu": 0.25, "gpu": 0.3}, 12),
    ({"cpu": 1, "gpu": 2}, 2),
    ({"cpu": 1}, 4),
    ({"GPU": 3}, 1),
])
def test_trial_slots_counts_trials_that_fit_at_once(ray_session, resources, slots):
    """The shared session is one node with 4 CPUs and 4 GPUs; a 0.3 GPU trial fits 3 times per GPU."""
    assert trial_slots(resources) == slots


def test_outside_a_trial_any_visible_gpu_is_used(ray_session, caplog):
    assert assigned_gpu_ids() is None
    with caplog.at_level(logging.INFO, logger="tunekit.resources"):
        device = trial_device()
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert "Outside a Ray trial" in caplog.text


def _device_reporter():
    """A trainable reporting what a trial sees: Ray's GPU ids, CUDA_VISIBLE_DEVICES, torch's view and
    trial_device(). Built in a function so Ray pickles it by value (workers cannot import test modules)."""

    def device_report(config: dict) -> None:
        tune.report({
            "gpu_ids": ",".join(assigned_gpu_ids() or []),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cuda_available": torch.cuda.is_available(),
            "device": str(trial_device()),
        })

    return device_report


def _run_device_trials(tmp_path, resources: dict, num_samples: int) -> list[dict]:
    tuner = tune.Tuner(
        tune.with_resources(_device_reporter(), resources),
        tune_config=tune.TuneConfig(num_samples=num_samples),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert results.num_errors == 0
    return [result.metrics for result in results]


def test_trials_see_only_their_own_gpus_and_pick_the_device(ray_session, tmp_path):
    """Whole, fractional and no GPU in one experiment set (the shared session has 4 logical GPUs)."""
    whole = _run_device_trials(tmp_path / "whole", trial_resources(cpu=1, gpu=1), num_samples=1)
    half = _run_device_trials(tmp_path / "half", trial_resources(cpu=1, gpu=0.5), num_samples=2)
    none = _run_device_trials(tmp_path / "none", trial_resources(cpu=1, gpu=0), num_samples=1)
    for metrics in whole + half:
        gpu_ids = metrics["gpu_ids"].split(",")
        assert len(gpu_ids) == 1 and gpu_ids[0] in {"0", "1", "2", "3"}
        assert metrics["cuda_visible_devices"] == gpu_ids[0]
        assert metrics["device"] == ("cuda:0" if metrics["cuda_available"] else "cpu")
    for metrics in none:
        assert metrics["gpu_ids"] == ""
        assert metrics["device"] == "cpu"
