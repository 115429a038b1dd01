"""Finite mixtures fitted by EM: monotone log-likelihood, agreement with scikit-learn from the
same start, exact densities against scipy/numpy, recovery of known truths, errors.

Tolerances are stated in each test; data are float64 unless a test is about float32.
"""

from __future__ import annotations

import itertools
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from vaekit.errors import ConfigError, DataError, VaekitError
from vaekit.models.mixtures import (
    BernoulliMixture,
    ComponentCollapseError,
    GaussianMixture,
    NotFittedError,
    kmeans_plusplus,
)
from vaekit.synthetic import GAUSSIAN_MIXTURE_2D, gaussian_mixture_2d, true_gaussian_mixture_2d


# --------------------------------------------------------------------------- data
def overlapping_gaussians(n: int = 600, seed: int = 0) -> torch.Tensor:
    """Three overlapping Gaussians in R^3 with random full covariances, ``(n, 3)`` float64:
    EM needs dozens of iterations on them, so agreement tests compare long trajectories."""
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 2.0, 1.5]])
    z = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    x = np.empty((n, 3))
    for k in range(3):
        a = 0.6 * rng.normal(size=(3, 3)) + 0.5 * np.eye(3)
        x[z == k] = rng.multivariate_normal(means[k], a @ a.T, size=int((z == k).sum()))
    return torch.from_numpy(x)


def planted_bernoulli(n: int = 2000, d: int = 30, seed: int = 0):
    """Two-component binary data: prototypes p and 1 - p with p in {0.15, 0.85}, weights
    (0.3, 0.7). Returns ``(x (n, d) float64, labels, weights, probs (2, d))``."""
    rng = np.random.default_rng(seed)
    p1 = np.where(rng.random(d) < 0.5, 0.85, 0.15)
    probs = np.stack([p1, 1 - p1])
    weights = np.array([0.3, 0.7])
    z = rng.choice(2, size=n, p=weights)
    x = (rng.random((n, d)) < probs[z]).astype(np.float64)
    return torch.from_numpy(x), z, weights, probs


def best_permutation(est_means: np.ndarray, true_means: np.ndarray) -> tuple[int, ...]:
    """perm with est[perm[k]] matched to true k, minimising the total squared distance."""
    K = len(true_means)
    return min(itertools.permutations(range(K)),
               key=lambda p: sum(((est_means[p[k]] - true_means[k]) ** 2).sum()
                                 for k in range(K)))


def run_em_steps(m, x: torch.Tensor, steps: int) -> list[tuple[float, float]]:
    """(mean log-likelihood, mean log-likelihood + log_prior / N) after initialisation and
    after each of ``steps`` EM iterations, one step at a time through the public methods."""
    m.initialize(x)
    out = []
    ll, log_resp = m.e_step(x)
    out.append((ll, ll + float(m.log_prior()) / len(x)))
    for _ in range(steps):
        m.m_step(x, log_resp)
        ll, log_resp = m.e_step(x)
        out.append((ll, ll + float(m.log_prior()) / len(x)))
    return out


# --------------------------------------------------------------------------- EM is monotone
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_gaussian_em_log_likelihood_never_decreases(covariance_type):
    x = overlapping_gaussians()
    m = GaussianMixture(4, covariance_type, seed=1)
    ll = np.array([a for a, _ in run_em_steps(m, x, 30)])
    assert np.diff(ll).min() >= -1e-12, np.diff(ll).min()       # float64 rounding only
    assert ll[-1] - ll[0] > 0.05                                  # and EM did real work
    # fit() records the same kind of history, also monotone, ending at lower_bound_
    fit = GaussianMixture(4, covariance_type, seed=1, tol=1e-6, max_iter=60).fit(x)
    h = np.array(fit.history_)
    assert np.diff(h).min() >= -1e-12
    assert len(h) == fit.n_iter_ + 1 and h[-1] == fit.lower_bound_
    assert fit.lower_bound_ == pytest.approx(fit.score(x), abs=1e-12)


def test_bernoulli_em_is_monotone():
    x, *_ = planted_bernoulli(n=600, d=25, seed=3)
    # MAP-EM (alpha > 0) never lowers log-likelihood + log prior ...
    m = BernoulliMixture(5, alpha=0.5, seed=2)
    steps = run_em_steps(m, x, 40)
    objective = np.array([b for _, b in steps])
    assert np.diff(objective).min() >= -1e-12
    assert objective[-1] - objective[0] > 0.01
    # ... and maximum-likelihood EM (alpha = 0) never lowers the log-likelihood itself
    m0 = BernoulliMixture(5, alpha=0.0, seed=2)
    ll = np.array([a for a, _ in run_em_steps(m0, x, 40)])
    assert np.diff(ll).min() >= -1e-12
    assert ll[-1] - ll[0] > 0.01


# --------------------------------------------------------------------------- vs scikit-learn
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_em_matches_sklearn_from_the_same_start(covariance_type):
    """Our k-means++ initialisation is handed to sklearn (weights_init, means_init,
    precisions_init); 30 EM iterations later both agree to 1e-8 (float64)."""
    x = overlapping_gaussians()
    iters = 30
    mine = GaussianMixture(3, covariance_type, tol=0.0, max_iter=iters, seed=0,
                           warm_start=True)
    mine.initialize(x)
    w0, m0, c0 = (t.clone().numpy() for t in (mine.weights_, mine.means_, mine.covariances_))
    p0 = np.linalg.inv(c0) if covariance_type == "full" else 1.0 / c0
    sk = SkGaussianMixture(3, covariance_type=covariance_type, tol=0.0, max_iter=iters,
                           reg_covar=1e-6, weights_init=w0, means_init=m0, precisions_init=p0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(x.numpy())
    mine.fit(x)
    assert mine.n_iter_ == sk.n_iter_ == iters
    np.testing.assert_allclose(mine.weights_.numpy(), sk.weights_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(mine.means_.numpy(), sk.means_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(mine.covariances_.numpy(), sk.covariances_, rtol=0, atol=1e-8)
    assert mine.score(x) == pytest.approx(sk.score(x.numpy()), abs=1e-9)
    # sklearn's lower_bound_ is the log-likelihood before its last M-step
    assert mine.history_[-2] == pytest.approx(sk.lower_bound_, abs=1e-9)
    np.testing.assert_allclose(mine.score_samples(x).numpy(), sk.score_samples(x.numpy()),
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(mine.predict_proba(x).numpy(), sk.predict_proba(x.numpy()),
                               rtol=0, atol=1e-8)
    # the comparison is not trivial: EM moved far from the start
    assert np.abs(mine.means_.numpy() - m0).max() > 0.3
    assert mine.history_[-1] - mine.history_[0] > 0.05


# --------------------------------------------------------------------------- exact densities
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_score_samples_and_posterior_match_direct_computation(covariance_type):
    rng = np.random.default_rng(4)
    K, D = 3, 3
    weights = np.array([0.2, 0.5, 0.3])
    means = rng.normal(size=(K, D)) * 2
    if covariance_type == "full":
        a = rng.normal(size=(K, D, D))
        covs = a @ a.transpose(0, 2, 1) + 0.3 * np.eye(D)
        full = covs
    else:
        covs = rng.uniform(0.3, 2.0, size=(K, D))
        full = np.stack([np.diag(c) for c in covs])
    m = GaussianMixture(K, covariance_type).set_parameters(
        torch.tensor(weights), torch.tensor(means), torch.tensor(covs))
    x = rng.normal(size=(50, D)) * 3
    log_joint = np.stack([multivariate_normal(means[k], full[k]).logpdf(x)
                          for k in range(K)], 1) + np.log(weights)
    log_px = logsumexp(log_joint, 1)
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(m.score_samples(xt).numpy(), log_px, rtol=0, atol=1e-10)
    assert m.score(xt) == pytest.approx(log_px.mean(), abs=1e-10)
    np.testing.assert_allclose(m.log_joint(xt).numpy(), log_joint, rtol=0, atol=1e-10)
    proba = m.predict_proba(xt).numpy()
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(proba, np.exp(log_joint - log_px[:, None]), rtol=0, atol=1e-12)
    assert (m.predict(xt).numpy() == log_joint.argmax(1)).all()
    assert m(xt).shape == (50,)                          # forward = score_samples


def test_bernoulli_log_likelihood_matches_numpy():
    rng = np.random.default_rng(5)
    K, D = 4, 12
    weights = rng.dirichlet(np.ones(K))
    probs = rng.uniform(0.05, 0.95, size=(K, D))
    x = (rng.random((30, D)) < 0.4).astype(np.float64)
    m = BernoulliMixture(K).set_parameters(torch.tensor(weights), torch.tensor(probs))
    log_joint = np.log(weights) + x @ np.log(probs).T + (1 - x) @ np.log(1 - probs).T
    direct = logsumexp(log_joint, 1)
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(m.score_samples(xt).numpy(), direct, rtol=0, atol=1e-12)
    np.testing.assert_allclose(m.predict_proba(xt).numpy(), np.exp(log_joint - direct[:, None]),
                               rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- recovery
def test_recovers_the_true_gaussian_mixture_2d():
    """EM on the 2,400 training points of gaussian-mixture-2d finds the truth up to a
    permutation: weights within 0.03 (3 sd), means and covariance entries within 4 of their
    sampling standard deviations; it beats the truth's likelihood on its training data (it is
    the maximum-likelihood estimate) and is within 0.05 nats of it on the test set."""
    data = gaussian_mixture_2d()
    x = data.train.double()
    fit = GaussianMixture(3, "full", n_init=2, seed=0, tol=1e-6).fit(x)
    assert fit.converged_
    truth = true_gaussian_mixture_2d()
    tw, tm, tc = (np.asarray(a) for a in (GAUSSIAN_MIXTURE_2D.weights, GAUSSIAN_MIXTURE_2D.means,
                                          GAUSSIAN_MIXTURE_2D.covariances))
    perm = list(best_permutation(fit.means_.numpy(), tm))
    w, mu, cov = (t.numpy()[perm] for t in (fit.weights_, fit.means_, fit.covariances_))
    nk = tw * len(x)
    assert np.abs(w - tw).max() < 0.03
    for k in range(3):
        var = np.diag(tc[k])
        assert (np.abs(mu[k] - tm[k]) < 4 * np.sqrt(var / nk[k])).all(), (k, mu[k], tm[k])
        sd_cov = np.sqrt((np.outer(var, var) + tc[k] ** 2) / nk[k])
        assert (np.abs(cov[k] - tc[k]) < 4 * sd_cov).all(), (k, cov[k], tc[k])
    assert fit.score(x) >= truth.score(x)
    x_test = data.test.double()
    assert abs(fit.score(x_test) - truth.score(x_test)) < 0.05
    pred = np.argsort(perm)[fit.predict(x_test).numpy()]
    assert (pred == data.test_labels.numpy()).mean() >= 0.99


def test_random_init_and_restarts():
    x = gaussian_mixture_2d(1000, seed=2).train.double()
    one = GaussianMixture(3, init_params="random", seed=4).fit(x)
    assert one.score(x) > -4.2                        # the truth scores about -3.9
    # n_init keeps the best restart; the first restart is the n_init=1 run (same generator)
    k5 = GaussianMixture(5, seed=4, n_init=1).fit(x)
    k5r = GaussianMixture(5, seed=4, n_init=3).fit(x)
    assert k5r.lower_bound_ >= k5.lower_bound_
    assert k5r.lower_bound_ == pytest.approx(k5r.score(x), abs=1e-12)


def test_recovers_a_planted_bernoulli_mixture():
    """Weights within 0.035 (3.4 sd), probabilities within 4 sampling sd."""
    x, _, weights, probs = planted_bernoulli()
    fit = BernoulliMixture(2, seed=0).fit(x)
    assert fit.converged_
    perm = list(best_permutation(fit.means_.numpy(), probs))
    w, p = fit.weights_.numpy()[perm], fit.means_.numpy()[perm]
    assert np.abs(w - weights).max() < 0.035
    nk = weights * len(x)
    assert (np.abs(p - probs) < 4 * np.sqrt(probs * (1 - probs) / nk[:, None])).all()
    truth = BernoulliMixture(2).set_parameters(torch.tensor(weights), torch.tensor(probs))
    assert fit.score(x) >= truth.score(x) - 1e-3


# --------------------------------------------------------------------------- float32, sampling
def test_float32_fit_stays_float32_and_agrees_with_float64():
    x = gaussian_mixture_2d(1000, seed=1).train
    f32 = GaussianMixture(3, "full", tol=1e-6).fit(x)
    f64 = GaussianMixture(3, "full", tol=1e-6).fit(x.double())
    assert f32.means_.dtype == torch.float32 and f32.score_samples(x).dtype == torch.float32
    assert f32.lower_bound_ == pytest.approx(f64.lower_bound_, abs=1e-4)
    np.testing.assert_allclose(f32.means_.numpy(), f64.means_.numpy(), atol=1e-3)


def test_sample_reproduces_the_mixture():
    truth = true_gaussian_mixture_2d()
    x, z = truth.sample(20_000, seed=1)
    x2, z2 = truth.sample(20_000, seed=1)
    assert torch.equal(x, x2) and torch.equal(z, z2)
    freq = torch.bincount(z, minlength=3).double() / len(z)
    assert (freq - 1 / 3).abs().max() < 4 * math.sqrt(2 / 9 / len(z))
    for k in range(3):
        xk = x[z == k]
        cov = torch.tensor(GAUSSIAN_MIXTURE_2D.covariances[k], dtype=torch.float64)
        se = (cov.diagonal() / len(xk)).sqrt()
        assert ((xk.mean(0) - truth.means_[k]).abs() < 4 * se).all()
        assert (torch.cov(xk.T) - cov).abs().max() < 0.1       # sd of an entry <= 0.04
    # diagonal and Bernoulli sampling
    diag = GaussianMixture(2, "diag").set_parameters(
        torch.tensor([0.5, 0.5]), torch.tensor([[0.0, 0.0], [10.0, 10.0]]),
        torch.tensor([[1.0, 4.0], [0.25, 1.0]]))
    xd, zd = diag.sample(20_000, seed=2)
    sd = torch.stack([xd[zd == k].std(0) for k in range(2)])
    assert (sd - torch.tensor([[1.0, 2.0], [0.5, 1.0]])).abs().max() < 0.05
    probs = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.0]])
    b = BernoulliMixture(2).set_parameters(torch.tensor([0.25, 0.75]), probs)
    xb, zb = b.sample(20_000, seed=3)
    assert set(xb.unique().tolist()) <= {0.0, 1.0}
    for k in range(2):
        assert (xb[zb == k].mean(0) - probs[k]).abs().max() < 0.03


# --------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("cls", ["gaussian-full", "gaussian-diag", "bernoulli"])
def test_state_dict_round_trips_through_safetensors(cls, tmp_path):
    from safetensors.torch import load_file, save_file

    if cls == "bernoulli":
        x = planted_bernoulli(n=400, d=10)[0].float()
        make = lambda **kw: BernoulliMixture(2, **kw)               # noqa: E731
    else:
        x = gaussian_mixture_2d(600, seed=3).train
        ct = cls.split("-")[1]
        make = lambda **kw: GaussianMixture(3, ct, **kw)            # noqa: E731
    fitted = make().fit(x)
    save_file(fitted.state_dict(), tmp_path / "m.safetensors")
    loaded = make(data_dim=x.shape[1])
    with pytest.raises(NotFittedError):
        loaded.score_samples(x)
    loaded.load_state_dict(load_file(tmp_path / "m.safetensors"))
    assert torch.equal(loaded.score_samples(x), fitted.score_samples(x))
    assert torch.equal(loaded.predict_proba(x), fitted.predict_proba(x))
    assert (loaded.converged_, loaded.n_iter_) == (fitted.converged_, fitted.n_iter_)
    assert loaded.lower_bound_ == fitted.lower_bound_


def test_from_config_reads_fields_with_defaults():
    cfg = SimpleNamespace(num_components=4, covariance_type="diag", em_tol=1e-4, reg_covar=1e-5,
                          em_max_iter=7, em_restarts=2, init_seed=3, latent_dim=16)
    g = GaussianMixture.from_config(cfg, data_dim=5)
    assert (g.n_components, g.covariance_type, g.tol, g.reg_covar, g.max_iter, g.n_init,
            g.seed) == (4, "diag", 1e-4, 1e-5, 7, 2, 3)
    assert g.means_.shape == (4, 5) and g.covariances_.shape == (4, 5)
    b = BernoulliMixture.from_config(cfg, data_dim=5)
    assert (b.n_components, b.tol, b.max_iter, b.n_init, b.seed) == (4, 1e-4, 7, 2, 3)
    d = GaussianMixture.from_config(SimpleNamespace())
    assert (d.n_components, d.covariance_type, d.tol, d.seed, d.data_dim) == (
        1, "full", 1e-3, 0, None)
    with pytest.raises(ConfigError, match="covariance_type"):
        GaussianMixture.from_config(SimpleNamespace(covariance_type="spherical"))


# --------------------------------------------------------------------------- k-means++
def test_kmeans_plusplus_is_chunked_d2_sampling():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 7, generator=g, dtype=torch.float64)
    a = kmeans_plusplus(x, 20, torch.Generator().manual_seed(1))
    b = kmeans_plusplus(x, 20, torch.Generator().manual_seed(1), chunk_elements=50)
    assert torch.equal(a, b) and len(set(a.tolist())) == 20
    # D^2 sampling: with two clusters 1000 apart, the second seed is in the other cluster
    two = torch.cat([torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + 1000])
    for s in range(20):
        idx = kmeans_plusplus(two, 2, torch.Generator().manual_seed(s), n_local_trials=1)
        assert (idx < 200).sum() == 1, idx
    # greedy candidates (default 2 + ln K) avoid two seeds in one of three separated clusters,
    # which plain D^2 sampling does about 20% of the time
    data = gaussian_mixture_2d()

    def doubled_up(trials):       # seedings (of 50) with two seeds in one true cluster
        return sum(len(set(data.train_labels[kmeans_plusplus(
            data.train, 3, torch.Generator().manual_seed(s), n_local_trials=trials)].tolist()))
            < 3 for s in range(50))

    assert doubled_up(None) == 0 and doubled_up(1) >= 5


# --------------------------------------------------------------------------- errors
def test_bad_input_raises_clear_errors():
    x = torch.randn(20, 3, dtype=torch.float64)
    with pytest.raises(DataError, match=r"shape \(N, D\).*got shape \(20,\)"):
        GaussianMixture(2).fit(x[:, 0])
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(DataError, match=r"NaN or infinite values in 1 rows \(first at row 3\)"):
        GaussianMixture(2).fit(bad)
    with pytest.raises(DataError, match="3 points, fewer than n_components=5"):
        GaussianMixture(5).fit(x[:3])
    with pytest.raises(DataError, match="binary data.*binarize"):
        BernoulliMixture(2).fit(torch.rand(10, 4))
    with pytest.raises(DataError, match="only 2 distinct points.*lower n_components"):
        GaussianMixture(3).fit(torch.tensor([[0.0, 0.0], [1.0, 1.0]]).repeat(5, 1))
    with pytest.raises(DataError, match="data_dim=4"):
        GaussianMixture(2, data_dim=4).fit(x)
    fitted = GaussianMixture(2).fit(x)
    with pytest.raises(DataError, match="fitted to 3 dimensions"):
        fitted.score_samples(x[:, :2])
    with pytest.raises(NotFittedError, match=r"call fit\(x\)"):
        GaussianMixture(2).predict_proba(x)
    for kwargs in ({"n_components": 0}, {"covariance_type": "spherical"}, {"tol": -1.0},
                   {"init_params": "kmeans"}, {"n_init": 0}, {"reg_covar": -1e-6}):
        with pytest.raises(ConfigError):
            GaussianMixture(**{"n_components": 2, **kwargs})
    with pytest.raises(ConfigError, match="alpha"):
        BernoulliMixture(2, alpha=-1.0)
    with pytest.raises(DataError, match="symmetric"):
        GaussianMixture(1).set_parameters([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]])
    with pytest.raises(ComponentCollapseError, match="component 0 of 1.*not positive definite"):
        GaussianMixture(1).set_parameters([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(DataError, match="sum to 1"):
        BernoulliMixture(2).set_parameters([0.3, 0.3], [[0.5], [0.5]])
    for e in (DataError, NotFittedError, ComponentCollapseError, ConfigError):
        assert issubclass(e, VaekitError) and issubclass(e, ValueError)


def test_collapsed_components_raise_with_the_component_and_the_fix():
    rng = np.random.default_rng(0)
    flat = torch.from_numpy(np.c_[rng.normal(size=(60, 2)), np.zeros(60)])   # a plane in R^3
    with pytest.raises(ComponentCollapseError,
                       match=r"component \d of 2 collapsed \(its covariance is not positive "
                             r"definite.*raise reg_covar \(now 0\) or lower n_components"):
        GaussianMixture(2, "full", reg_covar=0.0).fit(flat)
    with pytest.raises(ComponentCollapseError, match=r"variance in dimension 2 is 0"):
        GaussianMixture(2, "diag", reg_covar=0.0).fit(flat)
    assert math.isfinite(GaussianMixture(2, "full").fit(flat).lower_bound_)   # reg_covar fixes it
    # a component that no point belongs to
    m = GaussianMixture(3).fit(overlapping_gaussians(90))
    x = overlapping_gaussians(90)
    resp = torch.zeros(90, 3, dtype=torch.float64)
    resp[:45, 0] = 1
    resp[45:, 2] = 1
    with pytest.raises(ComponentCollapseError,
                       match=r"component 1 of 3 collapsed \(its total responsibility is 0 "
                             r"points.*lower n_components"):
        m.m_step(x, resp.log())
    # a smoothed Bernoulli component without points stays defined (p = 1/2, weight 0): no
    # error, so that a 500-component fit survives; fit warns instead. alpha = 0 raises.
    xb, *_ = planted_bernoulli(n=90, d=6)
    b = BernoulliMixture(3, alpha=0.5).fit(xb)
    b.m_step(xb, resp.log())
    assert float(b.weights_[1]) == 0 and (b.means_[1] == 0.5).all()
    assert math.isfinite(b.e_step(xb)[0])
    with pytest.raises(ComponentCollapseError, match=r"component 1 of 3.*set alpha > 0"):
        BernoulliMixture(3, alpha=0.0).fit(xb).m_step(xb, resp.log())
    warm = BernoulliMixture(3, warm_start=True).set_parameters(
        torch.tensor([0.5, 0.5, 0.0]), torch.rand(3, 6, dtype=torch.float64))
    with pytest.warns(UserWarning, match="1 of 3 components ended with less than"):
        warm.fit(xb)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_matches_cpu():
    x = overlapping_gaussians()
    for ct in ("full", "diag"):
        cpu = GaussianMixture(3, ct, tol=0.0, max_iter=20).fit(x)
        gpu = GaussianMixture(3, ct, tol=0.0, max_iter=20).fit(x.cuda())
        assert gpu.means_.device.type == "cuda"
        assert gpu.lower_bound_ == pytest.approx(cpu.lower_bound_, abs=1e-8)
        torch.testing.assert_close(gpu.means_.cpu(), cpu.means_, rtol=0, atol=1e-7)
    xb = planted_bernoulli(n=300, d=10)[0]
    cpu = BernoulliMixture(2).fit(xb)
    gpu = BernoulliMixture(2).fit(xb.cuda())
    assert gpu.lower_bound_ == pytest.approx(cpu.lower_bound_, abs=1e-8)
    assert gpu.sample(10, seed=0)[0].device.type == "cuda"


# --------------------------------------------------------------------------- the dataset
def test_gaussian_mixture_2d_dataset():
    data = gaussian_mixture_2d()
    assert data.name == "gaussian-mixture-2d" and data.image_shape is None
    assert [len(s) for s in (data.train, data.valid, data.test)] == [2400, 300, 300]
    assert data.train.dtype == torch.float32 and data.dim == 2 and not data.binary
    assert data.train_labels.dtype == torch.int64
    assert set(data.train_labels.unique().tolist()) == {0, 1, 2}
    again = gaussian_mixture_2d()
    assert torch.equal(again.train, data.train)
    assert not torch.equal(gaussian_mixture_2d(seed=1).train, data.train)
    truth = true_gaussian_mixture_2d()
    np.testing.assert_allclose(truth.weights_.numpy(), GAUSSIAN_MIXTURE_2D.weights)
    np.testing.assert_allclose(truth.covariances_.numpy(), GAUSSIAN_MIXTURE_2D.covariances)
    # labels are the true components: Bayes' rule recovers >= 99% of them
    assert (truth.predict(data.test.double()) == data.test_labels).double().mean() >= 0.99
    with pytest.raises(DataError, match="n >= 10"):
        gaussian_mixture_2d(5)


# --------------------------------------------------------------------------- the fast EM loop
def clustered(n: int = 3000, d: int = 20, k: int = 10, seed: int = 0,
              offset: float = 0.0) -> torch.Tensor:
    """``(n, d)`` float64: k overlapping Gaussian clusters with random full covariances (the
    shape of benchmarks/bench_em.py: 20 dimensions, 10 components), shifted by ``offset``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 1.5
    z = rng.integers(k, size=n)
    a = rng.normal(size=(k, d, d)) / np.sqrt(d) + 0.3 * np.eye(d)
    x = centres[z] + np.einsum("nij,nj->ni", a[z], rng.normal(size=(n, d)))
    return torch.from_numpy(x + offset)


def sklearn_from_the_same_start(mine: GaussianMixture, x: torch.Tensor, iters: int):
    w0, m0, c0 = (t.clone().numpy() for t in (mine.weights_, mine.means_, mine.covariances_))
    sk = SkGaussianMixture(mine.n_components, covariance_type="full", tol=0.0, max_iter=iters,
                           reg_covar=mine.reg_covar, weights_init=w0, means_init=m0,
                           precisions_init=np.linalg.inv(c0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(x.numpy())
    return sk


def test_full_em_matches_sklearn_to_1e_10_at_the_benchmark_shape():
    """K = 10 full covariances in 20 dimensions, 25 iterations from the same start: weights,
    means, covariances, log-likelihoods and responsibilities agree to 1e-10 (in practice
    ~1e-14: the E-step is scikit-learn's |x W_k - mu_k W_k|^2 with W_k the precision Cholesky
    factor, the M-step the same centred sums)."""
    x = clustered()
    iters = 25
    mine = GaussianMixture(10, "full", tol=0.0, max_iter=iters, seed=0, warm_start=True)
    mine.initialize(x)
    m0 = mine.means_.clone()
    sk = sklearn_from_the_same_start(mine, x, iters)
    mine.fit(x)
    assert mine.n_iter_ == sk.n_iter_ == iters
    for a, b in ((mine.weights_, sk.weights_), (mine.means_, sk.means_),
                 (mine.covariances_, sk.covariances_)):
        np.testing.assert_allclose(a.numpy(), b, rtol=0, atol=1e-10)
    assert mine.history_[-2] == pytest.approx(sk.lower_bound_, abs=1e-10)
    # log-densities up to ~30 in size: 1e-10 relative (measured on an AMD EPYC with AVX-512:
    # 2e-11, 1.7e-10 absolute at 8.5; the BLAS kernels differ by CPU)
    np.testing.assert_allclose(mine.score_samples(x).numpy(), sk.score_samples(x.numpy()),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(mine.predict_proba(x).numpy(), sk.predict_proba(x.numpy()),
                               rtol=0, atol=1e-10)
    assert np.abs(mine.means_.numpy() - m0.numpy()).max() > 0.1          # EM moved


def test_blocked_full_steps_equal_the_unblocked_ones(monkeypatch):
    """Blocks of rows and of components (forced small here: 3 components x 64 rows) give
    the same fit as one block, to rounding."""
    from vaekit.models.mixtures import gaussian

    x = clustered(n=1000, d=6, k=7, seed=2)

    def fit():
        return GaussianMixture(7, "full", tol=0.0, max_iter=15, seed=1).fit(x)

    whole = fit()
    cpu = torch.device("cpu")
    assert whole._blocks(1000, 6, cpu) == (1000, 7)
    # cache-sized blocks on the CPU, the largest allowed ones on an accelerator
    assert whole._blocks(10_000, 20, cpu) == (131072 // 140, 7)
    assert whole._blocks(10_000, 20, torch.device("meta")) == (10_000, 7)
    monkeypatch.setattr(gaussian, "CHUNK_ELEMENTS", 3 * 64 * 6)
    monkeypatch.setattr(gaussian, "MIN_BLOCK_ROWS", 64)
    monkeypatch.setattr(gaussian, "BLOCK_ELEMENTS", 1)
    blocked = fit()
    assert blocked._blocks(1000, 6, cpu) == (64, 3)
    np.testing.assert_allclose(blocked.history_, whole.history_, rtol=0, atol=1e-12)
    for a, b in ((blocked.means_, whole.means_), (blocked.covariances_, whole.covariances_)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-11)


def test_full_densities_stay_accurate_far_from_the_origin():
    """The E-step shifts x and the means by the mean of x before the products, so a
    translation of the data by 1e6 changes the fit and the densities only at the level of
    the rounding of the translated data (ulp(1e6) ~ 1e-10, amplified by the precisions)."""
    x = clustered(n=1500, d=5, k=4, seed=3)
    far = x + 1e6
    init = GaussianMixture(4, "full", seed=0)
    init.initialize(x)
    w0, m0, c0 = init.weights_, init.means_, init.covariances_

    def fit(data, means):
        m = GaussianMixture(4, "full", tol=0.0, max_iter=10, warm_start=True)
        return m.set_parameters(w0, means, c0).fit(data)

    a, b = fit(x, m0), fit(far, m0 + 1e6)
    np.testing.assert_allclose(b.history_, a.history_, rtol=0, atol=1e-7)
    np.testing.assert_allclose((b.means_ - 1e6).numpy(), a.means_.numpy(), rtol=0, atol=1e-7)
    shifted = GaussianMixture(4, "full").set_parameters(a.weights_, a.means_ + 1e6,
                                                        a.covariances_)
    np.testing.assert_allclose(shifted.score_samples(far).numpy(), a.score_samples(x).numpy(),
                               rtol=0, atol=1e-7)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_deferred_read_back_changes_nothing(monkeypatch, covariance_type):
    """On an accelerator with tol=0 the loop reads its log-likelihoods and checks back every
    SYNC_EVERY iterations (forced here on the CPU): the same history, the same parameters,
    and a collapse raises the same error as with a read-back every iteration."""
    x = overlapping_gaussians()

    def fit(**kw):
        return GaussianMixture(3, covariance_type, tol=0.0, max_iter=23, seed=0, **kw).fit(x)

    every_iteration = fit()
    monkeypatch.setattr(GaussianMixture, "_sync_interval", lambda self, device: 5)
    deferred = fit()
    assert deferred.history_ == every_iteration.history_ and deferred.n_iter_ == 23
    assert torch.equal(deferred.means_, every_iteration.means_)
    # a component far from every point gets no responsibility at the first E-step: its
    # collapse is found at the first read-back and reported as without deferral
    cov = torch.eye(3, dtype=torch.float64) * 0.01
    start = (torch.tensor([0.5, 0.25, 0.25]), torch.tensor([[0.0, 0, 0], [2, 1, 0], [1e3, 0, 0]],
                                                           dtype=torch.float64),
             torch.stack([torch.eye(3, dtype=torch.float64), cov, cov]))
    if covariance_type == "diag":
        start = start[:2] + (start[2].diagonal(dim1=1, dim2=2),)
    messages = []
    for interval in (1, 5):
        monkeypatch.setattr(GaussianMixture, "_sync_interval", lambda self, d, i=interval: i)
        m = GaussianMixture(3, covariance_type, tol=0.0, max_iter=10, warm_start=True)
        m.set_parameters(*start)
        with pytest.raises(ComponentCollapseError,
                           match=r"component 2 of 3 collapsed \(its total responsibility is "
                                 r"0 points") as e:
            m.fit(x)
        messages.append(str(e.value))
        assert m._pending is None
    assert messages[0] == messages[1]


def test_a_non_finite_log_likelihood_is_reported_at_its_iteration(monkeypatch):
    x = overlapping_gaussians(200)
    real = GaussianMixture._responsibilities
    for interval in (1, 4):
        calls = []

        def poisoned(self, data, calls=calls):
            ll, resp = real(self, data)
            calls.append(1)
            return (ll * math.nan if len(calls) == 4 else ll), resp    # iteration 3

        monkeypatch.setattr(GaussianMixture, "_responsibilities", poisoned)
        monkeypatch.setattr(GaussianMixture, "_sync_interval", lambda self, d, i=interval: i)
        with pytest.raises(ComponentCollapseError,
                           match="log-likelihood became nan at EM iteration 3; raise "
                                 "reg_covar"):
            GaussianMixture(3, tol=0.0, max_iter=10).fit(x)
