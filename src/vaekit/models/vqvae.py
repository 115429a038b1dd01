"""VQ-VAE: the vector-quantised variational autoencoder (van den Oord, Vinyals & Kavukcuoglu
2017, "Neural Discrete Representation Learning"), for flat data ``x: (B, D)``.

Notation (shapes in brackets; B examples, D observed dimensions, M latent positions,
d embedding dimension, K codebook entries):

* encoder:    z_e(x) = f_phi(x) reshaped to ``(B, M, d)``  (an MLP D -> M*d);
* quantiser:  c_m(x) = argmin_k ||z_e,m(x) - e_k||^2  (paper eq. 1), codes ``(B, M)``;
              z_q,m(x) = e_{c_m(x)}  (eq. 2), ``(B, M, d)``;
* decoder:    p_theta(x | z_q) = Bernoulli(sigmoid(g_theta(z_q)))  or  N(g_theta(z_q), s^2 I)
              with fixed s = ``decoder_std`` (an MLP M*d -> D);
* gradients:  the straight-through estimator z_e + sg(z_q - z_e) (Sec. 3.2, eq. 3): the decoder
              sees z_q, and dL/dz_q is copied unchanged to z_e;
* loss:       -log p(x | z_q) + beta ||z_e - sg(z_q)||^2 per example (eq. 3 without the codebook
              term, which the exponential moving averages replace);
* codebook:   exponential moving averages (Appendix A.1, eqs. 6-8) with Laplace-smoothed
              cluster sizes, plus dead-code restarts (Dhariwal et al. 2020, "Jukebox";
              Williams et al. 2020, "Hierarchical Quantized Autoencoders");
* prior:      p(c) fitted after training on the codes of the training set, either an
              independent categorical per position or an autoregressive (MADE, Germain et al.
              2015) model over the M positions; before fitting it is uniform, the paper's
              training-time prior.

The codebook and its averages are buffers: the optimiser never sees them, they are saved in
``state_dict`` and they change only in training mode, inside :meth:`VQVAE.forward`, without a
host-device synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent

from ..distributions import observation, observation_mean
from ..estimators.base import Losses
from ..nn import ACTIVATIONS, init_output_bias, mlp

PRIORS = ("categorical", "autoregressive")


class VQVAEOutput(NamedTuple):
    """What :meth:`VQVAE.forward` returns for ``x: (B, D)``."""

    z_e: torch.Tensor         # (B, M, d) encoder output
    z_q: torch.Tensor         # (B, M, d) straight-through: value e_c, gradient copied to z_e
    codes: torch.Tensor       # (B, M) int64 indices into the codebook
    log_px: torch.Tensor      # (B,) log p(x | z_q) in nats
    commitment: torch.Tensor  # (B,) beta * ||z_e - sg(z_q)||^2, summed over M and d


# --------------------------------------------------------------------------- autoregressive prior
class _MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask ``(out, in)``."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class AutoregressiveCodePrior(nn.Module):
    """p(c) = prod_m p(c_m | c_<m) over ``M`` positions with ``K`` classes each: a MADE
    (Germain et al. 2015) with one hidden layer on the one-hot codes.

    Input unit (m, k) has degree m + 1, hidden unit h degree 1 + (h mod max(M - 1, 1)), output
    unit (m, k) degree m + 1; a connection exists into a hidden unit of degree >= the input's and
    into an output of degree > the hidden unit's, so the logits of position m depend only on
    c_<m (position 0 has a bias only). The output layer starts at zero: the untrained prior is
    uniform, log p(c) = -M log K.
    """

    def __init__(self, num_latents: int, codebook_size: int, hidden_size: int = 256,
                 activation: str = "relu") -> None:
        super().__init__()
        M, K, H = num_latents, codebook_size, hidden_size
        self.num_latents, self.codebook_size = M, K
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

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` ancestral draws, one position at a time: ``(n, M)`` int64."""
        device = self.out.weight.device
        codes = torch.zeros(n, self.num_latents, dtype=torch.long, device=device)
        for m in range(self.num_latents):
            probs = self.logits(codes)[:, m].softmax(-1)                 # (n, K)
            codes[:, m] = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return codes


# --------------------------------------------------------------------------- the model
class VQVAE(nn.Module):
    """A VQ-VAE with MLP encoder and decoder and an EMA codebook.

    Args:
        data_dim: D, the number of observed dimensions (784 for MNIST).
        num_latents: M, the number of discrete latent positions per example.
        embedding_dim: d, the dimension of each codebook vector.
        codebook_size: K, the number of codebook vectors.
        hidden_sizes: encoder hidden widths; the decoder uses them in reverse order.
        activation: hidden nonlinearity, a key of :data:`vaekit.nn.ACTIVATIONS`.
        likelihood: ``"bernoulli"`` (decoder outputs logits) or ``"gaussian"`` (decoder
            outputs the mean; sigma fixed to ``decoder_std``).
        decoder_std: Gaussian decoder: the fixed standard deviation sigma.
        commitment_cost: beta of the commitment term beta ||z_e - sg(z_q)||^2 (paper eq. 3;
            0.25 in the paper).
        ema_decay: gamma of the codebook's moving averages (Appendix A.1; 0.99 in the paper).
        dead_code_threshold: a code is dead when its EMA cluster size N_k falls below this
            (units: encoder vectors per batch, averaged by the EMA); dead codes are moved to
            random encoder outputs of the current batch. 0 disables restarts. The default, 1,
            is Jukebox's; scale it with the number of vectors per batch, B * M. As N_k starts
            at 1, the default also moves every code left unused by the first training batch
            onto that batch's encoder outputs: a data-dependent initialisation.
        laplace_eps: epsilon of the Laplace smoothing of the cluster sizes.
        prior: ``"categorical"`` (independent per position) or ``"autoregressive"`` (MADE);
            see :meth:`fit_prior`.
        prior_hidden_size: hidden width of the autoregressive prior.
        seed: when given, the networks' weights and the codebook are initialised from
            ``torch.manual_seed(seed)`` inside :func:`torch.random.fork_rng` (the global RNG
            is left as it was); ``None`` draws them from the global RNG.

    Raises:
        ValueError: unknown ``likelihood`` or ``prior``; a size < 1; ``ema_decay`` outside
            [0, 1); ``decoder_std`` <= 0; negative ``commitment_cost`` or
            ``dead_code_threshold``.
        KeyError: unknown ``activation``.
    """

    default_objective = "vq"        # vaekit.estimators.own_loss.VectorQuantization
    own_objective = True            # trained on its own loss, not on a bound

    def __init__(self, data_dim: int, num_latents: int = 16, embedding_dim: int = 16,
                 codebook_size: int = 128, hidden_sizes: Sequence[int] = (200, 200),
                 activation: str = "tanh", likelihood: str = "bernoulli",
                 decoder_std: float = 0.1, commitment_cost: float = 0.25,
                 ema_decay: float = 0.99, dead_code_threshold: float = 1.0,
                 laplace_eps: float = 1e-5, prior: str = "categorical",
                 prior_hidden_size: int = 256, seed: int | None = None) -> None:
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be bernoulli or gaussian, got {likelihood!r}")
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
        if min(data_dim, num_latents, embedding_dim, codebook_size) < 1:
            raise ValueError("data_dim, num_latents, embedding_dim and codebook_size must be >= 1")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
        if decoder_std <= 0:
            raise ValueError(f"decoder_std must be > 0, got {decoder_std}")
        if commitment_cost < 0 or dead_code_threshold < 0 or laplace_eps < 0:
            raise ValueError("commitment_cost, dead_code_threshold and laplace_eps must be >= 0")
        self.data_dim = int(data_dim)
        self.num_latents = self.latent_dim = int(num_latents)
        self.embedding_dim = int(embedding_dim)
        self.codebook_size = int(codebook_size)
        self.likelihood = likelihood
        self.commitment_cost = float(commitment_cost)
        self.ema_decay = float(ema_decay)
        self.dead_code_threshold = float(dead_code_threshold)
        self.laplace_eps = float(laplace_eps)
        self.prior_type = prior
        M, d, K = self.num_latents, self.embedding_dim, self.codebook_size

        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.encoder_net = mlp(data_dim, hidden_sizes, M * d, activation)
            self.decoder_net = mlp(M * d, tuple(reversed(hidden_sizes)), data_dim, activation)
            # Sonnet's default: variance scaling (fan-in d), uniform in +-sqrt(3 / d).
            limit = math.sqrt(3.0 / d)
            codebook = torch.empty(K, d).uniform_(-limit, limit)
            self.ar_prior = (AutoregressiveCodePrior(M, K, prior_hidden_size)
                             if prior == "autoregressive" else None)
        self.register_buffer("codebook", codebook)                       # e_k: (K, d)
        self.register_buffer("ema_cluster_size", torch.ones(K))          # N_k: (K,)
        self.register_buffer("ema_embed_sum", codebook.clone())          # m_k: (K, d)
        self.register_buffer("decoder_log_std", torch.tensor(math.log(decoder_std)))
        # log p(c_m = k) of the independent categorical prior: (M, K), uniform until fitted.
        self.register_buffer("prior_log_probs", torch.full((M, K), -math.log(K)))

    @classmethod
    def from_config(cls, config, data_dim: int) -> VQVAE:
        """Build from a config object (e.g. :class:`vaekit.config.ModelConfig`); fields it lacks
        take this class's defaults. Read: ``num_latents``, ``embedding_dim``,
        ``codebook_size``, ``hidden_sizes``, ``activation``, ``likelihood``, ``decoder_std``,
        ``commitment_cost``, ``ema_decay``, ``dead_code_threshold``, ``prior`` (or
        ``code_prior``), ``seed``
        (``latent_dim`` is not used)."""
        names = ("num_latents", "embedding_dim", "codebook_size", "hidden_sizes", "activation",
                 "likelihood", "decoder_std", "commitment_cost", "ema_decay",
                 "dead_code_threshold", "laplace_eps", "prior", "prior_hidden_size", "seed")
        kwargs = {n: getattr(config, n) for n in names if getattr(config, n, None) is not None}
        if getattr(config, "code_prior", None) is not None:     # vaekit.config's name for it
            kwargs["prior"] = config.code_prior
        if "hidden_sizes" in kwargs:
            kwargs["hidden_sizes"] = tuple(kwargs["hidden_sizes"])
        return cls(data_dim, **kwargs)

    def extra_repr(self) -> str:
        return (f"M={self.num_latents}, d={self.embedding_dim}, K={self.codebook_size}, "
                f"likelihood={self.likelihood}, beta={self.commitment_cost}, "
                f"ema_decay={self.ema_decay}, dead_code_threshold={self.dead_code_threshold}, "
                f"prior={self.prior_type}")

    # ------------------------------------------------------------------ parameter groups
    def inference_parameters(self) -> Iterator[nn.Parameter]:
        """phi: the encoder's parameters."""
        return self.encoder_net.parameters()

    def generative_parameters(self) -> Iterator[nn.Parameter]:
        """theta: the decoder's (and the autoregressive prior's, which :meth:`training_losses`
        leaves without gradient; :meth:`fit_prior` trains it). The codebook is a buffer."""
        ids = {id(p) for p in self.inference_parameters()}
        return (p for p in self.parameters() if id(p) not in ids)

    # ------------------------------------------------------------------ encoder and quantiser
    def _check_x(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"x must have shape (B, {self.data_dim}), got {tuple(x.shape)}")

    def encode_continuous(self, x: torch.Tensor) -> torch.Tensor:
        """z_e(x), the encoder output before quantisation, for ``x: (B, D)``: ``(B, M, d)``.

        Raises:
            ValueError: ``x`` is not ``(B, D)``.
        """
        self._check_x(x)
        return self.encoder_net(x).view(x.shape[0], self.num_latents, self.embedding_dim)

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest-codebook quantisation (paper eqs. 1-2) of ``z_e: (..., d)``.

        Squared Euclidean distances ||z||^2 - 2 z.e_k + ||e_k||^2 come from one matrix product;
        ties go to the lowest index. No gradient flows (see :meth:`forward` for the
        straight-through estimator).

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
    def _ema_update(self, z_e: torch.Tensor, codes: torch.Tensor) -> None:
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

    # ------------------------------------------------------------------ decoder
    def decoder(self, z_q: torch.Tensor) -> Independent:
        """p(x | z_q) for flattened quantised vectors ``z_q: (..., M*d)``: batch shape
        ``z_q.shape[:-1]``, event shape ``(D,)``; Bernoulli(logits) or N(mean, sigma^2 I)."""
        out = self.decoder_net(z_q)
        return observation(out, self.likelihood, self.decoder_log_std)

    def decode_mean(self, z_q: torch.Tensor) -> torch.Tensor:
        """E[x | z_q] for ``z_q: (..., M*d)``: ``(..., D)``, sigmoid of the logits (Bernoulli)
        or the Gaussian mean."""
        out = self.decoder_net(z_q)
        return observation_mean(out, self.likelihood)

    decoder_mean = decode_mean      # the name the rest of vaekit (sampling, plots) calls

    def init_decoder_bias(self, train_mean: torch.Tensor) -> None:
        """Start the decoder at the training-data mean ``(D,)``: the logit of it (Bernoulli,
        as the IWAE code does) or the mean (Gaussian); :func:`vaekit.nn.init_output_bias`."""
        init_output_bias(self.decoder_net[-1], train_mean, self.likelihood)

    def forward(self, x: torch.Tensor, update: bool | None = None) -> VQVAEOutput:
        """Encode, quantise, decode ``x: (B, D)``; see :class:`VQVAEOutput`.

        The decoder receives the straight-through vectors z_e + sg(z_q - z_e) (paper eq. 3), so
        the gradient of ``log_px`` with respect to z_e equals the one with respect to z_q.
        ``commitment`` = beta ||z_e - sg(z_q)||^2 summed over the M*d coordinates.

        Args:
            update: run the EMA codebook update and dead-code restarts after quantising
                (the outputs use the codebook from before the update). ``None``: in training
                mode only.

        Raises:
            ValueError: ``x`` is not ``(B, D)``.
        """
        z_e = self.encode_continuous(x)                                   # (B, M, d)
        z_q, codes = self.quantize(z_e)                                    # (B, M, d), (B, M)
        if update is None:
            update = self.training
        if update:
            self._ema_update(z_e.detach().reshape(-1, self.embedding_dim), codes.reshape(-1))
        commitment = self.commitment_cost * (z_e - z_q).pow(2).sum((1, 2))   # (B,)
        z_st = z_e + (z_q - z_e).detach()
        log_px = self.decoder(z_st.flatten(1)).log_prob(x)                 # (B,)
        return VQVAEOutput(z_e, z_st, codes, log_px, commitment)

    def training_losses(self, x: torch.Tensor) -> Losses:
        """One mini-batch ``x: (B, D)`` of VQ-VAE training (updates the codebook in training
        mode).

        Returns:
            :class:`~vaekit.estimators.base.Losses` with ``bound`` = log p(x | z_q(x)) per
            example ``(B,)``, nats, detached -- the reconstruction log-likelihood, *not* a bound
            on log p(x) during training (see :meth:`log_likelihood_bound` for one) -- and
            ``model_loss`` = ``inference_loss`` = the same scalar
            mean_b [-log p(x_b | z_q) + beta ||z_e - sg(z_q)||^2].

        Raises:
            ValueError: ``x`` is not ``(B, D)``.
        """
        out = self(x)
        loss = (out.commitment - out.log_px).mean()
        return Losses(bound=out.log_px.detach(), model_loss=loss, inference_loss=loss)

    validation_name = "log p(x|z_q)"

    @torch.no_grad()
    def validation_score(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z_q(x)) in nats for ``x: (B, D)``: ``(B,)``. Updates nothing, in any mode.

        Raises:
            ValueError: ``x`` is not ``(B, D)``.
        """
        return self(x, update=False).log_px

    # ------------------------------------------------------------------ codes and embeddings
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code indices c(x) of ``x: (B, D)``: ``(B, M)`` int64. Updates nothing."""
        return self.quantize(self.encode_continuous(x))[1]

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The quantised vectors z_q(x), flattened: ``(B, M*d)``. Updates nothing."""
        return self.quantize(self.encode_continuous(x))[0].flatten(1)

    def codes_to_embedding(self, codes: torch.Tensor) -> torch.Tensor:
        """e_codes flattened, for ``codes: (B, M)``: ``(B, M*d)``, the decoder's input."""
        return self.codebook[codes].flatten(-2)

    @torch.no_grad()
    def codebook_stats(self, x: torch.Tensor, batch_size: int = 1000) -> dict:
        """How the codes of ``x: (N, D)`` use the codebook (one sync at the end).

        Returns:
            ``{"usage": fraction of the K codes used at least once (float),
            "perplexity": exp(-sum_k p_k log p_k) with p_k the frequency of code k over all
            N*M positions (float, 1..K), "counts": (K,) int64 CPU tensor}``.
        """
        counts = torch.zeros(self.codebook_size, dtype=torch.long, device=self.codebook.device)
        for i in range(0, x.shape[0], batch_size):
            codes = self.encode(x[i:i + batch_size].to(self.codebook.device)).reshape(-1)
            counts += torch.bincount(codes, minlength=self.codebook_size)
        counts = counts.cpu()
        p = counts.double() / counts.sum().clamp_min(1)
        entropy = -torch.xlogy(p, p).sum()
        return {"usage": float((counts > 0).double().mean()),
                "perplexity": float(entropy.exp()), "counts": counts}

    # ------------------------------------------------------------------ prior over codes
    def fit_prior(self, codes: torch.Tensor, steps: int = 2000, batch_size: int = 256,
                  lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0) -> VQVAE:
        """Fit p(c) to the codes of the training set, ``codes: (N, M)`` int64 in [0, K).

        ``categorical``: an independent categorical per position with add-one smoothing,
        p(c_m = k) = (#{n: c_nm = k} + 1) / (N + K), stored in ``prior_log_probs`` ``(M, K)``
        (the other arguments are ignored). ``autoregressive``: the MADE prior is trained by
        Adam (``steps`` steps of ``batch_size`` codes drawn with replacement by a generator
        seeded with ``seed``) to maximise mean log p(c); the categorical buffer is fitted too.

        Returns:
            ``self``.

        Raises:
            ValueError: ``codes`` is not ``(N, M)`` with N >= 1.
        """
        if codes.dim() != 2 or codes.shape[1] != self.num_latents or codes.shape[0] < 1:
            raise ValueError(f"codes must have shape (N, {self.num_latents}) with N >= 1, "
                             f"got {tuple(codes.shape)}")
        codes = codes.to(self.prior_log_probs.device, torch.long)
        K = self.codebook_size
        counts = torch.zeros_like(self.prior_log_probs)
        counts.scatter_add_(1, codes.t(), torch.ones(codes.t().shape, dtype=counts.dtype,
                                                     device=counts.device))       # (M, K)
        self.prior_log_probs.copy_(torch.log((counts + 1) / (codes.shape[0] + K)))
        if self.ar_prior is not None:
            g = torch.Generator(device=codes.device).manual_seed(seed)
            opt = torch.optim.Adam(self.ar_prior.parameters(), lr=lr, weight_decay=weight_decay)
            with torch.enable_grad():
                for _ in range(steps):
                    idx = torch.randint(0, codes.shape[0], (batch_size,), generator=g,
                                        device=codes.device)
                    loss = -self.ar_prior.log_prob(codes[idx]).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        return self

    def prior_log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(c) in nats under the prior (uniform, -M log K, until :meth:`fit_prior`) for
        ``codes: (B, M)``: ``(B,)``.

        Raises:
            ValueError: ``codes`` is not ``(B, M)``.
        """
        if codes.dim() != 2 or codes.shape[1] != self.num_latents:
            raise ValueError(f"codes must have shape (B, {self.num_latents}), "
                             f"got {tuple(codes.shape)}")
        if self.ar_prior is not None:
            return self.ar_prior.log_prob(codes)
        positions = torch.arange(self.num_latents, device=codes.device)
        return self.prior_log_probs[positions, codes].sum(-1)

    @torch.no_grad()
    def sample_codes(self, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` draws c ~ p(c): ``(n, M)`` int64. ``seed`` seeds a generator on the model's
        device (``None``: the global RNG)."""
        device = self.codebook.device
        g = None if seed is None else torch.Generator(device=device).manual_seed(seed)
        if self.ar_prior is not None:
            return self.ar_prior.sample(n, generator=g)
        probs = self.prior_log_probs.exp()                                # (M, K)
        return torch.multinomial(probs, n, replacement=True, generator=g).t()

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` images E[x | z_q = e_c] with c ~ p(c): ``(n, D)``."""
        return self.decode_mean(self.codes_to_embedding(self.sample_codes(n, seed)))

    @torch.no_grad()
    def log_likelihood_bound(self, x: torch.Tensor) -> torch.Tensor:
        """A lower bound on log p(x) in nats for ``x: (B, D)``: ``(B,)``. Updates nothing.

        The generative model is p(x) = sum_c p(c) p(x | z_q = e_c) with the current codebook
        and prior. With the paper's deterministic one-hot posterior q(c | x) = 1[c = c(x)]
        (Sec. 3.2), H[q] = 0 and KL(q || p(c)) = -log p(c(x)), so the ELBO is
        E_q[log p(x | c)] - KL(q || p(c)) = log p(x | z_q(x)) + log p(c(x)) <= log p(x).
        (For a uniform prior, the paper's training-time one, the KL is the constant M log K.)
        For binary x and a Bernoulli decoder it is <= 0; for a Gaussian decoder it is a
        density bound and may be positive.

        Raises:
            ValueError: ``x`` is not ``(B, D)``.
        """
        out = self(x, update=False)
        return out.log_px + self.prior_log_prob(out.codes)

    @torch.no_grad()
    def evaluation(self, x: torch.Tensor, num_samples: int | None = None,
                   batch_size: int = 2000) -> dict:
        """Test metrics of ``x: (N, D)`` (what :func:`vaekit.evaluation.evaluate` reports for
        this family), means over examples in nats with standard errors ``*_se``:
        ``log_likelihood_bound`` (:meth:`log_likelihood_bound`), ``reconstruction``
        (log p(x | z_q(x))), ``log_prior`` (log p(c(x))), and ``codebook_usage``,
        ``codebook_perplexity`` (:meth:`codebook_stats`). ``num_samples`` is ignored (the
        encoder is deterministic). Updates nothing."""
        from ..evaluation import mean_and_se
        device = self.codebook.device
        rec, prior = [], []
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(device)
            out = self(xb, update=False)
            rec.append(out.log_px.cpu())
            prior.append(self.prior_log_prob(out.codes).cpu())
        rec, prior = torch.cat(rec), torch.cat(prior)
        result = {}
        for key, v in (("log_likelihood_bound", rec + prior), ("reconstruction", rec),
                       ("log_prior", prior)):
            result[key], result[f"{key}_se"] = mean_and_se(v)
        stats = self.codebook_stats(x, batch_size)
        result.update(codebook_usage=stats["usage"], codebook_perplexity=stats["perplexity"])
        return result
