"""Wake-sleep and reweighted wake-sleep: phi is not trained on a bound on log p(x).

References:
    Hinton, Dayan, Frey & Neal (1995), "The wake-sleep algorithm for unsupervised neural
        networks": wake phase (theta on log p(x, z), z ~ q(z|x)), sleep phase (phi on
        log q(z|x) for (x, z) drawn from the model).
    Bornschein & Bengio (2015), "Reweighted wake-sleep", Sec. 3: theta on the K-sample
        importance-weighted estimate (the IWAE bound's gradient), wake-phi on
        sum_k w~_k grad log q(z_k|x), sleep-phi as in wake-sleep.
    Tucker et al. (2019), eq. (7): the doubly reparameterized wake-phi gradient,
        E[sum_k (w~_k - w~_k^2) d log w_k / d z_k * d z_k / d phi].

Each surrogate is the sum of a theta term and a phi term that do not reach each other's
parameters: samples drawn without a gradient, dreams drawn under ``no_grad``, and for the
doubly reparameterized wake-phi a :class:`~vaekit.estimators.base.PathGate` on z.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..distributions import stop_gradient
from ..errors import ConfigError
from ..objectives import log_mean_exp, log_terms, reparameterize
from ..options import interval, option
from .base import (
    Losses,
    PathGate,
    SampledEstimator,
    register_estimator,
    self_normalized_weights,
)
from .reparameterized import IWAEOptions


def sleep_loss(model, num: int) -> torch.Tensor:
    """-mean log q(z|x) over ``num`` pairs (z, x) drawn from the model: z ~ p(z),
    x ~ p(x|z) (the sleep phase; its gradient reaches phi only)."""
    with torch.no_grad():
        z = model.prior().sample((num,))                        # (N, D_z)
        x = model.decoder(z).sample()                           # (N, *event_shape)
    return -model.encoder(x).log_prob(z).mean()


@dataclass
class RWSOptions(IWAEOptions):
    rws_wake_weight: float = option(0.5, "weight of wake-phi (1 - it: sleep-phi)",
                                    check=interval(0, 1))

    def check(self) -> None:
        if self.num_samples < 2:
            raise ConfigError(
                "rws and rws-dreg need --num-samples >= 2: with K = 1 the self-normalized "
                "weight is 1, so the wake-phi gradient has mean zero (rws) or is exactly zero "
                "(rws-dreg)")


@register_estimator("wake-sleep")
class WakeSleep(SampledEstimator):
    """Wake: theta maximises log p(x, z) at z ~ q(z|x) (K draws); sleep: phi maximises
    log q(z|x) on K*B dreamt pairs. The reported bound is the K-sample ELBO estimate."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        z = q.sample((self.num_samples,))
        terms = log_terms(model, x, z, q)                                       # (K, B)
        bound = terms.log_w.detach().mean(0)
        return Losses(bound, -terms.log_joint.mean()
                      + sleep_loss(model, z.shape[0] * z.shape[1]))


class _RWSBase(SampledEstimator):
    def __init__(self, options: RWSOptions | None = None, data_shape=None) -> None:
        super().__init__(options, data_shape)
        self.wake_weight = float(self.opts.rws_wake_weight)

    def _phi_loss(self, model, wake: torch.Tensor, num: int) -> torch.Tensor:
        a = self.wake_weight
        if a == 1.0:
            return wake
        sleep = sleep_loss(model, num)
        return sleep if a == 0.0 else a * wake + (1 - a) * sleep


@register_estimator("rws", RWSOptions)
class RWS(_RWSBase):
    """Reweighted wake-sleep (Bornschein & Bengio 2015). theta: sum_k w~_k grad log p(x, z_k)
    (the gradient of L_K); phi: ``rws_wake_weight`` * wake-phi + (1 - it) * sleep-phi. The
    reported bound is L_K."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        z = q.sample((self.num_samples,))                                       # no path grad
        terms = log_terms(model, x, z, q)                                       # (K, B)
        log_w = terms.log_w.detach()
        w = self_normalized_weights(log_w)
        wake = -(w * terms.log_qz).sum(0).mean()
        theta = -(w * terms.log_joint).sum(0).mean()
        return Losses(log_mean_exp(log_w, 0), theta + self._phi_loss(model, wake, log_w.numel()))


@register_estimator("rws-dreg", RWSOptions)
class RWSDReG(_RWSBase):
    """RWS with the doubly reparameterized wake-phi gradient (Tucker et al. 2019, eq. 7): the
    same expectation as RWS's wake-phi gradient, lower variance.

    Surrogate: theta's -sum_k w~_k log w_k on STL log-weights, whose path through z is gated
    by a (1 - w~_k) (a = ``rws_wake_weight``): phi's wake weight becomes a (w~_k - w~_k^2)."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        z = reparameterize(q, self.num_samples)
        gate = PathGate(z)
        log_w = log_terms(model, x, gate.value, stop_gradient(q)).log_w        # (K, B)
        w = self_normalized_weights(log_w)
        # E[sum_k w~_k grad_phi log q(z_k|x)] = E[sum_k d w~_k / d z_k * d z_k / d phi]
        #   = E[sum_k (w~_k - w~_k^2) d log w_k / d z_k * d z_k / d phi]: ascend it.
        gate.set(self.wake_weight * (1 - w))
        theta = -(w * log_w).sum(0).mean()
        sleep = (1 - self.wake_weight) * sleep_loss(model, log_w.numel()) \
            if self.wake_weight < 1.0 else 0.0
        return Losses(log_mean_exp(log_w, 0).detach(), theta + sleep)
