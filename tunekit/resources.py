"""Per-trial resources: what a trial asks Ray for, and which torch device it then trains on.

Ray places each trial on a node with free CPUs/GPUs and sets ``CUDA_VISIBLE_DEVICES`` in the trial's
process to the GPU ids it assigned, so inside a trial ``cuda`` (device index 0) is always the trial's own
GPU. Trials asking for a fraction of a GPU share one: four 0.5-GPU trials on a 2-GPU node run two per
GPU (checked in tests/test_multinode.py).
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import TYPE_CHECKING, Mapping

import ray

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Ray stores resource quantities in units of 1/10000 (ray._raylet.RESOURCE_UNIT_SCALING).
_RESOURCE_PRECISION = 1e-4


def _check_quantity(name: str, value: object) -> float:
    """``value`` as a float if it is a finite, non-negative number Ray can represent, else ValueError/TypeError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    quantity = float(value)
    if not math.isfinite(quantity) or quantity < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if quantity > 0 and abs(quantity / _RESOURCE_PRECISION - round(quantity / _RESOURCE_PRECISION)) > 1e-6:
        raise ValueError(f"{name} must be a multiple of {_RESOURCE_PRECISION} (Ray's resource precision), "
                         f"got {value!r}")
    return quantity


def trial_resources(cpu: float = 1, gpu: float = 0) -> dict[str, float]:
    """The resource request of one trial, for ``tune.with_resources(trainable, trial_resources(...))``.

    ``gpu`` may be a fraction below 1 (0.5: two trials share a GPU, 0.25: four) or a whole number of GPUs;
    a fraction above 1 (1.5) is refused, because Ray can give a trial part of one GPU but not one and a
    half GPUs. ``cpu`` may be any non-negative multiple of 0.0001.
    """
    cpus = _check_quantity("cpu", cpu)
    gpus = _check_quantity("gpu", gpu)
    if gpus > 1 and not gpus.is_integer():
        raise ValueError(f"gpu must be a fraction in (0, 1) or a whole number of GPUs, got {gpu!r}")
    if cpus == 0 and gpus == 0:
        raise ValueError("cpu and gpu are both 0: a trial must ask for some CPU or GPU to be placed")
    return {"cpu": cpus, "gpu": gpus}


def trial_slots(resources: Mapping[str, float]) -> int:
    """How many trials asking for ``resources`` (as from :func:`trial_resources`) fit at once on the
    cluster's live nodes, the head included (needs ``ray.init`` first).

    Use it as ``tune.TuneConfig(max_concurrent_trials=...)`` with a tunekit searcher: without that limit,
    Tune keeps only one trial waiting for resources at a time for any searcher other than its own random
    search, so slots freed together are refilled one by one. A fraction of a GPU cannot span two GPUs, so
    a node with 2 GPUs holds 4 trials of 0.4 GPU, not 5. On an autoscaling cluster this counts only the
    nodes up now.
    """
    request = trial_resources(cpu=resources.get("cpu", resources.get("CPU", 0)),
                              gpu=resources.get("gpu", resources.get("GPU", 0)))
    slots = 0
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        fits = []
        if request["cpu"] > 0:
            fits.append(math.floor(node["Resources"].get("CPU", 0) / request["cpu"] + 1e-9))
        if request["gpu"] > 0:
            gpus = node["Resources"].get("GPU", 0)
            per_gpu = math.floor(1 / request["gpu"] + 1e-9) if request["gpu"] < 1 else 1 / request["gpu"]
            fits.append(math.floor(math.floor(gpus + 1e-9) * per_gpu + 1e-9))
        slots += min(fits)
    return slots


def assigned_gpu_ids() -> list[str] | None:
    """The GPU ids Ray assigned to the calling trial, or None when not called inside a Ray task or actor."""
    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:
        return None
    return sorted(context.get_accelerator_ids().get("GPU", []))


def trial_device() -> torch.device:
    """The torch device a trial should train on: ``cuda`` when it holds a GPU torch can use, else ``cpu``.

    Inside a Ray trial, ``cuda`` is chosen only when Ray assigned it a GPU (``ray.get_gpu_ids()``), so a
    trial started without ``"gpu"`` in its resources stays on the CPU even on a GPU node (Ray leaves
    ``CUDA_VISIBLE_DEVICES`` unset there, so torch alone would still see every GPU). Outside Ray (a plain
    script) any visible GPU is used. The choice and its reason are logged.
    """
    import torch

    gpu_ids = assigned_gpu_ids()
    cuda_ok = torch.cuda.is_available()
    if gpu_ids is None:
        device = torch.device("cuda" if cuda_ok else "cpu")
        logger.info("Outside a Ray trial: using %s (torch.cuda.is_available()=%s)", device, cuda_ok)
    elif not gpu_ids:
        device = torch.device("cpu")
        logger.info("Ray assigned this trial no GPU: using cpu")
    elif cuda_ok:
        device = torch.device("cuda", 0)
        logger.info("Ray assigned GPU ids %s (CUDA_VISIBLE_DEVICES): using %s (%s)",
                    gpu_ids, device, torch.cuda.get_device_name(device))
    else:
        device = torch.device("cpu")
        logger.warning("Ray assigned GPU ids %s but torch sees no CUDA device: using cpu", gpu_ids)
    return device
