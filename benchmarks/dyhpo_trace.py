"""Where DyHPO's workers sit idle: the utilization run of ``dyhpo.py --utilization`` with Ray's trial statuses
and DyHPO's own view sampled every 0.25 s.

Prints the share of worker time in epochs, the idle worker-seconds by cause (``dyhpo.idle_breakdown``), when
each worker process trained its last epoch, the seconds during which Ray ran fewer trials than workers while
a trial waited PENDING, the longest unbroken PENDING waits, and (read from Ray's controller, a diagnostic
only) the seconds after the first epoch during which Ray was starting a new worker process for a trial
instead of reusing a cached one, and how many actors Ray was stopping.

    python benchmarks/dyhpo_trace.py [--budget 400] [--epoch-seconds 1.0] [--json TRACE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

import dyhpo as bench  # noqa: E402
import ray  # noqa: E402
import ray.cloudpickle  # noqa: E402
from ray import tune  # noqa: E402

from tunekit.schedulers import DyHPOScheduler  # noqa: E402
from tunekit.searchers import DyHPOSearch  # noqa: E402
from tunekit.space import Space  # noqa: E402

WORKERS = 4
SAMPLE_S = 0.25


class ProbedScheduler(DyHPOScheduler):
    """DyHPO's scheduler that also keeps Ray's controller, so the sampler can read its actor bookkeeping."""

    controller = None

    def choose_trial_to_run(self, tune_controller):
        ProbedScheduler.controller = getattr(tune_controller, "_tune_controller", None)
        return super().choose_trial_to_run(tune_controller)


class Sampler(tune.Callback):
    """Keeps Ray's trial list and every epoch's (trial, epoch, start, end, worker pid); a thread samples statuses."""

    def __init__(self, searcher: DyHPOSearch):
        self.searcher, self.trials, self.epochs, self.samples, self.stop = searcher, None, [], [], False

    def on_step_begin(self, iteration, trials, **info):
        self.trials = trials

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.epochs.append((trial.trial_id, result["epoch"], result["epoch_started"], result["epoch_ended"],
                            result["worker_pid"]))

    def sample(self) -> None:
        while not self.stop:
            if self.trials is not None:
                statuses = {trial.trial_id: trial.status for trial in list(self.trials)}
                curves = self.searcher._dyhpo.curves
                controller = ProbedScheduler.controller
                starting = controller._actor_manager.num_pending_actors if controller is not None else 0
                stopping = len(controller._stopping_actors) if controller is not None else 0
                self.samples.append((time.time(), Counter(statuses.values()),
                                     {tid: curves[tid].status if tid in curves else "?"
                                      for tid, status in statuses.items() if status == "PENDING"}, starting, stopping))
            time.sleep(SAMPLE_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=400, help="total epochs")
    parser.add_argument("--epoch-seconds", type=float, default=1.0)
    parser.add_argument("--json", type=Path, default=None, help="write the samples and epochs here")
    args = parser.parse_args()
    ray.cloudpickle.register_pickle_by_value(bench)  # the workers cannot import the benchmarks folder
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False, configure_logging=False)
    space = Space.from_tune({"x": tune.uniform(0.0, 1.0), "seconds": args.epoch_seconds})
    searcher = DyHPOSearch(space=space, metric="metric", mode="min", max_epochs=bench.UTILIZATION_MAX_EPOCHS,
                           max_budget=args.budget, seed=0)
    sampler = Sampler(searcher)
    threading.Thread(target=sampler.sample, daemon=True).start()
    started, ended = bench.fit_sleepy(sampler, workers=WORKERS, search_alg=searcher,
                                     scheduler=ProbedScheduler(searcher))
    sampler.stop = True
    wall = ended - started
    busy = sum(end - start for _, _, start, end, _ in sampler.epochs)
    print(f"{searcher._dyhpo.spent} epochs of {args.epoch_seconds} s, {WORKERS} workers, {wall:.1f} s wall: "
          f"busy {100 * busy / (WORKERS * wall):.0f} %; decisions {dict(searcher._dyhpo.counts)}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("idle worker-seconds:", bench.idle_breakdown(sampler.epochs, started, ended))
    last = {}
    for _, _, _, end, pid in sampler.epochs:
        last[pid] = max(last.get(pid, 0.0), end - started)
    print("last epoch end per worker process (s):", {pid: round(t, 1) for pid, t in sorted(last.items())})
    starved = sum(SAMPLE_S for _, counts, pending, _, _ in sampler.samples if pending and counts["RUNNING"] < WORKERS)
    print(f"seconds with a trial PENDING while Ray ran fewer than {WORKERS} trials: {starved:.1f}")
    first_epoch = min(start for _, _, start, _, _ in sampler.epochs)
    restarting = sum(SAMPLE_S for moment, _, _, starting, _ in sampler.samples if moment > first_epoch and starting)
    print(f"seconds after the first epoch with Ray starting a new worker process: {restarting:.1f}")
    stopping = [count for *_, count in sampler.samples]
    print(f"actors Ray was stopping: at most {max(stopping, default=0)}, some during "
          f"{SAMPLE_S * sum(1 for count in stopping if count):.1f} s")
    waits, open_since = [], {}
    for moment, _, pending, _, _ in sampler.samples:
        for trial_id in [tid for tid in open_since if tid not in pending]:
            waits.append((moment - open_since.pop(trial_id), trial_id))
        for trial_id in pending:
            open_since.setdefault(trial_id, moment)
    print("longest unbroken PENDING waits (s):", [(trial_id, round(wait, 1)) for wait, trial_id in sorted(waits)[-5:]])
    if args.json:
        args.json.write_text(json.dumps({"started": started, "epochs": sampler.epochs,
                                         "samples": [(t - started, dict(c), p, n, m) for t, c, p, n, m in sampler.samples]}))


if __name__ == "__main__":
    main()
