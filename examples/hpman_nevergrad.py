"""The hpnevergrad seed's example on current hpman and nevergrad, run as Ray Tune trials.

Hyperparameters are declared inline with hpman's ``_()`` and hints; ``hpng(_)`` turns the declarations into
the nevergrad parametrization the seed documents; NevergradSearch runs nevergrad's OnePlusOne through
ask/tell with several trials in parallel; each trial runs the unmodified hpman-declared ``train`` with its
values injected by hpman's ``set_values`` in the trial's own process. The optimum is learning_rate=0.2,
batch_size=4, architecture="conv".

    python examples/hpman_nevergrad.py [--budget 100] [--max-concurrent 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile

from hpman.m import _
from ray import tune

from tunekit.hpman import hpng
from tunekit.searchers import NevergradSearch
from tunekit.trainables import hpman_trainable


def fake_training(learning_rate: float, batch_size: int, architecture: str) -> float:
    # optimal for learning_rate=0.2, batch_size=4, architecture="conv"
    return (learning_rate - 0.2) ** 2 + (batch_size - 4) ** 2 + (0 if architecture == "conv" else 10)


def train() -> float:
    """Training code as hpman users write it: hyperparameters declared where they are used."""
    learning_rate = _("learning_rate", 1e-3, range=[1e-3, 1.0], scale="log")
    batch_size = _("batch_size", 1, range=[1, 12])
    architecture = _("architecture", "conv", choices=["conv", "fc"])
    return fake_training(learning_rate, batch_size, architecture)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    _.parse_file(__file__)
    parametrization = hpng(_)
    print("parametrization:", parametrization)
    searcher = NevergradSearch("OnePlusOne", space=parametrization, metric="loss", mode="min",
                               budget=args.budget, seed=args.seed)
    tuner = tune.Tuner(
        hpman_trainable(train),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=args.budget,
                                    max_concurrent_trials=args.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="hpman_nevergrad_"), verbose=0))
    results = tuner.fit()
    best = results.get_best_result(metric="loss", mode="min")
    print("best trial:", best.config, "loss:", round(best.metrics["loss"], 6))
    print("nevergrad's recommendation:", searcher.optimizer.provide_recommendation().kwargs)


if __name__ == "__main__":
    main()
