"""Shared by the scheduler tests: random interleaved result traces, a lockstep replay that plays Ray's
controller for several schedulers at once, and a tiny PyTorch MLP on scikit-learn's digits as a Ray Tune
function trainable that checkpoints every epoch (a learning rate near zero stays near chance; a good one
passes 80 % validation accuracy within a few epochs).
"""


import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler


def load_digits_split() -> tuple:
    """Digits scaled to [0, 1]: (x_train (1347, 64), y_train (1347,), x_val (450, 64), y_val (450,))."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    x = torch.from_numpy(digits.data[order].astype(np.float32) / 16.0)
    y = torch.from_numpy(digits.target[order]).long()
    return x[:1347], y[:1347], x[1347:], y[1347:]


def train_digits(config: dict) -> None:
    """One report per epoch (``epoch``, ``val_accuracy``), resuming from ``tune.get_checkpoint()`` if any.

    ``config["checkpoint"]`` False makes a trainable that never checkpoints (to test the promotion error).
    """
    torch.set_num_threads(1)
    torch.manual_seed(config.get("seed", 0))
    x_train, y_train, x_val, y_val = load_digits_split()
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    epoch = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / "state.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch = state["epoch"]
    while epoch < config.get("epochs", 100):
        epoch += 1
        for batch in torch.randperm(len(x_train)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(dim=1) == y_val).float().mean().item()
        metrics = {"val_accuracy": accuracy, "epoch": epoch}
        if not config.get("checkpoint", True):
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as directory:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                       Path(directory) / "state.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def make_trace(seed, n_trials=40, max_len=40, sparse=False, ties=False):
    """Interleaved results ``(trial index, time, value, is_last)`` of random learning curves."""
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(n_trials):
        length = int(rng.integers(1, max_len + 1))
        steps = rng.integers(1, 4, length) if sparse else np.ones(length, dtype=int)
        level = rng.normal()
        values = level + np.cumsum(rng.normal(0.1, 0.3, length))
        if ties:
            values = np.round(values * 2) / 4
        curves.append(list(zip(np.cumsum(steps).tolist(), values.tolist())))
    owners = np.repeat(np.arange(n_trials), [len(c) for c in curves])
    rng.shuffle(owners)
    position = [0] * n_trials
    events = []
    for owner in owners.tolist():
        time, value = curves[owner][position[owner]]
        position[owner] += 1
        events.append((owner, time, value, position[owner] == len(curves[owner])))
    return events


def replay(schedulers, events, seed=0, ended=None, add=True):
    """Feed the same events to each scheduler in lockstep as Ray's controller would; return the decisions
    (one per event, None for events of trials that had already ended).

    Trials are added (``add``) with numpy's global generator reseeded per scheduler (bracket assignment); a
    trial stopped by the schedulers gets ``on_trial_complete`` with its last result and reports nothing more.
    ``ended`` (updated in place) carries the finished trials over from an earlier part of the same trace.
    """
    n_trials = max(e[0] for e in events) + 1
    trials = [Trial("__fake", stub=True, trial_id=f"t{i:03d}") for i in range(n_trials)]
    for scheduler in schedulers if add else []:
        np.random.seed(seed)
        for trial in trials:
            scheduler.on_trial_add(None, trial)
    decisions, ended = [], set() if ended is None else ended
    for owner, time, value, is_last in events:
        if owner in ended:
            decisions.append(None)
            continue
        result = {"training_iteration": time, "score": value}
        actions = [s.on_trial_result(None, trials[owner], result) for s in schedulers]
        assert len(set(actions)) == 1, (owner, time, value, actions, len(decisions))
        decisions.append(actions[0])
        if actions[0] == TrialScheduler.STOP or is_last:
            ended.add(owner)
            for scheduler in schedulers:
                scheduler.on_trial_complete(None, trials[owner], result)
    return decisions


GOOD_LRS, BAD_LRS = [0.1, 0.05, 0.03, 0.02], [1e-5, 2e-5, 3e-5, 5e-5]


def fit(scheduler, tmp_path, lrs, epochs, concurrent, checkpoint=True):
    """Run the digits MLP over ``lrs`` under ``scheduler``; return each lr's reported (epoch, iteration, acc)."""
    from ray import cloudpickle

    class History(tune.Callback):
        def __init__(self):
            self.rows = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            row = (result["epoch"], result["training_iteration"], result["val_accuracy"])
            self.rows.setdefault(trial.config["lr"], []).append(row)

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module
    history = History()
    tuner = tune.Tuner(
        train_digits,
        param_space={"lr": tune.grid_search(lrs), "epochs": epochs, "checkpoint": checkpoint},
        tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", scheduler=scheduler,
                                    max_concurrent_trials=concurrent, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0, callbacks=[history]),
    )
    results = tuner.fit()
    assert not results.errors, results.errors
    return history.rows
