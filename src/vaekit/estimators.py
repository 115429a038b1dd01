"""Gradient estimators: each returns the bound to report and a loss per parameter group.

An estimator is a function ``(model, x, num_samples, **options) -> Losses``, registered by
name in :data:`ESTIMATORS`. ``Losses.bound`` is the true bound (detached, nats per example);
``model_loss`` is minimised with respect to the generative parameters theta and
``inference_loss`` with respect to the inference parameters phi. When both are the same tensor
(a single objective trained with the reparameterization gradient) the trainer runs one
backward pass.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .objectives import elbo, iwae_bound


@dataclass
class Losses:
    bound: torch.Tensor           # (B,) detached, nats: the value to report
    model_loss: torch.Tensor      # scalar: minimised w.r.t. theta (decoder, prior)
    inference_loss: torch.Tensor  # scalar: minimised w.r.t. phi (encoder)


Estimator = Callable[..., Losses]
ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(name: str) -> Callable[[Estimator], Estimator]:
    """Decorator: make an estimator available as ``--objective NAME``."""
    def deco(fn: Estimator) -> Estimator:
        ESTIMATORS[name] = fn
        return fn
    return deco


def _single_objective(bound: torch.Tensor) -> Losses:
    loss = -bound.mean()
    return Losses(bound.detach(), loss, loss)


@register_estimator("elbo")
def elbo_reparameterized(model, x: torch.Tensor, num_samples: int = 1, *,
                         kl: str = "analytic") -> Losses:
    """The ELBO with the reparameterization gradient for theta and phi (AEVB/SGVB,
    Kingma & Welling 2014, Algorithm 1 with the estimator of eq. 7 when ``kl='analytic'``)."""
    return _single_objective(elbo(model, x, num_samples, kl=kl))


@register_estimator("iwae")
def iwae_reparameterized(model, x: torch.Tensor, num_samples: int = 1) -> Losses:
    """The importance-weighted bound L_K with the reparameterization gradient
    (Burda et al. 2016, eq. 8 and eq. 14)."""
    return _single_objective(iwae_bound(model, x, num_samples))


def get_estimator(config) -> Callable[[torch.nn.Module, torch.Tensor], Losses]:
    """The estimator a :class:`vaekit.config.TrainConfig` names, with its options bound.

    Keyword options of the estimator are taken from the config fields of the same name.
    """
    fn = ESTIMATORS[config.objective]
    params = inspect.signature(fn).parameters
    options = {k: getattr(config, k) for k, p in params.items()
               if p.kind is inspect.Parameter.KEYWORD_ONLY and hasattr(config, k)}
    return functools.partial(fn, num_samples=config.num_samples, **options)
