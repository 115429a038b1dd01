"""Every gradient estimator against a known answer on the linear-Gaussian model.

The model (probabilistic PCA) has a closed-form ELBO, posterior and sleep objective, so the
reference gradient is analytic where it exists; for L_K it is a high-sample estimate. Each
comparison is a z-test per parameter: |mean - reference| < 5 combined standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from vaekit.errors import ConfigError
from vaekit.estimators import get_estimator
from vaekit.gradients import gradient_statistics
from vaekit.models import LinearGaussian
from vaekit.objectives import elbo, iwae_bound, log_weights

Z = 5.0   # standard errors allowed per parameter (two-sided p ~ 6e-7 each)


@pytest.fixture(scope="module")
def lg():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield _model()
    torch.set_default_dtype(old)


def _model():
    torch.manual_seed(0)
    m = LinearGaussian(4, 2, sigma=0.8)
    x = m.marginal().sample((3,)).detach()
    m.set_exact_posterior()
    with torch.no_grad():                 # near the posterior, not at it
        m.c.add_(0.3)
        m.raw_scale.diagonal().add_(math.log(1.3))
    return m, x


def estimator(objective, **kw):
    return get_estimator(objective, data_shape=(4,), **kw)


def stats(m, est, x, draws=300, reps=50, seed=1):
    torch.manual_seed(seed)
    return gradient_statistics(m, est, x.repeat(reps, 1), draws)


def flat_grad(value, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, list(params),
                                                                 retain_graph=True)])


def assert_matches(s, ref, ref_se=0.0, informative=True):
    se = torch.sqrt(s.standard_error ** 2 + torch.as_tensor(ref_se) ** 2)
    z = (s.mean - ref).abs() / (se + 1e-12)      # entries that never vary: 0 / eps
    assert z.max() < Z, f"{s.group}: max z = {z.max():.1f}"
    if informative:   # the test has power: many reference entries stand out of the noise
        big = ref.abs() > Z * se
        assert big.sum() >= max(3, 0.25 * ref.numel()), \
            f"{s.group}: only {int(big.sum())} informative entries"


ELBO_ESTIMATORS = [
    ("elbo", {"kl": "analytic"}), ("elbo", {"kl": "mc"}), ("elbo", {"num_samples": 3}),
    ("elbo-stl", {}), ("elbo-sf", {"baseline": "none", "kl": "mc"}),
    ("elbo-sf", {"baseline": "moving-average"}), ("elbo-sf", {"baseline": "nvil"}),
    ("miwae", {"num_groups": 3, "num_samples": 1}), ("ciwae", {"ciwae_beta": 1.0}),
]


@pytest.mark.parametrize("objective,kw", ELBO_ESTIMATORS)
def test_elbo_estimators_match_the_closed_form_gradient(lg, objective, kw):
    m, x = lg
    exact = m.closed_form_elbo(x).mean()
    s = stats(m, estimator(objective, **kw), x)
    sf = objective == "elbo-sf"      # high variance: the entries it resolves are fewer
    assert_matches(s["model"], flat_grad(exact, m.generative_parameters()))
    assert_matches(s["inference"], flat_grad(exact, m.inference_parameters()),
                   informative=not sf)


@pytest.mark.slow
def test_wake_theta_is_the_elbo_gradient_and_sleep_phi_its_closed_form(lg):
    m, x = lg
    for est in (estimator("wake-sleep"), estimator("rws", num_samples=3, rws_wake_weight=0.0)):
        s = stats(m, est, x)
        if est.name == "wake-sleep":
            assert_matches(s["model"], flat_grad(m.closed_form_elbo(x).mean(),
                                                 m.generative_parameters()))
        assert_matches(s["inference"], flat_grad(_expected_sleep_log_q(m),
                                                 m.inference_parameters()))


def _expected_sleep_log_q(m: LinearGaussian) -> torch.Tensor:
    """E_{z ~ p(z), x ~ p(x|z)} log q(z|x) in closed form, for q(z|x) = N(Ax + c, S):
    r = z - Ax - c = (I - AW) z - sigma A eps - (Ab + c) is Gaussian with mean mu and
    covariance C, so E[r^T S^-1 r] = tr(S^-1 C) + mu^T S^-1 mu."""
    eye = torch.eye(m.latent_dim)
    s2 = m.log_sigma.exp() ** 2
    iaw = eye - m.A @ m.W
    cov_r = iaw @ iaw.T + s2 * m.A @ m.A.T
    mu = -(m.A @ m.b + m.c)
    L = m.scale_tril()
    S_inv = torch.cholesky_inverse(L)
    quad = torch.trace(S_inv @ cov_r) + mu @ S_inv @ mu
    return -0.5 * quad - 0.5 * m.latent_dim * math.log(2 * math.pi) - L.diagonal().log().sum()


@pytest.fixture(scope="module")
def iwae_reference(lg):
    """The gradient of L_5 by a high-sample average of the reparameterized estimator."""
    m, x = lg
    return stats(m, estimator("iwae", num_samples=5), x, draws=400, reps=400, seed=7)


@pytest.mark.parametrize("objective,kw,groups", [
    ("iwae-dreg", {}, ("model", "inference")),
    ("vimco", {}, ("model", "inference")),
    ("rws", {}, ("model",)), ("rws-dreg", {}, ("model",)),
    ("ciwae", {"ciwae_beta": 0.0}, ("model", "inference")),
    ("piwae", {"num_groups": 1}, ("model", "inference")),
])
def test_iwae_estimators_match_the_high_sample_gradient(lg, iwae_reference, objective, kw,
                                                        groups):
    m, x = lg
    s = stats(m, estimator(objective, num_samples=5, **kw), x)
    for g in groups:
        ref = iwae_reference[g]
        assert_matches(s[g], ref.mean, ref.standard_error)


def test_iwae_stl_is_biased_for_k_above_one(lg, iwae_reference):
    """Tucker et al. (2019), Sec. 3: dropping the score term biases L_K's phi-gradient."""
    m, x = lg
    s = stats(m, estimator("iwae-stl", num_samples=5), x)
    ref = iwae_reference["inference"]
    se = torch.sqrt(s["inference"].standard_error ** 2 + ref.standard_error ** 2)
    assert ((s["inference"].mean - ref.mean).abs() / (se + 1e-12)).max() > 20
    assert_matches(s["model"], iwae_reference["model"].mean,
                   iwae_reference["model"].standard_error)


@pytest.mark.slow
def test_rws_dreg_estimates_the_same_wake_phi_gradient_as_rws(lg):
    m, x = lg
    ref = stats(m, estimator("rws", num_samples=5, rws_wake_weight=1.0), x, draws=400,
                reps=400, seed=3)["inference"]
    s = stats(m, estimator("rws-dreg", num_samples=5, rws_wake_weight=1.0), x)["inference"]
    assert_matches(s, ref.mean, ref.standard_error)


@pytest.mark.slow
def test_score_function_variance_exceeds_reparameterization_and_baselines_reduce_it(lg):
    m, x = lg
    var = {}
    for name, est in [("reparam", estimator("elbo", kl="mc")),
                      ("sf", estimator("elbo-sf", kl="mc", baseline="none")),
                      ("sf-ma", estimator("elbo-sf", kl="mc", baseline="moving-average"))]:
        var[name] = stats(m, est, x, draws=200, reps=1)["inference"].var.sum().item()
    assert var["sf"] > 10 * var["reparam"], var
    assert var["sf-ma"] < var["sf"], var


def test_stl_phi_gradient_has_zero_variance_at_the_exact_posterior(lg):
    m, x = _model()                                # a copy: the shared model stays as it is
    m.set_exact_posterior()
    stl = stats(m, estimator("elbo-stl"), x, draws=50, reps=1)["inference"]
    assert stl.var.max() < 1e-20 and stl.mean.abs().max() < 1e-10
    plain = stats(m, estimator("elbo", kl="mc"), x, draws=50, reps=1)["inference"]
    assert plain.var.max() > 1e-3                       # the score term's noise, removed by STL


@pytest.mark.slow
def test_dreg_phi_snr_does_not_fall_with_k_while_iwae_does(lg):
    """Rainforth et al. (2018): the IWAE inference-network SNR falls like 1/sqrt(K);
    Tucker et al. (2019): DReG's does not."""
    m, x = lg
    snr = {}
    for name in ("iwae", "iwae-dreg"):
        for k in (1, 10, 100):
            s = stats(m, estimator(name, num_samples=k), x[:1], draws=600, reps=1)
            snr[name, k] = s["inference"].summary()["snr_mean"]
    assert snr["iwae", 100] < snr["iwae", 10] < snr["iwae", 1], snr
    assert snr["iwae", 100] < 0.25 * snr["iwae", 1], snr
    assert snr["iwae-dreg", 100] >= snr["iwae-dreg", 10] >= 0.9 * snr["iwae-dreg", 1], snr


def test_bound_identities(lg):
    m, x = lg
    for seed in (0, 1):
        torch.manual_seed(seed)
        one = estimator("iwae", num_samples=1)(m, x).bound
        torch.manual_seed(seed)
        assert torch.allclose(one, elbo(m, x, 1, kl="mc"), rtol=0, atol=1e-12)
        # MIWAE with M groups of 1 is the M-sample-average ELBO
        torch.manual_seed(seed)
        miwae = estimator("miwae", num_samples=1, num_groups=4)(m, x).bound
        torch.manual_seed(seed)
        assert torch.allclose(miwae, elbo(m, x, 4, kl="mc"), rtol=0, atol=1e-12)
        # CIWAE's ends are the K-sample ELBO and L_K; PIWAE with M = 1 is IWAE
        torch.manual_seed(seed)
        lw = log_weights(m, x, 6)
        for beta, expected in ((1.0, lw.mean(0)), (0.0, lw.logsumexp(0) - math.log(6))):
            torch.manual_seed(seed)
            got = estimator("ciwae", num_samples=6, ciwae_beta=beta)(m, x).bound
            assert torch.allclose(got, expected, rtol=0, atol=1e-12)
        torch.manual_seed(seed)
        p = estimator("piwae", num_samples=6, num_groups=1)(m, x)
        torch.manual_seed(seed)
        assert torch.allclose(p.bound, iwae_bound(m, x, 6), rtol=0, atol=1e-12)
        assert torch.allclose(p.loss, -p.bound.mean())


def test_reported_bound_is_the_true_bound_whatever_the_gradient(lg):
    m, x = lg
    for name, kw in [("elbo", {"beta": 4.0}), ("elbo-sf", {}), ("wake-sleep", {})]:
        torch.manual_seed(0)
        b = estimator(name, num_samples=20000, **kw)(m, x).bound
        assert torch.allclose(b, m.closed_form_elbo(x).detach(), atol=0.05), name


def test_bad_estimator_options_are_config_errors():
    with pytest.raises(ConfigError, match="vimco needs --num-samples >= 2"):
        get_estimator("vimco", num_samples=1)
    with pytest.raises(ConfigError, match="rws_wake_weight"):
        get_estimator("rws", rws_wake_weight=2.0)
    with pytest.raises(ConfigError, match="objective must be one of"):
        get_estimator("nope")


# --------------------------------------------------------------------------- two stochastic layers
@pytest.fixture(scope="module")
def hier():
    """A small two-stochastic-layer VAE (no closed-form KL: every estimator's KL is Monte
    Carlo) with binary data, in float64."""
    from vaekit.models import HierarchicalVAE
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(2)
    m = HierarchicalVAE(4, latent_dims=(2, 1), hidden_sizes=(3,), upper_hidden_sizes=(2,))
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    yield m, x
    torch.set_default_dtype(old)


@pytest.fixture(scope="module")
def hier_references(hier):
    """High-sample gradients of the ELBO and of L_5 (reparameterized), the references."""
    m, x = hier
    return {"elbo": stats(m, estimator("elbo", kl="mc"), x, draws=400, reps=400, seed=11),
            "iwae": stats(m, estimator("iwae", num_samples=5), x, draws=400, reps=400,
                          seed=12)}


HIER_CASES = [  # (objective, options, reference bound, groups checked)
    ("elbo", {}, "elbo", ("model", "inference")),
    ("elbo", {"num_samples": 3}, "elbo", ("model", "inference")),
    ("elbo-stl", {}, "elbo", ("model", "inference")),
    ("elbo-sf", {"baseline": "none", "kl": "mc"}, "elbo", ("model", "inference")),
    ("elbo-sf", {"baseline": "moving-average"}, "elbo", ("model", "inference")),
    ("elbo-sf", {"baseline": "nvil"}, "elbo", ("model", "inference")),
    ("miwae", {"num_groups": 3, "num_samples": 1}, "elbo", ("model", "inference")),
    ("ciwae", {"ciwae_beta": 1.0, "num_samples": 2}, "elbo", ("model", "inference")),
    ("wake-sleep", {}, "elbo", ("model",)),
    ("iwae-dreg", {"num_samples": 5}, "iwae", ("model", "inference")),
    ("vimco", {"num_samples": 5}, "iwae", ("model", "inference")),
    ("ciwae", {"ciwae_beta": 0.0, "num_samples": 5}, "iwae", ("model", "inference")),
    ("piwae", {"num_groups": 1, "num_samples": 5}, "iwae", ("model", "inference")),
    ("rws", {"num_samples": 5}, "iwae", ("model",)),
    ("rws-dreg", {"num_samples": 5}, "iwae", ("model",)),
]


@pytest.mark.slow
@pytest.mark.parametrize("objective,kw,reference,groups", HIER_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(HIER_CASES)])
def test_estimators_match_the_high_sample_gradient_on_two_stochastic_layers(
        hier, hier_references, objective, kw, reference, groups):
    """The same checks as on the linear-Gaussian model, on the hierarchical VAE, whose KL
    has no closed form and whose q and p are ancestral: each estimator's mean gradient
    equals the high-sample gradient of the bound it estimates (5 standard errors)."""
    m, x = hier
    s = stats(m, estimator(objective, **kw), x)
    sf = objective in ("elbo-sf", "vimco")            # high variance: fewer entries resolved
    for g in groups:
        ref = hier_references[reference][g]
        assert_matches(s[g], ref.mean, ref.standard_error,
                       informative=not (sf and g == "inference"))
