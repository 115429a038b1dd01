"""Vector quantisation with an exponential-moving-average codebook (van den Oord, Vinyals &
Kavukcuoglu 2017, Sec. 3.1 and Appendix A.1), the VQ-VAE's bottleneck.

Notation: d the embedding dimension, K the codebook size.

* quantiser:  c(z_e) = argmin_k ||z_e - e_k||^2  (paper eq. 1), z_q = e_c  (eq. 2);
* codebook:   exponential moving averages (Appendix A.1, eqs. 6-8) with Laplace-smoothed
              cluster sizes, plus dead-code restarts (Dhariwal et al. 2020, "Jukebox";
              Williams et al. 2020, "Hierarchical Quantized Autoencoders").

The codebook and its averages are buffers: the optimiser never sees them, they are saved in
``state_dict`` and they change only through :meth:`VectorQuantizerEMA.update`, without a
host-device synchronisation.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class VectorQuantizerEMA(nn.Module):
    """K codebook vectors of dimension d, updated by moving averages.

    Args:
        codebook_size: K.
        embedding_dim: d.
        ema_decay: gamma of the moving averages (Appendix A.1; 0.99 in the paper).
        dead_code_threshold: a code is dead when its EMA cluster size N_k falls below this
            (units: encoder vectors per batch, averaged by the EMA); dead codes are moved to
            random encoder outputs of the current batch. 0 disables restarts. The default, 1,
            is Jukebox's; scale it with the number of vectors per batch. As N_k starts at 1,
            the default also moves every code left unused by the first training batch onto
            that batch's encoder outputs: a data-dependent initialisation.
        laplace_eps: epsilon of the Laplace smoothing of the cluster sizes.

    The codebook starts uniform in +-sqrt(3 / d) (Sonnet's variance scaling, fan-in d),
    drawn from the global random generator.
    """

    def __init__(self, codebook_size: int, embedding_dim: int, ema_decay: float = 0.99,
                 dead_code_threshold: float = 1.0, laplace_eps: float = 1e-5) -> None:
        super().__init__()
        self.codebook_size, self.embedding_dim = int(codebook_size), int(embedding_dim)
        self.ema_decay = float(ema_decay)
        self.dead_code_threshold = float(dead_code_threshold)
        self.laplace_eps = float(laplace_eps)
        limit = math.sqrt(3.0 / embedding_dim)
        codebook = torch.empty(codebook_size, embedding_dim).uniform_(-limit, limit)
        self.register_buffer("codebook", codebook)                       # e_k: (K, d)
        self.register_buffer("ema_cluster_size", torch.ones(codebook_size))   # N_k: (K,)
        self.register_buffer("ema_embed_sum", codebook.clone())          # m_k: (K, d)

    def extra_repr(self) -> str:
        return (f"K={self.codebook_size}, d={self.embedding_dim}, ema_decay={self.ema_decay}, "
                f"dead_code_threshold={self.dead_code_threshold}")

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest-codebook quantisation (paper eqs. 1-2) of ``z_e: (..., d)``.

        Squared Euclidean distances ||z||^2 - 2 z.e_k + ||e_k||^2 come from one matrix product;
        ties go to the lowest index. No gradient flows (the VQ-VAE applies the straight-through
        estimator).

        Returns:
            ``(z_q, codes)``: ``z_q = e_codes`` of shape ``(..., d)`` (detached) and
            ``codes`` of shape ``z_e.shape[:-1]``, int64 in [0, K).
        """
        with torch.no_grad():
            flat = z_e.detach().reshape(-1, self.embedding_dim)                   # (N, d)
            sq = flat.pow(2).sum(1, keepdim=True) + self.codebook.pow(2).sum(1)   # (N, K)
            dist = torch.addmm(sq, flat, self.codebook.t(), alpha=-2.0)           # (N, K)
            codes = dist.argmin(1)
            z_q = self.codebook[codes]
        return z_q.view(z_e.shape), codes.view(z_e.shape[:-1])

    @torch.no_grad()
    def update(self, z_e: torch.Tensor, codes: torch.Tensor) -> None:
        """One EMA step of the codebook from ``z_e: (N, d)`` and their ``codes: (N,)``
        (Appendix A.1), then the dead-code restarts. In place, no host-device sync.

        n_k = #{i: c_i = k},  s_k = sum_{i: c_i = k} z_e,i;
        N_k <- gamma N_k + (1 - gamma) n_k                                 (eq. 6)
        m_k <- gamma m_k + (1 - gamma) s_k                                 (eq. 7)
        N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j   (Laplace smoothing)
        e_k = m_k / N~_k                                                   (eq. 8)
        Restart: where N_k < threshold, e_k <- a random row of ``z_e`` (drawn with replacement
        by the global RNG), m_k <- threshold * e_k, N_k <- threshold; such a code survives the
        next step when it gathers at least ``threshold`` vectors.
        """
        K, gamma = self.codebook_size, self.ema_decay
        z_e = z_e.to(self.codebook.dtype)
        one_hot = torch.zeros(codes.shape[0], K, device=z_e.device, dtype=z_e.dtype)
        one_hot.scatter_(1, codes.unsqueeze(1), 1.0)                     # (N, K)
        self.ema_cluster_size.mul_(gamma).add_(one_hot.sum(0), alpha=1 - gamma)
        self.ema_embed_sum.mul_(gamma).add_(one_hot.t() @ z_e, alpha=1 - gamma)
        total = self.ema_cluster_size.sum()
        smoothed = ((self.ema_cluster_size + self.laplace_eps)
                    / (total + K * self.laplace_eps) * total)
        self.codebook.copy_(self.ema_embed_sum / smoothed.unsqueeze(1))
        if self.dead_code_threshold > 0:
            dead = (self.ema_cluster_size < self.dead_code_threshold).unsqueeze(1)  # (K, 1)
            pick = torch.randint(0, z_e.shape[0], (K,), device=z_e.device)
            fresh = z_e[pick]                                                     # (K, d)
            t = self.dead_code_threshold
            self.codebook.copy_(torch.where(dead, fresh, self.codebook))
            self.ema_embed_sum.copy_(torch.where(dead, t * fresh, self.ema_embed_sum))
            self.ema_cluster_size.copy_(torch.where(dead.squeeze(1), t, self.ema_cluster_size))

    @torch.no_grad()
    def usage(self, codes: torch.Tensor) -> torch.Tensor:
        """Counts of each code among ``codes`` (any shape): ``(K,)`` int64."""
        return torch.bincount(codes.reshape(-1), minlength=self.codebook_size)
