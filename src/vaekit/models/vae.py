"""The standard variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014).

p(z) = N(0, I);  q_phi(z|x) = N(mu_phi(x), diag sigma_phi(x)^2);
p_theta(x|z) = Bernoulli(sigmoid(f_theta(z)))  or  N(f_theta(z), sigma^2 I).

The model only describes distributions; bounds and losses live in :mod:`vaekit.objectives`
and :mod:`vaekit.estimators`, so any objective runs with it. The prior, the posterior head and
the observation model are chosen by name from their registries (:mod:`vaekit.priors`,
:mod:`vaekit.posteriors`, :mod:`vaekit.observations`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution

from ..families import BoundFamily, register_family
from ..nn import build_network
from ..observations import observation_for
from ..options import one_of, option, positive
from ..posteriors import POSTERIORS, build_posterior, check_context_dim
from ..priors import PRIORS, build_prior, check_components
from .base import DecoderOptions, LatentVariableModel, resolve_options, shape_of


@dataclass
class VAEOptions(DecoderOptions):
    latent_dim: int = option(16, "dimension of z", check=positive)
    prior: str = option("standard", "p(z): standard (N(0, I)), mog (a mixture of K learned "
                                    "diagonal Gaussians), vamp (the VampPrior: the encoder's "
                                    "mixture at K learned pseudo-inputs)",
                        check=one_of(PRIORS.names))
    prior_components: int = option(0, "K, the components of the mog and vamp priors (0: the "
                                       "prior's default, mog 10, vamp 500)",
                                   check=check_components)
    posterior: str = option("gaussian", "q(z|x): gaussian (diagonal), planar (amortized "
                                        "planar flow), iaf (inverse autoregressive flow)",
                            check=one_of(POSTERIORS.names))
    flow_steps: int = option(4, "planar and iaf posteriors: number of flow steps T",
                             check=positive)
    flow_context_dim: int | None = option(None, "iaf posterior: size of the context h the "
                                                "encoder passes to each step (default: "
                                                "latent_dim)", check=check_context_dim)


class VAE(LatentVariableModel):
    """A VAE with encoder and decoder networks (MLPs by default).

    Args:
        data_shape: the event shape of x: ``784`` (D) or ``(1, 28, 28)``; networks flatten it.
        options: :class:`VAEOptions`; keyword arguments override its fields:
            ``latent_dim``, ``hidden_sizes`` (encoder widths; the decoder uses them in reverse
            order: ``(200, 200)`` gives 784-200-200-50 and 50-200-200-784), ``activation``,
            ``likelihood`` (``"bernoulli"``: logits output; ``"gaussian"``: mean output),
            ``decoder_std`` / ``learn_decoder_std`` / ``decoder_std_floor`` (Gaussian sigma),
            ``prior``, ``posterior``, ``net``.

    Raises:
        ConfigError: an option out of range or an unknown choice.
    """

    def __init__(self, data_shape: int | Sequence[int], options: VAEOptions | None = None,
                 **overrides) -> None:
        super().__init__()
        opts = resolve_options(VAEOptions, options, overrides)
        self.options = opts
        self.event_shape = shape_of(data_shape)
        self.latent_dim = int(opts.latent_dim)
        self.posterior_head = build_posterior(opts.posterior, self.latent_dim,
                                              flow_steps=opts.flow_steps,
                                              context_dim=opts.flow_context_dim)
        observation = observation_for(opts.likelihood, self.event_shape, opts)
        ev = self.event_shape
        self.encoder_net = build_network(opts.net, ev, (self.posterior_head.num_inputs,), opts,
                                         event_shape=ev)
        self.decoder_net = build_network(opts.net, (self.latent_dim,), observation.param_shape,
                                         opts, reverse=True, event_shape=ev)
        self.latent_prior = build_prior(opts.prior, self.latent_dim, opts.prior_components,
                                        self.event_shape)
        self.observation = observation              # registered last: 0.1's parameter order
        self._register_legacy_hook()

    @property
    def data_dim(self) -> int:
        return int(torch.Size(self.event_shape).numel())

    # ------------------------------------------------------------------ distributions
    def prior(self) -> Distribution:
        """p(z); batch shape ``()``, event shape ``(latent_dim,)`` (the VampPrior is built
        from this model's encoder, which it receives here)."""
        return self.latent_prior(encoder=self.encoder)

    def encoder(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for ``x: (B, *event_shape)``: batch shape ``(B,)``."""
        return self.posterior_head(self.encoder_net(x))

    def local_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, nn.Module]:
        """``(h, head)``: the encoder network's features ``h: (B, posterior_head.num_inputs)``
        of ``x: (B, *event_shape)`` and the posterior head, q(z|x) = ``head(h)``."""
        return self.encoder_net(x), self.posterior_head

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """The observation model's parameters (Bernoulli logits, Gaussian means, ...),
        ``(..., *observation.param_shape)``."""
        return self.decoder_net(z)

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        """phi: the encoder's parameters (and the posterior head's, if it has any)."""
        yield from self.encoder_net.parameters()
        yield from self.posterior_head.parameters()


@register_family("vae", VAEOptions)
class VAEFamily(BoundFamily):
    """``--model vae``: the standard VAE, trained with any bound estimator."""

    model = VAE
    capabilities = BoundFamily.capabilities | {"gaps"}

    def local_posterior(self, model, x):
        return model.local_posterior(x)

    def initialize(self, model, dataset):
        """The decoder starts at the data mean; a learned prior's data-dependent start (the
        VampPrior's pseudo-inputs at training examples, :meth:`vaekit.priors.Prior.
        initialize`; nothing for the standard and mog priors)."""
        super().initialize(model, dataset)
        model.latent_prior.initialize(dataset.train)
