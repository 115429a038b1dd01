"""Flow posteriors (``--posterior planar|iaf``): exact densities, inverses, stop-gradient
copies, every estimator, the evaluation and the command line.

References are written here independently of :mod:`vaekit.flows`: the planar step and its
constraint from Rezende & Mohamed (2015), eq. 10 and Appendix A.1, the IAF step from Kingma
et al. (2016), Algorithm 1, and the density by the change of variables with
``torch.func.jacrev`` (log N(z_0) - log |det df/dz_0|), all in float64.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY, make_binary_images, run_cli
from test_estimators import assert_matches, stats
from torch.func import grad, jacrev

from vaekit.distributions import analytic_kl, diagonal_normal, stop_gradient
from vaekit.errors import ConfigError
from vaekit.estimators import ESTIMATORS, get_estimator
from vaekit.evaluation import evaluate_terms
from vaekit.flows import FlowDistribution, IAFPosterior, PlanarPosterior
from vaekit.models import VAE
from vaekit.objectives import log_terms

D, T, B, K = 3, 3, 2, 4
FLOWS = ("planar", "iaf")


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _head(kind, dim=D, steps=T, seed=0):
    torch.manual_seed(seed)
    if kind == "planar":
        return PlanarPosterior(dim, flow_steps=steps)
    head = IAFPosterior(dim, flow_steps=steps, context_dim=2)
    with torch.no_grad():                       # a flow far from the identity
        for p in head.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return head


def _features(head, batch=B, seed=1, log_scale=None):
    torch.manual_seed(seed)
    h = torch.randn(batch, head.num_inputs)
    if log_scale is not None:
        h[:, head.latent_dim:2 * head.latent_dim] = log_scale
    return h


def reference_flow(head, h):
    """f(z_0) for one example's features ``h: (F,)``, from the papers' formulas."""
    d, t_steps = head.latent_dim, head.flow_steps
    if isinstance(head, PlanarPosterior):
        rest = h[2 * d:].view(t_steps, 2 * d + 1)
        steps = []
        for t in range(t_steps):
            u, w, b = rest[t, :d], rest[t, d:2 * d], rest[t, 2 * d]
            m = -1 + torch.log1p(torch.exp(w @ u))                         # m(w^T u)
            steps.append((u + (m - w @ u) * w / (w @ w), w, b))

        def f(z):
            for u_hat, w, b in steps:
                z = z + u_hat * torch.tanh(w @ z + b)
            return z
        return f
    ctx = h[2 * d:]

    def f(z):
        for t in range(t_steps):
            x = z.flip(0) if t > 0 else z
            m, s = head.made.steps[t](x, ctx)
            sig = 1 / (1 + torch.exp(-s))
            z = sig * x + (1 - sig) * m
        return z
    return f


def reference_log_q(head, h, z0):
    d = head.latent_dim
    f = reference_flow(head, h)
    base = torch.distributions.Normal(h[:d], h[d:2 * d].exp()).log_prob(z0).sum()
    return base - torch.linalg.slogdet(jacrev(f)(z0))[1]


@pytest.mark.parametrize("kind", FLOWS)
def test_log_prob_is_the_change_of_variables_density(kind):
    head = _head(kind)
    h = _features(head)
    q = head(h)
    assert isinstance(q, FlowDistribution)
    assert q.batch_shape == (B,) and q.event_shape == (D,)
    z = q.rsample((K,))
    z0 = q.invert(z)[0]
    assert z.shape == (K, B, D) and q.log_prob(z).shape == (K, B)
    ref = torch.empty(K, B)
    for k in range(K):
        for b in range(B):
            torch.testing.assert_close(reference_flow(head, h[b])(z0[k, b]), z[k, b],
                                       rtol=0, atol=1e-12)
            ref[k, b] = reference_log_q(head, h[b], z0[k, b])
    torch.testing.assert_close(q.log_prob(z), ref, rtol=0, atol=1e-11)          # cached
    torch.testing.assert_close(q.log_prob(z.clone()), ref, rtol=0, atol=1e-11)  # inverted
    with torch.no_grad():
        torch.testing.assert_close(q.log_prob(z.clone()), ref, rtol=0, atol=1e-11)


@pytest.mark.parametrize("kind", FLOWS)
def test_log_prob_broadcasts_over_batch_dimensions_as_a_mixture_needs(kind):
    """``z: (S, 1, D)`` against a batch of B posteriors gives ``(S, B)``, each column the
    density of that posterior (what ``MixtureSameFamily``, e.g. the VampPrior, asks)."""
    head = _head(kind)
    h = _features(head, batch=3).requires_grad_()
    q = head(h)
    torch.manual_seed(6)
    z = torch.randn(5, 1, D, requires_grad=True)
    lp = q.log_prob(z)
    assert lp.shape == (5, 3)
    for b in range(3):
        torch.testing.assert_close(lp[:, b], head(h[b:b + 1]).log_prob(z[:, 0:1])[:, 0],
                                   rtol=0, atol=1e-11)
    gz = torch.autograd.grad(lp.sum(), z)[0]
    ref = sum(torch.autograd.grad(head(h[b:b + 1]).log_prob(z).sum(), z)[0] for b in range(3))
    torch.testing.assert_close(gz, ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kind", FLOWS)
def test_the_inverse_recovers_z0_and_matches_the_cached_density(kind):
    head = _head(kind)
    h = _features(head)
    q = head(h)
    torch.manual_seed(2)
    z0 = 2 * torch.randn(K, B, D)
    zt = torch.stack([torch.stack([reference_flow(head, h[b])(z0[k, b]) for b in range(B)])
                      for k in range(K)])
    torch.testing.assert_close(q.invert(zt)[0], z0, rtol=0, atol=1e-10)
    z = q.sample((K,))
    assert not z.requires_grad
    torch.testing.assert_close(q.log_prob(z), q.log_prob(z + 0.0), rtol=0, atol=1e-11)
    # the cached value also at z.detach() and at a view (same storage and version) ...
    assert torch.equal(q.log_prob(z.detach()), q.log_prob(z))
    # ... but not after an in-place change
    lp = q.log_prob(z).clone()
    z.add_(0.1)
    assert not torch.allclose(q.log_prob(z), lp)
    torch.testing.assert_close(q.log_prob(z), q.log_prob(z.clone()), rtol=0, atol=1e-11)


@pytest.mark.parametrize("kind", FLOWS)
def test_the_density_integrates_to_one_in_two_dimensions(kind):
    """Midpoint rule on a 500 x 500 grid over [-7, 7]^2 (cell 0.028): the mass is 1 to
    within 1e-5 (the quadrature error and the mass beyond the grid are below 1e-6 here;
    a density off by a constant factor, such as a dropped log-det term, fails)."""
    head = _head(kind, dim=2, steps=4, seed=3)
    q = head(_features(head, batch=1, seed=4, log_scale=-0.3))
    n, lim = 500, 7.0
    step = 2 * lim / n
    g = -lim + step * (torch.arange(n) + 0.5)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 1, 2)
    with torch.no_grad():
        mass = q.log_prob(grid).exp().sum() * step ** 2
    assert abs(float(mass) - 1) < 1e-5


def test_the_made_networks_are_autoregressive():
    head = _head("iaf", dim=4, steps=1)
    ctx = torch.randn(2)
    jm, js = jacrev(lambda z: head.made.steps[0](z, ctx))(torch.randn(4))
    for j in (jm, js):
        assert torch.equal(j.triu(), torch.zeros(4, 4))      # m_i, s_i: z_{<i} only
        assert (j.tril(-1).abs() > 0).sum() == 6             # ... and all of z_{<i}
    fresh = IAFPosterior(4, flow_steps=1)
    with torch.no_grad():
        s0 = fresh.made.steps[0](torch.zeros(4), torch.zeros(4))[1]
    assert torch.sigmoid(s0).min() > 0.8                     # sigma starts near 1


@pytest.mark.parametrize("kind", FLOWS)
def test_stop_gradient_copy_same_value_no_parameter_gradient_exact_z_gradient(kind):
    head = _head(kind)
    h = _features(head).requires_grad_()
    q = head(h)
    sg = stop_gradient(q)
    assert isinstance(sg, FlowDistribution)
    z = q.rsample((K,))
    z0 = q.invert(z)[0]
    phi = [h, *head.parameters()]
    for zz in (z.detach().requires_grad_(), z.detach().clone().requires_grad_()):  # cached,
        lp = sg.log_prob(zz)                                                      # inverted
        torch.testing.assert_close(lp, q.log_prob(z).detach(), rtol=0, atol=1e-11)
        gz, *gphi = torch.autograd.grad(lp.sum(), [zz, *phi], allow_unused=True)
        assert all(g is None or not g.any() for g in gphi)
        for k in range(K):
            for b in range(B):            # d log q / dz = J^{-T} d/dz_0 [log N(z_0) - logdet]
                hb = h[b].detach()
                jac = jacrev(reference_flow(head, hb))(z0[k, b])
                g0 = grad(lambda v, hb=hb: reference_log_q(head, hb, v))(z0[k, b])
                torch.testing.assert_close(gz[k, b], torch.linalg.solve(jac.T, g0),
                                           rtol=1e-9, atol=1e-10)
    # at the sample itself the copy's gradient is the path derivative d log q/dz dz/dphi
    g_path = torch.autograd.grad(sg.log_prob(z).sum(), h, retain_graph=True)[0]
    zl = z.detach().requires_grad_()
    gz = torch.autograd.grad(sg.log_prob(zl).sum(), zl)[0]
    torch.testing.assert_close(g_path, torch.autograd.grad(z, h, gz)[0], rtol=1e-9,
                               atol=1e-10)


@pytest.mark.parametrize("kind", FLOWS)
def test_the_score_at_fixed_z_matches_finite_differences(kind):
    """d/dphi log q_phi(z) at fixed z (what PIWAE and the score-function estimators use):
    autograd through the cached implicit step against central differences of the inverted
    density, for every encoder output and a few MADE weights."""
    head = _head(kind)
    h = _features(head).requires_grad_()
    params = [h, *list(head.parameters())[:2]]
    q = head(h)
    z = q.rsample((K,))
    for cached in (True, False):
        if not cached:
            q = head(h)
            q.rsample((K,))                          # another sample cached: z is inverted
        auto = torch.autograd.grad(q.log_prob(z.detach()).sum(), params)
        eps = 1e-6
        for p, g in zip(params, auto, strict=True):
            flat = p.detach().view(-1)
            for i in range(0, flat.numel(), max(1, flat.numel() // 12)):
                with torch.no_grad():
                    old = flat[i].item()
                    flat[i] = old + eps
                    up = head(h).log_prob(z).sum()
                    flat[i] = old - eps
                    down = head(h).log_prob(z).sum()
                    flat[i] = old
                assert abs(float((up - down) / (2 * eps)) - float(g.view(-1)[i])) < 1e-6
        assert max(float(g.abs().max()) for g in auto) > 1e-2


def test_no_closed_form_kl_so_the_kl_is_monte_carlo():
    q = _head("iaf")(_features(_head("iaf")))
    p = diagonal_normal(torch.zeros(D), torch.ones(D))
    with pytest.raises(NotImplementedError):
        torch.distributions.kl_divergence(q, p)
    assert analytic_kl(q, p) is None


def test_the_mean_is_a_fixed_monte_carlo_estimate():
    head = _head("planar")
    q = head(_features(head))
    m1, m2 = q.mean, q.mean
    assert torch.equal(m1, m2) and m1.shape == (B, D)
    torch.manual_seed(5)
    z = q.sample((20000,))
    se = math.sqrt(1 / 128 + 1 / 20000) * z.std(0)
    assert ((m1 - z.mean(0)).abs() < 5 * se).all()


def _vae(kind, **kw):
    torch.manual_seed(0)
    return VAE(6, latent_dim=2, hidden_sizes=(5,), posterior=kind, flow_steps=2, **kw)


def _binary(n=8, seed=0):
    torch.manual_seed(seed)
    return (torch.rand(n, 6) < 0.4).double()


@pytest.mark.parametrize("kind", FLOWS)
def test_every_bound_estimator_trains_a_flow_posterior(kind):
    x = _binary()
    names = [n for n in ESTIMATORS if ESTIMATORS.get(n).kind == "bound"]
    assert {"elbo", "iwae-dreg", "piwae", "vimco", "wake-sleep", "rws-dreg"} <= set(names)
    for name in names:
        m = _vae(kind)
        flow_weights = list(m.posterior_head.parameters())
        assert bool(flow_weights) == (kind == "iaf")
        opts = ESTIMATORS.get(name).options.field_names()
        est = get_estimator(name, data_shape=(6,),
                            **({"num_samples": 3} if "num_samples" in opts else {}))
        opt = torch.optim.Adam([*m.parameters(), *est.parameters()], lr=1e-2)
        losses = est(m, x)
        assert torch.isfinite(losses.loss) and torch.isfinite(losses.bound).all()
        losses.loss.backward()
        for group in (list(m.generative_parameters()), list(m.encoder_net.parameters()),
                      flow_weights):
            grads = [p.grad for p in group if p.grad is not None]
            assert all(torch.isfinite(g).all() for g in grads), name
            assert not group or any(g.abs().sum() > 0 for g in grads), name
        opt.step()
        assert all(torch.isfinite(p).all() for p in m.parameters())


@pytest.mark.parametrize("kind", FLOWS)
def test_stl_gradient_is_the_total_gradient_minus_the_score_term(kind):
    """Roeder et al. (2017), eq. 8: grad_phi of the ELBO with z reparameterized is the path
    term plus -E[d/dphi log q_phi(z)] at fixed z (the score term); STL keeps the path term.
    On the same noise, the losses' gradients satisfy STL = total - score, and theta's are
    equal, to float rounding."""
    m, x = _vae(kind), _binary()
    params = list(m.parameters())

    def grads(loss):
        g = torch.autograd.grad(loss, params, allow_unused=True)
        return [torch.zeros_like(p) if gi is None else gi for gi, p in zip(g, params,
                                                                         strict=True)]
    torch.manual_seed(3)
    stl = grads(get_estimator("elbo-stl", num_samples=3)(m, x).loss)
    torch.manual_seed(3)
    total = grads(get_estimator("elbo", num_samples=3, kl="mc")(m, x).loss)
    torch.manual_seed(3)
    q = m.encoder(x)
    z = q.rsample((3,))
    score = grads(q.log_prob(z.detach()).mean())     # d/dphi of +mean log q at fixed z
    for a, b, c in zip(stl, total, score, strict=True):
        torch.testing.assert_close(a, b - c, rtol=1e-9, atol=1e-11)
    assert max(float(c.abs().max()) for c in score) > 1e-3
    assert max(float((a - b).abs().max()) for a, b in zip(stl, total, strict=True)) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("kind", FLOWS)
def test_dreg_phi_gradient_has_the_expectation_of_the_iwae_gradient(kind):
    """Tucker et al. (2019): DReG is unbiased for grad_phi L_K. z-test per parameter (< 5
    combined standard errors, as tests/test_estimators.py) against the reparameterized IWAE
    gradient, on the same model and batch, K = 5."""
    m = _vae(kind)
    x = _binary(3)
    ref = stats(m, get_estimator("iwae", num_samples=5), x, draws=300, reps=100, seed=7)
    s = stats(m, get_estimator("iwae-dreg", num_samples=5), x, draws=200, reps=50)
    for g in ("model", "inference"):
        assert_matches(s[g], ref[g].mean, ref[g].standard_error, informative=False)
    big = ref["inference"].mean.abs() > 5 * ref["inference"].standard_error
    assert big.sum() >= 5                              # the comparison has power


@pytest.mark.parametrize("kind", FLOWS)
def test_importance_sampled_evaluation(kind):
    """The streamed k-sample evaluation: in one chunk it is L_k and the Monte Carlo KL of
    the same draws scored by the inverted (exact) density; in chunks of 37 its KL agrees
    with that within 5 standard errors of the difference of two independent estimates."""
    m, x = _vae(kind), _binary(5)
    k = 600
    torch.manual_seed(1)
    one = evaluate_terms(m, x, k, compile=False, batch_size=5, max_rows=5 * k)
    torch.manual_seed(1)
    with torch.no_grad():
        q = m.encoder(x)
        z = q.sample((k,))
        t = log_terms(m, x, z.clone(), q)                 # a copy: q inverts it
    ratio = t.log_qz - t.log_pz
    torch.testing.assert_close(one["kl"], ratio.mean(0), rtol=0, atol=1e-9)
    torch.testing.assert_close(one["log_likelihood"], t.log_w.logsumexp(0) - math.log(k),
                               rtol=0, atol=1e-9)
    torch.manual_seed(2)
    chunked = evaluate_terms(m, x, k, compile=False, batch_size=5, max_rows=5 * 37)
    se = ratio.std(0) * math.sqrt(2 / k)
    assert ((chunked["kl"] - one["kl"]).abs() < 5 * se).all()
    assert (one["log_likelihood"] >= one["elbo"]).all()   # log mean w >= mean log w


@pytest.mark.slow
@pytest.mark.filterwarnings("error::vaekit.errors.VaekitWarning")   # no eager fallback
def test_compiled_evaluation_gives_the_eager_numbers():
    m, x = _vae("iaf"), _binary(5)
    torch.manual_seed(1)
    eager = evaluate_terms(m, x, 300, compile=False)
    torch.manual_seed(1)
    compiled = evaluate_terms(m, x, 300, compile=True)
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-9, atol=1e-9)


def test_the_gaussian_default_is_unchanged_and_bad_options_are_config_errors():
    m = VAE(6, latent_dim=2, hidden_sizes=(5,))
    assert not list(m.posterior_head.parameters()) and m.posterior_head.num_inputs == 4
    assert not any("posterior" in k for k in m.state_dict())
    assert _vae("planar").posterior_head.num_inputs == 4 + 2 * 5
    assert _vae("iaf", flow_context_dim=3).posterior_head.num_inputs == 4 + 3
    for kw, word in (({"flow_steps": 0}, "flow_steps"), ({"flow_context_dim": 0},
                     "flow_context_dim"), ({"posterior": "realnvp"}, "planar")):
        with pytest.raises(ConfigError, match=word):
            VAE(6, latent_dim=2, **{"posterior": "iaf", **kw})
    with pytest.raises(ConfigError, match="flow_steps"):
        PlanarPosterior(2, flow_steps=0)


def test_cli_trains_evaluates_and_resumes_an_iaf_posterior(tmp_path, capsys):
    torch.set_default_dtype(torch.float32)
    data = tmp_path / "tiny.npy"
    np.save(data, make_binary_images(160).reshape(160, -1))
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", "--data", data, "--out", out, "--posterior",
                                "iaf", "--flow-steps", "2", *TINY, "--threads", "1")
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())["model"]
    assert cfg["posterior"] == "iaf" and cfg["flow_steps"] == 2
    first = json.loads((out / "eval.json").read_text())
    assert math.isfinite(first["log_likelihood"]) and first["num_samples"] == 20
    code, stdout, err = run_cli(capsys, "evaluate", out, "--num-samples", "30", "--json",
                                "--threads", "1")
    assert code == 0, err
    r = json.loads(stdout)
    assert r["log_likelihood"] >= r["elbo"] - 1.0 and math.isfinite(r["kl"])
    code, _, err = run_cli(capsys, "train", "--resume", out, "--epochs", "3", "--no-progress",
                           "--no-eval", "--threads", "1")
    assert code == 0, err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", tmp_path / "bad",
                           "--posterior", "planar", "--flow-steps", "0", *TINY,
                           "--threads", "1")
    assert code != 0 and "flow_steps" in err and len(err.strip().splitlines()) == 1
