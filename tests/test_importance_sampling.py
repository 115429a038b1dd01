"""Importance sampling of p(x) on the true mixture of gaussian-mixture-2d, where p(x) and
p(z|x) are exact: unbiasedness, the chi^2 variance formula, the zero-variance posterior
proposal, and the downward bias of log p_hat that shrinks with n. Plots render.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from vaekit.importance_sampling import (
    PROPOSALS,
    WRONG_COMPONENT_MASS,
    draw_counts,
    importance_sampling_study,
    log_importance_weights,
    log_px_estimates,
)
from vaekit.models.mixtures import GaussianMixture
from vaekit.plotting import plot_em_history, plot_importance_sampling, plot_mixture_2d
from vaekit.synthetic import gaussian_mixture_2d, true_gaussian_mixture_2d


@pytest.fixture(scope="module")
def truth() -> GaussianMixture:
    return true_gaussian_mixture_2d()


@pytest.fixture(scope="module")
def points(truth) -> torch.Tensor:
    """Six draws from the mixture plus two points between components (mixed posteriors)."""
    x, _ = truth.sample(6, seed=11)
    return torch.cat([x, torch.tensor([[0.0, 1.0], [-2.0, 1.5]], dtype=torch.float64)])


def chi2(truth, x, proposal) -> torch.Tensor:
    """sum_k p(k|x)^2 / q(k|x) - 1 per point: n * Var[p_hat] / p(x)^2, ``(B,)``."""
    log_q, log_w, log_px = log_importance_weights(truth, x, proposal)
    post = (log_w + log_q - log_px[:, None]).exp()
    return (post ** 2 / log_q.exp()).sum(1) - 1


def test_proposals_are_normalised_and_the_wrong_one_is_wrong(truth, points):
    assert set(PROPOSALS) >= {"prior", "posterior", "wrong-component"}
    post = truth.predict_proba(points)
    K = post.shape[1]
    for name in PROPOSALS:
        log_q, log_w, log_px = log_importance_weights(truth, points, name)
        torch.testing.assert_close(log_q.exp().sum(1), torch.ones(len(points)), rtol=0,
                                   atol=1e-12, check_dtype=False)
        torch.testing.assert_close(log_px, truth.score_samples(points), rtol=0, atol=1e-12)
    q = log_importance_weights(truth, points, "wrong-component")[0].exp()
    worst = post.argmin(1)
    torch.testing.assert_close(q.gather(1, worst[:, None])[:, 0],
                               torch.full((len(points),), WRONG_COMPONENT_MASS + 0.1 / K,
                                          dtype=torch.float64))
    # the most probable component gets only 0.1/K
    assert torch.allclose(q.gather(1, post.argmax(1, keepdim=True)),
                          torch.tensor(0.1 / K, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown proposal"):
        log_importance_weights(truth, points, "encoder")


def test_draw_counts_is_multinomial():
    g = torch.Generator().manual_seed(0)
    q = torch.tensor([[0.2, 0.5, 0.3], [0.0, 0.9, 0.1]], dtype=torch.float64)
    c = draw_counts(q.log(), 50, 20_000, g)                           # (R, B, K)
    assert (c.sum(-1) == 50).all() and (c[:, 1, 0] == 0).all()
    se = (50 * q * (1 - q) / 20_000).sqrt()
    assert ((c.mean(0) - 50 * q).abs() <= 4 * se + 1e-12).all()
    torch.testing.assert_close(c.var(0), 50 * q * (1 - q), rtol=0.05, atol=1e-12)


@pytest.mark.parametrize("proposal", ["prior", "wrong-component"])
@pytest.mark.parametrize("n", [1, 10])
def test_estimates_of_p_are_unbiased_with_the_chi2_variance(truth, points, proposal, n):
    """E[p_hat / p] = 1 within 4 standard errors (40,000 repeats per point); the variance
    matches (sum_k p(k|x)^2/q(k|x) - 1) / n within 15%."""
    g = torch.Generator().manual_seed(n)
    R = 40_000
    est = log_px_estimates(truth, points, proposal, n, repeats=R, generator=g)   # (R, B)
    ratio = (est - truth.score_samples(points)).exp()
    se = ratio.std(0) / math.sqrt(R)
    assert ((ratio.mean(0) - 1).abs() < 4 * se).all(), (ratio.mean(0), se)
    theory = chi2(truth, points, proposal) / n
    assert theory.min() > 0.05                      # the test has something to measure
    torch.testing.assert_close(ratio.var(0), theory, rtol=0.15, atol=0)
    # and it has power: the geometric mean exp(E[log p_hat]) is far below p(x) (Jensen)
    assert ((est.mean(0) - truth.score_samples(points)) < -10 * est.std(0) / math.sqrt(R)).all()


def test_counts_and_explicit_samples_give_the_same_distribution(truth, points):
    g = torch.Generator().manual_seed(3)
    R = 4000
    lp = truth.score_samples(points)
    a = (log_px_estimates(truth, points, "prior", 10, R, g, "counts") - lp).exp()
    b = (log_px_estimates(truth, points, "prior", 10, R, g, "samples") - lp).exp()
    se = (a.var(0) / R + b.var(0) / R).sqrt()
    assert ((a.mean(0) - b.mean(0)).abs() < 4 * se).all()
    torch.testing.assert_close(a.var(0), b.var(0), rtol=0.2, atol=0)
    # one draw: every estimate is exactly one of the K weights
    log_w = log_importance_weights(truth, points, "wrong-component")[1]
    one = log_px_estimates(truth, points, "wrong-component", 1, 50, g, "samples")
    assert ((one[..., None] == log_w).any(-1)).all()
    with pytest.raises(ValueError, match="method"):
        log_px_estimates(truth, points, "prior", 1, method="exact")


def test_posterior_proposal_has_zero_variance(truth, points):
    lp = truth.score_samples(points)
    g = torch.Generator().manual_seed(0)
    for n in (1, 10, 1000):
        for method in ("counts", "samples"):
            est = log_px_estimates(truth, points, "posterior", n, 50, g, method)
            assert (est - lp).abs().max() < 1e-12, (n, method)
    rows = importance_sampling_study(truth, points, sample_sizes=(1, 100), repeats=20,
                                     proposals=("posterior",))
    for r in rows:
        assert r["rel_std_p"] < 1e-12 and r["std_log_p"] < 1e-12
        assert abs(r["bias_log_p"]) < 1e-12 and r["rel_var_p_theory"] < 1e-12


def test_log_p_is_biased_low_and_the_bias_shrinks_with_n(truth, points):
    """Prior proposal: at n = 1 log p_hat is tens of nats low; the bias rises towards 0 with n
    (each step by more than 3 standard errors while it is resolvable), matches the delta
    method -Var[p_hat]/(2 p^2) at n = 100 within 25%, and is below 0.01 nats at n = 10,000."""
    sizes = (1, 10, 100, 1000, 10_000)
    rows = importance_sampling_study(truth, points, sample_sizes=sizes, repeats=2000, seed=1,
                                     proposals=("prior",))
    assert [r["n"] for r in rows] == list(sizes)
    bias = np.array([r["bias_log_p"] for r in rows])
    se = np.array([r["bias_log_p_se"] for r in rows])
    assert bias[0] < -1 and bias[0] < -10 * se[0]
    assert (bias < 3 * se).all()                                      # never significantly > 0
    for i in range(3):                                                # n = 1 -> 10 -> 100 -> 1000
        assert bias[i + 1] - bias[i] > 3 * math.hypot(se[i], se[i + 1]), (bias, se)
    delta = -rows[2]["rel_var_p_theory"] / 2
    assert abs(bias[2] - delta) < 0.25 * abs(delta) + 3 * se[2], (bias[2], delta, se[2])
    assert abs(bias[-1]) < 0.01
    # p_hat stays unbiased at every n
    for r in rows:
        assert abs(r["rel_bias_p"]) < 4 * r["rel_bias_p_se"] + 1e-12
        assert r["rel_var_p"] == pytest.approx(r["rel_var_p_theory"], rel=0.2)


def test_study_rows_and_plot(truth, points):
    rows = importance_sampling_study(truth, points, sample_sizes=(1, 10, 100), repeats=300,
                                     seed=2)
    assert len(rows) == 9
    keys = {"estimator", "n", "repeats", "points", "bias_p", "var_p", "std_p", "rel_bias_p",
            "rel_bias_p_se", "rel_var_p", "rel_std_p", "rel_var_p_theory", "bias_log_p",
            "bias_log_p_se", "var_log_p", "std_log_p"}
    assert all(set(r) == keys for r in rows)
    by = {(r["estimator"], r["n"]): r for r in rows}
    for n in (1, 10, 100):       # the poor proposal is far worse than the prior, at every n
        assert by["wrong-component", n]["rel_var_p_theory"] > \
            5 * by["prior", n]["rel_var_p_theory"]
        assert by["wrong-component", n]["bias_log_p"] < by["prior", n]["bias_log_p"] - 0.5
        assert by["posterior", n]["std_log_p"] == 0 or by["posterior", n]["std_log_p"] < 1e-12
    fig = plot_importance_sampling(rows)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    for ax in fig.axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert {"prior", "posterior", "wrong-component"} <= set(labels)
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.tell() > 10_000


def test_mixture_and_history_plots():
    data = gaussian_mixture_2d(600, seed=4)
    truth = true_gaussian_mixture_2d()
    fit = GaussianMixture(3, "diag").fit(data.train.double())
    fig = plot_mixture_2d(data.train, data.train_labels, truth, fit)
    ax = fig.axes[0]
    assert len(ax.patches) == 6                                      # 3 true + 3 fitted
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["true", "fitted (EM)"]
    # an ellipse's half-axes are 2 sd along the covariance's eigenvectors
    width = sorted(p.width for p in ax.patches[:3])
    expected = sorted(4 * math.sqrt(np.linalg.eigvalsh(c.numpy()).max())
                      for c in truth.covariances_)
    np.testing.assert_allclose(width, expected)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.tell() > 10_000
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plot_mixture_2d(torch.zeros(5, 3))
    hist = plot_em_history(fit.history_)
    np.testing.assert_allclose(hist.axes[0].get_lines()[0].get_ydata(), fit.history_)
    two = plot_em_history({"a": [1.0, 2.0], "b": [0.5, 1.5, 1.7]})
    assert len(two.axes[0].get_lines()) == 2
