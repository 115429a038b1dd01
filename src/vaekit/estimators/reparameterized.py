"""Estimators that differentiate through z = mu + sigma * eps (the reparameterization trick).

References:
    Kingma & Welling (2014), AEVB, eq. (7): the ELBO with analytic KL.
    Higgins et al. (2017), beta-VAE, eq. (4): beta-weighted KL; Bowman et al. (2016) and
        Sonderby et al. (2016): KL warm-up (beta annealed from 0).
    Burda et al. (2016), IWAE, eq. (8) and (14).
    Roeder, Wu & Duvenaud (2017), "Sticking the landing", eq. (8): drop the score term by
        evaluating log q with stopped parameters.
    Tucker, Lawson, Gu & Maddison (2019), "Doubly reparameterized gradient estimators", eq. (5).
    Rainforth et al. (2018), "Tighter variational bounds are not necessarily better",
        Sec. 5: MIWAE, CIWAE, PIWAE.
"""

from __future__ import annotations

import torch

from ..distributions import stop_gradient
from ..errors import ConfigError
from ..objectives import elbo_terms, log_mean_exp, log_weights, log_weights_given, reparameterize
from .base import Estimator, Losses, register_estimator, self_normalized_weights


def _one_loss(bound: torch.Tensor) -> Losses:
    loss = -bound.mean()
    return Losses(bound.detach(), loss, loss)


def _stl_log_weights(model, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """log w with z reparameterized and log q evaluated with stopped parameters: ``(K, B)``.
    Its value is the usual log-weight; its gradient in phi is the path derivative only."""
    q = model.encoder(x)
    return log_weights_given(model, x, stop_gradient(q), reparameterize(q, num_samples))


@register_estimator("elbo")
class ELBO(Estimator):
    """The ELBO with the reparameterization gradient (AEVB), optionally beta-weighted.

    loss = -(E_q log p(x|z) - beta * KL(q || p)); the reported bound is the ELBO (beta = 1).
    ``kl``: ``"analytic"`` (closed form where torch.distributions has one) or ``"mc"``.
    The trainer may change ``beta`` during training (KL warm-up).
    """

    def __init__(self, num_samples: int = 1, kl: str = "analytic", beta: float = 1.0) -> None:
        super().__init__(num_samples)
        if beta < 0:
            raise ConfigError(f"beta must be >= 0, got {beta}")
        self.kl, self.beta = kl, float(beta)

    def forward(self, model, x: torch.Tensor) -> Losses:
        rec, kl = elbo_terms(model, x, self.num_samples, self.kl)
        bound = rec - kl
        if self.beta == 1.0:
            return _one_loss(bound)
        loss = -(rec - self.beta * kl).mean()
        return Losses(bound.detach(), loss, loss)


@register_estimator("elbo-stl")
class ELBOSTL(Estimator):
    """The K-sample ELBO with the "sticking the landing" gradient for phi (Roeder et al.
    2017): log q(z|x) uses stopped parameters, so phi's gradient is the path derivative
    alone. Unbiased; zero variance when q is the exact posterior."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        return _one_loss(_stl_log_weights(model, x, self.num_samples).mean(0))


@register_estimator("iwae")
class IWAE(Estimator):
    """The importance-weighted bound L_K with the reparameterization gradient
    (Burda et al. 2016)."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        return _one_loss(log_mean_exp(log_weights(model, x, self.num_samples), 0))


@register_estimator("iwae-stl")
class IWAESTL(Estimator):
    """L_K with the STL gradient for phi. For K > 1 this gradient is *biased* for L_K
    (Tucker et al. 2019, Sec. 3); kept for comparison."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        return _one_loss(log_mean_exp(_stl_log_weights(model, x, self.num_samples), 0))


@register_estimator("iwae-dreg")
class IWAEDReG(Estimator):
    """L_K with the doubly reparameterized gradient for phi (Tucker et al. 2019, eq. 5):

        grad_phi L_K = E[ sum_k w~_k^2 * d log w_k / d z_k * d z_k / d phi ],

    unbiased, and its signal-to-noise ratio does not vanish as K grows. theta's gradient is the
    usual one, sum_k w~_k grad_theta log p(x, z_k)."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        log_w = _stl_log_weights(model, x, self.num_samples)      # (K, B)
        bound = log_mean_exp(log_w, 0)
        w = self_normalized_weights(log_w)
        return Losses(bound.detach(), -bound.mean(), -(w.square() * log_w).sum(0).mean())


@register_estimator("miwae")
class MIWAE(Estimator):
    """The average of M independent L_K bounds, (1/M) sum_m log (1/K) sum_k w_mk
    (Rainforth et al. 2018): ``num_groups`` = M, ``num_samples`` = K (M*K draws in all).
    M = 1 is IWAE; K = 1 is the M-sample ELBO."""

    def __init__(self, num_samples: int = 1, num_groups: int = 1) -> None:
        super().__init__(num_samples)
        if num_groups < 1:
            raise ConfigError(f"num_groups must be >= 1, got {num_groups}")
        self.num_groups = int(num_groups)

    def _grouped(self, model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_w = log_weights(model, x, self.num_groups * self.num_samples)
        per_group = log_mean_exp(log_w.view(self.num_groups, self.num_samples, -1), 1).mean(0)
        return log_w, per_group

    def forward(self, model, x: torch.Tensor) -> Losses:
        return _one_loss(self._grouped(model, x)[1])


@register_estimator("ciwae")
class CIWAE(Estimator):
    """beta * ELBO_K + (1 - beta) * L_K on the same K samples (Rainforth et al. 2018), with
    beta = ``ciwae_beta``; a convex combination of bounds is a bound."""

    def __init__(self, num_samples: int = 1, ciwae_beta: float = 0.5) -> None:
        super().__init__(num_samples)
        if not 0 <= ciwae_beta <= 1:
            raise ConfigError(f"ciwae_beta must lie in [0, 1], got {ciwae_beta}")
        self.ciwae_beta = float(ciwae_beta)

    def forward(self, model, x: torch.Tensor) -> Losses:
        log_w = log_weights(model, x, self.num_samples)
        b = self.ciwae_beta
        return _one_loss(b * log_w.mean(0) + (1 - b) * log_mean_exp(log_w, 0))


@register_estimator("piwae")
class PIWAE(MIWAE):
    """Different bounds for the two parameter groups (Rainforth et al. 2018): theta follows
    L_{M*K} (IWAE on all draws), phi follows MIWAE(M, K) on the same draws. The reported bound
    is L_{M*K}."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        log_w, per_group = self._grouped(model, x)
        bound = log_mean_exp(log_w, 0)
        return Losses(bound.detach(), -bound.mean(), -per_group.mean())
