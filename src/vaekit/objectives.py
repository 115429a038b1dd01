"""Variational bounds on log p(x), as pure functions of a model and a batch.

All values are in nats per example. A model provides ``prior()``, ``encoder(x)`` and
``decoder(z)`` (see :mod:`vaekit.models`); nothing here depends on the architecture.

:func:`log_terms` is the one place where log p(x|z), log p(z) and log q(z|x) are computed for
given samples z: every estimator and the evaluation (its compiled path included) reduce its
output.

References:
    Kingma & Welling (2014), "Auto-Encoding Variational Bayes", ICLR: eq. (3) ELBO,
        eq. (7) the SGVB estimator with analytic KL, Sec. 2.4 reparameterization.
    Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", ICLR:
        eq. (8) L_k, Theorem 1 (L_k <= L_{k+1} <= log p(x)).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.distributions import Distribution, Independent, Normal

from .distributed import standard_normal
from .distributions import analytic_kl


def log_mean_exp(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log( mean_i exp(t_i) ) along ``dim``, computed stably with logsumexp."""
    return t.logsumexp(dim) - math.log(t.shape[dim])


def reparameterize(q: Distribution, num_samples: int) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I): ``(K, B, D_z)`` samples differentiable in q's
    parameters (the reparameterization trick, Kingma & Welling 2014, Sec. 2.4). For a
    diagonal Gaussian the noise comes from :func:`vaekit.distributed.standard_normal` (the
    numbers ``q.rsample`` draws; under torchrun, those of the example in the global batch)."""
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        base = q.base_dist
        eps = standard_normal(q._extended_shape((num_samples,)), base.loc.dtype,
                              base.loc.device)
        return base.loc + eps * base.scale
    return q.rsample((num_samples,))


class LogTerms(NamedTuple):
    """The three log-densities at samples z_k ~ q(z|x), each ``(K, B)`` nats."""

    log_px_z: torch.Tensor     # log p(x | z_k)
    log_pz: torch.Tensor       # log p(z_k)
    log_qz: torch.Tensor       # log q(z_k | x)

    @property
    def log_joint(self) -> torch.Tensor:
        """log p(x, z_k) = log p(x|z_k) + log p(z_k)."""
        return self.log_px_z + self.log_pz

    @property
    def log_w(self) -> torch.Tensor:
        """The importance log-weights log p(x, z_k) - log q(z_k|x)."""
        return self.log_px_z + self.log_pz - self.log_qz


def log_terms(model, x: torch.Tensor, z: torch.Tensor, q: Distribution,
              prior: Distribution | None = None) -> LogTerms:
    """log p(x|z), log p(z) and log q(z|x) for given samples.

    Args:
        model: provides ``decoder(z)`` and ``prior()``.
        x: ``(B, *event_shape)`` data.
        z: ``(K, B, D_z)`` samples (reparameterized or not: the caller decides what carries
            a gradient).
        q: the distribution ``z`` is scored under as q(z|x), batch shape ``(B,)``: the
            encoder's, or a stop-gradient copy of it.
        prior: p(z) when the caller already built it (default ``model.prior()``).

    Returns:
        :class:`LogTerms`, each ``(K, B)``.
    """
    prior = model.prior() if prior is None else prior
    return LogTerms(model.decoder(z).log_prob(x), prior.log_prob(z), q.log_prob(z))


def log_weights_given(model, x: torch.Tensor, q: Distribution, z: torch.Tensor) -> torch.Tensor:
    """log w = log p(x|z) + log p(z) - log q(z|x) for given samples ``z: (K, B, D_z)``."""
    return log_terms(model, x, z, q).log_w


def log_weights(model, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
    """Importance log-weights log p(x, z_k) - log q(z_k|x), z_k ~ q(z|x) reparameterized.

    Args:
        model: provides ``prior()``, ``encoder(x)``, ``decoder(z)``.
        x: ``(B, *event_shape)`` data.
        num_samples: K, samples of z per example.

    Returns:
        ``(K, B)`` tensor in nats. ``mean(0)`` is the K-sample ELBO estimate,
        :func:`log_mean_exp` over dim 0 the IWAE bound L_K (Burda et al. 2016, eq. 8).
    """
    q = model.encoder(x)
    return log_weights_given(model, x, q, reparameterize(q, num_samples))


def elbo_terms(model, x: torch.Tensor, num_samples: int = 1,
               kl: str = "analytic") -> tuple[torch.Tensor, torch.Tensor]:
    """The ELBO's two terms: E_q[log p(x|z)] (K-sample average) and KL(q(z|x) || p(z)).

    Args:
        x: ``(B, *event_shape)``.
        num_samples: K, reparameterized samples averaged in the reconstruction term.
        kl: ``"analytic"`` uses the closed form when torch.distributions has one (Gaussian
            q and prior; Kingma & Welling 2014, Appendix B) and falls back to Monte Carlo;
            ``"mc"`` always uses mean_k [log q(z_k|x) - log p(z_k)] on the same samples.

    Returns:
        ``(reconstruction, kl)``, each ``(B,)``, in nats.
    """
    if kl not in ("analytic", "mc"):
        raise ValueError(f"kl must be 'analytic' or 'mc', got {kl!r}")
    q = model.encoder(x)
    z = reparameterize(q, num_samples)                           # (K, B, D_z)
    prior = model.prior()
    closed = analytic_kl(q, prior) if kl == "analytic" else None
    if closed is not None:                                       # only log p(x|z) is sampled
        return model.decoder(z).log_prob(x).mean(0), closed
    t = log_terms(model, x, z, q, prior)                         # (K, B) each
    return t.log_px_z.mean(0), (t.log_qz - t.log_pz).mean(0)


def elbo(model, x: torch.Tensor, num_samples: int = 1, kl: str = "analytic",
         beta: float = 1.0) -> torch.Tensor:
    """The evidence lower bound E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)), ``(B,)`` nats.

    ``beta = 1`` is the ELBO (Kingma & Welling 2014, eq. 3); other values give the beta-VAE
    objective (Higgins et al. 2017, eq. 4), which is not a bound on log p(x) for beta < 1.
    See :func:`elbo_terms` for ``num_samples`` and ``kl``.
    """
    reconstruction, kl_term = elbo_terms(model, x, num_samples, kl)
    return reconstruction - beta * kl_term


def iwae_bound(model, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """The importance-weighted bound L_K = E[log (1/K) sum_k w_k], ``(B,)`` nats.

    Burda et al. (2016), eq. (8); L_1 is the ELBO, L_K increases with K towards log p(x).
    For large K use :func:`vaekit.evaluation.log_likelihood`, which streams over K.
    """
    return log_mean_exp(log_weights(model, x, num_samples), dim=0)
