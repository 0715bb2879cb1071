"""Run kill_child.py, SIGKILL it at chosen points, restore it until it finishes, and judge what survived.

Shared by tests/reliability/test_driver_kill.py (a few kills) and benchmarks/reliability_kill.py (the sweep).
A kill point is one of:

* ``("random", seconds)``: that many seconds after the driver's trials started reporting in this life;
* ``("save", seconds)``: while the searcher sleeps inside ``save`` (``seconds`` is the sleep);
* ``("paused", seconds)``: once Ray holds a trial PAUSED in this life, as soon as the experiment snapshot in
  the experiment folder records it (or after ``seconds`` at most).

Every kill takes the driver's whole process group (the driver and the local Ray it started), as a crashed
machine would. What was true just before each kill is read from the event log the child writes (see
kill_child.py) and compared with what the next life restored and with the final results.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import ray.cloudpickle

CHILD = Path(__file__).resolve().parent / "kill_child.py"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class KillReport:
    """What one combination's run with kills came to (see ``judge``)."""

    combination: str
    kills_injected: int = 0
    kills_survived: int = 0
    results_lost: list = field(default_factory=list)
    reruns: list = field(default_factory=list)
    observations_differing: list = field(default_factory=list)
    scheduler_differing: list = field(default_factory=list)
    scheduler_restored: list = field(default_factory=list)
    restored_exactly: int = 0
    paused_from_scratch: list = field(default_factory=list)
    paused_resumed: int = 0
    final_trials: int = 0
    asked_trials: int = 0
    errors: list = field(default_factory=list)
    suggested: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (not self.results_lost and not self.paused_from_scratch and not self.errors
                and self.final_trials == self.asked_trials and self.kills_survived == self.kills_injected)


def read_events(log_dir: Path) -> list[dict]:
    path = log_dir / "events.jsonl"
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by the kill
    return events


def kill_processes_using(folder: Path) -> None:
    """SIGKILL every process whose command line names ``folder`` (a Ray temp folder only this harness uses)."""
    needle = str(folder).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


class Driver:
    """One life of the child driver, in its own process group and its own Ray temp folder."""

    def __init__(self, spec: dict, work_dir: Path, life: int, env: Optional[dict] = None, snapshot_s: str = "0"):
        spec_path = work_dir / f"spec-{life}.json"
        spec_path.write_text(json.dumps(spec))
        # short: Ray's socket paths under it must stay within AF_UNIX's 107 bytes
        ray_tmp = self.ray_tmp = Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))
        environ = dict(os.environ)
        environ.update({"RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": os.pathsep.join(
            p for p in (environ.get("PYTHONPATH"), str(ROOT)) if p),
            "RAY_AIR_NEW_OUTPUT": "0", "RAY_DEDUP_LOGS": "0", "TUNE_GLOBAL_CHECKPOINT_S": snapshot_s})
        for name in ("RAY_ADDRESS", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"):
            environ.pop(name, None)
        environ.update(env or {})
        self.output = open(work_dir / f"driver-{life}.log", "w")
        self.process = subprocess.Popen([sys.executable, str(CHILD), str(spec_path)], cwd=work_dir, env=environ,
                                        stdout=self.output, stderr=subprocess.STDOUT, start_new_session=True)
        self.started = time.time()

    def kill(self) -> None:
        """SIGKILL the driver's process group, then the Ray workers it started (they run in process groups of
        their own and would otherwise linger until they notice their raylet is gone)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.output.close()
        kill_processes_using(self.ray_tmp)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return -1
        finally:
            self.kill()


def wait_for(log_dir: Path, since: float, driver: Driver, predicate, timeout: float) -> Optional[dict]:
    """The first event of this life (``time >= since``) satisfying ``predicate``; None when the driver ended
    or ``timeout`` passed first."""
    deadline = time.time() + timeout
    while time.time() < deadline and driver.process.poll() is None:
        for event in read_events(log_dir):
            if event["time"] >= since and predicate(event):
                return event
        time.sleep(0.05)
    return None


def run_with_kills(work_dir: Path, combination: str, kills: list, num_samples: int = 8, steps: int = 4,
                   step_s: float = 0.3, seed: int = 0, num_to_keep: Optional[int] = None, snapshot_s: str = "1",
                   life_timeout: float = 240.0) -> KillReport:
    """Run ``combination`` killed at each of ``kills`` in turn (restoring after each), then to its end.

    ``snapshot_s`` is Ray's experiment snapshot period (``TUNE_GLOBAL_CHECKPOINT_S``; "0": after every event),
    ``num_to_keep`` the trials' ``CheckpointConfig(num_to_keep=...)``.
    """
    started = time.time()
    work_dir.mkdir(parents=True, exist_ok=True)
    log_dir = work_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    experiment_path = work_dir / "runs" / "exp"
    spec = {"combination": combination, "experiment_path": str(experiment_path), "log_dir": str(log_dir),
            "num_samples": num_samples, "steps": steps, "step_s": step_s, "seed": seed, "num_to_keep": num_to_keep}
    report = KillReport(combination, asked_trials=num_samples)
    kill_times, paused_in_snapshot = [], []
    for life, (kind, value) in enumerate(kills):
        env = {"KILL_SAVE_SLEEP_S": str(value), "KILL_SAVE_AFTER": "1"} if kind == "save" else {}
        driver = Driver({**spec, "restore": life > 0}, work_dir, life, env, snapshot_s)
        since = driver.started
        if kind == "save":
            hit = wait_for(log_dir, since, driver, lambda e: e["event"] == "in_save", life_timeout)
        elif kind == "paused":
            hit = wait_for(log_dir, since, driver, lambda e: e["event"] == "paused" and e["trials"], life_timeout)
            deadline = time.time() + value
            while hit is not None and time.time() < deadline and not snapshot_paused(experiment_path):
                time.sleep(0.02)
        else:
            # a report counts only once this driver has logged (a killed life's worker may still report briefly)
            own = wait_for(log_dir, since, driver, lambda e: e["pid"] == driver.process.pid, life_timeout)
            hit = own and wait_for(log_dir, own["time"], driver, lambda e: e["event"] == "report", life_timeout)
            if hit is not None:
                time.sleep(value)
        if driver.process.poll() is not None or hit is None:
            report.errors.append(f"life {life}: the driver ended (rc={driver.process.poll()}) before the {kind} kill")
            driver.kill()
            break
        driver.kill()
        kill_times.append(time.time())
        paused_in_snapshot.append(snapshot_paused(experiment_path))
        report.kills_injected += 1
    final = Driver({**spec, "restore": report.kills_injected > 0}, work_dir, len(kill_times), None, snapshot_s)
    rc = final.wait(life_timeout * 2)
    if rc != 0:
        report.errors.append(f"the final driver exited with {rc}; see {work_dir}/driver-{len(kill_times)}.log")
    report.seconds = time.time() - started
    (work_dir / "kills.json").write_text(json.dumps({"kill_times": kill_times, "paused": paused_in_snapshot,
                                                     "errors": report.errors, "seconds": report.seconds}))
    return judge_folder(work_dir, combination, num_samples)


def judge_folder(work_dir: Path, combination: str, num_samples: int) -> KillReport:
    """The report of a run folder left by ``run_with_kills`` (its event log and ``kills.json``)."""
    record = json.loads((work_dir / "kills.json").read_text())
    report = KillReport(combination, asked_trials=num_samples, errors=list(record["errors"]),
                        kills_injected=len(record["kill_times"]), seconds=record["seconds"])
    judge(report, read_events(work_dir / "logs"), record["kill_times"], record["paused"])
    return report


def lives(events: list[dict], kill_times: list[float]) -> list[list[dict]]:
    """Events split by driver life (an event belongs to the life during which it was written)."""
    bounds = kill_times + [float("inf")]
    split = [[] for _ in bounds]
    for event in events:
        index = next(i for i, bound in enumerate(bounds) if event["time"] < bound)
        split[index].append(event)
    return split


def last_state(events: list[dict], key: str) -> Optional[list]:
    """The searcher's observations (``key="observations"``) or scheduler state (``"state"``) last logged."""
    for event in reversed(events):
        if event["event"] in ("observed", "restored", "scheduler") and key in event:
            return event[key]
    return None


def judge(report: KillReport, events: list[dict], kill_times: list[float], paused_in_snapshot: list) -> None:
    """Fill ``report`` from the event log: restored state vs the state at the kill, re-runs, paused trials,
    lost results and the final count.

    A finished trial is *durable* once a restored searcher holds it (Ray's snapshot recorded it); it is *lost*
    when it is durable, or was observed at all, and the final searcher or results lack it, or (durable) hold
    another value. A trial observed before a kill but not durable runs again (a re-run), and may then take
    another course (the scheduler decides again from the snapshot), so only its presence is required.
    """
    per_life = lives(events, kill_times)
    observed, durable = {}, {}
    for number, life in enumerate(per_life):
        if number > 0:
            judge_restore(report, number, per_life[number - 1], life)
            # a trial may wait paused through a whole life (ASHA holds it for promotion): its first attempt
            # after the kill can come in any later life
            check_paused(report, paused_in_snapshot[number - 1], [e for later in per_life[number:] for e in later])
        for event in life:
            rerun = event["event"] == "attempt" and observed.get(event["trial"], number) < number
            if rerun and event["trial"] not in {r["trial"] for r in report.reruns}:
                report.reruns.append({"life": number, "trial": event["trial"], "from_step": event["step"]})
            if event["event"] in ("observed", "restored") and "observations" in event:
                for trial_id, loss in event["observations"]:
                    observed.setdefault(trial_id, number)
                    if event["event"] == "restored":
                        durable.setdefault(trial_id, loss)
    done = next((e for e in per_life[-1] if e["event"] == "done"), None)
    if done is None:
        report.errors.append("the final driver never finished")
        return
    report.final_trials = done["num_results"]
    report.errors += done["errors"]
    final = last_state(events, "observations") or []
    final_ids = [trial_id for trial_id, _ in final]
    if len(final_ids) != len(set(final_ids)):
        report.errors.append(f"a trial was observed twice: {final_ids}")
    final_losses = dict(final)
    for trial_id, life in observed.items():
        changed = trial_id in durable and final_losses.get(trial_id) != durable[trial_id]
        if changed or trial_id not in final_losses or trial_id not in done["results"]:
            report.results_lost.append({"trial": trial_id, "life": life, "durable": trial_id in durable})
    report.suggested = [e for e in events if e["event"] == "suggested"]


def judge_restore(report: KillReport, number: int, before: list[dict], after: list[dict]) -> None:
    """One kill: did the next life restore the searcher (and scheduler) state the run had at the kill?"""
    errors_before = len(report.errors)
    differing = (len(report.observations_differing), len(report.scheduler_differing))
    restored = next((e for e in after if e["event"] == "restored" and e["who"] == "searcher"), None)
    expected = last_state(before, "observations") or []
    if restored is None:
        if expected:
            report.errors.append(f"life {number}: the searcher was not restored")
            return
    elif restored["observations"] != expected:
        report.observations_differing.append({"life": number, "at_kill": expected, "restored": restored["observations"]})
        if restored["observations"] != expected[:len(restored["observations"])]:
            report.errors.append(f"life {number}: restored observations are not a state the searcher had")
    scheduler = next((e for e in after if e["event"] == "restored" and e["who"] == "scheduler"), None)
    states = [e["state"] for e in before if e["event"] in ("scheduler", "restored") and "state" in e]
    if scheduler is not None:
        report.scheduler_restored.append(scheduler["state"])
    if scheduler is not None and states and not report.combination.startswith("dyhpo"):
        if scheduler["state"] != states[-1]:
            report.scheduler_differing.append({"life": number, "at_kill": states[-1], "restored": scheduler["state"]})
            if scheduler["state"] not in states:
                report.errors.append(f"life {number}: restored scheduler state is not one it had: {scheduler['state']}")
    report.kills_survived += len(report.errors) == errors_before
    report.restored_exactly += (len(report.observations_differing), len(report.scheduler_differing)) == differing


def checkpoint_step(run_metadata: dict) -> Optional[int]:
    """The step of the checkpoint Ray registered for a trial in a snapshot: what a restore resumes from. It can
    lag the trial's last result (a kill between a result and the save Ray schedules for it). Ray pickles its
    checkpoint manager into the snapshot; the harness unpickles it from the experiment it ran itself."""
    manager = run_metadata.get("checkpoint_manager")
    if not isinstance(manager, dict) or "value" not in manager:
        return None
    latest = ray.cloudpickle.loads(bytes.fromhex(manager["value"])).latest_checkpoint_result
    return None if latest is None else latest.metrics.get("step")


def snapshot_paused(experiment_path: Path) -> list:
    """``(trial id, checkpoint step)`` of the trials PAUSED in the newest experiment snapshot (the one a restore
    resumes from); a paused trial the snapshot does not show yet restarts from its last snapshotted state."""
    paths = sorted(experiment_path.glob("experiment_state-*.json"))
    try:
        trial_data = json.loads(paths[-1].read_text())["trial_data"] if paths else []
    except (json.JSONDecodeError, KeyError):
        return []
    paused = []
    for trial_state, run_metadata in trial_data:
        trial = json.loads(trial_state)
        if trial.get("status") == "PAUSED":
            paused.append((trial["trial_id"], checkpoint_step(json.loads(run_metadata))))
    return paused


def check_paused(report: KillReport, paused: list, after: list[dict]) -> None:
    """Trials PAUSED in the snapshot a restore resumes from must continue (at their first attempt in ``after``,
    the events of every later life) from the checkpoint it registered (the step after it), never from scratch."""
    for trial_id, step in paused:
        attempt = next((e for e in after if e["event"] == "attempt" and e["trial"] == trial_id), None)
        if attempt is None:
            continue
        if attempt["step"] != (step or 0) + 1:
            report.paused_from_scratch.append({"trial": trial_id, "checkpoint_step": step, "resumed_at": attempt["step"]})
        else:
            report.paused_resumed += 1
