"""The two-stochastic-layer VAE: bounds against a hand computation, and training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vaekit.config import TrainConfig, load_config
from vaekit.data import eval_split
from vaekit.distributions import stop_gradient
from vaekit.estimators import get_estimator
from vaekit.models import HierarchicalVAE, build_model
from vaekit.objectives import elbo, iwae_bound, log_weights_given
from vaekit.training import Trainer, validation_score


def _normal_log_density(z, loc, log_scale):
    return (-0.5 * ((z - loc) / log_scale.exp()) ** 2 - log_scale
            - 0.5 * math.log(2 * math.pi)).sum(-1)


def _heads(net, h):
    loc, log_scale = net(h).chunk(2, -1)
    return loc, log_scale


def test_log_weights_match_a_hand_computation(double_precision):
    torch.manual_seed(0)
    m = HierarchicalVAE(5, latent_dims=(3, 2), hidden_sizes=(4,), upper_hidden_sizes=(3,))
    x = (torch.rand(4, 5) < 0.5).double()
    q = m.encoder(x)
    z = q.rsample((6,))                                            # (K, B, 5)
    z1, z2 = z[..., :3], z[..., 3:]
    with torch.no_grad():
        log_q = (_normal_log_density(z1, *_heads(m.q_layers[0].net, x))
                 + _normal_log_density(z2, *_heads(m.q_layers[1].net, z1)))
        log_p = (_normal_log_density(z2, torch.zeros(2), torch.zeros(2))
                 + _normal_log_density(z1, *_heads(m.p_layers[0].net, z2)))
        logits = m.decoder_net(z1)
        log_px = (x * logits - F.softplus(logits)).sum(-1)
        hand = log_px + log_p - log_q
        lw = log_weights_given(m, x, q, z)
    torch.testing.assert_close(lw, hand, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(q.log_prob(z), log_q)
    # the IWAE bound is the log-mean-exp of these weights; with K = 1 the ELBO
    torch.manual_seed(1)
    b = iwae_bound(m, x, 6)
    torch.manual_seed(1)
    z = m.encoder(x).rsample((6,))
    torch.testing.assert_close(b, log_weights_given(m, x, m.encoder(x), z).logsumexp(0)
                               - math.log(6))
    # no closed-form KL: the analytic request falls back to Monte Carlo
    torch.manual_seed(2)
    a = elbo(m, x, 3, kl="analytic")
    torch.manual_seed(2)
    torch.testing.assert_close(a, elbo(m, x, 3, kl="mc"))
    # stop-gradient copy: no gradient to phi when z is held fixed
    lp = stop_gradient(m.encoder(x)).log_prob(z.detach()).sum()
    assert not lp.requires_grad


def test_iwae_paper_two_layer_preset_builds_the_papers_network():
    cfg = load_config("iwae-paper-2layer")
    m = build_model(cfg.model, 784)
    assert isinstance(m, HierarchicalVAE) and m.latent_dims == [100, 50]
    sizes = [layer.weight.shape for layer in m.modules() if isinstance(layer, torch.nn.Linear)]
    assert torch.Size([200, 784]) in sizes and torch.Size([200, 200]) in sizes   # q(z1|x)
    assert torch.Size([100, 100]) in sizes and torch.Size([100, 50]) in sizes    # p(z1|z2)
    assert torch.Size([784, 200]) in sizes                                        # p(x|z1)
    assert m.prior().sample((3,)).shape == (3, 150)


@pytest.mark.slow
def test_training_raises_the_validation_bound(mnist5k):
    torch.manual_seed(0)
    m = HierarchicalVAE(mnist5k.event_shape, latent_dims=(20, 10), hidden_sizes=(100,),
                        upper_hidden_sizes=(50,))
    m.init_decoder_bias(mnist5k.train.mean(0))
    valid = eval_split(mnist5k, "valid", "dynamic")
    before = validation_score(m, valid)
    for objective, k in (("elbo", 1), ("iwae", 3)):
        cfg = TrainConfig(objective=objective, epochs=2, batch_size=50, lr=2e-3, device="cpu")
        Trainer(m, cfg, mnist5k.train, valid, estimator=get_estimator(objective, num_samples=k),
                dynamic_binarization=True, progress=False).fit()
    after = validation_score(m, valid)
    assert after > before + 25, (before, after)
