"""The ``tunekit`` command: ``run``, ``show``, ``plot`` and ``validate`` experiment files.

Bad input (a file that does not validate, a folder that is no experiment) prints one line naming the file
and the key and exits with code 2, before anything starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
EXIT_NO_RESULT = 1


class BadInput(Exception):
    """A user error the command reports as one line with exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunekit", description="Tune external programs with Ray Tune.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an experiment file, or continue its interrupted run")
    run.add_argument("file", type=Path, help="experiment .toml file")
    run.add_argument("--restart", action="store_true",
                     help="start afresh; an earlier run's folder is moved aside, not continued")
    run.add_argument("--quiet", action="store_true", help="no Ray progress tables")
    run.add_argument("--address", default=None,
                     help="Ray to run on: 'local' (a new one, default), 'auto' or a cluster address "
                          "(default: $RAY_ADDRESS, else 'local')")
    show = commands.add_parser("show", help="table of trials and the best one")
    show.add_argument("path", type=Path, help="experiment folder, or the experiment .toml file")
    plot = commands.add_parser("plot", help="PNG plots: metric over trials, learning curves")
    plot.add_argument("path", type=Path, help="experiment folder, or the experiment .toml file")
    plot.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: PATH/plots)")
    validate = commands.add_parser("validate", help="check an experiment file without running it")
    validate.add_argument("file", type=Path, help="experiment .toml file")
    return parser


def _load(path: Path):
    from tunekit.experiment import ExperimentFileError, load_experiment

    try:
        return load_experiment(path)
    except ExperimentFileError as error:
        raise BadInput(str(error)) from None


def _experiment_dir(path: Path) -> Path:
    """The experiment folder named by ``path``: the folder itself, or the one an experiment file runs in."""
    if path.is_file():
        return _load(path).experiment_dir
    if not path.is_dir():
        raise BadInput(f"{path}: no such experiment folder or file")
    return path


def _records(path: Path):
    from tunekit.summary import collect_trials, experiment_metric

    folder = _experiment_dir(path)
    try:
        metric, mode = experiment_metric(folder)
    except ValueError as error:
        raise BadInput(str(error)) from None
    return folder, metric, mode, collect_trials(folder, metric)


def _format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def _short(value: object, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def command_show(path: Path) -> int:
    from tunekit.summary import best_trial, counts

    folder, metric, mode, records = _records(path)
    names = sorted({key for record in records for key in record.config})
    rows = [["trial", "status", metric, *names, "reason"]]
    for r in records:
        rows.append([r.trial_id, r.status, "" if r.value is None else f"{r.value:.6g}",
                     *(_short(r.config.get(name), 20) for name in names), _short(r.reason)])
    print(f"{folder}: {len(records)} trials, {counts(records)}")
    print(_format_table(rows))
    best = best_trial(records, mode)
    if best is None:
        print(f"best: none (no trial ended with a finite {metric})")
    else:
        print(f"best: {best.trial_id}  {metric}={best.value:.6g}  {json.dumps(best.config)}")
    return 0


def command_plot(path: Path, out: Optional[Path]) -> int:
    from tunekit.plots import plot_experiment

    folder, metric, mode, records = _records(path)
    for written in plot_experiment(records, metric, mode, out or folder / "plots"):
        print(written)
    return 0


def command_validate(path: Path) -> int:
    experiment = _load(path)
    settings = experiment.settings
    print(f"{path}: ok: {len(experiment.space)} parameters, searcher {experiment.searcher.name}, scheduler "
          f"{experiment.scheduler.name}, {settings.num_samples} samples, {settings.mode} {settings.metric}, "
          f"folder {experiment.experiment_dir}")
    return 0


def command_run(path: Path, restart: bool, quiet: bool, address: Optional[str]) -> int:
    from tunekit.experiment import ExperimentFileError, run_experiment

    experiment = _load(path)
    try:
        summary = run_experiment(experiment, restart=restart, verbose=0 if quiet else 1, address=address)
    except ExperimentFileError as error:
        raise BadInput(str(error)) from None
    folder = experiment.experiment_dir
    print(f"{folder}: trials {summary['trials']}; results.csv and best.json written")
    best = summary["best"]
    if best is None:
        print(f"best: none (no trial ended with a finite {summary['metric']})")
        return EXIT_NO_RESULT
    print(f"best: {best['trial_id']}  {summary['metric']}={best[summary['metric']]:.6g}  "
          f"{json.dumps(best['config'])}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``tunekit`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return command_run(args.file, args.restart, args.quiet, args.address)
        if args.command == "show":
            return command_show(args.path)
        if args.command == "plot":
            return command_plot(args.path, args.out)
        return command_validate(args.file)
    except BadInput as error:
        from tunekit.experiment import printable

        print(f"tunekit: error: {printable(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
