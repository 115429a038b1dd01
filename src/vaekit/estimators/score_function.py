"""Log-derivative (score-function, REINFORCE) estimators for phi: no gradient through z.

    grad_phi E_q[f(z)] = E_q[(f(z) - b) grad_phi log q(z|x)]   for any b independent of z.

References:
    Williams (1992), REINFORCE; Paisley, Blei & Jordan (2012); Ranganath et al. (2014).
    Mnih & Gregor (2014), "Neural variational inference and learning in belief networks"
        (NVIL), Sec. 3: an input-dependent learned baseline C_psi(x), a running-average
        baseline c and variance normalisation.
    Mnih & Rezende (2016), "Variational inference for Monte Carlo objectives" (VIMCO),
        eq. (8)-(10): leave-one-out baselines for the K-sample bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..distributions import analytic_kl, stop_gradient
from ..errors import ConfigError
from ..nn import MLP
from ..objectives import log_mean_exp, log_terms
from ..options import interval, one_of, option
from .base import Losses, SampledEstimator, SampledOptions, register_estimator
from .reparameterized import KL_ESTIMATES, IWAEOptions

BASELINES = ("none", "moving-average", "nvil")


@dataclass
class ScoreFunctionOptions(SampledOptions):
    kl: str = option("analytic", "KL term: analytic (closed form, differentiated exactly; "
                                 "only the reconstruction goes through the score function) | "
                                 "mc (the whole log-weight does)", check=one_of(KL_ESTIMATES))
    baseline: str = option("nvil", "control variate: none | moving-average | nvil",
                           check=one_of(BASELINES))
    baseline_decay: float = option(0.8, "decay of the running averages of the signal",
                                   check=interval(0, 1, "[)"))


@dataclass
class VIMCOOptions(IWAEOptions):
    def check(self) -> None:
        if self.num_samples < 2:
            raise ConfigError("vimco needs --num-samples >= 2 (its baselines leave one out)")


@register_estimator("elbo-sf", ScoreFunctionOptions)
class ScoreFunctionELBO(SampledEstimator):
    """The K-sample ELBO with the score-function gradient for phi and a control variate.

    theta's gradient is grad_theta log p(x, z) at the sampled z (no estimator choice there).
    With ``kl="analytic"`` only the reconstruction term goes through the score function and
    the closed-form KL is differentiated exactly; with ``"mc"`` the whole log-weight does.

    Options (:class:`ScoreFunctionOptions`):
        baseline: ``"none"``; ``"moving-average"`` (b = an exponential moving average of the
            learning signal, decay ``baseline_decay``); ``"nvil"`` (b = c + C_psi(x): c a
            running average and C_psi an MLP with one tanh hidden layer of 100 units regressed
            on the signal, Mnih & Gregor 2014, Sec. 3.2). NVIL's variance normalisation
            (Sec. 3.3) is left out: it rescales the gradient by a running statistic, which
            makes the estimator biased, and Adam already normalises the step size.

    Every baseline is independent of z, so the estimator stays unbiased. The surrogate is
    the sum of theta's term, -mean log p(x, z) at detached z, and phi's, in which the KL is
    taken against a stop-gradient copy of the prior (its gradient belongs to phi alone).

    Raises:
        ConfigError: the nvil baseline without the data's shape.
    """

    def __init__(self, options: ScoreFunctionOptions | None = None,
                 data_shape: tuple[int, ...] | None = None) -> None:
        super().__init__(options, data_shape)
        o = self.opts
        self.kl, self.baseline, self.decay = o.kl, o.baseline, float(o.baseline_decay)
        self.register_buffer("signal_mean", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.baseline_net = None
        if self.baseline == "nvil":
            if data_shape is None:
                raise ConfigError("the nvil baseline needs the data's shape")
            self.baseline_net = MLP(data_shape, (100,), 1, "tanh")
            nn.init.zeros_(self.baseline_net[-1].weight)
            nn.init.zeros_(self.baseline_net[-1].bias)

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        prior = model.prior()
        z = q.sample((self.num_samples,))                          # (K, B, D_z), no gradient
        terms = log_terms(model, x, z, q, prior)                   # (K, B) each
        kl = analytic_kl(q, prior) if self.kl == "analytic" else None
        if kl is not None:
            signal = terms.log_px_z.detach()                       # the score-function part
            exact = -analytic_kl(q, stop_gradient(prior))          # differentiated exactly
            bound = terms.log_px_z.mean(0) - kl
        else:
            signal = terms.log_w.detach()
            exact = torch.zeros_like(terms.log_qz[0])
            bound = terms.log_w.mean(0)
        extra = torch.zeros((), device=x.device)
        if self.baseline == "none":
            advantage = signal
        elif self.baseline == "moving-average":
            advantage = signal - self.signal_mean
            self._track(signal)
        else:
            c_psi = self.baseline_net(x).squeeze(-1)               # (B,)
            centred = signal - self.signal_mean - c_psi            # gradient flows to psi only
            extra = centred.square().mean()                        # psi regresses the signal
            advantage = centred.detach()
            self._track(signal - c_psi.detach())
        phi_term = -((advantage * terms.log_qz).mean(0) + exact).mean() + extra
        theta_term = -terms.log_joint.mean()                       # z detached: theta only
        return Losses(bound.detach(), theta_term + phi_term)

    @torch.no_grad()
    def _track(self, signal: torch.Tensor) -> None:
        """Running mean of ``signal`` (no host sync); the first call starts it at the batch's
        mean. It is updated after use, so the baseline never depends on the current z."""
        m = signal.mean()
        a = self.decay * self.initialized.to(m.dtype)
        self.signal_mean.mul_(a).add_((1 - a) * m)
        self.initialized.fill_(True)


@register_estimator("vimco", VIMCOOptions)
class VIMCO(SampledEstimator):
    """The K-sample bound L_K with the score-function gradient and VIMCO's leave-one-out
    baselines (Mnih & Rezende 2016): sample k's learning signal is L_K - L_K^{-k}, where
    L_K^{-k} replaces w_k by the geometric mean of the other weights. Needs K >= 2.

    Surrogate: -(sum_k signal_k log q(z_k|x) + L_K): theta's gradient is that of L_K (log q
    has no theta), phi's the score terms plus L_K's own dependence on phi through log q."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        k = self.num_samples
        q = model.encoder(x)
        z = q.sample((k,))                                         # no gradient through z
        terms = log_terms(model, x, z, q)                          # grads via log p, log q
        log_w = terms.log_w                                        # (K, B)
        bound = log_mean_exp(log_w, 0)                             # (B,)
        with torch.no_grad():
            lw = log_w.detach()
            others = (lw.sum(0, keepdim=True) - lw) / (k - 1)      # geometric mean of the rest
            loo = lw.unsqueeze(0).repeat(k, 1, 1)                  # (K, K, B)
            idx = torch.arange(k, device=lw.device)
            loo[idx, idx] = others
            signal = bound.detach() - (loo.logsumexp(1) - math.log(k))   # (K, B)
        return Losses(bound.detach(), -((signal * terms.log_qz).sum(0) + bound).mean())
