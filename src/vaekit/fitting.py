"""Training loops that are not the main trainer: greedy layer-wise pre-training of a stacked
autoencoder, and maximum-likelihood fitting of a small density model (the VQ-VAE's
autoregressive prior over codes). Model files describe models; their loops live here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import TrainConfig


def pretrain_greedy(model, x: torch.Tensor, config: TrainConfig, *, epochs: int | None = None,
                    dynamic_binarization: bool = False,
                    log: Callable[[str], None] | None = None) -> list[float]:
    """Greedy layer-wise pre-training of a stacked autoencoder (Bengio et al. 2007; Vincent
    et al. 2010, Sec. 3.5): each layer's shallow autoencoder (``model.layer_pairs()``) is
    trained for ``epochs`` epochs (default: the model's ``pretrain_epochs``) with Adam
    (``config``'s learning rate, betas, epsilon and batch size) on the codes of the layers
    below, with the model's input corruption. ``x: (N, *event_shape)`` values.

    Returns:
        Each layer's final mean training error.
    """
    from .models.autoencoder import corrupt, reconstruction_error
    from .observations import observation_for
    from .training import resolve_device

    epochs = model.options.pretrain_epochs if epochs is None else epochs
    device = resolve_device(config.device)
    model.to(device)
    h = x.to(device, torch.float32).flatten(1)
    errors = []
    for level, (enc, dec, likelihood) in enumerate(model.layer_pairs()):
        observation = observation_for(likelihood, (h.shape[1],))
        params = [*enc.parameters(), *dec.parameters()]
        opt = torch.optim.Adam(params, lr=config.lr, betas=(config.adam_beta1,
                                                            config.adam_beta2),
                               eps=config.adam_eps)
        n, b = h.shape[0], config.batch_size
        total = torch.zeros((), device=device)
        for _ in range(epochs):
            perm = torch.randperm(n, device=device)
            total = torch.zeros((), device=device)
            for i in range(0, n, b):
                xb = h[perm[i:i + b]]
                if level == 0 and dynamic_binarization:
                    xb = torch.bernoulli(xb)
                err = reconstruction_error(dec(enc(corrupt(xb, model.noise, model.noise_level))),
                                           xb, observation)
                opt.zero_grad(set_to_none=True)
                err.mean().backward()
                opt.step()
                total += err.detach().sum()
        errors.append(float(total) / n)
        if log:
            log(f"pre-trained layer {level + 1}: reconstruction error {errors[-1]:.3f}")
        with torch.no_grad():
            h = torch.cat([enc(h[i:i + 2000]) for i in range(0, n, 2000)])
    return errors


def maximize_log_likelihood(module: nn.Module, data: torch.Tensor, *, steps: int = 2000,
                            batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.0,
                            seed: int = 0) -> nn.Module:
    """Fit ``module`` (a density with ``log_prob(batch) -> (B,)``) to ``data: (N, ...)`` by
    maximum likelihood: ``steps`` Adam steps on mean log p of ``batch_size`` rows drawn with
    replacement by a generator seeded with ``seed``. Returns ``module``."""
    g = torch.Generator(device=data.device).manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            idx = torch.randint(0, data.shape[0], (batch_size,), generator=g,
                                device=data.device)
            loss = -module.log_prob(data[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return module
