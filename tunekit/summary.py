"""What an experiment folder says about its trials: one record per trial folder, results.csv and best.json.

Built from the files :mod:`tunekit.command_trainable` writes into each trial folder (status.json,
params.json, results.json, progress.jsonl), so it needs no Ray and works on an interrupted experiment too.
Statuses: ``succeeded``, ``failed`` (with the reason), ``stopped`` (by the scheduler, with the metric of its
last report) and ``unfinished`` (running, or cut off by an interruption).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from tunekit.command_trainable import FAILURE_FILE, STATUS_FILE, TRIAL_FILES

logger = logging.getLogger(__name__)

RESULTS_CSV = "results.csv"
# What a trial folder's status.json may say; "running" is read as "unfinished" (nothing runs when it is read).
STATUSES = ("succeeded", "failed", "stopped", "unfinished")
BEST_JSON = "best.json"
STORED_FILE = "experiment.toml"


@dataclass
class TrialRecord:
    """One trial as its folder tells it; ``config`` is flat ("opt/lr"), ``value`` the metric (None if none)."""

    trial_id: str
    status: str
    trial_dir: Path
    config: dict
    value: Optional[float] = None
    reason: str = ""
    results: dict = field(default_factory=dict)
    duration_s: Optional[float] = None
    progress_reports: int = 0
    started_at: float = 0.0


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict:
    """``{"opt": {"lr": 1}}`` -> ``{"opt/lr": 1}`` (the path names of :class:`tunekit.Space`)."""
    flat = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def _read_json(path: Path) -> Any:
    """The JSON data in ``path``, or None when it is missing or not JSON (parsed as data, never evaluated)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def read_progress(trial_dir: Path) -> list[dict]:
    """The JSON objects a trial appended to its progress file (malformed lines skipped)."""
    path = trial_dir / TRIAL_FILES["progress_path"]
    if not path.is_file():
        return []
    reports = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            report = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(report, dict):
            reports.append(report)
    return reports


def _short_reason(status: dict, trial_dir: Path) -> str:
    """The reason plus the last line of stderr, on one line (the full text is in failure.txt)."""
    reason = str(status.get("reason") or "")
    tail = [line for line in str(status.get("stderr_tail") or "").splitlines() if line.strip()]
    if not reason and (trial_dir / FAILURE_FILE).is_file():
        reason = (trial_dir / FAILURE_FILE).read_text(errors="replace").splitlines()[0]
    return f"{reason}; stderr: {tail[-1].strip()}" if tail else reason


def read_trial(trial_dir: Path, metric: str) -> Optional[TrialRecord]:
    """The record of one trial folder, or None when it is not a tunekit trial folder."""
    status = _read_json(trial_dir / STATUS_FILE)
    params = _read_json(trial_dir / TRIAL_FILES["params_path"])
    if not isinstance(status, dict) or not isinstance(params, dict):
        return None
    trial_id, state = status.get("trial_id"), status.get("status")
    record = TrialRecord(
        trial_id=trial_id if isinstance(trial_id, str) else trial_dir.name.removeprefix("trial_"),
        status=state if state in STATUSES else "unfinished", trial_dir=trial_dir, config=flatten(params),
        duration_s=_number(status.get("duration_s")), progress_reports=_count(status.get("progress_reports")),
        started_at=_number(status.get("started_at")) or 0.0)
    if record.status == "succeeded":
        results = _read_json(trial_dir / TRIAL_FILES["results_path"])
        record.results = results if isinstance(results, dict) else {}
        record.value = _number(record.results.get(metric))
    elif record.status == "failed":
        record.reason = _short_reason(status, trial_dir)
    else:
        reports = read_progress(trial_dir)
        record.value = _number(reports[-1].get(metric)) if reports else None
    return record


def collect_trials(experiment_dir: Path, metric: str, ray_errors: Optional[Mapping[str, str]] = None) -> list:
    """Records of every trial folder in start order; ``ray_errors`` (folder name -> error) fills in trials
    Ray failed outside the program (a lost worker)."""
    records = []
    for trial_dir in sorted(Path(experiment_dir).glob("trial_*")):
        record = read_trial(trial_dir, metric)
        if record is None:
            continue
        error = (ray_errors or {}).get(trial_dir.name)
        if error and record.status == "unfinished":
            record.status, record.reason = "failed", error.strip().splitlines()[-1]
        records.append(record)
    return sorted(records, key=lambda record: (record.started_at, record.trial_id))


def has_result(record: TrialRecord) -> bool:
    """True for a trial that ended with a finite metric: succeeded, or stopped by Ray (a scheduler stops
    trials early, and ASHA also stops those that reach ``max_t``) after reporting it."""
    return record.status in ("succeeded", "stopped") and record.value is not None and math.isfinite(record.value)


def best_trial(records: list, mode: str) -> Optional[TrialRecord]:
    """The trial with the best final metric (lowest for "min", highest for "max") among those
    :func:`has_result` accepts; like Ray's ``get_best_result``, the last reported value counts."""
    finished = [record for record in records if has_result(record)]
    if not finished:
        return None
    pick = min if mode == "min" else max
    return pick(finished, key=lambda record: record.value)


def experiment_metric(experiment_dir: Path) -> tuple[str, str]:
    """The metric and mode of the experiment file stored in ``experiment_dir``."""
    stored = Path(experiment_dir) / STORED_FILE
    try:
        table = tomllib.loads(stored.read_text())["experiment"]
        metric, mode = table["metric"], table["mode"]
    except (OSError, KeyError, TypeError, ValueError, RecursionError) as error:
        raise ValueError(f"{str(experiment_dir)!r} is not a tunekit experiment folder (cannot read "
                         f"{STORED_FILE}: {type(error).__name__}: {error})") from None
    if not isinstance(metric, str) or mode not in ("min", "max"):
        raise ValueError(f"{str(experiment_dir)!r} is not a tunekit experiment folder ({STORED_FILE} gives "
                         f"metric={metric!r}, mode={mode!r})")
    return metric, mode


def write_results_csv(path: Path, records: list, metric: str) -> None:
    """One row per trial: id, status, metric, reason, duration, reports, config/..., result/..."""
    config_keys = sorted({key for record in records for key in record.config})
    result_keys = sorted({key for record in records for key in record.results if key != metric})
    header = ["trial_id", "status", metric, "failure_reason", "duration_s", "progress_reports",
              *(f"config/{key}" for key in config_keys), *(f"result/{key}" for key in result_keys)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in records:
            writer.writerow([r.trial_id, r.status, "" if r.value is None else r.value, r.reason, r.duration_s,
                             r.progress_reports, *(_cell(r.config.get(key)) for key in config_keys),
                             *(_cell(r.results.get(key)) for key in result_keys)])


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else ("" if value is None else value)


def counts(records: list) -> dict:
    """How many trials ended in each status."""
    tally: dict = {}
    for record in records:
        tally[record.status] = tally.get(record.status, 0) + 1
    return tally


def write_summary(experiment_dir: Path, metric: str, mode: str,
                  ray_errors: Optional[Mapping[str, str]] = None) -> dict:
    """Write results.csv and best.json into ``experiment_dir``; return what best.json holds."""
    experiment_dir = Path(experiment_dir)
    records = collect_trials(experiment_dir, metric, ray_errors)
    write_results_csv(experiment_dir / RESULTS_CSV, records, metric)
    best = best_trial(records, mode)
    summary = {
        "metric": metric, "mode": mode, "trials": counts(records),
        "best": None if best is None else {
            "trial_id": best.trial_id, metric: best.value, "config": best.config, "results": best.results,
            "trial_dir": str(best.trial_dir)},
    }
    (experiment_dir / BEST_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("wrote %s and %s in %s", RESULTS_CSV, BEST_JSON, experiment_dir)
    return summary
