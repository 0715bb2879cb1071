"""Ray Tune callbacks: :class:`TensorBoardCallback` (per-trial scalars and the HParams dashboard)."""

from tunekit.callbacks.tensorboard import TensorBoardCallback

__all__ = ["TensorBoardCallback"]
