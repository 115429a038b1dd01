"""Network builders: plain ``nn.Module`` objects with no loss inside."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int,
        activation: str = "tanh") -> nn.Sequential:
    """A multilayer perceptron ``in_dim -> hidden_sizes... -> out_dim``, linear output.

    Maps ``(..., in_dim)`` to ``(..., out_dim)``. Weights use PyTorch's default initialisation.

    Raises:
        KeyError: unknown ``activation`` (see :data:`ACTIVATIONS`).
    """
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden_sizes:
        layers += [nn.Linear(d, h), act()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


@torch.no_grad()
def init_output_bias(layer: nn.Linear, train_mean: torch.Tensor, likelihood: str) -> None:
    """Start a decoder at the data: its output bias becomes the logit of the per-dimension
    training mean (clipped to [1e-3, 1 - 1e-3]) for a Bernoulli likelihood, as the IWAE code
    does, or the mean itself for a Gaussian one. ``train_mean: (D,)``."""
    if likelihood == "bernoulli":
        p = train_mean.clamp(1e-3, 1 - 1e-3)
        layer.bias.copy_(torch.log(p) - torch.log1p(-p))
    else:
        layer.bias.copy_(train_mean)
