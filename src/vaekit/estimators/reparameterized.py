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

from dataclasses import dataclass

import torch

from ..distributions import stop_gradient
from ..objectives import elbo_terms, log_mean_exp, log_terms, reparameterize
from ..options import interval, nonnegative, one_of, option, positive
from .base import (
    Losses,
    PathGate,
    SampledEstimator,
    SampledOptions,
    register_estimator,
    self_normalized_weights,
)

KL_ESTIMATES = ("analytic", "mc")


@dataclass
class ELBOOptions(SampledOptions):
    kl: str = option("analytic", "ELBO's KL term: analytic (closed form where one exists, "
                                 "else Monte Carlo) | mc (Monte Carlo)",
                     check=one_of(KL_ESTIMATES))
    beta: float = option(1.0, "weight of the KL term (beta-VAE; the reported bound uses 1)",
                         check=nonnegative)


@dataclass
class IWAEOptions(SampledOptions):
    num_samples: int = option(5, "z samples per x in the training objective (K)",
                              check=positive)


@dataclass
class MIWAEOptions(IWAEOptions):
    num_groups: int = option(1, "M groups of num_samples draws", check=positive)


@dataclass
class CIWAEOptions(IWAEOptions):
    ciwae_beta: float = option(0.5, "weight of the ELBO in beta*ELBO + (1-beta)*IWAE",
                               check=interval(0, 1))


def _one_loss(bound: torch.Tensor) -> Losses:
    return Losses(bound.detach(), -bound.mean())


def _stl_log_weights(model, x: torch.Tensor, num_samples: int, gate: bool = False):
    """log w with z reparameterized and log q evaluated with stopped parameters: ``(K, B)``.
    Its value is the usual log-weight; its gradient in phi is the path derivative only. With
    ``gate``, the path runs through a :class:`PathGate`, returned beside the log-weights."""
    q = model.encoder(x)
    z = reparameterize(q, num_samples)
    g = PathGate(z) if gate else None
    log_w = log_terms(model, x, g.value if gate else z, stop_gradient(q)).log_w
    return log_w, g


@register_estimator("elbo", ELBOOptions, kl_weighted=True)
class ELBO(SampledEstimator):
    """The ELBO with the reparameterization gradient (AEVB), optionally beta-weighted.

    loss = -(E_q log p(x|z) - beta * KL(q || p)); the reported bound is the ELBO (beta = 1).
    ``kl``: ``"analytic"`` (closed form where torch.distributions has one) or ``"mc"``.
    KL warm-up changes :attr:`kl_weight` during training.
    """

    def __init__(self, options: ELBOOptions | None = None, data_shape=None) -> None:
        super().__init__(options, data_shape)
        self.kl, self.kl_weight = self.opts.kl, float(self.opts.beta)

    @property
    def beta(self) -> float:
        """The KL weight now (``options.beta``, or less during KL warm-up)."""
        return self.kl_weight

    def forward(self, model, x: torch.Tensor) -> Losses:
        rec, kl = elbo_terms(model, x, self.num_samples, self.kl)
        bound = rec - kl
        if self.kl_weight == 1.0:
            return _one_loss(bound)
        return Losses(bound.detach(), -(rec - self.kl_weight * kl).mean())


@register_estimator("elbo-stl")
class ELBOSTL(SampledEstimator):
    """The K-sample ELBO with the "sticking the landing" gradient for phi (Roeder et al.
    2017): log q(z|x) uses stopped parameters, so phi's gradient is the path derivative
    alone. Unbiased; zero variance when q is the exact posterior."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        return _one_loss(_stl_log_weights(model, x, self.num_samples)[0].mean(0))


@register_estimator("iwae", IWAEOptions)
class IWAE(SampledEstimator):
    """The importance-weighted bound L_K with the reparameterization gradient
    (Burda et al. 2016)."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        log_w = log_terms(model, x, reparameterize(q, self.num_samples), q).log_w
        return _one_loss(log_mean_exp(log_w, 0))


@register_estimator("iwae-stl", IWAEOptions)
class IWAESTL(SampledEstimator):
    """L_K with the STL gradient for phi. For K > 1 this gradient is *biased* for L_K
    (Tucker et al. 2019, Sec. 3); kept for comparison."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        return _one_loss(log_mean_exp(_stl_log_weights(model, x, self.num_samples)[0], 0))


@register_estimator("iwae-dreg", IWAEOptions)
class IWAEDReG(SampledEstimator):
    """L_K with the doubly reparameterized gradient for phi (Tucker et al. 2019, eq. 5):

        grad_phi L_K = E[ sum_k w~_k^2 * d log w_k / d z_k * d z_k / d phi ],

    unbiased, and its signal-to-noise ratio does not vanish as K grows. theta's gradient is the
    usual one, sum_k w~_k grad_theta log p(x, z_k).

    Surrogate: -L_K on STL log-weights (theta: w~_k; the path through z: w~_k too), with the
    path through z gated by w~_k, which makes phi's weight w~_k^2.
    """

    def forward(self, model, x: torch.Tensor) -> Losses:
        log_w, gate = _stl_log_weights(model, x, self.num_samples, gate=True)   # (K, B)
        bound = log_mean_exp(log_w, 0)
        gate.set(self_normalized_weights(log_w))
        return _one_loss(bound)


@register_estimator("miwae", MIWAEOptions)
class MIWAE(SampledEstimator):
    """The average of M independent L_K bounds, (1/M) sum_m log (1/K) sum_k w_mk
    (Rainforth et al. 2018): ``num_groups`` = M, ``num_samples`` = K (M*K draws in all).
    M = 1 is IWAE; K = 1 is the M-sample ELBO."""

    def __init__(self, options: MIWAEOptions | None = None, data_shape=None) -> None:
        super().__init__(options, data_shape)
        self.num_groups = int(self.opts.num_groups)

    def _per_group(self, log_w: torch.Tensor) -> torch.Tensor:
        """``(M*K, B)`` log-weights -> the M bounds L_K averaged, ``(B,)``."""
        return log_mean_exp(log_w.view(self.num_groups, self.num_samples, -1), 1).mean(0)

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        z = reparameterize(q, self.num_groups * self.num_samples)
        return _one_loss(self._per_group(log_terms(model, x, z, q).log_w))


@register_estimator("ciwae", CIWAEOptions)
class CIWAE(SampledEstimator):
    """beta * ELBO_K + (1 - beta) * L_K on the same K samples (Rainforth et al. 2018), with
    beta = ``ciwae_beta``; a convex combination of bounds is a bound."""

    def __init__(self, options: CIWAEOptions | None = None, data_shape=None) -> None:
        super().__init__(options, data_shape)
        self.ciwae_beta = float(self.opts.ciwae_beta)

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        log_w = log_terms(model, x, reparameterize(q, self.num_samples), q).log_w
        b = self.ciwae_beta
        return _one_loss(b * log_w.mean(0) + (1 - b) * log_mean_exp(log_w, 0))


@register_estimator("piwae", MIWAEOptions)
class PIWAE(MIWAE):
    """Different bounds for the two parameter groups (Rainforth et al. 2018): theta follows
    L_{M*K} (IWAE on all draws), phi follows MIWAE(M, K) on the same draws. The reported bound
    is L_{M*K}.

    Surrogate: -L_{M*K}, whose weight on sample j of group m is the softmax over all M*K
    draws, c_j. phi's weight is d_j = softmax within the group / M = c_j * r_m with
    r_m = exp(logsumexp_all - logsumexp_m) / M; the path through z and the direct
    (score) term of log q are both gated by r_m. (A draw whose weight c_j underflows to 0
    in the working precision, i.e. whose group lies ~87 nats (float32) below the best,
    gives phi no gradient, where the two-loss form would.)
    """

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        z = reparameterize(q, self.num_groups * self.num_samples)
        path = PathGate(z)
        log_q_direct = q.log_prob(z.detach())            # phi's direct dependence; value log q
        direct = PathGate(log_q_direct)
        terms = log_terms(model, x, path.value, stop_gradient(q))
        log_w = terms.log_w - (direct.value - log_q_direct.detach())   # same value, (MK, B)
        bound = log_mean_exp(log_w, 0)
        with torch.no_grad():
            lse_all = log_w.logsumexp(0)                                          # (B,)
            lse_group = log_w.view(self.num_groups, self.num_samples, -1).logsumexp(1)
            r = (lse_all - lse_group).exp() / self.num_groups                     # (M, B)
            r = r.repeat_interleave(self.num_samples, 0)                          # (MK, B)
        path.set(r)
        direct.set(r)
        return _one_loss(bound)
