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
"""

from __future__ import annotations

import torch

from ..distributions import stop_gradient
from ..errors import ConfigError
from ..objectives import log_mean_exp, log_weights_given, reparameterize
from .base import Estimator, Losses, register_estimator, self_normalized_weights


def sleep_loss(model, num: int) -> torch.Tensor:
    """-mean log q(z|x) over ``num`` pairs (z, x) drawn from the model: z ~ p(z),
    x ~ p(x|z) (the sleep phase; minimised with respect to phi)."""
    with torch.no_grad():
        z = model.prior().sample((num,))                        # (N, D_z)
        x = model.decoder(z).sample()                           # (N, D)
    return -model.encoder(x).log_prob(z).mean()


@register_estimator("wake-sleep")
class WakeSleep(Estimator):
    """Wake: theta maximises log p(x, z) at z ~ q(z|x) (K draws); sleep: phi maximises
    log q(z|x) on K*B dreamt pairs. The reported bound is the K-sample ELBO estimate."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        z = q.sample((self.num_samples,))
        log_joint = model.decoder(z).log_prob(x) + model.prior().log_prob(z)    # (K, B)
        bound = (log_joint.detach() - q.log_prob(z).detach()).mean(0)
        return Losses(bound, -log_joint.mean(), sleep_loss(model, z.shape[0] * z.shape[1]))


class _RWSBase(Estimator):
    def __init__(self, num_samples: int = 5, rws_wake_weight: float = 0.5) -> None:
        super().__init__(num_samples)
        if not 0 <= rws_wake_weight <= 1:
            raise ConfigError(f"rws_wake_weight must lie in [0, 1], got {rws_wake_weight}")
        self.wake_weight = float(rws_wake_weight)

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, rws_wake_weight={self.wake_weight}"

    def _phi_loss(self, model, wake: torch.Tensor, num: int) -> torch.Tensor:
        a = self.wake_weight
        if a == 1.0:
            return wake
        sleep = sleep_loss(model, num)
        return sleep if a == 0.0 else a * wake + (1 - a) * sleep


@register_estimator("rws")
class RWS(_RWSBase):
    """Reweighted wake-sleep (Bornschein & Bengio 2015). theta: sum_k w~_k grad log p(x, z_k)
    (the gradient of L_K); phi: ``rws_wake_weight`` * wake-phi + (1 - it) * sleep-phi. The
    reported bound is L_K."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        z = q.sample((self.num_samples,))                                       # no path grad
        log_joint = model.decoder(z).log_prob(x) + model.prior().log_prob(z)    # (K, B)
        log_q = q.log_prob(z)
        log_w = log_joint.detach() - log_q.detach()
        w = self_normalized_weights(log_w)
        wake = -(w * log_q).sum(0).mean()
        return Losses(log_mean_exp(log_w, 0), -(w * log_joint).sum(0).mean(),
                      self._phi_loss(model, wake, log_w.numel()))


@register_estimator("rws-dreg")
class RWSDReG(_RWSBase):
    """RWS with the doubly reparameterized wake-phi gradient (Tucker et al. 2019, eq. 7): the
    same expectation as RWS's wake-phi gradient, lower variance."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        z = reparameterize(q, self.num_samples)
        log_w = log_weights_given(model, x, stop_gradient(q), z)               # (K, B)
        w = self_normalized_weights(log_w)
        # E[sum_k w~_k grad_phi log q(z_k|x)] = E[sum_k d w~_k / d z_k * d z_k / d phi]
        #   = E[sum_k (w~_k - w~_k^2) d log w_k / d z_k * d z_k / d phi]: ascend it.
        wake = -((w - w.square()) * log_w).sum(0).mean()
        return Losses(log_mean_exp(log_w, 0).detach(), -(w * log_w).sum(0).mean(),
                      self._phi_loss(model, wake, log_w.numel()))
