"""vaekit 0.1's estimators, frozen (commit d092752, src/vaekit/estimators/): each returns
the bound and a loss per parameter group, the trainer applying ``model_loss`` to theta and
``inference_loss`` to phi with two backward passes. ``test_surrogate.py`` checks that every
estimator's one surrogate loss has these gradients. The helpers they used are copied too;
only the registration decorator is replaced. Do not edit: this is the reference."""

# ruff: noqa
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit.distributions import analytic_kl, kl_divergence, stop_gradient
from vaekit.errors import ConfigError
from vaekit.nn import mlp

BASELINES = ("none", "moving-average", "nvil")
REFERENCE: dict[str, type] = {}


def _ref(name):
    def deco(cls):
        REFERENCE[name] = cls
        cls.objective_name = name
        return cls
    return deco


@dataclass
class Losses:
    bound: torch.Tensor
    model_loss: torch.Tensor
    inference_loss: torch.Tensor


class Estimator(nn.Module):
    def __init__(self, num_samples: int = 1) -> None:
        super().__init__()
        if num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = int(num_samples)


def self_normalized_weights(log_w):
    return torch.softmax(log_w.detach(), dim=0)


def log_mean_exp(t, dim=0):
    return t.logsumexp(dim) - math.log(t.shape[dim])


def reparameterize(q, num_samples):
    return q.rsample((num_samples,))


def log_weights_given(model, x, q, z):
    return model.decoder(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)


def log_weights(model, x, num_samples=1):
    q = model.encoder(x)
    return log_weights_given(model, x, q, reparameterize(q, num_samples))


def elbo_terms(model, x, num_samples=1, kl="analytic"):
    q = model.encoder(x)
    z = reparameterize(q, num_samples)
    reconstruction = model.decoder(z).log_prob(x).mean(0)
    return reconstruction, kl_divergence(q, model.prior(), z, analytic=(kl == "analytic"))




def _one_loss(bound: torch.Tensor) -> Losses:
    loss = -bound.mean()
    return Losses(bound.detach(), loss, loss)


def _stl_log_weights(model, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """log w with z reparameterized and log q evaluated with stopped parameters: ``(K, B)``.
    Its value is the usual log-weight; its gradient in phi is the path derivative only."""
    q = model.encoder(x)
    return log_weights_given(model, x, stop_gradient(q), reparameterize(q, num_samples))


@_ref("elbo")
class ELBO(Estimator):
    """The ELBO with the reparameterization gradient (AEVB), optionally beta-weighted.

    loss = -(E_q log p(x|z) - beta * KL(q || p)); the reported bound is the ELBO (beta = 1).
    ``kl``: ``"analytic"`` (closed form where torch.distributions has one) or ``"mc"``.
    The trainer may change ``beta`` during training (KL warm-up).
    """

    def __init__(self, num_samples: int = 1, kl: str = "analytic", beta: float = 1.0) -> None:
        super().__init__(num_samples)
        if beta < 0:
            raise ConfigError(f"beta must be >= 0, got {beta}")
        self.kl, self.beta = kl, float(beta)

    def forward(self, model, x: torch.Tensor) -> Losses:
        rec, kl = elbo_terms(model, x, self.num_samples, self.kl)
        bound = rec - kl
        if self.beta == 1.0:
            return _one_loss(bound)
        loss = -(rec - self.beta * kl).mean()
        return Losses(bound.detach(), loss, loss)


@_ref("elbo-stl")
class ELBOSTL(Estimator):
    """The K-sample ELBO with the "sticking the landing" gradient for phi (Roeder et al.
    2017): log q(z|x) uses stopped parameters, so phi's gradient is the path derivative
    alone. Unbiased; zero variance when q is the exact posterior."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        return _one_loss(_stl_log_weights(model, x, self.num_samples).mean(0))


@_ref("iwae")
class IWAE(Estimator):
    """The importance-weighted bound L_K with the reparameterization gradient
    (Burda et al. 2016)."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        return _one_loss(log_mean_exp(log_weights(model, x, self.num_samples), 0))


@_ref("iwae-stl")
class IWAESTL(Estimator):
    """L_K with the STL gradient for phi. For K > 1 this gradient is *biased* for L_K
    (Tucker et al. 2019, Sec. 3); kept for comparison."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        return _one_loss(log_mean_exp(_stl_log_weights(model, x, self.num_samples), 0))


@_ref("iwae-dreg")
class IWAEDReG(Estimator):
    """L_K with the doubly reparameterized gradient for phi (Tucker et al. 2019, eq. 5):

        grad_phi L_K = E[ sum_k w~_k^2 * d log w_k / d z_k * d z_k / d phi ],

    unbiased, and its signal-to-noise ratio does not vanish as K grows. theta's gradient is the
    usual one, sum_k w~_k grad_theta log p(x, z_k)."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        log_w = _stl_log_weights(model, x, self.num_samples)      # (K, B)
        bound = log_mean_exp(log_w, 0)
        w = self_normalized_weights(log_w)
        return Losses(bound.detach(), -bound.mean(), -(w.square() * log_w).sum(0).mean())


@_ref("miwae")
class MIWAE(Estimator):
    """The average of M independent L_K bounds, (1/M) sum_m log (1/K) sum_k w_mk
    (Rainforth et al. 2018): ``num_groups`` = M, ``num_samples`` = K (M*K draws in all).
    M = 1 is IWAE; K = 1 is the M-sample ELBO."""

    def __init__(self, num_samples: int = 1, num_groups: int = 1) -> None:
        super().__init__(num_samples)
        if num_groups < 1:
            raise ConfigError(f"num_groups must be >= 1, got {num_groups}")
        self.num_groups = int(num_groups)

    def _grouped(self, model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_w = log_weights(model, x, self.num_groups * self.num_samples)
        per_group = log_mean_exp(log_w.view(self.num_groups, self.num_samples, -1), 1).mean(0)
        return log_w, per_group

    def forward(self, model, x: torch.Tensor) -> Losses:
        return _one_loss(self._grouped(model, x)[1])


@_ref("ciwae")
class CIWAE(Estimator):
    """beta * ELBO_K + (1 - beta) * L_K on the same K samples (Rainforth et al. 2018), with
    beta = ``ciwae_beta``; a convex combination of bounds is a bound."""

    def __init__(self, num_samples: int = 1, ciwae_beta: float = 0.5) -> None:
        super().__init__(num_samples)
        if not 0 <= ciwae_beta <= 1:
            raise ConfigError(f"ciwae_beta must lie in [0, 1], got {ciwae_beta}")
        self.ciwae_beta = float(ciwae_beta)

    def forward(self, model, x: torch.Tensor) -> Losses:
        log_w = log_weights(model, x, self.num_samples)
        b = self.ciwae_beta
        return _one_loss(b * log_w.mean(0) + (1 - b) * log_mean_exp(log_w, 0))


@_ref("piwae")
class PIWAE(MIWAE):
    """Different bounds for the two parameter groups (Rainforth et al. 2018): theta follows
    L_{M*K} (IWAE on all draws), phi follows MIWAE(M, K) on the same draws. The reported bound
    is L_{M*K}."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        log_w, per_group = self._grouped(model, x)
        bound = log_mean_exp(log_w, 0)
        return Losses(bound.detach(), -bound.mean(), -per_group.mean())




@_ref("elbo-sf")
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


@_ref("vimco")
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



def sleep_loss(model, num: int) -> torch.Tensor:
    """-mean log q(z|x) over ``num`` pairs (z, x) drawn from the model: z ~ p(z),
    x ~ p(x|z) (the sleep phase; minimised with respect to phi)."""
    with torch.no_grad():
        z = model.prior().sample((num,))                        # (N, D_z)
        x = model.decoder(z).sample()                           # (N, D)
    return -model.encoder(x).log_prob(z).mean()


@_ref("wake-sleep")
class WakeSleep(Estimator):
    """Wake: theta maximises log p(x, z) at z ~ q(z|x) (K draws); sleep: phi maximises
    log q(z|x) on K*B dreamt pairs. The reported bound is the K-sample ELBO estimate."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        z = q.sample((self.num_samples,))
        log_joint = model.decoder(z).log_prob(x) + model.prior().log_prob(z)    # (K, B)
        bound = (log_joint.detach() - q.log_prob(z).detach()).mean(0)
        return Losses(bound, -log_joint.mean(), sleep_loss(model, z.shape[0] * z.shape[1]))


class _RWSBase(Estimator):
    def __init__(self, num_samples: int = 5, rws_wake_weight: float = 0.5) -> None:
        super().__init__(num_samples)
        if not 0 <= rws_wake_weight <= 1:
            raise ConfigError(f"rws_wake_weight must lie in [0, 1], got {rws_wake_weight}")
        self.wake_weight = float(rws_wake_weight)

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, rws_wake_weight={self.wake_weight}"

    def _phi_loss(self, model, wake: torch.Tensor, num: int) -> torch.Tensor:
        a = self.wake_weight
        if a == 1.0:
            return wake
        sleep = sleep_loss(model, num)
        return sleep if a == 0.0 else a * wake + (1 - a) * sleep


@_ref("rws")
class RWS(_RWSBase):
    """Reweighted wake-sleep (Bornschein & Bengio 2015). theta: sum_k w~_k grad log p(x, z_k)
    (the gradient of L_K); phi: ``rws_wake_weight`` * wake-phi + (1 - it) * sleep-phi. The
    reported bound is L_K."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        z = q.sample((self.num_samples,))                                       # no path grad
        log_joint = model.decoder(z).log_prob(x) + model.prior().log_prob(z)    # (K, B)
        log_q = q.log_prob(z)
        log_w = log_joint.detach() - log_q.detach()
        w = self_normalized_weights(log_w)
        wake = -(w * log_q).sum(0).mean()
        return Losses(log_mean_exp(log_w, 0), -(w * log_joint).sum(0).mean(),
                      self._phi_loss(model, wake, log_w.numel()))


@_ref("rws-dreg")
class RWSDReG(_RWSBase):
    """RWS with the doubly reparameterized wake-phi gradient (Tucker et al. 2019, eq. 7): the
    same expectation as RWS's wake-phi gradient, lower variance."""

    def forward(self, model, x: torch.Tensor) -> Losses:
        q = model.encoder(x)
        z = reparameterize(q, self.num_samples)
        log_w = log_weights_given(model, x, stop_gradient(q), z)               # (K, B)
        w = self_normalized_weights(log_w)
        # E[sum_k w~_k grad_phi log q(z_k|x)] = E[sum_k d w~_k / d z_k * d z_k / d phi]
        #   = E[sum_k (w~_k - w~_k^2) d log w_k / d z_k * d z_k / d phi]: ascend it.
        wake = -((w - w.square()) * log_w).sum(0).mean()
        return Losses(log_mean_exp(log_w, 0).detach(), -(w * log_w).sum(0).mean(),
                      self._phi_loss(model, wake, log_w.numel()))
