"""Model families. Each returns ``torch.distributions`` objects: ``prior()``,
``encoder(x)`` for q(z|x) and ``decoder(z)`` for p(x|z); losses live elsewhere.

New families register in :data:`MODELS` (name -> class with ``from_config(config, data_dim)``).
"""

from __future__ import annotations

from torch import nn

from .base import LatentVariableModel
from .linear_gaussian import LinearGaussian
from .vae import VAE

MODELS: dict[str, type[nn.Module]] = {"vae": VAE}


def build_model(config, data_dim: int) -> nn.Module:
    """Build the model a :class:`vaekit.config.ModelConfig` names, for ``data_dim`` inputs."""
    return MODELS[config.model].from_config(config, data_dim)


__all__ = ["MODELS", "LatentVariableModel", "LinearGaussian", "VAE", "build_model"]
