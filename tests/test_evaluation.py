"""Streamed log-likelihood, evaluation summaries and active units."""

from __future__ import annotations

import math

import pytest
import torch

from vaekit.evaluation import (
    _batch_and_chunk,
    active_units,
    evaluate,
    evaluate_terms,
    log_likelihood,
)
from vaekit.models import VAE, LinearGaussian
from vaekit.objectives import iwae_bound


def test_streaming_is_exact_when_every_weight_is_p_of_x(double_precision):
    """At the exact posterior each weight is p(x): any chunking must give log p(x) exactly."""
    torch.manual_seed(0)
    m = LinearGaussian(5, 2, sigma=0.6)
    m.set_exact_posterior()
    x = m.marginal().sample((23,)).detach()
    exact = m.log_marginal(x).detach()
    for max_rows in (1, 7, 64, 10_000):           # chunks of 1 sample up to all at once
        ll = log_likelihood(m, x, 50, max_rows=max_rows)
        torch.testing.assert_close(ll, exact, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n,k,max_rows", [(1000, 5000, 16384), (10, 1, 16384), (3, 5000, 100),
                                          (500, 7, 20)])
def test_chunks_bound_the_rows_decoded_at_once(n, k, max_rows):
    b, c = _batch_and_chunk(n, k, max_rows, None)
    assert 1 <= b <= n and 1 <= c <= k
    assert b * c <= max(max_rows, b)


def test_streamed_estimate_agrees_with_the_one_shot_bound():
    torch.manual_seed(1)
    m = VAE(20, latent_dim=3, hidden_sizes=(16,))
    x = (torch.rand(400, 20) < 0.3).float()
    with torch.no_grad():
        streamed = log_likelihood(m, x, 64, max_rows=50)     # chunks of 1 sample
        one_shot = iwae_bound(m, x, 64)
    diff = streamed - one_shot
    se = diff.std() / math.sqrt(len(diff))
    assert abs(diff.mean()) < 4 * se + 1e-4


def test_evaluate_reports_consistent_terms():
    torch.manual_seed(2)
    m = VAE(20, latent_dim=4, hidden_sizes=(16,))
    x = (torch.rand(300, 20) < 0.3).float()
    r = evaluate(m, x, num_samples=200)
    assert r["num_samples"] == 200 and r["num_examples"] == 300 and r["latent_dim"] == 4
    assert r["elbo"] == pytest.approx(r["reconstruction"] - r["kl"], abs=1e-4)
    assert r["log_likelihood"] > r["elbo"]            # L_200 >= L_1 (a real gap here)
    assert r["kl"] > 0
    assert r["bits_per_dim"] == pytest.approx(-r["log_likelihood"] / (20 * math.log(2)))
    for key in ("elbo_se", "log_likelihood_se", "kl_se", "reconstruction_se"):
        assert 0 < r[key] < 5
    terms = evaluate_terms(m, x, 200)
    assert r["log_likelihood_se"] == pytest.approx(
        float(terms["log_likelihood"].double().std() / math.sqrt(300)), rel=0.2)


def test_active_units_counts_dimensions_whose_posterior_mean_varies():
    torch.manual_seed(3)
    m = VAE(10, latent_dim=5, hidden_sizes=(8,))
    with torch.no_grad():   # latent dims 1 and 3: posterior mean independent of x
        last = m.encoder_net[-1]
        last.weight[[1, 3]] = 0.0
        last.weight[[0, 2, 4]] *= 20
    x = torch.rand(500, 10)
    count, activity = active_units(m, x)
    assert count == 3
    assert activity.shape == (5,)
    assert activity[1] == 0 and activity[3] == 0
    assert (activity[[0, 2, 4]] > 0.01).all()
