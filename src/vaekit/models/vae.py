"""The standard variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014).

p(z) = N(0, I);  q_phi(z|x) = N(mu_phi(x), diag sigma_phi(x)^2);
p_theta(x|z) = Bernoulli(sigmoid(f_theta(z)))  or  N(f_theta(z), sigma^2 I).

The model only describes distributions; bounds and losses live in :mod:`vaekit.objectives`
and :mod:`vaekit.estimators`, so any objective runs with it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.distributions import Independent

from ..distributions import diagonal_normal, observation, observation_mean
from ..nn import mlp
from .base import LatentVariableModel


class VAE(LatentVariableModel):
    """A VAE with MLP encoder and decoder.

    Args:
        data_dim: D, the number of observed dimensions (784 for MNIST).
        latent_dim: the dimension of z.
        hidden_sizes: encoder hidden widths; the decoder uses them in reverse order
            (``(200, 200)`` gives 784-200-200-50 and 50-200-200-784).
        activation: hidden nonlinearity, a key of :data:`vaekit.nn.ACTIVATIONS`.
        likelihood: ``"bernoulli"`` (logits output) or ``"gaussian"`` (mean output).
        decoder_std: Gaussian decoder: sigma, fixed or its initial value.
        learn_decoder_std: Gaussian decoder: learn one shared log sigma.
    """

    def __init__(self, data_dim: int, latent_dim: int = 16,
                 hidden_sizes: Sequence[int] = (200, 200), activation: str = "tanh",
                 likelihood: str = "bernoulli", decoder_std: float = 0.1,
                 learn_decoder_std: bool = True) -> None:
        super().__init__()
        self.data_dim = int(data_dim)
        self.latent_dim = int(latent_dim)
        self.encoder_net = mlp(data_dim, hidden_sizes, 2 * latent_dim, activation)
        self.decoder_net = mlp(latent_dim, tuple(reversed(hidden_sizes)), data_dim, activation)
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))
        self._init_observation(likelihood, decoder_std, learn_decoder_std)

    @classmethod
    def from_config(cls, config, data_dim: int) -> VAE:
        """Build from a :class:`vaekit.config.ModelConfig`."""
        return cls(data_dim, latent_dim=config.latent_dim, hidden_sizes=config.hidden_sizes,
                   activation=config.activation, likelihood=config.likelihood,
                   decoder_std=config.decoder_std, learn_decoder_std=config.learn_decoder_std)

    # ------------------------------------------------------------------ distributions
    def prior(self) -> Independent:
        """p(z) = N(0, I); batch shape ``()``, event shape ``(latent_dim,)``."""
        return diagonal_normal(self.prior_loc, self.prior_scale)

    def encoder(self, x: torch.Tensor) -> Independent:
        """q(z|x) for ``x: (B, D)``: a diagonal Gaussian with batch shape ``(B,)``.

        sigma = exp(log sigma), the parameterisation of the IWAE code.
        """
        loc, log_scale = self.encoder_net(x).chunk(2, dim=-1)
        return diagonal_normal(loc, log_scale.exp())

    def decoder(self, z: torch.Tensor) -> Independent:
        """p(x|z) for ``z: (..., latent_dim)``: batch shape ``z.shape[:-1]``, event ``(D,)``."""
        out = self.decoder_net(z)
        return observation(out, self.likelihood, self.decoder_log_std)

    # ------------------------------------------------------------------ helpers
    def decoder_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z], shape ``(..., D)``: probabilities (Bernoulli) or the mean (Gaussian)."""
        out = self.decoder_net(z)
        return observation_mean(out, self.likelihood)

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        """phi: the encoder's parameters."""
        return self.encoder_net.parameters()
