"""Driver killed: every tunekit searcher/scheduler combination SIGKILLed at many points, restored, finished.

For each combination one experiment is run by a child driver (tests/reliability/kill_child.py, its own local
Ray) that is SIGKILLed (with the Ray it started) at ``--random-kills`` random moments (uniform over
``--max-kill-s`` seconds after its trials started reporting, seeded by ``--seed``) plus two targeted ones: while
the searcher is inside ``save`` and while Ray holds a trial PAUSED (for the schedulers that pause). After each
kill ``tune.Tuner.restore`` continues it; after the last one it runs to its end. The judge
(tests/reliability/kill_harness.py) reads the event log the driver and its trials wrote:

* kills survived: the next driver restored the searcher's observations (and the scheduler's state) as of Ray's
  last experiment snapshot before the kill, and the experiment went on;
* finished results lost (must be 0): a trial the searcher had observed as finished before a kill that is not
  in the final results with the same value, or that the searcher does not know at the end;
* trials re-run: trials finished before a kill that ran again after it, because the kill came before Ray's
  next experiment snapshot recorded them (bounded by the snapshot period, ``TUNE_GLOBAL_CHECKPOINT_S``);
* restored exactly: kills after which the restored searcher (and scheduler) equal their state at the kill;
* paused trials resumed from their checkpoint vs from scratch;
* same next suggestion (one-trial-at-a-time runs only): every suggestion of the killed run, restored ones
  included, equals the uninterrupted run's suggestion with the same index.

    python benchmarks/reliability_kill.py [--random-kills 10] [--combinations gp_ei+asha_stopping ...]
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))

from kill_harness import KillReport, judge_folder, run_with_kills  # noqa: E402

#: Every tunekit searcher with every tunekit scheduler rule it can drive; "+fifo" runs one trial at a time
#: (Ray's FIFO scheduler) so that its suggestions can be compared with an uninterrupted run.
COMBINATIONS = ("gp_ei+asha_stopping", "nevergrad+asha_promotion", "gp_ei+median", "nevergrad+median_pause",
                "dyhpo+dyhpo", "gp_ei+fifo", "nevergrad+fifo")
PAUSING = ("asha_promotion", "median_pause", "dyhpo")


def kill_plan(combination: str, random_kills: int, max_kill_s: float, rng: random.Random) -> list:
    """Random kill moments, with a kill inside ``save`` and (for pausing schedulers) one while paused mixed in."""
    kills = [("random", round(rng.uniform(0.2, max_kill_s), 2)) for _ in range(random_kills)]
    kills.insert(len(kills) // 3, ("save", 30.0))
    if combination.split("+")[1] in PAUSING:
        kills.insert(2 * len(kills) // 3, ("paused", 5.0))
    return kills


def same_suggestions(killed: KillReport, reference: KillReport) -> tuple[int, int]:
    """(suggestions of the killed run equal to the reference's at the same index, suggestions compared)."""
    by_index = {event["index"]: event["config"] for event in reference.suggested}
    compared = [event for event in killed.suggested if event["index"] in by_index]
    return sum(event["config"] == by_index[event["index"]] for event in compared), len(compared)


def row(report: KillReport, same: Optional[tuple]) -> str:
    paused = f"{report.paused_resumed} / {len(report.paused_from_scratch)}"
    suggestion = "-" if same is None else f"{same[0]} / {same[1]}"
    return (f"| {report.combination} | {report.kills_injected} | {report.kills_survived} | "
            f"{len(report.results_lost)} | {len(report.reruns)} | {report.restored_exactly} | {paused} | {suggestion} | "
            f"{report.final_trials} / {report.asked_trials} | {report.seconds:.0f} |")


def main(argv: Optional[Sequence[str]] = None) -> list[KillReport]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--combinations", nargs="+", default=list(COMBINATIONS), choices=COMBINATIONS)
    parser.add_argument("--random-kills", type=int, default=10)
    parser.add_argument("--max-kill-s", type=float, default=8.0,
                        help="latest random kill, in seconds after the life's first trial report")
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--step-s", type=float, default=0.3)
    parser.add_argument("--snapshot-s", default="1", help="TUNE_GLOBAL_CHECKPOINT_S for the drivers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="combinations run at the same time")
    parser.add_argument("--work-dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--judge-only", action="store_true", help="judge the runs already in --work-dir again")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="reliability_kill_"))
    print(f"# Driver killed ({platform.node()}, Python {platform.python_version()}, seed {args.seed}, "
          f"{args.num_samples} trials x {args.steps} steps of {args.step_s} s, snapshot every {args.snapshot_s} s)\n")
    print("| combination | kills injected | kills survived | finished results lost | trials re-run | "
          "restored exactly | paused resumed / from scratch | same next suggestion | trials final / asked | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    plans = {combination: kill_plan(combination, args.random_kills, args.max_kill_s, rng)
             for combination in args.combinations}
    common = dict(num_samples=args.num_samples, steps=args.steps, step_s=args.step_s, seed=args.seed,
                  snapshot_s=args.snapshot_s)

    def run(combination: str) -> tuple:
        folder = root / combination.replace("+", "_")
        if args.judge_only:
            killed = judge_folder(folder / "killed", combination, args.num_samples)
            reference = judge_folder(folder / "reference", combination, args.num_samples) if (
                folder / "reference").exists() else None
        else:
            killed = run_with_kills(folder / "killed", combination, plans[combination], **common)
            reference = (run_with_kills(folder / "reference", combination, [], **common)
                         if combination.endswith("+fifo") else None)
        return killed, None if reference is None else same_suggestions(killed, reference)

    with ThreadPoolExecutor(args.jobs) as pool:
        outcomes = []
        for report, same in pool.map(run, args.combinations):
            print(row(report, same), flush=True)
            outcomes.append(report)
    for report in outcomes:
        for problem in report.errors + report.results_lost + report.paused_from_scratch:
            print(f"  {report.combination}: {problem}")
    reports = outcomes
    print(f"\nruns kept in {root}")
    return reports


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"total {time.time() - started:.0f} s")
