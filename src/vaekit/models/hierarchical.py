"""A VAE with several stochastic layers (Burda et al. 2016, Sec. 5 and Appendix B).

Generative model  p(z_L) p(z_{L-1}|z_L) ... p(z_1|z_2) p(x|z_1),  p(z_L) = N(0, I);
inference model   q(z_1|x) q(z_2|z_1) ... q(z_L|z_{L-1}),
every conditional a diagonal Gaussian whose mean and log standard deviation come from an MLP
(the IWAE code's "GaussianSampler"). The IWAE paper's two-layer model is
784-[200,200]-100-[100,100]-50 with tanh units: ``latent_dims=(100, 50)``,
``hidden_sizes=(200, 200)``, ``upper_hidden_sizes=(100, 100)``.

The latent variable is the concatenation z = (z_1, ..., z_L), so the model offers the same
``prior()``, ``encoder(x)``, ``decoder(z)`` as a one-layer VAE and every objective and
estimator of vaekit runs on it unchanged: ``prior()`` and ``encoder(x)`` are
:class:`AncestralDistribution` objects (sampled ancestrally, reparameterized, with exact
``log_prob``), ``decoder(z)`` reads z_1. No closed-form KL exists, so the ELBO's KL term is
estimated by Monte Carlo.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution, constraints
from torch.func import functional_call

from ..distributions import diagonal_normal, register_stop_gradient, stop_gradient
from ..families import BoundFamily, register_family
from ..nn import MLP, build_network
from ..observations import observation_for
from ..options import option, positive, widths
from ..priors import StandardNormalPrior
from .base import DecoderOptions, LatentVariableModel, resolve_options, shape_of


@dataclass
class HierarchicalVAEOptions(DecoderOptions):
    latent_dims: list[int] = option([], "latent widths bottom-up, e.g. 100,50 (empty: one "
                                        "layer of latent_dim)", check=widths(allow_empty=True))
    latent_dim: int = option(16, "width of the single layer when latent_dims is empty",
                             check=positive)
    upper_hidden_sizes: list[int] = option([100, 100], "hidden widths between stochastic "
                                                       "layers", check=widths(allow_empty=True))


class ConditionalGaussian(nn.Module):
    """h -> N(mu(h), diag sigma(h)^2), one MLP with a 2*out_dim output (mean, log sigma)."""

    def __init__(self, in_shape: int | Sequence[int], hidden_sizes: Sequence[int],
                 out_dim: int, activation: str = "tanh", net: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net if net is not None else MLP(in_shape, hidden_sizes, 2 * out_dim,
                                                   activation)

    def forward(self, h: torch.Tensor, frozen: bool = False) -> Distribution:
        """``h: (..., *in_shape)``; ``frozen`` evaluates the MLP with detached weights (the
        distribution is then differentiable in ``h`` only: the stop-gradient of STL/DReG)."""
        if frozen:
            params = {k: v.detach() for k, v in self.net.named_parameters()}
            out = functional_call(self.net, params, (h,))
        else:
            out = self.net(h)
        loc, log_scale = out.chunk(2, dim=-1)
        return diagonal_normal(loc, log_scale.exp())


class AncestralDistribution(Distribution):
    """A distribution over z = (z_1, ..., z_L) (concatenated in slot order) defined by a root
    distribution over one slot and conditionals, each giving a slot from another slot.

    Args:
        root: distribution of slot ``root_slot`` (batch shape ``()`` or ``(B,)``).
        root_slot: its slot.
        steps: ``(slot, parent_slot, conditional)`` in sampling order; ``conditional`` is a
            :class:`ConditionalGaussian`.
        sizes: the dimension of each slot.
        frozen: evaluate the conditionals with detached weights (see :func:`stop_gradient`).
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, root: Distribution, root_slot: int,
                 steps: Sequence[tuple[int, int, ConditionalGaussian]], sizes: Sequence[int],
                 frozen: bool = False) -> None:
        self.root, self.root_slot, self.steps = root, root_slot, list(steps)
        self.sizes, self.frozen = list(sizes), frozen
        super().__init__(root.batch_shape, torch.Size([sum(self.sizes)]), validate_args=False)

    def _cat(self, values: dict[int, torch.Tensor]) -> torch.Tensor:
        return torch.cat([values[i] for i in range(len(self.sizes))], dim=-1)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        values = {self.root_slot: self.root.rsample(sample_shape)}
        for slot, parent, cond in self.steps:
            values[slot] = cond(values[parent], self.frozen).rsample()
        return self._cat(values)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        parts = value.split(self.sizes, dim=-1)
        total = self.root.log_prob(parts[self.root_slot])
        for slot, parent, cond in self.steps:
            total = total + cond(parts[parent], self.frozen).log_prob(parts[slot])
        return total

    @property
    def mean(self) -> torch.Tensor:
        """Ancestral plug-in means: each conditional's mean at its parent's mean (exact for the
        root; for lower slots an approximation of E[z_l], used for active units and plots)."""
        values = {self.root_slot: self.root.mean}
        for slot, parent, cond in self.steps:
            values[slot] = cond(values[parent], self.frozen).mean
        return self._cat(values)


@register_stop_gradient(AncestralDistribution)
def _(d: AncestralDistribution) -> AncestralDistribution:
    return AncestralDistribution(stop_gradient(d.root), d.root_slot, d.steps, d.sizes,
                                 frozen=True)


class HierarchicalVAE(LatentVariableModel):
    """Args:
        data_shape: the event shape of x (``784`` or ``(1, 28, 28)``).
        options: :class:`HierarchicalVAEOptions`; keyword arguments override its fields:
            ``latent_dims`` (d_1, ..., d_L), bottom (nearest x) first; ``hidden_sizes``
            between x and z_1 (both directions); ``upper_hidden_sizes`` between z_l and
            z_{l+1} (both directions); ``activation``, ``likelihood``, ``decoder_std``,
            ``learn_decoder_std`` as for :class:`~vaekit.models.vae.VAE`.
    """

    def __init__(self, data_shape: int | Sequence[int],
                 options: HierarchicalVAEOptions | None = None, **overrides) -> None:
        super().__init__()
        opts = resolve_options(HierarchicalVAEOptions, options, overrides)
        self.options = opts
        self.event_shape = shape_of(data_shape)
        self.latent_dims = [int(d) for d in (opts.latent_dims or [opts.latent_dim])]
        self.latent_dim = sum(self.latent_dims)
        L = len(self.latent_dims)
        hidden, upper, act = opts.hidden_sizes, opts.upper_hidden_sizes, opts.activation
        ev = self.event_shape
        bottom = build_network(opts.net, ev, (2 * self.latent_dims[0],), opts, event_shape=ev)
        self.q_layers = nn.ModuleList(
            [ConditionalGaussian(ev, hidden, self.latent_dims[0], act, net=bottom)]
            + [ConditionalGaussian(self.latent_dims[i - 1], upper, self.latent_dims[i], act)
               for i in range(1, L)])
        self.p_layers = nn.ModuleList(     # p(z_i | z_{i+1}) for i = 0 .. L-2
            [ConditionalGaussian(self.latent_dims[i + 1], tuple(reversed(upper)),
                                 self.latent_dims[i], act) for i in range(L - 1)])
        observation = observation_for(opts.likelihood, self.event_shape, opts)
        self.decoder_net = build_network(opts.net, (self.latent_dims[0],),
                                         observation.param_shape, opts, reverse=True,
                                         event_shape=ev)
        self.top_prior = StandardNormalPrior(self.latent_dims[-1])
        self.observation = observation
        self._register_legacy_hook()

    def prior(self) -> AncestralDistribution:
        """p(z) = p(z_L) prod_l p(z_l | z_{l+1}), over the concatenation of all layers."""
        L = len(self.latent_dims)
        steps = [(i, i + 1, self.p_layers[i]) for i in reversed(range(L - 1))]
        return AncestralDistribution(self.top_prior(), L - 1, steps, self.latent_dims)

    def encoder(self, x: torch.Tensor) -> AncestralDistribution:
        """q(z|x) = q(z_1|x) prod_l q(z_l | z_{l-1}) for ``x: (B, *event_shape)``."""
        steps = [(i, i - 1, self.q_layers[i]) for i in range(1, len(self.latent_dims))]
        return AncestralDistribution(self.q_layers[0](x), 0, steps, self.latent_dims)

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's output from z_1, the first ``latent_dims[0]`` coordinates of
        ``z: (..., sum d)``."""
        return self.decoder_net(z[..., :self.latent_dims[0]])

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        return self.q_layers.parameters()


@register_family("hierarchical-vae", HierarchicalVAEOptions)
class HierarchicalVAEFamily(BoundFamily):
    """``--model hierarchical-vae``: several stochastic layers (Burda et al. 2016's
    two-layer model with ``--latent-dims 100,50 --upper-hidden-sizes 100,100``)."""

    model = HierarchicalVAE
