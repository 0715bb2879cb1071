"""hpman-declared training code used by the tests: declarations with defaults and hints once, uses elsewhere."""

import os
import threading
import time

from hpman.m import _

BARRIER = threading.Barrier(2, timeout=20)


def fake_training(learning_rate: float, batch_size: int, architecture: str) -> float:
    # optimal for learning_rate=0.2, batch_size=4, architecture="conv" (the hpnevergrad seed's objective)
    return (learning_rate - 0.2) ** 2 + (batch_size - 4) ** 2 + (0 if architecture == "conv" else 10)


def train() -> dict:
    """The seed's declarations; reports what it saw and where it ran."""
    learning_rate = _("learning_rate", 1e-3, range=[1e-3, 1.0], scale="log")
    batch_size = _("batch_size", 1, range=[1, 12])
    architecture = _("architecture", "conv", choices=["conv", "fc"])
    epochs = _("epochs", 3)
    return {"loss": fake_training(learning_rate, batch_size, architecture), "seen_learning_rate": learning_rate,
            "seen_batch_size": batch_size, "seen_architecture": architecture, "seen_epochs": epochs,
            "pid": os.getpid(), "started": time.time()}


def read_values_together() -> dict:
    """Reads the values (defaults come from the parsed declarations above) once the other thread's trial is
    live too."""
    BARRIER.wait()
    time.sleep(0.05)
    return {"learning_rate": _("learning_rate"), "batch_size": _("batch_size"), "architecture": _("architecture")}


def train_slowly() -> dict:
    """The seed's objective after a short sleep (so that parallel trials overlap). Two exact learning rates
    (which only a given point hits) fail: 0.321 gives NaN, 0.123 raises."""
    outcome = train()
    time.sleep(0.3)
    if outcome["seen_learning_rate"] == 0.123:
        raise RuntimeError("this configuration crashes the training")
    if outcome["seen_learning_rate"] == 0.321:
        outcome["loss"] = float("nan")
    return outcome
