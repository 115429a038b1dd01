"""Evaluation: test log-likelihood by importance sampling, ELBO terms, active units, and the
typed results every model family reports.

The log-likelihood estimate is the importance-weighted bound L_k with k = 5000 by default
(Burda et al. 2016, Sec. 5: "log p(x) ... estimated using k = 5000"), a stochastic lower bound
that converges to log p(x) as k grows. The k samples are drawn in chunks and combined with a
running log-sum-exp, so memory does not grow with k. The log-densities come from
:func:`vaekit.objectives.log_terms`, the function every estimator uses, compiled with
``torch.compile`` for large evaluations.

Results are dataclasses (:class:`Evaluation` and one subclass per kind of model) that read
like the flat dicts of ``eval.json`` (``result["log_likelihood"]``) and write them with
:meth:`Evaluation.to_dict`.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .distributed import evaluation_shard, gather_rows
from .distributions import analytic_kl
from .errors import VaekitWarning
from .objectives import LogTerms, log_terms
from .priors import log_prob_size
from .progress import Progress

DEFAULT_MAX_ROWS = 2048   # decoder rows (chunk x batch) at once: bounds memory, stays in cache
COMPILE_MIN_ROWS = 10_000_000   # compile="auto" compiles when num_samples x N reaches this
PRIOR_BUDGET = 1 << 25    # values log p(z) computes at once (chunk x batch x its size, ~32M)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (the CPU for a model without)."""
    p = next(model.parameters(), None)
    if p is None:
        p = next(model.buffers(), None)
    return p.device if p is not None else torch.device("cpu")


def mean_and_se(v: torch.Tensor) -> tuple[float, float]:
    """Mean of ``v`` and its standard error std / sqrt(n) (NaN for one value)."""
    v = v.double()
    se = float(v.std(unbiased=True) / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")
    return float(v.mean()), se


# --------------------------------------------------------------------------- results
@dataclass(kw_only=True)
class Evaluation(Mapping):
    """Test metrics of a model, in nats per example (means over the examples, with standard
    errors ``*_se`` = std / sqrt(N)). Subclasses add the metrics of one kind of model.

    Common fields: ``num_examples``, ``seconds``, ``latent_dim``, ``num_samples`` (k, or
    ``None`` when nothing is sampled), ``bits_per_dim`` (-log-likelihood / (D ln 2), for
    discrete data, when a log-likelihood or bound is reported; else ``None``); and the run's
    context, set by :func:`vaekit.runs.evaluate_run`: ``dataset``, ``split``,
    ``binarization``, ``likelihood``, ``seed``, ``checkpoint``, ``run_dir``, ``noise``.

    A result reads like the flat dict of ``eval.json`` (``result["elbo"]``, ``"elbo" in
    result``); :meth:`to_dict` gives that dict, :meth:`from_dict` reads it back.
    """

    kind: ClassVar[str] = "evaluation"
    num_examples: int
    seconds: float = 0.0
    latent_dim: int = 0
    num_samples: int | None = None
    bits_per_dim: float | None = None
    dataset: str | None = None
    split: str | None = None
    binarization: str | None = None
    likelihood: str | None = None
    seed: int | None = None
    checkpoint: str | None = None
    run_dir: str | None = None
    noise: dict | None = None
    log_jacobian: float | None = None

    _CONTEXT: ClassVar[tuple[str, ...]] = ("dataset", "split", "binarization", "likelihood",
                                           "seed", "checkpoint", "run_dir", "noise",
                                           "log_jacobian")
    # the metrics that are log-densities of x (they change with the data's units)
    _DENSITIES: ClassVar[tuple[str, ...]] = ()

    def in_original_units(self, log_jacobian: float) -> Evaluation:
        """The result for data that the model saw standardised, in the original units: each
        log-density of x gains ``log_jacobian`` = log |dx'/dx| = -sum_j log std_j nats (the
        change of variables x' = (x - mean) / std), recorded as :attr:`log_jacobian`. KL
        terms, which do not depend on x's units, are unchanged."""
        values = dataclasses.asdict(self)
        shifted = {k: values[k] + log_jacobian for k in self._DENSITIES}
        return dataclasses.replace(self, **shifted, log_jacobian=log_jacobian)

    # -------------------------------------------------------------- the flat dict
    def to_dict(self) -> dict[str, Any]:
        """The ``eval.json`` dict: context first, then the metrics, then the common fields;
        context fields that were never set are left out."""
        values = dataclasses.asdict(self)
        d = {k: values[k] for k in self._CONTEXT if values[k] is not None}
        d.update({k: v for k, v in values.items() if k not in self._CONTEXT})
        return {"kind": self.kind, **d}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evaluation:
        """Read an ``eval.json`` dict (also one written by vaekit 0.1, without ``kind``):
        keys that are not fields of this result are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs.setdefault("num_examples", 0)
        return cls(**kwargs)

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    # -------------------------------------------------------------- what to show

    def rows(self) -> list[tuple[str, float | str | None, float | None]]:
        """``(label, value, standard error)`` of each metric, for a printed table."""
        return []

    def comparison(self) -> dict[str, Any]:
        """The columns of ``vaekit compare``: ``test_elbo`` (a VQ-VAE's bound),
        ``test_log_likelihood``, ``test_reconstruction_error`` (each with ``*_se``) and
        ``active_units``; ``None`` where the model has no such metric."""
        return {"test_elbo": None, "test_elbo_se": None, "test_log_likelihood": None,
                "test_log_likelihood_se": None, "test_reconstruction_error": None,
                "test_reconstruction_error_se": None, "active_units": None}


@dataclass(kw_only=True)
class BoundEvaluation(Evaluation):
    """Latent-variable models with an inference network (VAEs): ``log_likelihood`` (L_k, k =
    ``num_samples``), ``elbo``, ``reconstruction`` (E_q log p(x|z)), ``kl`` (KL(q || p)),
    ``active_units``, and ``compiled`` (whether ``torch.compile`` computed the densities)."""

    kind: ClassVar[str] = "bound"
    _DENSITIES: ClassVar[tuple[str, ...]] = ("log_likelihood", "elbo", "reconstruction")
    log_likelihood: float
    log_likelihood_se: float
    elbo: float
    elbo_se: float
    reconstruction: float
    reconstruction_se: float
    kl: float
    kl_se: float
    active_units: int
    compiled: bool = False


    def rows(self):
        return [(f"log-likelihood (IWAE bound, k={self.num_samples})", self.log_likelihood,
                 self.log_likelihood_se),
                ("ELBO", self.elbo, self.elbo_se),
                ("  reconstruction E_q log p(x|z)", self.reconstruction, self.reconstruction_se),
                ("  KL(q(z|x) || p(z))", self.kl, self.kl_se),
                *_bits_row(self),
                ("active units (Cov_x E_q[z] > 0.01)",
                 f"{self.active_units} / {self.latent_dim}", None)]

    def comparison(self):
        return {**super().comparison(), "test_elbo": self.elbo, "test_elbo_se": self.elbo_se,
                "test_log_likelihood": self.log_likelihood,
                "test_log_likelihood_se": self.log_likelihood_se,
                "test_reconstruction_error": -self.reconstruction,
                "test_reconstruction_error_se": self.reconstruction_se,
                "active_units": self.active_units}


@dataclass(kw_only=True)
class ExactEvaluation(Evaluation):
    """Models whose log p(x) is exact (mixtures): ``log_likelihood``."""

    kind: ClassVar[str] = "exact"
    _DENSITIES: ClassVar[tuple[str, ...]] = ("log_likelihood",)
    log_likelihood: float
    log_likelihood_se: float


    def rows(self):
        return [("log-likelihood (exact)", self.log_likelihood, self.log_likelihood_se),
                *_bits_row(self)]

    def comparison(self):
        return {**super().comparison(), "test_log_likelihood": self.log_likelihood,
                "test_log_likelihood_se": self.log_likelihood_se}


def _bits_row(r: Evaluation) -> list[tuple]:
    if r.bits_per_dim is None:
        return []
    return [("bits/dim (from log-likelihood)", f"{r.bits_per_dim:.4f}", None)]


# --------------------------------------------------------------------------- compiling
class CompiledLogTerms:
    """:func:`vaekit.objectives.log_terms` through ``torch.compile`` (one graph for every
    shape: ``dynamic=True``), which fuses the decoder's bias, activation and log-density into
    the matrix products' neighbours instead of one pass over memory each. Should compiling or
    running the compiled code fail (no C++ compiler, an unsupported model), it warns once and
    computes eagerly for the rest of this object's life: one evaluation, not the process."""

    def __init__(self) -> None:
        self._fn = None
        self.failed = False

    def __call__(self, model, x, z, q, prior) -> LogTerms:
        if not self.failed:
            try:
                if self._fn is None:
                    self._fn = torch.compile(log_terms, dynamic=True)
                return self._fn(model, x, z, q, prior)
            except Exception as e:  # noqa: BLE001 - any compiler failure: fall back
                self.failed = True
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); "
                              "evaluating without it (slower, same result)", VaekitWarning,
                              stacklevel=2)
        return log_terms(model, x, z, q, prior)


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


# --------------------------------------------------------------------------- importance sampling
def _batch_and_chunk(n: int, num_samples: int, max_rows: int, batch_size: int | None):
    b = batch_size or max(1, max_rows // min(num_samples, 128))
    b = max(1, min(b, n))
    c = max(1, min(num_samples, max_rows // b))
    return b, c


@torch.no_grad()
def importance_sampling_terms(model, x: torch.Tensor, num_samples: int, chunk_size: int,
                              terms_fn: Callable = log_terms) -> dict[str, torch.Tensor]:
    """One batch: streamed estimates from ``num_samples`` draws z_k ~ q(z|x).

    Args:
        x: ``(B, *event_shape)`` on the model's device.
        num_samples: k.
        chunk_size: samples drawn at most at once; memory is O(chunk_size * B * D). Fewer
            when the prior's log-density computes many values per z (a mixture of K
            components: K * D_z, :func:`vaekit.priors.log_prob_size`), so that chunk x B x
            that size stays within :data:`PRIOR_BUDGET`.
        terms_fn: :func:`~vaekit.objectives.log_terms` or its compiled form (same values to
            float rounding; samples are drawn eagerly either way, so the random stream is
            the same).

    Returns:
        ``(B,)`` tensors in nats: ``log_likelihood`` (L_k = log mean_k w_k),
        ``reconstruction`` (mean_k log p(x|z_k)), ``kl`` (closed form when torch.distributions
        has it, else mean_k [log q(z_k|x) - log p(z_k)]), ``elbo`` (reconstruction - kl).
    """
    q = model.encoder(x)
    prior = model.prior()
    chunk_size = max(1, min(chunk_size, PRIOR_BUDGET // (x.shape[0] * log_prob_size(prior))))
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    lse = torch.full(x.shape[:1], -math.inf, device=x.device, dtype=dtype)
    sum_rec = torch.zeros_like(lse)
    sum_log_ratio = torch.zeros_like(lse)
    done = 0
    while done < num_samples:
        c = min(chunk_size, num_samples - done)
        z = q.sample((c,))                                   # (c, B, D_z)
        t = terms_fn(model, x, z, q, prior)                  # (c, B) each
        lse = torch.logaddexp(lse, t.log_w.logsumexp(0))
        sum_rec += t.log_px_z.sum(0)
        sum_log_ratio += (t.log_qz - t.log_pz).sum(0)
        done += c
    kl = analytic_kl(q, prior)
    if kl is None:
        kl = sum_log_ratio / num_samples
    rec = sum_rec / num_samples
    return {"log_likelihood": lse - math.log(num_samples), "reconstruction": rec, "kl": kl,
            "elbo": rec - kl}


@torch.no_grad()
def evaluate_terms(model, x: torch.Tensor, num_samples: int = 5000, *,
                   batch_size: int | None = None, max_rows: int = DEFAULT_MAX_ROWS,
                   progress: bool = False, compile: bool | str = "auto",
                   log: Callable[[str], None] | None = None,
                   compiler: CompiledLogTerms | None = None) -> dict[str, torch.Tensor]:
    """Per-example ``log_likelihood``, ``elbo``, ``reconstruction``, ``kl`` (each ``(N,)``,
    CPU, nats) from one streamed pass of ``num_samples`` importance samples per example.

    ``progress`` shows a bar on a terminal and, elsewhere, a line every 10 s with the time
    left (to ``log``, default stderr). Other arguments as :func:`log_likelihood`.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    compiled = use_compile(compile, num_samples * x.shape[0])
    terms_fn = (compiler or CompiledLogTerms()) if compiled else log_terms
    was_training = model.training
    model.eval()
    device = model_device(model)
    total = x.shape[0]
    part = evaluation_shard(total)          # under torchrun's final evaluation: this rank's
    if part is not None:
        x = x[part[0]:part[1]]
    n = x.shape[0]
    b, c = _batch_and_chunk(max(n, 1), num_samples, max_rows, batch_size)
    parts: dict[str, list[torch.Tensor]] = {}
    bar = Progress(n, f"log-likelihood (k={num_samples})", unit="example", enabled=progress,
                   log=log)
    try:
        for i in range(0, n, b):
            xb = x[i:i + b].to(device, non_blocking=True)
            for k, v in importance_sampling_terms(model, xb, num_samples, c, terms_fn).items():
                parts.setdefault(k, []).append(v)
            bar.update(xb.shape[0])
    finally:
        bar.close()
        model.train(was_training)
    if part is None:
        return {k: torch.cat(v).cpu() for k, v in parts.items()}
    # every rank computes the same keys; an empty shard has none: reduce over a fixed order
    keys = ("log_likelihood", "elbo", "reconstruction", "kl")
    return {k: gather_rows(torch.cat(parts[k]) if k in parts else
                           torch.zeros(0, device=device), total).cpu() for k in keys}


@torch.no_grad()
def log_likelihood(model, x: torch.Tensor, num_samples: int = 5000, *,
                   batch_size: int | None = None, max_rows: int = DEFAULT_MAX_ROWS,
                   progress: bool = False, compile: bool | str = "auto") -> torch.Tensor:
    """Estimate log p(x) per example with the importance-weighted bound L_k, in nats.

    Args:
        model: provides ``prior()``, ``encoder(x)``, ``decoder(z)``.
        x: ``(N, *event_shape)`` data (any device; moved batch by batch to the model's
            device).
        num_samples: k (5000 is the field's standard for test log-likelihood).
        batch_size: examples per batch (default: chosen from ``max_rows``).
        max_rows: at most this many (sample, example) pairs are decoded at once.
        compile: ``torch.compile`` the log-densities (``True``/``False``; ``"auto"``: when
            num_samples x N >= :data:`COMPILE_MIN_ROWS`). Falls back to eager code, with a
            warning, where compiling fails.

    Returns:
        ``(N,)`` tensor on the CPU; its mean is the reported test log-likelihood.

    Raises:
        ValueError: ``num_samples < 1`` or a bad ``compile``.

    Reference: Burda et al. (2016), eq. (8) and Sec. 5.
    """
    return evaluate_terms(model, x, num_samples, batch_size=batch_size, max_rows=max_rows,
                          progress=progress, compile=compile)["log_likelihood"]


@torch.no_grad()
def posterior_means(model, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """E_q[z|x] for each row of ``x: (N, *event_shape)``: ``(N, latent_dim)`` on the CPU."""
    device = model_device(model)
    return torch.cat([model.encoder(x[i:i + batch_size].to(device)).mean.cpu()
                      for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def active_units(model, x: torch.Tensor, threshold: float = 0.01,
                 batch_size: int = 1000) -> tuple[int, torch.Tensor]:
    """Number of active latent dimensions and each dimension's activity.

    A dimension u is active when A_u = Cov_x(E_{q(z|x)}[z_u]) > ``threshold`` (Burda et al.
    2016, Sec. 5.2, with threshold 10^-2). ``x: (N, *event_shape)``.

    Returns:
        ``(count, activity)`` with ``activity: (latent_dim,)``, the variance over x.
    """
    mu = posterior_means(model, x, batch_size)
    activity = mu.var(0, unbiased=False)
    return int((activity > threshold).sum()), activity


def evaluate_bound(model, x: torch.Tensor, num_samples: int = 5000, *,
                   batch_size: int | None = None, max_rows: int = DEFAULT_MAX_ROWS,
                   progress: bool = False, compile: bool | str = "auto",
                   log: Callable[[str], None] | None = None) -> BoundEvaluation:
    """The test metrics of a latent-variable model with an encoder (a VAE) on ``x: (N,
    *event_shape)``: :class:`BoundEvaluation` (bits/dim are added by the family, which knows
    the observation model). Arguments as :func:`log_likelihood`."""
    start = time.perf_counter()
    compiled = use_compile(compile, num_samples * x.shape[0])
    compiler = CompiledLogTerms()
    terms = evaluate_terms(model, x, num_samples, batch_size=batch_size, max_rows=max_rows,
                           progress=progress, compile=compiled, log=log, compiler=compiler)
    values = {}
    for key in ("log_likelihood", "elbo", "reconstruction", "kl"):
        values[key], values[f"{key}_se"] = mean_and_se(terms[key])
    count, _ = active_units(model, x)
    return BoundEvaluation(**values, active_units=count,
                           compiled=compiled and not compiler.failed,
                           latent_dim=int(model.latent_dim), num_samples=int(num_samples),
                           num_examples=int(x.shape[0]),
                           seconds=round(time.perf_counter() - start, 3))


def evaluate(model, x: torch.Tensor, num_samples: int = 5000, *, progress: bool = False,
             noise: tuple[str, float] | None = None, compile: bool | str = "auto",
             log: Callable[[str], None] | None = None, **kwargs) -> Evaluation:
    """The test metrics of any model on ``x: (N, *event_shape)``, as its family reports them
    (:meth:`vaekit.families.Family.evaluate`): a VAE's :class:`BoundEvaluation`, a mixture's
    :class:`ExactEvaluation`, an autoencoder's reconstruction error, ...

    ``noise = (kind, level)`` scores an autoencoder's ``denoising_error`` on inputs corrupted
    that way (masking probability or Gaussian std) instead of its training corruption.
    ``compile`` as in :func:`log_likelihood`.

    Raises:
        ConfigError: ``noise`` for a family that is not scored on corrupted inputs.
    """
    from .families import family_of
    return family_of(model).evaluate(model, x, num_samples, progress=progress, noise=noise,
                                     compile=compile, log=log, **kwargs)


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
