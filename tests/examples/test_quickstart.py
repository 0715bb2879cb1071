"""The quickstart (`make demo`) on a small budget: real MLP training, tunekit searcher + scheduler + TensorBoard."""

import importlib.util
import os
import sys
from pathlib import Path

import ray.cloudpickle

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


def _load_quickstart():
    spec = importlib.util.spec_from_file_location("quickstart", QUICKSTART)
    module = importlib.util.module_from_spec(spec)
    sys.modules["quickstart"] = module
    spec.loader.exec_module(module)
    ray.cloudpickle.register_pickle_by_value(module)  # Ray workers cannot import examples/
    return module


def test_quickstart_learns_digits_and_logs_every_trial(ray_session, tmp_path):
    quickstart = _load_quickstart()
    results = quickstart.build_tuner(num_samples=4, max_concurrent=2, gpus_per_trial=0,
                                     storage_path=str(tmp_path), seed=0).fit()
    assert len(results) == 4 and not results.errors
    best_accuracy = max(
        float(r.metrics.get("val_accuracy", 0.0)) for r in results)
    assert best_accuracy > 0.9, f"best validation accuracy {best_accuracy:.3f} on digits"
    runs = [name for name in os.listdir(Path(results.experiment_path) / "tensorboard")
            if name.startswith("train_mlp")]
    assert len(runs) == 4
