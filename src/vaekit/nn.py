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

from .precision import network_call
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
        out = network_call(super().forward, x)
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


class ResidualBlock(nn.Module):
    """x + conv1x1(act(conv3x3(act(x)))), channels kept (He et al. 2016's pre-activation
    block, as in the VQ-VAE's encoder and decoder, van den Oord et al. 2017, Sec. 4)."""

    def __init__(self, channels: int, activation: str) -> None:
        super().__init__()
        act = ACTIVATIONS[activation]
        self.body = nn.Sequential(act(), nn.Conv2d(channels, channels, 3, padding=1), act(),
                                  nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _downsampled(size: tuple[int, int], steps: int) -> list[tuple[int, int]]:
    """Spatial sizes after each 4x4 stride-2 padding-1 convolution: floor(s / 2)."""
    sizes = [size]
    for _ in range(steps):
        h, w = sizes[-1]
        if h < 2 or w < 2:
            raise ValueError(f"--conv-channels has {steps} layers, too many for images of "
                             f"{size[0]}x{size[1]} (each halves the size)")
        sizes.append((h // 2, w // 2))
    return sizes


class ConvEncoder(nn.Module):
    """Images ``(..., C, H, W)`` -> vectors ``(..., F)``: one 4x4 stride-2 convolution per entry
    of ``channels`` (each halves H and W; DCGAN's encoder, Radford et al. 2016), then
    ``residual_blocks`` residual blocks, then a linear layer."""

    def __init__(self, in_shape: Shape, out_features: int, channels: Sequence[int],
                 activation: str, residual_blocks: int = 0,
                 activate_output: bool = False) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"a convolutional encoder needs images (C, H, W), got shape "
                             f"{in_shape}; use --net mlp")
        act = ACTIVATIONS[activation]
        self.in_shape = tuple(in_shape)
        sizes = _downsampled(tuple(in_shape[1:]), len(channels))
        layers: list[nn.Module] = []
        prev = in_shape[0]
        for c in channels:
            layers += [nn.Conv2d(prev, c, 4, stride=2, padding=1), act()]
            prev = c
        layers += [ResidualBlock(prev, activation) for _ in range(residual_blocks)]
        self.convs = nn.Sequential(*layers)
        self.linear = nn.Linear(prev * sizes[-1][0] * sizes[-1][1], out_features)
        self.out_act = act() if activate_output else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-3:]) != self.in_shape:
            raise ValueError(f"this network takes images of shape (..., "
                             f"{', '.join(map(str, self.in_shape))}) but got {tuple(x.shape)}")
        lead = x.shape[:-3]
        return network_call(self._forward, x.reshape(-1, *self.in_shape)).reshape(*lead, -1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_act(self.linear(self.convs(x).flatten(1)))


class ConvDecoder(nn.Module):
    """Vectors ``(..., L)`` -> images ``(..., P, H, W)``: a linear layer to the smallest
    feature map, ``residual_blocks`` residual blocks, then one 4x4 stride-2 transposed
    convolution per entry of ``channels`` (reversed), the last one to the P output channels
    (DCGAN's generator, Radford et al. 2016; output padding makes odd sizes come out exact)."""

    def __init__(self, in_features: int, out_shape: Shape, channels: Sequence[int],
                 activation: str, residual_blocks: int = 0) -> None:
        super().__init__()
        if len(out_shape) != 3:
            raise ValueError(f"a convolutional decoder needs images (C, H, W), got shape "
                             f"{out_shape}; use --net mlp")
        act = ACTIVATIONS[activation]
        self.out_shape = tuple(out_shape)
        sizes = _downsampled(tuple(out_shape[1:]), len(channels))
        chans = list(channels)[::-1]                    # widest first, at the smallest size
        self.start = (chans[0], *sizes[-1])
        self.linear = nn.Linear(in_features, math.prod(self.start))
        layers: list[nn.Module] = [act()]
        layers += [ResidualBlock(chans[0], activation) for _ in range(residual_blocks)]
        outs = chans[1:] + [out_shape[0]]
        for i, (c_in, c_out) in enumerate(zip(chans, outs, strict=True)):
            target, current = sizes[-2 - i], sizes[-1 - i]
            pad = (target[0] - 2 * current[0], target[1] - 2 * current[1])
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1,
                                             output_padding=pad))
            if i < len(outs) - 1:
                layers.append(act())
        self.convs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        return network_call(self._forward, z.reshape(-1, z.shape[-1])).reshape(
            *lead, *self.out_shape)

    def _forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.convs(self.linear(z).view(-1, *self.start))

    def output_bias(self) -> torch.Tensor:
        """The last transposed convolution's bias, one per output channel: ``(P, 1, 1)``."""
        return self.convs[-1].bias.view(-1, 1, 1)


NetworkBuilder = Callable[..., nn.Module]
NETWORKS: Registry[NetworkBuilder] = Registry("net")


@NETWORKS.decorator("mlp")
def build_mlp(in_shape: Shape, out_shape: Shape, options, reverse: bool = False,
              activate_output: bool = False) -> MLP:
    """An MLP with the family's ``hidden_sizes`` and ``activation``; ``reverse`` uses the
    widths in reverse order (a decoder mirroring its encoder)."""
    hidden = tuple(reversed(options.hidden_sizes)) if reverse else tuple(options.hidden_sizes)
    return MLP(in_shape, hidden, out_shape, options.activation, activate_output)


@NETWORKS.decorator("conv")
def build_conv(in_shape: Shape, out_shape: Shape, options, reverse: bool = False,
               activate_output: bool = False) -> nn.Module:
    """A convolutional encoder (images -> vectors) or, with ``reverse``, decoder (vectors ->
    images), from the family's ``conv_channels``, ``conv_residual_blocks`` and ``activation``."""
    if reverse:
        return ConvDecoder(math.prod(in_shape), out_shape, options.conv_channels,
                           options.activation, options.conv_residual_blocks)
    return ConvEncoder(in_shape, math.prod(out_shape), options.conv_channels, options.activation,
                       options.conv_residual_blocks, activate_output)


def resolve_network(name: str, event_shape: Shape) -> str:
    """``auto``: a convolutional network for colour images ``(3, H, W)``, an MLP otherwise
    (flat data and grey images, where MLPs are the field's reference models)."""
    if name != "auto":
        return name
    shape = as_shape(event_shape)
    return "conv" if len(shape) == 3 and shape[0] == 3 else "mlp"


def build_network(name: str, in_shape: Shape, out_shape: Shape, options,
                  reverse: bool = False, event_shape: Shape | None = None,
                  activate_output: bool = False) -> nn.Module:
    """The network ``name`` of :data:`NETWORKS` (``auto``: :func:`resolve_network` for the
    data's ``event_shape``) from ``in_shape`` to ``out_shape``."""
    if name == "auto":
        name = resolve_network(name, event_shape if event_shape is not None
                               else (out_shape if reverse else in_shape))
    return NETWORKS.get(name)(as_shape(in_shape), as_shape(out_shape), options, reverse,
                              activate_output)
