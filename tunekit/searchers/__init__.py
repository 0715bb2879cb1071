"""tunekit searchers: each a ``ray.tune.search.Searcher`` over a :class:`tunekit.Space`.

Each is imported on first use, so one searcher's users do not import the others' libraries.
"""

from tunekit._lazy import lazy_exports

_MODULES = {"DyHPOSearch": "dyhpo", "GPEISearch": "gp_ei", "NevergradSearch": "nevergrad"}
__all__ = sorted(_MODULES)
__getattr__ = lazy_exports(__name__, _MODULES)
