"""How good is a gradient estimator? Variance and signal-to-noise ratio of its estimates.

At fixed parameters and a fixed mini-batch, draw many independent gradient estimates and
summarise each parameter group (theta: generative, phi: inference) by

* ``variance``: the mean over parameters of the per-parameter variance across draws;
* ``snr``: per parameter |mean| / std across draws (Rainforth et al. 2018, eq. 6), averaged
  (and its median) over the parameters whose estimate varies;
* ``seconds``: the cost of one estimate (forward and backward passes).

Gradients are those of the objective (the ascent direction, minus the loss gradient) and are
accumulated with Welford's algorithm in float64, so memory does not grow with the draws.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .estimators import Estimator


@dataclass
class GradientStats:
    group: str               # "model" (theta) or "inference" (phi)
    mean: torch.Tensor       # (P,) per-parameter mean of the estimates (float64)
    var: torch.Tensor        # (P,) per-parameter variance across draws (unbiased)
    draws: int
    seconds: float           # per estimate

    @property
    def std(self) -> torch.Tensor:
        return self.var.clamp(min=0).sqrt()

    @property
    def standard_error(self) -> torch.Tensor:
        """Standard error of :attr:`mean`, per parameter."""
        return self.std / math.sqrt(self.draws)

    @property
    def snr(self) -> torch.Tensor:
        """|mean| / std per parameter; NaN where the estimate does not vary."""
        std = self.std
        return torch.where(std > 0, self.mean.abs() / std, torch.full_like(std, math.nan))

    def summary(self) -> dict:
        snr = self.snr
        snr = snr[~snr.isnan()]
        return {"group": self.group, "parameters": int(self.mean.numel()),
                "variance": float(self.var.mean()),
                "snr_mean": float(snr.mean()) if snr.numel() else math.nan,
                "snr_median": float(snr.median()) if snr.numel() else math.nan,
                "mean_norm": float(self.mean.norm()), "draws": self.draws,
                "seconds": self.seconds}


def _flat(grads, params) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                      for g, p in zip(grads, params, strict=True)])


def gradient_statistics(model, estimator: Estimator, x: torch.Tensor,
                        num_draws: int = 100) -> dict[str, GradientStats]:
    """Per-group statistics of ``num_draws`` independent estimates on the batch
    ``x: (B, *event_shape)``.

    Each estimate is the gradient of the batch-mean objective, as one training step sees it.
    The model's parameters are not changed. Returns ``{"model": ..., "inference": ...}``.

    Raises:
        ValueError: ``num_draws < 2``.
    """
    if num_draws < 2:
        raise ValueError(f"num_draws must be >= 2 to estimate a variance, got {num_draws}")
    groups = {"model": list(model.generative_parameters()),
              "inference": list(model.inference_parameters())}
    groups = {k: v for k, v in groups.items() if v}
    params = [p for ps in groups.values() for p in ps]
    sums: dict[str, list[torch.Tensor]] = {}
    elapsed = 0.0
    for i in range(num_draws):
        start = time.perf_counter()
        losses = estimator(model, x)              # one surrogate: theta's and phi's gradients
        g = torch.autograd.grad(losses.loss, params, allow_unused=True)
        split, flat = 0, {}
        for name, ps in groups.items():
            flat[name] = _flat(g[split:split + len(ps)], ps)
            split += len(ps)
        elapsed += time.perf_counter() - start
        for name, v in flat.items():
            v = -v                                               # ascent direction
            if name not in sums:
                sums[name] = [v.clone(), torch.zeros_like(v)]     # Welford: mean, M2
                continue
            mean, m2 = sums[name]
            delta = v - mean
            mean += delta / (i + 1)
            m2 += delta * (v - mean)
    return {name: GradientStats(name, mean.cpu(), (m2 / (num_draws - 1)).cpu(), num_draws,
                                elapsed / num_draws)
            for name, (mean, m2) in sums.items()}


def shared_options(cls, run_options):
    """``cls``'s defaults, with the values of the fields it shares with ``run_options`` (the
    options of the run's own objective, or ``None``)."""
    if run_options is None:
        return cls()
    shared = {k: v for k, v in run_options.to_dict().items() if k in cls.field_names()}
    return cls.from_values(shared)


def gradient_study(model, objective: str, run_options, x: torch.Tensor,
                   estimators: list[str], num_samples: list[int], num_draws: int = 100,
                   seed: int = 0, estimator_state: dict | None = None,
                   log=None) -> list[dict]:
    """Variance and SNR of each estimator (and each K) at the model's current parameters.

    Args:
        model: the model, on its device.
        objective, run_options: the run's objective and its options; each estimator studied
            takes the options it shares with them (e.g. ``kl``), ``num_samples`` replaced.
        x: ``(B, *event_shape)`` the mini-batch, on the model's device.
        estimator_state: state of the run's own estimator (e.g. a trained NVIL baseline),
            loaded when the estimator of that name is studied.
    Returns:
        One row per (estimator, K, group) with :meth:`GradientStats.summary`'s fields; a
        combination that an estimator refuses (e.g. vimco with K = 1) gives one row with
        ``skipped`` and the reason.

    Each estimator first runs 10 unmeasured draws so that running-average baselines settle;
    a learned baseline network other than the run's own is untrained (zero).
    """
    from .errors import ConfigError
    from .estimators import ESTIMATORS, get_estimator

    rows = []
    device = x.device
    for name in estimators:
        for k in num_samples:
            try:
                options = shared_options(ESTIMATORS.get(name).options, run_options)
                est = get_estimator(name, options.replace(num_samples=k),
                                    data_shape=tuple(x.shape[1:])).to(device)
            except ConfigError as e:
                rows.append({"estimator": name, "num_samples": k, "skipped": str(e)})
                continue
            if estimator_state and name == objective:
                est.load_state_dict(estimator_state)
            torch.manual_seed(seed)
            for _ in range(10):
                est(model, x)
            for s in gradient_statistics(model, est, x, num_draws).values():
                rows.append({"estimator": name, "num_samples": k, **s.summary()})
            if log:
                log(f"  {name} K={k}: done")
    return rows
