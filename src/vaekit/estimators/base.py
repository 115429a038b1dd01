"""The estimator interface: a bound to report and a loss for each parameter group."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError


@dataclass
class Losses:
    """What an estimator returns for one mini-batch.

    ``bound`` is the true bound (or objective) of the batch, detached, in nats per example,
    shape ``(B,)``: the value to report. ``model_loss`` is minimised with respect to the
    generative parameters theta (decoder, prior) and ``inference_loss`` with respect to the
    inference parameters phi (encoder, and the estimator's own, e.g. a learned baseline).
    Their gradients are the estimator's; their values need not mean anything. When both are
    the same tensor the trainer runs a single backward pass.
    """

    bound: torch.Tensor
    model_loss: torch.Tensor
    inference_loss: torch.Tensor


class Estimator(nn.Module):
    """Base class: ``forward(model, x) -> Losses`` for ``x: (B, D)``.

    Options are keyword arguments of ``__init__`` named like the fields of
    :class:`vaekit.config.TrainConfig` (``num_samples``, ``kl``, ``beta``, ...), so that
    :meth:`from_config` can fill them. An estimator is an ``nn.Module`` so that state (a
    running-average baseline, a learned baseline network) is saved in checkpoints and its
    parameters are trained with phi.
    """

    def __init__(self, num_samples: int = 1) -> None:
        super().__init__()
        if num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = int(num_samples)

    @classmethod
    def from_config(cls, config, data_dim: int | None = None) -> Estimator:
        """Build from a :class:`~vaekit.config.TrainConfig` (and the data dimension, for
        estimators that own a network over x)."""
        values = {"data_dim": data_dim}
        kwargs = {}
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            if hasattr(config, name):
                kwargs[name] = getattr(config, name)
            elif name in values:
                kwargs[name] = values[name]
        return cls(**kwargs)

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}"


ESTIMATORS: dict[str, type[Estimator]] = {}


def register_estimator(name: str):
    """Class decorator: make an estimator available as ``--objective NAME``."""
    def deco(cls: type[Estimator]) -> type[Estimator]:
        ESTIMATORS[name] = cls
        cls.objective_name = name
        return cls
    return deco


def get_estimator(config, data_dim: int | None = None) -> Estimator:
    """The estimator that ``config.objective`` names, with its options from ``config``.

    Raises:
        ConfigError: unknown objective or an option out of range for it.
    """
    if config.objective not in ESTIMATORS:
        raise ConfigError(f"objective must be one of {', '.join(ESTIMATORS)}; "
                          f"got {config.objective!r}")
    return ESTIMATORS[config.objective].from_config(config, data_dim)


def self_normalized_weights(log_w: torch.Tensor) -> torch.Tensor:
    """w~_k = w_k / sum_j w_j along dim 0 of ``(K, B)`` log-weights, detached."""
    return torch.softmax(log_w.detach(), dim=0)
