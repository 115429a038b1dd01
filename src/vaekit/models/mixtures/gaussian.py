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

BLOCK_ELEMENTS = 1 << 17
"""Full-covariance E- and M-steps work on blocks of rows whose temporaries hold about this
many elements (1 MiB in float64: they stay in the CPU's cache between the operations)."""
MIN_BLOCK_ROWS = 256
"""... but at least this many rows per block (fewer components per block when K D is large)."""


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
        cached until the covariances change. All K factorisations are one batched
        ``cholesky_ex`` and one batched triangular solve.

        Raises:
            ComponentCollapseError: a covariance is not positive definite (inside the EM loop
                the check is deferred, see :meth:`MixtureEM._check`).
        """
        cov = self.covariances
        version = _version(cov)
        cache = self._cholesky_cache        # (the tensor itself, its version, its factors)
        if cache is not None and cache[0] is cov and version is not None \
                and cache[1] == version:
            return cache[2]
        if self.covariance_type == "diag":
            self._check(cov, cov <= 0, self._raise_variance)
            L, W = cov.sqrt(), None
        else:
            L, info = torch.linalg.cholesky_ex(cov)
            self._check(info, info != 0, self._raise_cholesky)
            eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device).expand_as(L)
            W = torch.linalg.solve_triangular(L, eye, upper=False).transpose(-1, -2)
        self._cholesky_cache = (cov, version, (L, W))
        return L, W

    def _fix(self) -> str:
        return f"raise reg_covar (now {self.reg_covar:g}) or lower n_components"

    def _raise_variance(self, cov: torch.Tensor) -> None:
        bad = (cov <= 0).any(1).nonzero()
        if bad.numel():
            k = int(bad[0, 0])
            d = int((cov[k] <= 0).nonzero()[0, 0])
            raise self._collapse(k, f"its variance in dimension {d} is "
                                    f"{float(cov[k, d]):.3g}", self._fix())

    def _raise_cholesky(self, info: torch.Tensor) -> None:
        bad = info.nonzero()
        if bad.numel():
            k = int(bad[0, 0])
            raise self._collapse(k, "its covariance is not positive definite (Cholesky "
                                    f"failed at leading minor {int(info[k])} of "
                                    f"{self.data_dim})", self._fix())

    def _discard_caches(self) -> None:
        self._cholesky_cache = None

    def _blocks(self, N: int, D: int, device: torch.device) -> tuple[int, int]:
        """``(rows, components)`` per block of the full-covariance steps: on the CPU, blocks of
        about :data:`BLOCK_ELEMENTS` (cache-sized) temporaries, at least :data:`MIN_BLOCK_ROWS`
        rows (fewer components per block when K D is large); on an accelerator as large as
        allowed; never over ``CHUNK_ELEMENTS``."""
        K = self.n_components
        kb = max(1, min(K, CHUNK_ELEMENTS // (MIN_BLOCK_ROWS * D)))
        most = max(1, CHUNK_ELEMENTS // (kb * D))
        target = max(BLOCK_ELEMENTS // (kb * D), MIN_BLOCK_ROWS) if device.type == "cpu" \
            else most
        return min(N, target, most), kb

    def _prepare(self, x: torch.Tensor, fitting: bool = False):
        """Full covariances: ``(x, c, xa)`` with c the mean of x, the shift that keeps
        ``x W_k - mu_k W_k`` accurate far from the origin, and, for the EM loop, the shifted
        data with a column of ones ``xa = [x - c, 1]`` ``(N, D + 1)`` (one copy of x per fit,
        which turns each block's shift, product and bias into one ``mm``); else None. Diag:
        ``x``."""
        if self.covariance_type == "diag":
            return x
        c = x.mean(0)
        xa = torch.cat([x - c, x.new_ones(x.shape[0], 1)], 1) if fitting else None
        return x, c, xa

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` log N(x_n; mu_k, Sigma_k) in nats (x already validated).

        Full: with Sigma_k = L_k L_k^T and the precision Cholesky factor W_k = L_k^{-T},
        ``-(D log 2 pi + 2 sum log diag L_k + |x W_k - mu_k W_k|^2) / 2`` as scikit-learn
        computes it, with x and mu_k shifted by the mean c of x: per cache-sized block of
        rows, one matrix product ``(x - c) [W_1 ... W_K] - [(mu_1 - c) W_1 ... (mu_K - c) W_K]``
        ``(n, K D)`` (``addmm``), squared in place and summed over each component's D columns
        (a product with a vector of ones). Diag: the Mahalanobis term expanded as
        ``x^2 . (1/var) - 2 x . (mu/var) + mu^2 . (1/var)`` accumulated in float64.

        Raises:
            ComponentCollapseError: a covariance is not positive definite.
        """
        return self._component_log_prob_prepared(self._prepare(x))

    def _component_log_prob_prepared(self, data) -> torch.Tensor:
        K = self.n_components
        L, W = self._factors()
        if self.covariance_type == "full":
            x, c, xa = data
            N, D = x.shape
            log_det = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)         # (K,)
            maha = x.new_empty(N, K)
            rows, kb = self._blocks(N, D, x.device)
            ones = x.new_ones(D, 1)
            for k0 in range(0, K, kb):
                ks = slice(k0, min(K, k0 + kb))
                Wk = W[ks]                                                     # (k, D, D)
                Wf = Wk.permute(1, 0, 2).reshape(D, -1)                        # (D, k D)
                neg_bias = ((c - self.means[ks])[:, None, :] @ Wk).reshape(1, -1)
                if xa is not None:
                    Wf = torch.cat([Wf, neg_bias])                             # (D + 1, k D)
                buf = x.new_empty(rows, Wf.shape[1])
                for r0 in range(0, N, rows):
                    rs = slice(r0, min(N, r0 + rows))
                    n = rs.stop - r0
                    if xa is None:                                             # (n, k D)
                        y = torch.addmm(neg_bias, x[rs] - c, Wf, out=buf[:n])
                    else:
                        y = torch.mm(xa[rs], Wf, out=buf[:n])
                    y.mul_(y)
                    maha[rs, ks] = torch.mm(y.view(-1, D), ones).view(n, -1)
            return maha.add_(log_det + D * math.log(2 * math.pi)).mul_(-0.5)
        x = data
        N, D = x.shape
        acc = torch.float64
        prec = self.covariances.to(acc).reciprocal()                           # (K, D)
        mp = self.means.to(acc) * prec
        const = (self.means.to(acc) * mp).sum(1)                               # (K,)
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
            # sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T = Y_k^T Y_k with Y_k = sqrt(r_k) (x - mu_k):
            # per cache-sized block of rows and components, the differences scaled in place
            # and one batched product accumulated in place
            cov = x.new_zeros(K, D, D)
            rows, kb = self._blocks(N, D, x.device)
            buf = x.new_empty(kb, rows, D)
            sqrt_rT = resp.T.sqrt()                                            # (K, N)
            for k0 in range(0, K, kb):
                ks = slice(k0, min(K, k0 + kb))
                for r0 in range(0, N, rows):
                    rs = slice(r0, min(N, r0 + rows))
                    y = torch.sub(x[None, rs], means[ks, None], out=buf[:ks.stop - k0,
                                                                        :rs.stop - r0])
                    y.mul_(sqrt_rT[ks, rs, None])
                    cov[ks].baddbmm_(y.transpose(1, 2), y)
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
