"""Plain, denoising and stacked autoencoders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vaekit.config import TrainConfig
from vaekit.data import eval_split
from vaekit.errors import ConfigError
from vaekit.evaluation import evaluate
from vaekit.fitting import pretrain_greedy
from vaekit.models import Autoencoder, StackedAutoencoder
from vaekit.models.autoencoder import corrupt, corrupt_fixed
from vaekit.training import Trainer


def _train(model, data, epochs=4):
    model.init_decoder_bias(data.train.mean(0))
    cfg = TrainConfig(epochs=epochs, batch_size=50, lr=2e-3, device="cpu")
    Trainer(model, cfg, data.train, eval_split(data, "valid", "dynamic"),
            dynamic_binarization=True, progress=False).fit()
    return model


@pytest.mark.slow
def test_denoising_beats_the_plain_autoencoder_on_noisy_inputs(mnist5k):
    test = eval_split(mnist5k, "test", "dynamic")
    noisy = corrupt_fixed(test, "masking", 0.5, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    plain = _train(Autoencoder(mnist5k.event_shape, 32, (200,)), mnist5k)
    torch.manual_seed(0)
    dae = _train(Autoencoder(mnist5k.event_shape, 32, (200,), noise="masking",
                           noise_level=0.5), mnist5k)
    with torch.no_grad():
        plain_err = plain.reconstruction_error(test, noisy).mean().item()
        dae_err = dae.reconstruction_error(test, noisy).mean().item()
        clean_err = plain.reconstruction_error(test).mean().item()
    # measured: plain 175, denoising 111 nats per image (clean inputs, plain: 82)
    assert dae_err < plain_err - 30, (dae_err, plain_err)
    assert clean_err < plain_err
    ev = evaluate(dae, test)
    assert ev["denoising_error"] < ev["reconstruction_error"] + 20


def test_reconstruction_error_is_the_bernoulli_negative_log_likelihood():
    torch.manual_seed(0)
    m = Autoencoder(6, 2, (5,))
    x = (torch.rand(4, 6) < 0.5).float()
    p = m.decode_mean(m.embed(x))
    manual = -(x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(-1)
    torch.testing.assert_close(m.reconstruction_error(x), manual, rtol=1e-5, atol=1e-5)
    g = Autoencoder(6, 2, (5,), likelihood="gaussian")
    torch.testing.assert_close(g.reconstruction_error(x),
                               0.5 * (g.decode_mean(g.embed(x)) - x).square().sum(-1))
    losses = m.training_losses(x)                 # one loss: the mean error
    torch.testing.assert_close(losses.loss, m.reconstruction_error(x).mean())
    torch.testing.assert_close(-losses.bound, m.reconstruction_error(x).detach())


def test_corruption_noise_levels():
    torch.manual_seed(0)
    x = torch.ones(200, 50)
    masked = corrupt(x, "masking", 0.3)
    assert abs(float((masked == 0).float().mean()) - 0.3) < 0.02
    noisy = corrupt(torch.zeros(200, 50), "gaussian", 0.5)
    assert abs(float(noisy.std()) - 0.5) < 0.02
    assert torch.equal(corrupt(x, "none", 0.3), x)
    with pytest.raises(ConfigError, match="masking noise_level"):
        Autoencoder(4, 2, noise="masking", noise_level=1.0)


@pytest.mark.slow
def test_greedy_pretraining_trains_each_layer_then_the_stack(mnist5k):
    torch.manual_seed(0)
    model = StackedAutoencoder(mnist5k.event_shape, 20, (100, 50))
    model.init_decoder_bias(mnist5k.train.mean(0))
    pairs = model.layer_pairs()
    assert len(pairs) == 3 and [p[2] for p in pairs] == ["bernoulli", "gaussian", "gaussian"]
    test = eval_split(mnist5k, "test", "dynamic")
    flat = test.flatten(1)                    # the shallow autoencoders work on vectors
    enc1, dec1, _ = pairs[0]
    with torch.no_grad():
        before = F.binary_cross_entropy_with_logits(dec1(enc1(flat)), flat,
                                                    reduction="none").sum(-1).mean()
    cfg = TrainConfig(batch_size=50, lr=2e-3, device="cpu")
    errors = pretrain_greedy(model, mnist5k.train, cfg, epochs=2, dynamic_binarization=True)
    assert len(errors) == 3
    with torch.no_grad():
        after = F.binary_cross_entropy_with_logits(dec1(enc1(flat)), flat,
                                                   reduction="none").sum(-1).mean()
        stacked = model.reconstruction_error(test).mean()
    assert after < before - 50, (before, after)           # the first shallow AE learned
    # the pre-trained layers already form a working stack: better than the mean image
    mean_only = F.binary_cross_entropy_with_logits(model.decoder_net[-1].bias.expand_as(flat),
                                                   flat, reduction="none").sum(-1).mean()
    assert stacked < mean_only
    tuned = _train(model, mnist5k, epochs=2).reconstruction_error(test).mean()
    assert tuned < stacked
