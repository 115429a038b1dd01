"""Model families. Each module defines a model (which only returns ``torch.distributions``
objects, or for families with their own objective its own loss), its options and its
registered :class:`~vaekit.families.Family`; importing this package registers them all.

=========================  ==================================================================
``vae``                    the standard VAE (:mod:`.vae`)
``hierarchical-vae``       several stochastic layers (:mod:`.hierarchical`)
``autoencoder``            deterministic, plain or denoising (:mod:`.autoencoder`)
``stacked-autoencoder``    greedy layer-wise pre-training, then fine-tuning
``vqvae``                  VQ-VAE with an EMA codebook and a code prior (:mod:`.vqvae`)
``gmm``                    mixture of Gaussians fitted by EM (:mod:`.mixtures`)
``bernoulli-mixture``      mixture of Bernoullis fitted by EM
``cvae``                   conditional VAE p(x|z, y), q(z|x, y) (:mod:`.conditional`)
``m2``                     semi-supervised M2 with a classifier q(y|x) (:mod:`.conditional`)
=========================  ==================================================================

:class:`LinearGaussian` (probabilistic PCA, exact log p(x)) is the reference model of the
tests, not a family.
"""

from __future__ import annotations

from torch import nn

from ..families import FAMILIES, family_of_options
from ..nn import as_shape
from ..options import Options

# isort: off
# The families register in this order (the order --help lists them in): the default first.
from . import vae, hierarchical, autoencoder, vqvae, mixtures  # noqa: F401
from . import conditional  # noqa: F401  (cvae, m2)
# isort: on
from .autoencoder import Autoencoder, AutoencoderOptions, StackedAutoencoder
from .base import DecoderOptions, LatentVariableModel, NetworkOptions
from .hierarchical import HierarchicalVAE, HierarchicalVAEOptions
from .linear_gaussian import LinearGaussian
from .mixtures import BernoulliMixture, GaussianMixture
from .vae import VAE, VAEOptions
from .vqvae import VQVAE, VQVAEOptions

MODELS = FAMILIES


def build_model(options: Options, event_shape: int | tuple[int, ...]) -> nn.Module:
    """Build the model of the family whose options ``options`` are, for data of
    ``event_shape`` (an int D means ``(D,)``)."""
    return family_of_options(options).build(options, as_shape(event_shape))


__all__ = ["MODELS", "Autoencoder", "AutoencoderOptions", "BernoulliMixture",
           "DecoderOptions", "GaussianMixture", "HierarchicalVAE", "HierarchicalVAEOptions",
           "LatentVariableModel", "LinearGaussian", "NetworkOptions", "StackedAutoencoder",
           "VAE", "VAEOptions", "VQVAE", "VQVAEOptions", "build_model"]
