"""Priors over a VQ-VAE's discrete codes c = (c_1, ..., c_M), c_m in {0, ..., K-1}, fitted
after training on the codes of the training set so that the model can sample and has a
likelihood bound (van den Oord et al. 2017, Sec. 3.2 and 4: a PixelCNN there; here an
independent categorical per position, or a MADE over the positions).

A code prior has ``log_prob(codes (B, M)) -> (B,)``, ``sample(n, generator)`` and ``fit(codes)``;
until fitted it is uniform, log p(c) = -M log K (the paper's training-time prior). Registered
by name in :data:`CODE_PRIORS` (``--code-prior``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import ACTIVATIONS
from ..registry import Registry

CODE_PRIORS: Registry[type[nn.Module]] = Registry("code_prior")


@CODE_PRIORS.decorator("categorical")
class CategoricalCodePrior(nn.Module):
    """p(c) = prod_m p(c_m), an independent categorical per position, ``log_probs: (M, K)``."""

    def __init__(self, num_latents: int, codebook_size: int, **kwargs) -> None:
        super().__init__()
        self.num_latents, self.codebook_size = num_latents, codebook_size
        self.register_buffer("log_probs", torch.full((num_latents, codebook_size),
                                                     -math.log(codebook_size)))

    @torch.no_grad()
    def fit_counts(self, codes: torch.Tensor) -> None:
        """Add-one smoothed frequencies: p(c_m = k) = (#{n: c_nm = k} + 1) / (N + K)."""
        counts = torch.zeros_like(self.log_probs)
        counts.scatter_add_(1, codes.t(), torch.ones(codes.t().shape, dtype=counts.dtype,
                                                     device=counts.device))       # (M, K)
        self.log_probs.copy_(torch.log((counts + 1) / (codes.shape[0] + self.codebook_size)))

    def fit(self, codes: torch.Tensor, **kwargs) -> None:
        self.fit_counts(codes)

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(self.num_latents, device=codes.device)
        return self.log_probs[positions, codes].sum(-1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        probs = self.log_probs.exp()                                       # (M, K)
        return torch.multinomial(probs, n, replacement=True, generator=generator).t()


class _MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask ``(out, in)``."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


@CODE_PRIORS.decorator("autoregressive")
class AutoregressiveCodePrior(CategoricalCodePrior):
    """p(c) = prod_m p(c_m | c_<m) over ``M`` positions with ``K`` classes each: a MADE
    (Germain et al. 2015) with one hidden layer on the one-hot codes. (It keeps an
    independent categorical, :attr:`log_probs`, fitted beside it, for comparison.)

    Input unit (m, k) has degree m + 1, hidden unit h degree 1 + (h mod max(M - 1, 1)), output
    unit (m, k) degree m + 1; a connection exists into a hidden unit of degree >= the input's and
    into an output of degree > the hidden unit's, so the logits of position m depend only on
    c_<m (position 0 has a bias only). The output layer starts at zero: the untrained prior is
    uniform, log p(c) = -M log K. It is fitted by Adam (:func:`vaekit.fitting.
    maximize_log_likelihood`).
    """

    def __init__(self, num_latents: int, codebook_size: int, hidden_size: int = 256,
                 activation: str = "relu") -> None:
        super().__init__(num_latents, codebook_size)
        M, K, H = num_latents, codebook_size, hidden_size
        deg_in = torch.arange(M).repeat_interleave(K) + 1                # (M*K,)
        deg_hidden = torch.arange(H) % max(M - 1, 1) + 1                  # (H,)
        self.hidden = _MaskedLinear((deg_hidden[:, None] >= deg_in[None, :]).float())
        self.act = ACTIVATIONS[activation]()
        self.out = _MaskedLinear((deg_in[:, None] > deg_hidden[None, :]).float())
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        """Unnormalised log p(c_m = k | c_<m) for ``codes: (B, M)`` int64: ``(B, M, K)``."""
        M, K = self.num_latents, self.codebook_size
        one_hot = torch.zeros(*codes.shape, K, device=codes.device, dtype=self.out.weight.dtype)
        one_hot.scatter_(-1, codes.unsqueeze(-1), 1.0)
        return self.out(self.act(self.hidden(one_hot.flatten(-2)))).view(-1, M, K)

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(c) in nats for ``codes: (B, M)``: ``(B,)``."""
        log_p = self.logits(codes).log_softmax(-1)                       # (B, M, K)
        return log_p.gather(-1, codes.unsqueeze(-1)).squeeze(-1).sum(-1)

    def fit(self, codes: torch.Tensor, *, steps: int = 2000, batch_size: int = 256,
            lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0) -> None:
        from ..fitting import maximize_log_likelihood
        self.fit_counts(codes)
        maximize_log_likelihood(self, codes, steps=steps, batch_size=batch_size, lr=lr,
                                weight_decay=weight_decay, seed=seed)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` ancestral draws, one position at a time: ``(n, M)`` int64."""
        device = self.out.weight.device
        codes = torch.zeros(n, self.num_latents, dtype=torch.long, device=device)
        for m in range(self.num_latents):
            probs = self.logits(codes)[:, m].softmax(-1)                 # (n, K)
            codes[:, m] = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return codes
