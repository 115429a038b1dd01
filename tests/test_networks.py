"""Networks by name: MLPs over any event shape, convolutional encoders and decoders for
images (exact output sizes, odd ones too), ``--net auto`` (conv for colour images)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import vaekit
from vaekit.errors import ConfigError
from vaekit.nn import ConvDecoder, ConvEncoder, build_network, resolve_network

OPTS = SimpleNamespace(hidden_sizes=[8], activation="relu", conv_channels=[4, 8],
                       conv_residual_blocks=1)


@pytest.mark.parametrize("shape", [(3, 28, 28), (1, 32, 32), (3, 7, 9), (2, 5, 4)])
def test_conv_encoder_and_decoder_shapes(shape):
    enc = build_network("conv", shape, (6,), OPTS)
    dec = build_network("conv", (3,), (11, *shape[1:]), OPTS, reverse=True)
    assert isinstance(enc, ConvEncoder) and isinstance(dec, ConvDecoder)
    x = torch.rand(5, *shape)
    assert enc(x).shape == (5, 6)
    z = torch.randn(4, 5, 3)                                   # (K, B, L)
    assert dec(z).shape == (4, 5, 11, *shape[1:])
    assert dec.output_bias().shape == (11, 1, 1)
    with pytest.raises(ValueError, match=r"takes images of shape \(\.\.\., 3, 9, 9\)"):
        build_network("conv", (3, 9, 9), (6,), OPTS)(torch.rand(2, 3, 8, 9))


def test_auto_is_conv_for_colour_images_and_mlp_otherwise():
    assert resolve_network("auto", (3, 32, 32)) == "conv"
    assert resolve_network("auto", (1, 28, 28)) == "mlp"
    assert resolve_network("auto", (784,)) == "mlp"
    assert resolve_network("mlp", (3, 32, 32)) == "mlp"
    colour = vaekit.VAE((3, 12, 12), latent_dim=2, conv_channels=[4, 8])
    grey = vaekit.VAE((1, 12, 12), latent_dim=2, hidden_sizes=[8])
    assert isinstance(colour.encoder_net, ConvEncoder) and isinstance(grey.encoder_net,
                                                                      torch.nn.Sequential)


def test_conv_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match=r"needs images \(C, H, W\), got shape \(30,\)"):
        build_network("conv", (30,), (4,), OPTS)
    with pytest.raises(ValueError, match="too many for images of 4x4"):
        build_network("conv", (1, 4, 4), (4,), SimpleNamespace(
            activation="relu", conv_channels=[2, 2, 2], conv_residual_blocks=0))
    with pytest.raises(ConfigError, match="stacked-autoencoder pre-trains its layers one by "
                                          "one: it takes --net mlp"):
        vaekit.StackedAutoencoder((3, 8, 8), net="conv")


@pytest.mark.parametrize("likelihood,gain", [("bernoulli", 15), ("discretized-logistic", 50)])
def test_a_convolutional_vae_on_colour_images(likelihood, gain):
    """The decoder outputs the observation model's parameters, channel-first; its bias (per
    channel) starts the model at the data mean; a few steps raise the ELBO."""
    data = vaekit.load_dataset("colored-mnist")
    small = vaekit.Dataset("small", data.raw_train[:256], data.raw_valid[:64],
                           data.raw_test[:64], divisor=data.divisor)
    torch.manual_seed(0)
    m = vaekit.VAE(small.event_shape, latent_dim=4, likelihood=likelihood,
                   conv_channels=[8, 16], logistic_components=2, activation="elu")
    assert isinstance(m.decoder_net, ConvDecoder)
    assert m.decoder_output(torch.zeros(2, 4)).shape == (2, *m.observation.param_shape)
    m.init_decoder_bias(small.train.mean(0))
    x = small.valid if likelihood != "bernoulli" else torch.bernoulli(small.valid)
    with torch.no_grad():
        before = float(vaekit.elbo(m, x).mean())
    vaekit.train(m, small, vaekit.TrainConfig(epochs=3, batch_size=32, lr=3e-3),
                 progress=False)
    with torch.no_grad():
        after = float(vaekit.elbo(m, x).mean())
    assert after > before + gain, (before, after)    # nats; measured +21 and +1759
    assert m.sample(3).shape == (3, 3, 28, 28)
