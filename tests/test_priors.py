"""Learned priors (``--prior mog|vamp --prior-components K``): their densities against
scikit-learn and explicit formulas, their samples against the mixture's moments and CDF,
gradients through the ELBO and RWS, the Monte Carlo KL fallback, evaluation's chunking, and
tiny command-line runs that train, evaluate, resume bit-identically and sample."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli, whole_and_resumed
from scipy import stats
from sklearn.mixture import GaussianMixture

import vaekit.evaluation as evaluation
from vaekit.data import Dataset
from vaekit.distributions import analytic_kl
from vaekit.errors import ConfigError
from vaekit.estimators import get_estimator
from vaekit.families import get_family
from vaekit.io import load_tensors
from vaekit.models.vae import VAE
from vaekit.objectives import elbo, log_mean_exp, log_terms
from vaekit.priors import MixtureOfGaussiansPrior, build_prior, log_prob_size

SHAPE = (1, 8, 8)


def _mog(weights, means, scales) -> MixtureOfGaussiansPrior:
    means = torch.as_tensor(means, dtype=torch.float64)
    prior = MixtureOfGaussiansPrior(means.shape[1], means.shape[0]).double()
    with torch.no_grad():
        prior.logits.copy_(torch.as_tensor(weights, dtype=torch.float64).log() + 0.7)
        prior.loc.copy_(means)
        prior.log_scale.copy_(torch.as_tensor(scales, dtype=torch.float64).log())
    return prior


def _vae(prior: str, k: int = 4, **kw) -> VAE:
    return VAE(SHAPE, prior=prior, prior_components=k, latent_dim=3, hidden_sizes=[16],
               **kw).double()


# --------------------------------------------------------------------------- densities
def test_mog_log_prob_equals_sklearn_and_an_explicit_logsumexp():
    rng = np.random.default_rng(0)
    k, d = 3, 4
    w = np.array([0.2, 0.5, 0.3])
    mu = rng.normal(0, 2, (k, d))
    sigma = rng.uniform(0.3, 2.0, (k, d))
    prior = _mog(w, mu, sigma)
    z = rng.normal(0, 3, (50, d))
    ours = prior().log_prob(torch.from_numpy(z)).detach().numpy()

    gm = GaussianMixture(k, covariance_type="diag")
    gm.weights_, gm.means_, gm.covariances_ = w, mu, sigma ** 2
    gm.precisions_cholesky_ = 1 / sigma
    np.testing.assert_allclose(ours, gm.score_samples(z), rtol=0, atol=1e-10)

    # log sum_k pi_k prod_j N(z_j; mu_kj, sigma_kj^2), written out (nats)
    log_n = (-0.5 * ((z[:, None, :] - mu) / sigma) ** 2 - np.log(sigma)
             - 0.5 * math.log(2 * math.pi)).sum(-1)                  # (50, K)
    explicit = torch.logsumexp(torch.from_numpy(np.log(w) + log_n), -1).numpy()
    np.testing.assert_allclose(ours, explicit, rtol=0, atol=1e-10)
    assert ours.shape == (50,) and prior().batch_shape == () and prior().event_shape == (d,)


def test_vamp_log_prob_is_the_mean_of_the_encoder_posteriors_at_the_pseudo_inputs():
    torch.manual_seed(0)
    model = _vae("vamp", k=4)
    with torch.no_grad():                          # some outside [0, 1]: clamped there
        model.latent_prior.raw_pseudo_inputs.uniform_(-0.5, 1.5)
    u = model.latent_prior.pseudo_inputs()
    assert u.shape == (4, *SHAPE) and u.min() == 0 and u.max() == 1
    assert torch.equal(u, model.latent_prior.raw_pseudo_inputs.clamp(0, 1))
    z = torch.randn(6, 5, 3, dtype=torch.float64) * 2
    ours = model.prior().log_prob(z)                                     # (6, 5)
    per_k = torch.stack([model.encoder(u[i:i + 1]).log_prob(z.unsqueeze(-2)).squeeze(-1)
                         for i in range(4)])                             # (K, 6, 5)
    reference = per_k.logsumexp(0) - math.log(4)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    # the matrix-product log-density holds (..., K) float64 values per point: 4 K counted
    assert log_prob_size(model.prior()) == 4 * 4


def test_vamp_pseudo_inputs_start_at_training_examples_inside_the_data_range():
    """The family's initialisation: each pseudo-input is a training example moved 5% of the
    range into the interior, u = lo + r (0.05 + 0.9 (x - lo) / r + 0.01 eps), so
    |(u - lo) / r - 0.05 - 0.9 (x - lo) / r| <= 0.01 * 5 unless eps exceeds 5 sigma."""
    raw = torch.from_numpy(np.random.default_rng(0).random((30, *SHAPE)) < 0.3).to(torch.uint8)
    data = Dataset("bits", raw, raw[:5], raw[:5])
    for k in (8, 45):                                        # K <= N, and K > N (replacement)
        torch.manual_seed(0)
        model = VAE(SHAPE, prior="vamp", prior_components=k, latent_dim=2, hidden_sizes=[8])
        get_family("vae").initialize(model, data)
        prior = model.latent_prior
        assert float(prior.low) == 0 and float(prior.high) == 1
        u = prior.pseudo_inputs()
        assert u.shape == (k, *SHAPE) and 0 < u.min() and u.max() < 1   # gradient everywhere
        x = data.train.reshape(30, -1)
        gap = ((u.reshape(k, 1, -1) - 0.05 - 0.9 * x).abs().amax(-1)).amin(-1)     # (K,)
        assert gap.max() < 0.05
        assert torch.unique(u.reshape(k, -1), dim=0).shape[0] == k    # repeats kept apart
    real = Dataset("real", torch.linspace(-3, 5, 64 * 10).reshape(10, *SHAPE),
                   torch.zeros(2, *SHAPE), torch.zeros(2, *SHAPE))
    model = VAE(SHAPE, prior="vamp", prior_components=4, latent_dim=2, hidden_sizes=[8],
                likelihood="gaussian")
    get_family("vae").initialize(model, real)
    assert (float(model.latent_prior.low), float(model.latent_prior.high)) == (-3.0, 5.0)
    u = model.latent_prior.pseudo_inputs()
    assert -3 < u.min() and u.max() < 5


def test_the_standard_prior_is_unchanged_and_bad_components_are_refused():
    model = VAE(SHAPE, latent_dim=3, hidden_sizes=[16])
    assert not [k for k in model.state_dict() if k.startswith("latent_prior")]
    assert analytic_kl(model.encoder(torch.zeros(2, *SHAPE)), model.prior()) is not None
    assert build_prior("mog", 2).num_components == 10
    assert build_prior("vamp", 2, event_shape=SHAPE).num_components == 500
    with pytest.raises(ConfigError, match="prior_components must be an integer >= 1, or 0 for "
                                          r"the prior's default \(mog 10, vamp 500\); got -1"):
        VAE(SHAPE, prior="mog", prior_components=-1)
    with pytest.raises(ConfigError, match="prior_components applies to the priors mog, vamp; "
                                          "the standard prior has none"):
        VAE(SHAPE, prior_components=3)
    with pytest.raises(ConfigError, match="prior must be one of standard, mog, vamp"):
        VAE(SHAPE, prior="flat")


# --------------------------------------------------------------------------- sampling
def test_samples_of_a_two_component_mixture_have_its_moments_and_distribution():
    """200 000 draws: the sample mean and variance of each coordinate within 5 standard
    errors of the mixture's (mean sum_k pi_k mu_k, variance sum_k pi_k (sigma_k^2 + mu_k^2)
    - mean^2); each coordinate passes a Kolmogorov-Smirnov test against the mixture's CDF
    sum_k pi_k Phi((z - mu_k) / sigma_k) at level 0.001 (seeded, so the outcome is fixed)."""
    w, mu, sigma = np.array([0.3, 0.7]), np.array([[-2.0, 1.0], [1.5, 0.0]]), \
        np.array([[0.5, 1.0], [1.0, 0.2]])
    prior = _mog(w, mu, sigma)
    torch.manual_seed(0)
    z = prior().sample((200_000,)).numpy()
    assert z.shape == (200_000, 2)
    mean = (w[:, None] * mu).sum(0)
    var = (w[:, None] * (sigma ** 2 + mu ** 2)).sum(0) - mean ** 2
    n = z.shape[0]
    se_mean = np.sqrt(var / n)
    se_var = ((z - mean) ** 2).std(0) / np.sqrt(n)
    assert np.all(np.abs(z.mean(0) - mean) < 5 * se_mean), (z.mean(0), mean)
    assert np.all(np.abs(z.var(0) - var) < 5 * se_var), (z.var(0), var)
    for j in range(2):
        cdf = lambda t, j=j: (w * stats.norm.cdf((t[:, None] - mu[:, j]) / sigma[:, j])).sum(1)  # noqa: E731
        assert stats.kstest(z[:5000, j], cdf).pvalue > 1e-3


def test_vamp_samples_come_from_the_encoder_mixture():
    torch.manual_seed(1)
    model = _vae("vamp", k=2)
    p = model.prior()
    z = p.sample((4000,))
    q = model.encoder(model.latent_prior.pseudo_inputs())
    mean = q.mean.mean(0)                                   # equal weights 1/2
    var = (q.variance + q.mean ** 2).mean(0) - mean ** 2
    assert z.shape == (4000, 3)
    assert torch.all((z.mean(0) - mean).abs() < 5 * (var / 4000).sqrt())
    assert model.sample(5).shape == (5, *SHAPE) and model.draw(5).shape == (5, *SHAPE)


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_the_elbo_uses_the_monte_carlo_kl_and_its_gradient_reaches_the_prior(prior):
    torch.manual_seed(0)
    model = _vae(prior, k=3)
    x = torch.rand(5, *SHAPE, dtype=torch.float64).round()
    q = model.encoder(x)
    assert analytic_kl(q, model.prior()) is None
    torch.manual_seed(1)
    auto = elbo(model, x, 2)
    torch.manual_seed(1)
    mc = elbo(model, x, 2, kl="mc")
    assert torch.equal(auto, mc)

    names = {"mog": ["logits", "loc", "log_scale"], "vamp": ["raw_pseudo_inputs"]}[prior]
    params = [getattr(model.latent_prior, n) for n in names]
    ids = {id(p) for p in model.inference_parameters()}
    assert not any(id(p) in ids for p in params)                      # theta, not phi
    assert all(any(p is g for g in model.generative_parameters()) for p in params)

    def f() -> torch.Tensor:                    # the same eps each call: a smooth function
        torch.manual_seed(2)
        return elbo(model, x, 3).mean()

    grads = torch.autograd.grad(f(), params)
    for p, g in zip(params, grads, strict=True):
        assert torch.isfinite(g).all() and g.abs().sum() > 0
        i = int(g.flatten().abs().argmax())
        h = 1e-6
        with torch.no_grad():
            p.view(-1)[i] += h
            up = f()
            p.view(-1)[i] -= 2 * h
            down = f()
            p.view(-1)[i] += h
        assert float(g.flatten()[i]) == pytest.approx(float(up - down) / (2 * h), rel=1e-5)


def test_rws_trains_the_pseudo_inputs_with_the_model_gradient():
    """RWS's surrogate gives the pseudo-inputs (theta) the gradient of L_K at detached
    samples: sum_k w~_k grad log p(z_k) (Bornschein & Bengio 2015, Sec. 3)."""
    torch.manual_seed(0)
    model = _vae("vamp", k=3)
    x = torch.rand(4, *SHAPE, dtype=torch.float64).round()
    u = model.latent_prior.raw_pseudo_inputs
    torch.manual_seed(5)
    loss = get_estimator("rws", num_samples=4)(model, x).loss
    (g,) = torch.autograd.grad(loss, [u])
    torch.manual_seed(5)
    q = model.encoder(x)
    z = q.sample((4,))
    ref = -log_mean_exp(log_terms(model, x, z, q).log_w, 0).mean()
    (g_ref,) = torch.autograd.grad(ref, [u])
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
    assert g.abs().sum() > 0
    ws = get_estimator("wake-sleep", num_samples=2)(model, x).loss
    assert torch.isfinite(ws)


# --------------------------------------------------------------------------- evaluation
def test_evaluation_chunks_by_the_prior_s_size(monkeypatch):
    torch.manual_seed(0)
    model = _vae("vamp", k=5)
    x = torch.rand(4, *SHAPE, dtype=torch.float64).round()
    chunks = []

    def recording(model, x, z, q, prior):
        chunks.append(z.shape[0])
        return log_terms(model, x, z, q, prior)

    torch.manual_seed(3)
    full = evaluation.importance_sampling_terms(model, x, 50, 50, recording)
    assert chunks == [50]
    # a budget of 7 samples' worth of log p(z) values: 4 examples x (4 x K 5) each
    monkeypatch.setattr(evaluation, "PRIOR_BUDGET", 7 * 4 * 4 * 5 + 3)
    chunks.clear()
    torch.manual_seed(3)
    part = evaluation.importance_sampling_terms(model, x, 50, 50, recording)
    assert chunks == [7] * 7 + [1]
    for k in full:                               # the same estimator, other samples
        assert torch.isfinite(part[k]).all()
    assert torch.all(part["log_likelihood"] >= part["elbo"] - 1e-9)


# --------------------------------------------------------------------------- command line
def _cli_run(capsys, tiny_npz, out, *flags):
    code, stdout, err = run_cli(capsys, "train", "--data", tiny_npz, "--out", out, *TINY,
                                "--threads", "1", *flags)
    assert code == 0, err
    return stdout


@pytest.mark.parametrize("flags", [("--prior", "vamp", "--prior-components", "5"),
                                   ("--prior", "mog")])
def test_cli_trains_evaluates_and_samples_a_learned_prior(flags, tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    _cli_run(capsys, tiny_npz, out, *flags)
    cfg = json.loads((out / "config.json").read_text())["model"]
    assert cfg["prior"] == flags[1] and cfg["prior_components"] == (5 if "vamp" in flags else 0)
    state, _ = load_tensors(out / "best.safetensors")
    if "vamp" in flags:
        assert state["latent_prior.raw_pseudo_inputs"].shape == (5, 1, 8, 8)
        assert float(state["latent_prior.high"]) == 1.0
    else:
        assert state["latent_prior.loc"].shape == (10, 2)
    ev = json.loads((out / "eval.json").read_text())
    assert math.isfinite(ev["log_likelihood"]) and math.isfinite(ev["elbo"])
    # the KL is the Monte Carlo one on the same samples: L_k >= their mean log w (Jensen)
    assert ev["log_likelihood"] >= ev["elbo"] - 1e-6
    code, stdout, err = run_cli(capsys, "evaluate", out, "--num-samples", "30", "--json",
                                "--threads", "1")
    assert code == 0, err
    again = json.loads(stdout)
    assert math.isfinite(again["log_likelihood"]) and again["log_likelihood"] >= again["elbo"]
    (out / "samples.png").unlink()
    code, stdout, err = run_cli(capsys, "sample", out, "--threads", "1")
    assert code == 0 and (out / "samples.png").is_file(), err
    code, _, err = run_cli(capsys, "sample", out, "--out", tmp_path / "s.npy", "--num", "7",
                           "--threads", "1")
    assert code == 0, err
    assert np.load(tmp_path / "s.npy").shape[0] == 7


def test_cli_refuses_bad_components_in_one_line(tiny_npz, tmp_path, capsys):
    for flags, expected in ((["--prior", "vamp", "--prior-components", "-2"],
                             "prior_components must be an integer >= 1, or 0"),
                            (["--prior-components", "4"],
                             "prior_components applies to the priors mog, vamp")):
        code, _, err = run_cli(capsys, "train", "--data", tiny_npz, "--out", tmp_path / "r",
                               *TINY, "--threads", "1", *flags)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1 and expected in lines[0], err
        assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("model", [{"prior": "vamp", "prior_components": 5},
                                   {"prior": "mog", "prior_components": 3}])
def test_resume_reaches_bit_identical_parameters(model, tiny_npz, tmp_path):
    (a, meta_a), (b, meta_b) = whole_and_resumed(tiny_npz, model, tmp_path, 3, 1)
    assert sorted(a) == sorted(b)
    prior_keys = [k for k in a if k.startswith("model.latent_prior.")]
    assert prior_keys and any(k.startswith("optimizer.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert meta_a["param_names"] == meta_b["param_names"]
    names = ["raw_pseudo_inputs"] if model["prior"] == "vamp" else ["logits", "loc", "log_scale"]
    assert [n for n in meta_a["param_names"] if n.startswith("model.latent_prior.")] == \
        [f"model.latent_prior.{n}" for n in names]             # trained by the optimizer


def test_mixture_log_density_by_matrix_products_keeps_float_precision():
    """GaussianMixture's matrix-product quadratic form against MixtureSameFamily's direct
    differences computed in float64, for narrow components (scale 1e-3) far from z."""
    from torch.distributions import Categorical, MixtureSameFamily

    from vaekit.distributions import diagonal_normal
    from vaekit.priors import GaussianMixture

    g = torch.Generator().manual_seed(0)
    loc = torch.randn(7, 5, generator=g) * 3
    scale = torch.rand(7, 5, generator=g) * 1e-2 + 1e-3
    logits = torch.randn(7, generator=g)
    z = loc[torch.randint(7, (4, 6), generator=g)] + 1e-3 * torch.randn(4, 6, 5, generator=g)
    ours = GaussianMixture(Categorical(logits=logits), diagonal_normal(loc, scale)).log_prob(z)
    ref = MixtureSameFamily(Categorical(logits=logits.double()),
                            diagonal_normal(loc.double(), scale.double())).log_prob(z.double())
    assert ours.dtype == torch.float32 and ours.shape == (4, 6)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-6, atol=1e-4)
