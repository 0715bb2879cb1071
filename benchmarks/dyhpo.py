"""DyHPO against tunekit ASHA (stopping and promotion rules) and random search with full training, at equal
epoch budgets.

Learning curves are tabulated first, then every method replays them one epoch at a time on one worker, through
the same calls Ray makes (DyHPO: ``suggest`` / the scheduler's result decision / resuming a paused trial;
ASHA: ``on_trial_result``, and ``choose_trial_to_run`` for the promotion rule), so many seeds cost seconds
instead of hours of training:

1. ``mlp``: the quickstart MLP (examples/quickstart.py: same model, data, optimizer and epochs) trained on a
   pool of sampled configurations; the curve tables are cached in benchmarks/results/dyhpo_mlp_curves.json.
2. ``synthetic``: a learning-curve family (exponential approach to a configuration-dependent plateau, with
   rates anti-correlated with quality for part of the space so early leaders are not always the final ones,
   plus noise), a new random family per seed.
3. ``crossing``: a held-out family added after DyHPO was tuned on the first two (no method's settings were
   chosen on it): curves that cross (fast starters plateau high, slow starters end low), a categorical learning
   rate schedule that trades early speed for a lower end, noise that grows with the learning rate, and runs
   that diverge.
4. ``powerlaw`` (``--powerlaw-seeds``, off by default): a second held-out family, 30 epochs, added in the fifth
   session: power-law convergence, runs that start learning late, runs that overfit.

Per seed, ASHA (grace_period 1, reduction_factor 3, max_t = max_epochs) runs over the whole pool in a random
order; its total epochs E and its best loss A set the budget: DyHPO, ASHA with the promotion rule (same
grace period, reduction factor and max_t, new trials from the pool in the same order) and random search get E
epochs too.
Reported: best loss after E/4, E/2 and E epochs, and epochs needed to reach A. Decision overhead is timed
inside DyHPOSearch (every decision, model refits included) in one synthetic run of 600 epochs.

A last measurement (``--utilization SECONDS``) runs DyHPO in a real ``tune.Tuner`` with 4 concurrent trials whose
epochs sleep SECONDS, ``--utilization-budget`` epochs in all (80), and reports the share of worker time spent
training (over the whole ``fit`` and between the first epoch's start and the last epoch's end), with the idle
worker-seconds by cause; ``--utilization-peers`` adds tunekit ASHA and FIFO (every trial trained fully, no
scheduler) on the same trainable and workers, in the same Ray session.

    python benchmarks/dyhpo.py [--seeds 8] [--crossing-seeds 8] [--powerlaw-seeds 8] [--mlp-seeds 6] [--mlp-configs 96] [--skip-mlp]
                               [--skip-overhead]
    python benchmarks/dyhpo.py --utilization 1.0 [--utilization-budget 80] [--utilization-peers]
    python benchmarks/dyhpo.py --export-problems PATH   # curve tables + ASHA runs as JSON, for hpo4dl_peer.py
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from tunekit.parameters import Categorical, Float, Int
from tunekit.schedulers.asha import ASHAScheduler
from tunekit.schedulers.dyhpo import DyHPOScheduler
from tunekit.searchers.dyhpo import DyHPOSearch
from tunekit.space import Space

RESULTS = Path(__file__).parent / "results"
MLP_CURVES = RESULTS / "dyhpo_mlp_curves.json"


# -- curve tables -------------------------------------------------------------------------------------------
def mlp_curve(config: dict, max_epochs: int) -> list:
    """Validation errors (1 - accuracy) per epoch of the quickstart MLP, trained as examples/quickstart.py does."""
    from quickstart import build_model, load_data

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x_train, y_train, x_val, y_val = load_data()
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    errors = []
    for epoch in range(1, max_epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(epoch - 1))
        for start in range(0, len(order), int(config["batch_size"])):
            batch = order[start:start + int(config["batch_size"])]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            errors.append(1.0 - (model(x_val).argmax(dim=1) == y_val).float().mean().item())
    return errors


def mlp_table(num_configs: int) -> tuple:
    """(space, configs, curves (n, MAX_EPOCHS)) of the quickstart MLP, computed once and cached."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
    from quickstart import MAX_EPOCHS, PARAM_SPACE

    space = Space.from_tune(PARAM_SPACE)
    if MLP_CURVES.exists():
        cached = json.loads(MLP_CURVES.read_text())
        if len(cached["configs"]) >= num_configs:
            return space, cached["configs"][:num_configs], np.array(cached["curves"])[:num_configs]
    configs = space.sample(num_configs, seed=12345)
    started = time.perf_counter()
    curves = [mlp_curve(config, MAX_EPOCHS) for config in configs]
    print(f"tabulated {num_configs} MLP curves in {time.perf_counter() - started:.0f} s")
    MLP_CURVES.write_text(json.dumps({"configs": configs, "curves": curves}))
    return space, configs, np.array(curves)


def synthetic_table(seed: int, num_configs: int = 150, max_epochs: int = 20) -> tuple:
    """A learning-curve family over 3 parameters: loss(e) = plateau + (1 - plateau) exp(-rate e) + noise.

    The plateau is a random quadratic bowl; in half of the space the rate falls as quality rises (good
    configurations start slowly), so greedy first-epoch choices are misleading there.
    """
    rng = np.random.default_rng(seed)
    space = Space([Float(f"x{i}", 0.0, 1.0) for i in range(3)])
    configs = space.sample(num_configs, seed=seed)
    X = space.encode(configs)
    centre, weights = rng.random(3), rng.uniform(0.5, 2.0, 3)
    plateau = 0.05 + 0.6 * ((X - centre) ** 2 * weights).sum(1) / weights.sum()
    rate = np.where(X[:, 0] > 0.5, 0.05 + 2.0 * plateau, rng.uniform(0.1, 0.8, num_configs))
    epochs = np.arange(1, max_epochs + 1)
    curves = plateau[:, None] + (1 - plateau[:, None]) * np.exp(-rate[:, None] * epochs)
    curves += rng.normal(0.0, 0.005, curves.shape)
    return space, configs, curves


def crossing_table(seed: int, num_configs: int = 150, max_epochs: int = 20) -> tuple:
    """Crossing, noisy, sometimes diverging curves over a learning rate, two shape parameters and a schedule.

    loss(e) = end + (1 - end) exp(-rate e) + noise: a higher learning rate ``lr`` (log-scale, encoded in [0, 1])
    learns faster but ends higher (so early leaders lose later), the "cosine" schedule starts slower and ends
    lower than "constant", the end level is a random bowl over ``width`` and ``decay``, the noise grows with the
    learning rate, and above a random threshold of ``lr`` half the runs diverge (loss near 1) from a random epoch on.
    """
    rng = np.random.default_rng(10_000 + seed)
    space = Space([Float("lr", 1e-4, 1e-1, log=True), Float("width", 0.0, 1.0), Float("decay", 0.0, 1.0),
                   Categorical("schedule", ("constant", "cosine"))])
    configs = space.sample(num_configs, seed=seed)
    X = space.encode(configs)
    lr, shape, cosine = X[:, 0], X[:, 1:3], X[:, 4]
    centre, weights = rng.uniform(0.2, 0.8, 2), rng.uniform(0.5, 2.0, 2)
    bowl = ((shape - centre) ** 2 * weights).sum(1) / weights.sum()
    end = 0.04 + 0.5 * bowl + 0.25 * lr**2 - 0.03 * cosine
    rate = (0.03 + 1.2 * lr**2) * (1.0 - 0.4 * cosine)
    epochs = np.arange(1, max_epochs + 1)
    curves = end[:, None] + (1 - end[:, None]) * np.exp(-rate[:, None] * epochs)
    curves += rng.normal(0.0, 1.0, curves.shape) * (0.003 + 0.02 * lr[:, None])
    diverges = (lr > rng.uniform(0.7, 0.9)) & (rng.random(num_configs) < 0.5)
    start = rng.integers(3, max_epochs, num_configs)
    mask = diverges[:, None] & (epochs[None, :] >= start[:, None])
    curves[mask] = 0.9 + rng.normal(0.0, 0.02, mask.sum())
    return space, configs, np.clip(curves, 0.0, 1.0)


def powerlaw_table(seed: int, num_configs: int = 200, max_epochs: int = 30) -> tuple:
    """A second held-out family, added after every DyHPO setting was chosen: power-law curves over 30 epochs.

    loss(e) = final + (0.9 - final) (1 + e / tau)^(-2 alpha) + noise: ``final`` is a random bowl over the learning
    rate and dropout plus batch size, optimizer and depth terms; a higher learning rate converges faster (alpha);
    15 % of the runs stay near 0.9 for a random 3-11 epochs before learning, and most runs with dropout below 0.15
    overfit (their loss rises linearly from a random epoch on).
    """
    rng = np.random.default_rng(50_000 + seed)
    space = Space([Float("lr", 1e-4, 1e-1, log=True), Int("batch", 16, 512, log=True), Float("dropout", 0.0, 0.6),
                   Categorical("optimizer", ("sgd", "adam", "adamw")), Int("layers", 1, 5)])
    configs = space.sample(num_configs, seed=seed)
    X = space.encode(configs)
    lr, batch, dropout, layers = X[:, 0], X[:, 1], X[:, 2], X[:, -1]
    optimizer = np.array([{"sgd": 0.04, "adam": 0.0, "adamw": -0.01}[c["optimizer"]] for c in configs])
    best_lr, best_dropout = rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.6)
    final = (0.08 + 0.6 * (lr - best_lr) ** 2 + 0.15 * (dropout - best_dropout) ** 2 + 0.05 * batch + optimizer
             + 0.02 * np.abs(layers - 0.5))
    alpha = 0.4 + 1.6 * lr * rng.uniform(0.6, 1.4, num_configs)
    tau = rng.uniform(0.5, 3.0, num_configs)
    epochs = np.arange(1, max_epochs + 1)

    def approach(elapsed: np.ndarray) -> np.ndarray:
        return final[:, None] + (0.9 - final[:, None]) * (1 + elapsed / tau[:, None]) ** (-2 * alpha[:, None])

    delayed = rng.random(num_configs) < 0.15
    start = rng.integers(3, 12, num_configs)
    curves = np.where(delayed[:, None], approach(np.clip(epochs[None, :] - start[:, None], 0, None)),
                      approach(epochs[None, :]))
    overfits = (dropout < 0.15) & (rng.random(num_configs) < 0.6)
    rise = rng.uniform(0.002, 0.01, num_configs)
    turn = rng.integers(8, 20, num_configs)
    curves += (overfits * rise)[:, None] * np.clip(epochs[None, :] - turn[:, None], 0, None)
    curves += rng.normal(0.0, 0.006, curves.shape)
    return space, configs, np.clip(curves, 0.0, 1.0)


# -- replays ------------------------------------------------------------------------------------------------
def run_random(curves: np.ndarray, order: np.ndarray, budget: int) -> list:
    """Losses in the order trained: each configuration fully, until the budget is spent."""
    return [float(v) for i in order for v in curves[i]][:budget]


def run_asha(curves: np.ndarray, order: np.ndarray) -> list:
    """tunekit ASHA (stopping rule) over the whole pool in ``order``, one trial at a time."""
    scheduler = ASHAScheduler(metric="loss", mode="min", max_t=curves.shape[1], grace_period=1, reduction_factor=3)
    losses = []
    for i in order:
        trial = Trial("__fake", stub=True, trial_id=f"t{i}")
        scheduler.on_trial_add(None, trial)
        for epoch, value in enumerate(curves[i], 1):
            losses.append(float(value))
            result = {"training_iteration": epoch, "loss": float(value)}
            if scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                break
        scheduler.on_trial_complete(None, trial, result)
    return losses


class _ReplayTrial:
    """What ASHA's promotion rule reads of a Ray trial: id, status, whether finished, checkpoint (any non-None)."""

    def __init__(self, trial_id: str, index: int):
        self.trial_id, self.index, self.status, self.checkpoint, self.epochs = trial_id, index, Trial.PENDING, "-", 0

    def is_finished(self) -> bool:
        return self.status in (Trial.TERMINATED, Trial.ERROR)


class _ReplayController:
    """The calls ASHA's ``choose_trial_to_run`` makes on Ray's controller, over replayed trials."""

    def __init__(self, scheduler: ASHAScheduler):
        self.scheduler, self.trials, self.search_alg, self.finished = scheduler, [], self, False

    def get_trials(self) -> list:
        return self.trials

    def get_live_trials(self) -> list:
        return [trial for trial in self.trials if trial.status not in (Trial.TERMINATED, Trial.ERROR)]

    def stop_trial(self, trial: _ReplayTrial) -> None:
        trial.status = Trial.TERMINATED
        self.scheduler.on_trial_complete(self, trial, {})

    def is_finished(self) -> bool:
        return self.finished


def run_asha_promotion(curves: np.ndarray, order: np.ndarray, budget: int) -> list:
    """tunekit ASHA with the promotion rule on one worker, new trials from the pool in ``order``, until
    ``budget`` epochs are spent; driven through ``choose_trial_to_run`` as Ray's controller does (Ray keeps one
    new trial pending while the searcher has more)."""
    scheduler = ASHAScheduler(metric="loss", mode="min", max_t=curves.shape[1], grace_period=1, reduction_factor=3,
                              rule="promotion")
    controller, queue, losses = _ReplayController(scheduler), list(order), []
    while len(losses) < budget:
        if queue and not any(trial.status == Trial.PENDING for trial in controller.trials):
            index = int(queue.pop(0))
            controller.trials.append(_ReplayTrial(f"t{index}", index))
            scheduler.on_trial_add(controller, controller.trials[-1])
        controller.finished = not queue
        trial = scheduler.choose_trial_to_run(controller)
        if trial is None:
            break
        trial.status = Trial.RUNNING
        while len(losses) < budget:
            trial.epochs += 1
            result = {"training_iteration": trial.epochs, "loss": float(curves[trial.index, trial.epochs - 1])}
            losses.append(result["loss"])
            action = scheduler.on_trial_result(controller, trial, result)
            if action == TrialScheduler.STOP:
                trial.status = Trial.TERMINATED
                scheduler.on_trial_complete(controller, trial, result)
            elif action == TrialScheduler.PAUSE:
                trial.status = Trial.PAUSED
            if action != TrialScheduler.CONTINUE:
                break
    return losses


def run_dyhpo(space: Space, configs: list, curves: np.ndarray, budget: int, seed: int) -> tuple:
    """DyHPO on one worker, driven through the calls Ray's controller makes; returns (losses, searcher)."""
    searcher = DyHPOSearch(space=space, metric="loss", mode="min", max_epochs=curves.shape[1], max_budget=budget,
                           num_configurations=len(configs), seed=seed)
    DyHPOScheduler(searcher).set_search_properties("loss", "min")
    pool_order = np.random.default_rng(seed).permutation(len(configs))
    searcher._dyhpo.pool = [configs[i] for i in pool_order]  # the tabulated configurations, in a seeded order
    searcher._pool_X = torch.as_tensor(space.encode(searcher._dyhpo.pool))
    losses, epochs, current, paused, number = [], {}, None, set(), 0
    while True:
        if current is None:
            config = searcher.suggest(f"t{number}")
            if isinstance(config, dict):
                current, number = f"t{number}", number + 1
            else:
                current = searcher.choose_paused(dict.fromkeys(paused))
                if current is None:
                    break
                paused.discard(current)
        epoch = epochs[current] = epochs.get(current, 0) + 1
        value = float(curves[pool_order[searcher._dyhpo.curves[current].pool_index], epoch - 1])
        losses.append(value)
        action = searcher.on_result(current, {"training_iteration": epoch, "loss": value})
        searcher.on_trial_result(current, {"training_iteration": epoch, "loss": value})
        if action == TrialScheduler.PAUSE:
            paused.add(current)
        if action == TrialScheduler.STOP:
            searcher.on_trial_complete(current, {"loss": value})
        if action != TrialScheduler.CONTINUE:
            current = None
    for trial_id in paused:
        searcher.on_trial_complete(trial_id)
    return losses, searcher


# -- summaries ----------------------------------------------------------------------------------------------
def best_after(losses: list, epochs: int) -> float:
    return min(losses[:epochs]) if losses[:epochs] else math.inf


def epochs_to_reach(losses: list, target: float) -> float:
    hits = [i + 1 for i, value in enumerate(losses) if value <= target + 1e-12]
    return hits[0] if hits else math.inf


def compare(space: Space, configs: list, curves: np.ndarray, seed: int) -> dict:
    order = np.random.default_rng(seed).permutation(len(configs))
    asha = run_asha(curves, order)
    budget, target = len(asha), min(asha)
    dyhpo, searcher = run_dyhpo(space, configs, curves, budget, seed)
    runs = {"DyHPO": dyhpo, "ASHA (stopping)": asha, "ASHA (promotion)": run_asha_promotion(curves, order, budget),
            "random, full training": run_random(curves, order, budget)}
    row = {"budget": budget, "oracle": float(curves.min()), "decisions": searcher._dyhpo.counts}
    for name, losses in runs.items():
        row[name] = {"quarter": best_after(losses, budget // 4), "half": best_after(losses, budget // 2),
                     "full": best_after(losses, budget), "to_asha": epochs_to_reach(losses, target),
                     "spent": len(losses)}
    return row


def table(title: str, rows: list) -> str:
    methods = ["DyHPO", "ASHA (stopping)", "ASHA (promotion)", "random, full training"]
    budget = np.mean([r["budget"] for r in rows])
    lines = [f"### {title}: {len(rows)} seeds, budget = ASHA's total epochs (mean {budget:.0f})", "",
             "| method | best loss at E/4 | at E/2 | at E | epochs to reach ASHA's final best (median; reached) |",
             "| --- | --- | --- | --- | --- |"]
    for method in methods:
        cells = [np.mean([r[method][k] for r in rows]) for k in ("quarter", "half", "full")]
        reach = [r[method]["to_asha"] / r["budget"] for r in rows]
        finite = [x for x in reach if math.isfinite(x)]
        median = f"{np.median(reach):.2f} E" if len(finite) > len(reach) / 2 else "> E"
        lines.append(f"| {method} | " + " | ".join(f"{c:.4f}" for c in cells) +
                     f" | {median}; {len(finite)}/{len(rows)} |")
    lines.append(f"\nBest loss in the pool (oracle), mean: {np.mean([r['oracle'] for r in rows]):.4f}. "
                 f"Per seed, DyHPO's epochs to ASHA's best / E: "
                 + ", ".join(f"{r['DyHPO']['to_asha'] / r['budget']:.2f}" for r in rows))
    return "\n".join(lines)


def overhead() -> str:
    """Per-decision time of DyHPOSearch (refits included) once it holds >= 500 observations."""
    space, configs, curves = synthetic_table(seed=999, num_configs=400)
    started = time.perf_counter()
    losses, searcher = run_dyhpo(space, configs, curves, budget=600, seed=0)
    wall = time.perf_counter() - started
    seconds = np.array(searcher._dyhpo.decision_seconds)
    late = seconds[-100:] * 1000
    return (f"Decision overhead: {len(seconds)} decisions over {len(losses)} epochs, {wall:.1f} s in all; last 100 "
            f"decisions (500+ observations): median {np.median(late):.1f} ms, mean {late.mean():.1f} ms, "
            f"p90 {np.percentile(late, 90):.1f} ms, max {late.max():.1f} ms "
            f"({platform.processor() or platform.machine()}, torch threads limited to 1)")


def sleepy_curve(config: dict, epoch: int, previous_epoch: int, checkpoint_path: str) -> dict:
    """A synthetic epoch that takes ``config["seconds"]`` of wall time (the worker is busy, not the CPU)."""
    import os

    started = time.time()
    time.sleep(config["seconds"])
    return {"epoch": epoch, "metric": (config["x"] - 0.7) ** 2 + math.exp(-(0.2 + config["x"]) * epoch),
            "epoch_started": started, "epoch_ended": time.time(), "worker_pid": os.getpid()}


def idle_breakdown(epochs: list, fit_started: float, fit_ended: float) -> dict:
    """Worker-seconds not spent in epochs, by cause, from (trial_id, epoch, started, ended, pid) rows.

    Per worker process (actors are reused): before its first epoch ("start"), between two epochs of one trial
    that continued ("continue"), between epochs of different trials ("switch to new" / "switch to resumed",
    the freed worker's pause, reset and restore), after its last epoch ("end").
    """
    idle = dict.fromkeys(["start", "continue", "switch to new", "switch to resumed", "end"], 0.0)
    by_pid = {}
    for row in sorted(epochs, key=lambda row: row[2]):
        by_pid.setdefault(row[4], []).append(row)
    for rows in by_pid.values():
        idle["start"] += rows[0][2] - fit_started
        idle["end"] += fit_ended - rows[-1][3]
        for before, after in zip(rows, rows[1:]):
            cause = "continue" if before[0] == after[0] else (
                "switch to new" if after[1] == 1 else "switch to resumed")
            idle[cause] += after[2] - before[3]
    return {"workers seen": len(by_pid), **{k: round(v, 1) for k, v in idle.items()}}


def fit_sleepy(callback, *, workers: int, search_alg=None, scheduler=None, num_samples: int = -1,
               param_space: Optional[dict] = None, max_epochs: Optional[int] = None) -> tuple:
    """A real tune.Tuner run of ``sleepy_curve`` epochs with ``workers`` concurrent trials and reused actors
    (``max_epochs``: Ray stops each trial there); returns its start and end times (``time.time()``)."""
    import tempfile

    from ray import tune

    from tunekit.trainables import epoch_trainable

    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            epoch_trainable(sleepy_curve), param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                        max_concurrent_trials=workers, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=storage, verbose=0, callbacks=[callback],
                                      stop=None if max_epochs is None else {"training_iteration": max_epochs}))
        started = time.time()
        tuner.fit()
        return started, time.time()


#: Epochs per trial at most in the utilization run (DyHPO's ``max_epochs``, ASHA's ``max_t``, FIFO's full training).
UTILIZATION_MAX_EPOCHS = 10
#: Trials ASHA (grace period 1, reduction factor 3) gets per epoch of budget in the utilization run: its trials
#: train about 3 epochs each there (456 and 493 epochs for 160 trials), close to DyHPO's 400.
ASHA_TRIALS_PER_EPOCH = 0.4


def utilization(epoch_seconds: float, workers: int = 4, budget: int = 80, peers: bool = False) -> str:
    """Share of worker time spent inside epochs in a real tune.Tuner run with ``workers`` concurrent trials:
    DyHPO, and with ``peers`` also tunekit ASHA (stopping rule, random search) and full training of every trial
    without a scheduler (FIFO, Ray's own overhead only) in the same Ray session, one after the other."""
    import os

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    import ray
    from ray import tune

    class Epochs(tune.Callback):
        def __init__(self):
            self.rows = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.rows.append((trial.trial_id, result["epoch"], result["epoch_started"], result["epoch_ended"],
                              result["worker_pid"]))

    def line(name: str, epochs: Epochs, started: float, ended: float, extra: str = "") -> str:
        wall, busy = ended - started, len(epochs.rows) * epoch_seconds
        first, last = min(row[2] for row in epochs.rows), max(row[3] for row in epochs.rows)
        in_epochs = sum(row[3] - row[2] for row in epochs.rows)
        return (f"{name}: {workers} workers, {len(epochs.rows)} epochs of {epoch_seconds:.1f} s in {wall:.1f} s "
                f"wall: workers busy {100 * busy / (workers * wall):.0f} % of the time, "
                f"{100 * in_epochs / (workers * (last - first)):.0f} % from the first epoch's start to the last's "
                f"end (ideal wall {busy / workers:.1f} s{extra}; load average {os.getloadavg()[0]:.1f})\n"
                f"  idle worker-seconds by cause: {idle_breakdown(epochs.rows, started, ended)}")

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    param_space = {"x": tune.uniform(0.0, 1.0), "seconds": epoch_seconds}
    searcher = DyHPOSearch(space=Space.from_tune(param_space), metric="metric", mode="min",
                           max_epochs=UTILIZATION_MAX_EPOCHS, max_budget=budget, seed=0)
    epochs = Epochs()
    started, ended = fit_sleepy(epochs, workers=workers, search_alg=searcher, scheduler=DyHPOScheduler(searcher))
    decisions = np.array(searcher._dyhpo.decision_seconds) * 1000
    lines = [line("DyHPO", epochs, started, ended,
                  f"; decisions {searcher._dyhpo.counts}; decision time {decisions.sum() / 1000:.1f} s in all, "
                  f"mean {decisions.mean():.0f} ms, max {decisions.max():.0f} ms")]
    if peers:
        np.random.seed(0)
        asha = ASHAScheduler(metric="metric", mode="min", max_t=UTILIZATION_MAX_EPOCHS, grace_period=1,
                             reduction_factor=3)
        epochs = Epochs()
        started, ended = fit_sleepy(epochs, workers=workers, scheduler=asha, param_space=param_space,
                                    num_samples=round(budget * ASHA_TRIALS_PER_EPOCH))
        lines.append(line("ASHA (stopping rule, random search)", epochs, started, ended))
        epochs = Epochs()
        started, ended = fit_sleepy(epochs, workers=workers, param_space=param_space,
                                    num_samples=budget // UTILIZATION_MAX_EPOCHS, max_epochs=UTILIZATION_MAX_EPOCHS)
        lines.append(line(f"FIFO (every trial trained {UTILIZATION_MAX_EPOCHS} epochs, no scheduler)", epochs,
                          started, ended))
    ray.shutdown()
    return "\n".join(lines)


def export_problems(path: Path, seeds: range, mlp_seeds: range, mlp_configs: int, skip_mlp: bool) -> None:
    """Write every (problem, seed) replayed here, with ASHA's losses in training order, as JSON for peers."""
    problems = []
    mlp = None if skip_mlp else mlp_table(mlp_configs)
    tables = [] if mlp is None else [("mlp", seed, *mlp) for seed in mlp_seeds]
    tables += [("synthetic", seed, *synthetic_table(seed)) for seed in seeds]
    for name, seed, space, configs, curves in tables:
        order = np.random.default_rng(seed).permutation(len(configs))
        problems.append({"problem": name, "seed": seed, "space": space.to_dict(), "configs": configs,
                         "curves": curves.tolist(), "asha_losses": run_asha(curves, order)})
    path.write_text(json.dumps({"problems": problems}))
    print(f"wrote {len(problems)} problems to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8, help="synthetic families (0: skip them)")
    parser.add_argument("--crossing-seeds", type=int, default=8, help="crossing families (0: skip them)")
    parser.add_argument("--powerlaw-seeds", type=int, default=0, help="power-law families (held out too; 0: skip them)")
    parser.add_argument("--mlp-seeds", type=int, default=4, help="orders of the MLP pool")
    parser.add_argument("--mlp-configs", type=int, default=48, help="MLP configurations tabulated")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run are first-seed, first-seed + 1, ...")
    parser.add_argument("--skip-mlp", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--utilization", type=float, default=None, metavar="EPOCH_SECONDS",
                        help="only the 4-worker Ray utilization run, with epochs of this many seconds")
    parser.add_argument("--utilization-budget", type=int, default=80, metavar="EPOCHS",
                        help="total epochs of the utilization run")
    parser.add_argument("--utilization-peers", action="store_true",
                        help="also run tunekit ASHA and FIFO (no scheduler) on the same trainable and workers")
    parser.add_argument("--export-problems", type=Path, default=None, metavar="PATH",
                        help="only write the curve tables and ASHA's runs as JSON (for benchmarks/hpo4dl_peer.py)")
    args = parser.parse_args()
    started = time.perf_counter()

    def seeds(count: int) -> range:
        return range(args.first_seed, args.first_seed + count)

    if args.export_problems is not None:
        export_problems(args.export_problems, seeds(args.seeds), seeds(args.mlp_seeds), args.mlp_configs, args.skip_mlp)
        return
    if args.utilization is not None:
        print(utilization(args.utilization, budget=args.utilization_budget, peers=args.utilization_peers))
        return
    if not args.skip_mlp:
        space, configs, curves = mlp_table(args.mlp_configs)
        rows = [compare(space, configs, curves, seed) for seed in seeds(args.mlp_seeds)]
        print(table(f"Quickstart MLP (validation error, {len(configs)} configurations x {curves.shape[1]} epochs)",
                    rows), "\n", flush=True)
    if args.seeds:
        rows = [compare(*synthetic_table(seed), seed) for seed in seeds(args.seeds)]
        print(table("Synthetic learning curves (150 configurations x 20 epochs)", rows), "\n", flush=True)
    if args.crossing_seeds:
        rows = [compare(*crossing_table(seed), seed) for seed in seeds(args.crossing_seeds)]
        print(table("Crossing learning curves (held out; 150 configurations x 20 epochs)", rows), "\n", flush=True)
    if args.powerlaw_seeds:
        rows = [compare(*powerlaw_table(seed), seed) for seed in seeds(args.powerlaw_seeds)]
        print(table("Power-law learning curves (held out; 200 configurations x 30 epochs)", rows), "\n", flush=True)
    if not args.skip_overhead:
        print(overhead())
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
