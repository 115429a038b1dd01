"""Network builders: plain ``nn.Module`` objects with no loss inside.

Networks map a tensor with trailing shape ``in_shape`` to one with trailing shape
``out_shape``; whatever comes before (samples, batch) is carried through. They are chosen
by name from :data:`NETWORKS` (``--net``); the next network (convolutional stacks) is one
more builder registered there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .registry import Registry

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}

Shape = tuple[int, ...]


def as_shape(s: int | Sequence[int]) -> Shape:
    """``784`` -> ``(784,)``; a sequence -> a tuple of ints."""
    return (int(s),) if isinstance(s, int) else tuple(int(v) for v in s)


class MLP(nn.Sequential):
    """A multilayer perceptron ``in_shape -> hidden_sizes... -> out_shape``, linear output.

    Maps ``(..., *in_shape)`` to ``(..., *out_shape)``: the trailing input dimensions are
    flattened (an image ``(C, H, W)`` becomes ``C*H*W`` inputs) and the output is reshaped.
    Its layers are those of an ``nn.Sequential`` (``0.weight``, ``0.bias``, ``2.weight``, ...),
    with PyTorch's default initialisation.
    """

    def __init__(self, in_shape: int | Sequence[int], hidden_sizes: Sequence[int],
                 out_shape: int | Sequence[int], activation: str = "tanh",
                 activate_output: bool = False) -> None:
        act = ACTIVATIONS[activation]
        self_in, self_out = as_shape(in_shape), as_shape(out_shape)
        layers: list[nn.Module] = []
        d = math.prod(self_in)
        for h in hidden_sizes:
            layers += [nn.Linear(d, h), act()]
            d = h
        layers.append(nn.Linear(d, math.prod(self_out)))
        if activate_output:
            layers.append(act())
        super().__init__(*layers)
        self.in_shape, self.out_shape = self_in, self_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-len(self.in_shape):]) != self.in_shape:
            raise ValueError(
                f"this network takes inputs of shape (..., {', '.join(map(str, self.in_shape))}) "
                f"but got {tuple(x.shape)}: build the model for the data's event shape "
                "(vaekit.Dataset.event_shape)")
        if len(self.in_shape) > 1:
            x = x.flatten(-len(self.in_shape))
        out = super().forward(x)
        return out.unflatten(-1, self.out_shape) if len(self.out_shape) > 1 else out

    def output_layer(self) -> nn.Linear:
        """The last linear layer."""
        return next(m for m in reversed(self) if isinstance(m, nn.Linear))

    def output_bias(self) -> torch.Tensor:
        """The output layer's bias as a view of shape ``out_shape`` (one value per output):
        what an observation model sets to start a decoder at the data mean."""
        return self.output_layer().bias.view(self.out_shape)


def mlp(in_dim: int | Sequence[int], hidden_sizes: Sequence[int], out_dim: int | Sequence[int],
        activation: str = "tanh") -> MLP:
    """An :class:`MLP` ``in_dim -> hidden_sizes... -> out_dim`` with a linear output.

    Raises:
        KeyError: unknown ``activation`` (see :data:`ACTIVATIONS`).
    """
    return MLP(in_dim, hidden_sizes, out_dim, activation)


NetworkBuilder = Callable[..., nn.Module]
NETWORKS: Registry[NetworkBuilder] = Registry("net")


@NETWORKS.decorator("mlp")
def build_mlp(in_shape: Shape, out_shape: Shape, options, reverse: bool = False) -> MLP:
    """An MLP with the family's ``hidden_sizes`` and ``activation``; ``reverse`` uses the
    widths in reverse order (a decoder mirroring its encoder)."""
    hidden = tuple(reversed(options.hidden_sizes)) if reverse else tuple(options.hidden_sizes)
    return MLP(in_shape, hidden, out_shape, options.activation)


def build_network(name: str, in_shape: Shape, out_shape: Shape, options,
                  reverse: bool = False) -> nn.Module:
    """The network ``name`` of :data:`NETWORKS` from ``in_shape`` to ``out_shape``."""
    return NETWORKS.get(name)(as_shape(in_shape), as_shape(out_shape), options, reverse)
