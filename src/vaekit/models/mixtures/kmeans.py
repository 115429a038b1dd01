"""k-means++ seeding and the chunked distance helpers of the mixtures' EM (Arthur &
Vassilvitskii 2007). Temporaries hold at most :data:`CHUNK_ELEMENTS` elements, whatever N and D.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from ...errors import DataError

CHUNK_ELEMENTS = 1 << 22
"""Temporaries of k-means++, full-covariance steps and diagonal Mahalanobis terms hold at most
about this many elements (~4M, 16 MiB in float32), whatever N and D."""


def _row_slices(n: int, width: int, budget: int = CHUNK_ELEMENTS) -> Iterator[slice]:
    """Slices of ``range(n)`` with at most ``budget // width`` rows (at least one)."""
    step = max(1, budget // max(1, width))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _sq_norms(x: torch.Tensor, budget: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """``|x_n|^2`` for every row, ``(N,)``, in row chunks."""
    out = x.new_empty(x.shape[0])
    for s in _row_slices(x.shape[0], x.shape[1], budget):
        out[s] = x[s].square().sum(1)
    return out


def _sq_dist_to_points(x: torch.Tensor, x_sq: torch.Tensor, c: torch.Tensor,
                       budget: int) -> torch.Tensor:
    """``|x_n - c_t|^2``, ``(N, T)`` for ``c: (T, D)``: ``|x|^2 - 2 x.c + |c|^2`` (one matrix
    product, no ``(N, D)`` temporary), recomputed by explicit differences (in chunks) where it
    is within rounding error of 0, so that duplicates of a ``c_t`` get exactly 0."""
    c_sq = c.square().sum(1)                                             # (T,)
    d = x_sq[:, None] - 2 * (x @ c.T) + c_sq
    tol = x.shape[1] * torch.finfo(x.dtype).eps * (x_sq[:, None] + c_sq)  # worst-case rounding
    close = (d <= tol).nonzero()                                         # (M, 2)
    for s in _row_slices(close.shape[0], x.shape[1], budget):
        r, t = close[s, 0], close[s, 1]
        d[r, t] = (x[r] - c[t]).square().sum(1)
    return d.clamp_min_(0)


def kmeans_plusplus(x: torch.Tensor, n_clusters: int, generator: torch.Generator | None = None,
                    n_local_trials: int | None = None,
                    chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """Indices of ``n_clusters`` k-means++ seeds among the rows of ``x`` (Arthur &
    Vassilvitskii 2007): the first uniformly at random, each next one with probability
    proportional to its squared distance to the nearest seed chosen so far ("D^2 sampling").

    Greedy variant (the default, as in scikit-learn): each new seed is the best of
    ``n_local_trials`` D^2-sampled candidates, the one that lowers the potential
    sum_n min_j |x_n - c_j|^2 most (Arthur & Vassilvitskii mention that this helps); on three
    well-separated clusters plain D^2 sampling puts two seeds in one cluster 20% of the time.

    Args:
        x: ``(N, D)`` points, on any device.
        n_clusters: K.
        generator: a CPU ``torch.Generator`` (the sampling runs on the CPU, so a seed gives the
            same seeds on every device up to rounding).
        n_local_trials: candidates per seed; None: ``2 + int(ln K)``; 1: plain k-means++.
        chunk_elements: bound on the temporaries: distances are one ``(N, T)`` matrix product
            per seed and the rest is done in row chunks, so 60,000 x 784 needs O(N) extra
            memory.

    Returns:
        ``(K,)`` int64 indices on the CPU, distinct points.

    Raises:
        DataError: ``x`` has fewer than K distinct points.
    """
    n = x.shape[0]
    if n < n_clusters:
        raise DataError(f"k-means++ needs at least {n_clusters} points, got {n}")
    trials = n_local_trials or 2 + int(math.log(n_clusters))
    x_sq = _sq_norms(x, chunk_elements)                                  # (N,)
    idx = torch.empty(n_clusters, dtype=torch.long)
    idx[0] = torch.randint(n, (1,), generator=generator)
    d2 = _sq_dist_to_points(x, x_sq, x[idx[:1].to(x.device)], chunk_elements)[:, 0]  # (N,)
    for j in range(1, n_clusters):
        w = d2.to("cpu", torch.float64)
        if not float(w.sum()) > 0:
            raise DataError(
                f"x has only {j} distinct points, fewer than n_components={n_clusters}; "
                "lower n_components")
        cand = torch.multinomial(w, trials, replacement=True, generator=generator)   # (T,)
        dc = torch.minimum(_sq_dist_to_points(x, x_sq, x[cand.to(x.device)], chunk_elements),
                           d2[:, None])                                  # (N, T)
        best = int(dc.sum(0).argmin())
        idx[j] = cand[best]
        d2 = dc[:, best].contiguous()
    return idx



def _nearest(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Index of the nearest center (Euclidean) of every row, ``(N,)``, in row chunks."""
    c2 = centers.square().sum(1)                                         # (K,)
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for s in _row_slices(x.shape[0], max(x.shape[1], centers.shape[0])):
        labels[s] = (c2 - 2 * x[s] @ centers.T).argmin(1)                 # |x|^2 is constant
    return labels
