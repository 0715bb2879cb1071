"""Ray Tune trial schedulers: ASHA (stopping and promotion rules), median stopping and DyHPO's.

Each is imported on first use: ASHA and median stopping do not import DyHPO's torch and gpytorch.
"""

from tunekit._lazy import lazy_exports

_MODULES = {"ASHAScheduler": "asha", "DyHPOScheduler": "dyhpo", "MedianStoppingScheduler": "median"}
__all__ = sorted(_MODULES)
__getattr__ = lazy_exports(__name__, _MODULES)
