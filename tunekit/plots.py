"""PNG plots of an experiment folder, for users without a browser (matplotlib, no display needed)."""

from __future__ import annotations

import logging
from pathlib import Path

from tunekit.summary import TrialRecord, has_result, read_progress

logger = logging.getLogger(__name__)


def _pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, axes, xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    """Label ``axes``, write ``figure`` to ``path`` as a PNG and free it."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    _pyplot().close(figure)
    return path


def plot_metric_over_trials(records: list[TrialRecord], metric: str, mode: str, path: Path) -> Path:
    """The final metric of each trial in start order, with the running best as a step line."""
    plt = _pyplot()
    points = [(i + 1, r.value) for i, r in enumerate(records) if has_result(r)]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    if points:
        xs, ys = zip(*points)
        pick = min if mode == "min" else max
        running = [pick(ys[: i + 1]) for i in range(len(ys))]
        axes.scatter(xs, ys, s=18, label=metric)
        axes.step(xs, running, where="post", color="C1", label=f"running best ({mode})")
        axes.legend()
    failed = [i + 1 for i, r in enumerate(records) if r.status == "failed"]
    if failed:
        for x in failed:
            axes.axvline(x, color="C3", alpha=0.25, linewidth=1)
        axes.plot([], [], color="C3", alpha=0.4, label=f"failed ({len(failed)})")
        axes.legend()
    return _save(figure, axes, "trial (in start order)", metric, f"{metric} over trials", path)


def plot_learning_curves(records: list[TrialRecord], metric: str, path: Path) -> Path | None:
    """The metric of every progress report of every trial (None when no trial reported progress)."""
    curves = [(r.trial_id, [report[metric] for report in read_progress(r.trial_dir) if metric in report])
              for r in records]
    curves = [(trial_id, values) for trial_id, values in curves if values]
    if not curves:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for trial_id, values in curves:
        axes.plot(range(1, len(values) + 1), values, marker=".", linewidth=1, alpha=0.8, label=trial_id)
    if len(curves) <= 10:
        axes.legend(fontsize="small")
    return _save(figure, axes, "progress report", metric, f"learning curves ({len(curves)} trials)", path)


def plot_experiment(records: list[TrialRecord], metric: str, mode: str, out_dir: Path) -> list[Path]:
    """Write the plots of an experiment into ``out_dir``; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plot_metric_over_trials(records, metric, mode, out_dir / "metric_over_trials.png")]
    curves = plot_learning_curves(records, metric, out_dir / "learning_curves.png")
    if curves is not None:
        written.append(curves)
    logger.info("wrote %s", ", ".join(str(p) for p in written))
    return written
