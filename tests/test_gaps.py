"""The inference gap split into approximation and amortization gaps (vaekit.gaps; Cremer, Li &
Duvenaud 2018, Table 1), checked against the linear-Gaussian model, where every part has a
closed form:

    log p(x) = log N(x; b, W W^T + sigma^2 I),   p(z|x) = N(m(x), Lambda^{-1}),
    Lambda = I + W^T W / sigma^2 (Tipping & Bishop 1999, eqs. 5-7),
    log p(x) - ELBO(q) = KL(q || p(z|x))         (Gaussian KL, exact),
    approximation gap of the diagonal family = min_diag KL(q || p(z|x))
                                             = (sum_j log Lambda_jj - log det Lambda) / 2
    (the best diagonal Gaussian has the posterior mean and variances 1 / Lambda_jj).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY, run_cli
from torch.distributions import MultivariateNormal, kl_divergence

from vaekit.errors import ConfigError
from vaekit.gaps import elbo_estimate, inference_gaps, local_posterior
from vaekit.models import LinearGaussian


def _model(orthogonal: bool, seed: int = 0) -> LinearGaussian:
    """D = 6, L = 3, sigma = 0.5 (fixed); W with orthogonal columns of lengths 2, 1, 0.5 (the
    posterior covariance is then diagonal) or a generic W."""
    torch.manual_seed(seed)
    m = LinearGaussian(6, 3, sigma=0.5, learn_sigma=False, posterior="diagonal")
    with torch.no_grad():
        if orthogonal:
            basis, _ = torch.linalg.qr(torch.randn(6, 3, dtype=m.W.dtype))
            m.W.copy_(basis * torch.tensor([2.0, 1.0, 0.5], dtype=m.W.dtype))
        else:
            w = 0.5 * torch.randn(6, 3)
            w[:, 1] += w[:, 0]                              # correlated columns: a strongly
            w[:, 2] -= 0.8 * w[:, 0]                        # correlated posterior
            m.W.copy_(w)
        m.b.copy_(0.3 * torch.randn(6))
    return m


def _kl_to_posterior(m: LinearGaussian, x: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z|x)) in closed form, ``(N,)`` nats."""
    q = m.encoder(x)
    full = MultivariateNormal(q.mean, covariance_matrix=torch.diag_embed(q.variance))
    return kl_divergence(full, m.exact_posterior(x))


def _gaps(m, x, **kw):
    h, head = m.local_posterior(x)
    kw = {"num_samples": 2000, "elbo_samples": 1000, **kw}
    return inference_gaps(m, x, features=h, head=head, **kw)


def _mc_se(r) -> torch.Tensor:
    return (r.elbo_q_mc_se ** 2 + r.elbo_q_star_mc_se ** 2).sqrt()


def test_posterior_in_the_family_closes_the_approximation_gap(double_precision):
    m = _model(orthogonal=True)                 # the encoder: random A, c = 0, unit scales
    x = m.marginal().sample((20,))
    with torch.no_grad():
        exact, kl = m.log_marginal(x), _kl_to_posterior(m, x)
        closed_elbo = m.closed_form_elbo(x)
    r = _gaps(m, x)
    # the ELBO(q) estimate against its closed form: a statistical test, 4.5 standard errors
    assert ((r.elbo_q - closed_elbo).abs() < 4.5 * r.elbo_q_mc_se).all()
    # log p(x): L_2000 with the mixture proposal (q + q*)/2 has a standard deviation of about
    # 0.01 nats here (half its draws come from q); on average it is exact to 0.01 nats
    assert (r.log_likelihood - exact).abs().max() < 0.05
    assert (r.log_likelihood - exact).mean().abs() < 0.01
    # q* reaches the exact posterior: ELBO(q*) = log p(x) within 0.02 nats for every point
    assert (r.elbo_q_star - exact).abs().max() < 0.02
    assert r.approximation_gap.mean().abs() < 0.01
    # the amortization gap is the whole inference gap, KL(q || p(z|x)) in closed form:
    # within 4.5 Monte-Carlo standard errors plus the 0.02 nats of the optimisation
    assert kl.min() > 1.0                                 # a real gap to recover
    assert ((r.amortization_gap - kl).abs() < 4.5 * _mc_se(r) + 0.02).all()
    s = r.summary()
    assert s["amortization_gap"] == pytest.approx(
        float(kl.mean()), abs=4.5 * s["amortization_gap_mc_se"] + 0.02)
    # the decomposition, point by point and on average
    torch.testing.assert_close(r.inference_gap, r.approximation_gap + r.amortization_gap,
                               rtol=0, atol=1e-9)
    assert s["inference_gap"] == pytest.approx(s["approximation_gap"] + s["amortization_gap"],
                                               abs=1e-9)
    assert s["optimisation"]["at_limit"] == 0             # the stopping rule ended every point


def test_a_bad_encoder_has_a_large_amortization_gap_that_optimisation_recovers(
        double_precision):
    m = _model(orthogonal=True, seed=1)
    m.set_exact_posterior()
    shift = torch.tensor([1.0, -1.5, 2.0], dtype=m.c.dtype)
    with torch.no_grad():
        m.c.add_(shift)                         # every mean shifted by delta: q = N(m + d, S)
        precision = torch.linalg.inv(m.exact_posterior(m.b[None]).covariance_matrix)
    expected = float(0.5 * shift @ precision @ shift)    # KL(N(m + d, S) || N(m, S))
    x = m.marginal().sample((16,))
    r = _gaps(m, x)
    assert expected > 10
    exact = m.log_marginal(x).detach()
    assert (r.elbo_q_star - exact).abs().max() < 0.02      # recovered: q* = p(z|x)
    assert ((r.amortization_gap - expected).abs() < 4.5 * _mc_se(r) + 0.02).all()
    assert r.approximation_gap.abs().max() < 0.05          # 0 up to L_K's noise (see above)
    assert r.approximation_gap.mean().abs() < 0.01


def test_a_diagonal_family_leaves_the_closed_form_approximation_gap(double_precision):
    m = _model(orthogonal=False, seed=2)
    with torch.no_grad():
        lam = torch.eye(3, dtype=m.W.dtype) + m.W.T @ m.W / m.log_sigma.exp() ** 2
        expected = float(0.5 * (lam.diagonal().log().sum() - torch.logdet(lam)))
    x = m.marginal().sample((16,))
    r = _gaps(m, x, num_samples=20_000, elbo_samples=5000)
    assert expected > 0.3                                  # correlations a diagonal q misses
    exact = m.log_marginal(x).detach()
    best = exact - expected                                # the best diagonal q's ELBO
    # ELBO(q*) reaches the best diagonal ELBO (0.02 nats: the optimisation) and cannot pass
    # it: both within 4.5 Monte-Carlo standard errors of the estimate
    assert (r.elbo_q_star < best + 4.5 * r.elbo_q_star_mc_se).all()
    assert (r.elbo_q_star > best - 4.5 * r.elbo_q_star_mc_se - 0.02).all()
    # so every point's approximation gap is that constant, within the Monte-Carlo errors of
    # L_20000 (its delta-method se, which heavy-tailed weights can understate: 6 se per
    # point) and of ELBO(q*), plus the optimisation's 0.02 nats; on average within 4.5 se
    se = (r.log_likelihood_mc_se ** 2 + r.elbo_q_star_mc_se ** 2).sqrt()
    assert ((r.approximation_gap - expected).abs() < 6 * se + 0.02).all()
    s = r.summary()
    assert s["approximation_gap"] == pytest.approx(
        expected, abs=4.5 * s["approximation_gap_mc_se"] + 0.01)
    # the amortization gap: KL(q || p(z|x)) - (the approximation gap), both closed forms
    with torch.no_grad():
        kl = _kl_to_posterior(m, x)
    assert ((r.amortization_gap - (kl - expected)).abs() < 4.5 * _mc_se(r) + 0.02).all()


def test_a_local_planar_flow_closes_the_diagonal_approximation_gap(double_precision):
    """Two planar steps after q* (Rezende & Mohamed 2015) can shear the diagonal Gaussian into
    the correlated posterior: the approximation gap left falls from the closed-form 0.48 nats
    to below a quarter of it, ELBO(q*_flow) does not fall below ELBO(q*) (the flow starts at
    q*) and stays below log p(x) (4.5 standard errors each)."""
    m = _model(orthogonal=False, seed=2)
    with torch.no_grad():
        lam = torch.eye(3, dtype=m.W.dtype) + m.W.T @ m.W / m.log_sigma.exp() ** 2
        expected = float(0.5 * (lam.diagonal().log().sum() - torch.logdet(lam)))
    x = m.marginal().sample((12,))
    r = _gaps(m, x, flow_steps=2)
    exact = m.log_marginal(x).detach()
    se = (r.elbo_q_star_mc_se ** 2 + r.elbo_q_star_flow_mc_se ** 2).sqrt()
    assert (r.elbo_q_star_flow > r.elbo_q_star - 4.5 * se).all()
    assert (r.elbo_q_star_flow < exact + 4.5 * r.elbo_q_star_flow_mc_se).all()
    s = r.summary()
    assert s["approximation_gap"] > 0.75 * expected
    assert s["approximation_gap_flow"] < 0.25 * expected
    assert s["flow"] == "planar, 2 steps"


def test_same_seed_same_numbers_and_the_callers_random_state_is_kept():
    m = _model(orthogonal=True)
    x = m.marginal().sample((4,)).detach()
    state = torch.random.get_rng_state()
    a = _gaps(m, x, num_samples=100, elbo_samples=50, steps=100)
    b = _gaps(m, x, num_samples=100, elbo_samples=50, steps=100)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.elbo_q_star, b.elbo_q_star) and torch.equal(a.log_likelihood,
                                                                     b.log_likelihood)
    c = _gaps(m, x, num_samples=100, elbo_samples=50, steps=100, seed=1)
    assert not torch.equal(a.elbo_q, c.elbo_q)
    assert all(p.requires_grad for p in m.parameters())    # the model's weights given back


def test_elbo_estimate_standard_error_is_calibrated(double_precision):
    """200 independent 50-sample estimates: their spread matches the reported se (within 15%,
    a 200-draw sample sd is within about 5% of the truth) and they centre on the closed
    form."""
    m = _model(orthogonal=False)
    x = m.marginal().sample((3,)).detach()
    with torch.no_grad():
        q = m.encoder(x)
        draws = [elbo_estimate(m, x, q, 50) for _ in range(200)]
        closed = m.closed_form_elbo(x)
    means = torch.stack([d[0] for d in draws])
    ses = torch.stack([d[1] for d in draws])
    ratio = means.std(0) / ses.mean(0)
    assert ((ratio - 1).abs() < 0.15).all(), ratio
    assert ((means.mean(0) - closed).abs() < 4 * means.std(0) / math.sqrt(200)).all()


def test_families_without_local_parameters_are_refused():
    from vaekit.families import get_family
    from vaekit.models import VQVAE, HierarchicalVAE
    assert get_family("vae").supports("gaps")
    for name, model in (("hierarchical-vae", HierarchicalVAE(16, latent_dims=[4, 2])),
                        ("vqvae", VQVAE((1, 8, 8)))):
        assert not get_family(name).supports("gaps")
        with pytest.raises(ConfigError, match=f"a {name} does not have; they apply to: vae"):
            local_posterior(model, torch.zeros(2, *model.event_shape))


# --------------------------------------------------------------------------- the command line
def _files(run):
    return {p.name: p.read_bytes() for p in run.iterdir()
            if p.is_file() and not p.name.startswith(".")}   # not the lock's holder line


def test_gaps_command(tiny_npz, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", tiny_npz, "--out", run, *TINY,
                           "--threads", "1")
    assert code == 0, err
    before = _files(run)
    argv = ["gaps", run, "--num-points", "5", "--num-samples", "200", "--steps", "50",
            "--threads", "1"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "amortization gap" in out and "approximation gap" in out and "gaps.json" in out
    d = json.loads((run / "gaps.json").read_text())
    assert d["num_points"] == 5 and d["num_samples"] == 200 and d["steps"] == 50
    assert d["inference_gap"] == pytest.approx(d["log_likelihood"] - d["elbo_q"], abs=1e-9)
    assert d["inference_gap"] == pytest.approx(d["approximation_gap"] + d["amortization_gap"],
                                               abs=1e-9)
    pts = d["points"]
    assert len(pts["elbo_q"]) == 5
    for i in range(5):
        assert pts["log_likelihood"][i] - pts["elbo_q"][i] == pytest.approx(
            pts["approximation_gap"][i] + pts["amortization_gap"][i], abs=1e-9)
    assert (run / "gaps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    after = _files(run)
    assert {k: v for k, v in after.items() if k not in ("gaps.json", "gaps.png")} == before
    # --json prints the same numbers (the same seed gives the same result; a flow, fitted
    # after q*, changes none of them) and the flow's rows
    code, out, _ = run_cli(capsys, *argv, "--json", "--flow", "planar", "--flow-steps", "1")
    j = json.loads(out)
    assert code == 0 and j["amortization_gap"] == d["amortization_gap"]
    assert j["approximation_gap_flow"] == pytest.approx(
        j["log_likelihood"] - j["elbo_q_star_flow"], abs=1e-9)
    assert j["flow"] == "planar, 1 steps" and len(j["points"]["elbo_q_star_flow"]) == 5

    # bad settings and held runs: one line, exit 1
    code, _, err = run_cli(capsys, "gaps", run, "--num-points", "0", "--threads", "1")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--num-points" in err
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(run / '.vaekit.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.ftruncate(fd, 0); os.pwrite(fd, b'vaekit train (pid 1)', 0)\n"
        "print('held', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        stamp = (run / "gaps.json").stat().st_mtime_ns
        time.sleep(0.01)
        code, _, err = run_cli(capsys, *argv)
        assert code == 1 and len(err.strip().splitlines()) == 1 and "in use by" in err
        assert (run / "gaps.json").stat().st_mtime_ns == stamp
    finally:
        holder.kill()
        holder.wait()


def test_gaps_command_refuses_a_mixture_run(tiny_npz, tmp_path, capsys):
    mob = tmp_path / "mob"
    code, _, err = run_cli(capsys, "train", "--model", "bernoulli-mixture", "--data", tiny_npz,
                           "--num-components", "2", "--out", mob, "--no-progress",
                           "--threads", "1")
    assert code == 0, err
    before = _files(mob)
    code, out, err = run_cli(capsys, "gaps", mob, "--num-points", "5", "--num-samples", "20",
                             "--steps", "5", "--threads", "1")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert "a bernoulli-mixture does not have; they apply to: vae" in err
    assert _files(mob) == before
