"""Small helpers over ``torch.distributions``.

Distributions are built with ``validate_args=False``: argument checks would synchronise the
device on every call in the training loop. Data are validated once, when loaded
(:mod:`vaekit.data`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.distributions import Bernoulli, Distribution, Independent, MultivariateNormal, Normal
from torch.distributions import kl_divergence as _kl


def diagonal_normal(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    """N(loc, diag(scale^2)) over the last dimension: batch shape ``loc.shape[:-1]``."""
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


def bernoulli(logits: torch.Tensor) -> Independent:
    """Independent Bernoulli(sigmoid(logits)) over the last dimension."""
    return Independent(Bernoulli(logits=logits, validate_args=False), 1, validate_args=False)


def analytic_kl(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """Closed-form KL(q || p) in nats, or ``None`` when torch.distributions has none.

    For diagonal Gaussians this is Kingma & Welling (2014), Appendix B:
    KL = 1/2 sum_j [ (s_j^2 + (m_j - mu_j)^2) / sigma_j^2 - 1 + log(sigma_j^2 / s_j^2) ].
    """
    try:
        return _kl(q, p)
    except NotImplementedError:
        return None


def kl_divergence(q: Distribution, p: Distribution, z: torch.Tensor | None = None,
                  analytic: bool = True) -> torch.Tensor:
    """KL(q || p) per batch element, in nats.

    Args:
        q, p: distributions with the same event shape; batch shape ``(B,)``.
        z: samples from q, shape ``(K, B, D)``; needed for the Monte Carlo estimate
            ``mean_k [log q(z_k) - log p(z_k)]``.
        analytic: use the closed form when torch.distributions has one.

    Returns:
        ``(B,)`` tensor.

    Raises:
        ValueError: no closed form exists (or ``analytic=False``) and ``z`` is not given.
    """
    if analytic:
        kl = analytic_kl(q, p)
        if kl is not None:
            return kl
    if z is None:
        raise ValueError("a Monte Carlo KL estimate needs samples z from q")
    return (q.log_prob(z) - p.log_prob(z)).mean(0)


# ------------------------------------------------------------------ stop-gradient copies
_STOP_GRADIENT: dict[type, Callable[[Distribution], Distribution]] = {}


def register_stop_gradient(cls: type):
    """Decorator: ``fn(d) -> copy of d with its parameters detached`` for distributions of
    type ``cls`` (and subclasses), as ``torch.distributions.register_kl`` does for KLs."""
    def deco(fn):
        _STOP_GRADIENT[cls] = fn
        return fn
    return deco


def stop_gradient(d: Distribution) -> Distribution:
    """A copy of ``d`` whose parameters are detached: ``log_prob`` of it is differentiable in
    its argument but not in the parameters (the "stop-gradient" q of STL and DReG).

    Supports Normal, Bernoulli, MultivariateNormal, Independent wrappers of them, and every
    type registered with :func:`register_stop_gradient`.

    Raises:
        TypeError: a distribution type without a registered stop-gradient copy.
    """
    for cls in type(d).__mro__:
        if cls in _STOP_GRADIENT:
            return _STOP_GRADIENT[cls](d)
    raise TypeError(f"stop_gradient does not know {type(d).__name__}; register one with "
                    "vaekit.distributions.register_stop_gradient")


@register_stop_gradient(Independent)
def _(d: Independent) -> Independent:
    return Independent(stop_gradient(d.base_dist), d.reinterpreted_batch_ndims,
                       validate_args=False)


@register_stop_gradient(Normal)
def _(d: Normal) -> Normal:
    return Normal(d.loc.detach(), d.scale.detach(), validate_args=False)


@register_stop_gradient(Bernoulli)
def _(d: Bernoulli) -> Bernoulli:
    return Bernoulli(logits=d.logits.detach(), validate_args=False)


@register_stop_gradient(MultivariateNormal)
def _(d: MultivariateNormal) -> MultivariateNormal:
    return MultivariateNormal(d.loc.detach(), scale_tril=d.scale_tril.detach(),
                              validate_args=False)
