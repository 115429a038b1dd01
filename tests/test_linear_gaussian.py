"""Bounds and gradients on the linear-Gaussian model, whose log p(x) is exact.

p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I): log p(x) = log N(x; b, W W^T + sigma^2 I).
With a Gaussian q(z|x) the ELBO has a closed form too (LinearGaussian.closed_form_elbo).
"""

from __future__ import annotations

import math

import pytest
import torch

from vaekit.estimators import get_estimator
from vaekit.evaluation import log_likelihood
from vaekit.models import LinearGaussian
from vaekit.objectives import elbo, iwae_bound, log_weights


def closed_form_elbo(m: LinearGaussian, x: torch.Tensor) -> torch.Tensor:
    return m.closed_form_elbo(x)


@pytest.fixture
def model_and_data(double_precision):
    torch.manual_seed(0)
    m = LinearGaussian(6, 3, sigma=0.8, posterior="full")
    x = m.marginal().sample((4,)).detach()
    return m, x


def _near_posterior(m: LinearGaussian) -> None:
    """q = the exact posterior, shifted and widened: good but not exact."""
    m.set_exact_posterior()
    with torch.no_grad():
        m.c.add_(0.3)
        m.raw_scale.diagonal().add_(math.log(1.3))


def test_elbo_is_below_log_marginal_and_monte_carlo_matches_closed_form(model_and_data):
    m, x = model_and_data
    with torch.no_grad():
        log_px = m.log_marginal(x)
        exact = closed_form_elbo(m, x)
        assert (exact < log_px - 0.1).all()          # a random q leaves a real gap
        torch.manual_seed(1)
        n = 20_000
        for kl in ("analytic", "mc"):
            est = elbo(m, x.repeat(n, 1), 1, kl=kl).view(n, -1)
            se = est.std(0) / math.sqrt(n)
            assert ((est.mean(0) - exact).abs() < 5 * se).all(), (kl, est.mean(0), exact, se)


def test_elbo_equals_log_marginal_at_the_exact_posterior(model_and_data):
    m, x = model_and_data
    m.set_exact_posterior()
    with torch.no_grad():
        log_px = m.log_marginal(x)
        torch.testing.assert_close(closed_form_elbo(m, x), log_px, rtol=0, atol=1e-10)
        # every importance weight equals p(x): single-sample bounds are exact
        lw = log_weights(m, x, 7)
        torch.testing.assert_close(lw, log_px.expand(7, -1), rtol=0, atol=1e-10)
        torch.testing.assert_close(elbo(m, x, 1, kl="mc"), log_px, rtol=0, atol=1e-10)
        torch.testing.assert_close(iwae_bound(m, x, 3), log_px, rtol=0, atol=1e-10)


def test_iwae_bound_rises_with_k_and_reaches_log_marginal(model_and_data):
    m, x = model_and_data
    _near_posterior(m)
    torch.manual_seed(2)
    with torch.no_grad():
        log_px = m.log_marginal(x)
        means, ses = [], []
        for k, reps in ((1, 4000), (2, 4000), (5, 4000), (20, 2000), (100, 1000), (1000, 600)):
            v = iwae_bound(m, x.repeat(reps, 1), k).view(reps, -1) - log_px   # gap per point
            means.append(v.mean())
            ses.append(v.mean(1).std() / math.sqrt(reps))
        for a, b, sa, sb in zip(means, means[1:], ses, ses[1:], strict=False):
            assert b > a - 3 * math.hypot(sa, sb), (means, ses)    # non-decreasing in k
        assert means[0] < -0.5                  # L_1 (the ELBO) is well below log p(x)
        assert means[-1] <= 3 * ses[-1]         # a lower bound, in expectation
        assert abs(means[-1]) < 0.006           # L_1000 within 0.006 nats of log p(x)
        # streamed k=5000 estimate, one draw per point, within 0.05 nats
        ll = log_likelihood(m, x, 5000, max_rows=300)
        assert (ll - log_px).abs().max() < 0.05


@pytest.mark.parametrize("kl", ["analytic", "mc"])
def test_reparameterized_elbo_gradient_matches_analytic(model_and_data, kl):
    m, x = model_and_data
    params = list(m.parameters())
    exact = torch.autograd.grad(closed_form_elbo(m, x).mean(), params)
    estimator = get_estimator("elbo", num_samples=1, kl=kl)
    torch.manual_seed(3)
    groups, per_group = 60, 200
    xr = x.repeat(per_group, 1)
    draws = []
    for _ in range(groups):   # each draw: the mean of per_group independent 1-sample estimates
        losses = estimator(m, xr)
        g = torch.autograd.grad(-losses.loss, params)
        draws.append(torch.cat([t.reshape(-1) for t in g]))
    draws = torch.stack(draws)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(groups)
    ref = torch.cat([t.reshape(-1) for t in exact])
    z = (mean - ref).abs() / (se + 1e-12)
    assert (z < 5).all(), f"max |z| = {z.max():.2f}"            # 5 standard errors per entry
    # informative: the tolerance is small next to the gradient itself
    big = ref.abs() > 0.1
    assert big.sum() > 10 and (5 * se[big] < 0.5 * ref.abs()[big]).float().mean() > 0.8
    # and a wrong gradient would fail: twice the KL gradient is far outside the tolerance
    wrong = torch.autograd.grad(closed_form_elbo(m, x).mean()
                                - 0.5 * log_likelihood_gap(m, x), params)
    zw = (mean - torch.cat([t.reshape(-1) for t in wrong])).abs() / (se + 1e-12)
    assert zw.max() > 5


def log_likelihood_gap(m: LinearGaussian, x: torch.Tensor) -> torch.Tensor:
    """log p(x) - ELBO = KL(q || p(z|x)) >= 0, differentiable."""
    return (m.log_marginal(x) - closed_form_elbo(m, x)).mean()
