"""The interface every latent-variable model offers to objectives, training and evaluation,
and the options shared by the families that have networks.

A model only describes distributions: ``prior()`` for p(z), ``encoder(x)`` for q(z|x) and
``decoder(z)`` for p(x|z), all ``torch.distributions`` objects; losses live in
:mod:`vaekit.objectives` and :mod:`vaekit.estimators`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution

from ..nn import ACTIVATIONS, NETWORKS, as_shape
from ..observations import OBSERVATIONS, Observation
from ..options import Options, nonnegative, off_or_positive, one_of, option, positive, widths


@dataclass
class NetworkOptions(Options):
    """Options of a family with an encoder and a decoder network."""

    net: str = option("auto", "network of the encoder and the decoder: mlp | conv | auto "
                              "(conv for colour images, mlp otherwise)",
                      check=one_of(lambda: ["auto", *NETWORKS.names()]))
    hidden_sizes: list[int] = option([200, 200], "MLP: hidden layer widths of the encoder, e.g. "
                                                 "200,200 (the decoder mirrors them)",
                                     check=widths(allow_empty=False))
    conv_channels: list[int] = option([32, 64], "conv: channels of the encoder's 4x4 stride-2 "
                                                "convolutions, one per halving of the image "
                                                "(the decoder mirrors them)",
                                      check=widths(allow_empty=False))
    conv_residual_blocks: int = option(0, "conv: residual blocks at the smallest resolution "
                                          "(0: none)", check=off_or_positive)
    activation: str = option("tanh", "hidden activation: " + ", ".join(ACTIVATIONS),
                             check=one_of(ACTIVATIONS))


@dataclass
class DecoderOptions(NetworkOptions):
    """:class:`NetworkOptions` and the observation model p(x|z) of the decoder."""

    likelihood: str = option("auto", "decoder p(x|z): bernoulli (0/1 or [0,1] data), "
                                     "gaussian (real values), table (a table's columns); for "
                                     "8-bit data (in bits/dim): categorical, "
                                     "discretized-logistic, dequantized-gaussian, "
                                     "dequantized-logistic; auto: table for tables, gaussian "
                                     "for real values outside [0, 1], discretized-logistic for "
                                     "8-bit colour images, bernoulli otherwise",
                             check=one_of(lambda: ["auto", *OBSERVATIONS.names()]))
    decoder_std: float = option(0.1, "Gaussian decoder: the (initial) standard deviation sigma",
                                check=positive)
    learn_decoder_std: bool = option(True, "Gaussian decoder: learn sigma (else keep it fixed)")
    decoder_std_floor: float = option(0.0, "Gaussian decoder: the smallest sigma (0: no floor)",
                                      check=nonnegative)
    table_columns: str = option("", "table decoder: each column's kind, e.g. "
                                    "real,binary,categorical:3 (filled in from the data)")
    logistic_components: int = option(10, "discretized-logistic decoder: mixture components "
                                          "per pixel", check=positive)


def resolve_options(cls: type[Options], options: Options | None, overrides: dict) -> Options:
    """``options`` (default: ``cls()``) with ``overrides`` applied, validated."""
    opts = options if options is not None else cls()
    if overrides:
        unknown = [k for k in overrides if k not in cls.field_names()]
        if unknown:
            raise TypeError(f"{cls.__name__} has no option {unknown[0]!r}")
        opts = opts.replace(**overrides)
    return opts.validate()


class LegacyStateMixin:
    """Reads checkpoints whose keys have since moved: ``_legacy_keys`` maps an old key to its
    new key, or to ``None`` when it is no longer stored (a constant rebuilt from the
    options); a key ending in ``.`` maps every key under that prefix. A mapped key whose new
    place this model does not have is dropped too."""

    _legacy_keys: dict[str, str | None] = {}
    # parameters that vaekit 0.1 held on the model itself, which put them first in
    # ``parameters()`` (and so in the optimizer state of its checkpoints)
    _legacy_first: tuple[str, ...] = ()

    def legacy_parameter_order(self) -> list[str]:
        """The names of this model's parameters in the order vaekit 0.1 gave them."""
        names = [n for n, _ in self.named_parameters()]
        first = [n for n in self._legacy_first if n in names]
        return first + [n for n in names if n not in first]

    def _register_legacy_hook(self) -> None:
        self._register_load_state_dict_pre_hook(self._upgrade_state)

    def _upgrade_state(self, state_dict, prefix, *args) -> None:
        own = set(self.state_dict())
        for old, new in self._legacy_keys.items():
            keys = ([k for k in state_dict if k.startswith(prefix + old)] if old.endswith(".")
                    else [prefix + old] if prefix + old in state_dict else [])
            for key in keys:
                rest = key[len(prefix):]
                if rest in own:
                    continue
                value = state_dict.pop(key)
                target = None if new is None else new + rest[len(old):]
                if target is not None and target in own and prefix + target not in state_dict:
                    state_dict[prefix + target] = value


class LatentVariableModel(LegacyStateMixin, nn.Module):
    """p(x) = int p_theta(x|z) p(z) dz with an inference network q_phi(z|x).

    Subclasses set ``event_shape``, ``latent_dim`` and ``observation`` (the
    :class:`~vaekit.observations.Observation` p(x | decoder output)) and implement
    :meth:`prior`, :meth:`encoder`, :meth:`decoder_output` and :meth:`inference_parameters`.
    """

    event_shape: tuple[int, ...]
    latent_dim: int
    observation: Observation
    # vaekit 0.1 stored the decoder's log sigma (a buffer even for a Bernoulli decoder) and
    # the standard normal prior's constants.
    _legacy_keys = {"decoder_log_std": "observation.log_std", "prior_loc": None,
                    "prior_scale": None}
    _legacy_first = ("observation.log_std",)

    @property
    def likelihood(self) -> str:
        """The observation model's name (``"bernoulli"``, ``"gaussian"``)."""
        return self.observation.name

    @property
    def decoder_log_std(self) -> torch.Tensor:
        """A Gaussian decoder's log sigma (``observation.log_std``; vaekit 0.1's name)."""
        return self.observation.log_std

    def prior(self) -> Distribution:
        """p(z), batch shape ``()``."""
        raise NotImplementedError

    def encoder(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for ``x: (B, *event_shape)``, batch shape ``(B,)``."""
        raise NotImplementedError

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder network's output for ``z: (..., latent_dim)``: the observation model's
        parameters, ``(..., *observation.param_shape)``."""
        raise NotImplementedError

    def decoder(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for ``z: (..., latent_dim)``: batch shape ``z.shape[:-1]``, event
        ``event_shape``."""
        return self.observation(self.decoder_output(z))

    def decoder_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z], shape ``(..., *event_shape)``."""
        return self.observation.mean(self.decoder_output(z))

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        """phi: the parameters of q(z|x)."""
        raise NotImplementedError

    def generative_parameters(self) -> Iterator[nn.Parameter]:
        """theta: every parameter that is not in :meth:`inference_parameters`."""
        ids = {id(p) for p in self.inference_parameters()}
        return (p for p in self.parameters() if id(p) not in ids)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """A point in latent space for each ``x: (B, *event_shape)``: the posterior mean."""
        return self.encoder(x).mean

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z] as data (the inverse map of :meth:`embed` for figures)."""
        return self.decoder_mean(z)

    def init_decoder_bias(self, train_mean: torch.Tensor,
                          train_sd: torch.Tensor | None = None) -> None:
        """Start the decoder at the training data (``train_mean``, ``train_sd``: the
        per-value mean and standard deviation, any shape with D values): the last layer's
        bias becomes what the observation model says (the logit of the mean for a Bernoulli
        decoder, as the IWAE code does; the mean for a Gaussian one; for the discretized
        logistic mixture also a scale from ``train_sd``)."""
        self.observation.init_bias(self.decoder_net.output_bias(), train_mean, train_sd)

    @torch.no_grad()
    def sample(self, num: int) -> torch.Tensor:
        """``num`` draws of E[x|z] with z ~ p(z): ``(num, *event_shape)``."""
        return self.decoder_mean(self.prior().sample((num,)))

    @torch.no_grad()
    def draw(self, num: int) -> torch.Tensor:
        """``num`` draws x ~ p(x|z) with z ~ p(z), ancestral sampling of the model itself
        (binary values for a Bernoulli decoder, one-hot blocks for a table's categorical
        columns): ``(num, *event_shape)``."""
        return self.decoder(self.prior().sample((num,))).sample()


def shape_of(data_shape: int | Sequence[int]) -> tuple[int, ...]:
    """The event shape of the data a model is built for (an int D means ``(D,)``)."""
    return as_shape(data_shape)

