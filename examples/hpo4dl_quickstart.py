"""HPO4DL's getting-started example, unchanged objective and ConfigSpace space, run by tunekit's DyHPO on Ray Tune.

HPO4DL's ``Tuner(objective_function, configuration_space, minimize=True, max_budget, optimizer='dyhpo', seed,
max_epochs, num_configurations, output_path)`` becomes a ``DyHPOSearch`` + ``DyHPOScheduler`` pair and
``epoch_trainable(objective_function)``; the results CSV and the best trial's checkpoint land in the output
folder as HPO4DL writes them. The metric needs no normalization.

    python examples/hpo4dl_quickstart.py [--max-budget 1000] [--max-concurrent 1] [--output-path hpo4dl_results]
"""

from __future__ import annotations

import argparse
import os
from typing import Dict, List, Union

from ConfigSpace import ConfigurationSpace
from ray import tune

from tunekit.schedulers import DyHPOScheduler
from tunekit.searchers import DyHPOSearch
from tunekit.trainables import epoch_trainable, write_hpo4dl_outputs


def objective_function(configuration: Dict, epoch: int, previous_epoch: int,
                       checkpoint_path: str) -> Union[Dict, List[Dict]]:
    """The seed's objective: (x - 2)^2 for every epoch from previous_epoch + 1 to epoch."""
    x = configuration["x"]
    return [{"epoch": i, "metric": (x - 2) ** 2} for i in range(previous_epoch + 1, epoch + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-budget", type=int, default=1000, help="total epochs across all configurations")
    parser.add_argument("--max-epochs", type=int, default=27)
    parser.add_argument("--max-concurrent", type=int, default=1, help="configurations trained at once")
    parser.add_argument("--output-path", default=os.path.abspath("hpo4dl_results"))
    args = parser.parse_args()

    configspace = ConfigurationSpace({"x": (-5.0, 10.0)})
    searcher = DyHPOSearch(space=configspace, metric="metric", mode="min", max_epochs=args.max_epochs,
                           max_budget=args.max_budget, num_configurations=1000, seed=0)
    tuner = tune.Tuner(
        epoch_trainable(objective_function),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=DyHPOScheduler(searcher), num_samples=-1,
                                    max_concurrent_trials=args.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name="hpo4dl_quickstart", storage_path=args.output_path, verbose=0),
    )
    results = tuner.fit()
    best_trial = write_hpo4dl_outputs(results, args.output_path, mode="min")
    best = results.get_best_result(metric="metric", mode="min", scope="all")
    print(f"Incumbent: {best.config}, metric {best.metrics['metric']:.6g}")
    print(searcher.debug_string())
    print(f"Results: {os.path.join(args.output_path, 'hpo4dl_results.csv')}; best checkpoint: {best_trial}")


if __name__ == "__main__":
    main()
