"""Streamed log-likelihood, evaluation summaries and active units."""

from __future__ import annotations

import math
import shutil
import warnings

import pytest
import torch

from vaekit.errors import VaekitWarning
from vaekit.evaluation import (
    COMPILE_MIN_ROWS,
    _batch_and_chunk,
    active_units,
    evaluate,
    evaluate_terms,
    log_likelihood,
    use_compile,
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


def _seeded_log_likelihood(m, x, k, compile):
    torch.manual_seed(7)                  # samples are drawn eagerly: same z either way
    return log_likelihood(m, x, k, max_rows=256, compile=compile)


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "clang++", "c++")),
                    reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.slow
def test_compiled_log_density_equals_eager_and_follows_parameter_updates():
    """torch.compile must give the eager numbers (to float rounding) and must read the
    parameters at every call: a graph that baked in the weights would go stale here."""
    torch.manual_seed(3)
    m = VAE(30, latent_dim=4, hidden_sizes=(16,))
    x = (torch.rand(37, 30) < 0.3).float()               # 37: a short last batch too
    for step in range(2):
        eager = _seeded_log_likelihood(m, x, 50, compile=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error", VaekitWarning)     # a fallback to eager would warn
            compiled = _seeded_log_likelihood(m, x, 50, compile=True)
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-4)
        with torch.no_grad():                            # move the weights; compile again?
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
        if step == 0:
            before = compiled
    assert (compiled - before).abs().max() > 0.1        # the update changed the estimate
    assert evaluate(m, x, 50, compile=True)["compiled"] is True
    assert evaluate(m, x, 50, compile=False)["compiled"] is False


def test_a_failing_compiler_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")
    monkeypatch.setattr(torch, "compile", broken)
    torch.manual_seed(4)
    m = VAE(12, latent_dim=2, hidden_sizes=(8,))
    x = (torch.rand(9, 12) < 0.5).float()
    with pytest.warns(UserWarning, match="torch.compile failed.*no C.. compiler"):
        compiled = _seeded_log_likelihood(m, x, 20, compile=True)
    torch.testing.assert_close(compiled, _seeded_log_likelihood(m, x, 20, compile=False),
                               rtol=0, atol=0)
    with pytest.warns(VaekitWarning, match="torch.compile failed"):
        assert evaluate(m, x, 20, compile=True)["compiled"] is False


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "clang++", "c++")),
                    reason="torch.compile on the CPU needs a C++ compiler")
def test_a_compiler_failure_does_not_switch_compiling_off_for_the_process(monkeypatch):
    """The fallback belongs to one evaluation: once the compiler works again, the next
    evaluation compiles (vaekit 0.1 kept a module-level flag that stayed off)."""
    torch.manual_seed(5)
    m = VAE(12, latent_dim=2, hidden_sizes=(8,))
    x = (torch.rand(9, 12) < 0.5).float()
    with monkeypatch.context() as mp:
        mp.setattr(torch, "compile", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
        with pytest.warns(VaekitWarning):
            assert evaluate(m, x, 20, compile=True)["compiled"] is False
    assert evaluate(m, x, 20, compile=True)["compiled"] is True


def test_compile_auto_resolves_by_the_number_of_rows_and_rejects_other_values():
    assert use_compile("auto", COMPILE_MIN_ROWS) and not use_compile("auto", COMPILE_MIN_ROWS - 1)
    assert use_compile(True, 1) and not use_compile(False, 10**9)
    with pytest.raises(ValueError, match="compile must be"):
        use_compile("yes", 10)
