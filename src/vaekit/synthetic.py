"""Synthetic data with a known truth: the worked example of a mixture of three Gaussians in R^2.

Because the generating mixture is known, exact log p(x), the exact posterior p(z|x) and the
component labels are available for every point: EM's estimates can be checked against the
truth, and Monte Carlo / importance-sampling estimators of p(x) against the exact value (see
:mod:`vaekit.importance_sampling`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import Dataset
from .errors import DataError
from .models.mixtures import GaussianMixture


@dataclass(frozen=True)
class GaussianMixtureParameters:
    """The parameters of a Gaussian mixture, as nested tuples (immutable).

    ``weights``: K floats summing to 1; ``means``: K points in R^D; ``covariances``: K
    symmetric positive definite D x D matrices.
    """

    weights: tuple[float, ...]
    means: tuple[tuple[float, ...], ...]
    covariances: tuple[tuple[tuple[float, ...], ...], ...]


GAUSSIAN_MIXTURE_2D = GaussianMixtureParameters(
    weights=(1 / 3, 1 / 3, 1 / 3),
    means=((-4.0, -1.0), (4.0, -1.0), (0.0, 4.0)),
    covariances=(
        ((1.0, 0.5), (0.5, 0.8)),        # component 0: left, tilted up-right (corr 0.56)
        ((0.6, -0.3), (-0.3, 1.2)),      # component 1: right, tilted up-left (corr -0.35)
        ((2.0, 0.0), (0.0, 0.4)),        # component 2: top, wide and flat (axis-aligned)
    ),
)
"""The truth of ``gaussian-mixture-2d``: three Gaussians in R^2 with a uniform prior
(pi_k = 1/3). Means (-4, -1), (4, -1) and (0, 4): at least 6.4 apart, i.e. more than 5 standard
deviations of every component along the line joining two means, so the clusters barely overlap
(about 7 points in 1,000 have a posterior below 0.99 on their own component and 0.07% are
misclassified by Bayes' rule, measured on 200,000 draws), and three
distinct covariances (two correlations of opposite sign, one axis-aligned with unequal
variances) so that a diagonal or shared covariance is visibly wrong."""


def true_gaussian_mixture_2d(dtype: torch.dtype = torch.float64,
                             device: torch.device | str | None = None) -> GaussianMixture:
    """The true mixture of ``gaussian-mixture-2d`` as a :class:`GaussianMixture` with its
    parameters set (:data:`GAUSSIAN_MIXTURE_2D`), so that ``score_samples`` (exact log p(x),
    nats), ``predict_proba`` (exact p(z|x)) and ``sample`` are available."""
    p = GAUSSIAN_MIXTURE_2D
    t = {"dtype": dtype, "device": device}
    return GaussianMixture(len(p.weights), "full", data_dim=2).set_parameters(
        torch.tensor(p.weights, **t), torch.tensor(p.means, **t),
        torch.tensor(p.covariances, **t))


def gaussian_mixture_2d(n: int = 3000, seed: int = 0) -> Dataset:
    """``n`` i.i.d. points from :data:`GAUSSIAN_MIXTURE_2D` as a :class:`~vaekit.data.Dataset`
    named ``"gaussian-mixture-2d"``: train/valid/test = 80/10/10 % (in order of drawing),
    float32 ``(N, 2)``, labels = the true component (int64), ``image_shape`` None.

    The points are drawn in float64 (generator seeded with ``seed``) and rounded to float32.

    Raises:
        DataError: ``n < 10`` (every split needs a point).
    """
    if n < 10:
        raise DataError(f"gaussian_mixture_2d needs n >= 10 points, got {n}")
    x, z = true_gaussian_mixture_2d().sample(n, seed=seed)
    x = x.to(torch.float32)
    n_valid = n_test = round(0.1 * n)
    n_train = n - n_valid - n_test
    xs = torch.split(x, [n_train, n_valid, n_test])
    zs = torch.split(z, [n_train, n_valid, n_test])
    return Dataset("gaussian-mixture-2d", *(t.clone() for t in xs), image_shape=None,
                   train_labels=zs[0].clone(), valid_labels=zs[1].clone(),
                   test_labels=zs[2].clone(), _binary=False)


__all__ = ["GAUSSIAN_MIXTURE_2D", "GaussianMixtureParameters", "gaussian_mixture_2d",
           "true_gaussian_mixture_2d"]
