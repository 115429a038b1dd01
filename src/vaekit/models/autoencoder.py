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

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..estimators.base import Losses
from ..evaluation import Evaluation, mean_and_se, model_device
from ..families import FitJob, OwnObjectiveFamily, register_family
from ..nn import build_network
from ..observations import OBSERVATIONS, GaussianObservation, Observation, observation_for
from ..options import off_or_positive, one_of, option, positive
from .base import LegacyStateMixin, NetworkOptions, resolve_options, shape_of

NOISES = ("none", "masking", "gaussian")


def check_noise(noise: str, level: float) -> None:
    """Raise ConfigError unless ``noise`` is one of ``NOISES`` and ``level`` fits it: a masking
    probability in [0, 1), a Gaussian standard deviation >= 0."""
    if noise not in NOISES:
        raise ConfigError(f"noise must be one of {', '.join(NOISES)}, got {noise!r}")
    if noise == "masking" and not 0 <= level < 1:
        raise ConfigError(f"masking noise_level must lie in [0, 1), got {level}")
    if level < 0:
        raise ConfigError(f"noise_level must be >= 0, got {level}")


@dataclass
class AutoencoderOptions(NetworkOptions):
    latent_dim: int = option(16, "dimension of the code", check=positive)
    likelihood: str = option("bernoulli", "how reconstructions are scored: bernoulli "
                                          "(-log p(x|x^), nats) | gaussian (squared error / 2)",
                             check=one_of(OBSERVATIONS.names))
    noise: str = option("none", "input corruption none | masking | gaussian (a denoising "
                                "autoencoder)", check=one_of(NOISES))
    noise_level: float = option(0.25, "masking probability or Gaussian noise std")

    def check(self) -> None:
        check_noise(self.noise, self.noise_level)


@dataclass
class StackedAutoencoderOptions(AutoencoderOptions):
    pretrain_epochs: int = option(5, "epochs of greedy pre-training per layer",
                                  check=off_or_positive)

    def check(self) -> None:
        super().check()
        if self.net not in ("auto", "mlp"):
            raise ConfigError("stacked-autoencoder pre-trains its layers one by one: it takes "
                              "--net mlp")


def reconstruction_error(out: torch.Tensor, x: torch.Tensor,
                         observation: Observation) -> torch.Tensor:
    """Per-example error of the decoder output ``out`` (logits or means, the shape of ``x``)
    for ``x: (B, *event)``: half the squared error for a Gaussian observation model, else its
    negative log-likelihood in nats (for Bernoulli: the binary cross-entropy)."""
    if isinstance(observation, GaussianObservation):
        return 0.5 * (out - x).square().flatten(1).sum(-1)
    return -observation(out).log_prob(x)


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


def corrupt_fixed(x: torch.Tensor, noise: str, level: float, g: torch.Generator) -> torch.Tensor:
    """A reproducible corruption of the CPU tensor ``x`` (for evaluation and figures)."""
    if noise == "masking":
        return x * (torch.rand(x.shape, generator=g) >= level).to(x.dtype)
    if noise == "gaussian":
        return x + level * torch.randn(x.shape, generator=g)
    return x


class Autoencoder(LegacyStateMixin, nn.Module):
    """A deterministic autoencoder, denoising when ``noise`` is not ``"none"``.

    Encoder x -> hidden_sizes -> code (with the hidden activation on the code), decoder
    code -> reversed(hidden_sizes) -> x giving logits (Bernoulli) or means (Gaussian).

    Args:
        data_shape: the event shape of x (``784`` or ``(1, 28, 28)``).
        code_dim: the code's dimension (``latent_dim``); smaller than D (undercomplete).
        options: :class:`AutoencoderOptions`; keyword arguments override its fields:
            ``hidden_sizes``, ``activation``, ``likelihood`` (how reconstructions are scored),
            ``noise`` (``"none"``, ``"masking"`` or ``"gaussian"``: corruption of the input
            during training; a denoising autoencoder reconstructs the clean x from it),
            ``noise_level`` (masking probability, or the Gaussian noise's std).
    """

    options_class: ClassVar[type[AutoencoderOptions]] = AutoencoderOptions

    def __init__(self, data_shape: int | Sequence[int], code_dim: int | None = None,
                 hidden_sizes: Sequence[int] | None = None, *,
                 options: AutoencoderOptions | None = None, **overrides) -> None:
        super().__init__()
        if code_dim is not None:
            overrides["latent_dim"] = code_dim
        if hidden_sizes is not None:
            overrides["hidden_sizes"] = list(hidden_sizes)
        opts = resolve_options(self.options_class, options, overrides)
        self.options = opts
        self.event_shape = shape_of(data_shape)
        self.latent_dim = int(opts.latent_dim)
        self.noise, self.noise_level = opts.noise, float(opts.noise_level)
        observation = observation_for(opts.likelihood, self.event_shape)
        ev, net = self.event_shape, self._net(opts)
        self.encoder_net = build_network(net, ev, (self.latent_dim,), opts,
                                         activate_output=True, event_shape=ev)
        self.decoder_net = build_network(net, (self.latent_dim,), observation.param_shape, opts,
                                         reverse=True, event_shape=ev)
        self.observation = observation

    def _net(self, opts) -> str:
        return opts.net

    @property
    def likelihood(self) -> str:
        return self.observation.name

    # ------------------------------------------------------------------ the maps
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The code f(x), ``(B, code_dim)``."""
        return self.encoder_net(x)

    def decode_mean(self, code: torch.Tensor) -> torch.Tensor:
        """The reconstruction g(c) as data: probabilities (Bernoulli) or values (Gaussian)."""
        return self.observation.mean(self.decoder_net(code))

    def reconstruction_error(self, x: torch.Tensor, x_in: torch.Tensor | None = None
                             ) -> torch.Tensor:
        """Per-example error of reconstructing ``x`` from ``x_in`` (default: ``x`` itself):
        nats for a Bernoulli likelihood. ``(B,)``."""
        out = self.decoder_net(self.encoder_net(x if x_in is None else x_in))
        return reconstruction_error(out, x, self.observation)

    # ------------------------------------------------------------------ training
    def training_losses(self, x: torch.Tensor) -> Losses:
        """Reconstruct the clean ``x`` from its corruption; the reported value is minus the
        reconstruction error (higher is better, like a bound)."""
        err = self.reconstruction_error(x, corrupt(x, self.noise, self.noise_level))
        return Losses(-err.detach(), err.mean())

    @torch.no_grad()
    def validation_score(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the reconstruction error of clean inputs, ``(B,)`` (higher is better)."""
        return -self.reconstruction_error(x)

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        return self.encoder_net.parameters()

    def generative_parameters(self) -> Iterator[nn.Parameter]:
        return self.decoder_net.parameters()

    def init_decoder_bias(self, train_mean: torch.Tensor,
                          train_sd: torch.Tensor | None = None) -> None:
        """Start the decoder at the training data (per-value mean and standard deviation):
        the logit of the mean (Bernoulli, as the IWAE code does) or the mean (Gaussian); see
        :meth:`vaekit.models.base.LatentVariableModel.init_decoder_bias`."""
        self.observation.init_bias(self.decoder_net.output_bias(), train_mean, train_sd)


class StackedAutoencoder(Autoencoder):
    """An autoencoder whose layers are first trained greedily, one shallow autoencoder per
    layer on the codes of the layers below (:func:`vaekit.fitting.pretrain_greedy`), then
    fine-tuned together (Bengio et al. 2007; Vincent et al. 2010, Sec. 3.5). With ``noise`` set,
    every layer is a denoising autoencoder."""

    options_class = StackedAutoencoderOptions

    def _net(self, opts) -> str:
        return "mlp"                       # its layers are pre-trained one by one

    def layer_pairs(self) -> list[tuple[nn.Module, nn.Module, str]]:
        """``(encoder block, decoder block, likelihood)`` for each layer, bottom first: the
        shallow autoencoder of layer l maps h_l -> h_{l+1} -> h_l on flat vectors. The first
        layer scores x with the model's likelihood; higher layers reconstruct real-valued
        codes (squared error: ``"gaussian"``)."""
        enc = [m for m in self.encoder_net]
        dec = [m for m in self.decoder_net]
        n = sum(isinstance(m, nn.Linear) for m in enc)
        enc_blocks = [nn.Sequential(*enc[2 * i:2 * i + 2]) for i in range(n)]
        dec_blocks = [nn.Sequential(*dec[2 * j:2 * j + 2]) for j in range(n)]
        return [(enc_blocks[i], dec_blocks[n - 1 - i],
                 self.observation.name if i == 0 else "gaussian") for i in range(n)]


# --------------------------------------------------------------------------- evaluation
@dataclass(kw_only=True)
class ReconstructionEvaluation(Evaluation):
    """Autoencoders: ``reconstruction_error`` of clean inputs and, for a denoising autoencoder
    or with ``noise``, ``denoising_error`` (clean x reconstructed from a corrupted copy drawn
    with a fixed seed), each a mean over examples (nats for a Bernoulli likelihood)."""

    kind: ClassVar[str] = "reconstruction"
    reconstruction_error: float
    reconstruction_error_se: float
    denoising_error: float | None = None
    denoising_error_se: float | None = None

    def in_original_units(self, log_jacobian: float) -> ReconstructionEvaluation:
        """The errors (negative log-densities) in the original units: each loses
        ``log_jacobian`` (see :meth:`Evaluation.in_original_units`)."""
        d = (None if self.denoising_error is None else self.denoising_error - log_jacobian)
        return dataclasses.replace(self, reconstruction_error=self.reconstruction_error
                                   - log_jacobian, denoising_error=d, log_jacobian=log_jacobian)

    def to_dict(self):
        d = super().to_dict()
        if self.denoising_error is None:
            d.pop("denoising_error"), d.pop("denoising_error_se")
        return d

    def rows(self):
        rows = [("reconstruction error -log p(x|x^)", self.reconstruction_error,
                 self.reconstruction_error_se)]
        if self.denoising_error is not None:
            rows.append(("denoising error (from corrupted x)", self.denoising_error,
                         self.denoising_error_se))
        return rows

    def comparison(self):
        return {**super().comparison(), "test_reconstruction_error": self.reconstruction_error,
                "test_reconstruction_error_se": self.reconstruction_error_se}


@register_family("autoencoder", AutoencoderOptions)
class AutoencoderFamily(OwnObjectiveFamily):
    """``--model autoencoder``: plain or denoising (``--noise masking|gaussian``)."""

    model = Autoencoder
    objectives = ("reconstruction",)
    capabilities = frozenset({"embed", "noise"})
    validation_name = "-reconstruction error"
    result = ReconstructionEvaluation

    @torch.no_grad()
    def evaluate(self, model, x, num_samples=None, *, progress=False, noise=None,
                 compile="auto", log=None):
        """``reconstruction_error`` and (denoising, or ``noise = (kind, level)``)
        ``denoising_error``; ``num_samples`` is ignored (the model is deterministic).

        Raises:
            ConfigError: an unknown noise or a level out of range."""
        start = time.perf_counter()
        kind, level = noise if noise is not None else (model.noise, model.noise_level)
        check_noise(kind, float(level))
        device = model_device(model)
        g = torch.Generator(device="cpu").manual_seed(0)
        clean, noisy = [], []
        for i in range(0, x.shape[0], 2000):
            xb = x[i:i + 2000].cpu()
            clean.append(model.reconstruction_error(xb.to(device)).cpu())
            if kind != "none":
                xn = corrupt_fixed(xb, kind, float(level), g)
                noisy.append(model.reconstruction_error(xb.to(device), xn.to(device)).cpu())
        rec, rec_se = mean_and_se(torch.cat(clean))
        den, den_se = mean_and_se(torch.cat(noisy)) if noisy else (None, None)
        return ReconstructionEvaluation(
            reconstruction_error=rec, reconstruction_error_se=rec_se, denoising_error=den,
            denoising_error_se=den_se, latent_dim=model.latent_dim, num_samples=None,
            num_examples=int(x.shape[0]), seconds=round(time.perf_counter() - start, 3))

    def extra_figures(self, ctx):
        model, shape = ctx.model, ctx.dataset.figure_shape
        if model.noise == "none" or shape is None:
            return []
        from .. import plotting, sampling
        clean = sampling.shown_examples(ctx.test_values(), 50)[:10]
        noisy = corrupt_fixed(clean, model.noise, model.noise_level,
                              torch.Generator().manual_seed(0))
        with torch.no_grad():
            rec = model.decode_mean(model.embed(noisy.to(model_device(model)))).cpu()
        return [("denoising.png", plotting.plot_denoising(noisy, clean, rec, shape))]


@register_family("stacked-autoencoder", StackedAutoencoderOptions)
class StackedAutoencoderFamily(AutoencoderFamily):
    """``--model stacked-autoencoder``: greedy layer-wise pre-training (``--pretrain-epochs``)
    before the autoencoder is fine-tuned."""

    model = StackedAutoencoder

    def before_fit(self, model, job: FitJob) -> None:
        from ..fitting import pretrain_greedy
        if model.options.pretrain_epochs:
            pretrain_greedy(model, job.dataset.train, job.train,
                            dynamic_binarization=job.dynamic, log=job.log)
