"""DeepHyper's polynome2 benchmark, tuned by GPEISearch inside Ray Tune, from DeepHyper's starting point.

DeepHyper's ``deephyper/benchmark/hps/polynome2`` problem: ten real parameters e0..e9 in [-10, 10], the
starting point e_i = 10 for all i, and ``run`` returns -sum(e_i^2) to be maximised (optimum 0 at the
origin). The space comes from DeepHyper's own form (``(low, high)`` tuples plus a starting point), and the
starting point is the first configuration tried.

    python examples/deephyper_polynome2.py [--max_evals 40] [--seed 0]
"""

import argparse
import tempfile

from ray import tune

from tunekit import Space
from tunekit.searchers import GPEISearch

NUM_DIM = 10


def run(config: dict) -> None:
    """polynome2's objective: -sum of squares, to maximise."""
    tune.report({"objective": -sum(config[f"e{i}"] ** 2 for i in range(NUM_DIM))})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max_evals", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    space = Space.from_dict({f"e{i}": (-10.0, 10.0) for i in range(NUM_DIM)},
                            starting_point={f"e{i}": 10.0 for i in range(NUM_DIM)})
    # The space lives in the searcher (no param_space), so Ray hands it no metric/mode: pass them here.
    searcher = GPEISearch(space, metric="objective", mode="max", random_starts=10, seed=args.seed)
    tuner = tune.Tuner(
        run,
        tune_config=tune.TuneConfig(num_samples=args.max_evals, search_alg=searcher, max_concurrent_trials=2),
        run_config=tune.RunConfig(name="polynome2", storage_path=tempfile.mkdtemp(), verbose=0),
    )
    results = tuner.fit()
    best = results.get_best_result(metric="objective", mode="max")
    print(f"starting point objective: {-NUM_DIM * 100.0:.1f}; best objective after {len(results)} "
          f"evaluations: {best.metrics['objective']:.3f}")
    print("best point:", {k: round(v, 3) for k, v in best.config.items()})


if __name__ == "__main__":
    main()
