"""Model families. Each returns ``torch.distributions`` objects: ``prior()``,
``encoder(x)`` for q(z|x) and ``decoder(z)`` for p(x|z); losses live elsewhere.

New families register in :data:`MODELS` (name -> class with ``from_config(config, data_dim)``).
A family that is not trained on a bound (autoencoders, VQ-VAE, mixtures fitted by EM) sets
``own_objective = True`` and names its objective in ``default_objective``.
"""

from __future__ import annotations

from torch import nn

from ..mixtures import BernoulliMixture, GaussianMixture
from .autoencoder import Autoencoder, StackedAutoencoder
from .base import LatentVariableModel
from .hierarchical import HierarchicalVAE
from .linear_gaussian import LinearGaussian
from .vae import VAE
from .vqvae import VQVAE

MODELS: dict[str, type[nn.Module]] = {
    "vae": VAE,
    "hierarchical-vae": HierarchicalVAE,
    "autoencoder": Autoencoder,
    "stacked-autoencoder": StackedAutoencoder,
    "vqvae": VQVAE,
    "gmm": GaussianMixture,
    "bernoulli-mixture": BernoulliMixture,
}


def build_model(config, data_dim: int) -> nn.Module:
    """Build the model a :class:`vaekit.config.ModelConfig` names, for ``data_dim`` inputs."""
    return MODELS[config.model].from_config(config, data_dim)


__all__ = ["MODELS", "Autoencoder", "HierarchicalVAE", "LatentVariableModel", "LinearGaussian",
           "StackedAutoencoder", "VAE", "VQVAE", "build_model"]
