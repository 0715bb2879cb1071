"""Reliability "flood": 1,000 fast trials through each tunekit searcher and scheduler, 4 at a time.

Real ``tune.Tuner`` runs (local Ray with logical resources, ``max_concurrent_trials=4``, ``reuse_actors=True``)
of trivial trainables on a known function (a shifted quadratic over two floats, a log-scaled learning rate and
a categorical). Each case measures, from outside the searcher and scheduler:

- wall time, trials completed / errored, peak driver RSS (a sampling thread), and at 100 / 500 / 1,000
  completed trials (DyHPO: reported epochs) the driver's RSS, threads and open files;
- seconds per ``suggest`` call (the searcher's method wrapped, unchanged) over the ten calls made nearest
  below 100 / 500 / 1,000 observations; DyHPO also per scheduler decision (``on_trial_result``);
- bytes and seconds of the searcher's and scheduler's ``save`` (what Ray writes with every experiment
  checkpoint) at those points;
- "state growth": the length of every container inside the searcher, the scheduler and the TensorBoard
  callback at ten points of the run, its growth per trial, and whether that growth is expected (the
  algorithm's data: one record per observation) or a defect (logs, caches, writers that should be bounded).

DyHPO's flood is 1,000 *observations* (``max_budget=1000`` epochs of trials of at most 4 epochs, a pool of
1,000 configurations): its model and decisions scale with learning-curve points, not with trials. Trials keep
their latest checkpoint only (``num_to_keep=1``), so Ray snapshots the experiment, searcher and scheduler
included, whenever a trial has checkpointed since the last snapshot: saving is part of the flood.

``--suggest-cost`` only times ``suggest`` at 100 / 500 / 1,000 observations given through
``add_evaluated_point``, without Ray running trials (for GP-EI, whose full flood is long on a small machine).

    python benchmarks/reliability_flood.py [--trials 1000] [--cases gp_ei,ng_ngopt,...] [--time-budget 3600]
    python benchmarks/reliability_flood.py --suggest-cost [--cases gp_ei,ng_ngopt,ng_cma]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Optional

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "8")

import numpy as np  # noqa: E402
import ray  # noqa: E402  (first: it puts its bundled psutil on sys.path)
import psutil  # noqa: E402
import ray.cloudpickle  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

from tunekit.callbacks import TensorBoardCallback  # noqa: E402
from tunekit.schedulers import ASHAScheduler, DyHPOScheduler, MedianStoppingScheduler  # noqa: E402
from tunekit.searchers import DyHPOSearch, GPEISearch, NevergradSearch  # noqa: E402
from tunekit.trainables import epoch_trainable  # noqa: E402

if __name__ != "__main__":
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import benchmarks/

CONCURRENT = 4
MAX_T = 9
DYHPO_EPOCHS = 4
CASES = ("gp_ei", "ng_ngopt", "ng_cma", "dyhpo", "asha_stopping", "asha_promotion", "median")
STANDALONE = ("gp_ei", "ng_ngopt", "ng_cma")
PARAM_SPACE = {"x": tune.uniform(-2.0, 2.0), "y": tune.uniform(-2.0, 2.0), "lr": tune.loguniform(1e-4, 1e-1),
               "act": tune.choice(["relu", "tanh", "gelu"])}
ACT_OFFSET = {"relu": 0.0, "tanh": 0.1, "gelu": 0.05}

#: A container whose size at the end of the run exceeds this factor times its largest size in the first half grows.
GROWTH_FACTOR = 1.5
#: ... and by more than this many elements (a file or two open at the moment of a snapshot is not growth).
MIN_GROWTH = 4
#: Containers (path prefixes) that may grow with the run, and why; anything else that grows is a defect.
EXPECTED_GROWTH = {
    "searcher._state.observations": "one record per finished trial: the searcher's data",
    "searcher._state.suggested_keys": "one key per suggestion, so that no configuration is proposed twice",
    "searcher._state.live": "started, unfinished trials: DyHPO keeps paused trials here until they end",
    "searcher._state.last_loss": "latest loss of started, unfinished trials (as live)",
    "searcher._optimizer": "nevergrad's own archive of told points (it prunes it past 1,000)",
    "searcher._dyhpo.curves": "one learning curve per started trial: DyHPO's data",
    "scheduler._brackets": "one score per trial per rung: the rung quantile needs all of them",
    "scheduler._curves": "one running-average curve per trial: the median needs them",
    "scheduler._means_at": "sorted running averages per check time (at most MAX_CHECK_TIMES times)",
    "scheduler._stopped": "ids of stopped trials, never checked again",
    "scheduler._check_times": "check times (at most MAX_CHECK_TIMES)",
    "callback._known_trials": "Ray's own list of trials (a reference, not a copy)",
    "callback._trials": "Ray's Trial objects (Ray's controller keeps them all anyway)",
    "callback._last_step": "one int per trial, to detect a replayed step after a resume",
    "callback._observed": "distinct hyperparameter values, for the HParams domains",
    "driver open files: result.json": "Ray's JSON logger: one open file per unfinished (e.g. paused) trial",
    "driver open files: progress.csv": "Ray's CSV logger: one open file per unfinished (e.g. paused) trial",
}


def objective(config: dict) -> float:
    """The known function (minimum 0 at x=0.5, y=-0.3, lr=10**-2.5, act="relu")."""
    return ((config["x"] - 0.5) ** 2 + (config["y"] + 0.3) ** 2 + (math.log10(config["lr"]) + 2.5) ** 2 / 4
            + ACT_OFFSET[config["act"]])


def one_report(config: dict) -> None:
    """A trial of one result: the searchers' flood."""
    tune.report({"loss": objective(config)})


def curve_reports(config: dict) -> None:
    """MAX_T results of a decreasing curve without checkpoints (stopping schedulers)."""
    for step in range(1, MAX_T + 1):
        tune.report({"loss": objective(config) + 1.0 / step})


def epoch_curve(config: dict, epoch: int, previous_epoch: int, checkpoint_path: str) -> dict:
    """An HPO4DL-style objective for :func:`epoch_trainable` (checkpointed, so trials can pause and resume)."""
    return {"epoch": epoch, "metric": objective(config) + 1.0 / epoch}


@dataclass
class Case:
    """One flood: what runs, and what the 100/500/1,000 points count ("trials" finished or "results")."""

    name: str
    searcher: Any
    scheduler: Any
    trainable: Callable
    metric: str
    count: str = "trials"
    tensorboard: bool = False


def build_case(name: str, trials: int, seed: int) -> Case:
    """The searcher, scheduler and trainable of one flood case."""
    if name == "gp_ei":
        return Case(name, GPEISearch(seed=seed), None, one_report, "loss")
    if name in ("ng_ngopt", "ng_cma"):
        optimizer = "NGOpt" if name == "ng_ngopt" else "CMA"
        return Case(name, NevergradSearch(optimizer, budget=trials, seed=seed), None, one_report, "loss")
    if name == "dyhpo":
        searcher = DyHPOSearch(max_epochs=DYHPO_EPOCHS, max_budget=trials, num_configurations=1000, seed=seed)
        return Case(name, searcher, DyHPOScheduler(searcher), epoch_trainable(epoch_curve), "metric", "results",
                    tensorboard=True)
    cheap = NevergradSearch("RandomSearch", seed=seed)
    if name == "asha_stopping":
        scheduler = ASHAScheduler(max_t=MAX_T, grace_period=1, reduction_factor=3, rule="stopping")
        return Case(name, cheap, scheduler, curve_reports, "loss", tensorboard=True)
    if name == "asha_promotion":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=MAX_T, grace_period=1, reduction_factor=3,
                                  rule="promotion")
        return Case(name, cheap, scheduler, epoch_trainable(epoch_curve, max_epochs=MAX_T), "metric",
                    tensorboard=True)
    if name == "median":
        scheduler = MedianStoppingScheduler(grace_period=2, min_samples_required=3)
        return Case(name, cheap, scheduler, curve_reports, "loss", tensorboard=True)
    raise ValueError(f"case={name!r} is not known; use one of {CASES}")


class MemorySampler:
    """Samples this process's RSS every ``interval`` seconds in a daemon thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.1):
        self._process, self._interval = psutil.Process(), interval
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, name="flood-memory", daemon=True)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)


class CallTimer:
    """Replaces ``owner.<name>`` by a timed call of the original (the class is not touched).

    ``calls`` holds ``(count, seconds, answered)`` per call: ``count()`` just before the call (observations),
    the call's wall time, and whether it returned a configuration / decision (not None or FINISHED).
    """

    def __init__(self, owner: Any, name: str, count: Callable[[], int]):
        self._method, self._count = getattr(owner, name), count
        self.calls: list[tuple[int, float, bool]] = []
        setattr(owner, name, self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        count = self._count()
        start = time.perf_counter()
        answer = self._method(*args, **kwargs)
        self.calls.append((count, time.perf_counter() - start, answer is not None and answer != Searcher.FINISHED))
        return answer

    def near(self, count: int, last: int = 10) -> Optional[tuple[float, int, int]]:
        """Median seconds of the ``last`` answered calls made at or below ``count`` observations, with the
        range of observation counts they were made at; None when no call was."""
        below = [call for call in self.calls if call[0] <= count and call[2]][-last:]
        if not below:
            return None
        return float(np.median([seconds for _, seconds, _ in below])), below[0][0], below[-1][0]


def _walkable(value: Any) -> bool:
    module = type(value).__module__
    return (is_dataclass(value) and not isinstance(value, type)) or module.startswith(("tunekit", "nevergrad"))


def _attributes(value: Any) -> list[tuple[str, Any]]:
    if is_dataclass(value):
        return [(f.name, getattr(value, f.name)) for f in fields(value)]
    return list(getattr(value, "__dict__", {}).items())


def container_sizes(roots: dict[str, Any], depth: int = 5) -> dict[str, int]:
    """Length of every container reachable from ``roots`` (by name) through tunekit/nevergrad objects and
    dataclasses, by path (``name.attr[*].attr``; ``[*]`` sums over a container's elements); tensors and arrays
    by element count; an object reachable twice is counted at its first path only. A deque with a ``maxlen``
    is recorded as ``path (maxlen N)``."""
    sizes: dict[str, int] = {}
    seen: set[int] = set()

    def visit(value: Any, path: str, level: int) -> None:
        if id(value) in seen or level > depth or isinstance(value, (str, bytes, type)):
            return
        seen.add(id(value))
        if isinstance(value, (list, tuple, dict, set, frozenset, deque)):
            if isinstance(value, deque) and value.maxlen is not None:
                path = f"{path} (maxlen {value.maxlen})"
            sizes[path] = sizes.get(path, 0) + len(value)
            for item in list(value.values() if isinstance(value, dict) else value)[:5000]:
                visit(item, f"{path}[*]", level + 1)
        elif hasattr(value, "shape") and hasattr(value, "dtype") and not callable(getattr(value, "keys", None)):
            sizes[path] = sizes.get(path, 0) + int(np.prod(value.shape))
        elif _walkable(value):
            for attr, item in _attributes(value):
                visit(item, f"{path}.{attr}", level + 1)

    for name, root in roots.items():
        visit(root, name, 0)
    return sizes


def saved_size(owner: Any) -> tuple[int, float]:
    """Bytes and seconds of ``owner.save(path)`` (what Ray writes with each experiment checkpoint)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "state.pkl")
        start = time.perf_counter()
        owner.save(path)
        return os.path.getsize(path), time.perf_counter() - start


@dataclass
class Snapshot:
    """The driver and the search state when ``count`` trials finished (or results arrived)."""

    count: int
    seconds: float
    rss: int
    threads: int
    open_files: int
    searcher_bytes: int
    searcher_save_s: float
    scheduler_bytes: Optional[int]
    scheduler_save_s: Optional[float]
    ray_trials_bytes: int = 0
    sizes: dict = field(default_factory=dict)
    end: bool = False


class FloodProbe(tune.Callback):
    """Counts finished trials and results in the driver, and takes a :class:`Snapshot` at each mark."""

    def __init__(self, case: Case, marks: list[int], callback: Optional[TensorBoardCallback]):
        self.case, self.callback, self.marks = case, callback, sorted(set(marks))
        self.finished = self.errored = self.results = 0
        self.snapshots: list[Snapshot] = []
        self._trials: list = []
        self._start = time.perf_counter()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results += 1
        self._trials = trials
        if self.case.count == "results":
            self._mark(self.results)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished += 1
        self._trials = trials
        if self.case.count == "trials":
            self._mark(self.finished)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.errored += 1
        self.on_trial_complete(iteration, trials, trial)

    def on_experiment_end(self, trials, **info):
        self.snapshot(self.results if self.case.count == "results" else self.finished, end=True)

    def _mark(self, count: int) -> None:
        if self.marks and count >= self.marks[0]:
            self.marks = [mark for mark in self.marks if mark > count]
            self.snapshot(count)

    def snapshot(self, count: int, end: bool = False) -> None:
        process = psutil.Process()
        case = self.case
        searcher_bytes, searcher_s = saved_size(case.searcher)
        scheduler_bytes, scheduler_s = saved_size(case.scheduler) if case.scheduler is not None else (None, None)
        roots = {"searcher": case.searcher, "scheduler": case.scheduler, "callback": self.callback}
        sizes = container_sizes({name: root for name, root in roots.items() if root is not None})
        sizes["driver threads"] = process.num_threads()
        for opened in process.open_files():
            kind = "driver open files: " + os.path.basename(opened.path).split(".out.tfevents")[0]
            sizes[kind] = sizes.get(kind, 0) + 1
        self.snapshots.append(Snapshot(count, time.perf_counter() - self._start, process.memory_info().rss,
                                       process.num_threads(), len(process.open_files()), searcher_bytes, searcher_s,
                                       scheduler_bytes, scheduler_s, len(ray.cloudpickle.dumps(self._trials)), sizes,
                                       end))


@dataclass
class FloodResult:
    """What one flood case measured (see the module docstring)."""

    case: str
    asked: int
    finished: int
    errored: int
    results: int
    wall: float
    peak_rss: int
    rss_before: int
    ray_rss_end: int
    suggest: CallTimer
    decisions: Optional[CallTimer]
    snapshots: list
    count: str
    experiment_path: str


def run_flood(name: str, trials: int, storage: str, seed: int = 0, time_budget: Optional[float] = None,
              marks: Optional[list[int]] = None) -> FloodResult:
    """Run one flood case through ``tune.Tuner`` and return its measurements (Ray must be initialised)."""
    case = build_case(name, trials, seed)
    marks = marks or sorted({*checkpoints(trials), *(round(trials * k / 10) for k in range(1, 11))})
    callback = TensorBoardCallback(space=PARAM_SPACE, metrics=[case.metric],
                                   scheduler=None if isinstance(case.scheduler, DyHPOScheduler) else case.scheduler)
    callback = callback if case.tensorboard else None
    probe = FloodProbe(case, marks, callback)
    tuner = tune.Tuner(
        case.trainable, param_space=PARAM_SPACE,
        tune_config=tune.TuneConfig(search_alg=case.searcher, scheduler=case.scheduler, metric=case.metric,
                                    mode="min", num_samples=-1 if name == "dyhpo" else trials,
                                    max_concurrent_trials=CONCURRENT, reuse_actors=True, time_budget_s=time_budget),
        run_config=tune.RunConfig(storage_path=storage, name=name, verbose=0,
                                  callbacks=([callback] if callback else []) + [probe],
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    observations = (lambda: probe.results) if name == "dyhpo" else (lambda: len(case.searcher.observations))
    suggest = CallTimer(case.searcher, "suggest", observations)
    decisions = CallTimer(case.scheduler, "on_trial_result", observations) if name == "dyhpo" else None
    before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    with MemorySampler() as memory:
        grid = tuner.fit()
    wall = time.perf_counter() - start
    ray_rss = sum(child.memory_info().rss for child in psutil.Process().children(recursive=True))
    return FloodResult(name, trials, probe.finished, probe.errored, probe.results, wall, memory.peak, before,
                       ray_rss, suggest, decisions, probe.snapshots, case.count, grid.experiment_path)


def suggest_cost(name: str, counts: list[int], repeats: int = 5, seed: int = 0) -> dict[int, list[float]]:
    """Seconds of ``suggest`` at each observation count, without Ray running trials: the searcher is filled
    up to the count with random configurations evaluated on :func:`objective` (``add_evaluated_point``),
    CONCURRENT - 1 suggested trials are pending (fantasized), then ``repeats`` suggestions are timed, each
    finished right away. Only for the searchers that stand alone (not DyHPO, which needs its scheduler)."""
    from tunekit.space import Space

    case = build_case(name, max(counts) + CONCURRENT + repeats, seed)
    searcher, space = case.searcher, Space.from_tune(PARAM_SPACE)
    searcher.set_search_properties(case.metric, "min", PARAM_SPACE)
    searcher.set_max_concurrency(CONCURRENT)
    rng = np.random.default_rng(seed)
    seconds: dict[int, list[float]] = {}
    for count in sorted(counts):
        while len(searcher.observations) < count:
            config = space.sample(1, seed=rng)[0]
            searcher.add_evaluated_point(space.unflatten(config), objective(config))
        pending = {f"pending-{count}-{k}": None for k in range(CONCURRENT - 1)}
        for trial_id in pending:
            pending[trial_id] = space.flatten(searcher.suggest(trial_id))
        seconds[count] = []
        for k in range(repeats):
            trial_id = f"timed-{count}-{k}"
            start = time.perf_counter()
            config = searcher.suggest(trial_id)
            seconds[count].append(time.perf_counter() - start)
            searcher.on_trial_complete(trial_id, {case.metric: objective(space.flatten(config))})
        for trial_id, config in pending.items():
            searcher.on_trial_complete(trial_id, {case.metric: objective(config)})
    return seconds


def suggest_cost_table(names: list[str], counts: list[int], repeats: int, seed: int) -> list[str]:
    lines = [f"Seconds per `suggest` without Ray trials ({CONCURRENT - 1} pending, {repeats} timed calls per "
             "count; the observations are random configurations given through `add_evaluated_point`).", "",
             "| searcher | observations | median s | max s |", "| --- | --- | --- | --- |"]
    for name in names:
        for count, seconds in suggest_cost(name, counts, repeats, seed).items():
            lines.append(f"| {name} | {count} | {np.median(seconds):.3f} | {max(seconds):.3f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def checkpoints(trials: int) -> list[int]:
    """The 100 / 500 / 1,000 points, scaled to ``trials`` (a tenth, a half, all)."""
    return [max(1, round(trials / 10)), max(1, round(trials / 2)), trials]


def at_mark(result: FloodResult, mark: int) -> Optional[Snapshot]:
    """The first snapshot taken during the run at or after ``mark`` (the last one when the run ended before)."""
    during = [s for s in result.snapshots if not s.end]
    later = [s for s in during if s.count >= mark]
    return later[0] if later else (during[-1] if during else None)


def growth(result: FloodResult) -> list[tuple[str, list[int], float, str]]:
    """Per container: sizes at the 100/500/1,000 points and at the end, growth per counted unit over the second
    half of the run, and a verdict. A container *grows* when its size at the last point of the run exceeds
    GROWTH_FACTOR times the largest size it had in the first half (linear growth doubles; a bounded queue or
    cache does not); a growing one is "expected: <why>" (EXPECTED_GROWTH) or "UNBOUNDED", the rest "bounded"."""
    during = [s for s in result.snapshots if not s.end]
    if len(during) < 2:
        return []
    last, end = during[-1], result.snapshots[-1]
    first_half = [s for s in during if s.count <= last.count / 2] or during[:1]
    half = first_half[-1]
    rows = []
    for path in sorted(set(last.sizes) | set(end.sizes)):
        slope = (last.sizes.get(path, 0) - half.sizes.get(path, 0)) / max(last.count - half.count, 1)
        sizes = [at_mark(result, mark).sizes.get(path, 0) for mark in checkpoints(result.asked)]
        sizes.append(end.sizes.get(path, 0))
        earlier = max(s.sizes.get(path, 0) for s in first_half)
        if last.sizes.get(path, 0) <= max(GROWTH_FACTOR * earlier, earlier + MIN_GROWTH) or "(maxlen" in path:
            verdict = "bounded"
        else:
            why = [text for prefix, text in EXPECTED_GROWTH.items() if path.startswith(prefix)]
            verdict = f"expected: {why[0]}" if why else "UNBOUNDED"
        rows.append((path, sizes, slope, verdict))
    return rows


def _mb(value: Optional[int]) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def _kb(value: Optional[int]) -> str:
    return "-" if value is None else f"{value / 1024:.1f}"


def _timed(timer: Optional[CallTimer], count: int) -> str:
    near = timer.near(count) if timer is not None else None
    return "-" if near is None else f"{near[0]:.4f} ({near[1]}-{near[2]})"


def summary_table(results: list[FloodResult]) -> list[str]:
    lines = ["| case | trials asked | finished | errored | results | wall s | peak driver RSS MB | driver RSS "
             "before MB | Ray processes RSS at end MB |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r.case} | {r.asked} | {r.finished} | {r.errored} | {r.results} | {r.wall:.0f} | "
                     f"{_mb(r.peak_rss)} | {_mb(r.rss_before)} | {_mb(r.ray_rss_end)} |")
    return lines


def points_table(results: list[FloodResult]) -> list[str]:
    lines = ["At each point (count = trials finished; DyHPO: results, i.e. observed epochs; end = after the "
             "experiment ended). Suggest: median s of the 10 last answered `suggest` calls at or below that many "
             "observations (their observation range); DyHPO decision: the same for "
             "`DyHPOScheduler.on_trial_result`. Save: the searcher's / scheduler's own `save`. Ray's Trial "
             "objects: the driver's list of trials, pickled (Ray's own per-trial bookkeeping, for scale).", "",
             "| case | count | elapsed s | driver RSS MB | threads | open files | suggest s (obs) | "
             "DyHPO decision s (obs) | searcher save KB | searcher save s | scheduler save KB | scheduler save s | "
             "Ray's Trial objects KB |", "|" + " --- |" * 13]
    for r in results:
        points = [at_mark(r, mark) for mark in checkpoints(r.asked)] + r.snapshots[-1:]
        for s in [s for k, s in enumerate(points) if s is not None and s not in points[:k]]:
            sched_s = "-" if s.scheduler_save_s is None else f"{s.scheduler_save_s:.3f}"
            lines.append(f"| {r.case} | {s.count}{' (end)' if s.end else ''} | {s.seconds:.0f} | {_mb(s.rss)} | "
                         f"{s.threads} | {s.open_files} | {_timed(r.suggest, s.count)} | "
                         f"{_timed(r.decisions, s.count)} | {_kb(s.searcher_bytes)} | {s.searcher_save_s:.3f} | "
                         f"{_kb(s.scheduler_bytes)} | {sched_s} | {_kb(s.ray_trials_bytes)} |")
    return lines


def growth_table(results: list[FloodResult]) -> list[str]:
    lines = ["State growth: containers that grew (length at the three points and after the experiment ended, "
             f"growth per counted unit over the second half of the run; growing: more than {GROWTH_FACTOR} times "
             f"the largest length of the first half, and by more than {MIN_GROWTH}), and deques with a maximum "
             "length; the others are left out.", "",
             "| case | container | sizes | per unit | verdict |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        for path, sizes, slope, verdict in growth(r):
            if verdict != "bounded" or "(maxlen" in path:
                lines.append(f"| {r.case} | `{path}` | {' / '.join(map(str, sizes))} | {slope:.2f} | {verdict} |")
    return lines


def markdown(results: list[FloodResult]) -> str:
    """The summary, per-point and state-growth tables."""
    return "\n".join(summary_table(results) + [""] + points_table(results) + [""] + growth_table(results))


def main(argv: Optional[list[str]] = None) -> list[FloodResult]:
    """Run the chosen flood cases one after another and print the Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials per case (DyHPO: observed epochs)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {','.join(CASES)}")
    parser.add_argument("--time-budget", type=float, default=3600.0, help="seconds per case before Ray stops it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suggest-cost", action="store_true",
                        help="only time suggest at the three observation counts, without Ray (not DyHPO/schedulers)")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    for name in names:
        if name not in CASES or (args.suggest_cost and name not in STANDALONE):
            parser.error(f"--cases: {name!r} is not one of {', '.join(STANDALONE if args.suggest_cost else CASES)}")
    if args.suggest_cost:
        table = suggest_cost_table(names, checkpoints(args.trials), 5, args.seed)
        print(f"\n## Suggestion cost (load average {_load()})\n\n" + "\n".join(table))
        return []
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address="local", num_cpus=CONCURRENT, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="tunekit_flood_") as storage:
            for name in names:
                results.append(run_flood(name, args.trials, storage, args.seed, args.time_budget))
                print(f"## {name}: {results[-1].finished} trials in {results[-1].wall:.0f} s (load average "
                      f"{_load()})\n\n{markdown(results[-1:])}\n", flush=True)
    finally:
        if started_ray:
            ray.shutdown()
    print(f"## All cases\n\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, Ray {ray.__version__}; load average at the end {_load()}\n")
    print("\n".join(summary_table(results)))
    return results


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
