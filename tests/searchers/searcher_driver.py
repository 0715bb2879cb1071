"""Drives a searcher through Ray's contract without Ray: one trial at a time, shared by the searcher tests."""

from typing import Callable

from ray.tune.search import Searcher


def run_sequentially(searcher: Searcher, n: int, loss: Callable[[dict], float], start: int = 0) -> list:
    """n trials one at a time (ids t{start}..), each completed with ``{"loss": loss(config)}``; returns the configs."""
    configs = []
    for i in range(start, start + n):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        searcher.on_trial_complete(f"t{i}", {"loss": loss(config)})
    return configs
