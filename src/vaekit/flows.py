"""Normalizing-flow posteriors: q(z|x) as a Gaussian pushed through T invertible steps.

z_0 ~ N(mu(x), diag sigma(x)^2), z_t = f_t(z_{t-1}) for t = 1..T, and by the change of
variables

    log q(z_T|x) = log N(z_0; mu, sigma) - sum_t log |det d z_t / d z_{t-1}|      (nats)

(Rezende & Mohamed 2015, eq. 13; Kingma et al. 2016, eq. 10-11). :class:`FlowDistribution`
is that density as a ``torch.distributions.Distribution`` with batch shape ``(B,)`` and
event shape ``(D,)``; two flows are provided:

* :class:`PlanarFlow`: f(z) = z + u^ tanh(w^T z + b), amortized (u, w, b are encoder
  outputs), with the invertibility constraint u^ = u + (m(w^T u) - w^T u) w / ||w||^2,
  m(a) = -1 + softplus(a) (Rezende & Mohamed 2015, eq. 10-12 and Appendix A.1).
* :class:`IAFFlow`: (m, s) = MADE_t(z, h), sigma = sigmoid(s), z <- sigma * z + (1 - sigma) * m,
  log-det = sum log sigma, the variable order reversed between steps (Kingma, Salimans,
  Jozefowicz, Chen, Sutskever & Welling 2016, eq. 10-14 and Algorithm 1; MADE: Germain,
  Gregor, Murray & Larochelle 2015).

``log_prob(z)`` is exact for any z. For the tensor the last ``rsample`` returned (the same
tensor, ``z.detach()`` or a same-shaped view: the same storage, untouched since) the inputs of
each step are cached, so nothing is inverted; any other z is inverted (IAF: D sequential
passes per step, exact; planar: the scalar equation along w solved by bisection and Newton).
Where a gradient is needed, the cached (or inverted) z_0 is made differentiable by one
implicit-function step per flow step, z_{t-1} <- z_{t-1} + J_t^{-1} (z_t - f_t(z_{t-1})) with
the residual exactly zero in value and J_t the stopped Jacobian (IAF: triangular, solved with
``torch.linalg.solve_triangular``; planar: rank one, Sherman-Morrison). The derivatives in z
and in the parameters are then those of the implicit function theorem, exact to first order:
``log_prob`` of a ``vaekit.distributions.stop_gradient`` copy (every parameter stopped, the
MADE weights through ``torch.func.functional_call``) is differentiable in z alone, with
d log q / dz correct, as "sticking the landing" (Roeder et al. 2017) and DReG (Tucker et al.
2019) need; ``log_prob(z.detach())`` of the original has phi's direct (score) derivative.

There is no closed-form KL: ``vaekit.distributions.analytic_kl`` returns ``None`` for these
and the objectives fall back to Monte Carlo.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, constraints
from torch.func import functional_call, jacrev, vmap

from .distributed import standard_normal
from .distributions import diagonal_normal, register_stop_gradient
from .errors import ConfigError

MEAN_SAMPLES = 128          # draws of the Monte Carlo posterior mean (FlowDistribution.mean)
IAF_GATE_BIAS = 2.0         # initial bias of s: sigma = sigmoid(2) ~ 0.88 (Kingma et al. 2016)
BISECTION_STEPS = 64        # planar inverse: halvings of the bracket (float64), then Newton
NEWTON_STEPS = 3


def check_flow_steps(flow_steps) -> int:
    if isinstance(flow_steps, bool) or not isinstance(flow_steps, int) or flow_steps < 1:
        raise ConfigError(f"flow_steps must be a positive integer, got {flow_steps!r}")
    return flow_steps


# --------------------------------------------------------------------------- planar
def planar_u_hat(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """u^ = u + (m(w^T u) - w^T u) w / |w|^2, m(a) = -1 + softplus(a), so that w^T u^ > -1 and
    the planar step is invertible (Rezende & Mohamed 2015, Appendix A.1); ``(..., D)``."""
    wu = (w * u).sum(-1, keepdim=True)
    norm2 = w.square().sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    return u + (F.softplus(wu) - 1 - wu) * w / norm2


class PlanarFlow:
    """T planar steps f_t(z) = z + u^_t tanh(w_t^T z + b_t) (Rezende & Mohamed 2015, eq. 10).

    Parameters (``params``): ``u_hat``, ``w``: ``(..., T, D)``; ``b``: ``(..., T)``, where
    ``...`` is q's batch shape; u^ already satisfies w^T u^ > -1, so each step is invertible.
    Stateless: the amortized parameters are encoder outputs.
    """

    nets = None                 # no module: every parameter is an encoder output

    def __init__(self, num_steps: int) -> None:
        self.num_steps = num_steps

    @staticmethod
    def _at(params, t):
        return params["u_hat"][..., t, :], params["w"][..., t, :], params["b"][..., t]

    def step(self, t: int, z: torch.Tensor, params, weights=None):
        """z_t = f_t(z) and log |det df_t/dz| = log(1 + u^T psi(z)), psi = h'(w^T z + b) w
        (eq. 11-12): ``(..., D)`` and ``(...)``."""
        u, w, b = self._at(params, t)
        th = torch.tanh((w * z).sum(-1) + b)
        y = z + u * th.unsqueeze(-1)
        return y, torch.log1p((1 - th.square()) * (w * u).sum(-1))

    def inverse_step(self, t: int, y: torch.Tensor, params, weights=None) -> torch.Tensor:
        """z with f_t(z) = y: a = w^T z solves a + (w^T u^) tanh(a + b) = w^T y, increasing in
        a (w^T u^ > -1) and bracketed by w^T y -+ |w^T u^|; then z = y - u^ tanh(a + b)."""
        u, w, b = self._at(params, t)
        u, w, b, y64 = u.double(), w.double(), b.double(), y.double()
        c = (w * u).sum(-1)
        target = (w * y64).sum(-1)
        c, b = c.expand_as(target), b.expand_as(target)
        lo, hi = target - c.abs(), target + c.abs()
        for _ in range(BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            above = mid + c * torch.tanh(mid + b) > target
            hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
        a = 0.5 * (lo + hi)
        for _ in range(NEWTON_STEPS):
            th = torch.tanh(a + b)
            a = a - (a + c * th - target) / (1 + c * (1 - th.square()))
        return (y64 - u * torch.tanh(a + b).unsqueeze(-1)).to(y.dtype)

    def solve(self, t: int, z: torch.Tensor, params, weights, v: torch.Tensor) -> torch.Tensor:
        """J_t(z)^{-1} v with J = I + u^ psi^T (Sherman-Morrison):
        v - u^ (psi^T v) / (1 + psi^T u^)."""
        u, w, b = self._at(params, t)
        th = torch.tanh((w * z).sum(-1) + b)
        psi = (1 - th.square()).unsqueeze(-1) * w
        return v - u * ((psi * v).sum(-1) / (1 + (psi * u).sum(-1))).unsqueeze(-1)


# --------------------------------------------------------------------------- IAF
class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (MADE)."""

    def __init__(self, mask: torch.Tensor, bias: bool = True) -> None:
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """(m, s) = MADE(z, h): ``(..., D)`` each, m_i and s_i functions of z_{<i} and of the
    context h alone (Germain et al. 2015: input i has degree i, a hidden unit degree
    d in 0..D-1 sees the inputs of degree <= d, output i the hidden units of degree < i).
    Two hidden layers of ``hidden`` ELU units; h enters the first one unmasked. The bias of
    s starts at :data:`IAF_GATE_BIAS`, so sigma = sigmoid(s) starts near 1 (Kingma et al.
    2016, with eq. 14: a forget-gate-like bias of +1 or +2)."""

    def __init__(self, dim: int, context_dim: int, hidden: int) -> None:
        super().__init__()
        d_in = torch.arange(1, dim + 1)
        d_hid = torch.arange(hidden) % dim
        d_out = torch.cat([d_in, d_in])
        self.dim = dim
        self.z_in = MaskedLinear(d_hid[:, None] >= d_in[None, :])
        self.h_in = nn.Linear(context_dim, hidden, bias=False)
        self.hidden = MaskedLinear(d_hid[:, None] >= d_hid[None, :])
        self.out = MaskedLinear(d_out[:, None] > d_hid[None, :])
        with torch.no_grad():
            self.out.bias[dim:].fill_(IAF_GATE_BIAS)

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = F.elu(self.z_in(z) + self.h_in(h))
        o = self.out(F.elu(self.hidden(a)))
        return o[..., :self.dim], o[..., self.dim:]


class IAFNetworks(nn.Module):
    """One MADE per IAF step; ``forward(t, z, h)`` is step t's (m, s)."""

    def __init__(self, dim: int, context_dim: int, num_steps: int, hidden: int) -> None:
        super().__init__()
        self.steps = nn.ModuleList(MADE(dim, context_dim, hidden) for _ in range(num_steps))

    def forward(self, t: int, z: torch.Tensor, h: torch.Tensor):
        return self.steps[t](z, h)


class IAFFlow:
    """T IAF steps (Kingma et al. 2016, Algorithm 1 with the update of eq. 14):
    x = z (t = 1) or reversed z (t > 1), (m, s) = MADE_t(x, h), sigma = sigmoid(s),
    z_t = sigma * x + (1 - sigma) * m, log |det| = sum_i log sigma_i.

    Parameters: ``params["h"]``, the context ``(..., C)``; ``weights``, the MADEs' parameters
    by name (``None``: the live module; a stop-gradient copy passes detached ones).
    """

    def __init__(self, nets: IAFNetworks) -> None:
        self.nets = nets
        self.num_steps = len(nets.steps)

    def _made(self, t, x, h, weights):
        if weights is None:
            return self.nets(t, x, h)
        return functional_call(self.nets, weights, (t, x, h))

    @staticmethod
    def _order(t: int, z: torch.Tensor) -> torch.Tensor:
        return z.flip(-1) if t > 0 else z

    def _update(self, t, x, h, weights):
        m, s = self._made(t, x, h, weights)
        sig = torch.sigmoid(s)
        return sig * x + (1 - sig) * m, F.logsigmoid(s).sum(-1)

    def step(self, t: int, z: torch.Tensor, params, weights=None):
        return self._update(t, self._order(t, z), params["h"], weights)

    def inverse_step(self, t: int, y: torch.Tensor, params, weights=None) -> torch.Tensor:
        """x_i = (y_i - (1 - sigma_i) m_i) / sigma_i for i = 1..D in turn (m_i, s_i depend
        on x_{<i} only): D passes, exact."""
        h = params["h"]
        d = y.shape[-1]
        x = y.new_zeros(torch.broadcast_shapes(y.shape[:-1], h.shape[:-1]) + (d,))
        for i in range(d):
            m, s = self._made(t, x, h, weights)
            sig = torch.sigmoid(s[..., i])
            x[..., i] = (y[..., i] - (1 - sig) * m[..., i]) / sig
        return self._order(t, x)

    def solve(self, t: int, z: torch.Tensor, params, weights, v: torch.Tensor) -> torch.Tensor:
        """J_t(z)^{-1} v, J_t = L P_t: L = d z_t / d x lower triangular (autoregressive, by
        ``torch.func.jacrev``), P_t the reversal (t > 1)."""
        x, h = self._order(t, z), params["h"]
        d, c = x.shape[-1], h.shape[-1]
        batch = torch.broadcast_shapes(x.shape[:-1], h.shape[:-1], v.shape[:-1])
        x, h, v = x.expand(*batch, d), h.expand(*batch, c), v.expand(*batch, d)

        def update(xi, hi):
            return self._update(t, xi, hi, weights)[0]

        lower = vmap(jacrev(update))(x.reshape(-1, d), h.reshape(-1, h.shape[-1]))
        sol = torch.linalg.solve_triangular(lower, v.reshape(-1, d, 1), upper=False)
        return self._order(t, sol.reshape(v.shape))


# --------------------------------------------------------------------------- the distribution
@dataclass
class _Cache:
    """The last rsample: its output, that tensor's version, each step's input (detached) and
    log q (detached)."""

    z: torch.Tensor | None = None
    version: int = -1
    inputs: list[torch.Tensor] | None = None
    log_q: torch.Tensor | None = None
    live_log_q: torch.Tensor | None = None     # log q(f(eps)) with rsample's graph


class FlowDistribution(Distribution):
    """q(z_T|x) for z_0 ~ N(loc, diag scale^2) and z_T = f_T(...f_1(z_0)).

    Args:
        loc, scale: ``(B, D)`` (any batch shape ``(..., D)``).
        flow: a :class:`PlanarFlow` or :class:`IAFFlow`.
        params: the flow's amortized tensors (batch shape first, as in each flow's doc).
        weights: the flow module's parameters by name for ``torch.func.functional_call``
            (``None``: the live module).

    ``rsample(sample_shape)``: ``sample_shape + (B, D)``; ``log_prob(z)``: ``z.shape[:-1]``,
    in nats; exact for any z (see the module's doc for the cache and the gradients).
    ``mean`` is a Monte Carlo estimate (:data:`MEAN_SAMPLES` draws from a generator seeded
    with 0, the same draws for every x and call, so it is deterministic and does not touch
    the global random state).
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, flow, params: dict,
                 weights: dict | None = None, cache: _Cache | None = None) -> None:
        self.loc, self.scale, self.flow, self.params, self.weights = \
            loc, scale, flow, params, weights
        self._cache = cache if cache is not None else _Cache()
        self._is_stopped = cache is not None          # a stop-gradient copy shares the cache
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def num_steps(self) -> int:
        return self.flow.num_steps

    def base(self) -> Distribution:
        """q_0 = N(loc, diag scale^2)."""
        return diagonal_normal(self.loc, self.scale)

    def _live_weights(self) -> dict:
        if self.weights is not None:
            return self.weights
        return {} if self.flow.nets is None else dict(self.flow.nets.named_parameters())

    def _stopped(self):
        """(params, weights), detached."""
        return ({k: v.detach() for k, v in self.params.items()},
                {k: v.detach() for k, v in self._live_weights().items()})

    def _forward(self, z0: torch.Tensor, keep: bool = False):
        z, log_det, inputs = z0, 0.0, []
        for t in range(self.num_steps):
            if keep:
                inputs.append(z.detach())
            z, ld = self.flow.step(t, z, self.params, self.weights)
            log_det = log_det + ld
        return z, self.base().log_prob(z0) - log_det, inputs

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """z_T = f(loc + scale * eps), eps ~ N(0, I): ``sample_shape + batch_shape + (D,)``,
        differentiable in every parameter (the reparameterization trick through the flow).
        Caches each step's input and log q for :meth:`log_prob`."""
        shape = self._extended_shape(sample_shape)
        eps = standard_normal(shape, self.loc.dtype, self.loc.device)
        z, log_q, inputs = self._forward(self.loc + self.scale * eps, keep=True)
        c = self._cache
        c.z, c.version, c.inputs, c.log_q = z, z._version, inputs, log_q.detach()
        c.live_log_q = log_q
        return z

    @property
    def mean(self) -> torch.Tensor:
        """E_q[z_T], estimated by the average of f(loc + scale * eps) over
        :data:`MEAN_SAMPLES` fixed draws eps (seed 0): ``batch_shape + (D,)``."""
        g = torch.Generator(device=self.loc.device)
        g.manual_seed(0)
        d = self.event_shape[0]
        eps = torch.randn((MEAN_SAMPLES, *([1] * len(self.batch_shape)), d), generator=g,
                          dtype=self.loc.dtype, device=self.loc.device)
        return self._forward(self.loc + self.scale * eps)[0].mean(0)

    def _lookup(self, z: torch.Tensor) -> _Cache | None:
        c = self._cache
        if c.z is None:
            return None
        if z is c.z:
            return c if z._version == c.version else None
        same = (z.shape == c.z.shape and z.dtype == c.z.dtype and z.device == c.z.device
                and z.stride() == c.z.stride() and z.storage_offset() == c.z.storage_offset()
                and z.untyped_storage().data_ptr() == c.z.untyped_storage().data_ptr()
                and z._version == c.version)
        return c if same else None

    @torch.no_grad()
    def invert(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The inputs z_0, ..., z_{T-1} of each step for ``z = z_T: (..., D)``, no gradient."""
        w = self._stopped()
        inputs = [z.detach()]
        for t in reversed(range(self.num_steps)):
            inputs.insert(0, self.flow.inverse_step(t, inputs[0], *w))
        return inputs[:-1]

    def _needs_grad(self) -> bool:
        tensors = [self.loc, self.scale, *self.params.values(), *self._live_weights().values()]
        return any(t.requires_grad for t in tensors)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) = log N(z_0; loc, scale) - sum_t log |det J_t(z_{t-1})|, nats, for
        ``z: (..., D)`` broadcast against the batch shape: ``(...)``.

        From the cache for the last ``rsample`` output (no inversion), else by inverting
        the flow. With gradients enabled, differentiable in z (d log q / dz exact) and in
        the parameters (d/dphi at fixed z), through one implicit-function step per flow
        step (see the module's doc)."""
        grad = torch.is_grad_enabled()
        z_grad = grad and z.requires_grad
        p_grad = grad and self._needs_grad()
        hit = self._lookup(z)
        if (hit is not None and z is hit.z and z_grad and hit.live_log_q is not None
                and hit.live_log_q.requires_grad and not self._is_stopped):
            # the very tensor rsample returned: log q(f(eps)) as rsample computed it, whose
            # derivative in phi is the total one (through z and directly), the same as the
            # implicit-function path gives, without building a Jacobian per step
            return hit.live_log_q
        if not (z_grad or p_grad):
            if hit is not None:
                return hit.log_q
            with torch.no_grad():
                return self._forward(self.invert(z)[0])[1]
        inputs = hit.inputs if hit is not None else self.invert(z)
        stopped = self._stopped()
        y = z
        for t in reversed(range(self.num_steps)):          # one implicit-function step each
            zt = inputs[t]
            r = y - y.detach()                             # 0, with y's derivative
            if p_grad:                                     # ... and -df_t/dparams
                fz = self.flow.step(t, zt, self.params, self.weights)[0]
                r = r - (fz - fz.detach())
            y = zt + self.flow.solve(t, zt, *stopped, r)
        return self._forward(y)[1]


@register_stop_gradient(FlowDistribution)
def _(d: FlowDistribution) -> FlowDistribution:
    params, weights = d._stopped()
    return FlowDistribution(d.loc.detach(), d.scale.detach(), d.flow, params,
                            weights if weights else None, d._cache)


# --------------------------------------------------------------------------- posterior heads
class PlanarPosterior(nn.Module):
    """The amortized planar-flow posterior: the encoder outputs (mu, log sigma) and, for each
    of the T steps, (u, w, b): ``num_inputs`` = 2D + T (2D + 1). u is made invertible with
    u^ = u + (m(w^T u) - w^T u) w / ||w||^2, m(a) = -1 + softplus(a) (Rezende & Mohamed 2015,
    Appendix A.1), so w^T u^ = m(w^T u) > -1. No parameters of its own."""

    def __init__(self, latent_dim: int, flow_steps: int = 4, **_) -> None:
        super().__init__()
        self.latent_dim, self.flow_steps = latent_dim, check_flow_steps(flow_steps)
        self.num_inputs = 2 * latent_dim + self.flow_steps * (2 * latent_dim + 1)
        self.flow = PlanarFlow(self.flow_steps)

    def forward(self, h: torch.Tensor) -> FlowDistribution:
        d, t = self.latent_dim, self.flow_steps
        loc, log_scale = h[..., :d], h[..., d:2 * d]
        rest = h[..., 2 * d:].unflatten(-1, (t, 2 * d + 1))
        u, w, b = rest[..., :d], rest[..., d:2 * d], rest[..., 2 * d]
        return FlowDistribution(loc, log_scale.exp(), self.flow,
                                {"u_hat": planar_u_hat(u, w), "w": w, "b": b})


class IAFPosterior(nn.Module):
    """The inverse-autoregressive-flow posterior: the encoder outputs (mu, log sigma, h),
    ``num_inputs`` = 2D + C, and T MADE networks (this module's parameters, inference
    parameters phi) map (z, h) to each step's (m, s) (Kingma et al. 2016, Algorithm 1).

    Args:
        latent_dim: D.
        flow_steps: T.
        context_dim: C (default D).
        hidden: the MADEs' hidden width (default 4 D; two hidden layers).
    """

    def __init__(self, latent_dim: int, flow_steps: int = 4, context_dim: int | None = None,
                 hidden: int | None = None, **_) -> None:
        super().__init__()
        c = latent_dim if context_dim is None else context_dim
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ConfigError(f"flow_context_dim must be a positive integer, got {c!r}")
        self.latent_dim, self.flow_steps, self.context_dim = \
            latent_dim, check_flow_steps(flow_steps), c
        self.num_inputs = 2 * latent_dim + c
        self.made = IAFNetworks(latent_dim, c, self.flow_steps, hidden or 4 * latent_dim)
        self.flow = IAFFlow(self.made)

    def forward(self, h: torch.Tensor) -> FlowDistribution:
        d = self.latent_dim
        return FlowDistribution(h[..., :d], h[..., d:2 * d].exp(), self.flow,
                                {"h": h[..., 2 * d:]})


__all__ = ["planar_u_hat", "FlowDistribution", "IAFFlow", "IAFNetworks", "IAFPosterior", "MADE",
           "PlanarFlow", "PlanarPosterior"]
