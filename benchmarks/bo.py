"""Side-by-side Bayesian-optimisation benchmark: tunekit GP-EI vs random, Optuna TPE / GPSampler, BoTorch qLogEI.

Every method gets the same budget (``--budget`` evaluations, 10 of them an initial design) on the same
problems and seeds, in one process. Reported: median final simple regret (best loss found minus the known
optimum), median wall and CPU seconds per suggestion after the initial design, seconds per suggestion with
500 or more recorded observations (tunekit; GPSampler at 500), and GP-EI with 4 asynchronous workers (every
suggestion made while 3 trials are still running, the oldest finishing next) against sequential GP-EI.
``VALIDATION_PROBLEMS`` (Rosenbrock, Styblinski-Tang, Michalewicz, Rastrigin, Levy-20, noisy Hartmann-6, an
integer/ordinal/categorical space) were added after GP-EI was tuned; run them by name with ``--problems``.

Setup (a venv of its own, torch stays at the pinned version):
    python -m venv /tmp/bo-venv
    /tmp/bo-venv/bin/pip install -c constraints.txt -r benchmarks/requirements-bo.txt -e .
Run:
    /tmp/bo-venv/bin/python benchmarks/bo.py --seeds 5 --out bo.json
    /tmp/bo-venv/bin/python benchmarks/bo.py --timing 500 1000 2000 --problems hartmann6 mixed --out timing.json
    /tmp/bo-venv/bin/python benchmarks/bo.py --table bo.json timing.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tunekit.searchers import GPEISearch
from tunekit.space import Categorical, Float, Int, Ordinal, Space

N_STARTUP = 10


@dataclass
class Problem:
    """A loss to minimise over a Space, with its known minimum."""

    name: str
    space: Space
    loss: Callable[[dict], float]
    optimum: float


def _branin(x1: float, x2: float) -> float:
    return ((x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2
            + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10)


_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                  [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_H3_A = np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]])
_H3_P = 1e-4 * np.array([[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]])
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def _hartmann(x: np.ndarray, A: np.ndarray, P: np.ndarray) -> float:
    return float(-np.sum(_ALPHA * np.exp(-np.sum(A * (x - P) ** 2, axis=1))))


def _ackley(x: np.ndarray) -> float:
    d = len(x)
    return float(-20 * np.exp(-0.2 * np.sqrt(np.sum(x**2) / d)) - np.exp(np.sum(np.cos(2 * np.pi * x)) / d)
                 + 20 + math.e)


_COLOR_OFFSET = {"red": 0.6, "green": 0.0, "blue": 1.2, "yellow": 0.3}


def _mixed(c: dict) -> float:
    """Hartmann-3 on three floats + a quadratic in an int + a categorical offset + a log-scale float."""
    x = np.array([c["x0"], c["x1"], c["x2"]])
    return (_hartmann(x, _H3_A, _H3_P) + 0.01 * (c["layers"] - 12) ** 2 + _COLOR_OFFSET[c["color"]]
            + 0.1 * (math.log10(c["lr"]) + 3) ** 2)


PROBLEMS = {
    "branin": Problem("branin", Space([Float("x1", -5.0, 10.0), Float("x2", 0.0, 15.0)]),
                      lambda c: _branin(c["x1"], c["x2"]), 0.397887357729738),
    "hartmann6": Problem("hartmann6", Space([Float(f"x{i}", 0.0, 1.0) for i in range(6)]),
                         lambda c: _hartmann(np.array([c[f"x{i}"] for i in range(6)]), _H6_A, _H6_P),
                         -3.32236801141551),
    "mixed": Problem("mixed", Space([Float("x0", 0.0, 1.0), Float("x1", 0.0, 1.0), Float("x2", 0.0, 1.0),
                                     Int("layers", 1, 32), Categorical("color", ("red", "green", "blue", "yellow")),
                                     Float("lr", 1e-5, 1e-1, log=True)]),
                     _mixed, -3.86278214782076),
    "ackley10": Problem("ackley10", Space([Float(f"x{i}", -5.0, 10.0) for i in range(10)]),
                        lambda c: _ackley(np.array([c[f"x{i}"] for i in range(10)])), 0.0),
}


def _rosenbrock(x: np.ndarray) -> float:
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


def _styblinski_tang(x: np.ndarray) -> float:
    return float(0.5 * np.sum(x**4 - 16 * x**2 + 5 * x))


def _michalewicz(x: np.ndarray) -> float:
    return float(-np.sum(np.sin(x) * np.sin(np.arange(1, len(x) + 1) * x**2 / np.pi) ** 20))


def _rastrigin(x: np.ndarray) -> float:
    return float(10 * len(x) + np.sum(x**2 - 10 * np.cos(2 * np.pi * x)))


def _levy(x: np.ndarray) -> float:
    w = 1 + (x - 1) / 4
    return float(np.sin(np.pi * w[0]) ** 2 + np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(np.pi * w[:-1] + 1) ** 2))
                 + (w[-1] - 1) ** 2 * (1 + np.sin(2 * np.pi * w[-1]) ** 2))


def _noisy_hartmann6(c: dict) -> float:
    """Hartmann-6 plus Gaussian noise (sd 0.1) drawn from the point itself, so reruns see the same values."""
    x = np.array([c[f"x{i}"] for i in range(6)])
    noise = np.random.default_rng(np.frombuffer(x.tobytes(), dtype=np.uint32)).standard_normal()
    return _hartmann(x, _H6_A, _H6_P) + 0.1 * noise


_OPTIMIZER_OFFSET = {"sgd": 1.0, "adam": 0.0, "rmsprop": 0.5, "adagrad": 0.8, "lamb": 0.3}


def _integer_categorical(c: dict) -> float:
    return ((c["units"] - 13) ** 2 / 20 + (math.log2(c["batch"]) - 5) ** 2 / 4 + abs(math.log2(c["heads"]) - 3)
            + _OPTIMIZER_OFFSET[c["optimizer"]])


def _box(name: str, dim: int, low: float, high: float, f: Callable[[np.ndarray], float], optimum: float) -> Problem:
    return Problem(name, Space([Float(f"x{i}", low, high) for i in range(dim)]),
                   lambda c: f(np.array([c[f"x{i}"] for i in range(dim)])), optimum)


#: Problems added after GP-EI's settings were chosen, to check it on functions it was not tuned on (run them
#: with ``--problems``; regret of the noisy one is that of its best noisy observation).
VALIDATION_PROBLEMS = {p.name: p for p in [
    _box("rosenbrock4", 4, -2.0, 2.0, _rosenbrock, 0.0),
    _box("styblinski6", 6, -5.0, 5.0, _styblinski_tang, -39.16616570377142 * 6),
    _box("michalewicz5", 5, 0.0, math.pi, _michalewicz, -4.687658),
    _box("rastrigin4", 4, -5.12, 5.12, _rastrigin, 0.0),
    _box("levy20", 20, -10.0, 10.0, _levy, 0.0),
    Problem("hartmann6_noisy", PROBLEMS["hartmann6"].space, _noisy_hartmann6, PROBLEMS["hartmann6"].optimum),
    Problem("integer_categorical", Space([Int("units", 0, 20), Int("batch", 1, 256, log=True),
                                          Ordinal("heads", (1, 2, 4, 8, 16)),
                                          Categorical("optimizer", tuple(_OPTIMIZER_OFFSET))]),
            _integer_categorical, 0.0),
]}
ALL_PROBLEMS = {**PROBLEMS, **VALIDATION_PROBLEMS}


# -- methods: each returns (losses in evaluation order, (wall, CPU) seconds per suggestion after the design) ----
def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _elapsed(start: tuple[float, float]) -> tuple[float, float]:
    """(wall, CPU) seconds since ``start``; CPU time counts every thread of this process."""
    return time.perf_counter() - start[0], time.process_time() - start[1]


def run_tunekit(problem: Problem, budget: int, seed: int, workers: int = 1) -> tuple[list, list]:
    """GPEISearch driven directly (no Ray); with workers > 1, ``workers`` trials are always pending."""
    searcher = GPEISearch(space=problem.space, metric="loss", mode="min", random_starts=N_STARTUP, seed=seed)
    pending, losses, times = [], [], []

    def complete() -> None:
        trial_id, config = pending.pop(0)
        losses.append(problem.loss(problem.space.flatten(config)))
        searcher.on_trial_complete(trial_id, {"loss": losses[-1]})

    for i in range(budget):
        start = _clock()
        pending.append((str(i), searcher.suggest(str(i))))
        if i >= N_STARTUP:
            times.append(_elapsed(start))
        if len(pending) == workers:
            complete()
    while pending:
        complete()
    return losses, times


def run_random(problem: Problem, budget: int, seed: int) -> tuple[list, list]:
    return [problem.loss(c) for c in problem.space.sample(budget, seed=seed)], []


def _optuna_params(trial, space: Space) -> dict:
    config = {}
    for p in space.params:
        if isinstance(p, Float):
            config[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        elif isinstance(p, Int):
            config[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log)
        else:
            config[p.name] = trial.suggest_categorical(p.name, list(p.values))
    return config


def run_optuna(problem: Problem, budget: int, seed: int, sampler_name: str) -> tuple[list, list]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=N_STARTUP) if sampler_name == "tpe"
               else optuna.samplers.GPSampler(seed=seed, n_startup_trials=N_STARTUP))
    study = optuna.create_study(sampler=sampler)
    losses, times = [], []
    for i in range(budget):
        start = _clock()
        trial = study.ask()
        config = _optuna_params(trial, problem.space)
        if i >= N_STARTUP:
            times.append(_elapsed(start))
        loss = problem.loss(config)
        study.tell(trial, loss)
        losses.append(loss)
    return losses, times


def run_botorch(problem: Problem, budget: int, seed: int) -> tuple[list, list]:
    """BoTorch SingleTaskGP + qLogEI (q=1) on tunekit's encoding; mixed columns relaxed, then projected."""
    import torch
    from botorch.acquisition import qLogExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.optim import optimize_acqf
    from gpytorch.mlls import ExactMarginalLogLikelihood

    space = problem.space
    torch.manual_seed(seed)
    X = space.project(torch.quasirandom.SobolEngine(space.dim, scramble=True, seed=seed)
                      .draw(N_STARTUP, dtype=torch.float64).numpy())
    losses = [problem.loss(c) for c in space.decode(X)]
    times = []
    bounds = torch.stack([torch.zeros(space.dim), torch.ones(space.dim)]).double()
    while len(losses) < budget:
        start = _clock()
        train_X = torch.from_numpy(X)
        train_Y = -torch.tensor(losses, dtype=torch.float64).unsqueeze(-1)
        model = SingleTaskGP(train_X, train_Y)
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        acqf = qLogExpectedImprovement(model, best_f=train_Y.max())
        candidate, _ = optimize_acqf(acqf, bounds=bounds, q=1, num_restarts=10, raw_samples=512)
        x = space.project(candidate.detach().numpy())
        times.append(_elapsed(start))
        X = np.concatenate([X, x])
        losses.append(problem.loss(space.decode(x)[0]))
    return losses, times


METHODS = {
    "tunekit GP-EI": lambda p, b, s: run_tunekit(p, b, s),
    "Optuna GPSampler": lambda p, b, s: run_optuna(p, b, s, "gp"),
    "Optuna TPE": lambda p, b, s: run_optuna(p, b, s, "tpe"),
    "random": run_random,
    "tunekit GP-EI, 4 workers": lambda p, b, s: run_tunekit(p, b, s, workers=4),
    "BoTorch qLogEI": run_botorch,
}


def _time_suggestions(suggest: Callable[[int], object], n_suggest: int) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n_suggest):
        suggest(i)
    return {"wall": (time.perf_counter() - wall) / n_suggest, "cpu": (time.process_time() - cpu) / n_suggest,
            "load_average": os.getloadavg()[0]}


def _gp_sampler_with(problem: Problem, configs: list, losses: list) -> Callable[[int], None]:
    """An ``ask`` for a GPSampler study that already holds the given observations."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.GPSampler(seed=0))
    dists = optuna.distributions
    distributions = {
        p.name: (dists.FloatDistribution(p.low, p.high, log=p.log) if isinstance(p, Float)
                 else dists.IntDistribution(p.low, p.high, log=p.log) if isinstance(p, Int)
                 else dists.CategoricalDistribution(list(p.values)))
        for p in problem.space.params}
    study.add_trials([optuna.trial.create_trial(params=c, distributions=distributions, value=v)
                      for c, v in zip(configs, losses)])

    def ask(_: int) -> None:
        trial = study.ask()
        _optuna_params(trial, problem.space)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)

    return ask


def time_with_observations(problem: Problem, sizes: list, n_suggest: int = 3, peer_limit: int = 500) -> dict:
    """Wall and CPU seconds per suggestion with n random observations recorded, for each n in ``sizes``.

    tunekit at every size (each suggestion stays pending, so the later ones also fantasize); GPSampler only
    up to ``peer_limit`` observations (beyond, one of its suggestions takes minutes here). CPU time is
    reported because on a shared machine wall time mostly measures the other tenants.
    """
    out: dict = {"tunekit GP-EI": {}, "Optuna GPSampler": {}}
    for n_obs in sizes:
        configs = problem.space.sample(n_obs, seed=123)
        losses = [problem.loss(c) for c in configs]
        searcher = GPEISearch(space=problem.space, metric="loss", mode="min", seed=0)
        for config, loss in zip(configs, losses):
            searcher.add_evaluated_point(config, loss)
        out["tunekit GP-EI"][str(n_obs)] = _time_suggestions(lambda i: searcher.suggest(f"t{i}"), n_suggest)
        if n_obs <= peer_limit:
            out["Optuna GPSampler"][str(n_obs)] = _time_suggestions(_gp_sampler_with(problem, configs, losses),
                                                                    n_suggest)
    return out


def run(problems: list, methods: list, seeds: int, budget: int, out_path: str, first_seed: int = 0) -> None:
    results = {"budget": budget, "seeds": seeds, "runs": []}
    for name in problems:
        problem = ALL_PROBLEMS[name]
        for method in methods:
            for seed in range(first_seed, first_seed + seeds):
                start = time.perf_counter()
                losses, times = METHODS[method](problem, budget, seed)
                regret = min(losses) - problem.optimum
                wall, cpu = (np.mean(times, axis=0).tolist() if times else (None, None))
                results["runs"].append({"problem": name, "method": method, "seed": seed, "regret": regret,
                                        "sec_per_suggestion": wall, "cpu_per_suggestion": cpu,
                                        "load_average": os.getloadavg()[0]})
                logging.info("%s | %s | seed %d: regret %.3g in %.1f s", name, method, seed, regret,
                             time.perf_counter() - start)
                with open(out_path, "w") as handle:
                    json.dump(results, handle, indent=1)


def run_timing(problems: list, sizes: list, out_path: str) -> None:
    results = {"runs": [], "timing": {}}
    for name in problems:
        results["timing"][name] = time_with_observations(ALL_PROBLEMS[name], sizes)
        logging.info("%s timing: %s", name, results["timing"][name])
        with open(out_path, "w") as handle:
            json.dump(results, handle, indent=1)


def table(paths: list) -> str:
    """Markdown tables (median regret, median s/suggestion, time at 500) from one or more result files."""
    runs, timing = [], {}
    for path in paths:
        with open(path) as handle:
            data = json.load(handle)
        runs += data["runs"]
        timing.update(data.get("timing", {}))
    problems = list(dict.fromkeys(r["problem"] for r in runs))
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]

    def cell(problem: str, method: str, key: str) -> str:
        values = [r[key] for r in runs if r["problem"] == problem and r["method"] == method and r[key] is not None]
        return f"{np.median(values):.3g} (n={len(values)})" if values else "-"

    lines = ["Median final simple regret (lower is better):", "",
             "| method | " + " | ".join(problems) + " |", "|---" * (len(problems) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(cell(p, m, "regret") for p in problems) + " |" for m in methods]
    def seconds(problem: str, method: str) -> str:
        chosen = [r for r in runs if r["problem"] == problem and r["method"] == method and r["sec_per_suggestion"]]
        if not chosen:
            return "-"
        cpu = [r["cpu_per_suggestion"] for r in chosen if r.get("cpu_per_suggestion") is not None]
        text = f"{np.median([r['sec_per_suggestion'] for r in chosen]):.3g}"
        return text + (f" / {np.median(cpu):.3g}" if cpu else "") + f" (n={len(chosen)})"

    lines += ["", "Median seconds per suggestion after the initial design (wall / CPU):", "",
              "| method | " + " | ".join(problems) + " |", "|---" * (len(problems) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(seconds(p, m) for p in problems) + " |" for m in methods if m != "random"]
    if timing:
        lines += ["", "Seconds per suggestion with n random observations recorded (wall / CPU, load average):", "",
                  "| method | n | " + " | ".join(timing) + " |", "|---" * (len(timing) + 2) + "|"]
        for method in ("tunekit GP-EI", "Optuna GPSampler"):
            sizes = sorted({int(n) for p in timing for n in timing[p][method]})
            for n in sizes:
                cells = [timing[p][method].get(str(n)) for p in timing]
                lines.append(f"| {method} | {n} | " + " | ".join(
                    f"{c['wall']:.2f} / {c['cpu']:.2f} ({c['load_average']:.0f})" if c else "-" for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(ALL_PROBLEMS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from here")
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--out", default="bo.json")
    parser.add_argument("--timing", nargs="+", type=int, metavar="N",
                        help="only time suggestions with N recorded observations (e.g. 500 1000 2000)")
    parser.add_argument("--table", nargs="+", metavar="RESULTS_JSON", help="print the tables of these result files")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.timing:
        run_timing(args.problems, args.timing, args.out)
    else:
        run(args.problems, args.methods, args.seeds, args.budget, args.out, args.first_seed)
    print(table([args.out]))


if __name__ == "__main__":
    main()
