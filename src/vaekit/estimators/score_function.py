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

import torch
from torch import nn

from ..distributions import analytic_kl
from ..errors import ConfigError
from ..nn import mlp
from ..objectives import log_mean_exp, log_weights_given
from .base import Estimator, Losses, register_estimator

BASELINES = ("none", "moving-average", "nvil")


@register_estimator("elbo-sf")
class ScoreFunctionELBO(Estimator):
    """The K-sample ELBO with the score-function gradient for phi and a control variate.

    theta's gradient is grad_theta log p(x, z) at the sampled z (no estimator choice there).
    With ``kl="analytic"`` only the reconstruction term goes through the score function and
    the closed-form KL is differentiated exactly; with ``"mc"`` the whole log-weight does.

    Args:
        baseline: ``"none"``; ``"moving-average"`` (b = an exponential moving average of the
            learning signal, decay ``baseline_decay``); ``"nvil"`` (b = c + C_psi(x): c a
            running average and C_psi an MLP with one tanh hidden layer of 100 units regressed
            on the signal, Mnih & Gregor 2014, Sec. 3.2). NVIL's variance normalisation
            (Sec. 3.3) is left out: it rescales the gradient by a running statistic, which
            makes the estimator biased, and Adam already normalises the step size.
        data_dim: D, needed by the NVIL network.

    Every baseline is independent of z, so the estimator stays unbiased.
    """

    def __init__(self, num_samples: int = 1, kl: str = "analytic", baseline: str = "nvil",
                 baseline_decay: float = 0.8, data_dim: int | None = None) -> None:
        super().__init__(num_samples)
        if baseline not in BASELINES:
            raise ConfigError(f"baseline must be one of {', '.join(BASELINES)}; got {baseline!r}")
        if not 0 <= baseline_decay < 1:
            raise ConfigError(f"baseline_decay must lie in [0, 1), got {baseline_decay}")
        self.kl, self.baseline, self.decay = kl, baseline, float(baseline_decay)
        self.register_buffer("signal_mean", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.baseline_net = None
        if baseline == "nvil":
            if data_dim is None:
                raise ConfigError("the nvil baseline needs the data dimension")
            self.baseline_net = mlp(data_dim, (100,), 1, "tanh")
            nn.init.zeros_(self.baseline_net[-1].weight)
            nn.init.zeros_(self.baseline_net[-1].bias)

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, kl={self.kl}, baseline={self.baseline}"

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        prior = model.prior()
        z = q.sample((self.num_samples,))                          # (K, B, D_z), no gradient
        log_px_z = model.decoder(z).log_prob(x)                    # (K, B)
        log_pz, log_qz = prior.log_prob(z), q.log_prob(z)
        kl = analytic_kl(q, prior) if self.kl == "analytic" else None
        if kl is not None:
            signal = log_px_z.detach()                             # the score-function part
            exact = -kl                                            # differentiated exactly
            bound = log_px_z.mean(0) - kl
        else:
            signal = (log_px_z + log_pz - log_qz).detach()
            exact = torch.zeros_like(log_qz[0])
            bound = (log_px_z + log_pz - log_qz).mean(0)
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
        inference_loss = -((advantage * log_qz).mean(0) + exact).mean() + extra
        model_loss = -(log_px_z + log_pz).mean()
        return Losses(bound.detach(), model_loss, inference_loss)

    @torch.no_grad()
    def _track(self, signal: torch.Tensor) -> None:
        """Running mean of ``signal`` (no host sync); the first call starts it at the batch's
        mean. It is updated after use, so the baseline never depends on the current z."""
        m = signal.mean()
        a = self.decay * self.initialized.to(m.dtype)
        self.signal_mean.mul_(a).add_((1 - a) * m)
        self.initialized.fill_(True)


@register_estimator("vimco")
class VIMCO(Estimator):
    """The K-sample bound L_K with the score-function gradient and VIMCO's leave-one-out
    baselines (Mnih & Rezende 2016): sample k's learning signal is L_K - L_K^{-k}, where
    L_K^{-k} replaces w_k by the geometric mean of the other weights. Needs K >= 2."""

    def __init__(self, num_samples: int = 2) -> None:
        super().__init__(num_samples)
        if num_samples < 2:
            raise ConfigError("vimco needs --num-samples >= 2 (its baselines leave one out)")

    def forward(self, model, x: torch.Tensor) -> Losses:
        k = self.num_samples
        q = model.encoder(x)
        z = q.sample((k,))                                         # no gradient through z
        log_w = log_weights_given(model, x, q, z)                  # (K, B): grads via log p, log q
        bound = log_mean_exp(log_w, 0)                             # (B,)
        with torch.no_grad():
            lw = log_w.detach()
            others = (lw.sum(0, keepdim=True) - lw) / (k - 1)      # geometric mean of the rest
            loo = lw.unsqueeze(0).repeat(k, 1, 1)                  # (K, K, B)
            idx = torch.arange(k, device=lw.device)
            loo[idx, idx] = others
            signal = bound.detach() - (loo.logsumexp(1) - math.log(k))   # (K, B)
        log_qz = q.log_prob(z)
        inference_loss = -((signal * log_qz).sum(0) + bound).mean()
        return Losses(bound.detach(), -bound.mean(), inference_loss)
