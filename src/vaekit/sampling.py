"""What a trained model produces: samples, reconstructions, interpolations, a latent grid.

Images are shown as E[x|z] (Bernoulli probabilities or Gaussian means), the usual practice.
Every function returns CPU tensors and runs without gradients.
"""

from __future__ import annotations

import torch

from .evaluation import model_device


def fixed_indices(total: int, n: int, seed: int = 0) -> torch.Tensor:
    """``min(n, total)`` distinct indices into ``range(total)`` drawn by a generator seeded
    with ``seed``, in the drawn order (CPU, int64): the same draw on every machine and run."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]


def shown_examples(x: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` rows of ``x: (N, *event_shape)`` drawn without replacement by a fixed generator, in the
    drawn (random) order: the examples the figures show, the same for every run on the same
    split. Not the first rows: a split's order need not be random (binarized MNIST's test
    set begins with a run of zeros), and interpolation pairs of one digit show nothing.
    ``(min(n, N), *event_shape)``."""
    return x[fixed_indices(x.shape[0], n, seed).to(x.device)]


def _seeded(model, seed: int | None, draw) -> torch.Tensor:
    """``draw(family)`` on the model's device with the global RNG seeded by ``seed`` and
    restored afterwards; the result on the CPU."""
    from .families import family_of
    device = model_device(model)
    with torch.no_grad(), torch.random.fork_rng(
            devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        out = draw(family_of(model))
    return out.cpu()


def prior_samples(model, num: int, seed: int | None = 0, *,
                  label: int | None = None) -> torch.Tensor:
    """``num`` samples of the model as its family draws them (:meth:`vaekit.families.
    Family.sample`; E[x|z] with z ~ p(z) for latent-variable models), on the CPU. ``seed``
    makes the draw repeatable; the global random state is left as it was. ``label``: the
    class to draw from, for families with the ``labels`` capability (E[x|z, y=label])."""
    if label is None:
        return _seeded(model, seed, lambda family: family.sample(model, num))
    return _seeded(model, seed, lambda family: family.sample(model, num, label=label))


def prior_draws(model, num: int, seed: int | None = 0, *,
                label: int | None = None) -> torch.Tensor:
    """``num`` draws x ~ p(x) of the model itself (:meth:`vaekit.families.Family.draw`:
    z ~ p(z), then x ~ p(x|z)), on the CPU; ``seed`` and ``label`` as in
    :func:`prior_samples`."""
    if label is None:
        return _seeded(model, seed, lambda family: family.draw(model, num))
    return _seeded(model, seed, lambda family: family.draw(model, num, label=label))


@torch.no_grad()
def embeddings(model, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``model.embed(x)`` in batches, on the model's device: for a VAE the posterior means
    E_q[z|x], for an autoencoder its codes, for a VQ-VAE the quantized codes.
    ``x: (N, *event_shape)`` -> ``(N, latent_dim)``."""
    device = model_device(model)
    return torch.cat([model.embed(x[i:i + batch_size].to(device))
                      for i in range(0, len(x), batch_size)])


@torch.no_grad()
def reconstructions(model, x: torch.Tensor) -> torch.Tensor:
    """``model.decode_mean(model.embed(x))`` for ``x: (N, *event_shape)``: for a VAE,
    E[x|z] at z = E_q[z|x]; for an autoencoder, g(f(x)). ``(N, *event_shape)``."""
    was = model.training
    model.eval()
    out = model.decode_mean(embeddings(model, x)).cpu()
    model.train(was)
    return out


@torch.no_grad()
def interpolations(model, x_from: torch.Tensor, x_to: torch.Tensor,
                   steps: int = 10) -> torch.Tensor:
    """Decode points on the straight line between the embeddings (posterior means, codes) of
    pairs of inputs: ``x_from, x_to: (P, *event_shape)`` -> ``(P, steps, *event_shape)``;
    the first and last columns decode the endpoints' embeddings."""
    was = model.training
    model.eval()
    za, zb = embeddings(model, x_from), embeddings(model, x_to)
    t = torch.linspace(0, 1, steps, device=za.device).view(1, steps, 1)
    z = za.unsqueeze(1) * (1 - t) + zb.unsqueeze(1) * t          # (P, steps, D_z)
    out = model.decode_mean(z.reshape(-1, z.shape[-1]))
    out = out.reshape(*z.shape[:2], *out.shape[1:]).cpu()
    model.train(was)
    return out


@torch.no_grad()
def latent_grid(model, n: int = 20, edge: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """For a 2-D latent space: decode an ``n x n`` grid of z at the N(0, 1) quantiles
    ``linspace(edge, 1 - edge)`` (as in Kingma & Welling 2014, Fig. 4).

    Returns:
        ``(images (n*n, *event_shape), z (n*n, 2))``, rows ordered top-left to bottom-right with z_2
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
