"""How fast does a convolutional VAE learn the colours of 8-bit RGB images, by likelihood?

A diagnostic for README "Data as users have it" (the colored-mnist model that learnt colours
but not shapes). The same networks as ``vaekit train --net conv --latent-dim 32`` (vaekit's
ConvEncoder / ConvDecoder, channels 32, 64, tanh), the ELBO with the closed-form KL, Adam at
1e-3, batch 100, seed 0, on

* ``flat``: 4,000 training images each of one random colour (every channel uniform in
  0..255): all a model has to learn is three numbers per image;
* ``colored``: vaekit's ``colored-mnist`` (digits in a random background and stroke colour).

Likelihoods: a Gaussian with a fixed standard deviation (0.05 or 0.2 on [0, 1]); PixelCNN++'s
discretized logistic mixture (10 components) with the log-scales' initial bias at 0 (what
vaekit did before it matched the scale to the data) or at -1.5 (near the moment-matched scale
vaekit now starts at, log(sd * sqrt(3) / pi) of the pooled per-pixel sd on [-1, 1]: -1.55 for
colored-mnist, -1.15 for the flat images). Printed every 100 steps: the ELBO
per dimension of the step's batch (a density for the Gaussian, a log-probability for the
mixture: not comparable across the two) and the mean absolute error, in levels 0..255, of the
decoded mean E[x|z] at z = the posterior mean on 500 validation images, beside a flat image
of each image's per-channel median.

Usage:  python examples/colour_learning.py [--data flat|colored] [--steps 800]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from vaekit.image_data import load_colored_mnist
from vaekit.nn import ConvDecoder, ConvEncoder
from vaekit.observations import OBSERVATIONS

LATENT, CHANNELS, SHAPE = 32, (32, 64), (3, 28, 28)


def flat_colours(n: int, rng: np.random.Generator) -> torch.Tensor:
    colour = rng.integers(0, 256, size=(n, 3, 1, 1))
    return torch.from_numpy(np.broadcast_to(colour, (n, *SHAPE)).astype(np.float32) / 255)


def load(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "flat":
        rng = np.random.default_rng(1)
        return flat_colours(4000, rng), flat_colours(500, rng)
    d = load_colored_mnist()
    return d.values("train"), d.values("valid")


def likelihood(kind: str, value: float, train: torch.Tensor):
    """(decoder, log p(x | decoder output), E[x | decoder output])."""
    if kind == "gaussian":
        dec = ConvDecoder(LATENT, SHAPE, CHANNELS, "tanh")
        const = math.log(value) + 0.5 * math.log(2 * math.pi)
        return (dec, lambda out, x: (-0.5 * ((x - out) / value) ** 2 - const).flatten(1).sum(1),
                lambda out: out)
    obs = OBSERVATIONS.get("discretized-logistic")(SHAPE, 10)
    dec = ConvDecoder(LATENT, obs.param_shape, CHANNELS, "tanh")
    obs.init_bias(dec.output_bias(), train.mean(0))         # the centres at the mean, as vaekit
    with torch.no_grad():
        m = obs.components
        dec.output_bias().view(-1)[m + 3 * m: m + 6 * m] = value       # the log-scales
    return dec, lambda out, x: obs(out).log_prob(x), lambda out: obs(out).mean


def run(kind: str, value: float, train: torch.Tensor, valid: torch.Tensor, steps: int) -> None:
    torch.manual_seed(0)
    enc = ConvEncoder(SHAPE, 2 * LATENT, CHANNELS, "tanh")
    dec, log_px, mean = likelihood(kind, value, train)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], 1e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(steps + 1):
        x = train[torch.randint(0, train.shape[0], (100,), generator=g)]
        mu, log_sigma = enc(x).chunk(2, -1)
        z = mu + log_sigma.exp() * torch.randn_like(mu)
        kl = 0.5 * (mu ** 2 + (2 * log_sigma).exp() - 1 - 2 * log_sigma).sum(-1)
        loss = -(log_px(dec(z), x) - kl).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0:
            with torch.no_grad():
                err = (mean(dec(enc(valid).chunk(2, -1)[0])) - valid).abs().mean() * 255
            print(f"{kind:<9} {value:5g} {step:5d}  ELBO/dim {-loss.item() / valid[0].numel():6.2f}"
                  f"  KL {kl.mean():6.1f}  |error| {err:5.1f} levels", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=("flat", "colored"), default="flat")
    p.add_argument("--steps", type=int, default=800)
    args = p.parse_args(argv)
    train, valid = load(args.data)
    valid = valid[:500]
    median = valid.flatten(2).median(-1).values[..., None, None]
    print(f"{args.data}: a flat image of each one's median colour: |error| "
          f"{(median - valid).abs().mean() * 255:.1f} levels")
    for kind, value in (("gaussian", 0.05), ("gaussian", 0.2), ("logistic", 0.0),
                        ("logistic", -1.5)):
        run(kind, value, train, valid, args.steps)


if __name__ == "__main__":
    main()
