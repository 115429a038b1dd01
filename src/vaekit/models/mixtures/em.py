"""The EM machinery shared by the finite mixtures (:mod:`.gaussian`, :mod:`.bernoulli`).

A mixture is the simplest latent-variable model: a discrete z in {0, ..., K-1} with prior
p(z = k) = pi_k and p(x | z = k) from one family, so that

    log p(x) = logsumexp_k [log pi_k + log p(x | z = k)]            (nats, exact)
    p(z = k | x) = pi_k p(x | z = k) / p(x)                         (Bayes' rule)

EM (Dempster, Laird & Rubin 1977) alternates the E-step, which sets q(z|x) to the exact
posterior (the "responsibilities"), and the M-step, which maximizes the expected complete-data
log-likelihood under it; each iteration never lowers log p(x). The steps follow Bishop 2006,
*Pattern Recognition and Machine Learning*, Sec. 9.2-9.3.3:

* Gaussian components: E-step eq. 9.23; M-step eqs. 9.24 (means), 9.25 (covariances),
  9.26 (weights) with N_k from eq. 9.27; log-likelihood eq. 9.28.
* Bernoulli components: E-step eq. 9.56; M-step eqs. 9.57-9.60; log-likelihood eq. 9.51.

Everything is vectorised in torch and runs on the device and in the dtype of the data given to
:meth:`~MixtureEM.fit` (CPU or CUDA; use float64 for reference comparisons). Responsibilities
are normalised in the log domain (logsumexp); full-covariance Gaussian densities use Cholesky
factors Sigma_k = L_k L_k^T, all K in one batched factorisation and one batched triangular
solve per M-step (Mahalanobis terms |x W_k - mu_k W_k|^2 with the precision Cholesky factor
W_k = L_k^{-T}, as scikit-learn computes them, x and mu_k shifted by the mean of x; all K
components in one matrix product per cache-sized block of rows; log-determinant from the
factor's diagonal; a failed factorisation names the collapsed component); diagonal-covariance
Mahalanobis terms are accumulated in float64. From the same start, a fit agrees with
``sklearn.mixture.GaussianMixture`` to ~1e-14 in float64 and is about 3x faster on one CPU
thread (``benchmarks/bench_em.py``). The EM loop does not wait on the device: its collapse
checks and log-likelihoods are queued and read back in one transfer per iteration (on the CPU,
or with ``tol > 0``) or every :data:`SYNC_EVERY` iterations (on an accelerator with
``tol = 0``); the first failure is raised as the synchronous code would.

The classes follow scikit-learn's conventions: ``__init__`` stores hyperparameters; ``fit(x)``
sets learned attributes with a trailing underscore and returns ``self``. They are also
``torch.nn.Module`` s whose learned tensors are buffers, so ``state_dict()`` /
``load_state_dict()`` (and safetensors files) round-trip a fitted mixture; build the empty
mixture with ``data_dim`` so the buffers have the right shapes before loading.

References:
    A. P. Dempster, N. M. Laird & D. B. Rubin (1977), "Maximum likelihood from incomplete data
    via the EM algorithm", JRSS B 39(1):1-38.
    C. M. Bishop (2006), *Pattern Recognition and Machine Learning*, Sec. 9.2-9.3.3.
    D. Arthur & S. Vassilvitskii (2007), "k-means++: the advantages of careful seeding", SODA.
    H. Larochelle & I. Murray (2011), "The neural autoregressive distribution estimator",
    AISTATS: a mixture of 500 multivariate Bernoullis reaches -137.64 nats on the binarized
    MNIST test set (their Table 2), the classical baseline for VAEs on that set.
    K. P. Murphy (2012), *Machine Learning: A Probabilistic Perspective*, Exercise 11.3 (EM for
    mixtures of Bernoullis with a Beta prior: the smoothing of :class:`BernoulliMixture`).
"""


from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...errors import ConfigError, DataError, VaekitError, VaekitWarning
from ...options import Options, nonnegative, one_of, option, positive
from .kmeans import _nearest, kmeans_plusplus

MIN_COMPONENT_MASS = 1e-3
"""A component whose total responsibility sum_n p(z=k|x_n) falls below this many points has
collapsed: its M-step would divide by ~0 (:class:`ComponentCollapseError`), except for a
smoothed Bernoulli mixture, whose M-step stays defined (see :class:`BernoulliMixture`)."""


INIT_PARAMS = ("k-means++", "random")

SYNC_EVERY = 25
"""On an accelerator with ``tol=0`` the EM loop reads its log-likelihoods and collapse checks
back every this many iterations (one transfer) instead of every iteration."""


class ComponentCollapseError(DataError):
    """A mixture component collapsed: its total responsibility is ~0, or its covariance is not
    positive definite. The message names the component and the fix."""


class NotFittedError(VaekitError, ValueError):
    """A mixture was used before :meth:`~MixtureEM.fit`, :meth:`~MixtureEM.initialize`,
    ``set_parameters`` or ``load_state_dict``."""




@dataclass
class MixtureOptions(Options):
    """Options of a mixture fitted by EM (``vaekit train --model gmm|bernoulli-mixture``)."""

    num_components: int = option(10, "number of components K", check=positive)
    em_max_iter: int = option(100, "maximum EM iterations per restart", check=nonnegative)
    em_tol: float = option(1e-3, "stop when the mean log-likelihood gains less (nats per point)",
                           check=nonnegative)
    em_restarts: int = option(1, "restarts from fresh initialisations; the best is kept",
                              check=positive)
    em_init: str = option("k-means++", "initialisation k-means++ | random",
                          check=one_of(INIT_PARAMS))


def _version(t: torch.Tensor) -> int | None:
    """The in-place version counter of ``t`` (None for inference-mode tensors)."""
    try:
        return t._version
    except RuntimeError:
        return None



# --------------------------------------------------------------------------- the EM base
class MixtureEM(nn.Module):
    """Shared EM machinery of :class:`GaussianMixture` and :class:`BernoulliMixture`.

    A subclass supplies its component family through four hooks: ``_component_buffers(D)``
    (extra learned buffers and their shapes), ``component_log_prob(x)`` (``(N, K)``
    log p(x|z=k)), ``_m_step_components(x, resp, nk)`` and ``_sample_components(labels, g)``,
    and optionally ``_check_values(x)`` (data checks) and ``log_prior()`` (MAP-EM).
    Everything else (validation, initialisation, the EM loop with restarts, scoring, sampling
    of z, persistence) lives here once.

    Learned attributes (after :meth:`fit`; tensors on the data's device and dtype):
        weights_: ``(K,)`` mixing weights pi_k.
        means_: ``(K, D)`` component means (for Bernoulli components, the probabilities).
        converged_: whether the last fit met ``tol`` before ``max_iter``.
        n_iter_: M-steps run by the kept restart.
        lower_bound_: mean log p(x) per point (nats) of the final parameters on the training
            data (EM's bound is tight after an E-step, so it is the log-likelihood itself).
        history_: ``[mean log p(x)]`` at the initialisation and after each iteration of the kept
            restart (nats per point; ``len(history_) == n_iter_ + 1``); not in the state dict.
    """

    options_class: ClassVar[type[MixtureOptions]] = MixtureOptions
    # option (vaekit train's name) -> constructor argument (scikit-learn's name)
    _CONFIG_FIELDS: tuple[tuple[str, str], ...] = (
        ("num_components", "n_components"), ("em_tol", "tol"), ("em_max_iter", "max_iter"),
        ("em_restarts", "n_init"), ("em_init", "init_params"), ("init_seed", "seed"))

    def __init__(self, n_components: int, tol: float, max_iter: int, n_init: int,
                 init_params: str, seed: int, warm_start: bool, data_dim: int | None,
                 **options) -> None:
        super().__init__()
        name = type(self).__name__
        values = {"num_components": n_components, "em_tol": tol, "em_max_iter": max_iter,
                  "em_restarts": n_init, "em_init": init_params, **options}
        self.options = self.options_class.from_values(values, name).validate()
        if data_dim is not None and (not isinstance(data_dim, int) or data_dim < 1):
            raise ConfigError(f"{name}: data_dim must be a positive integer or None, "
                              f"got {data_dim!r}")
        o = self.options
        self.n_components, self.tol, self.max_iter = o.num_components, o.em_tol, o.em_max_iter
        self.n_init, self.init_params, self.seed = o.em_restarts, o.em_init, int(seed)
        self.warm_start, self.data_dim = bool(warm_start), data_dim
        self.history_: list[float] = []

    def _register_state(self) -> None:
        """Register the buffers (called at the end of a subclass's ``__init__``)."""
        K, D = self.n_components, self.data_dim or 0
        self.register_buffer("weights", torch.full((K,), 1.0 / K))
        self.register_buffer("means", torch.zeros(K, D))
        for name, shape in self._component_buffers(D).items():
            self.register_buffer(name, torch.zeros(shape))
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("converged", torch.tensor(False))
        self.register_buffer("n_iter", torch.tensor(0, dtype=torch.long))
        self.register_buffer("lower_bound", torch.tensor(float("nan")))

    # ------------------------------------------------------------ hooks
    def _component_buffers(self, D: int) -> dict[str, tuple[int, ...]]:
        return {}

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """``(N, K)`` log p(x_n | z = k) in nats."""
        raise NotImplementedError

    def _prepare(self, x: torch.Tensor, fitting: bool = False):
        """What :meth:`_component_log_prob_prepared` reads, from the validated data (by
        default ``x`` itself); ``fitting``: computed once for all the E-steps of a fit."""
        return x

    def _component_log_prob_prepared(self, data) -> torch.Tensor:
        """``(N, K)`` log p(x_n | z = k) from :meth:`_prepare`'s output; a fresh tensor."""
        return self.component_log_prob(data)

    def _m_step_components(self, x: torch.Tensor, resp: torch.Tensor,
                           nk: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def _sample_components(self, labels: torch.Tensor,
                           g: torch.Generator | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _check_values(self, x: torch.Tensor) -> None:
        """Family-specific checks of the data values (raise :class:`DataError`)."""

    _mass_fix = "lower n_components, or try another seed / init_params"

    def _empty_components_ok(self) -> bool:
        """Whether the M-step stays defined for a component without points (else raise)."""
        return False

    def log_prior(self) -> torch.Tensor:
        """log p(theta) (up to a constant, nats) of a MAP-EM prior on the parameters; 0 for
        maximum likelihood. EM never lowers ``N * mean log p(x) + log_prior()``."""
        return torch.zeros((), dtype=self.weights.dtype, device=self.weights.device)

    # ------------------------------------------------------------ learned attributes
    @property
    def weights_(self) -> torch.Tensor:
        """``(K,)`` mixing weights pi_k (the ``weights`` buffer)."""
        return self.weights

    @property
    def means_(self) -> torch.Tensor:
        """``(K, D)`` component means; for Bernoulli components the probabilities (the
        ``means`` buffer)."""
        return self.means

    @property
    def converged_(self) -> bool:
        """Whether the last fit met ``tol`` before ``max_iter``."""
        return bool(self.converged)

    @property
    def n_iter_(self) -> int:
        """M-steps run by the kept restart of the last fit."""
        return int(self.n_iter)

    @property
    def lower_bound_(self) -> float:
        """Mean log p(x) per point (nats) of the fitted parameters on the training data."""
        return float(self.lower_bound)

    # ------------------------------------------------------------ construction helpers
    @classmethod
    def from_config(cls, config, data_dim: int | None = None) -> MixtureEM:
        """Build from a config object: each field is read with ``getattr`` and the
        constructor's default is used when it is absent (or ``None``).

        Fields: ``num_components`` -> n_components, ``covariance_type``, ``em_tol`` -> tol,
        ``reg_covar``, ``em_max_iter`` -> max_iter, ``em_restarts`` -> n_init,
        ``em_init`` -> init_params, ``init_seed`` -> seed (else 0), ``bernoulli_alpha`` ->
        alpha (the fields the class takes).

        Raises:
            ConfigError: a value is out of range.
        """
        kwargs = {}
        for field, arg in cls._CONFIG_FIELDS:
            value = getattr(config, field, None)
            if value is not None:
                kwargs[arg] = value
        return cls(**kwargs, data_dim=data_dim)

    def extra_repr(self) -> str:
        return f"n_components={self.n_components}, data_dim={self.data_dim}"

    # ------------------------------------------------------------ validation
    def _check_input(self, x, fitting: bool = False) -> torch.Tensor:
        """``x`` as a floating ``(N, D)`` tensor on the parameters' device and dtype (or, when
        fitting, in its own device and floating dtype)."""
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        if x.ndim != 2:
            raise DataError(f"{name} expects x of shape (N, D) with one point per row, "
                            f"got shape {tuple(x.shape)}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise DataError(f"{name}: x is empty (shape {tuple(x.shape)})")
        if fitting:
            if not x.is_floating_point():
                x = x.to(torch.get_default_dtype())
            if x.shape[0] < self.n_components:
                raise DataError(f"{name}: x has {x.shape[0]} points, fewer than "
                                f"n_components={self.n_components}; lower n_components")
            if self.data_dim is not None and x.shape[1] != self.data_dim:
                raise DataError(f"{name} was built for data_dim={self.data_dim} but x has "
                                f"{x.shape[1]} columns")
        else:
            self._check_fitted()
            if x.shape[1] != self.means.shape[1]:
                raise DataError(f"{name} was fitted to {self.means.shape[1]} dimensions but x "
                                f"has {x.shape[1]} columns")
            x = x.to(device=self.means.device, dtype=self.means.dtype)
        bad = ~torch.isfinite(x).all(1)
        if bad.any():
            raise DataError(f"{name}: x holds NaN or infinite values in {int(bad.sum())} rows "
                            f"(first at row {int(bad.nonzero()[0, 0])}); remove or impute them")
        self._check_values(x)
        return x

    def _check_fitted(self) -> None:
        if not bool(self.initialized):
            raise NotFittedError(f"this {type(self).__name__} has no parameters yet: call "
                                 "fit(x), set_parameters(...) or load_state_dict(...) first")

    def _collapse(self, k: int, why: str, fix: str) -> ComponentCollapseError:
        return ComponentCollapseError(
            f"{type(self).__name__}: component {k} of {self.n_components} collapsed ({why}); "
            f"{fix}")

    def _set_weights(self, weights) -> torch.Tensor:
        w = torch.as_tensor(weights, dtype=self.means.dtype, device=self.means.device)
        if w.shape != (self.n_components,):
            raise DataError(f"weights must have shape ({self.n_components},), "
                            f"got {tuple(w.shape)}")
        if not bool((w >= 0).all()) or abs(float(w.sum()) - 1) > 1e-5:
            raise DataError(f"weights must be >= 0 and sum to 1, got sum {float(w.sum()):g}")
        return w / w.sum()

    def _mark_set(self) -> None:
        self.initialized.fill_(True)
        self.converged.fill_(False)
        self.n_iter.fill_(0)
        self.lower_bound.fill_(float("nan"))
        self.history_ = []

    def _allocate(self, D: int, device: torch.device, dtype: torch.dtype) -> None:
        """Fresh buffers for dimension D on ``device`` / ``dtype``."""
        K = self.n_components
        self.data_dim = D
        self.initialized.fill_(False)                   # until the new values are set
        self.weights = torch.full((K,), 1.0 / K, device=device, dtype=dtype)
        self.means = torch.zeros(K, D, device=device, dtype=dtype)
        for name, shape in self._component_buffers(D).items():
            setattr(self, name, torch.zeros(shape, device=device, dtype=dtype))
        self.lower_bound = self.lower_bound.to(device=device, dtype=dtype)
        for name in ("initialized", "converged", "n_iter"):
            setattr(self, name, getattr(self, name).to(device))

    def _generator(self, seed: int | None = None) -> torch.Generator:
        return torch.Generator(device="cpu").manual_seed(self.seed if seed is None else seed)

    # ------------------------------------------------------------ EM steps
    @torch.no_grad()
    def initialize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Initialise the parameters from the data: K centres are chosen by k-means++ (Arthur
        & Vassilvitskii 2007) or, with ``init_params="random"``, uniformly at random among the
        points; every point is assigned to its nearest centre and one M-step on these hard
        responsibilities gives weights, means and covariances/probabilities.

        Args:
            x: ``(N, D)`` data; the parameters take its device and floating dtype.
            generator: a CPU generator (default: a new one seeded with ``seed``).

        Raises:
            DataError: bad ``x`` (see :meth:`fit`), or fewer than K distinct points.
        """
        x = self._check_input(x, fitting=True)
        self._initialize(x, generator or self._generator())

    def _initialize(self, x: torch.Tensor, g: torch.Generator) -> None:
        K = self.n_components
        self._allocate(x.shape[1], x.device, x.dtype)
        if self.init_params == "k-means++":
            idx = kmeans_plusplus(x, K, generator=g)
        else:
            idx = torch.randperm(x.shape[0], generator=g)[:K]
        idx = idx.to(x.device)
        labels = _nearest(x, x[idx])
        labels[idx] = torch.arange(K, device=x.device)        # every centre keeps itself
        resp = torch.zeros(x.shape[0], K, device=x.device, dtype=x.dtype)
        resp.scatter_(1, labels[:, None], 1.0)
        self._m_step(x, resp)
        self._mark_set()

    @torch.no_grad()
    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` log p(x_n, z = k) = log pi_k + log p(x_n | z = k), nats.

        Raises:
            NotFittedError, DataError: see :meth:`score_samples`.
        """
        return self._log_joint(self._check_input(x))

    def _log_joint(self, x: torch.Tensor) -> torch.Tensor:
        return self._log_joint_prepared(self._prepare(x))

    def _log_joint_prepared(self, data) -> torch.Tensor:
        return self._component_log_prob_prepared(data) + self.weights.log()

    @torch.no_grad()
    def e_step(self, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        """E-step: the responsibilities gamma_nk = p(z = k | x_n) by Bayes' rule, in the log
        domain (Bishop 2006 eq. 9.23 for Gaussians, eq. 9.56 for Bernoullis).

        Args:
            x: ``(N, D)``.

        Returns:
            ``(mean log p(x) per point in nats, log_resp (N, K))`` under the current
            parameters; ``log_resp.exp()`` rows sum to 1.

        Raises:
            NotFittedError: no parameters yet.
            DataError: bad ``x``.
        """
        return self._e_step(self._check_input(x))

    def _e_step(self, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        log_joint = self._log_joint(x)                                   # (N, K)
        log_px = torch.logsumexp(log_joint, 1)                           # (N,)
        return float(log_px.mean()), log_joint - log_px[:, None]

    def _responsibilities(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """The E-step of the EM loop: ``(mean log p(x), 0-d tensor; resp (N, K))`` on prepared
        data, without a host synchronisation; one exp per entry (``resp = e / sum e`` with
        ``e = exp(log_joint - max)``, the max replaced by 0 where infinite, as in
        ``torch.logsumexp``)."""
        log_joint = self._log_joint_prepared(data)                       # (N, K), fresh
        top = log_joint.amax(1, keepdim=True)
        top.masked_fill_(top.abs() == math.inf, 0.0)
        resp = log_joint.sub_(top).exp_()
        total = resp.sum(1, keepdim=True)
        log_px = total.log().add_(top)                                   # (N, 1)
        return log_px.mean(), resp.div_(total)

    @torch.no_grad()
    def m_step(self, x: torch.Tensor, log_resp: torch.Tensor) -> None:
        """M-step: maximize the expected complete-data log-likelihood given the
        responsibilities (Bishop 2006 eqs. 9.24-9.27 for Gaussians, 9.57-9.60 for
        Bernoullis). pi_k = N_k / N with N_k = sum_n gamma_nk.

        Args:
            x: ``(N, D)``.
            log_resp: ``(N, K)`` log responsibilities, as returned by :meth:`e_step`.

        Raises:
            ComponentCollapseError: a component's N_k < :data:`MIN_COMPONENT_MASS` (Gaussian
                mixtures, Bernoulli mixtures with ``alpha=0``), or (full covariances) its
                covariance is not positive definite.
            DataError: bad ``x`` or ``log_resp`` of the wrong shape.
        """
        x = self._check_input(x, fitting=True)
        if not bool(self.initialized):
            self._allocate(x.shape[1], x.device, x.dtype)
        x = x.to(device=self.means.device, dtype=self.means.dtype)
        if log_resp.shape != (x.shape[0], self.n_components):
            raise DataError(f"log_resp must have shape ({x.shape[0]}, {self.n_components}), "
                            f"got {tuple(log_resp.shape)}")
        self._m_step(x, log_resp.to(x).exp())
        if not bool(self.initialized):
            self._mark_set()

    def _m_step(self, x: torch.Tensor, resp: torch.Tensor) -> None:
        nk = resp.sum(0)                                                 # (K,) eq. 9.27
        if not self._empty_components_ok():
            self._check(nk, nk < MIN_COMPONENT_MASS, self._raise_mass)
        self.weights = nk / nk.sum()                                     # eq. 9.26 / 9.60
        self._m_step_components(x, resp, nk)

    def _raise_mass(self, nk: torch.Tensor) -> None:
        small = (nk < MIN_COMPONENT_MASS).nonzero()
        if small.numel():
            k = int(small[0, 0])
            raise self._collapse(
                k, f"its total responsibility is {float(nk[k]):.3g} points, "
                   f"< {MIN_COMPONENT_MASS:g}", self._mass_fix)

    # ------------------------------------------------------------ deferred checks
    # A check is a tensor, a boolean mask of its failures, and a function that raises the
    # error that names the failure. Outside the EM loop it runs at once (one host sync).
    # Inside it (``_pending`` is a list) the mask's ``any()`` is queued on the device with the
    # iteration's log-likelihood and all of them are read back in one transfer (every
    # iteration on the CPU or with ``tol > 0``; every :data:`SYNC_EVERY` iterations on an
    # accelerator with ``tol = 0``), then the first failure is raised, in the order the
    # synchronous code meets them.
    _pending: list | None = None

    def _check(self, value: torch.Tensor, bad: torch.Tensor, raise_fn) -> None:
        if self._pending is None:
            raise_fn(value)
        else:
            self._pending.append((bad.any(), value, raise_fn))

    def _sync_interval(self, device: torch.device) -> int:
        """Iterations between read-backs of the EM loop: 1 on the CPU (where reading a value
        costs nothing) or when ``tol > 0`` (the loop must stop at the iteration that meets
        it), else :data:`SYNC_EVERY`."""
        return 1 if device.type == "cpu" or self.tol > 0 else SYNC_EVERY

    def _discard_caches(self) -> None:
        """Forget values derived from parameters that failed a deferred check."""

    def _flush(self, iteration0: int) -> list[float]:
        """Read back the queued checks and log-likelihoods (one transfer); raise the first
        failure; return the log-likelihoods, iterations ``iteration0, iteration0 + 1, ...``."""
        pending, self._pending = self._pending, []
        if not pending:
            return []
        dtype = next((p.dtype for p in pending if not isinstance(p, tuple)), torch.float32)
        host = torch.stack([p[0].to(dtype) if isinstance(p, tuple) else p
                            for p in pending]).tolist()                  # one transfer
        values: list[float] = []
        for h, p in zip(host, pending, strict=True):
            if isinstance(p, tuple):
                if h:
                    self._pending = None
                    self._discard_caches()
                    p[2](p[1])
            elif not math.isfinite(h):
                self._pending = None
                self._discard_caches()
                raise ComponentCollapseError(
                    f"{type(self).__name__}: the log-likelihood became {h} at EM iteration "
                    f"{iteration0 + len(values)}; raise reg_covar or lower n_components")
            else:
                values.append(h)
        return values

    # ------------------------------------------------------------ fitting
    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> MixtureEM:
        """Fit by EM: ``n_init`` restarts (each initialised by :meth:`initialize`, from one
        generator seeded with ``seed``), each iterating M-step / E-step until the mean
        log-likelihood changes by less than ``tol`` nats per point or ``max_iter`` M-steps; the
        restart with the highest final log-likelihood is kept. With ``warm_start=True`` and
        parameters already set, one run starts from them instead.

        Args:
            x: ``(N, D)`` float tensor (integer/bool data are converted to the default
                dtype); the parameters end on its device and dtype.

        Returns:
            self, with ``weights_``, ``means_``, ``converged_``, ``n_iter_``,
            ``lower_bound_`` (nats per point) and ``history_`` set.

        Raises:
            DataError: x is not 2-D, holds NaN/inf, has fewer points than components or
                (Bernoulli) non-binary values.
            ComponentCollapseError: a component collapsed (see :meth:`m_step`).
        """
        x = self._check_input(x, fitting=True)
        warm = self.warm_start and bool(self.initialized)
        if warm:
            self.to(device=x.device, dtype=x.dtype)
        g = self._generator()
        best = None
        for _ in range(1 if warm else self.n_init):
            if not warm:
                self._initialize(x, g)
            history, converged = self._run_em(x)
            if best is None or history[-1] > best[0]:
                state = ({k: v.clone() for k, v in self.state_dict().items()}
                         if self.n_init > 1 and not warm else None)
                best = (history[-1], state, history, converged)
        _, state, history, converged = best
        if state is not None:
            self.load_state_dict(state)
        self.initialized.fill_(True)
        self.converged.fill_(converged)
        self.n_iter.fill_(len(history) - 1)
        self.lower_bound.fill_(history[-1])
        self.history_ = history
        dead = int((self.weights * x.shape[0] < MIN_COMPONENT_MASS).sum())
        if dead:
            warnings.warn(
                f"{type(self).__name__}: {dead} of {self.n_components} components ended with "
                f"less than {MIN_COMPONENT_MASS:g} points of responsibility (weight ~0) and "
                "model nothing; lower n_components", VaekitWarning, stacklevel=3)
        return self

    def _run_em(self, x: torch.Tensor) -> tuple[list[float], bool]:
        data = self._prepare(x, fitting=True)
        every = self._sync_interval(x.device)
        ll, resp = self._responsibilities(data)
        history, converged = [float(ll)], False
        self._pending = []
        try:
            for it in range(1, self.max_iter + 1):
                self._m_step(x, resp)
                ll, resp = self._responsibilities(data)
                self._pending.append(ll)
                if it % every and it < self.max_iter:
                    continue
                for new in self._flush(len(history)):
                    converged = abs(new - history[-1]) < self.tol
                    history.append(new)
                    if converged:
                        break
                if converged:
                    break
        finally:
            self._pending = None
        return history, converged

    # ------------------------------------------------------------ inference
    @torch.no_grad()
    def score_samples(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x_n) = logsumexp_k [log pi_k + log p(x_n|z=k)], ``(N,)`` in nats.

        Raises:
            NotFittedError: no parameters yet.
            DataError: x is not ``(N, D)`` with the fitted D, holds NaN/inf, or (Bernoulli)
                is not binary.
        """
        return torch.logsumexp(self._log_joint(self._check_input(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), ``(N,)`` nats (same as :meth:`score_samples`)."""
        return self.score_samples(x)

    def score(self, x: torch.Tensor) -> float:
        """Mean log p(x) per point, nats (raises as :meth:`score_samples`)."""
        return float(self.score_samples(x).mean())

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior p(z = k | x_n) (the E-step's responsibilities), ``(N, K)``; rows sum
        to 1 (raises as :meth:`score_samples`)."""
        return self._e_step(self._check_input(x))[1].exp()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable component argmax_k p(z = k | x_n), ``(N,)`` int64."""
        return self._log_joint(self._check_input(x)).argmax(1)

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``z ~ p(z)`` then ``x ~ p(x|z)``.

        Args:
            n: number of points.
            seed: seeds a generator on the parameters' device (``None``: torch's global RNG).

        Returns:
            ``(x (n, D), labels (n,) int64)`` on the parameters' device and dtype.

        Raises:
            NotFittedError: no parameters yet.
        """
        self._check_fitted()
        g = None
        if seed is not None:
            g = torch.Generator(device=self.weights.device).manual_seed(seed)
        labels = torch.multinomial(self.weights, n, replacement=True, generator=g)
        return self._sample_components(labels, g), labels
