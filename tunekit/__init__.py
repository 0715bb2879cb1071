"""tunekit: hyperparameter-tuning plugins for Ray Tune.

Public names: :class:`Space` (the one search-space model) and :class:`TensorBoardCallback`.
The callback is imported lazily so that ``import tunekit`` stays light (no Ray, no torch).
"""

from tunekit.space import Space

__version__ = "0.1.0"
__all__ = ["Space", "TensorBoardCallback", "__version__"]


def __getattr__(name: str):
    if name == "TensorBoardCallback":
        from tunekit.callbacks.tensorboard import TensorBoardCallback

        return TensorBoardCallback
    raise AttributeError(f"module 'tunekit' has no attribute {name!r}")
