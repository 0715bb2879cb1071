"""tunekit searchers: each a ``ray.tune.search.Searcher`` over a :class:`tunekit.Space`."""

from tunekit.searchers.dyhpo import DyHPOSearch
from tunekit.searchers.gp_ei import GPEISearch
from tunekit.searchers.nevergrad import NevergradSearch

__all__ = ["DyHPOSearch", "GPEISearch", "NevergradSearch"]
