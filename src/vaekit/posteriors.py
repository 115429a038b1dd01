"""Posteriors q(z|x): how the encoder network's output becomes a distribution (``--posterior``).

A posterior head is an ``nn.Module`` built for a latent dimension; ``num_inputs`` is how many
features the encoder network must output, and ``forward(h)`` maps those features ``(..., F)``
to q(z|x) with batch shape ``h.shape[:-1]``. Its parameters, if any, are inference
parameters (phi). A flow posterior (planar, IAF) is one more class registered here.
"""

from __future__ import annotations

from torch import nn
from torch.distributions import Distribution

from .distributions import diagonal_normal
from .registry import Registry

POSTERIORS: Registry[type[nn.Module]] = Registry("posterior")


@POSTERIORS.decorator("gaussian")
class DiagonalGaussianPosterior(nn.Module):
    """q(z|x) = N(mu(x), diag sigma(x)^2) with sigma = exp(log sigma), the parameterisation
    of the IWAE code; the encoder outputs (mu, log sigma)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.num_inputs = 2 * latent_dim

    def forward(self, h) -> Distribution:
        loc, log_scale = h.chunk(2, dim=-1)
        return diagonal_normal(loc, log_scale.exp())


def build_posterior(name: str, latent_dim: int) -> nn.Module:
    return POSTERIORS.get(name)(latent_dim)
