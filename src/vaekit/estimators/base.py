"""The estimator interface: a bound to report and one surrogate loss per step.

An estimator's ``forward(model, x)`` returns :class:`Losses`: the true bound of the batch
(detached, to report) and a scalar ``loss`` whose gradient with respect to the generative
parameters theta is the estimator's model gradient and with respect to the inference
parameters phi its inference gradient. Where the two gradients come from different
objectives (wake-sleep, score-function estimators, DReG, ...) the surrogate composes them
with stop-gradients, as Pyro's surrogate losses do, so that the trainer calls ``backward()``
once: what DistributedDataParallel, gradient scaling, captured steps and compiled steps need.

Two tools compose the surrogates: detached samples and :func:`stop_gradient` copies of a
distribution keep a term out of one group; :class:`PathGate` scales, sample by sample, the
gradient that reaches z through the log-weights (the path derivative that reparameterized
inference gradients flow along), for estimators whose phi-gradient weighs each sample
differently from theta's (DReG: w~_k^2 instead of w~_k).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..options import Options, option, positive
from ..registry import Registry


@dataclass
class Losses:
    """What an estimator returns for one mini-batch.

    ``bound`` is the true bound (or objective) of the batch, detached, in nats per example,
    shape ``(B,)``: the value to report. ``loss`` is the scalar to minimise: its gradient with
    respect to theta (decoder, prior) is the estimator's model gradient, with respect to phi
    (encoder, and the estimator's own parameters, e.g. a learned baseline) its inference
    gradient; its value need not mean anything.
    """

    bound: torch.Tensor
    loss: torch.Tensor


@dataclass
class EstimatorOptions(Options):
    """Options of an estimator without any (an objective of the model family's own)."""

    section = "objective"


@dataclass
class SampledOptions(EstimatorOptions):
    """Options of an estimator that draws K samples of z per example."""

    num_samples: int = option(1, "z samples per x in the training objective (K)",
                              check=positive)


class Estimator(nn.Module):
    """Base class: ``forward(model, x) -> Losses`` for ``x: (B, *event_shape)``.

    Built from its options (:attr:`options`, a dataclass registered with it). An estimator is
    an ``nn.Module`` so that state (a running-average baseline, a learned baseline network)
    is saved in checkpoints and its parameters are trained with phi.

    Class attributes, set by :func:`register_estimator`:
        name: the objective's name (``--objective``).
        options: its options class.
        kind: ``"bound"`` for estimators of a bound on log p(x), which every latent-variable
            model family takes; otherwise the name of the family objective it implements
            (``"reconstruction"``, ``"vq"``).
        kl_weighted: it has a KL weight (:attr:`kl_weight`) that KL warm-up may anneal.
    """

    name: ClassVar[str]
    options: ClassVar[type[EstimatorOptions]] = SampledOptions
    kind: ClassVar[str] = "bound"
    kl_weighted: ClassVar[bool] = False

    def __init__(self, options: EstimatorOptions | None = None,
                 data_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.opts = (options if options is not None else type(self).options()).validate()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.opts.to_dict().items())


class SampledEstimator(Estimator):
    """An estimator that draws ``num_samples`` (K) samples of z per example."""

    options: ClassVar[type[EstimatorOptions]] = SampledOptions

    def __init__(self, options: SampledOptions | None = None,
                 data_shape: tuple[int, ...] | None = None) -> None:
        super().__init__(options, data_shape)
        self.num_samples = int(self.opts.num_samples)


ESTIMATORS: Registry[type[Estimator]] = Registry("objective")


def register_estimator(name: str, options: type[EstimatorOptions] = SampledOptions, *,
                       kind: str = "bound", kl_weighted: bool = False):
    """Class decorator: make an estimator available as ``--objective NAME`` with its
    options class (each field becomes a command-line option)."""
    def deco(cls: type[Estimator]) -> type[Estimator]:
        cls.name, cls.options, cls.kind, cls.kl_weighted = name, options, kind, kl_weighted
        return ESTIMATORS.register(name, cls)
    return deco


def get_estimator(name: str, options: EstimatorOptions | None = None, *,
                  data_shape: tuple[int, ...] | None = None, **overrides) -> Estimator:
    """The estimator registered as ``name``, with ``options`` (default: its defaults) updated
    by ``overrides`` (``num_samples=5``, ``kl="mc"``, ...).

    Args:
        data_shape: the event shape of x, for estimators that own a network over x (NVIL).

    Raises:
        ConfigError: unknown objective, an option it does not take, or a value out of range.
    """
    cls = ESTIMATORS.get(name)
    opts = options if options is not None else cls.options()
    if not isinstance(opts, cls.options):
        opts = cls.options.from_values({k: v for k, v in opts.to_dict().items()
                                        if k in cls.options.field_names()})
    if overrides:
        unknown = [k for k in overrides if k not in cls.options.field_names()]
        if unknown:
            raise ConfigError(f"{unknown[0]!r} is not an option of objective {name}; its "
                              f"options are {', '.join(cls.options.field_names()) or '(none)'}")
        opts = opts.replace(**overrides)
    return cls(opts, data_shape)


def self_normalized_weights(log_w: torch.Tensor) -> torch.Tensor:
    """w~_k = w_k / sum_j w_j along dim 0 of ``(K, B)`` log-weights, detached."""
    return torch.softmax(log_w.detach(), dim=0)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``gate.scale`` (broadcast over
    trailing dimensions), a tensor the gate receives after the forward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, gate: PathGate) -> torch.Tensor:
        ctx.gate = gate
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        scale = ctx.gate.scale
        if scale is None:
            raise RuntimeError("PathGate.set was not called before backward")
        scale = scale.reshape(scale.shape + (1,) * (grad.dim() - scale.dim()))
        return grad * scale, None


class PathGate:
    """``gate = PathGate(z)``; compute the log-weights from ``gate.value``; then
    ``gate.set(scale)``: the gradient that reaches ``z`` through ``gate.value`` is multiplied
    by ``scale`` (shape ``(K, B)``, detached), while every other gradient of the surrogate is
    unchanged. The forward value is ``z`` itself (no copy).

    Estimators use it when phi's gradient weighs sample k by a factor that depends on the
    log-weights (known only after they are computed) and theta's by another: the surrogate is
    written with theta's weights, and the gate turns them into phi's on the path through z.
    """

    def __init__(self, z: torch.Tensor) -> None:
        self.scale: torch.Tensor | None = None
        self.value = _ScaleGradient.apply(z, self)

    def set(self, scale: torch.Tensor) -> None:
        self.scale = scale.detach()
