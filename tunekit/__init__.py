"""tunekit: hyperparameter-tuning plugins for Ray Tune.

Public names: :class:`Space` (the one search-space model) and :class:`TensorBoardCallback`.
The callback is imported lazily so that ``import tunekit`` stays light (no Ray, no torch).
"""

from tunekit._lazy import lazy_exports
from tunekit.space import Space

__version__ = "0.1.0"
__all__ = ["Space", "TensorBoardCallback", "__version__"]
__getattr__ = lazy_exports(__name__, {"TensorBoardCallback": "callbacks.tensorboard"})
