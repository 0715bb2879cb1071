"""Ray Tune trial schedulers: ASHA (stopping and promotion rules) and median stopping."""

from tunekit.schedulers.asha import ASHAScheduler
from tunekit.schedulers.dyhpo import DyHPOScheduler
from tunekit.schedulers.median import MedianStoppingScheduler

__all__ = ["ASHAScheduler", "DyHPOScheduler", "MedianStoppingScheduler"]
