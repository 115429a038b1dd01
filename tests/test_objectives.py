"""Identities between the bounds, on a VAE with random weights."""

from __future__ import annotations

import math

import torch

from vaekit.models import VAE
from vaekit.objectives import elbo, elbo_terms, iwae_bound, log_mean_exp, log_weights


def _vae_and_batch(likelihood="bernoulli"):
    torch.manual_seed(0)
    m = VAE(12, latent_dim=3, hidden_sizes=(16,), likelihood=likelihood)
    x = (torch.rand(5, 12) < 0.4).float()
    return m, x


def test_log_weights_shape_and_definition():
    m, x = _vae_and_batch()
    torch.manual_seed(1)
    lw = log_weights(m, x, 4)
    assert lw.shape == (4, 5)
    torch.manual_seed(1)
    q = m.encoder(x)
    z = q.rsample((4,))
    manual = m.decoder(z).log_prob(x) + m.prior().log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(lw, manual)


def test_iwae_with_one_sample_is_the_single_sample_elbo():
    m, x = _vae_and_batch()
    m, x = m.double(), x.double()
    torch.manual_seed(5)
    a = iwae_bound(m, x, 1)
    torch.manual_seed(5)
    b = elbo(m, x, 1, kl="mc")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)     # the same number up to rounding


def test_log_mean_exp_is_stable():
    t = torch.tensor([[1000.0, -1000.0], [1000.0, -1000.0 + math.log(3)]])
    torch.testing.assert_close(log_mean_exp(t, 0), torch.tensor([1000.0, -1000.0 + math.log(2)]))


def test_analytic_and_monte_carlo_kl_give_the_same_elbo_in_expectation():
    m, x = _vae_and_batch()
    torch.manual_seed(2)
    with torch.no_grad():
        n = 20_000
        a = elbo(m, x, n, kl="analytic")
        mc = log_weights(m, x, n)
        b, se = mc.mean(0), mc.std(0) / math.sqrt(n)
    assert ((a - b).abs() < 5 * se).all()


def test_beta_weights_the_kl_term_only():
    m, x = _vae_and_batch()
    torch.manual_seed(3)
    rec, kl = elbo_terms(m, x, 2)
    torch.manual_seed(3)
    b2 = elbo(m, x, 2, beta=2.5)
    torch.testing.assert_close(b2, rec - 2.5 * kl)
    assert (kl > 0).all()


def test_gaussian_decoder_log_prob_is_the_normal_density():
    m, x = _vae_and_batch("gaussian")
    z = torch.randn(2, 5, 3)
    d = m.decoder(z)
    mean = m.decoder_net(z)
    sigma = m.decoder_log_std.exp()
    manual = (-0.5 * ((x - mean) / sigma) ** 2 - torch.log(sigma)
              - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(d.log_prob(x), manual)
    assert m.decoder_log_std.requires_grad
