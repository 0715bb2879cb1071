"""The quickstart MLP (examples/quickstart.py) tuned by DyHPO on 2 workers: paused trials resume from checkpoints.

DyHPO decides after every epoch which configuration deserves the next one: the trial that just reported
(it continues), a paused one (it is resumed from its checkpoint) or a new one from the pool.

    python examples/dyhpo_mlp.py [--max-budget 200] [--max-concurrent 2] [--gpus-per-trial 0]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import ray.cloudpickle
from ray import tune

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quickstart  # noqa: E402
from quickstart import MAX_EPOCHS, PARAM_SPACE, train_mlp  # noqa: E402

from tunekit.schedulers import DyHPOScheduler  # noqa: E402
from tunekit.searchers import DyHPOSearch  # noqa: E402

ray.cloudpickle.register_pickle_by_value(quickstart)  # Ray's workers cannot import the examples folder


def build_tuner(max_budget: int, max_concurrent: int, gpus_per_trial: float, storage_path: str,
                seed: int = 0) -> tune.Tuner:
    searcher = DyHPOSearch(metric="val_accuracy", mode="max", max_epochs=MAX_EPOCHS, max_budget=max_budget,
                           num_configurations=500, seed=seed)
    return tune.Tuner(
        tune.with_resources(train_mlp, {"cpu": 1, "gpu": gpus_per_trial}),
        param_space=PARAM_SPACE,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=DyHPOScheduler(searcher), num_samples=-1,
                                    max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name="dyhpo_mlp", storage_path=storage_path, verbose=1,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-budget", type=int, default=200, help="total epochs across all trials")
    parser.add_argument("--max-concurrent", type=int, default=2, help="trials training at once (workers)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial (0.5 shares one GPU)")
    parser.add_argument("--storage-path", default=os.path.abspath("tunekit_runs"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    results = build_tuner(args.max_budget, args.max_concurrent, args.gpus_per_trial, args.storage_path,
                          args.seed).fit()
    best = results.get_best_result(metric="val_accuracy", mode="max", scope="all")
    print("\nBest configuration:")
    for name, value in best.config.items():
        print(f"  {name} = {value}")
    print(f"Best validation accuracy: {best.metrics_dataframe['val_accuracy'].max():.4f}")
    print(f"Trials: {len(results)}, errors: {len(results.errors)}")


if __name__ == "__main__":
    main()
