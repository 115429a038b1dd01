"""What a trained model produces: samples, reconstructions, interpolations, a latent grid.

Images are shown as E[x|z] (Bernoulli probabilities or Gaussian means), the usual practice.
Every function returns CPU tensors and runs without gradients.
"""

from __future__ import annotations

import torch

from .evaluation import model_device, posterior_means


@torch.no_grad()
def prior_samples(model, num: int, seed: int | None = 0) -> torch.Tensor:
    """E[x|z] for ``num`` draws z ~ p(z): ``(num, D)``. ``seed`` makes the draw repeatable
    without touching the global random state."""
    device = model_device(model)
    prior = model.prior()
    g = torch.Generator(device=device)
    if seed is not None:
        g.manual_seed(seed)
    z = torch.randn((num, *prior.event_shape), generator=g, device=device)
    z = prior.mean + prior.stddev * z
    return model.decoder_mean(z).cpu()


@torch.no_grad()
def reconstructions(model, x: torch.Tensor) -> torch.Tensor:
    """E[x|z] at z = E_q[z|x] for ``x: (N, D)``: ``(N, D)``."""
    device = model_device(model)
    return model.decoder_mean(posterior_means(model, x).to(device)).cpu()


@torch.no_grad()
def interpolations(model, x_from: torch.Tensor, x_to: torch.Tensor,
                   steps: int = 10) -> torch.Tensor:
    """Decode points on the straight line between the posterior means of pairs of inputs.

    ``x_from, x_to: (P, D)`` -> ``(P, steps, D)``; the first and last columns decode the two
    endpoints' posterior means.
    """
    device = model_device(model)
    za = posterior_means(model, x_from).to(device)
    zb = posterior_means(model, x_to).to(device)
    t = torch.linspace(0, 1, steps, device=device).view(1, steps, 1)
    z = za.unsqueeze(1) * (1 - t) + zb.unsqueeze(1) * t          # (P, steps, D_z)
    return model.decoder_mean(z).cpu()


@torch.no_grad()
def latent_grid(model, n: int = 20, edge: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """For a 2-D latent space: decode an ``n x n`` grid of z at the N(0, 1) quantiles
    ``linspace(edge, 1 - edge)`` (as in Kingma & Welling 2014, Fig. 4).

    Returns:
        ``(images (n*n, D), z (n*n, 2))``, rows ordered top-left to bottom-right with z_2
        decreasing down the rows.

    Raises:
        ValueError: the latent space is not 2-D.
    """
    if model.latent_dim != 2:
        raise ValueError(f"a latent grid needs latent_dim 2, got {model.latent_dim}")
    device = model_device(model)
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(edge, 1 - edge, n))
    z1, z2 = torch.meshgrid(q, q.flip(0), indexing="xy")
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)
    return model.decoder_mean(z.to(device)).cpu(), z
