"""Priors p(z): one registry entry each (``--prior``, ``--prior-components K``).

A prior is an ``nn.Module`` (:class:`Prior`) built for a latent dimension whose
``forward(encoder=None)`` returns the distribution p(z) (batch shape ``()``, event shape
``(latent_dim,)``); log-densities are in nats. ``encoder`` is the model's q(z|x), a callable
``x (B, *event_shape) -> Distribution`` with batch shape ``(B,)``: the VampPrior needs it, the
other priors ignore it, so ``prior()`` keeps working for models without one.

* ``standard``: N(0, I), nothing learned.
* ``mog``: a mixture of K diagonal Gaussians with learned weights, means and scales.
* ``vamp``: the VampPrior, the mixture of the model's own posteriors at K learned
  pseudo-inputs.

Parameter groups: a learned prior's own parameters (mixture logits, means, log-scales; the
pseudo-inputs) are generative parameters theta: they are not in a model's
``inference_parameters()``, so wake-sleep and RWS train them with the model gradient. The
VampPrior also depends on phi through the encoder; under wake-sleep / RWS the encoder then
receives, besides its inference gradient, the model gradient of log p(z) through the prior
(the encoder is shared by q and p, as in Tomczak & Welling 2018).

A prior without a closed-form KL to q (both mixtures) makes
:func:`vaekit.distributions.analytic_kl` return ``None``; the ELBO then uses the Monte Carlo
KL on the same samples (:func:`vaekit.objectives.elbo_terms`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    Normal,
)

from .distributions import diagonal_normal
from .errors import ConfigError
from .registry import Registry

PRIORS: Registry[type[Prior]] = Registry("prior")

Encoder = Callable[[torch.Tensor], Distribution]


class Prior(nn.Module):
    """Base class of the registered priors.

    Class attributes:
        default_components: K when ``--prior-components`` is 0; ``None`` for a prior without
            components (``--prior-components`` is refused).
    """

    default_components: ClassVar[int | None] = None

    def forward(self, encoder: Encoder | None = None) -> Distribution:
        """p(z): batch shape ``()``, event shape ``(latent_dim,)``."""
        raise NotImplementedError

    @torch.no_grad()
    def initialize(self, x_train: torch.Tensor) -> None:
        """Data-dependent initialisation before training, from the training values
        ``(N, *event_shape)`` (nothing for most priors)."""


@PRIORS.decorator("standard")
class StandardNormalPrior(Prior):
    """p(z) = N(0, I). Its constants are not stored in checkpoints."""

    def __init__(self, latent_dim: int, num_components: int | None = None,
                 event_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self, encoder: Encoder | None = None) -> Distribution:
        return diagonal_normal(self.loc, self.scale)


def _seeded_generator() -> torch.Generator:
    """A CPU generator seeded by one draw of torch's global RNG: reproducible under
    ``torch.manual_seed``, and the global stream advances by one draw whatever is drawn."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, ())))


@PRIORS.decorator("mog")
class MixtureOfGaussiansPrior(Prior):
    """p(z) = sum_k pi_k N(z; mu_k, diag sigma_k^2), pi = softmax(logits), sigma_k =
    exp(log_scale_k): the Gaussian mixture density (Bishop 2006, "Pattern Recognition and
    Machine Learning", eq. 9.7) with diagonal covariances, the mixture-of-Gaussians prior that
    Tomczak & Welling (2018, Sec. 3) compare the VampPrior with (there with equal weights).

    Parameters (theta): ``logits (K,)`` (initially 0: equal weights), ``loc (K, latent_dim)``
    (initially N(0, I) draws of a generator seeded from torch's RNG, so that the components
    start spread out and runs are reproducible) and ``log_scale (K, latent_dim)`` (initially
    0: unit scales).
    """

    default_components = 10

    def __init__(self, latent_dim: int, num_components: int = 10,
                 event_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        k = int(num_components)
        self.num_components = k
        self.logits = nn.Parameter(torch.zeros(k))
        self.loc = nn.Parameter(torch.randn(k, latent_dim, generator=_seeded_generator()))
        self.log_scale = nn.Parameter(torch.zeros(k, latent_dim))

    def forward(self, encoder: Encoder | None = None) -> Distribution:
        """The mixture: ``MixtureSameFamily(Categorical(logits), Independent(Normal(loc,
        exp(log_scale)), 1))``; ``log_prob(z (..., D))`` is ``(...)`` nats and computes
        ``(..., K, D)`` values on the way."""
        return GaussianMixture(Categorical(logits=self.logits, validate_args=False),
                               diagonal_normal(self.loc, self.log_scale.exp()),
                               validate_args=False)


@PRIORS.decorator("vamp")
class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior", AISTATS, eq. 9):
    p(z) = (1/K) sum_k q_phi(z | u_k), the model's own posterior q_phi (its encoder) at K
    learned pseudo-inputs u_k of the data's event shape.

    Pseudo-inputs: u = hardtanh(w) clipped to the data's range [``low``, ``high``] (default
    [0, 1]; :meth:`initialize` sets the training values' range), with w a free parameter
    ``(K, *event_shape)``. This is the paper's parameterisation (Sec. 3 and its code: a linear
    layer without bias and with a hard-tanh applied to the K x K identity, whose k-th output
    is the k-th column of the weights). The pseudo-inputs are generative parameters (theta).

    Initialisation: before data are seen, w = low + (high - low) (0.05 + 0.01 eps) with eps ~
    N(0, 1), the paper's default for MNIST (mean 0.05, std 0.01); :meth:`initialize` then
    starts them at K random training examples (the paper's other choice), moved 5% of the
    range into the interior (hardtanh has no gradient at its bounds, where binary values lie)
    with the paper's noise of std 0.01 of the range (which keeps repeated examples apart).

    ``low`` and ``high`` are buffers stored in checkpoints.
    """

    default_components = 500

    def __init__(self, latent_dim: int, num_components: int = 500,
                 event_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        if event_shape is None:
            raise ConfigError("the vamp prior needs the data's event shape")
        k = int(num_components)
        self.num_components, self.latent_dim = k, int(latent_dim)
        self.event_shape = tuple(int(s) for s in event_shape)
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.ones(()))
        eps = torch.randn(k, *self.event_shape, generator=_seeded_generator())
        self.raw_pseudo_inputs = nn.Parameter(0.05 + 0.01 * eps)

    def pseudo_inputs(self) -> torch.Tensor:
        """u = hardtanh(w, low, high) = clamp(w, low, high): ``(K, *event_shape)`` (clamped
        with the bounds as tensors, which needs no host synchronisation)."""
        return torch.clamp(self.raw_pseudo_inputs, self.low, self.high)

    @torch.no_grad()
    def initialize(self, x_train: torch.Tensor) -> None:
        """Start at K random training examples (drawn with a generator seeded from torch's
        RNG; with replacement when K > N), in the training values' range (see the class)."""
        x = x_train.reshape(x_train.shape[0], *self.event_shape).float()
        lo, hi = float(x.min()), float(x.max())
        if not hi > lo:                                   # constant data: any unit range
            hi = lo + 1.0
        self.low.fill_(lo)
        self.high.fill_(hi)
        g, n, k = _seeded_generator(), x.shape[0], self.num_components
        idx = torch.randperm(n, generator=g)[:k] if k <= n else torch.randint(n, (k,),
                                                                               generator=g)
        eps = torch.randn(k, *self.event_shape, generator=g)
        r = hi - lo
        w = lo + r * (0.05 + 0.9 * (x[idx] - lo) / r + 0.01 * eps)
        self.raw_pseudo_inputs.copy_(w.to(self.raw_pseudo_inputs))

    def forward(self, encoder: Encoder | None = None) -> Distribution:
        """``MixtureSameFamily(Categorical(uniform over K), encoder(u))``; ``log_prob(z (...,
        D))`` is ``(...)`` nats and computes ``(..., K, D)`` values on the way.

        Raises:
            ValueError: no encoder, or one whose distribution at the pseudo-inputs does not
                have batch shape ``(K,)`` and event shape ``(latent_dim,)``.
        """
        if encoder is None:
            raise ValueError("the VampPrior is the encoder's mixture at its pseudo-inputs: "
                             "call it with the model's encoder, prior(encoder=model.encoder)")
        q = encoder(self.pseudo_inputs())
        k = self.num_components
        if tuple(q.batch_shape) != (k,) or tuple(q.event_shape) != (self.latent_dim,):
            raise ValueError(f"the encoder at {k} pseudo-inputs gave batch shape "
                             f"{tuple(q.batch_shape)}, event shape {tuple(q.event_shape)}; "
                             f"expected ({k},), ({self.latent_dim},)")
        logits = torch.zeros(k, device=self.low.device, dtype=self.raw_pseudo_inputs.dtype)
        return GaussianMixture(Categorical(logits=logits, validate_args=False), q,
                               validate_args=False)


class GaussianMixture(MixtureSameFamily):
    """``MixtureSameFamily`` whose ``log_prob`` takes, for diagonal-Gaussian components, the
    quadratic form as matrix products instead of a ``(..., K, D)`` tensor of differences:

        log N(z; m_k, diag s_k^2) = -1/2 [ z^2 . s_k^-2 - 2 z . (m_k s_k^-2) + m_k^2 . s_k^-2 ]
                                    - sum_d log s_kd - D/2 log(2 pi),

    so ``(N, D) x (D, K)`` products replace elementwise passes over N x K x D values (8x faster
    for K = 500 in training here). The products are taken in float64, which keeps the
    cancellation between the three terms (each up to (|z| / s)^2) below 1e-9 nats for
    |z| / s up to 1e3. Other component families (a flow posterior at a VampPrior's
    pseudo-inputs) use ``MixtureSameFamily.log_prob``. Sampling is MixtureSameFamily's.
    """

    @property
    def by_products(self) -> bool:
        """Whether ``log_prob`` takes the matrix-product path (diagonal-Gaussian components
        with batch shape ``(K,)``)."""
        comp = self.component_distribution
        return (isinstance(comp, Independent) and isinstance(comp.base_dist, Normal)
                and comp.reinterpreted_batch_ndims == 1 and comp.base_dist.loc.dim() == 2)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        if not self.by_products:
            return super().log_prob(z)
        comp = self.component_distribution
        loc, scale = comp.base_dist.loc, comp.base_dist.scale          # (K, D) each
        d = loc.shape[-1]
        z64, loc64 = z.double(), loc.double()
        prec = scale.double().pow(-2)                                  # (K, D)
        quad = (z64.square() @ prec.T - 2.0 * (z64 @ (loc64 * prec).T)
                + (loc64.square() * prec).sum(-1))                    # (..., K)
        log_norm = scale.double().log().sum(-1) + 0.5 * d * math.log(2 * math.pi)
        log_comp = -0.5 * quad - log_norm
        log_w = torch.log_softmax(self.mixture_distribution.logits.double(), -1)
        return torch.logsumexp(log_comp + log_w, -1).to(z.dtype)


def check_components(name: str, value: Any) -> None:
    """``--prior-components``: an integer >= 1, or 0 for the prior's own default."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        defaults = ", ".join(f"{n} {PRIORS.get(n).default_components}" for n in PRIORS
                             if PRIORS.get(n).default_components is not None)
        raise ConfigError(f"{name} must be an integer >= 1, or 0 for the prior's default "
                          f"({defaults}); got {value}")


def build_prior(name: str, latent_dim: int, num_components: int = 0,
                event_shape: Sequence[int] | None = None) -> Prior:
    """The prior ``name`` for a ``latent_dim``-dimensional z, with ``num_components`` K
    (0: the prior's default) for data of ``event_shape`` (the VampPrior's pseudo-inputs).

    Raises:
        ConfigError: an unknown name (the message lists the priors), K < 0, or K > 0 for a
            prior without components.
    """
    cls = PRIORS.get(name)
    check_components("prior_components", num_components)
    if cls.default_components is None:
        if num_components:
            with_k = [n for n in PRIORS if PRIORS.get(n).default_components is not None]
            raise ConfigError(f"prior_components applies to the priors {', '.join(with_k)}; "
                              f"the {name} prior has none (got {num_components})")
        return cls(latent_dim)
    return cls(latent_dim, num_components or cls.default_components, event_shape)


def log_prob_size(prior: Distribution) -> int:
    """How many values ``prior.log_prob`` computes per point z (before reducing them): the
    event size for a simple distribution, K times the components' size for a mixture
    (:class:`~torch.distributions.MixtureSameFamily` evaluates every component at every
    point). Evaluation sizes its chunks of samples by it."""
    if isinstance(prior, GaussianMixture) and prior.by_products:
        return 4 * prior.mixture_distribution.logits.shape[-1]   # (..., K) float64, a few
    if isinstance(prior, MixtureSameFamily):
        return log_prob_size(prior.component_distribution)
    return max(1, math.prod(prior.batch_shape) * math.prod(prior.event_shape))
