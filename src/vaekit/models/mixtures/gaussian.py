"""A mixture of Gaussians with full or diagonal covariances, fitted by EM (Bishop 2006,
Sec. 9.2: E-step eq. 9.23; M-step eqs. 9.24 (means), 9.25 (covariances), 9.26 (weights) with
N_k from eq. 9.27; log-likelihood eq. 9.28). Full-covariance densities use Cholesky factors
Sigma_k = L_k L_k^T; diagonal Mahalanobis terms are accumulated in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...errors import DataError
from ...options import nonnegative, one_of, option
from .em import MixtureEM, MixtureOptions, _version
from .kmeans import CHUNK_ELEMENTS, _row_slices

COVARIANCE_TYPES = ("full", "diag")


@dataclass
class GaussianMixtureOptions(MixtureOptions):
    covariance_type: str = option("full", "full | diag", check=one_of(COVARIANCE_TYPES))
    reg_covar: float = option(1e-6, "added to the covariances' diagonal", check=nonnegative)


class GaussianMixture(MixtureEM):
    """A mixture of K Gaussians with full or diagonal covariances, fitted by EM.

    p(x) = sum_k pi_k N(x; mu_k, Sigma_k) (Bishop 2006 eq. 9.7). ``reg_covar`` is added to the
    diagonal of every covariance in the M-step: it bounds the density of a component that
    shrinks onto a few points (the singularity of the Gaussian-mixture likelihood, Bishop 2006
    Sec. 9.2.1).

    Args:
        n_components: K.
        covariance_type: ``"full"`` (``covariances_`` is ``(K, D, D)``) or ``"diag"``
            (``(K, D)``, the variances).
        tol: convergence threshold on the change of the mean log-likelihood (nats per point).
        reg_covar: added to the covariances' diagonals (units of x squared).
        max_iter: maximum number of EM iterations (M-steps) per restart.
        n_init: number of restarts; the best final log-likelihood is kept.
        init_params: ``"k-means++"`` or ``"random"`` (see :meth:`initialize`).
        seed: seed of the initialisation.
        warm_start: :meth:`fit` starts from the current parameters when set.
        data_dim: D, to allocate the buffers before ``load_state_dict`` (else set by fit).

    Learned attributes: ``weights_`` (K,), ``means_`` (K, D), ``covariances_``, and
    ``converged_``, ``n_iter_``, ``lower_bound_``, ``history_`` (see :class:`MixtureEM`).

    Raises:
        ConfigError: a hyperparameter is out of range.
    """

    likelihood = "gaussian"
    options_class = GaussianMixtureOptions
    _CONFIG_FIELDS = MixtureEM._CONFIG_FIELDS + (
        ("covariance_type", "covariance_type"), ("reg_covar", "reg_covar"))

    def __init__(self, n_components: int = 1, covariance_type: str = "full", tol: float = 1e-3,
                 reg_covar: float = 1e-6, max_iter: int = 100, n_init: int = 1,
                 init_params: str = "k-means++", seed: int = 0, *, warm_start: bool = False,
                 data_dim: int | None = None) -> None:
        super().__init__(n_components, tol, max_iter, n_init, init_params, seed, warm_start,
                         data_dim, covariance_type=covariance_type, reg_covar=reg_covar)
        self.covariance_type, self.reg_covar = self.options.covariance_type, \
            self.options.reg_covar
        self._cholesky_cache: tuple | None = None
        self._register_state()

    def _component_buffers(self, D: int) -> dict[str, tuple[int, ...]]:
        K = self.n_components
        return {"covariances": (K, D, D) if self.covariance_type == "full" else (K, D)}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, covariance_type={self.covariance_type!r}"

    @property
    def covariances_(self) -> torch.Tensor:
        """``(K, D, D)`` (full) or ``(K, D)`` variances (diag)."""
        return self.covariances

    @torch.no_grad()
    def set_parameters(self, weights, means, covariances) -> GaussianMixture:
        """Set the parameters directly (e.g. a known truth, or a start for ``warm_start``).

        Args:
            weights: ``(K,)``, >= 0, summing to 1.
            means: ``(K, D)``; its dtype and device are used for all parameters (a non-tensor
                gets the default dtype).
            covariances: ``(K, D, D)`` symmetric positive definite (full) or ``(K, D)`` > 0
                (diag).

        Returns:
            self.

        Raises:
            DataError: wrong shapes or weights; ComponentCollapseError: a covariance is not
            positive definite.
        """
        means = torch.as_tensor(means)
        if not means.is_floating_point():
            means = means.to(torch.get_default_dtype())
        K = self.n_components
        if means.ndim != 2 or means.shape[0] != K:
            raise DataError(f"means must have shape ({K}, D), got {tuple(means.shape)}")
        D = means.shape[1]
        if self.data_dim is not None and D != self.data_dim:
            raise DataError(f"means have {D} columns but data_dim={self.data_dim}")
        self._allocate(D, means.device, means.dtype)
        cov = torch.as_tensor(covariances, dtype=means.dtype, device=means.device)
        shape = self._component_buffers(D)["covariances"]
        if tuple(cov.shape) != shape:
            raise DataError(f"covariances must have shape {shape} for covariance_type="
                            f"{self.covariance_type!r}, got {tuple(cov.shape)}")
        if self.covariance_type == "full" and not torch.allclose(cov, cov.mT, rtol=1e-6,
                                                                 atol=0):
            raise DataError("covariances must be symmetric matrices")
        self.weights = self._set_weights(weights)
        self.means = means.clone()
        self.covariances = cov.clone()
        self._scale_tril()                                   # raises when not PD
        self._mark_set()
        return self

    # ------------------------------------------------------------ densities
    def _scale_tril(self) -> torch.Tensor:
        """Cholesky factors L ``(K, D, D)`` of the covariances (full) or the standard
        deviations ``(K, D)`` (diag).

        Raises:
            ComponentCollapseError: a covariance is not positive definite.
        """
        return self._factors()[0]

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(L, L^{-T})``: the Cholesky factors and (full covariances) the transposed inverse
        factors, the "precision Cholesky" with Sigma^{-1} = L^{-T} L^{-1}, ``(K, D, D)``;
        cached until the covariances change.

        Raises:
            ComponentCollapseError: a covariance is not positive definite.
        """
        cov = self.covariances
        version = _version(cov)
        cache = self._cholesky_cache        # (the tensor itself, its version, its factors)
        if cache is not None and cache[0] is cov and version is not None \
                and cache[1] == version:
            return cache[2]
        fix = f"raise reg_covar (now {self.reg_covar:g}) or lower n_components"
        if self.covariance_type == "diag":
            bad = (self.covariances <= 0).any(1).nonzero()
            if bad.numel():
                k = int(bad[0, 0])
                d = int((self.covariances[k] <= 0).nonzero()[0, 0])
                raise self._collapse(k, f"its variance in dimension {d} is "
                                        f"{float(self.covariances[k, d]):.3g}", fix)
            L, W = cov.sqrt(), None
        else:
            L, info = torch.linalg.cholesky_ex(cov)
            bad = info.nonzero()
            if bad.numel():
                k = int(bad[0, 0])
                raise self._collapse(k, "its covariance is not positive definite (Cholesky "
                                        f"failed at leading minor {int(info[k])} of "
                                        f"{self.data_dim})", fix)
            eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device).expand_as(L)
            W = torch.linalg.solve_triangular(L, eye, upper=False).transpose(-1, -2)
        self._cholesky_cache = (cov, version, (L, W))
        return L, W

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` log N(x_n; mu_k, Sigma_k) in nats (x already validated).

        Full: with Sigma_k = L_k L_k^T, ``-(D log 2 pi + 2 sum log diag L_k + |(x - mu_k)
        L_k^{-T}|^2) / 2`` (the inverse factors come from one triangular solve per M-step).
        Diag: the Mahalanobis term expanded as
        ``x^2 . (1/var) - 2 x . (mu/var) + mu^2 . (1/var)`` accumulated in float64.

        Raises:
            ComponentCollapseError: a covariance is not positive definite.
        """
        N, D = x.shape
        K = self.n_components
        L, W = self._factors()
        if self.covariance_type == "full":
            log_det = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)         # (K,)
            maha = x.new_empty(N, K)
            step = max(1, CHUNK_ELEMENTS // (N * D))
            for k0 in range(0, K, step):
                ks = slice(k0, min(K, k0 + step))
                y = (x[None] - self.means[ks, None]) @ W[ks]                   # (k, N, D)
                maha[:, ks] = y.square().sum(-1).T
        else:
            acc = torch.float64
            prec = self.covariances.to(acc).reciprocal()                       # (K, D)
            mp = self.means.to(acc) * prec
            const = (self.means.to(acc) * mp).sum(1)                           # (K,)
            maha = x.new_empty(N, K)
            for s in _row_slices(N, D):
                xs = x[s].to(acc)
                m = xs.square() @ prec.T - 2 * xs @ mp.T + const
                maha[s] = m.clamp_min(0).to(x.dtype)
            log_det = 2 * L.log().sum(1)
        return -0.5 * (D * math.log(2 * math.pi) + log_det + maha)

    def _m_step_components(self, x: torch.Tensor, resp: torch.Tensor, nk: torch.Tensor) -> None:
        N, D = x.shape
        K = self.n_components
        if self.covariance_type == "full":                     # eqs. 9.24 (means), 9.25
            means = (resp.T @ x) / nk[:, None]
            cov = x.new_empty(K, D, D)
            step = max(1, CHUNK_ELEMENTS // (N * D))
            for k0 in range(0, K, step):
                ks = slice(k0, min(K, k0 + step))
                diff = x[None] - means[ks, None]                               # (k, N, D)
                cov[ks] = (resp.T[ks, :, None] * diff).transpose(1, 2) @ diff
            cov /= nk[:, None, None]
            cov.diagonal(dim1=-2, dim2=-1).add_(self.reg_covar)
        else:                                       # diag: E[x^2] - mu^2, in float64
            acc = torch.float64
            ex = torch.zeros(2, K, D, dtype=acc, device=x.device)
            for s in _row_slices(N, D):
                xs, rs = x[s].to(acc), resp[s].T.to(acc)
                ex[0] += rs @ xs
                ex[1] += rs @ xs.square()
            ex /= nk[:, None].to(acc)
            means = ex[0].to(x.dtype)
            cov = ((ex[1] - ex[0].square()).clamp_min(0) + self.reg_covar).to(x.dtype)
        self.means, self.covariances = means, cov
        self._scale_tril()                                   # raises on a collapse

    def _sample_components(self, labels: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        L = self._scale_tril()
        eps = torch.randn(labels.shape[0], self.means.shape[1], generator=g,
                          device=self.means.device, dtype=self.means.dtype)
        if self.covariance_type == "diag":
            return self.means[labels] + eps * L[labels]
        x = torch.empty_like(eps)
        for k in range(self.n_components):
            sel = labels == k
            x[sel] = self.means[k] + eps[sel] @ L[k].T
        return x
