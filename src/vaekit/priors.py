"""Priors p(z): one registry entry each (``--prior``).

A prior is an ``nn.Module`` built for a latent dimension whose ``forward()`` returns the
distribution p(z) (batch shape ``()``, event shape ``(latent_dim,)``); a learned prior's
parameters are generative (theta). The standard normal is the only one today; a mixture of
Gaussians or the VampPrior is one more class registered here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution

from .distributions import diagonal_normal
from .registry import Registry

PRIORS: Registry[type[nn.Module]] = Registry("prior")


@PRIORS.decorator("standard")
class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I). Its constants are not stored in checkpoints."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self) -> Distribution:
        return diagonal_normal(self.loc, self.scale)


def build_prior(name: str, latent_dim: int) -> nn.Module:
    return PRIORS.get(name)(latent_dim)
