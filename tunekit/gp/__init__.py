"""The Gaussian-process core shared by GP-EI and DyHPO: plain functions and small classes over float64 tensors.

- :mod:`tunekit.gp.model`: kernels, priors, output standardization, MAP fit, cached posterior (``fit_gp``).
- :mod:`tunekit.gp.acquisition`: log-EI, EI, PI, UCB and fantasies for pending points (``Acquisition``).
- :mod:`tunekit.gp.optimize`: maximise an acquisition over a ``tunekit.Space`` (``maximize_acquisition``).

No Ray, no I/O. The core maximises: pass ``y = -loss``.
"""

from tunekit.gp.acquisition import (
    ACQUISITIONS,
    Acquisition,
    expected_improvement,
    fantasize,
    log_expected_improvement,
    probability_of_improvement,
    upper_confidence_bound,
)
from tunekit.gp.model import KERNELS, GaussianProcess, GPFitError, fit_gp, single_threaded
from tunekit.gp.optimize import maximize_acquisition, sobol

__all__ = [
    "ACQUISITIONS", "KERNELS", "Acquisition", "GPFitError", "GaussianProcess", "expected_improvement",
    "fantasize", "fit_gp", "log_expected_improvement", "maximize_acquisition", "probability_of_improvement",
    "single_threaded", "sobol", "upper_confidence_bound",
]
