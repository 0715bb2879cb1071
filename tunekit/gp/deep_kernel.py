"""DyHPO's surrogate: a GP with a deep kernel over (configuration, budget, learning curve so far).

A small network maps each observation's inputs to a few features; a GP (tunekit's own
:class:`~tunekit.gp.model.GPHyperparameters`: Matern-5/2 ARD kernel, noise, constant mean and their priors) is
placed on those features, and network and GP hyperparameters are trained together by maximising the log
marginal likelihood plus the log prior (Wistuba, Kadra, Grabocka, NeurIPS 2022, section 4). The fitted model is
a plain :class:`~tunekit.gp.model.GaussianProcess` on the features, so the core's fantasies and acquisition
functions apply unchanged.

Inputs of one observation "configuration ``x`` reached value ``y`` at budget ``b``":
- ``X`` (n, d): the configuration in the unit cube (``Space.encode``);
- ``budget`` (n,): ``b / max_budget`` in (0, 1];
- ``curves`` (n, L): the values at budgets 1 .. b-1 (same units as ``y``), NaN where not observed, L = the
  longest curve the model will see (``max_epochs - 1``).
Everything is double precision; the GP core maximises, so pass ``y = -loss``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import ContextManager, Optional

import torch

from tunekit.gp.model import DTYPE, GaussianProcess, GPFitError, GPHyperparameters, single_threaded, standardize

logger = logging.getLogger(__name__)

#: Standardized curve values are clipped to this range before the convolution: a diverged run (a huge loss)
#: must not dominate the features of every other curve.
CURVE_CLIP = 5.0


def one_thread() -> ContextManager:
    """:func:`~tunekit.gp.model.single_threaded` unless torch already runs on one thread (entering it costs ms)."""
    return contextlib.nullcontext() if torch.get_num_threads() == 1 else single_threaded()


class CurveFeatures(torch.nn.Module):
    """(configuration, budget, curve) -> ``num_features`` features.

    The curve (value and an observed-mask channel) goes through a 1-D convolution, a ReLU and a max over time
    (so curves of any length give the same number of features); its output, the configuration and the budget
    go through a two-layer MLP.
    """

    def __init__(self, dim: int, width: int = 32, num_features: int = 8, channels: int = 4, kernel_size: int = 3):
        super().__init__()
        self.conv = torch.nn.Conv1d(2, channels, kernel_size, padding=kernel_size // 2)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(dim + 1 + channels, width), torch.nn.ReLU(), torch.nn.Linear(width, num_features))
        self.to(DTYPE)

    def forward(self, X: torch.Tensor, budget: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
        """Features (n, num_features) of ``X`` (n, d), ``budget`` (n,), standardized ``curves`` (n, L) (NaN: unseen)."""
        observed = ~torch.isnan(curves)
        values = torch.where(observed, curves, torch.zeros_like(curves)).clamp(-CURVE_CLIP, CURVE_CLIP)
        channels = torch.stack([values, observed.to(DTYPE)], dim=1)
        curve_features = torch.relu(self.conv(channels)).amax(dim=-1)
        return self.mlp(torch.cat([X, budget.unsqueeze(-1), curve_features], dim=-1))


class DeepKernelGP:
    """A fitted deep-kernel GP: the feature network, the GP on its features, and the output standardization.

    Use :func:`fit_deep_kernel_gp` to make one. ``gp`` is conditioned on the training features with
    standardized targets; :meth:`posterior` answers in standardized units, :meth:`predict` in ``y``'s units.
    """

    def __init__(self, network: CurveFeatures, hyper: GPHyperparameters, features: torch.Tensor,
                 y_standardized: torch.Tensor, y_mean: float, y_std: float, optimizer_state: Optional[dict] = None):
        self.network, self.hyper, self.optimizer_state = network, hyper, optimizer_state
        self.y_mean, self.y_std = y_mean, y_std
        self.gp = GaussianProcess(hyper, features, y_standardized, y_mean, y_std)

    def standardize_curves(self, curves: torch.Tensor) -> torch.Tensor:
        """Curves (n, L) in ``y``'s units -> standardized like the targets (NaN stays NaN)."""
        return (torch.as_tensor(curves, dtype=DTYPE) - self.y_mean) / self.y_std

    def features(self, X: torch.Tensor, budget: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
        """Features (n, F) of raw inputs (curves in ``y``'s units)."""
        with torch.no_grad():
            return self.network(torch.as_tensor(X, dtype=DTYPE), torch.as_tensor(budget, dtype=DTYPE),
                                self.standardize_curves(curves))

    def posterior(self, X: torch.Tensor, budget: torch.Tensor, curves: torch.Tensor,
                  gp: Optional[GaussianProcess] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance (n,), (n,) in standardized units; ``gp`` may be a fantasized copy."""
        with torch.no_grad(), one_thread():
            return self.feature_posterior(self.features(X, budget, curves), gp)

    def feature_posterior(self, features: torch.Tensor,
                          gp: Optional[GaussianProcess] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`posterior` at inputs already mapped by :meth:`features` (a caller may keep features that do
        not change while the network stays the same)."""
        with torch.no_grad(), one_thread():
            return (gp or self.gp).posterior(features)

    def predict(self, X: torch.Tensor, budget: torch.Tensor, curves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance (n,), (n,) in ``y``'s units."""
        mean, var = self.posterior(X, budget, curves)
        return mean * self.y_std + self.y_mean, var * self.y_std**2

    def standardize_values(self, y: torch.Tensor) -> torch.Tensor:
        """Values in ``y``'s units -> the standardized units of :meth:`posterior`."""
        return (torch.as_tensor(y, dtype=DTYPE) - self.y_mean) / self.y_std

    def with_data(self, X: torch.Tensor, budget: torch.Tensor, curves: torch.Tensor,
                  y: torch.Tensor) -> "DeepKernelGP":
        """The same network and hyperparameters conditioned on new data (no training; standardization redone)."""
        y_standardized, y_mean, y_std = standardize(torch.as_tensor(y, dtype=DTYPE))
        standardized_curves = (torch.as_tensor(curves, dtype=DTYPE) - y_mean) / y_std
        with torch.no_grad(), one_thread():
            features = self.network(torch.as_tensor(X, dtype=DTYPE), torch.as_tensor(budget, dtype=DTYPE),
                                    standardized_curves)
            return DeepKernelGP(self.network, self.hyper, features, y_standardized, y_mean, y_std,
                                self.optimizer_state)

    def state(self) -> dict:
        """Network and GP hyperparameter weights and Adam's moments, to continue training in the next fit
        (picklable tensors)."""
        return {"network": self.network.state_dict(), "hyper": self.hyper.state_dict(),
                "adam": self.optimizer_state}


def _new_modules(dim: int, seed: int, num_features: int) -> tuple[CurveFeatures, GPHyperparameters]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = CurveFeatures(dim, num_features=num_features)
    return network, GPHyperparameters("matern52", num_features)


class DeepKernelTraining:
    """Network and GP trained jointly on ``X`` (n, d), ``budget`` (n,), ``curves`` (n, L), targets ``y`` (n,),
    a few steps at a time: a searcher can spread one fit over several decisions, so no decision pays for all of it.

    Adam runs on -(log marginal likelihood + log prior) of the standardized targets, starting from ``warm_start``
    (a previous :meth:`DeepKernelGP.state`: weights and Adam's moments, so that fits in a row train like one long
    fit) when given, else from a network initialised with ``seed``. A step whose kernel matrix cannot be
    factorised ends training at the last good weights.
    """

    def __init__(self, X: torch.Tensor, budget: torch.Tensor, curves: torch.Tensor, y: torch.Tensor, *,
                 lr: float = 0.02, warm_start: Optional[dict] = None, seed: int = 0, num_features: int = 8):
        self._X, self._budget = torch.as_tensor(X, dtype=DTYPE), torch.as_tensor(budget, dtype=DTYPE)
        self._y, self._y_mean, self._y_std = standardize(torch.as_tensor(y, dtype=DTYPE))
        self._curves = (torch.as_tensor(curves, dtype=DTYPE) - self._y_mean) / self._y_std
        self._network, self._hyper = _new_modules(self._X.shape[-1], seed, num_features)
        if warm_start is not None:
            self._network.load_state_dict(warm_start["network"])
            self._hyper.load_state_dict(warm_start["hyper"])
        parameters = list(self._network.parameters()) + [p for _, p in self._hyper.trainable()]
        self._optimizer = _Adam(parameters, lr, warm_start.get("adam") if warm_start is not None else None)
        self._best_loss, self._best_weights = math.inf, None
        self.steps_done, self.stopped = 0, False

    def advance(self, steps: int) -> None:
        """Up to ``steps`` Adam steps (none once a step has failed)."""
        with one_thread():
            for _ in range(steps):
                loss = self._evaluate()
                if loss is None:
                    return
                loss.backward()
                self._optimizer.step()
                self.steps_done += 1

    def _evaluate(self) -> Optional[torch.Tensor]:
        """The loss of the current weights, remembered when it is the best so far; None (and stopped) when they
        cannot be used."""
        if self.stopped:
            return None
        try:
            loss = self._hyper.negative_log_posterior(self._network(self._X, self._budget, self._curves), self._y)
        except GPFitError:
            logger.debug("deep-kernel fit stopped early: kernel matrix not positive definite")
            loss = None
        if loss is None or not torch.isfinite(loss):
            self.stopped = True
            return None
        if float(loss.detach()) < self._best_loss:
            self._best_loss = float(loss.detach())
            self._best_weights = ({k: v.clone() for k, v in self._network.state_dict().items()},
                                  {k: v.clone() for k, v in self._hyper.state_dict().items()})
        return loss

    def result(self) -> DeepKernelGP:
        """The best weights seen (the current ones included), conditioned on the training data. Raises
        :class:`~tunekit.gp.model.GPFitError` when not even the starting weights could be used."""
        with one_thread():
            with torch.no_grad():
                self._evaluate()
            if self._best_weights is None:
                raise GPFitError(f"deep-kernel GP could not be fitted to {len(self._y)} observations")
            self._network.load_state_dict(self._best_weights[0])
            self._hyper.load_state_dict(self._best_weights[1])
            for parameter in list(self._network.parameters()) + list(self._hyper.parameters()):
                parameter.requires_grad_(False)
            with torch.no_grad():
                features = self._network(self._X, self._budget, self._curves)
            return DeepKernelGP(self._network, self._hyper, features, self._y, self._y_mean, self._y_std,
                                self._optimizer.state())


def fit_deep_kernel_gp(X: torch.Tensor, budget: torch.Tensor, curves: torch.Tensor, y: torch.Tensor, *,
                       steps: int = 100, lr: float = 0.02, warm_start: Optional[dict] = None, seed: int = 0,
                       num_features: int = 8) -> DeepKernelGP:
    """A :class:`DeepKernelTraining` run for ``steps`` steps at once (``steps=0``: the warm-started model
    conditioned on the data)."""
    training = DeepKernelTraining(X, budget, curves, y, lr=lr, warm_start=warm_start, seed=seed,
                                  num_features=num_features)
    training.advance(steps)
    return training.result()


class _Adam:
    """Adam (Kingma and Ba 2015, default betas) over a list of parameters.

    Written out instead of ``torch.optim.Adam`` because every ``torch.optim`` optimizer imports
    ``torch._dynamo`` when the first one is made: 1-6 s in the Tune driver, which then holds up every trial's
    first decision.
    """

    BETAS, EPS = (0.9, 0.999), 1e-8

    def __init__(self, parameters: list, lr: float, state: Optional[dict] = None):
        """``state``: a previous :meth:`state` over parameters of the same shapes, to continue its moments."""
        self.parameters, self.lr = parameters, lr
        if state is not None and [m.shape for m in state["first"]] == [p.shape for p in parameters]:
            self.steps = state["steps"]
            self.first = [m.clone() for m in state["first"]]
            self.second = [m.clone() for m in state["second"]]
        else:
            self.steps = 0
            self.first = [torch.zeros_like(p) for p in parameters]
            self.second = [torch.zeros_like(p) for p in parameters]

    def state(self) -> dict:
        """Step count and moments (copies), to continue in a later fit."""
        return {"steps": self.steps, "first": [m.clone() for m in self.first],
                "second": [m.clone() for m in self.second]}

    def step(self) -> None:
        """Move every parameter with a gradient; clear the gradients."""
        self.steps += 1
        beta1, beta2 = self.BETAS
        step_size = self.lr / (1 - beta1**self.steps)
        second_correction = math.sqrt(1 - beta2**self.steps)
        with torch.no_grad():
            for p, first, second in zip(self.parameters, self.first, self.second):
                if p.grad is None:
                    continue
                first.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                second.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                p.addcdiv_(first, second.sqrt() / second_correction + self.EPS, value=-step_size)
                p.grad = None
