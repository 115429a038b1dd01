"""Deterministic autoencoders: plain, denoising and stacked.

An autoencoder maps x to a code c = f(x) and back to x^ = g(c), trained to reconstruct x.
The reconstruction error is measured with the same likelihood as a VAE's decoder, so numbers
are comparable: for binary data the Bernoulli negative log-likelihood -log p(x | x^) in nats
(binary cross-entropy summed over pixels), for real data the squared error / 2 (the Gaussian
negative log-likelihood with unit variance, up to its constant). There is no prior over codes:
an autoencoder has no way to generate new data and no reason for its code space to be
interpolable, which is the point of setting it beside the VAE (Kingma & Welling 2014, Sec. 1).

References:
    Hinton & Salakhutdinov (2006), "Reducing the dimensionality of data with neural networks".
    Vincent, Larochelle, Bengio & Manzagol (2008), "Extracting and composing robust features
        with denoising autoencoders" (masking noise); Vincent et al. (2010), JMLR 11,
        "Stacked denoising autoencoders" (Gaussian noise, greedy layer-wise pre-training).
    Bengio, Lamblin, Popovici & Larochelle (2007), "Greedy layer-wise training of deep
        networks".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..distributions import observation_mean
from ..errors import ConfigError
from ..estimators.base import Losses
from ..nn import ACTIVATIONS, init_output_bias

NOISES = ("none", "masking", "gaussian")


def reconstruction_error(out: torch.Tensor, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Per-example error of the decoder output ``out`` (logits or means) for ``x: (B, D)``:
    Bernoulli negative log-likelihood in nats, or half the squared error."""
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)
    return 0.5 * (out - x).square().sum(-1)


def check_noise(noise: str, level: float) -> None:
    """Raise ConfigError unless ``noise`` is one of ``NOISES`` and ``level`` fits it: a masking
    probability in [0, 1), a Gaussian standard deviation >= 0."""
    if noise not in NOISES:
        raise ConfigError(f"noise must be one of {', '.join(NOISES)}, got {noise!r}")
    if noise == "masking" and not 0 <= level < 1:
        raise ConfigError(f"masking noise_level must lie in [0, 1), got {level}")
    if level < 0:
        raise ConfigError(f"noise_level must be >= 0, got {level}")


def corrupt(x: torch.Tensor, noise: str, level: float) -> torch.Tensor:
    """Masking noise (each value set to 0 with probability ``level``) or additive Gaussian
    noise of standard deviation ``level`` (Vincent et al. 2010, Sec. 4.2)."""
    if noise == "none" or level == 0:
        return x
    if noise == "masking":
        return x * (torch.rand_like(x) >= level).to(x.dtype)
    if noise == "gaussian":
        return x + level * torch.randn_like(x)
    raise ConfigError(f"noise must be one of {', '.join(NOISES)}, got {noise!r}")


def _stack(sizes: Sequence[int], activation: str, last_activation: bool) -> nn.Sequential:
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(act())
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """A deterministic autoencoder, denoising when ``noise`` is not ``"none"``.

    Encoder D -> hidden_sizes -> code_dim (with the hidden activation on the code), decoder
    code_dim -> reversed(hidden_sizes) -> D giving logits (Bernoulli) or means (Gaussian).

    Args:
        data_dim: D.
        code_dim: the code's dimension (``--latent-dim``); smaller than D (undercomplete).
        hidden_sizes, activation: as for :class:`VAE`.
        likelihood: ``"bernoulli"`` or ``"gaussian"``: how reconstructions are scored.
        noise: ``"none"``, ``"masking"`` or ``"gaussian"``: corruption of the input during
            training (a denoising autoencoder reconstructs the clean x from it).
        noise_level: masking probability, or the Gaussian noise's standard deviation.
    """

    default_objective = "reconstruction"
    own_objective = True

    def __init__(self, data_dim: int, code_dim: int = 16, hidden_sizes: Sequence[int] = (200,),
                 activation: str = "tanh", likelihood: str = "bernoulli", noise: str = "none",
                 noise_level: float = 0.0) -> None:
        super().__init__()
        check_noise(noise, noise_level)
        self.data_dim, self.latent_dim, self.likelihood = data_dim, code_dim, likelihood
        self.noise, self.noise_level = noise, float(noise_level)
        sizes = [data_dim, *hidden_sizes, code_dim]
        self.encoder_net = _stack(sizes, activation, last_activation=True)
        self.decoder_net = _stack(sizes[::-1], activation, last_activation=False)

    @classmethod
    def from_config(cls, config, data_dim: int) -> Autoencoder:
        return cls(data_dim, config.latent_dim, config.hidden_sizes, config.activation,
                   config.likelihood, config.noise, config.noise_level)

    # ------------------------------------------------------------------ the maps
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The code f(x), ``(B, code_dim)``."""
        return self.encoder_net(x)

    def decode_mean(self, code: torch.Tensor) -> torch.Tensor:
        """The reconstruction g(c) as data: probabilities (Bernoulli) or values (Gaussian)."""
        out = self.decoder_net(code)
        return observation_mean(out, self.likelihood)

    def reconstruction_error(self, x: torch.Tensor, x_in: torch.Tensor | None = None
                             ) -> torch.Tensor:
        """Per-example error of reconstructing ``x`` from ``x_in`` (default: ``x`` itself):
        nats for a Bernoulli likelihood. ``(B,)``."""
        out = self.decoder_net(self.encoder_net(x if x_in is None else x_in))
        return reconstruction_error(out, x, self.likelihood)

    # ------------------------------------------------------------------ training
    def training_losses(self, x: torch.Tensor) -> Losses:
        """Reconstruct the clean ``x`` from its corruption; the reported value is minus the
        reconstruction error (higher is better, like a bound)."""
        err = self.reconstruction_error(x, corrupt(x, self.noise, self.noise_level))
        loss = err.mean()
        return Losses(-err.detach(), loss, loss)

    @torch.no_grad()
    def validation_score(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the reconstruction error of clean inputs, ``(B,)`` (higher is better)."""
        return -self.reconstruction_error(x)

    validation_name = "-reconstruction error"

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        return self.encoder_net.parameters()

    def generative_parameters(self) -> Iterator[nn.Parameter]:
        return self.decoder_net.parameters()

    def init_decoder_bias(self, train_mean: torch.Tensor) -> None:
        """Start the decoder at the training-data mean ``(D,)``: the logit of it (Bernoulli,
        as the IWAE code does) or the mean (Gaussian); :func:`vaekit.nn.init_output_bias`."""
        init_output_bias(self.decoder_net[-1], train_mean, self.likelihood)

    @torch.no_grad()
    def evaluation(self, x: torch.Tensor, num_samples: int | None = None, *,
                   noise: str | None = None, noise_level: float | None = None) -> dict:
        """Test metrics: ``reconstruction_error`` of clean inputs and, for a denoising
        autoencoder, ``denoising_error`` (clean x reconstructed from a corrupted copy, drawn
        with a fixed seed), each a mean over examples in nats (Bernoulli) with its standard
        error. ``num_samples`` is ignored (the model is deterministic).

        ``noise``/``noise_level`` replace the training corruption for ``denoising_error``, so
        that any autoencoder (a plain one too) is scored on the same corrupted inputs.

        Raises:
            ConfigError: an unknown noise or a level out of range."""
        from ..evaluation import mean_and_se, model_device
        noise = self.noise if noise is None else noise
        noise_level = self.noise_level if noise_level is None else float(noise_level)
        check_noise(noise, noise_level)
        device = model_device(self)
        g = torch.Generator(device="cpu").manual_seed(0)
        clean, noisy = [], []
        for i in range(0, x.shape[0], 2000):
            xb = x[i:i + 2000].cpu()
            clean.append(self.reconstruction_error(xb.to(device)).cpu())
            if noise != "none":
                xn = corrupt_fixed(xb, noise, noise_level, g)
                noisy.append(self.reconstruction_error(xb.to(device), xn.to(device)).cpu())
        out = {}
        out["reconstruction_error"], out["reconstruction_error_se"] = mean_and_se(
            torch.cat(clean))
        if noisy:
            out["denoising_error"], out["denoising_error_se"] = mean_and_se(torch.cat(noisy))
        return out


class StackedAutoencoder(Autoencoder):
    """An autoencoder whose layers are first trained greedily, one shallow autoencoder per
    layer on the codes of the layers below (:func:`vaekit.training.pretrain_greedy`), then
    fine-tuned together (Bengio et al. 2007; Vincent et al. 2010, Sec. 3.5). With ``noise`` set,
    every layer is a denoising autoencoder."""

    def layer_pairs(self) -> list[tuple[nn.Module, nn.Module, str]]:
        """``(encoder block, decoder block, likelihood)`` for each layer, bottom first: the
        shallow autoencoder of layer l maps h_l -> h_{l+1} -> h_l. The first layer scores x
        with the model's likelihood; higher layers reconstruct real-valued codes (squared
        error)."""
        enc = [m for m in self.encoder_net]
        dec = [m for m in self.decoder_net]
        n = sum(isinstance(m, nn.Linear) for m in enc)
        enc_blocks = [nn.Sequential(*enc[2 * i:2 * i + 2]) for i in range(n)]
        dec_blocks = [nn.Sequential(*dec[2 * j:2 * j + 2]) for j in range(n)]
        return [(enc_blocks[i], dec_blocks[n - 1 - i],
                 self.likelihood if i == 0 else "gaussian") for i in range(n)]


def corrupt_fixed(x: torch.Tensor, noise: str, level: float, g: torch.Generator) -> torch.Tensor:
    """A reproducible corruption of the CPU tensor ``x`` (for evaluation and figures)."""
    if noise == "masking":
        return x * (torch.rand(x.shape, generator=g) >= level).to(x.dtype)
    if noise == "gaussian":
        return x + level * torch.randn(x.shape, generator=g)
    return x
