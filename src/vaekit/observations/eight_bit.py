"""Likelihoods of 8-bit data: every value is a level k/255, k = 0..255 (grey levels, RGB
sub-pixels), so that log p(x) is a log-probability and -log p(x) / (D ln 2) is the bits per
dimension the field reports.

``categorical``
    A 256-way categorical per sub-pixel (van den Oord et al. 2016, "Pixel recurrent neural
    networks", Sec. 3.2: the softmax over 256 values). The decoder outputs 256 logits per
    sub-pixel.
``discretized-logistic``
    A mixture of M discretized logistics per pixel, its colour channels coupled linearly
    (Salimans, Karpathy, Chen & Kingma 2017, "PixelCNN++", Sec. 2.1-2.2, eqs. 2-3): on values
    scaled to [-1, 1], P(x) = sum_m pi_m prod_c [sigma((x_c + 1/255 - mu_mc) / s_mc) -
    sigma((x_c - 1/255 - mu_mc) / s_mc)], the edge bins (x = 0 and x = 255) taking the tails,
    with mu_m,G = mu_m,G + a_m x_R and mu_m,B = mu_m,B + b_m x_R + c_m x_G. Each bin's mass is
    computed exactly (a stable log of a difference of sigmoids), without PixelCNN++'s density
    approximation for small masses, so the 256 masses of a sub-pixel sum to 1.
``dequantized-gaussian``, ``dequantized-logistic``
    A density p(y) of uniformly dequantized values y = (k + u) / 256, u ~ U(0, 1) (Theis, van
    den Oord & Bethge 2016, "A note on the evaluation of generative models", Sec. 3.1):
    log P(k) >= E_u[log p((k + u) / 256)] - D log 256, a lower bound on the discrete
    log-probability, estimated with a fresh u at every evaluation (importance-sampled
    bounds with one u per sample stay bounds). One scale shared by all values, learned or
    fixed (``--decoder-std``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

from ..errors import DataError
from . import GaussianObservation, Observation, register_observation

LEVELS = 256


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """Values k/255 -> the integers k (int64)."""
    return (x * (LEVELS - 1)).round().long()


def check_eight_bit(name: str, what: str, levels: int | None) -> None:
    if levels != LEVELS:
        kind = "real numbers" if levels is None else f"{levels} levels"
        raise DataError(
            f"{what} holds {kind}, but --likelihood {name} models 8-bit values (levels k/255, "
            "k = 0..255); store the images as uint8 0..255, or choose --likelihood bernoulli "
            "or gaussian")


def _log1mexp(t: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(t)) for t < 0, accurate at both ends (Maechler 2012). Each branch sees only
    the inputs it is used for, so that the other's infinite derivative does not reach the
    gradient as NaN."""
    near = t > -math.log(2)
    return torch.where(near, torch.log(-torch.expm1(torch.where(near, t, -1.0))),
                       torch.log1p(-torch.exp(torch.where(near, -1.0, t))))


def log_sigmoid_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(a) - sigmoid(b)) for a > b, stable in both tails:
    sigmoid(a) - sigmoid(b) = (e^a - e^b) / ((1 + e^a)(1 + e^b))."""
    return a + _log1mexp(b - a) - F.softplus(a) - F.softplus(b)


class _EightBit(Observation):
    discrete = True

    @classmethod
    def check_data(cls, what: str, lo: float, hi: float, levels: int | None = None) -> None:
        check_eight_bit(cls.name, what, levels)

    def _layout(self) -> tuple[int, tuple[int, ...]]:
        """(channels C, spatial shape): ``(C, H, W)`` -> (C, (H, W)); ``(D,)`` -> (1, (D,))."""
        ev = self.event_shape
        return (ev[0], ev[1:]) if len(ev) == 3 else (1, ev)


class _Quantized(Distribution):
    """Base of the distributions over levels k/255 with event shape ``event_shape``."""

    arg_constraints: dict = {}
    support = constraints.real

    def __init__(self, batch_shape, event_shape) -> None:
        super().__init__(torch.Size(batch_shape), torch.Size(event_shape), validate_args=False)

    def _sum_event(self, t: torch.Tensor) -> torch.Tensor:
        return t.flatten(-len(self.event_shape)).sum(-1) if self.event_shape else t


# --------------------------------------------------------------------------- categorical
class QuantizedCategorical(_Quantized):
    """Independent 256-way categoricals over the values k/255; ``logits: (..., *event, 256)``."""

    def __init__(self, logits: torch.Tensor, event_ndims: int) -> None:
        self.logits = logits
        shape = logits.shape[:-1]
        super().__init__(shape[:len(shape) - event_ndims], shape[len(shape) - event_ndims:])

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        k = to_levels(value)
        shape = torch.broadcast_shapes(k.shape, self.logits.shape[:-1])
        log_p = self.logits.log_softmax(-1).expand(*shape, LEVELS)
        return self._sum_event(log_p.gather(-1, k.expand(shape).unsqueeze(-1)).squeeze(-1))

    @property
    def mean(self) -> torch.Tensor:
        levels = torch.arange(LEVELS, device=self.logits.device, dtype=self.logits.dtype)
        return (self.logits.softmax(-1) * levels).sum(-1) / (LEVELS - 1)

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            k = torch.distributions.Categorical(logits=self.logits).sample(sample_shape)
        return k.to(self.logits.dtype) / (LEVELS - 1)


@register_observation("categorical")
class CategoricalObservation(_EightBit):
    """A 256-way categorical per sub-pixel; the decoder outputs ``(256 C, H, W)`` logits for
    images (``(256, D)`` for vectors), channel-first so that a convolution can produce them."""

    @property
    def param_shape(self) -> tuple[int, ...]:
        c, spatial = self._layout()
        return (LEVELS * c, *spatial) if len(self.event_shape) == 3 else (LEVELS, *spatial)

    def _logits(self, out: torch.Tensor) -> torch.Tensor:
        """``(..., *param_shape)`` -> ``(..., *event_shape, 256)``."""
        if len(self.event_shape) == 3:
            c = self.event_shape[0]
            return out.unflatten(-3, (c, LEVELS)).movedim(-3, -1)
        return out.movedim(-2, -1)

    def forward(self, out: torch.Tensor) -> QuantizedCategorical:
        return QuantizedCategorical(self._logits(out), len(self.event_shape))

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self(out).mean


# --------------------------------------------------------------------------- PixelCNN++
class DiscretizedLogisticMixture(_Quantized):
    """Salimans et al. (2017)'s mixture of discretized logistics per pixel, with linear
    coupling of the colour channels (see the module docstring).

    Args:
        logit_probs: ``(..., M, *spatial)`` mixture logits.
        means, log_scales: ``(..., M, C, *spatial)`` on the [-1, 1] scale (log-scales
            clamped to [-7, 7]: -7 as PixelCNN++ does; e^7 is flat on [-1, 1]).
        coeffs: ``(..., M, C (C - 1) / 2, *spatial)`` coupling coefficients (after tanh).
        nspatial: how many spatial dimensions there are (2 for images, 1 for vectors).
        channel_first: the event is ``(C, *spatial)`` (images); else ``spatial`` (C = 1).
    """

    def __init__(self, logit_probs, means, log_scales, coeffs, nspatial: int,
                 channel_first: bool) -> None:
        self.logit_probs, self.means, self.coeffs = logit_probs, means, coeffs
        self.log_scales = log_scales.clamp(-7.0, 7.0)
        self.channel_first = channel_first
        spatial = logit_probs.shape[logit_probs.dim() - nspatial:]
        c = means.shape[-nspatial - 1]
        event = (c, *spatial) if channel_first else tuple(spatial)
        super().__init__(logit_probs.shape[:logit_probs.dim() - nspatial - 1], event)
        self._c, self._nspatial = c, nspatial

    def _centres(self, xs: torch.Tensor) -> torch.Tensor:
        """The channels' logistic centres given the previous channels' values ``xs`` (the
        linear coupling; ``xs``: ``(..., 1, C, *spatial)`` on [-1, 1])."""
        c, m = self._c, self.means
        if c == 1:
            return m
        ch = lambda t, i: t.select(-self._nspatial - 1, i)            # noqa: E731
        centres = [ch(m, 0)]
        k = 0
        for j in range(1, c):
            mu = ch(m, j)
            for i in range(j):
                mu = mu + ch(self.coeffs, k) * ch(xs, i)
                k += 1
            centres.append(mu)
        return torch.stack(torch.broadcast_tensors(*centres), -self._nspatial - 1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        k = to_levels(value)
        xs = (2.0 * k.to(self.means.dtype) / (LEVELS - 1) - 1.0)
        if not self.channel_first:
            xs = xs.unsqueeze(-self._nspatial - 1)                     # (..., 1, *spatial)
        xs = xs.unsqueeze(-self._nspatial - 2)                         # (..., 1, C, *spatial)
        kk = k if self.channel_first else k.unsqueeze(-self._nspatial - 1)
        kk = kk.unsqueeze(-self._nspatial - 2)
        inv_s = torch.exp(-self.log_scales)
        centred = xs - self._centres(xs)
        plus = inv_s * (centred + 1.0 / (LEVELS - 1))
        minus = inv_s * (centred - 1.0 / (LEVELS - 1))
        lp = torch.where(kk == 0, F.logsigmoid(plus),
                         torch.where(kk == LEVELS - 1, F.logsigmoid(-minus),
                                     log_sigmoid_difference(plus, minus)))
        cd = -self._nspatial - 1                                       # the component dim
        per_component = lp.sum(cd) + self.logit_probs.log_softmax(cd)  # (..., M, *spatial)
        return self._sum_event(per_component.logsumexp(cd))

    def _sum_event(self, t: torch.Tensor) -> torch.Tensor:
        return t.flatten(-self._nspatial).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        """The mixture of the components' centres (with the coupling applied to the centres
        of the previous channels), clipped and mapped to [0, 1]: an approximation of E[x]
        for figures."""
        pi = self.logit_probs.softmax(-self._nspatial - 1).unsqueeze(-self._nspatial - 1)
        mu = self.means
        if self._c > 1:                          # couple with the centres themselves
            mu = self._centres((pi * mu).sum(-self._nspatial - 2, keepdim=True).clamp(-1, 1))
        x = (pi * mu).sum(-self._nspatial - 2).clamp(-1, 1)
        x = (x + 1) / 2
        return x if self.channel_first else x.squeeze(-self._nspatial - 1)

    def sample(self, sample_shape=()) -> torch.Tensor:
        """Ancestral draws: a component per pixel, then the channels in order, each a
        logistic draw (coupled to the channels drawn before it) quantized to its level."""
        with torch.no_grad():
            shape = torch.Size(sample_shape)
            cd = -self._nspatial - 1                                     # the component dim
            logits = self.logit_probs.expand(shape + self.logit_probs.shape)
            comp = torch.distributions.Categorical(logits=logits.movedim(cd, -1)).sample()
            onehot = F.one_hot(comp, self.logit_probs.shape[cd]).movedim(-1, cd)
            onehot = onehot.to(self.means.dtype).unsqueeze(cd)             # (.., M, 1, *sp)

            def chosen(t: torch.Tensor) -> torch.Tensor:                    # (.., C', *sp)
                return (t.expand(shape + t.shape) * onehot).sum(cd - 1)

            means, scales = chosen(self.means), chosen(self.log_scales).exp()
            coeffs = chosen(self.coeffs) if self._c > 1 else None
            values: list[torch.Tensor] = []
            for j in range(self._c):
                mu = means.select(cd, j)
                for i in range(j):              # coefficient of (j, i): j (j - 1) / 2 + i
                    mu = mu + coeffs.select(cd, j * (j - 1) // 2 + i) * values[i]
                u = torch.rand_like(mu).clamp(1e-5, 1 - 1e-5)
                x = mu + scales.select(cd, j) * (torch.log(u) - torch.log1p(-u))
                values.append(x.clamp(-1, 1))
            x = torch.stack(values, cd)
            x = ((x + 1) / 2 * (LEVELS - 1)).round() / (LEVELS - 1)
            return x if self.channel_first else x.squeeze(cd)


@register_observation("discretized-logistic")
class DiscretizedLogisticObservation(_EightBit):
    """PixelCNN++'s mixture of ``logistic_components`` (M) discretized logistics per pixel.
    The decoder outputs ``M (1 + 2C + C (C - 1) / 2)`` parameters per pixel, channel-first
    (``(10 M, H, W)`` for RGB, ``(3 M, H, W)`` for grey): mixture logits, centres,
    log-scales, coupling coefficients."""

    def __init__(self, event_shape: Sequence[int], components: int = 10) -> None:
        super().__init__(event_shape)
        self.components = int(components)
        c, _ = self._layout()
        self._sizes = [self.components, self.components * c, self.components * c,
                       self.components * (c * (c - 1) // 2)]

    @classmethod
    def from_options(cls, event_shape, options) -> DiscretizedLogisticObservation:
        return cls(event_shape, options.logistic_components)

    @property
    def param_shape(self) -> tuple[int, ...]:
        _, spatial = self._layout()
        return (sum(self._sizes), *spatial)

    def forward(self, out: torch.Tensor) -> DiscretizedLogisticMixture:
        c, spatial = self._layout()
        m, d = self.components, -len(spatial) - 1
        logits, means, log_scales, coeffs = out.split(self._sizes, dim=d)
        return DiscretizedLogisticMixture(
            logits, means.unflatten(d, (m, c)), log_scales.unflatten(d, (m, c)),
            torch.tanh(coeffs).unflatten(d, (m, c * (c - 1) // 2)), len(spatial),
            channel_first=len(self.event_shape) == 3)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self(out).mean

    def initial_params(self, train_mean: torch.Tensor,
                       train_sd: torch.Tensor | None = None) -> torch.Tensor:
        """Every component centred at the training mean (on the [-1, 1] scale). With the
        per-value standard deviations ``train_sd``, every component's scale in a channel is
        the logistic's that has the channel's pooled spread (root mean square of its values'
        sd): s = sd sqrt(3) / pi (a logistic's sd is s pi / sqrt(3)), log s clipped to
        [-7, 0]; without them, s = e^0, which spans the whole [-1, 1] range and made the
        colour of RGB images slow to learn (README, examples/colour_learning.py)."""
        c, spatial = self._layout()
        target = torch.zeros(self.param_shape, dtype=train_mean.dtype, device=train_mean.device)
        centre = (2 * train_mean - 1).reshape(c, *spatial)
        m = self.components
        target[m:m + m * c] = centre.unsqueeze(0).expand(m, c, *spatial).reshape(m * c, *spatial)
        if train_sd is not None:
            sd = (2 * train_sd).reshape(c, -1).square().mean(-1).sqrt()          # (C,)
            log_s = torch.log(sd * math.sqrt(3) / math.pi).clamp(-7.0, 0.0)
            target[m + m * c:m + 2 * m * c] = log_s.repeat(m).view(-1, *([1] * len(spatial)))
        return target

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, components={self.components}"


# --------------------------------------------------------------------------- dequantized
class Dequantized(_Quantized):
    """log P(k) >= E_u[log p((k + u) / 256)] - D log 256 for a base density ``log_density(y)``
    of values in [0, 1] (elementwise, the shape of ``loc``), estimated with one draw of u."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, kind: str,
                 event_ndims: int) -> None:
        self.loc, self.scale, self.kind = loc, scale.expand_as(loc), kind
        super().__init__(loc.shape[:loc.dim() - event_ndims], loc.shape[loc.dim() - event_ndims:])

    def _log_density(self, y: torch.Tensor) -> torch.Tensor:
        z = (y - self.loc) / self.scale
        if self.kind == "gaussian":
            return -0.5 * z.square() - torch.log(self.scale) - 0.5 * math.log(2 * math.pi)
        return -z - torch.log(self.scale) - 2 * F.softplus(-z)       # logistic

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        k = to_levels(value).to(self.loc.dtype)
        y = (k + torch.rand(torch.broadcast_shapes(k.shape, self.loc.shape), dtype=k.dtype,
                            device=k.device)) / LEVELS
        d = math.prod(self.event_shape)
        return self._sum_event(self._log_density(y)) - d * math.log(LEVELS)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc.clamp(0, 1)

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.loc.shape
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            if self.kind == "gaussian":
                e = torch.erfinv(2 * u - 1) * math.sqrt(2)
            else:
                e = torch.log(u) - torch.log1p(-u)
            y = self.loc + self.scale * e
            k = (y * LEVELS).floor().clamp(0, LEVELS - 1)
            return k / (LEVELS - 1)


@register_observation("dequantized-gaussian")
class DequantizedGaussianObservation(GaussianObservation):
    """N(out, sigma^2) density of dequantized values y = (k + u) / 256 (module docstring);
    sigma shared, learned or fixed (``--decoder-std``, ``--learn-decoder-std``,
    ``--decoder-std-floor``). A bound on the 8-bit log-probability: bits per dimension."""

    discrete = True
    kind = "gaussian"

    @classmethod
    def check_data(cls, what: str, lo: float, hi: float, levels: int | None = None) -> None:
        check_eight_bit(cls.name, what, levels)

    def forward(self, out: torch.Tensor) -> Dequantized:
        return Dequantized(out, self.std(), self.kind, len(self.event_shape))

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out.clamp(0, 1)


@register_observation("dequantized-logistic")
class DequantizedLogisticObservation(DequantizedGaussianObservation):
    """A logistic density (location out, scale shared: ``--decoder-std`` is its scale) of
    dequantized values y = (k + u) / 256."""

    kind = "logistic"
