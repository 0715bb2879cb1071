"""Quickstart: tune a PyTorch MLP on scikit-learn's bundled digits data set with tunekit on local Ray.

Five mixed hyperparameters (log-scale learning rate, int hidden width, categorical activation, float dropout,
int batch size) searched by tunekit's GP-EI searcher, with tunekit's ASHA stopping poor trials early, several
trials in parallel, and every trial visible in TensorBoard (scalars and the HParams table).

    python examples/quickstart.py [--num-samples 24] [--max-concurrent 2] [--gpus-per-trial 0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from ray import tune
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from tunekit import Space, TensorBoardCallback
from tunekit.resources import trial_device, trial_resources
from tunekit.schedulers import ASHAScheduler
from tunekit.searchers import GPEISearch

MAX_EPOCHS = 20
ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU}

PARAM_SPACE = {
    "lr": tune.loguniform(1e-4, 3e-1),
    "hidden": tune.randint(16, 257),
    "activation": tune.choice(sorted(ACTIVATIONS)),
    "dropout": tune.uniform(0.0, 0.6),
    "batch_size": tune.lograndint(16, 257),
}


def load_data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Digits (1,797 8x8 images, 10 classes), scaled to [0, 1], split 75/25 into train and validation."""
    digits = load_digits()
    features = digits.data.astype(np.float32) / 16.0
    x_train, x_val, y_train, y_val = train_test_split(
        features, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)
    return (torch.from_numpy(x_train), torch.from_numpy(y_train).long(),
            torch.from_numpy(x_val), torch.from_numpy(y_val).long())


def build_model(config: dict) -> torch.nn.Module:
    """A two-hidden-layer MLP shaped by the trial's configuration."""
    activation = ACTIVATIONS[config["activation"]]
    hidden = int(config["hidden"])
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden), activation(), torch.nn.Dropout(config["dropout"]),
        torch.nn.Linear(hidden, hidden), activation(), torch.nn.Dropout(config["dropout"]),
        torch.nn.Linear(hidden, 10),
    )


def train_mlp(config: dict) -> None:
    """Ray Tune function trainable: one report per epoch, with a checkpoint so paused trials resume."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    device = trial_device()
    x_train, y_train, x_val, y_val = (t.to(device) for t in load_data())
    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    start_epoch = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / "state.pt", map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"]
    generator = torch.Generator().manual_seed(start_epoch)
    batch_size = int(config["batch_size"])
    for epoch in range(start_epoch + 1, MAX_EPOCHS + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = torch.nn.functional.cross_entropy(logits, y_val).item()
            val_accuracy = (logits.argmax(dim=1) == y_val).float().mean().item()
        with tempfile.TemporaryDirectory() as directory:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                       Path(directory) / "state.pt")
            tune.report({"val_accuracy": val_accuracy, "val_loss": val_loss, "epoch": epoch},
                        checkpoint=tune.Checkpoint.from_directory(directory))


def build_tuner(num_samples: int, max_concurrent: int, gpus_per_trial: float, storage_path: str,
                seed: int = 0) -> tune.Tuner:
    """The quickstart experiment as a tune.Tuner (also used by the tests with a smaller budget)."""
    space = Space.from_tune(PARAM_SPACE)
    trainable = tune.with_resources(train_mlp, trial_resources(cpu=1, gpu=gpus_per_trial))
    scheduler = ASHAScheduler(max_t=MAX_EPOCHS, grace_period=2, reduction_factor=3)
    return tune.Tuner(
        trainable,
        param_space=PARAM_SPACE,
        tune_config=tune.TuneConfig(
            metric="val_accuracy", mode="max", num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
            search_alg=GPEISearch(random_starts=8, seed=seed),
            scheduler=scheduler,
            reuse_actors=True,  # a finished trial's worker process runs the next one: no process start per trial
        ),
        run_config=tune.RunConfig(
            name="quickstart", storage_path=storage_path, verbose=1,
            callbacks=[TensorBoardCallback(space=space, scheduler=scheduler)],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-samples", type=int, default=24, help="number of trials")
    parser.add_argument("--max-concurrent", type=int, default=2, help="trials running at once")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial (0.5 shares one GPU)")
    parser.add_argument("--storage-path", default=os.path.abspath("tunekit_runs"), help="where results go")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tuner = build_tuner(args.num_samples, args.max_concurrent, args.gpus_per_trial, args.storage_path, args.seed)
    results = tuner.fit()
    best = results.get_best_result(metric="val_accuracy", mode="max", scope="all")
    best_accuracy = best.metrics_dataframe["val_accuracy"].max()
    print("\nBest configuration:")
    for name, value in best.config.items():
        print(f"  {name} = {value}")
    print(f"Best validation accuracy: {best_accuracy:.4f}")
    print(f"Trials: {len(results)}, errors: {len(results.errors)}")
    print(f"\nLook at the run with:\n  tensorboard --logdir {results.experiment_path}")


if __name__ == "__main__":
    main()
