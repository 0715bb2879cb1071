"""tunekit's ASHA and median stopping against Ray's built-in schedulers.

Three measurements, printed as Markdown tables (the published copy is benchmarks/results/schedulers.md):

1. Decision cost: microseconds per ``on_trial_result`` on one recorded, interleaved trace of random learning
   curves, fed to each scheduler without Ray running (trials stop reporting once stopped).
2. Whole-run wall time: ``tune.Tuner`` with 200 trivial trials (a few microseconds of work per report)
   under each scheduler, tunekit's and Ray's alternating in the same process.
3. Promotion vs stopping ASHA on a quickstart-like MLP (digits): the same configurations under both rules;
   best validation accuracy reached, total epochs trained, and the best accuracy each rule had reached after
   the number of epochs the thriftier rule needed in all (epochs counted in the order results arrived).

    python benchmarks/schedulers.py [--trials 200] [--mlp-trials 16] [--repeats 2] [--skip-mlp]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.experiment import Trial  # noqa: E402
from ray.tune.schedulers import AsyncHyperBandScheduler, MedianStoppingRule, TrialScheduler  # noqa: E402

from tunekit.schedulers import ASHAScheduler, MedianStoppingScheduler  # noqa: E402

MAX_T = 20


def schedulers(kind: str, max_t: int = MAX_T) -> dict:
    """Ray's built-in and tunekit's scheduler of one kind, with matching arguments."""
    if kind == "asha":
        args = dict(metric="score", mode="max", max_t=max_t, grace_period=1, reduction_factor=3)
        return {"Ray ASHAScheduler": AsyncHyperBandScheduler(**args), "tunekit ASHAScheduler": ASHAScheduler(**args)}
    args = dict(metric="score", mode="max", grace_period=2, min_samples_required=3)
    return {"Ray MedianStoppingRule": MedianStoppingRule(time_attr="training_iteration", min_time_slice=float("inf"),
                                                         **args),
            "tunekit MedianStoppingScheduler": MedianStoppingScheduler(**args)}


def random_trace(n_trials: int, length: int, seed: int = 0) -> list:
    """Interleaved ``(trial index, iteration, score)`` of noisy rising curves, each trial in order."""
    rng = np.random.default_rng(seed)
    owners = np.repeat(np.arange(n_trials), length)
    rng.shuffle(owners)
    level = rng.normal(size=n_trials)
    step = [0] * n_trials
    events = []
    for owner in owners.tolist():
        step[owner] += 1
        events.append((owner, step[owner], float(level[owner] + 0.1 * step[owner] + 0.3 * rng.normal())))
    return events


def decision_cost(scheduler, events: list, n_trials: int) -> tuple[float, int]:
    """Mean microseconds per on_trial_result call, and the number of calls (stopped trials stop reporting)."""
    trials = [Trial("__fake", stub=True, trial_id=f"t{i:04d}") for i in range(n_trials)]
    np.random.seed(0)
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    stopped, calls, spent = set(), 0, 0.0
    for owner, step, score in events:
        if owner in stopped:
            continue
        result = {"training_iteration": step, "score": score}
        start = time.perf_counter()
        action = scheduler.on_trial_result(None, trials[owner], result)
        spent += time.perf_counter() - start
        calls += 1
        if action == TrialScheduler.STOP:
            stopped.add(owner)
            scheduler.on_trial_complete(None, trials[owner], result)
    return 1e6 * spent / calls, calls


def trivial_trainable(config: dict) -> None:
    """A learning curve worth a few microseconds per report: a level plus slow improvement."""
    for step in range(1, MAX_T + 1):
        tune.report({"score": config["level"] + 0.05 * step})


def run_tuner(trainable, scheduler, param_space: dict, num_samples: int, storage: str, callbacks=()) -> float:
    """Wall seconds of one Tuner.fit (the scheduler carries the metric and mode)."""
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=num_samples, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=storage, verbose=0, callbacks=list(callbacks)),
    )
    start = time.perf_counter()
    results = tuner.fit()
    seconds = time.perf_counter() - start
    assert not results.errors, results.errors
    return seconds


def whole_run(n_trials: int, repeats: int, storage: str) -> list:
    """Rows (kind, scheduler, median seconds over repeats, all seconds), Ray and tunekit alternating,
    after one untimed warm-up run (worker start-up, imports)."""
    rows = []
    space = {"level": tune.uniform(0, 1)}
    run_tuner(trivial_trainable, schedulers("asha")["tunekit ASHAScheduler"], space, 8, storage)
    for kind in ("asha", "median"):
        times: dict = {}
        for _ in range(repeats):
            for name, scheduler in schedulers(kind).items():
                np.random.seed(0)
                times.setdefault(name, []).append(run_tuner(trivial_trainable, scheduler, space, n_trials, storage))
        rows += [(kind, name, float(np.median(seconds)), seconds) for name, seconds in times.items()]
    return rows


def mlp_trainable(config: dict) -> None:
    """The quickstart's two-hidden-layer MLP on digits, one report and checkpoint per epoch, resumable.

    ``config["mlp"]`` holds lr, hidden, dropout and batch_size.
    """
    import torch
    from sklearn.datasets import load_digits

    config = config["mlp"]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    x = torch.from_numpy(digits.data[order].astype(np.float32) / 16.0)
    y = torch.from_numpy(digits.target[order]).long()
    x_train, y_train, x_val, y_val = x[:1347], y[:1347], x[1347:], y[1347:]
    hidden = int(config["hidden"])
    model = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Dropout(config["dropout"]),
                                torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    epoch = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / "state.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch = state["epoch"]
    while epoch < MAX_T:
        epoch += 1
        model.train()
        for batch in torch.randperm(len(x_train), generator=torch.Generator().manual_seed(epoch)).split(
                int(config["batch_size"])):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(dim=1) == y_val).float().mean().item()
        with tempfile.TemporaryDirectory() as directory:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                       Path(directory) / "state.pt")
            tune.report({"val_accuracy": accuracy}, checkpoint=tune.Checkpoint.from_directory(directory))


class EpochLog(tune.Callback):
    """Every reported accuracy in arrival order: the anytime curve (total epochs trained, best so far)."""

    def __init__(self):
        self.accuracies: list = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.accuracies.append(result["val_accuracy"])


def promotion_vs_stopping(n_trials: int, seed: int, storage: str) -> list:
    """Rows (rule, total epochs, best accuracy, best within the smaller of both rules' epochs, seconds, seed)."""
    rng = np.random.default_rng(seed)
    configs = [{"lr": float(10 ** rng.uniform(-4, -0.5)), "hidden": int(rng.integers(16, 257)),
                "dropout": float(rng.uniform(0, 0.6)), "batch_size": int(2 ** rng.integers(4, 9))}
               for _ in range(n_trials)]
    space = {"mlp": tune.grid_search(configs)}
    curves = {}
    for rule in ("stopping", "promotion"):
        log = EpochLog()
        scheduler = ASHAScheduler(metric="val_accuracy", mode="max", max_t=MAX_T, grace_period=1,
                                  reduction_factor=3, rule=rule)
        seconds = run_tuner(mlp_trainable, scheduler, space, 1, storage, callbacks=[log])
        curves[rule] = (np.maximum.accumulate(log.accuracies), seconds)
    budget = min(len(best) for best, _ in curves.values())
    return [(rule, len(best), float(best[-1]), float(best[min(budget, len(best)) - 1]), seconds, seed)
            for rule, (best, seconds) in curves.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mlp-trials", type=int, default=16)
    parser.add_argument("--mlp-seeds", type=int, default=2)
    parser.add_argument("--skip-mlp", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, Ray {ray.__version__}\n")

    print("| scheduler | trace | results fed | us per result |\n| --- | --- | --- | --- |")
    for kind, n_trials, length in (("asha", 200, 100), ("median", 200, 100), ("median", 60, 30)):
        events = random_trace(n_trials, length)
        for name, scheduler in schedulers(kind, max_t=length).items():
            if name.startswith("Ray Median") and n_trials * length > 5000:
                continue  # Ray's rule rescans every result per decision: minutes on the long trace
            cost, calls = decision_cost(scheduler, events, n_trials)
            print(f"| {name} | {n_trials} trials x {length} | {calls} | {cost:.1f} |")

    # No result files are written (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS), so ResultGrid would warn per trial.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    with tempfile.TemporaryDirectory() as storage:
        rows = whole_run(args.trials, args.repeats, storage)
        print(f"\n| kind | scheduler | wall s ({args.trials} trivial trials, median of {args.repeats}) | all runs | "
              "ratio to Ray |\n| --- | --- | --- | --- | --- |")
        ray_seconds = {kind: s for kind, name, s, _ in rows if name.startswith("Ray")}
        for kind, name, seconds, all_runs in rows:
            runs = ", ".join(f"{s:.1f}" for s in all_runs)
            print(f"| {kind} | {name} | {seconds:.1f} | {runs} | {seconds / ray_seconds[kind]:.2f} |")
        if args.skip_mlp:
            return
        print("\n| rule | seed | total epochs | best val acc | best val acc at equal epochs (the smaller total) | "
              "wall s |\n| --- | --- | --- | --- | --- | --- |")
        for seed in range(args.mlp_seeds):
            for rule, epochs, best, best_at_budget, seconds, seed_ in promotion_vs_stopping(args.mlp_trials, seed,
                                                                                             storage):
                print(f"| {rule} | {seed_} | {epochs} | {best:.4f} | {best_at_budget:.4f} | {seconds:.1f} |")
    ray.shutdown()


if __name__ == "__main__":
    main()
