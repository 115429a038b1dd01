"""Posteriors q(z|x): how the encoder network's output becomes a distribution (``--posterior``).

A posterior head is an ``nn.Module`` built for a latent dimension; ``num_inputs`` is how many
features the encoder network must output, and ``forward(h)`` maps those features ``(..., F)``
to q(z|x) with batch shape ``h.shape[:-1]``. Its parameters, if any, are inference
parameters (phi). Heads take ``(latent_dim, **options)`` and ignore options they do not use.

``gaussian``: diagonal Gaussian; ``planar``: amortized planar flow (Rezende & Mohamed 2015);
``iaf``: inverse autoregressive flow (Kingma et al. 2016); the flows are in
:mod:`vaekit.flows` (``flow_steps`` T steps; IAF's context has ``context_dim`` features).
"""

from __future__ import annotations

from torch import nn
from torch.distributions import Distribution

from .distributions import diagonal_normal
from .errors import ConfigError
from .flows import IAFPosterior, PlanarPosterior
from .registry import Registry

POSTERIORS: Registry[type[nn.Module]] = Registry("posterior")


@POSTERIORS.decorator("gaussian")
class DiagonalGaussianPosterior(nn.Module):
    """q(z|x) = N(mu(x), diag sigma(x)^2) with sigma = exp(log sigma), the parameterisation
    of the IWAE code; the encoder outputs (mu, log sigma)."""

    def __init__(self, latent_dim: int, **_) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.num_inputs = 2 * latent_dim

    def forward(self, h) -> Distribution:
        loc, log_scale = h.chunk(2, dim=-1)
        return diagonal_normal(loc, log_scale.exp())


def check_context_dim(name: str, value) -> None:
    """An options check: ``None`` (the latent dimension) or a positive integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ConfigError(f"{name} must be a positive integer (or none: latent_dim), "
                          f"got {value!r}")


POSTERIORS.register("planar", PlanarPosterior)
POSTERIORS.register("iaf", IAFPosterior)


def build_posterior(name: str, latent_dim: int, **options) -> nn.Module:
    """The head ``name`` for ``latent_dim``; ``options`` (``flow_steps``, ``context_dim``)
    go to heads that take them.

    Raises:
        ConfigError: an unknown name (listing the choices) or a bad option value.
    """
    return POSTERIORS.get(name)(latent_dim, **options)
