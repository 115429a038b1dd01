"""One surrogate loss per step: every estimator's single backward pass gives exactly the
gradients of vaekit 0.1's two losses (theta on ``model_loss``, phi on ``inference_loss``),
on identical noise, to float rounding, on three models (the linear-Gaussian model, a VAE and
a two-stochastic-layer VAE), in float64.

The reference is a frozen copy of vaekit 0.1's estimators (``two_loss_reference.py``).
"""

from __future__ import annotations

import pytest
import torch
from two_loss_reference import REFERENCE

from vaekit.estimators import ESTIMATORS, get_estimator
from vaekit.models import VAE, HierarchicalVAE, LinearGaussian

# (objective, options): every bound estimator, and the options that change its surrogate
CASES = [
    ("elbo", {"num_samples": 1}), ("elbo", {"num_samples": 3, "kl": "mc"}),
    ("elbo", {"num_samples": 2, "beta": 2.5}), ("elbo-stl", {"num_samples": 3}),
    ("iwae", {"num_samples": 5}), ("iwae-stl", {"num_samples": 4}),
    ("iwae-dreg", {"num_samples": 5}), ("miwae", {"num_samples": 2, "num_groups": 3}),
    ("ciwae", {"num_samples": 4, "ciwae_beta": 0.3}),
    ("piwae", {"num_samples": 2, "num_groups": 3}),
    ("elbo-sf", {"num_samples": 2, "baseline": "none", "kl": "mc"}),
    ("elbo-sf", {"num_samples": 1, "baseline": "moving-average"}),
    ("elbo-sf", {"num_samples": 2, "baseline": "nvil"}),
    ("vimco", {"num_samples": 4}), ("wake-sleep", {"num_samples": 2}),
    ("rws", {"num_samples": 3, "rws_wake_weight": 0.0}),
    ("rws", {"num_samples": 3, "rws_wake_weight": 0.5}),
    ("rws", {"num_samples": 3, "rws_wake_weight": 1.0}),
    ("rws-dreg", {"num_samples": 3, "rws_wake_weight": 0.0}),
    ("rws-dreg", {"num_samples": 3, "rws_wake_weight": 0.5}),
    ("rws-dreg", {"num_samples": 3, "rws_wake_weight": 1.0}),
]


def test_every_bound_estimator_is_covered():
    bound = {n for n in ESTIMATORS if ESTIMATORS.get(n).kind == "bound"}
    assert bound == {name for name, _ in CASES} == set(REFERENCE)


def _models():
    torch.manual_seed(0)
    lg = LinearGaussian(4, 2, sigma=0.8)
    lg_x = lg.marginal().sample((5,)).detach()
    vae = VAE(6, latent_dim=2, hidden_sizes=(5,))
    hier = HierarchicalVAE(6, latent_dims=(3, 2), hidden_sizes=(5,), upper_hidden_sizes=(4,))
    binary = (torch.rand(5, 6) < 0.4).double()
    return {"linear-gaussian": (lg, lg_x), "vae": (vae.double(), binary),
            "hierarchical-vae": (hier.double(), binary)}


@pytest.fixture(scope="module")
def models():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield _models()
    torch.set_default_dtype(old)


def _grads(loss, params):
    g = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if gi is None else gi for gi, p in zip(g, params, strict=True)]


@pytest.mark.parametrize("model_name", ["linear-gaussian", "vae", "hierarchical-vae"])
@pytest.mark.parametrize("objective,options", CASES,
                         ids=[f"{n}-{'-'.join(f'{k}{v}' for k, v in o.items())}"
                              for n, o in CASES])
def test_one_surrogate_has_the_two_losses_gradients(models, model_name, objective, options):
    model, x = models[model_name]
    new = get_estimator(objective, data_shape=tuple(x.shape[1:]), **options).double()
    old = REFERENCE[objective](data_dim=x.shape[1], **options) if objective == "elbo-sf" \
        else REFERENCE[objective](**options)
    old = old.double()
    old.load_state_dict(new.state_dict())           # the same (NVIL) baseline network
    theta = list(model.generative_parameters())
    phi = [*model.inference_parameters(), *new.parameters()]
    phi_old = [*model.inference_parameters(), *old.parameters()]
    for step, seed in enumerate((3, 4)):            # twice: running baselines move
        torch.manual_seed(seed)
        losses = new(model, x)
        g_new = _grads(losses.loss, theta + phi)
        torch.manual_seed(seed)
        ref = old(model, x)
        g_theta = _grads(ref.model_loss, theta)
        g_phi = _grads(ref.inference_loss, phi_old)
        torch.testing.assert_close(losses.bound, ref.bound, rtol=0, atol=1e-12)
        for a, b, where in zip(g_new, g_theta + g_phi,
                               ["theta"] * len(theta) + ["phi"] * len(phi), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12,
                                       msg=lambda m, w=where, s=step: f"{w} (step {s}): {m}")
        assert any(g.abs().sum() > 0 for g in g_new[:len(theta)])     # not vacuous
        assert any(g.abs().sum() > 0 for g in g_new[len(theta):])
        if objective == "elbo-sf":
            for k, v in new.state_dict().items():      # the baselines moved alike
                torch.testing.assert_close(v, old.state_dict()[k], rtol=0, atol=1e-12)
