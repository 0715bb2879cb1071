"""Fidelity of NevergradSearch to nevergrad itself: same parametrization, same seed, same budget.

For each optimizer, a hand-written nevergrad loop (ask, evaluate, tell) and NevergradSearch driven through
Ray's Searcher contract (suggest, on_trial_complete), one trial at a time, on the hpnevergrad seed's
declarations (``hpng(_)``) and its ``fake_training`` objective. Reported: the fraction of suggestions equal to
what the hand-written loop asks (1.00 = identical runs; the lowest over the runs) and the CPU time per
suggestion of both (median step); the overhead is the median of the paired differences, step by step, which
sees past the noise of a shared machine.

    python benchmarks/nevergrad_fidelity.py [--budget 100] [--seed 0] [--repeats 5] [--output results/nevergrad.md]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import nevergrad as ng
import numpy as np
from hpman import HyperParameterManager

from tunekit.hpman import hpng
from tunekit.searchers.nevergrad import NevergradSearch

OPTIMIZERS = ("OnePlusOne", "TwoPointsDE", "CMA", "NGOpt")
SEED_DECLARATIONS = """
lr = _('learning_rate', 1e-3, range=[1e-3, 1.0], scale='log')
bs = _('batch_size', 1, range=[1, 12])
arch = _('architecture', 'conv', choices=['conv', 'fc'])
"""


def fake_training(learning_rate: float, batch_size: int, architecture: str) -> float:
    # the seed's objective: optimal for learning_rate=0.2, batch_size=4, architecture="conv"
    return (learning_rate - 0.2) ** 2 + (batch_size - 4) ** 2 + (0 if architecture == "conv" else 10)


def parametrization():
    manager = HyperParameterManager("_")
    manager.parse_source(SEED_DECLARATIONS, "seed.py")
    return hpng(manager)


def lockstep(name: str, budget: int, seed: int) -> tuple[list, list, np.ndarray, np.ndarray]:
    """Run a hand-written nevergrad loop (ask, evaluate, tell) and NevergradSearch through Ray's Searcher
    contract (suggest, on_trial_complete) side by side, one step of each in turn (alternating which goes
    first), timing every step in CPU seconds of this process so that other processes on a shared machine do
    not count. Returns both sequences of configurations and both arrays of step times, shape (budget,)."""
    param = parametrization()
    param.random_state = np.random.RandomState(seed)
    optimizer = ng.optimizers.registry[name](parametrization=param, budget=budget)
    searcher = NevergradSearch(name, space=parametrization(), metric="loss", mode="min", budget=budget, seed=seed)
    asked, suggested = [], []
    loop_times, searcher_times = np.zeros(budget), np.zeros(budget)

    def loop_step(i: int) -> None:
        start = time.process_time()
        candidate = optimizer.ask()
        optimizer.tell(candidate, fake_training(**candidate.kwargs))
        loop_times[i] = time.process_time() - start
        asked.append(candidate.kwargs)

    def searcher_step(i: int) -> None:
        start = time.process_time()
        config = searcher.suggest(str(i))
        searcher.on_trial_complete(str(i), {"loss": fake_training(**config)})
        searcher_times[i] = time.process_time() - start
        suggested.append(config)

    for i in range(budget):
        first, second = (loop_step, searcher_step) if i % 2 == 0 else (searcher_step, loop_step)
        first(i)
        second(i)
    return asked, suggested, loop_times, searcher_times


def measure(name: str, budget: int, seed: int, repeats: int) -> dict:
    """Matching ratio, and per-suggestion times: medians over all steps of all repeats; the overhead is the
    median of the paired (same step) differences."""
    loop_times, searcher_times, matching = [], [], []
    for _ in range(repeats):
        asked, suggested, loop, through = lockstep(name, budget, seed)
        matching.append(sum(a == b for a, b in zip(asked, suggested)) / budget)
        loop_times.append(loop)
        searcher_times.append(through)
    loop, through = np.concatenate(loop_times), np.concatenate(searcher_times)
    return {"optimizer": name, "matching": min(matching), "loop_ms": 1e3 * np.median(loop),
            "searcher_ms": 1e3 * np.median(through), "overhead_ms": 1e3 * np.median(through - loop),
            "best": min(fake_training(**c) for c in suggested)}


def table(rows: list[dict], budget: int, seed: int, repeats: int) -> str:
    lines = [f"budget {budget}, seed {seed}, {repeats} runs; CPU time per step (median), overhead = median of "
             f"paired step differences; nevergrad {ng.__version__}, "
             f"Python {platform.python_version()}, {platform.machine()}",
             "",
             "| optimizer | matching suggestions | nevergrad loop (ms/suggestion) | NevergradSearch (ms/suggestion) "
             "| overhead (ms/suggestion) | best loss found |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['optimizer']} | {row['matching']:.2f} | {row['loop_ms']:.3f} | {row['searcher_ms']:.3f} "
                     f"| {row['overhead_ms']:.3f} | {row['best']:.2e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS))
    parser.add_argument("--output", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    rows = [measure(name, args.budget, args.seed, args.repeats) for name in args.optimizers]
    text = table(rows, args.budget, args.seed, args.repeats)
    print(text)
    if args.output:
        command = "python benchmarks/nevergrad_fidelity.py " + " ".join(sys.argv[1:])
        args.output.write_text(f"# NevergradSearch vs a hand-written nevergrad loop\n\n{__doc__.split(chr(10) * 2)[1]}"
                               f"\n\nCommand: `{command}`\n\n{text}")


if __name__ == "__main__":
    main()
