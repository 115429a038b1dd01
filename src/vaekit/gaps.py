"""Inference suboptimality: the inference gap of a VAE split into an approximation gap and an
amortization gap (Cremer, Li & Duvenaud 2018, "Inference suboptimality in variational
autoencoders", ICML, Sec. 3 and Table 1 for the definitions, Table 2 for results).

For a data point x, an amortized posterior q(z|x) = head(h(x)) and the best member q* of the
same variational family for that point,

    inference gap      G(x)   = log p(x) - ELBO(q)                                  (1)
    approximation gap  G_A(x) = log p(x) - ELBO(q*)  = KL(q* || p(z|x))             (2)
    amortization gap   G_Am(x) = ELBO(q*) - ELBO(q)  = KL(q || p(z|x)) - KL(q* || p(z|x)) (3)

so that G = G_A + G_Am exactly, point by point (log p(x) - ELBO(q) = KL(q || p(z|x)): Kingma &
Welling 2014, eq. 1). All values are in nats per data point.

How q* is found: the local variational parameters are the posterior head's input features
``h`` (the encoder network's output for a VAE: a Gaussian's mean and log standard deviation,
or a flow posterior's per-point features), so ``q* = head(h*)`` stays in q's family whatever
the head is. Every point's ``h`` starts at the encoder's output and is optimised with Adam on
that point's reparameterized ELBO, all points at once as independent parameters, with the
model's weights fixed. The gradient is the path derivative of "sticking the landing" (Roeder,
Wu & Duvenaud 2017, NeurIPS: log q is scored with the features detached), an unbiased ELBO
gradient whose variance vanishes as q* reaches the exact posterior. Each point stops when
the mean of its ELBO estimates over a window of steps (fresh draws: a smoothed estimate, not
biased upwards by selection) has not risen by more than ``tolerance`` nats for ``patience``
windows, or after ``steps`` steps.

log p(x) is estimated by the importance-weighted bound L_K (Burda et al. 2016, eq. 8) with
the defensive mixture proposal r = (q + q*) / 2, K/2 samples drawn from each (Hesterberg 1995,
"Weighted average importance sampling and defensive mixture distributions", Technometrics;
Owen & Zhou 2000, JASA, Sec. 2-3): log (1/K) sum_k p(x, z_k) / r(z_k), a stochastic lower
bound of log p(x) (Jensen) whose weights are at most twice those of either proposal alone
(w <= 2 p(x, z) / q*(z) and w <= 2 p(x, z) / q(z)), so it is never much worse than the
better of the two. For a poor encoder L_K with q alone stays far below log p(x) and the
approximation gap would come out negative; the larger of the two separate bounds would be
biased upwards. L_K with q alone, the number ``vaekit evaluate`` reports, is given too. The
ELBOs of q and q* are Monte-Carlo averages of the log-weights log p(x, z_m) - log q(z_m|x)
over their own samples (whose variance vanishes at the exact posterior), each with a
standard error per point.

Optionally (``flow_steps``) q* is followed by a few planar steps with per-point parameters
(Rezende & Mohamed 2015), optimised from the identity: the approximation gap that is left
within that richer local family (Cremer et al. 2018 compare Gaussian and flow families the
same way). Its optimisation has the ordinary reparameterized gradient (the flow's density is
known at its own draws only), whose noise does not vanish at the optimum: where the Gaussian
is already tight, ELBO(q*_flow) can come out a few hundredths of a nat below ELBO(q*).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributions import Distribution

from . import flows
from .errors import ConfigError, VaekitWarning
from .evaluation import DEFAULT_MAX_ROWS, importance_sampling_terms, mean_and_se, model_device

__all__ = ["InferenceGaps", "Optimised", "elbo_estimate", "inference_gaps", "local_posterior",
           "mixture_bound", "optimise_features", "refuse_without_gaps", "run_gaps"]

Head = Callable[[torch.Tensor], Distribution]
BETAS = (0.9, 0.999)


def local_posterior(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Head]:
    """``(h, head)`` for ``x: (B, *event_shape)``, as the model's family gives them
    (:meth:`vaekit.families.Family.local_posterior`): ``h: (B, F)`` the encoder's features,
    q(z|x) = ``head(h)``.

    Raises:
        ConfigError: the family has no ``gaps`` capability (mixtures, VQ-VAE, autoencoders,
            a hierarchical VAE); the message names the families that have it.
    """
    from .families import family_of
    family = family_of(model)
    refuse_without_gaps(family)
    return family.local_posterior(model, x)


def refuse_without_gaps(family) -> None:
    """Raise :class:`~vaekit.errors.ConfigError`, in one line naming the families that have
    it, when ``family`` has no ``gaps`` capability."""
    from .families import FAMILIES
    if not family.supports("gaps"):
        able = [n for n in FAMILIES if FAMILIES.get(n).supports("gaps")]
        raise ConfigError(f"the inference gaps need per-point variational parameters, which "
                          f"a {family.name} does not have; they apply to: {', '.join(able)}")


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """The model's parameters without gradients (restored afterwards), in eval mode."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    model.eval()
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _log_weights(model, x: torch.Tensor, z: torch.Tensor, q: Distribution) -> torch.Tensor:
    """log p(x, z_k) - log q(z_k|x), ``(K, B)`` nats: their mean over z_k ~ q is the ELBO
    (Kingma & Welling 2014, eq. 3)."""
    return model.decoder(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)


@torch.no_grad()
def elbo_estimate(model, x: torch.Tensor, q: Distribution, num_samples: int, *,
                  max_rows: int = DEFAULT_MAX_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """A Monte-Carlo estimate of ELBO(q) = E_q[log p(x, z) - log q(z)] for each point, in nats,
    with its standard error: ``(mean, se)``, each ``(B,)`` (float64, on x's device).

    Args:
        model: provides ``prior()`` and ``decoder(z)``.
        x: ``(B, *event_shape)``.
        q: batch shape ``(B,)``.
        num_samples: M draws z_m ~ q per point (in chunks of at most ``max_rows`` (sample,
            point) rows); the estimate is mean_m log w_m, se = std_m / sqrt(M) of the
            log-weights (:func:`_log_weights`).
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 for a standard error, got {num_samples}")
    chunk = max(1, min(num_samples, max_rows // max(1, x.shape[0])))
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    total_sq = torch.zeros_like(total)
    shift = None                       # the first chunk's mean: sums of squares stay small
    done = 0
    while done < num_samples:
        c = min(chunk, num_samples - done)
        v = _log_weights(model, x, q.sample((c,)), q).double()
        if shift is None:
            shift = v.mean(0)
        v = v - shift
        total += v.sum(0)
        total_sq += (v ** 2).sum(0)
        done += c
    mean = total / num_samples
    var = (total_sq - num_samples * mean ** 2).clamp_min(0) / (num_samples - 1)
    return mean + shift, (var / num_samples).sqrt()


@dataclass
class Optimised:
    """What :func:`optimise_features` returns: the optimised features ``(N, F)``; per point
    the first and the last window's mean ELBO estimate ``(N,)`` (nats; the smoothed estimate
    the stopping rule watches) and the step at which the point stopped (``(N,)``, ``steps``
    for the points that were still gaining at the limit); and ``at_limit``, ``(N,)`` bool."""

    features: torch.Tensor
    first_window: torch.Tensor
    last_window: torch.Tensor
    stop_step: torch.Tensor
    at_limit: torch.Tensor


def optimise_features(model, x: torch.Tensor, h0: torch.Tensor, head: Head, *,
                      steps: int = 2000, lr: float = 1e-2, train_samples: int = 10,
                      window: int = 50, patience: int = 4, tolerance: float = 0.01,
                      seed: int = 0, path_derivative: bool = True) -> Optimised:
    """Optimise each point's features ``h`` for its own ELBO, starting at ``h0``.

    Every step draws ``train_samples`` reparameterized z ~ head(h) per point and takes one
    Adam step (learning rate ``lr``) on the sum over points of mean_k [log p(x, z_k) - log
    head(h.detach())(z_k)]: the path-derivative ("sticking the landing") gradient of each
    point's ELBO (Roeder, Wu & Duvenaud 2017), unbiased, and of zero variance at the exact
    posterior (each point's gradient is its own: the points are independent parameters).

    Stopping rule, per point, on a smoothed estimate: the mean of the ELBO estimates of the
    last ``window`` steps (``window * train_samples`` fresh draws, so no draw is reused and
    the estimate is not biased upwards by selection, as a fixed-seed estimate would be). A
    point whose window mean has not risen more than ``tolerance`` nats above its reference
    (the window mean at its last such gain) for ``patience`` windows in a row stops: its
    features are frozen where they are. Every point stops after ``steps`` steps.

    Args:
        model: provides ``prior()`` and ``decoder(z)``; its weights are not changed.
        x: ``(N, *event_shape)`` on the model's device; ``h0: (N, F)``.
        head: ``h -> q`` with batch shape ``(N,)``.
        seed: the seed of the draws (the caller's random state is left as it was).
        path_derivative: the STL gradient (needs ``head(h').log_prob`` at any z); False: the
            ordinary reparameterized gradient, with log q scored by the same q (a flow
            posterior whose density is known only at its own draws, :class:`PlanarFlow`).

    Returns:
        :class:`Optimised`.
    """
    for name, v in (("steps", steps), ("train_samples", train_samples), ("window", window),
                    ("patience", patience)):
        if v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v}")
    if not lr > 0:
        raise ConfigError(f"the learning rate must be positive, got {lr}")
    if not tolerance >= 0:
        raise ConfigError(f"the tolerance must be >= 0 nats, got {tolerance}")
    device = x.device
    n = h0.shape[0]
    fork = [device] if device.type == "cuda" else []
    with _frozen(model), torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        h = h0.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([h], lr=lr, betas=BETAS)
        total = torch.zeros(n, dtype=torch.float64, device=device)
        reference = torch.full((n,), -math.inf, dtype=torch.float64, device=device)
        first = last = None
        bad = torch.zeros(n, dtype=torch.long, device=device)
        active = torch.ones(n, dtype=torch.bool, device=device)
        stop_step = torch.full((n,), steps, dtype=torch.long, device=device)
        frozen_h = h0.detach().clone()
        for step in range(1, steps + 1):
            opt.zero_grad(set_to_none=True)
            q = head(h)
            z = q.rsample((train_samples,))
            # STL: log q scored with the features detached (q's score term dropped)
            log_w = _log_weights(model, x, z, head(h.detach()) if path_derivative else q)
            (-log_w.mean(0).sum()).backward()
            opt.step()
            with torch.no_grad():
                h[~active] = frozen_h[~active]      # stopped points stay where they stopped
                total += log_w.detach().mean(0).double()
            if step % window:
                continue
            mean = total / window
            total.zero_()
            first = mean.clone() if first is None else first
            last = torch.where(active, mean, last) if last is not None else mean.clone()
            gained = active & (mean > reference + tolerance)
            reference[gained] = mean[gained]
            bad[gained] = 0
            bad[active & ~gained] += 1
            stopping = active & (bad >= patience)
            stop_step[stopping] = step
            frozen_h[stopping] = h.detach()[stopping]
            active &= ~stopping
            if not active.any():
                break
        features = torch.where(active[:, None], h.detach(), frozen_h)
    if first is None:                               # fewer steps than one window
        first = last = torch.full((n,), math.nan, dtype=torch.float64, device=device)
    return Optimised(features, first.cpu(), last.cpu(), stop_step.cpu(), active.cpu())


class PlanarFlow(Distribution):
    """q(z) = a base distribution followed by planar flows, z_t = z_{t-1} + u^_t tanh(w_t^T
    z_{t-1} + b_t), with log q(z_T) = log q_0(z_0) - sum_t log |1 + u^_t^T psi_t(z_{t-1})|,
    psi_t(z) = (1 - tanh^2(w_t^T z + b_t)) w_t, and u^ = u + (m(w^T u) - w^T u) w / |w|^2,
    m(a) = -1 + softplus(a), which keeps each step invertible (Rezende & Mohamed 2015,
    "Variational inference with normalizing flows", ICML, eqs. 10-12 and Appendix A).

    Args:
        base: q_0 with batch shape ``(N,)`` and event shape ``(L,)``, reparameterizable.
        u, w: ``(N, T, L)``; b: ``(N, T)``: per-point flow parameters (T steps).

    The density is known at the flow's own draws only (a planar step has no closed-form
    inverse): :meth:`log_prob` takes the tensor the last :meth:`rsample` / :meth:`sample`
    returned.
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, base: Distribution, u: torch.Tensor, w: torch.Tensor,
                 b: torch.Tensor) -> None:
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)
        self.base, self.u, self.w, self.b = base, u, w, b
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def rsample(self, sample_shape=()) -> torch.Tensor:
        z = self.base.rsample(sample_shape)                       # (*S, N, L)
        log_q = self.base.log_prob(z)
        steps = flows.PlanarFlow(self.u.shape[1])                 # the posterior's own steps
        params = {"u_hat": flows.planar_u_hat(self.u, self.w), "w": self.w, "b": self.b}
        for t in range(steps.num_steps):
            z, log_det = steps.step(t, z, params)
            log_q = log_q - log_det
        self._last = (z, log_q)
        return z

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._last is None or value is not self._last[0]:
            raise NotImplementedError("a planar flow's density is known at its own draws only")
        return self._last[1]


def planar_head(head: Head, num_features: int, latent_dim: int, steps: int) -> Head:
    """``h -> PlanarFlow(head(h[..., :F]), u, w, b)``, the flow's parameters read from the
    rest of ``h``: ``(N, F + steps * (2 L + 1))`` features per point (:class:`PlanarFlow`)."""
    size = steps * latent_dim

    def flow(h: torch.Tensor) -> PlanarFlow:
        rest = h[..., num_features:]
        u = rest[..., :size].reshape(*h.shape[:-1], steps, latent_dim)
        w = rest[..., size:2 * size].reshape(*h.shape[:-1], steps, latent_dim)
        return PlanarFlow(head(h[..., :num_features]), u, w, rest[..., 2 * size:])
    return flow


def planar_start(h: torch.Tensor, latent_dim: int, steps: int, scale: float = 0.1
                 ) -> torch.Tensor:
    """Features of :func:`planar_head` that start at the Gaussian ``h`` itself: u = 0 (every
    step the identity), w ~ N(0, scale^2) (drawn from the current generator; w = 0 would be
    a saddle), b = 0."""
    n = h.shape[0]
    return torch.cat([h, torch.zeros(n, steps * latent_dim, dtype=h.dtype, device=h.device),
                      scale * torch.randn(n, steps * latent_dim, dtype=h.dtype,
                                          device=h.device),
                      torch.zeros(n, steps, dtype=h.dtype, device=h.device)], -1)


class _GivenPosterior:
    """A model whose encoder returns a given q (for :func:`importance_sampling_terms`)."""

    def __init__(self, model, q: Distribution) -> None:
        self.model, self.q = model, q

    def encoder(self, x):
        return self.q

    def prior(self):
        return self.model.prior()

    def decoder(self, z):
        return self.model.decoder(z)


@torch.no_grad()
def mixture_bound(model, x: torch.Tensor, q: Distribution, q_star: Distribution,
                  num_samples: int, max_rows: int = DEFAULT_MAX_ROWS
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """L_K with the defensive mixture proposal r = (q + q*) / 2 and its Monte-Carlo standard
    error, ``(estimate, se)``, each ``(N,)`` nats (float64).

    K/2 draws from each of q and q* (K rounded up to even); with w = p(x, z) / r(z), the
    estimate is log p^ = log (1/K) sum_k w_k, streamed over K with running log-sum-exps.
    p^ averaged over the two equal halves is unbiased for p(x) (stratified sampling from a
    defensive mixture: Hesterberg 1995; Owen & Zhou 2000, Sec. 3), so log p^ is a stochastic
    lower bound of log p(x) (Burda et al. 2016, Theorem 1, with r as the proposal). The se is
    the delta method's, sd(p^) / p^, with the stratified variance of p^: (K/2) (v_q + v_q*) /
    K^2 from the within-half variances v of w (it understates the error when the weights are
    heavy-tailed, as any variance estimated from the same weights does)."""
    half = max(2, math.ceil(num_samples / 2))
    chunk = max(1, min(half, max_rows // max(1, 2 * x.shape[0])))
    prior = model.prior()
    ninf = torch.full((2, x.shape[0]), -math.inf, dtype=torch.float64, device=x.device)
    log_s, log_s2 = ninf.clone(), ninf.clone()          # per half: log sum w, log sum w^2
    done = 0
    while done < half:
        c = min(chunk, half - done)
        z = torch.cat([q.sample((c,)), q_star.sample((c,))])         # (2c, N, D_z)
        log_r = torch.logaddexp(q.log_prob(z), q_star.log_prob(z)) - math.log(2)
        log_w = (model.decoder(z).log_prob(x) + prior.log_prob(z) - log_r).double()
        log_w = log_w.reshape(2, c, -1)                               # (half, c, N)
        log_s = torch.logaddexp(log_s, log_w.logsumexp(1))
        log_s2 = torch.logaddexp(log_s2, (2 * log_w).logsumexp(1))
        done += c
    total = log_s.logsumexp(0)                                        # log sum_k w_k
    s = (log_s - total).exp()                                         # sums of w / sum w
    s2 = (log_s2 - 2 * total).exp()
    within = ((s2 - s ** 2 / half) / (half - 1)).clamp_min(0)         # variance per half
    se = (half * within.sum(0)).sqrt()
    return total - math.log(2 * half), se


_SUMMARY = ("log_likelihood", "log_likelihood_q", "elbo_q", "elbo_q_star", "inference_gap",
            "approximation_gap", "amortization_gap")


@dataclass
class InferenceGaps:
    """The gaps of N points, in nats (Cremer et al. 2018, Table 1).

    Per point, each ``(N,)`` float64 on the CPU: ``log_likelihood`` (L_K with the mixture
    (q + q*) / 2, :func:`mixture_bound`), ``log_likelihood_q`` (L_K with q alone, as ``vaekit
    evaluate``), ``elbo_q`` and ``elbo_q_star``; the Monte-Carlo standard errors
    ``log_likelihood_mc_se``, ``elbo_q_mc_se`` and ``elbo_q_star_mc_se``; ``stop_step`` and
    ``at_limit`` (the optimisation's, see :class:`Optimised`); with a flow (``flow_steps``
    of :func:`inference_gaps`), ``elbo_q_star_flow`` and its ``elbo_q_star_flow_mc_se``, and
    the property ``approximation_gap_flow``. The gaps are the properties
    ``inference_gap`` (eq. 1), ``approximation_gap`` (2) and ``amortization_gap`` (3);
    inference = approximation + amortization point by point.

    :meth:`summary` gives each quantity's mean over the points with two standard errors:
    ``*_se`` = std over points / sqrt(N) (what another sample of points would change), and
    ``*_mc_se``, the Monte-Carlo error of the mean from the draws alone, sqrt(sum_i se_i^2) / N
    over the estimates a quantity is made of (the three estimates draw independently).
    """

    log_likelihood: torch.Tensor
    log_likelihood_mc_se: torch.Tensor
    log_likelihood_q: torch.Tensor
    elbo_q: torch.Tensor
    elbo_q_mc_se: torch.Tensor
    elbo_q_star: torch.Tensor
    elbo_q_star_mc_se: torch.Tensor
    stop_step: torch.Tensor
    at_limit: torch.Tensor
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    log_jacobian: float | None = None
    elbo_q_star_flow: torch.Tensor | None = None
    elbo_q_star_flow_mc_se: torch.Tensor | None = None

    @property
    def approximation_gap_flow(self) -> torch.Tensor | None:
        """log p(x) - ELBO(q*_flow): what is left with a local planar flow after q*."""
        if self.elbo_q_star_flow is None:
            return None
        return self.log_likelihood - self.elbo_q_star_flow

    @property
    def inference_gap(self) -> torch.Tensor:
        return self.log_likelihood - self.elbo_q

    @property
    def approximation_gap(self) -> torch.Tensor:
        return self.log_likelihood - self.elbo_q_star

    @property
    def amortization_gap(self) -> torch.Tensor:
        return self.elbo_q_star - self.elbo_q

    @property
    def num_points(self) -> int:
        return int(self.elbo_q.numel())

    def in_original_units(self, log_jacobian: float) -> InferenceGaps:
        """The result for data the model saw standardised, in the original units: each
        log-density of x gains ``log_jacobian`` = -sum_j log std_j nats (see
        :meth:`vaekit.evaluation.Evaluation.in_original_units`); the gaps do not change."""
        import dataclasses
        return dataclasses.replace(
            self, log_likelihood=self.log_likelihood + log_jacobian,
            log_likelihood_q=self.log_likelihood_q + log_jacobian,
            elbo_q=self.elbo_q + log_jacobian, elbo_q_star=self.elbo_q_star + log_jacobian,
            elbo_q_star_flow=(None if self.elbo_q_star_flow is None
                              else self.elbo_q_star_flow + log_jacobian),
            log_jacobian=log_jacobian)

    def summary(self) -> dict:
        """Means over the points with their standard errors (see the class docstring), the
        optimisation's steps (median, maximum, how many points reached the limit) and the
        settings."""
        n = self.num_points
        out: dict = {"num_points": n, **self.settings}
        values = self.per_point()
        for key in _SUMMARY:
            out[key], out[f"{key}_se"] = mean_and_se(values[key])

        def mc(*se: torch.Tensor) -> float:
            return float(sum(v.pow(2).sum() for v in se).sqrt()) / n
        ll, q, star = self.log_likelihood_mc_se, self.elbo_q_mc_se, self.elbo_q_star_mc_se
        out.update({"log_likelihood_mc_se": mc(ll), "elbo_q_mc_se": mc(q),
                    "elbo_q_star_mc_se": mc(star), "inference_gap_mc_se": mc(ll, q),
                    "approximation_gap_mc_se": mc(ll, star),
                    "amortization_gap_mc_se": mc(q, star)})
        if self.elbo_q_star_flow is not None:
            for key in ("elbo_q_star_flow", "approximation_gap_flow"):
                out[key], out[f"{key}_se"] = mean_and_se(values[key])
            flow = self.elbo_q_star_flow_mc_se
            out.update({"elbo_q_star_flow_mc_se": mc(flow),
                        "approximation_gap_flow_mc_se": mc(ll, flow)})
        out["optimisation"] = {"median_steps": int(self.stop_step.median()),
                               "max_steps": int(self.stop_step.max()),
                               "at_limit": int(self.at_limit.sum())}
        out["log_jacobian"] = self.log_jacobian
        out["seconds"] = self.seconds
        return out

    def per_point(self) -> dict[str, torch.Tensor]:
        """Every per-point value by name, ``(N,)`` each: the estimates, their Monte-Carlo
        standard errors, the three gaps and the optimisation's ``stop_step`` and
        ``at_limit``."""
        return {"log_likelihood": self.log_likelihood,
                "log_likelihood_mc_se": self.log_likelihood_mc_se,
                "log_likelihood_q": self.log_likelihood_q,
                "elbo_q": self.elbo_q, "elbo_q_mc_se": self.elbo_q_mc_se,
                "elbo_q_star": self.elbo_q_star, "elbo_q_star_mc_se": self.elbo_q_star_mc_se,
                "inference_gap": self.inference_gap,
                "approximation_gap": self.approximation_gap,
                "amortization_gap": self.amortization_gap,
                "stop_step": self.stop_step, "at_limit": self.at_limit,
                **({} if self.elbo_q_star_flow is None else {
                    "elbo_q_star_flow": self.elbo_q_star_flow,
                    "elbo_q_star_flow_mc_se": self.elbo_q_star_flow_mc_se,
                    "approximation_gap_flow": self.approximation_gap_flow})}

    def to_dict(self) -> dict:
        """:meth:`summary` and, under ``points``, every per-point value (lists)."""
        points = {k: v.tolist() for k, v in self.per_point().items()}
        return {"kind": "inference_gaps", **self.summary(), "points": points}


def inference_gaps(model, x: torch.Tensor, *, features: torch.Tensor | None = None,
                   head: Head | None = None, num_samples: int = 5000,
                   elbo_samples: int = 1000, steps: int = 2000, lr: float = 1e-2,
                   train_samples: int = 10, window: int = 50, patience: int = 4,
                   tolerance: float = 0.01, seed: int = 0, flow_steps: int = 0,
                   max_rows: int = DEFAULT_MAX_ROWS,
                   log: Callable[[str], None] | None = None) -> InferenceGaps:
    """The inference, approximation and amortization gaps of ``x: (N, *event_shape)``.

    Args:
        model: provides ``prior()`` and ``decoder(z)``; with ``features`` and ``head`` not
            given, its family must have the ``gaps`` capability (:func:`local_posterior`).
        features, head: the amortized q = ``head(features)``, ``features: (N, F)`` (for a
            model outside the families, e.g. :class:`~vaekit.models.LinearGaussian`'s
            ``local_posterior``).
        num_samples: K of the L_K estimates of log p(x) (with q and with q*).
        elbo_samples: M samples per point of each ELBO estimate.
        steps, lr, train_samples, window, patience, tolerance: the optimisation of q*
            (:func:`optimise_features`).
        seed: everything is drawn from generators seeded with it (the caller's random state
            is left as it was): the same call gives the same numbers.
        flow_steps: T > 0 also optimises, per point, q* followed by T planar steps of its own
            (:class:`PlanarFlow`; started at q* with every step the identity, with the same
            settings and the ordinary reparameterized gradient), and reports its ELBO and the
            approximation gap that is left (Cremer et al. 2018, Sec. 3: a more expressive
            local family). log p(x) stays the (q + q*)/2 estimate (the flow's density is
            known at its own draws only).
        max_rows: at most this many (sample, point) rows are decoded at once in the
            estimates.
        log: a line when the optimisation ends (None: quiet).

    Returns:
        :class:`InferenceGaps`.

    Raises:
        ConfigError: a family without the ``gaps`` capability; bad settings.
    """
    if num_samples < 1:
        raise ConfigError(f"num_samples must be a positive integer, got {num_samples}")
    if elbo_samples < 2:
        raise ConfigError(f"elbo_samples must be >= 2 (for a standard error), got "
                          f"{elbo_samples}")
    if flow_steps < 0:
        raise ConfigError(f"flow_steps must be >= 0, got {flow_steps}")
    start = time.perf_counter()
    device = model_device(model)
    x = x.to(device)
    fork = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork), _frozen(model):
        torch.manual_seed(seed)
        if features is None or head is None:
            with torch.no_grad():
                features, head = local_posterior(model, x)
        h0 = features.detach()
        with torch.no_grad():
            q = head(h0)
            ll_q = _streamed_bound(model, x, q, num_samples, max_rows)
            elbo_q, elbo_q_se = elbo_estimate(model, x, q, elbo_samples, max_rows=max_rows)
        opt = optimise_features(model, x, h0, head, steps=steps, lr=lr,
                                train_samples=train_samples, window=window,
                                patience=patience, tolerance=tolerance, seed=seed + 1)
        if log is not None:
            log(f"optimised q* of {x.shape[0]} points: median {int(opt.stop_step.median())} "
                f"steps, {int(opt.at_limit.sum())} still gaining at the limit of {steps}; ELBO "
                f"(window means) {float(opt.first_window.mean()):.2f} -> "
                f"{float(opt.last_window.mean()):.2f}")
        with torch.no_grad():
            q_star = head(opt.features)
            ll, ll_se = mixture_bound(model, x, q, q_star, num_samples, max_rows)
            elbo_star, elbo_star_se = elbo_estimate(model, x, q_star, elbo_samples,
                                                    max_rows=max_rows)
        flow = {}
        if flow_steps:
            latent = q.event_shape[-1]
            flow_head = planar_head(head, h0.shape[-1], latent, flow_steps)
            torch.manual_seed(seed + 2)
            opt_flow = optimise_features(
                model, x, planar_start(opt.features, latent, flow_steps), flow_head,
                steps=steps, lr=lr, train_samples=train_samples, window=window,
                patience=patience, tolerance=tolerance, seed=seed + 3, path_derivative=False)
            with torch.no_grad():
                flow["elbo_q_star_flow"], flow["elbo_q_star_flow_mc_se"] = elbo_estimate(
                    model, x, flow_head(opt_flow.features), elbo_samples, max_rows=max_rows)
            if log is not None:
                log(f"optimised q*_flow ({flow_steps} planar steps): median "
                    f"{int(opt_flow.stop_step.median())} steps, {int(opt_flow.at_limit.sum())} "
                    f"still gaining at the limit")
    settings = {"num_samples": int(num_samples), "elbo_samples": int(elbo_samples),
                "steps": int(steps), "lr": float(lr), "train_samples": int(train_samples),
                "window": int(window), "patience": int(patience),
                "tolerance": float(tolerance), "seed": int(seed),
                "flow": f"planar, {flow_steps} steps" if flow_steps else None}
    cpu = {k: v.detach().double().cpu() for k, v in (
        ("log_likelihood", ll), ("log_likelihood_mc_se", ll_se), ("log_likelihood_q", ll_q),
        ("elbo_q", elbo_q), ("elbo_q_mc_se", elbo_q_se), ("elbo_q_star", elbo_star),
        ("elbo_q_star_mc_se", elbo_star_se), *flow.items())}
    result = InferenceGaps(**cpu, stop_step=opt.stop_step, at_limit=opt.at_limit,
                           settings=settings, seconds=round(time.perf_counter() - start, 3))
    s = result.summary()
    if s["amortization_gap"] < -4 * s["amortization_gap_mc_se"]:
        warnings.warn(f"the optimised q* came out worse than the amortized q (amortization "
                      f"gap {s['amortization_gap']:.3f} nats): the optimisation diverged; try "
                      f"a smaller learning rate", VaekitWarning, stacklevel=2)
    return result


def _streamed_bound(model, x: torch.Tensor, q: Distribution, num_samples: int,
                    max_rows: int) -> torch.Tensor:
    """L_K = log mean_k w_k with z_k ~ q, per point ``(N,)``, streamed over K
    (:func:`vaekit.evaluation.importance_sampling_terms`; Burda et al. 2016, eq. 8)."""
    chunk = max(1, max_rows // max(1, x.shape[0]))
    return importance_sampling_terms(_GivenPosterior(model, q), x, num_samples,
                                     chunk)["log_likelihood"]


def run_gaps(run, *, num_points: int = 100, num_samples: int = 5000, elbo_samples: int = 1000,
             steps: int = 2000, lr: float = 1e-2, seed: int = 0, split: str = "test",
             log: Callable[[str], None] | None = None, **options) -> tuple[dict, list]:
    """:func:`inference_gaps` of a run's first ``num_points`` points of ``split`` (as
    evaluated: binarized once under dynamic binarization), written into the run directory,
    atomically: ``gaps.json`` (:meth:`InferenceGaps.to_dict` with the run's context) and
    ``gaps.png`` (:func:`vaekit.plotting.plot_inference_gaps`); another split's or the last
    checkpoint's files are named as ``vaekit evaluate`` names them (``gaps-valid.json``,
    ``gaps-last.json``). Log-densities of standardised data are in the original units.
    ``options``: the other arguments of :func:`inference_gaps`.

    Returns:
        ``(the gaps.json dict, [the paths written])``.

    Raises:
        ConfigError: the run's family has no ``gaps`` capability (checked before anything
            is computed); bad settings.
        CheckpointError: a trainer holds the run (:func:`vaekit.io.run_lock`).
    """
    from . import plotting
    from .data import eval_split
    from .io import run_lock, write_json
    refuse_without_gaps(run.family)
    x = eval_split(run.dataset, split, run.binarization)[:num_points]
    with run_lock(run.path, "gaps"):
        result = inference_gaps(run.model, x, num_samples=num_samples,
                                elbo_samples=elbo_samples, steps=steps, lr=lr, seed=seed,
                                log=log, **options)
        if run.dataset.standardization is not None:
            result = result.in_original_units(run.dataset.standardization.log_abs_det)
        d = {"kind": "inference_gaps", "dataset": run.dataset.name, "split": split,
             "checkpoint": run.checkpoint, "run_dir": str(run.path),
             **{k: v for k, v in result.to_dict().items() if k != "kind"}}
        stem = "gaps" + ("" if split == "test" else f"-{split}") + (
            "" if run.checkpoint == "best" else f"-{run.checkpoint}")
        json_path, png_path = run.path / f"{stem}.json", run.path / f"{stem}.png"
        title = (f"inference gaps of {run.path.name} ({run.checkpoint}), the first "
                 f"{result.num_points} {split} points")
        figure = plotting.plot_inference_gaps(d, title=title)   # drawn before anything is written
        write_json(json_path, d)
        plotting.save_figure(figure, png_path)
    return d, [json_path, png_path]
