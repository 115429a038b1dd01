"""Evaluation: test log-likelihood by importance sampling, ELBO terms, active units.

The log-likelihood estimate is the importance-weighted bound L_k with k = 5000 by default
(Burda et al. 2016, Sec. 5: "log p(x) ... estimated using k = 5000"), a stochastic lower bound
that converges to log p(x) as k grows. The k samples are drawn in chunks and combined with a
running log-sum-exp, so memory does not grow with k.
"""

from __future__ import annotations

import math
import time
import warnings

import torch
from tqdm.auto import tqdm

from .distributions import analytic_kl
from .errors import ConfigError

DEFAULT_MAX_ROWS = 2048   # decoder rows (chunk x batch) at once: bounds memory, stays in cache
COMPILE_MIN_ROWS = 10_000_000   # compile="auto" compiles when num_samples x N reaches this


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (the CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _batch_and_chunk(n: int, num_samples: int, max_rows: int, batch_size: int | None):
    b = batch_size or max(1, max_rows // min(num_samples, 128))
    b = max(1, min(b, n))
    c = max(1, min(num_samples, max_rows // b))
    return b, c


def log_joint_terms(model, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(x|z), log p(z))``, each ``(K, B)`` nats, for ``z: (K, B, D_z)``, ``x: (B, D)``."""
    return model.decoder(z).log_prob(x), model.prior().log_prob(z)


class _CompiledLogJoint:
    """:func:`log_joint_terms` through ``torch.compile`` (one graph for every shape:
    ``dynamic=True``), which fuses the decoder's bias, tanh and the Bernoulli log-density into
    the matrix products' neighbours instead of one pass over memory each. Should compiling
    or running the compiled code fail (no C++ compiler, an unsupported model), it warns once
    and computes eagerly from then on."""

    def __init__(self) -> None:
        self._fn = None
        self.failed = False

    def __call__(self, model, z, x):
        if not self.failed:
            try:
                if self._fn is None:
                    self._fn = torch.compile(log_joint_terms, dynamic=True)
                return self._fn(model, z, x)
            except Exception as e:  # noqa: BLE001 - any compiler failure: fall back
                self.failed = True
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); "
                              "evaluating without it (slower, same result)", stacklevel=2)
        return log_joint_terms(model, z, x)


compiled_log_joint = _CompiledLogJoint()


def use_compile(compile: bool | str, rows: int) -> bool:
    """Resolve ``compile`` (``True``, ``False`` or ``"auto"``: when ``rows`` = num_samples x N
    reaches :data:`COMPILE_MIN_ROWS`, where the seconds of compiling are repaid).

    Raises:
        ValueError: another value.
    """
    if compile == "auto":
        return rows >= COMPILE_MIN_ROWS
    if isinstance(compile, bool):
        return compile
    raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")


@torch.no_grad()
def importance_sampling_terms(model, x: torch.Tensor, num_samples: int,
                              chunk_size: int, compile: bool = False) -> dict[str, torch.Tensor]:
    """One batch: streamed estimates from ``num_samples`` draws z_k ~ q(z|x).

    Args:
        x: ``(B, D)`` on the model's device.
        num_samples: k.
        chunk_size: samples drawn at once; memory is O(chunk_size * B * D).
        compile: compute log p(x|z) + log p(z) with ``torch.compile`` (same values to float
            rounding; samples are drawn eagerly either way, so the random stream is the same).

    Returns:
        ``(B,)`` tensors in nats: ``log_likelihood`` (L_k = log mean_k w_k),
        ``reconstruction`` (mean_k log p(x|z_k)), ``kl`` (closed form when torch.distributions
        has it, else mean_k [log q(z_k|x) - log p(z_k)]), ``elbo`` (reconstruction - kl).
    """
    q = model.encoder(x)
    prior = model.prior()
    lse = torch.full(x.shape[:1], -math.inf, device=x.device, dtype=x.dtype)
    sum_rec = torch.zeros_like(lse)
    sum_log_ratio = torch.zeros_like(lse)
    joint = compiled_log_joint if compile else log_joint_terms
    done = 0
    while done < num_samples:
        c = min(chunk_size, num_samples - done)
        z = q.sample((c,))                                   # (c, B, D_z)
        log_px_z, log_pz = joint(model, z, x)                # (c, B) each
        log_ratio = q.log_prob(z) - log_pz                   # (c, B)
        lse = torch.logaddexp(lse, (log_px_z - log_ratio).logsumexp(0))
        sum_rec += log_px_z.sum(0)
        sum_log_ratio += log_ratio.sum(0)
        done += c
    kl = analytic_kl(q, prior)
    if kl is None:
        kl = sum_log_ratio / num_samples
    rec = sum_rec / num_samples
    return {"log_likelihood": lse - math.log(num_samples), "reconstruction": rec, "kl": kl,
            "elbo": rec - kl}


@torch.no_grad()
def log_likelihood(model, x: torch.Tensor, num_samples: int = 5000, *,
                   batch_size: int | None = None, max_rows: int = DEFAULT_MAX_ROWS,
                   progress: bool = False, compile: bool | str = "auto") -> torch.Tensor:
    """Estimate log p(x) per example with the importance-weighted bound L_k, in nats.

    Args:
        model: provides ``prior()``, ``encoder(x)``, ``decoder(z)``.
        x: ``(N, D)`` data (any device; moved batch by batch to the model's device).
        num_samples: k (5000 is the field's standard for test log-likelihood).
        batch_size: examples per batch (default: chosen from ``max_rows``).
        max_rows: at most this many (sample, example) pairs are decoded at once.
        compile: ``torch.compile`` the decoder's log-density (``True``/``False``; ``"auto"``:
            when num_samples x N >= :data:`COMPILE_MIN_ROWS`). Falls back to eager code,
            with a warning, where compiling fails.

    Returns:
        ``(N,)`` tensor on the CPU; its mean is the reported test log-likelihood.

    Raises:
        ValueError: ``num_samples < 1`` or a bad ``compile``.

    Reference: Burda et al. (2016), eq. (8) and Sec. 5.
    """
    return evaluate_terms(model, x, num_samples, batch_size=batch_size, max_rows=max_rows,
                          progress=progress, compile=compile)["log_likelihood"]


@torch.no_grad()
def evaluate_terms(model, x: torch.Tensor, num_samples: int = 5000, *,
                   batch_size: int | None = None, max_rows: int = DEFAULT_MAX_ROWS,
                   progress: bool = False,
                   compile: bool | str = "auto") -> dict[str, torch.Tensor]:
    """Per-example ``log_likelihood``, ``elbo``, ``reconstruction``, ``kl`` (each ``(N,)``,
    CPU, nats) from one streamed pass of ``num_samples`` importance samples per example.
    Arguments as :func:`log_likelihood`."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    compiled = use_compile(compile, num_samples * x.shape[0])
    was_training = model.training
    model.eval()
    device = model_device(model)
    n = x.shape[0]
    b, c = _batch_and_chunk(n, num_samples, max_rows, batch_size)
    parts: dict[str, list[torch.Tensor]] = {}
    try:
        for i in tqdm(range(0, n, b), desc=f"log-likelihood (k={num_samples})",
                      disable=None if progress else True, leave=False,
                      unit="batch"):
            xb = x[i:i + b].to(device, non_blocking=True)
            for k, v in importance_sampling_terms(model, xb, num_samples, c, compiled).items():
                parts.setdefault(k, []).append(v)
    finally:
        model.train(was_training)
    return {k: torch.cat(v).cpu() for k, v in parts.items()}


@torch.no_grad()
def posterior_means(model, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """E_q[z|x] for each row of ``x: (N, D)``: ``(N, latent_dim)`` on the CPU."""
    device = model_device(model)
    return torch.cat([model.encoder(x[i:i + batch_size].to(device)).mean.cpu()
                      for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def active_units(model, x: torch.Tensor, threshold: float = 0.01,
                 batch_size: int = 1000) -> tuple[int, torch.Tensor]:
    """Number of active latent dimensions and each dimension's activity.

    A dimension u is active when A_u = Cov_x(E_{q(z|x)}[z_u]) > ``threshold`` (Burda et al.
    2016, Sec. 5.2, with threshold 10^-2). ``x: (N, D)``.

    Returns:
        ``(count, activity)`` with ``activity: (latent_dim,)``, the variance over x.
    """
    mu = posterior_means(model, x, batch_size)
    activity = mu.var(0, unbiased=False)
    return int((activity > threshold).sum()), activity


def mean_and_se(v: torch.Tensor) -> tuple[float, float]:
    """Mean of ``v`` and its standard error std / sqrt(n) (NaN for one value)."""
    v = v.double()
    se = float(v.std(unbiased=True) / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")
    return float(v.mean()), se


def evaluate(model, x: torch.Tensor, num_samples: int = 5000, *, batch_size: int | None = None,
             max_rows: int = DEFAULT_MAX_ROWS, progress: bool = False,
             noise: tuple[str, float] | None = None, compile: bool | str = "auto") -> dict:
    """The test metrics of a model on ``x: (N, D)``, in nats per example (means over the N
    examples with standard errors ``*_se`` = std / sqrt(N)).

    Latent-variable models (VAEs): ``log_likelihood`` (L_k, k = ``num_samples``), ``elbo``,
    ``reconstruction`` (E_q log p(x|z)), ``kl`` (KL(q||p)), ``active_units``.
    Models with an exact likelihood (``score_samples``: mixtures): ``log_likelihood``, exact
    (``num_samples`` is then ``None``). Other families report what their ``evaluation(x, k)``
    gives (autoencoders: ``reconstruction_error``; VQ-VAE: ``log_likelihood_bound``, ...).
    Every result has ``bits_per_dim`` (-log-likelihood / (D ln 2), for binary data, when a
    log-likelihood or bound is reported; else ``None``), ``latent_dim``, ``num_samples``,
    ``num_examples``, ``seconds``; importance-sampled results also ``compiled`` (whether
    ``torch.compile`` computed the log-densities).

    ``noise = (kind, level)`` scores an autoencoder's ``denoising_error`` on inputs corrupted
    that way (masking probability or Gaussian std) instead of its training corruption.
    ``compile`` as in :func:`log_likelihood`.

    Raises:
        ConfigError: ``noise`` given for a model that is not an autoencoder.
    """
    start = time.perf_counter()
    out: dict = {}
    if noise is not None and not hasattr(model, "noise"):
        raise ConfigError(f"noise applies to autoencoders; this run's model is "
                          f"{type(model).__name__}")
    if hasattr(model, "score_samples"):
        device = model_device(model)
        ll = torch.cat([model.score_samples(x[i:i + 2000].to(device)).cpu()
                        for i in range(0, x.shape[0], 2000)])
        out["log_likelihood"], out["log_likelihood_se"] = mean_and_se(ll)
        num_samples = None
    elif hasattr(model, "evaluation"):
        kw = {} if noise is None else {"noise": noise[0], "noise_level": noise[1]}
        out.update(model.evaluation(x, num_samples, **kw))
    else:
        compiled = use_compile(compile, num_samples * x.shape[0])
        terms = evaluate_terms(model, x, num_samples, batch_size=batch_size, max_rows=max_rows,
                               progress=progress, compile=compiled)
        for key in ("log_likelihood", "elbo", "reconstruction", "kl"):
            out[key], out[f"{key}_se"] = mean_and_se(terms[key])
        out["active_units"], _ = active_units(model, x)
        out["compiled"] = compiled and not compiled_log_joint.failed
    ll = out.get("log_likelihood", out.get("log_likelihood_bound"))
    binary = getattr(model, "likelihood", "bernoulli") == "bernoulli"
    out["bits_per_dim"] = -ll / (x.shape[1] * math.log(2)) if ll is not None and binary else None
    out.update(latent_dim=int(getattr(model, "latent_dim", 0)),
               num_samples=None if num_samples is None else int(num_samples),
               num_examples=int(x.shape[0]), seconds=round(time.perf_counter() - start, 3))
    return out
