"""HPO4DL's own DyHPO (``hpo4dl.tuner.Tuner``) on the problems of benchmarks/dyhpo.py, in HPO4DL's own environment.

HPO4DL 0.1.0 needs ConfigSpace 0.7 and numpy < 2, so it runs in a separate venv (benchmarks/requirements-hpo4dl.txt)
and imports nothing from tunekit. benchmarks/dyhpo.py exports the problems as JSON (``--export-problems``): per
(problem, seed) the search space, the tabulated configurations and learning curves (losses, one row per
configuration) and tunekit ASHA's losses in training order. ASHA's total epochs E and final best loss A set the
budget, exactly as in dyhpo.py.

HPO4DL samples its candidate pool itself from a ConfigSpace space; here its configuration manager is given the
tabulated pool instead (in dyhpo.py's seeded order), so HPO4DL chooses among the same configurations as tunekit's
DyHPO and the objective looks the curves up. HPO4DL's DyHPO maximizes whatever it is given (its ``minimize`` flag
is not used by the optimizer), so the metric handed to it is 1 - loss (validation accuracy for the MLP).

Reported per run: best loss after E/4, E/2, E epochs, epochs to reach A, and seconds per decision: the wall time
between two objective calls (HPO4DL's observe, surrogate training, result logging and suggest).

    /tmp/hpo4dl-venv/bin/python benchmarks/hpo4dl_peer.py PROBLEMS.json [--problem synthetic] [--seeds 0 1 2]
        [--out RESULTS.jsonl]        # each finished run is appended; the table covers every run in RESULTS.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import ConfigSpace as CS
import numpy as np
import torch
from hpo4dl.configuration_manager.configuration_manager import ConfigurationManager
from hpo4dl.optimizers.dyhpo.dyhpo_optimizer import DyHPOOptimizer
from hpo4dl.tuner import Tuner


def config_space(spec: dict, seed: int) -> CS.ConfigurationSpace:
    """ConfigSpace 0.7 space equal to a tunekit ``Space.to_dict()`` spec (float, int, categorical)."""
    space = CS.ConfigurationSpace(seed=seed)
    for name, p in spec.items():
        if p["type"] == "float":
            space.add_hyperparameter(CS.UniformFloatHyperparameter(name, p["low"], p["high"], log=p.get("log", False)))
        elif p["type"] == "int":
            space.add_hyperparameter(CS.UniformIntegerHyperparameter(name, p["low"], p["high"],
                                                                     log=p.get("log", False)))
        elif p["type"] == "categorical":
            space.add_hyperparameter(CS.CategoricalHyperparameter(name, p["values"]))
        else:
            raise ValueError(f"parameter {name!r} has type {p['type']!r}; accepted: float, int, categorical")
    return space


class PoolConfigurationManager(ConfigurationManager):
    """HPO4DL's configuration manager whose candidates are a fixed, tabulated pool instead of fresh samples."""

    def __init__(self, configuration_space: CS.ConfigurationSpace, pool: List[Dict], seed: int):
        self.pool = pool
        super().__init__(configuration_space=configuration_space, num_configurations=len(pool), seed=seed)

    def generate_configurations(self, num_configurations: int) -> List[Dict]:
        start = len(self.configurations)
        return [dict(c) for c in self.pool[start:start + num_configurations]]


def key(config: Dict) -> tuple:
    return tuple(sorted((k, round(v, 12) if isinstance(v, float) else v) for k, v in config.items()))


def run_hpo4dl(problem: dict, workdir: Path) -> dict:
    """One HPO4DL DyHPO run at ASHA's epoch budget; returns losses in training order and decision times."""
    seed, curves = problem["seed"], np.array(problem["curves"])
    budget = len(problem["asha_losses"])
    order = np.random.default_rng(seed).permutation(len(problem["configs"]))
    pool = [problem["configs"][i] for i in order]
    row_of = {key(c): int(i) for c, i in zip(pool, order)}
    losses: List[float] = []
    gaps: List[float] = []
    last_return = [None]

    def objective(configuration: Dict, epoch: int, previous_epoch: int, checkpoint_path: str) -> List[Dict]:
        entered = time.perf_counter()
        if last_return[0] is not None:
            gaps.append(entered - last_return[0])
        row = curves[row_of[key(configuration)]]
        results = []
        for e in range(previous_epoch + 1, epoch + 1):
            losses.append(float(row[e - 1]))
            results.append({"epoch": e, "metric": 1.0 - float(row[e - 1])})
        last_return[0] = time.perf_counter()
        return results

    space = config_space(problem["space"], seed)
    tuner = Tuner(objective_function=objective, configuration_space=space, minimize=False, max_budget=budget,
                  max_epochs=curves.shape[1], num_configurations=2, output_path=workdir / "out", seed=seed,
                  device="cpu", storage_path=workdir / "storage")
    tuner.configuration_manager = PoolConfigurationManager(space, pool, seed)
    tuner.surrogate = DyHPOOptimizer(max_epochs=curves.shape[1], total_budget=budget,
                                     configuration_manager=tuner.configuration_manager, seed=seed,
                                     minimization=False, device="cpu", output_path=str(tuner.output_path),
                                     num_configurations=len(pool), verbose=False)
    started = time.perf_counter()
    tuner.run()
    wall = time.perf_counter() - started
    return {"problem": problem["problem"], "seed": seed, "budget": budget, "asha_losses": problem["asha_losses"],
            "oracle": float(curves.min()), "losses": losses[:budget], "spent": len(losses),
            "configs_started": len({k for k in tuner.surrogate.examples}), "decision_seconds": gaps, "wall": wall}


def summary(losses: List[float], budget: int, target: float) -> dict:
    def best(n: int) -> float:
        return min(losses[:n]) if losses[:n] else math.inf

    hits = [i + 1 for i, v in enumerate(losses) if v <= target + 1e-12]
    return {"quarter": best(budget // 4), "half": best(budget // 2), "full": best(budget),
            "to_asha": hits[0] if hits else math.inf}


def table(runs: List[dict]) -> str:
    """Markdown rows (HPO4DL and ASHA on the same seeds) plus decision-time and per-seed lines."""
    lines = []
    for problem in sorted({r["problem"] for r in runs}):
        rows = sorted((r for r in runs if r["problem"] == problem), key=lambda r: r["seed"])
        lines += [f"#### {problem}: {len(rows)} seeds ({', '.join(str(r['seed']) for r in rows)}), "
                  f"budget = ASHA's total epochs (mean {np.mean([r['budget'] for r in rows]):.0f})", "",
                  "| method | best loss at E/4 | at E/2 | at E | epochs to reach ASHA's final best (median; reached) |",
                  "| --- | --- | --- | --- | --- |"]
        for name, field in (("HPO4DL DyHPO", "losses"), ("ASHA (stopping)", "asha_losses")):
            stats = [summary(r[field], r["budget"], min(r["asha_losses"])) for r in rows]
            cells = [np.mean([s[k] for s in stats]) for k in ("quarter", "half", "full")]
            reach = [s["to_asha"] / r["budget"] for s, r in zip(stats, rows)]
            finite = [x for x in reach if math.isfinite(x)]
            median = f"{np.median(reach):.2f} E" if len(finite) > len(reach) / 2 else "> E"
            lines.append(f"| {name} | " + " | ".join(f"{c:.4f}" for c in cells) +
                         f" | {median}; {len(finite)}/{len(rows)} |")
        gaps = np.concatenate([r["decision_seconds"] for r in rows])
        late = np.concatenate([r["decision_seconds"][-100:] for r in rows])
        lines += ["", f"HPO4DL seconds per decision: median {np.median(gaps):.3f} s, mean {gaps.mean():.3f} s, "
                      f"p90 {np.percentile(gaps, 90):.3f} s over {len(gaps)} decisions; last 100 of each run: median "
                      f"{np.median(late):.3f} s. Wall per run: "
                      + ", ".join(f"{r['wall']:.0f} s" for r in rows) + ". Configurations started per run: "
                      + ", ".join(str(r["configs_started"]) for r in rows) + ". Per seed, HPO4DL's best at E / "
                      "ASHA's best: " + ", ".join(f"{min(r['losses']):.4f}/{min(r['asha_losses']):.4f}"
                                                  for r in rows), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("problems", type=Path, help="JSON written by benchmarks/dyhpo.py --export-problems")
    parser.add_argument("--problem", choices=["mlp", "synthetic"], default=None, help="default: both")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="default: every exported seed")
    parser.add_argument("--out", type=Path, default=Path("/tmp/hpo4dl_peer_runs.jsonl"))
    parser.add_argument("--table-only", action="store_true", help="only print the table of the runs in --out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.table_only:
        for problem in json.loads(args.problems.read_text())["problems"]:
            if (args.problem and problem["problem"] != args.problem) or \
                    (args.seeds is not None and problem["seed"] not in args.seeds):
                continue
            with tempfile.TemporaryDirectory() as workdir:
                run = run_hpo4dl(problem, Path(workdir))
            with args.out.open("a") as out:
                out.write(json.dumps(run) + "\n")
            print(f"{run['problem']} seed {run['seed']}: best {min(run['losses']):.4f} (ASHA "
                  f"{min(run['asha_losses']):.4f}) in {run['wall']:.0f} s", flush=True)
    runs = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    print(table(runs))


if __name__ == "__main__":
    main()
