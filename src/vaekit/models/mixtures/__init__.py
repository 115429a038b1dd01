"""Finite mixtures fitted by expectation-maximization (EM): Gaussian and Bernoulli components.

A mixture is the simplest latent-variable model: a discrete z in {0, ..., K-1} with prior
p(z = k) = pi_k and p(x | z = k) from one family, so that log p(x) = logsumexp_k [log pi_k +
log p(x | z = k)] exactly. The EM machinery is :mod:`.em`, k-means++ seeding :mod:`.kmeans`,
the component families :mod:`.gaussian` and :mod:`.bernoulli`; the classes follow
scikit-learn's conventions. This module registers them as the model families ``gmm`` and
``bernoulli-mixture`` (fitted by EM, exact test log-likelihood).
"""

from __future__ import annotations

import math

from ...families import EMFamily, register_family
from .bernoulli import BernoulliMixture, BernoulliMixtureOptions
from .em import (
    MIN_COMPONENT_MASS,
    ComponentCollapseError,
    MixtureEM,
    MixtureOptions,
    NotFittedError,
)
from .gaussian import COVARIANCE_TYPES, GaussianMixture, GaussianMixtureOptions
from .kmeans import CHUNK_ELEMENTS, kmeans_plusplus


class _MixtureFamily(EMFamily):
    def build(self, options, event_shape):
        return self.model.from_config(options, data_dim=math.prod(event_shape))

    def extra_figures(self, ctx):
        from ... import plotting
        model, ds = ctx.model, ctx.dataset
        out = []
        if ds.figure_shape is not None:
            order = model.weights_.argsort(descending=True)[:100]
            out.append(("components.png", plotting.plot_samples(
                model.means_[order].cpu(), ds.figure_shape,
                title="component means, by weight")))
        return out


@register_family("gmm", GaussianMixtureOptions)
class GaussianMixtureFamily(_MixtureFamily):
    """``--model gmm``: a mixture of Gaussians (full or diagonal covariances)."""

    model = GaussianMixture
    fixed_likelihood = "gaussian"

    def extra_figures(self, ctx):
        from ... import plotting
        out = super().extra_figures(ctx)
        if ctx.dataset.dim == 2:
            truth = None
            if ctx.dataset.name == "gaussian-mixture-2d":
                from ...synthetic import true_gaussian_mixture_2d
                truth = true_gaussian_mixture_2d()
            _, labels = ctx.dataset.split("test")
            out.append(("mixture.png", plotting.plot_mixture_2d(
                ctx.test_values(), labels, truth, ctx.model, color_by="fitted")))
        return out


@register_family("bernoulli-mixture", BernoulliMixtureOptions)
class BernoulliMixtureFamily(_MixtureFamily):
    """``--model bernoulli-mixture``: a mixture of multivariate Bernoullis (binary data)."""

    model = BernoulliMixture
    fixed_likelihood = "bernoulli"


__all__ = ["CHUNK_ELEMENTS", "COVARIANCE_TYPES", "MIN_COMPONENT_MASS", "BernoulliMixture",
           "BernoulliMixtureOptions", "ComponentCollapseError", "GaussianMixture",
           "GaussianMixtureOptions", "MixtureEM", "MixtureOptions", "NotFittedError",
           "kmeans_plusplus"]
