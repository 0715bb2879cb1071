"""A tiny, unmodified hpman + hpargparse training script (the seed's example), run by the tests in trials.

It declares its hyperparameters inline, binds them to command-line options with hpargparse and leaves its
outcome in the global ``outcome``; it knows nothing about Ray or tunekit.
"""

import argparse
import os

import hpargparse
from hpman.m import _


def fake_training(learning_rate: float, batch_size: int, architecture: str) -> float:
    # optimal for learning_rate=0.2, batch_size=4, architecture="conv"
    return (learning_rate - 0.2) ** 2 + (batch_size - 4) ** 2 + (0 if architecture == "conv" else 10)


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=1)
    _.parse_file(__file__)
    hpargparse.bind(parser, _)
    args = parser.parse_args()
    learning_rate = _("learning_rate", 1e-3, range=[1e-3, 1.0], scale="log")
    batch_size = _("batch_size", 1, range=[1, 12])
    architecture = _("architecture", "conv", choices=["conv", "fc"])
    return {
        "loss": args.repeats * fake_training(learning_rate, batch_size, architecture),
        "cli_learning_rate": args.learning_rate,
        "cli_batch_size": args.batch_size,
        "cli_architecture": args.architecture,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "architecture": architecture,
        "pid": os.getpid(),
    }


if __name__ == "__main__":
    outcome = main()
