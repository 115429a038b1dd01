"""Observation models p(x | decoder output): one registry entry per likelihood.

An observation model owns everything that depends on what the data are: the shape of the
parameters the decoder network must output (:attr:`Observation.param_shape`), the density of x
given them, its mean (what figures show), the initial output bias (the decoder starts at the
data mean), the check of the data's range, and whether bits per dimension are meaningful.
Models hold one as the submodule ``observation`` (a learned scale is its parameter) and
never branch on the likelihood's name.

Registered (``--likelihood``):

``bernoulli``               binary data (grey levels in [0, 1] binarized)
``gaussian``                real values, one shared sigma (fixed or learned, with a floor)
``categorical``             8-bit data: a 256-way categorical per sub-pixel
``discretized-logistic``    8-bit data: a mixture of discretized logistics per pixel, the
                            colour channels coupled (PixelCNN++)
``dequantized-gaussian``    8-bit data: a Gaussian density of uniformly dequantized values
``dequantized-logistic``    8-bit data: a logistic density of uniformly dequantized values
``table``                   a table's rows: per column Gaussian, Bernoulli or categorical

Adding one is one class registered with ``@register_observation("name")`` (see
:mod:`.eight_bit` for examples).

References:
    Kingma & Welling (2014), Appendix C: Bernoulli and Gaussian MLP decoders.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from ..errors import DataError
from ..registry import Registry

OBSERVATIONS: Registry[type[Observation]] = Registry("likelihood")

GREY_LEVEL_MIN_MAX = 16     # whole numbers in [0, 255] whose maximum is at least this


def looks_like_grey_levels(hi: float) -> bool:
    """Whether non-negative values with maximum ``hi`` look like 0..255 grey levels (rather
    than [0, 1] intensities, or small counts and category codes such as 0..4)."""
    return GREY_LEVEL_MIN_MAX <= hi <= 255


def register_observation(name: str):
    """Class decorator: make an observation model available as ``--likelihood NAME``."""
    def deco(cls: type[Observation]) -> type[Observation]:
        cls.name = name
        return OBSERVATIONS.register(name, cls)
    return deco


def reduce_to(target: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Average ``target`` over the dimensions where ``shape`` (broadcastable to it) has 1:
    per-value initial parameters become per-channel ones for a convolution's bias."""
    dims = [i for i, (t, s) in enumerate(zip(target.shape, shape, strict=True))
            if s == 1 and t != 1]
    return target.mean(dims, keepdim=True) if dims else target


class Observation(nn.Module):
    """p(x | out) for data of shape ``(..., *event_shape)``, where ``out`` is the decoder
    network's output of shape ``(..., *param_shape)``.

    Class attributes:
        binary: the density is over {0, 1}; grey levels in [0, 1] are binarized for it.
        discrete: a probability mass (or a bound on one), so -log p(x) / (D ln 2) is bits
            per dimension.
    """

    name: ClassVar[str]
    binary: ClassVar[bool] = False
    discrete: ClassVar[bool] = False

    def __init__(self, event_shape: Sequence[int]) -> None:
        super().__init__()
        self.event_shape = tuple(int(s) for s in event_shape)

    @classmethod
    def from_options(cls, event_shape: Sequence[int], options) -> Observation:
        """Build from a family's :class:`~vaekit.models.base.DecoderOptions`."""
        return cls(event_shape)

    @property
    def param_shape(self) -> tuple[int, ...]:
        """What the decoder network outputs per example: ``event_shape`` (one parameter per
        value) unless the model needs more (channel-first for images: ``(P, H, W)``)."""
        return self.event_shape

    def forward(self, out: torch.Tensor) -> Distribution:
        """p(x | out): batch shape ``out.shape[:-len(param_shape)]``, event ``event_shape``."""
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """E[x | out], ``(..., *event_shape)``."""
        raise NotImplementedError

    def initial_params(self, train_mean: torch.Tensor,
                       train_sd: torch.Tensor | None = None) -> torch.Tensor | None:
        """The decoder output ``(*param_shape)`` that starts the model at the data, from the
        per-value training mean (and standard deviation, for the models with a scale in
        their output: ``None`` where not known); ``None`` leaves the network's bias as it
        is."""
        return None

    @torch.no_grad()
    def init_bias(self, bias: torch.Tensor, train_mean: torch.Tensor,
                  train_sd: torch.Tensor | None = None) -> None:
        """Set the decoder's output bias so that it starts at the data (``bias``: a view of
        the output layer's bias broadcastable to ``param_shape``, e.g. per value for an MLP,
        per channel for a convolution; ``train_mean``, ``train_sd``: any shape with the D
        values)."""
        if train_sd is not None:
            train_sd = train_sd.reshape(self.event_shape).to(bias)
        target = self.initial_params(train_mean.reshape(self.event_shape).to(bias), train_sd)
        if target is not None:
            bias.copy_(reduce_to(target, bias.shape))

    @classmethod
    def options_for(cls, dataset) -> dict:
        """Decoder options that this observation model takes from the data (a table's column
        layout), as ``{option: value}``; none by default.

        Raises:
            ConfigError: data this model cannot describe at all.
        """
        return {}

    @classmethod
    def check_data(cls, what: str, lo: float, hi: float, levels: int | None = None) -> None:
        """Raise :class:`DataError` when data with values in ``[lo, hi]`` cannot be modelled.
        ``levels``: how many values the stored data can take (256 for 8-bit grey levels, 2
        for 0/1 bytes, ``None`` for real numbers)."""

    @classmethod
    def bits_per_dim(cls, log_likelihood: float | None, num_values: int) -> float | None:
        """-log p(x) / (D ln 2) for a probability mass over D values; ``None`` for a density
        (its value depends on the data's scale and is not comparable across datasets)."""
        if not cls.discrete or log_likelihood is None:
            return None
        return -log_likelihood / (num_values * math.log(2))

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}"


def _flat_dims(event_shape: Sequence[int]) -> int:
    return len(tuple(event_shape))


@register_observation("bernoulli")
class BernoulliObservation(Observation):
    """Independent Bernoulli(sigmoid(out)) over the event: binary data (and grey levels in
    [0, 1], binarized). The decoder outputs logits."""

    binary = True
    discrete = True

    def forward(self, out: torch.Tensor) -> Independent:
        return Independent(Bernoulli(logits=out, validate_args=False),
                           _flat_dims(self.event_shape), validate_args=False)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)

    def initial_params(self, train_mean: torch.Tensor,
                       train_sd: torch.Tensor | None = None) -> torch.Tensor:
        """The logit of the per-value training mean, clipped to [1e-3, 1 - 1e-3] (as the
        IWAE code does)."""
        p = train_mean.clamp(1e-3, 1 - 1e-3)
        return torch.log(p) - torch.log1p(-p)

    @classmethod
    def check_data(cls, what: str, lo: float, hi: float, levels: int | None = None) -> None:
        if lo < 0 or hi > 1:
            if lo >= 0 and looks_like_grey_levels(hi):
                hint = (" (they look like 0..255 grey levels: divide by 255, or save them as "
                        "uint8, which vaekit scales)")
            elif lo >= 0 and 1 < hi < GREY_LEVEL_MIN_MAX:
                hint = (f" (whole numbers up to {hi:g} look like counts or category codes, not "
                        "grey levels: a CSV table models categories as such)")
            else:
                hint = ""
            raise DataError(
                f"{what} values lie in [{lo:g}, {hi:g}] but a Bernoulli decoder needs values in "
                f"[0, 1]{hint}; rescale the data to [0, 1] (then binarization applies) or use "
                "--likelihood gaussian")


@register_observation("gaussian")
class GaussianObservation(Observation):
    """N(out, sigma^2 I) over the event, one sigma shared by all values: learned (a
    parameter, ``log_std``) or fixed; with ``std_floor`` > 0, sigma = max(exp(log_std),
    std_floor), which keeps a learned sigma from collapsing onto data with a
    constant pixel.

    A density of real values: its log-likelihood is not in bits per dimension (see
    :meth:`Observation.bits_per_dim`)."""

    def __init__(self, event_shape: Sequence[int], std: float = 1.0, learn_std: bool = False,
                 std_floor: float = 0.0) -> None:
        super().__init__(event_shape)
        log_std = torch.tensor(math.log(std))
        if learn_std:
            self.log_std = nn.Parameter(log_std)
        else:          # fixed: rebuilt from the options, not part of the checkpoint
            self.register_buffer("log_std", log_std, persistent=False)
        self.std_floor = float(std_floor)

    @classmethod
    def from_options(cls, event_shape: Sequence[int], options) -> GaussianObservation:
        return cls(event_shape, options.decoder_std, options.learn_decoder_std,
                   options.decoder_std_floor)

    def std(self) -> torch.Tensor:
        s = self.log_std.exp()
        return s.clamp_min(self.std_floor) if self.std_floor > 0 else s

    def forward(self, out: torch.Tensor) -> Independent:
        return Independent(Normal(out, self.std().expand_as(out), validate_args=False),
                           _flat_dims(self.event_shape), validate_args=False)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def initial_params(self, train_mean: torch.Tensor,
                       train_sd: torch.Tensor | None = None) -> torch.Tensor:
        return train_mean

    def extra_repr(self) -> str:
        return (f"event_shape={self.event_shape}, learned={isinstance(self.log_std, nn.Parameter)}"
                f", std_floor={self.std_floor:g}")


AUTO = "auto"


def auto_likelihood(dataset) -> str:
    """What ``--likelihood auto`` takes for a :class:`~vaekit.data.Dataset`: ``table`` for a
    table, ``discretized-logistic`` for 8-bit colour images (the field's likelihood for them,
    in bits/dim), ``gaussian`` for real values that are not all within [0, 1], and
    ``bernoulli`` otherwise (binary data, and grey levels, dynamically binarized: the IWAE
    paper's setting)."""
    if dataset.table is not None:
        return "table"
    if dataset.levels == 256 and dataset.channels == 3 and len(dataset.event_shape) == 3:
        return "discretized-logistic"
    if dataset.levels is None and not all(lo >= 0 and hi <= 1 for lo, hi in
                                          (dataset.value_range(s) for s in
                                           ("train", "valid", "test"))):
        return "gaussian"
    return "bernoulli"


def observation_for(name: str, event_shape: Sequence[int], options=None) -> Observation:
    """The observation model ``name`` for data of ``event_shape``, built from a family's
    decoder options (or with its defaults when ``options`` is None). ``auto``, which is
    resolved from the data when a run is trained (:func:`auto_likelihood`), builds a
    Bernoulli decoder when no data are at hand."""
    cls = OBSERVATIONS.get("bernoulli" if name == AUTO else name)
    return cls.from_options(event_shape, options) if options is not None else cls(event_shape)


from . import eight_bit, table  # noqa: E402,F401  (register the 8-bit and table likelihoods)

__all__ = ["OBSERVATIONS", "BernoulliObservation", "GaussianObservation", "Observation",
           "auto_likelihood", "observation_for", "reduce_to", "register_observation"]
