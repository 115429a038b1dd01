"""The linear-Gaussian latent-variable model (probabilistic PCA), whose log p(x) is exact.

p(z) = N(0, I),  p(x|z) = N(W z + b, sigma^2 I)   =>   p(x) = N(x; b, W W^T + sigma^2 I),
p(z|x) = N(M^{-1} W^T (x - b) / sigma^2, M^{-1}) with M = I + W^T W / sigma^2
(Tipping & Bishop 1999, "Probabilistic principal component analysis", eqs. 5-7; Bishop 2006,
PRML eqs. 12.33-12.42). The inference network is linear, q(z|x) = N(A x + c, S), with S full
(a Cholesky factor) or diagonal, so the exact posterior lies in its family (always for a full
S; for a diagonal S when W has orthogonal columns). It is the reference against which bounds
and gradient estimators are checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.distributions import Distribution, Independent, MultivariateNormal

from ..distributions import diagonal_normal
from .base import LatentVariableModel


class LinearGaussian(LatentVariableModel):
    """Args:
        data_dim: D.
        latent_dim: L.
        sigma: the observation noise standard deviation (initial value).
        learn_sigma: make log sigma a parameter.
        posterior: ``"full"`` (q has a full covariance) or ``"diagonal"``.
    """

    likelihood = "gaussian"

    def __init__(self, data_dim: int, latent_dim: int, sigma: float = 1.0,
                 learn_sigma: bool = True, posterior: str = "full") -> None:
        super().__init__()
        if posterior not in ("full", "diagonal"):
            raise ValueError(f"posterior must be full or diagonal, got {posterior!r}")
        self.data_dim, self.latent_dim, self.posterior = data_dim, latent_dim, posterior
        self.W = nn.Parameter(torch.randn(data_dim, latent_dim) / math.sqrt(latent_dim))
        self.b = nn.Parameter(torch.zeros(data_dim))
        log_sigma = torch.tensor(math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        self.A = nn.Parameter(0.1 * torch.randn(latent_dim, data_dim))
        self.c = nn.Parameter(torch.zeros(latent_dim))
        # full: unconstrained lower-triangular factor, diagonal through exp; diagonal: log scales
        self.raw_scale = nn.Parameter(torch.zeros(latent_dim, latent_dim)
                                      if posterior == "full" else torch.zeros(latent_dim))
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_eye", torch.eye(latent_dim))

    # ---------------------------------------------------------------- distributions
    def prior(self) -> Distribution:
        if self.posterior == "full":
            return MultivariateNormal(self.prior_loc, scale_tril=self.prior_eye,
                                      validate_args=False)
        return diagonal_normal(self.prior_loc, torch.ones_like(self.prior_loc))

    def scale_tril(self) -> torch.Tensor:
        """Cholesky factor of q's covariance, ``(L, L)``."""
        if self.posterior == "full":
            r = self.raw_scale
            return torch.tril(r, -1) + torch.diag(r.diagonal().exp())
        return torch.diag(self.raw_scale.exp())

    def encoder(self, x: torch.Tensor) -> Distribution:
        loc = x @ self.A.T + self.c                                   # (B, L)
        if self.posterior == "full":
            return MultivariateNormal(loc, scale_tril=self.scale_tril(), validate_args=False)
        return diagonal_normal(loc, self.raw_scale.exp().expand_as(loc))

    def local_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, Callable]:
        """``(h, head)`` with q(z|x) = ``head(h)``: per-point variational parameters ``h: (B,
        F)`` and the map to q (:func:`vaekit.gaps.inference_gaps` optimises ``h`` point by
        point). Diagonal q: ``h = (m, log s)``, F = 2L; full q: ``h = (m, vec R)``, F = L + L^2,
        R the unconstrained lower-triangular factor of :meth:`scale_tril`."""
        loc = x @ self.A.T + self.c                                   # (B, L)
        scale = self.raw_scale.reshape(1, -1).expand(loc.shape[0], -1)
        return torch.cat([loc, scale], -1), self._head

    def _head(self, h: torch.Tensor) -> Distribution:
        L = self.latent_dim
        loc, raw = h[..., :L], h[..., L:]
        if self.posterior == "diagonal":
            return diagonal_normal(loc, raw.exp())
        r = raw.reshape(*raw.shape[:-1], L, L)
        tril = torch.tril(r, -1) + torch.diag_embed(r.diagonal(dim1=-2, dim2=-1).exp())
        return MultivariateNormal(loc, scale_tril=tril, validate_args=False)

    def decoder(self, z: torch.Tensor) -> Independent:
        mean = z @ self.W.T + self.b
        return diagonal_normal(mean, self.log_sigma.exp().expand_as(mean))

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        return iter((self.A, self.c, self.raw_scale))

    # ---------------------------------------------------------------- exact quantities
    def marginal(self) -> MultivariateNormal:
        """p(x) = N(b, W W^T + sigma^2 I)."""
        cov = self.W @ self.W.T + self.log_sigma.exp() ** 2 * torch.eye(
            self.data_dim, dtype=self.W.dtype, device=self.W.device)
        return MultivariateNormal(self.b, covariance_matrix=cov)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) in nats, ``x: (B, D)`` -> ``(B,)``."""
        return self.marginal().log_prob(x)

    def closed_form_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """The ELBO of q(z|x) = N(m, S) in closed form, ``(B,)`` nats, differentiable:

            E_q log p(x|z) = -D/2 log(2 pi sigma^2) - (|x - W m - b|^2 + tr(W S W^T)) / (2 sigma^2)
            KL(q || p(z))  = (tr S + m^T m - L - log det S) / 2.
        """
        q = self.encoder(x)
        mean, cov = q.mean, q.covariance_matrix if self.posterior == "full" else torch.diag_embed(
            q.variance)
        s2 = self.log_sigma.exp() ** 2
        resid = x - mean @ self.W.T - self.b
        tr_wsw = torch.einsum("ij,...jk,ik->...", self.W, cov, self.W)
        rec = (-0.5 * self.data_dim * torch.log(2 * math.pi * s2)
               - ((resid ** 2).sum(-1) + tr_wsw) / (2 * s2))
        kl = 0.5 * (torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1) + (mean ** 2).sum(-1)
                    - self.latent_dim - torch.logdet(cov))
        return rec - kl

    def exact_posterior(self, x: torch.Tensor) -> MultivariateNormal:
        """p(z|x) = N(M^{-1} W^T (x - b) / sigma^2, M^{-1}), M = I + W^T W / sigma^2."""
        A, c, cov = self._posterior_map()
        return MultivariateNormal(x @ A.T + c, covariance_matrix=cov)

    def _posterior_map(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s2 = self.log_sigma.exp() ** 2
        eye = torch.eye(self.latent_dim, dtype=self.W.dtype, device=self.W.device)
        cov = torch.linalg.inv(eye + self.W.T @ self.W / s2)
        A = cov @ self.W.T / s2
        return A, -A @ self.b, cov

    @torch.no_grad()
    def set_exact_posterior(self) -> None:
        """Set q(z|x) to the exact posterior p(z|x).

        Raises:
            ValueError: q is diagonal but the posterior covariance is not (W's columns are not
                orthogonal).
        """
        A, c, cov = self._posterior_map()
        self.A.copy_(A)
        self.c.copy_(c)
        L = torch.linalg.cholesky(cov)
        if self.posterior == "full":
            self.raw_scale.copy_(torch.tril(L, -1) + torch.diag(L.diagonal().log()))
        else:
            off = cov - torch.diag(cov.diagonal())
            if off.abs().max() > 1e-6 * cov.diagonal().abs().max():
                raise ValueError("the exact posterior has correlations: a diagonal q cannot "
                                 "represent it (use posterior='full')")
            self.raw_scale.copy_(0.5 * cov.diagonal().log())
