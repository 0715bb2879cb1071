"""hypered's example job, tuned by GPEISearch inside Ray Tune.

hypered (https://pypi.org/project/hypered/) runs ``example.py`` on a params JSON and minimises the ``loss`` it
writes, with ``example.conf``::

    optimize(name="learning_params", objective=minimize("loss"), random_starts=10, iterations=30,
             params={"option": categorical(["first", "second"]), "x": real(-10, 10)})

Here the same objective is a function trainable and hypered's options map onto tunekit/Ray names:
iterations -> ``num_samples``, random_starts, kernel, kernel_scale, acquisition_fn -> ``acquisition``,
optimizer_restarts and seed keep their meaning. The flags default to tunekit's defaults (Matern-5/2, learned
kernel scale, log-EI); hypered's own defaults are ``--kernel RBF --kernel_scale 1.0 --acquisition_fn EI``.
The optimum is option "second", x = 3, loss -2.

    python examples/hypered_example.py [--kernel RBF --kernel_scale 1.0 --acquisition_fn EI] [--seed 1]
"""

import argparse
import tempfile

import numpy as np
from ray import tune

from tunekit.searchers import GPEISearch


def eval_objective(params: dict) -> dict:
    """hypered's example.py objective, unchanged."""
    if params["option"] == "first":
        loss = np.square(params["x"] - 5)
    else:
        loss = np.abs(params["x"] - 3) - 2
    return {"loss": float(loss)}


def trainable(config: dict) -> None:
    tune.report(eval_objective(config))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--random_starts", type=int, default=10)
    parser.add_argument("--kernel", default="matern52", help="RBF, Matern52 or Matern32 (case-insensitive)")
    parser.add_argument("--kernel_scale", type=float, default=None, help="fixed kernel scale; learned when left out")
    parser.add_argument("--acquisition_fn", default="logei", help="LogEI, EI, UCB or PI (case-insensitive)")
    parser.add_argument("--optimizer_restarts", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    searcher = GPEISearch(random_starts=args.random_starts, kernel=args.kernel.lower(),
                          kernel_scale=args.kernel_scale, acquisition=args.acquisition_fn.lower(),
                          optimizer_restarts=args.optimizer_restarts, seed=args.seed)
    tuner = tune.Tuner(
        trainable,
        param_space={"option": tune.choice(["first", "second"]), "x": tune.uniform(-10, 10)},
        tune_config=tune.TuneConfig(metric="loss", mode="min", search_alg=searcher, num_samples=args.iterations,
                                    max_concurrent_trials=1),
        run_config=tune.RunConfig(name="learning_params", storage_path=tempfile.mkdtemp(), verbose=0),
    )
    best = tuner.fit().get_best_result()
    print(f"best: option={best.config['option']!r} x={best.config['x']:.4f} loss={best.metrics['loss']:.4f}")


if __name__ == "__main__":
    main()
