"""The observation model of a table: one likelihood per column.

An encoded row (:mod:`vaekit.tables`) holds one value per real or binary column and a one-hot
block per categorical column; the decoder outputs one parameter per encoded value, in the
same places:

* a real column: the mean of a Gaussian whose sigma is the column's own (a learned
  parameter, starting at 1, the scale of standardised data);
* a binary column: a Bernoulli logit;
* a categorical column with K values: K logits of a categorical (softmax).

p(x|z) is the product over the columns (they are independent given z), as in the
heterogeneous-data VAEs of Nazabal et al. (2020), "Handling incomplete heterogeneous data
using VAEs", Pattern Recognition 107, Sec. 3 (without their missing-data mask). The log
density sums a Gaussian density (real columns) with probability masses (the others), so it is
a density in the real columns' units and has no bits-per-dimension reading.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Distribution, constraints

from ..errors import ConfigError
from . import Observation, register_observation

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def parse_layout(layout: str) -> list[tuple[str, int]]:
    """``"real,binary,categorical:3"`` -> ``[("real", 1), ("binary", 1), ("categorical",
    3)]``.

    Raises:
        ConfigError: an entry that is not ``real``, ``binary`` or ``categorical:K`` (K >= 2).
    """
    out = []
    for entry in (e.strip() for e in layout.split(",")):
        kind, _, k = entry.partition(":")
        if kind in ("real", "binary") and not k:
            out.append((kind, 1))
        elif kind == "categorical" and k.isdigit() and int(k) >= 2:
            out.append((kind, int(k)))
        else:
            raise ConfigError(f"table_columns: {entry!r} is not real, binary or categorical:K "
                              "(K >= 2)")
    return out


class _Layout:
    """Where each kind of column sits in an encoded row: index tensors of the real and
    binary entries, and of the categorical blocks grouped by their number of values K,
    ``{K: (G, K)}``."""

    def __init__(self, columns: list[tuple[str, int]]) -> None:
        real, binary, blocks, i = [], [], {}, 0
        for kind, width in columns:
            if kind == "real":
                real.append(i)
            elif kind == "binary":
                binary.append(i)
            else:
                blocks.setdefault(width, []).append(list(range(i, i + width)))
            i += width
        self.dim = i
        self.real = torch.tensor(real, dtype=torch.long)
        self.binary = torch.tensor(binary, dtype=torch.long)
        self.blocks = {k: torch.tensor(v, dtype=torch.long) for k, v in blocks.items()}


class TableDistribution(Distribution):
    """The product over a table's columns of a Gaussian (real), a Bernoulli (binary) and a
    categorical over one-hot blocks (categorical), parameterised by ``out: (..., D)`` (means,
    logits) and the real columns' ``std: (R,)``. Batch shape ``out.shape[:-1]``, event
    ``(D,)``."""

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, out: torch.Tensor, std: torch.Tensor, layout: _Layout) -> None:
        self.out, self.std, self.layout = out, std, layout
        super().__init__(out.shape[:-1], out.shape[-1:], validate_args=False)

    def _idx(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.out.device)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """sum over the columns of log N(x_j; mu_j, sigma_j^2) (real), x_j log p_j + (1 - x_j)
        log(1 - p_j) (binary), and the one-hot block's log-softmax entry (categorical)."""
        lay, out = self.layout, self.out
        total = torch.zeros(torch.broadcast_shapes(out.shape[:-1], value.shape[:-1]),
                            dtype=out.dtype, device=out.device)
        if lay.real.numel():
            r = self._idx(lay.real)
            z = (value[..., r] - out[..., r]) / self.std
            total = total + (-0.5 * z.square() - self.std.log() - _LOG_SQRT_2PI).sum(-1)
        if lay.binary.numel():
            b = self._idx(lay.binary)
            logit = out[..., b]
            total = total + (value[..., b] * logit - nn.functional.softplus(logit)).sum(-1)
        for idx in lay.blocks.values():
            i = self._idx(idx)
            total = total + (value[..., i] * out[..., i].log_softmax(-1)).sum((-1, -2))
        return total

    @property
    def mean(self) -> torch.Tensor:
        """Means of the real columns, probabilities of the binary ones, the categorical
        blocks' softmax."""
        lay, m = self.layout, self.out.clone()
        if lay.binary.numel():
            b = self._idx(lay.binary)
            m[..., b] = torch.sigmoid(self.out[..., b])
        for idx in lay.blocks.values():
            i = self._idx(idx)
            m[..., i] = self.out[..., i].softmax(-1)
        return m

    def sample(self, sample_shape=()) -> torch.Tensor:
        """Draws of encoded rows: Gaussian real values, 0/1 binary values, one-hot blocks."""
        with torch.no_grad():
            lay = self.layout
            out = self.out.expand(*sample_shape, *self.out.shape)
            x = out.clone()
            if lay.real.numel():
                r = self._idx(lay.real)
                x[..., r] = out[..., r] + self.std * torch.randn_like(out[..., r])
            if lay.binary.numel():
                b = self._idx(lay.binary)
                x[..., b] = torch.bernoulli(torch.sigmoid(out[..., b]))
            for k, idx in lay.blocks.items():
                i = self._idx(idx)
                logits = out[..., i]
                draw = torch.distributions.Categorical(logits=logits).sample()
                x[..., i] = nn.functional.one_hot(draw, k).to(x.dtype)
            return x


@register_observation("table")
class TableObservation(Observation):
    """A table's rows (:mod:`vaekit.tables`): per column a Gaussian, Bernoulli or categorical
    likelihood, laid out by ``columns`` (the ``table_columns`` option, e.g.
    ``"real,binary,categorical:3"``, filled in from the data).

    Args:
        event_shape: ``(D,)``, D the length of an encoded row.
        columns: the layout; its widths must add up to D.
        std: the real columns' initial sigma (1: standardised data).
        learn_std: learn each real column's sigma (``log_std``, ``(R,)``).
        std_floor: the smallest sigma (0: none).

    Raises:
        ConfigError: an empty or malformed layout, or one whose widths do not add up to D.
    """

    def __init__(self, event_shape: Sequence[int], columns: str = "", std: float = 1.0,
                 learn_std: bool = True, std_floor: float = 0.0) -> None:
        super().__init__(event_shape)
        self.columns, self.std_floor = columns, float(std_floor)
        if not columns:
            raise ConfigError("the table likelihood needs a table (--data file.csv): its "
                              "columns say which value is real, binary or categorical")
        if len(self.event_shape) != 1:
            raise ConfigError(f"the table likelihood models rows (D,); the data have shape "
                              f"{self.event_shape}")
        self.layout = _Layout(parse_layout(columns))
        if self.layout.dim != self.event_shape[0]:
            raise ConfigError(f"table_columns {columns!r} describes {self.layout.dim} values "
                              f"but the data have {self.event_shape[0]} per row")
        log_std = torch.full((self.layout.real.numel(),), math.log(std))
        if learn_std:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std, persistent=False)

    @classmethod
    def from_options(cls, event_shape: Sequence[int], options) -> TableObservation:
        return cls(event_shape, options.table_columns, 1.0, options.learn_decoder_std,
                   options.decoder_std_floor)

    @classmethod
    def options_for(cls, dataset) -> dict:
        if dataset.table is None:
            raise ConfigError(f"the table likelihood needs a table (--data file.csv); "
                              f"{dataset.name} is not one")
        return {"table_columns": dataset.table.layout}

    def std(self) -> torch.Tensor:
        s = self.log_std.exp()
        return s.clamp_min(self.std_floor) if self.std_floor > 0 else s

    def forward(self, out: torch.Tensor) -> TableDistribution:
        return TableDistribution(out, self.std(), self.layout)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self.forward(out).mean

    def initial_params(self, train_mean: torch.Tensor,
                       train_sd: torch.Tensor | None = None) -> torch.Tensor:
        """The training means of the real columns, the logits of the binary columns'
        frequencies, the log frequencies of the categories (clipped to [1e-3, 1 - 1e-3])."""
        t = train_mean.clone()
        p = train_mean.clamp(1e-3, 1 - 1e-3)
        lay = self.layout
        if lay.binary.numel():
            t[lay.binary] = (p.log() - (-p).log1p())[lay.binary]
        for idx in lay.blocks.values():
            t[idx] = p.log()[idx]
        return t

    def extra_repr(self) -> str:
        return f"columns={self.columns!r}, std_floor={self.std_floor:g}"
