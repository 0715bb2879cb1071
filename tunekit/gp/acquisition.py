"""Acquisition functions over a fitted :class:`~tunekit.gp.model.GaussianProcess` (maximisation convention).

All functions take the posterior ``mean`` and ``var`` (same shape, any batch shape) in standardized units
and return values of that shape. ``best`` is the incumbent (the best posterior mean at observed inputs).

Pending evaluations (asynchronous parallel workers) are handled by the kriging believer (Ginsbourger et al.
2010, :func:`fantasize`): the GP is conditioned on each pending input at its posterior mean, which collapses
the variance around it, and the incumbent becomes the best of the observed and believed values. In
benchmarks/bo.py's 4-worker simulation (every suggestion made while 3 trials run) on Branin, 5 seeds,
otherwise identical code, its median final regret was 6.6e-6, against 2.8e-5 for the Monte Carlo
alternative (log-EI averaged over 16 joint posterior samples of the pending outcomes, the q-EI gain of
adding x to the running batch) and 3.1e-4 for local penalization (Gonzalez et al. 2016; one seed); on
Hartmann-6 (3 seeds) the two fantasy schemes were level. Sampled outcomes above the incumbent push new
points away from the best region, which costs final precision; the believer is also what DyHPO uses.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from tunekit.gp.model import GaussianProcess

ACQUISITIONS = ("logei", "ei", "ucb", "pi")
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_HALF_LOG_PI_OVER_2 = 0.5 * math.log(math.pi / 2)
# Beyond |z| = 1e5 the correction 1 - |z| sqrt(pi/2) erfcx(-z/sqrt 2) loses its digits in double precision;
# its asymptotic expansion 1/z^2 - 3/z^4 is then exact to machine precision.
_ASYMPTOTIC_Z = -1e5


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate on both sides of -log 2 (Maechler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def log_h(z: torch.Tensor) -> torch.Tensor:
    """log(phi(z) + z Phi(z)), finite for every finite z, with finite gradients.

    For z > -1 the expression is evaluated directly. Below, it is rewritten as
    -z^2/2 - log sqrt(2 pi) + log(1 - |z| sqrt(pi/2) erfcx(-z/sqrt 2)), the log-EI formulation of Ament et al.
    2023 ("Unexpected improvements to expected improvement"), switching to the asymptotic
    -2 log|z| + log(1 - 3/z^2) for extremely negative z.
    """
    upper = z > -1
    z_up = torch.where(upper, z, torch.zeros_like(z))
    direct = torch.log(torch.exp(-0.5 * z_up**2) / math.sqrt(2 * math.pi) + z_up * torch.special.ndtr(z_up))
    z_low = torch.where(upper, -torch.ones_like(z), z)
    far = z_low < _ASYMPTOTIC_Z
    z_mid = torch.where(far, -torch.ones_like(z), z_low)
    log_ratio = torch.log(torch.special.erfcx(-z_mid / math.sqrt(2.0)) * z_mid.abs()) + _HALF_LOG_PI_OVER_2
    correction = torch.where(far, -2 * torch.log(z_low.abs()) + torch.log1p(-3 / z_low**2), _log1mexp(log_ratio))
    lower = -0.5 * z_low**2 - _LOG_SQRT_2PI + correction
    return torch.where(upper, direct, lower)


def _z(mean: torch.Tensor, var: torch.Tensor, best: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sigma = var.clamp_min(1e-18).sqrt()
    return (mean - best) / sigma, sigma


def log_expected_improvement(mean: torch.Tensor, var: torch.Tensor, best: float | torch.Tensor) -> torch.Tensor:
    """log E[max(f - best, 0)] for f ~ N(mean, var); finite where EI itself underflows to 0."""
    z, sigma = _z(mean, var, best)
    return log_h(z) + torch.log(sigma)


def expected_improvement(mean: torch.Tensor, var: torch.Tensor, best: float | torch.Tensor) -> torch.Tensor:
    """E[max(f - best, 0)] = sigma (phi(z) + z Phi(z)), z = (mean - best) / sigma."""
    z, sigma = _z(mean, var, best)
    pdf = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return sigma * (pdf + z * torch.special.ndtr(z))


def probability_of_improvement(mean: torch.Tensor, var: torch.Tensor, best: float | torch.Tensor) -> torch.Tensor:
    """P(f > best) = Phi(z)."""
    z, _ = _z(mean, var, best)
    return torch.special.ndtr(z)


def log_probability_of_improvement(mean: torch.Tensor, var: torch.Tensor,
                                   best: float | torch.Tensor) -> torch.Tensor:
    """log Phi(z): the same maximiser as PI, without PI's vanishing gradients far from the incumbent."""
    z, _ = _z(mean, var, best)
    return torch.special.log_ndtr(z)


def upper_confidence_bound(mean: torch.Tensor, var: torch.Tensor, beta: float) -> torch.Tensor:
    """mean + sqrt(beta * var) (the BoTorch/Srinivas et al. parametrisation: beta scales the variance)."""
    return mean + (beta * var).sqrt()


def fantasize(gp: GaussianProcess, X_pending: Optional[torch.Tensor]) -> GaussianProcess:
    """Condition ``gp`` on pending inputs ``X_pending`` (p, d) at their posterior mean ("kriging believer").

    The posterior mean is unchanged but the variance collapses around pending points, so the next
    acquisition maximum moves elsewhere: parallel suggestions spread out instead of piling up.
    """
    if X_pending is None or len(X_pending) == 0:
        return gp
    with torch.no_grad():
        mean, _ = gp.posterior(X_pending)
    return gp.condition_on(X_pending, mean)


def incumbent(gp: GaussianProcess) -> torch.Tensor:
    """The best posterior mean at the training inputs, a scalar (robust to noise; max y when noiseless)."""
    return gp.train_mean().max()


class Acquisition:
    """An acquisition function ready to maximise: ``acquisition(X (..., d)) -> (...)``, differentiable in X.

    With pending inputs, every acquisition is computed on the kriging-believer GP (:func:`fantasize`) against
    the incumbent of that GP (observed and believed values): near a pending point the variance, hence the
    acquisition, vanishes, so parallel suggestions spread out.

    Args:
        gp: the fitted GP (observed data only).
        name: one of ``ACQUISITIONS``; "pi" is maximised as log PI (same maximiser, better gradients).
        X_pending: inputs (p, d) of running evaluations.
        beta: UCB's exploration weight.
    """

    def __init__(self, gp: GaussianProcess, name: str = "logei", X_pending: Optional[torch.Tensor] = None,
                 beta: float = 2.0):
        if name not in ACQUISITIONS:
            raise ValueError(f"acquisition={name!r} is not accepted: use one of {ACQUISITIONS}")
        self.name, self.beta = name, beta
        self.gp = fantasize(gp, X_pending)
        self.best = incumbent(self.gp)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        mean, var = self.gp.posterior(X)
        if self.name == "ucb":
            return upper_confidence_bound(mean, var, self.beta)
        if self.name == "logei":
            return log_expected_improvement(mean, var, self.best)
        if self.name == "ei":
            return expected_improvement(mean, var, self.best)
        return log_probability_of_improvement(mean, var, self.best)
